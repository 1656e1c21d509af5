"""Where things are drawn on screen, written as JSON: a debugging aid for driving a real window.

Tests that move a real mouse over a real window (``tests/desktop``) must know where a class's
cluster or a card appears in pixels. Reading it off a screenshot is fragile; the app knows it
exactly. With ``LATENT_REACH_VIEW_REPORT=FILE`` set, the app writes ``FILE`` after its first
frame and again whenever what is on screen changes (the camera moves, cards move, a card is
hovered, selected, grabbed or dropped, the drop preview changes), at most every ``MIN_INTERVAL_S``. Without the
variable nothing is attached and nothing is computed.

The file (replaced atomically, so a reader never sees half of it) holds, in window pixels
(x right, y down, from the window's top-left corner)::

    frame, time, window {width, height}, camera {pos, hpr}
    selected, hovered                        the selected card and the one lit under the pointer
    carried {card, label, px, position} or null   the card in the hand (from the workspace's events)
    preview {text, action, old_label, new_label, ring_px, label_px} or null   the drop preview
    classes: [{class, name, cards, colour (0-255 RGB), centroid, centroid_px, label_px,
               marker_px, cards_median_px, spread_px, pickable: [{card, px, depth}, ...]}]

``pickable`` lists up to ``CARDS_PER_CLASS`` cards of the class (by label) that a press at their
``px`` (a whole pixel) would pick: the front-most card along the mouse ray there and at the four
pixels around it, tested with the hand's own ``pick_ray``; nearest the class's drawn centroid first. ``centroid`` is the class's centroid as the world
places its marker (world metres; the sphere and label may be raised above it: ``marker_px``,
``label_px``); ``cards_median_px`` the median pixel of its cards.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ENV_VAR = "LATENT_REACH_VIEW_REPORT"
CARDS_PER_CLASS = 5
CANDIDATES_PER_CLASS = 400  # cards nearest the drawn centroid tried for pickability (about 50 us each)
MIN_INTERVAL_S = 0.25  # app-clock seconds between two writes (a flying camera changes every frame)
PICK_FACTOR = 0.6  # the Hand's default: the pick sphere is 0.6 card sides around each centre


def attach_from_env(app) -> ViewReport | None:
    """Start writing the report for ``app`` when ``$LATENT_REACH_VIEW_REPORT`` names a file."""
    path = os.environ.get(ENV_VAR, "").strip()
    if not path:
        return None
    return ViewReport(app, Path(path))


def project_points(app, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window pixels (n, 2) of world ``points`` and whether each is in front and on screen.

    Vectorised ``app.project``: render space -> camera space -> the lens's projection matrix
    (Panda3D's row-vector convention), then film coordinates -1..1 to pixels.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    to_cam = np.linalg.inv(np.array(app.cam.get_mat(app.render), dtype=np.float64))
    proj = np.array(app.camLens.get_projection_mat(), dtype=np.float64)
    homo = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ to_cam @ proj
    w = homo[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        fx, fy = homo[:, 0] / w, homo[:, 1] / w
    width, height = app.size
    px = np.stack([(fx + 1) / 2 * width, (1 - fy) / 2 * height], axis=1)
    ok = (w > 0) & (np.abs(fx) <= 1) & (np.abs(fy) <= 1)
    return px, ok


def _px(value) -> list[float] | None:
    return None if value is None else [round(float(value[0]), 1), round(float(value[1]), 1)]


def _overlay_px(app, node) -> list[float]:
    """Pixel of a node docked on ``aspect2d`` (x in -aspect..aspect, z in -1..1)."""
    p = node.get_pos(app.aspect2d)
    width, height = app.size
    px = _px(((p[0] / app.aspect_ratio + 1) / 2 * width, (1 - p[2]) / 2 * height))
    assert px is not None  # _px is None only for a None value
    return px


class ViewReport:
    """The report writer: a Panda3D task that runs after the frame task, before rendering."""

    def __init__(self, app, path: Path) -> None:
        self.app = app
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writes = 0
        self._carried = -1
        self._last_key: Any = None
        self._last_write = -np.inf
        self._workspace = None
        self._follow(app.workspace)
        app.scene_listeners.append(lambda loaded: self._follow(loaded.workspace))
        # Sort 45: after the frame task (-50) has moved everything, before igLoop (50) renders.
        self._task = app.task_mgr.add(self._tick, "latent-reach-view-report", sort=45)
        # The task manager is process-wide: the task must not outlive the app (the next app in a
        # test process would run it). The app runs these callbacks when it is destroyed or exits.
        app.finalExitCallbacks.append(self.close)

    def close(self) -> None:
        """Stop writing: remove the task and stop following the workspace."""
        self.app.task_mgr.remove(self._task)
        if self._workspace is not None:
            with contextlib.suppress(ValueError):
                self._workspace.unsubscribe(self._on_event)
            self._workspace = None

    # --- what is carried, from the workspace's events (any hand: mouse, controller, replay) ----------

    def _follow(self, workspace) -> None:
        if self._workspace is not None:
            with contextlib.suppress(ValueError):
                self._workspace.unsubscribe(self._on_event)
        self._workspace = workspace
        self._carried = -1
        workspace.subscribe(self._on_event)

    def _on_event(self, event, workspace) -> None:
        kind = getattr(event, "kind", "")
        if kind == "grab":
            self._carried = int(event.card)
        elif kind in ("drop", "cancel") and int(event.card) == self._carried:
            self._carried = -1

    # --- per frame ---------------------------------------------------------------------------------

    def _tick(self, task):
        app = self.app
        if getattr(app, "world", None) is None or getattr(app, "_destroyed", False):  # destroyed
            return task.done
        if app.frame_count < 2:  # frame 1 has been rendered
            return task.cont
        key = self._key()
        if key != self._last_key and app.now - self._last_write >= MIN_INTERVAL_S:
            self.write()
            self._last_key = key
            self._last_write = app.now
        return task.cont

    def _key(self) -> tuple:
        """Cheap fingerprint of what is on screen: camera, card positions, hand, preview."""
        app = self.app
        cam = tuple(round(float(v), 5) for v in (*app.camera.get_pos(app.render), *app.camera.get_hpr()))
        positions = app.world.positions
        preview = getattr(app, "drop_preview", None)
        text = getattr(preview, "text", "") if preview is not None else ""
        cards = app.world.cards
        hand = (getattr(cards, "hovered", -1), getattr(cards, "selected", -1), self._carried)
        return cam, hash(positions.tobytes()), hand, text, app.size

    def write(self) -> dict:
        """Write the report now; returns what was written."""
        report = self.build()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)
        self.writes += 1
        return report

    def build(self) -> dict:
        app = self.app
        ws = app.workspace
        world = app.world
        positions = np.asarray(world.positions, dtype=np.float32)
        card_px, card_ok = project_points(app, positions)
        cam_pos = np.array(app.camera.get_pos(app.render), dtype=np.float64)
        depth = np.linalg.norm(positions - cam_pos, axis=1)
        labels = np.asarray(ws.labels)
        markers = world.centroid_markers
        classes = []
        for k, name in enumerate(ws.class_names):
            members = np.flatnonzero(labels == k)
            holder = markers.spheres[k]
            rgb = [int(round(255 * float(v))) for v in world.colours[k % len(world.colours), :3]]
            entry: dict[str, Any] = {"class": k, "name": str(name), "cards": int(len(members)), "colour": rgb}
            if not len(members) or holder.is_hidden():
                entry.update(centroid=None, centroid_px=None, label_px=None, pickable=[])
                classes.append(entry)
                continue
            c = holder.get_pos(app.render)
            entry["centroid"] = [round(float(v), 4) for v in c]
            entry["centroid_px"] = _px(app.project(c))
            entry["label_px"] = _px(app.project(markers.labels[k].get_pos(app.render)))
            spheres = getattr(markers, "markers", None)  # the sphere, where it is drawn apart
            entry["marker_px"] = _px(app.project(spheres[k].get_pos(app.render))) if spheres else None
            on = members[card_ok[members]]
            if len(on):
                median = np.median(card_px[on], axis=0)
                entry["cards_median_px"] = _px(median)
                entry["spread_px"] = round(float(np.median(np.linalg.norm(card_px[on] - median, axis=1))), 1)
            else:
                entry["cards_median_px"], entry["spread_px"] = None, None
            centre = entry["centroid_px"] or entry["cards_median_px"]
            entry["pickable"] = self._pickable(on, card_px, depth, centre)
            classes.append(entry)
        carried = None
        if 0 <= self._carried < len(positions):
            c = self._carried
            carried = {
                "card": c,
                "label": int(labels[c]),
                "px": _px(app.project(positions[c])),
                "position": [round(float(v), 4) for v in positions[c]],
            }
        cam_hpr = app.camera.get_hpr()
        win = getattr(app, "win", None)
        return {
            "frame": int(app.frame_count),
            "time": round(float(app.now), 3),
            "window": {
                "width": int(app.size[0]),
                "height": int(app.size[1]),
                "actual": [int(win.get_x_size()), int(win.get_y_size())] if win is not None else None,
            },
            "camera": {
                "pos": [round(float(v), 4) for v in cam_pos],
                "hpr": [round(float(v), 3) for v in cam_hpr],
            },
            "selected": int(ws.selected),
            "hovered": int(getattr(world.cards, "hovered", -1)),  # highlighted under the pointer
            "carried": carried,
            "preview": self._preview(),
            "classes": classes,
        }

    def _pickable(self, cards: np.ndarray, card_px: np.ndarray, depth: np.ndarray, centre) -> list[dict]:
        """Cards a press at their pixel would pick (the front-most along that ray is this card)."""
        from game.controls.hand import pick_ray

        if not len(cards) or centre is None:
            return []
        app = self.app
        positions = app.world.positions
        radius = PICK_FACTOR * float(app.world.config.card_size)
        width, height = app.size
        order = cards[np.argsort(np.linalg.norm(card_px[cards] - np.asarray(centre), axis=1))]
        out: list[dict] = []

        def picked_at(x: int, y: int) -> int:
            origin, direction = app.mouse_ray(2 * x / width - 1, 1 - 2 * y / height)
            return pick_ray(positions, origin, direction, radius)[0]

        for c in order[:CANDIDATES_PER_CLASS]:
            # A mouse stands on whole pixels: the card must be the one picked at the pixel nearest
            # its centre and at the four around it (a margin for rounding on the way).
            x, y = (int(round(float(v))) for v in card_px[c])
            if all(picked_at(x + dx, y + dy) == c for dx, dy in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))):
                out.append({"card": int(c), "px": [x, y], "depth": round(float(depth[c]), 4)})
                if len(out) >= CARDS_PER_CLASS:
                    break
        return out

    def _preview(self) -> dict | None:
        preview = getattr(self.app, "drop_preview", None)
        edit = getattr(preview, "edit", None)
        if preview is None or edit is None:
            return None
        ring = getattr(preview, "ring", None)
        label = getattr(preview, "label", None)
        ring_px = None
        if ring is not None and not ring.is_hidden():
            ring_px = _px(self.app.project(ring.get_pos(self.app.render)))
        return {
            "text": str(getattr(preview, "text", "")),
            "action": str(edit.action),
            "card": int(edit.card),
            "old_label": int(edit.old_label),
            "new_label": int(edit.new_label),
            "ring_px": ring_px,
            "label_px": _overlay_px(self.app, label.root) if label is not None else None,
            "text_colour": [int(round(255 * c)) for c in getattr(preview, "text_colour", (1, 1, 1))[:3]],
        }
