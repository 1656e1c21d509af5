"""In-world UI for VR: 2-D overlays are invisible in a headset, so the world's panels float.

The info panel (the world's ``InfoPanel``) floats beside the selected card, the fine-tune
status and messages (the world's ``Hud``) float above the left hand like a wrist display (higher,
``hud_lift``, while the wrist menu is open on that hand); both turn to face the head every frame.
``restore`` puts them back on the desktop overlay. Lasers are one unit beam per hand, moved and
scaled: 5 m, or ``set_beam_length`` where the wrist menu or the panel stopped it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from panda3d.core import LineSegs, NodePath

PANEL_SCALE = 0.32  # metres per panel unit
HUD_SCALE = 0.18


def look_at_hp(dx: float, dy: float, dz: float) -> tuple[float, float]:
    """Heading and pitch (degrees) that turn +Y towards ``(dx, dy, dz)`` with no roll: what
    ``NodePath.look_at`` gives (world up +Z), computed in plain floats so a node's whole transform
    is one ``set_pos_hpr_scale`` call."""
    return math.degrees(math.atan2(-dx, dy)), math.degrees(math.atan2(dz, math.hypot(dx, dy)))


class VRWorldUI:
    """Places ``world.panel.root`` and ``world.hud.root`` in the 3-D scene near the person."""

    def __init__(self, app: Any, scale: Callable[[], float] | None = None) -> None:
        self.app = app
        # The person's scale (the rig's): panels and offsets are in the person's metres, so the
        # panel stays a readable size beside a card however large the world is drawn.
        self.scale = scale or (lambda: 1.0)
        self.hud_anchor = app.render.attach_new_node("vr-hud-anchor")
        self.hud_anchor.set_light_off(1)
        self._lasers = app.render.attach_new_node("vr-lasers")
        self._lasers.set_light_off(1)
        self._lasers.set_bin(
            "fixed", 80
        )  # after the wrist menu (drawn over the world): the beam's end shows on it
        self._beams: dict[str, NodePath] = {}
        self._shown: dict[str, bool] = {}  # whether each beam is shown (no Panda3D call to ask)
        self._panel_at: tuple[list[float], list[float], float] | None = None  # selected, head, scale
        self.hud_lift = 0.0  # metres more above the left hand (the wrist menu is open there)
        self._attach()

    def _attach(self) -> None:
        hud = self.app.world.hud
        hud.root.reparent_to(self.hud_anchor)
        hud.root.set_scale(1.0)
        hud.status_path.set_pos(-0.5, 0, 0.12)
        hud.message_path.set_pos(-0.5, 0, 0.0)
        hud.legend_path.set_pos(-0.5, 0, -0.12)  # the suspects' key, under the messages
        hud.help_path.hide()
        hud.hint_path.hide()
        self.hud_anchor.set_scale(HUD_SCALE)

    def rebind(self) -> None:
        """After a scene switch the world (and its panels) are new."""
        self._panel_at = None
        self._attach()

    def update(
        self, head: np.ndarray, left_hand: np.ndarray, selected: np.ndarray | None, lasers: dict
    ) -> None:
        hx, hy, hz = head.tolist()
        s = float(self.scale())
        ax, ay, az = left_hand.tolist()
        az += (0.12 + self.hud_lift) * s  # above the left hand
        # Facing away from the head (its text reads from the head): one transform call, not five.
        h, p = look_at_hp(hx - ax, hy - ay, hz - az)
        k = HUD_SCALE * s
        self.hud_anchor.set_pos_hpr_scale(ax, ay, az, h + 180.0, p, 0.0, k, k, k)
        panel = self.app.world.panel
        if selected is not None and not self._panel_still(selected, head, s):
            to_head = head - selected
            to_head[2] = 0.0
            n = float(np.linalg.norm(to_head))
            to_head = to_head / n if n > 1e-6 else np.array([0.0, -1.0, 0.0])
            side = np.array([-to_head[1], to_head[0], 0.0])  # to the right, seen from the head
            # Beside the card, a little nearer (at arm's length after the wrist menu's go-to).
            where = selected + (0.1 * to_head - 0.32 * side + np.array([0.0, 0.0, 0.05])) * s
            panel.place_in_world(
                self.app.render, tuple(map(float, where)), look_at=(hx, hy, hz), scale=PANEL_SCALE * s
            )
        self._draw_lasers(lasers)

    def _panel_still(self, selected: np.ndarray, head: np.ndarray, scale: float = 1.0) -> bool:
        """True when neither the card nor the head moved 5 mm (the person's) since the panel was
        placed, and the person's scale is the same (plain floats: two 3-vectors a frame)."""
        now = (
            np.asarray(selected, dtype=np.float64).tolist(),
            np.asarray(head, dtype=np.float64).tolist(),
            scale,
        )
        last = self._panel_at
        if last is not None and last[2] == scale:
            limit = 0.005 * scale
            if all(abs(a - b) < limit for was, is_ in zip(last[:2], now[:2]) for a, b in zip(was, is_)):
                return True
        self._panel_at = now
        return False

    def _beam(self, hand: str) -> NodePath:
        """One unit beam per hand (+Y, 1 m), built once and then only moved: no geometry per frame."""
        beam = self._beams.get(hand)
        if beam is None:
            segs = LineSegs(f"vr-laser-{hand}")
            segs.set_thickness(2.0)
            segs.set_color(0.4, 0.9, 1.0, 1.0)
            segs.move_to(0.0, 0.0, 0.0)
            segs.draw_to(0.0, 1.0, 0.0)
            beam = self._lasers.attach_new_node(segs.create())
            self._beams[hand] = beam
        return beam

    def _draw_lasers(self, lasers: dict) -> None:
        """Each shown beam: one transform call (position, the ray's heading and pitch, 5 m)."""
        shown = self._shown
        for hand, ray in lasers.items():
            if ray is None:
                if shown.get(hand):
                    self._beams[hand].hide()
                    shown[hand] = False
                continue
            origin, direction = ray
            beam = self._beam(hand)
            if not shown.get(hand):
                beam.show()
                shown[hand] = True
            x, y, z = origin.tolist()
            dx, dy, dz = direction.tolist()
            h, p = look_at_hp(dx, dy, dz)
            beam.set_pos_hpr_scale(x, y, z, h, p, 0.0, 5.0, 5.0, 5.0)

    def set_beam_length(self, hand: str, length: float) -> None:
        """Stop a shown laser at ``length`` (world units): at the menu button or panel it hits."""
        beam = self._beams.get(hand)
        if beam is not None and self._shown.get(hand):
            beam.set_scale(max(1e-4, float(length)))

    def restore(self) -> None:
        """Back to the desktop overlay (VR stopped)."""
        app = self.app
        if app.world is not None:
            app.world.panel.place_on_screen(app.aspect2d, app.aspect_ratio)
            hud = app.world.hud
            hud.root.reparent_to(app.aspect2d)
            hud.root.set_scale(1.0)
            hud.hint_path.show()
            hud.layout(app.aspect_ratio)
        self.hud_anchor.remove_node()
        self._lasers.remove_node()
