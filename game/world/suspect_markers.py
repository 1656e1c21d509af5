"""The orange "?" over cards whose label is probably wrong: small, constant on screen, out of the way.

A marker must point at its card without hiding what explains the world. So:

* its on-screen size is constant (scaled with its distance to the camera every frame: a few
  multiplications for ten markers), never a wall of "?" up close nor a speck far away;
* it sits at a corner of its card, on the camera's right / up axes, and takes another corner
  when the first one would cover a class label as drawn on screen;
* it is drawn in the 3-D world after the cards (through them, so a suspect inside a cluster is
  still found) but before the class labels and the menu (``MARKER_BIN``), and the 2-D overlay
  (panel, help, legend) is drawn after the whole 3-D world: a marker is never over any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from panda3d.core import NodePath, TextNode, TransparencyAttrib

#: Cull bin: the fixed bin runs after opaque and transparent geometry (the cards); labels use
#: fixed 10/11 (``game.world.label``) and the menu fixed 50+, so both are drawn over a marker.
MARKER_BIN = ("fixed", 5)
#: Text scale per metre of distance to the camera: the "?" is about 3 % of the distance tall,
#: some 26 px in an 800 px window at the desktop's field of view.
ANGULAR_SCALE = 0.042
COLOUR = (1.0, 0.55, 0.25, 1.0)
GLYPH_HALF = (0.3, 0.4)  # half width / height of "?" in text units (a little generous)
GLYPH_CENTRE = 0.35  # height of the glyph's centre above its baseline, in text units
CORNERS = ((1, 1), (-1, 1), (1, -1), (-1, -1))  # upper right first; then the others

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


class _Screen:
    """Pinhole projection of the current view, vectorised: three ``project`` calls per frame
    instead of one per point (each is a few microseconds through the engine)."""

    def __init__(self, camera: NodePath, render: NodePath, project: Callable) -> None:
        self.eye, self.right, self.up = _axes(camera, render)
        f = render.get_relative_vector(camera, (0, 1, 0))
        self.forward = np.array([f[0], f[1], f[2]], dtype=np.float64)
        c = project(self.eye + self.forward)
        r = project(self.eye + self.forward + 0.1 * self.right)
        u = project(self.eye + self.forward + 0.1 * self.up)
        self.ok = c is not None and r is not None and u is not None
        if self.ok:
            self.cx, self.cy = float(c[0]), float(c[1])  # the principal point (film offset included)
            self.fx = (float(r[0]) - self.cx) / 0.1  # pixels per unit at depth 1
            self.fy = (self.cy - float(u[1])) / 0.1

    def points(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (x, y from top-left) of each row of ``pts`` and its depth along the view."""
        d = np.asarray(pts, dtype=np.float64).reshape(-1, 3) - self.eye
        depth = d @ self.forward
        safe = np.where(depth > 1e-6, depth, np.nan)
        x = self.cx + self.fx * (d @ self.right) / safe
        y = self.cy - self.fy * (d @ self.up) / safe
        return np.stack([x, y], axis=1), depth


def _axes(camera: NodePath, render: NodePath) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The camera's position, right and up axes in world coordinates."""
    pos = camera.get_pos(render)
    right = render.get_relative_vector(camera, (1, 0, 0))
    up = render.get_relative_vector(camera, (0, 0, 1))
    return (
        np.array([pos[0], pos[1], pos[2]], dtype=np.float64),
        np.array([right[0], right[1], right[2]], dtype=np.float64),
        np.array([up[0], up[1], up[2]], dtype=np.float64),
    )


def _label_rects(labels: Sequence[NodePath], render: NodePath, screen: _Screen) -> np.ndarray:
    """``(L, 4)`` pixel boxes (x0, y0, x1, y1) of the visible labels in front of the camera."""
    centres, frames = [], []
    for label in labels:
        if label.is_empty() or label.is_hidden():
            continue
        found = label.find("**/+TextNode")
        if found.is_empty() or not found.node().get_text():
            continue
        s = float(found.get_scale(render)[0])
        left, right, bottom, top = found.node().get_frame_actual()
        p = found.get_pos(render)
        centres.append((p[0], p[1], p[2]))
        frames.append((left * s, right * s, bottom * s, top * s))
    if not centres or not screen.ok:
        return np.zeros((0, 4))
    px, depth = screen.points(np.array(centres))
    f = np.array(frames)
    keep = depth > 1e-3
    sx, sy = screen.fx / depth[keep], screen.fy / depth[keep]
    x, y, f = px[keep, 0], px[keep, 1], f[keep]
    # A billboard lies on the camera's right / up axes around its node.
    return np.stack([x + f[:, 0] * sx, y - f[:, 3] * sy, x + f[:, 1] * sx, y - f[:, 2] * sy], axis=1)


def label_rects(
    labels: Sequence[NodePath], camera: NodePath, render: NodePath, project: Callable
) -> list[Rect]:
    """Pixel boxes of billboarded text labels (e.g. the class labels) as drawn now.

    Each label is a node whose first ``TextNode`` gives its extent; billboards face the camera,
    so the box is the text frame laid out on the camera's right / up axes around the node.
    """
    rects = _label_rects(labels, render, _Screen(camera, render, project))
    return [tuple(float(v) for v in r) for r in rects]  # type: ignore[misc]


class SuspectMarkers:
    """One "?" per suspect card under ``root``; ``place`` every frame."""

    def __init__(self, parent: NodePath, colour=COLOUR) -> None:
        self.root = parent.attach_new_node("guidance-markers")
        self.root.set_light_off(1)
        self.root.set_bin(*MARKER_BIN)
        self.root.set_depth_test(False)
        self.root.set_depth_write(False)
        self.root.set_transparency(TransparencyAttrib.M_alpha)
        self.colour = colour
        self.cards = np.zeros(0, dtype=np.int64)
        self.nodes: list[NodePath] = []
        self.corners: list[int] = []  # which of ``CORNERS`` each marker took last frame

    def set_cards(self, cards: Sequence[int] | np.ndarray) -> None:
        """Mark exactly these cards (in the guidance's order: ``guidance.APP_ORDER``)."""
        for node in self.nodes:
            node.remove_node()
        self.cards = np.asarray(cards, dtype=np.int64).copy()
        self.nodes = []
        for rank in range(len(self.cards)):
            text = TextNode(f"suspect-{rank}")
            text.set_text("?")
            text.set_align(TextNode.A_center)
            text.set_text_color(*self.colour)
            # A dark rim keeps the orange readable over white digits; depth test is off, so the
            # shadow (drawn first) stays behind the glyph.
            text.set_shadow(0.06, 0.06)
            text.set_shadow_color(0.0, 0.0, 0.0, 0.85)
            node = self.root.attach_new_node(text)
            node.set_billboard_point_eye()
            self.nodes.append(node)
        self.corners = [0] * len(self.nodes)

    def place(
        self,
        positions: np.ndarray,
        camera: NodePath,
        render: NodePath,
        card_size: float,
        project: Callable | None = None,
        avoid: Sequence[Rect] | np.ndarray = (),
    ) -> None:
        """Scale each marker to its distance and put it at the first card corner whose marker
        box (on screen, through ``project``) covers none of the ``avoid`` pixel boxes."""
        if not self.nodes:
            return
        eye, right, up = _axes(camera, render)
        p = np.asarray(positions, dtype=np.float64)[self.cards]
        scale = ANGULAR_SCALE * np.maximum(1e-3, np.linalg.norm(p - eye, axis=1))
        half = 0.5 * float(card_size)
        ox = half + GLYPH_HALF[0] * scale  # how far each corner is from the card centre (world)
        oz = half + GLYPH_HALF[1] * scale
        corners = np.array(CORNERS, dtype=np.float64)  # (4, 2)
        choice = np.zeros(len(p), dtype=np.int64)
        rects = np.asarray(avoid, dtype=np.float64).reshape(-1, 4)
        screen = _Screen(camera, render, project) if project is not None and len(rects) else None
        if screen is not None and screen.ok:
            px, depth = screen.points(p)
            ppx, ppy = screen.fx / depth, screen.fy / depth  # pixels per unit at each card
            cx = px[:, 0, None] + corners[None, :, 0] * (ox * ppx)[:, None]  # (N, 4)
            cy = px[:, 1, None] - corners[None, :, 1] * (oz * ppy)[:, None]
            hx = (GLYPH_HALF[0] * scale * ppx)[:, None]
            hy = (GLYPH_HALF[1] * scale * ppy)[:, None]
            x0, x1, y0, y1 = cx - hx, cx + hx, cy - hy, cy + hy
            hit = (
                (x0[..., None] < rects[:, 2])
                & (rects[:, 0] < x1[..., None])
                & (y0[..., None] < rects[:, 3])
                & (rects[:, 1] < y1[..., None])
            ).any(axis=2)  # (N, 4): that corner's marker would cover a label
            hit |= ~np.isfinite(cx)  # behind the camera: any corner will do
            free = ~hit
            choice = np.where(free.any(axis=1), free.argmax(axis=1), 0)
        dx, dz = corners[choice, 0], corners[choice, 1]
        centre = p + right * (dx * ox)[:, None] + up * (dz * oz)[:, None]
        base = centre - up * (GLYPH_CENTRE * scale)[:, None]  # the node's origin is the baseline
        for i, node in enumerate(self.nodes):
            node.set_pos(float(base[i, 0]), float(base[i, 1]), float(base[i, 2]))
            node.set_scale(float(scale[i]))
        self.corners = [int(c) for c in choice]

    def destroy(self) -> None:
        self.root.remove_node()
        self.nodes = []
