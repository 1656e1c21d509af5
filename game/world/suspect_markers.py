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


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _screen_rect(points: Sequence, project: Callable) -> Rect | None:
    """The pixel box of some world points, None when any is behind the camera / off-screen."""
    px = [project(p) for p in points]
    if any(p is None for p in px):
        return None
    xs, ys = [p[0] for p in px], [p[1] for p in px]
    return min(xs), min(ys), max(xs), max(ys)


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


def label_rects(
    labels: Sequence[NodePath], camera: NodePath, render: NodePath, project: Callable
) -> list[Rect]:
    """Pixel boxes of billboarded text labels (e.g. the class labels) as drawn now.

    Each label is a node whose first ``TextNode`` gives its extent; billboards face the camera,
    so the box is the text frame laid out on the camera's right / up axes around the node.
    """
    _, right, up = _axes(camera, render)
    out: list[Rect] = []
    for label in labels:
        if label.is_empty() or label.is_hidden():
            continue
        found = label.find("**/+TextNode")
        if found.is_empty() or not found.node().get_text():
            continue
        left, rgt, bottom, top = found.node().get_frame_actual()
        s = float(found.get_scale(render)[0])
        p = found.get_pos(render)
        c = np.array([p[0], p[1], p[2]], dtype=np.float64)
        corners = [c + right * x * s + up * z * s for x in (left, rgt) for z in (bottom, top)]
        rect = _screen_rect(corners, project)
        if rect is not None:
            out.append(rect)
    return out


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
        """Mark exactly these cards (most suspicious first)."""
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
        avoid: Sequence[Rect] = (),
    ) -> None:
        """Scale each marker to its distance and put it at the first card corner whose marker
        box (projected with ``project``) covers none of the ``avoid`` pixel boxes."""
        if not self.nodes:
            return
        eye, right, up = _axes(camera, render)
        half = 0.5 * float(card_size)
        for i, (node, card) in enumerate(zip(self.nodes, self.cards)):
            p = np.asarray(positions[int(card)], dtype=np.float64)
            s = ANGULAR_SCALE * max(1e-3, float(np.linalg.norm(p - eye)))
            hx, hz = GLYPH_HALF[0] * s, GLYPH_HALF[1] * s
            choice, best = 0, None
            for k, (dx, dz) in enumerate(CORNERS):
                centre = p + right * dx * (half + hx) + up * dz * (half + hz)
                if project is None or not avoid:
                    best = centre
                    break
                box = [centre + right * x + up * z for x in (-hx, hx) for z in (-hz, hz)]
                rect = _screen_rect(box, project)
                if best is None:
                    best = centre  # fall back to the first corner
                if rect is None or not any(_overlaps(rect, a) for a in avoid):
                    choice, best = k, centre
                    break
            self.corners[i] = choice
            assert best is not None
            base = best - up * GLYPH_CENTRE * s  # the node's origin is the glyph's baseline
            node.set_pos(float(base[0]), float(base[1]), float(base[2]))
            node.set_scale(s)

    def destroy(self) -> None:
        self.root.remove_node()
        self.nodes = []
