"""Desktop controls: mouse and keyboard turned into camera flight and ``Hand`` actions.

A frame hook (``update(now)``, first in ``app.frame_hooks``): it polls keys and the mouse, flies
the camera, points the hand along the mouse ray and carries a grabbed card on a plane facing the
camera. Clicks, F, H and Ctrl+Z arrive as Panda3D messenger events.

It acts while ``WORLD`` or ``DRAG`` is the top of the shared ``InputModes`` stack (the menu and
what-if painting push their own modes over it) and pushes ``DRAG`` while a card is carried; Esc
(routed by the stack) then comes to ``_on_escape``, which puts the card back. While ``VR`` is on
the stack it does nothing at all: no flight, no mouse hand, no highlight (the VR hands set it).
"""

from __future__ import annotations

import math

import numpy as np
from direct.showbase.DirectObject import DirectObject
from panda3d.core import KeyboardButton, MouseButton

from game.controls.hand import Hand
from game.controls.modes import InputModes, Mode
from game.controls.services import SceneParts, Viewport
from game.core import events as ev
from game.learning.edits import DropJudge

DRAG_THRESHOLD = 0.012  # normalised screen units the mouse must move before a press becomes a drag
LOOK_SPEED = 90.0  # degrees per normalised screen unit
SPEED_STEP = 1.25


def flying_speed(move_speed: float, positions: np.ndarray) -> float:
    """Flying speed for a world of this size: ``move_speed`` is meant for an 8 m wide cloud.

    At a fixed 2 m/s a 1.7 m cloud was crossed in under a second; scaled, crossing any cloud
    takes about four seconds at the default, and the wheel (or Shift, x3) changes it from there.
    """
    if len(positions) == 0:
        return move_speed
    extent = float(np.ptp(np.asarray(positions, dtype=np.float64), axis=0).max())
    return float(np.clip(move_speed * extent / 8.0, 0.1, 20.0))


class DesktopControls:
    """Fly camera + one mouse ``Hand``; quiet unless ``WORLD`` or ``DRAG`` is the top mode."""

    def __init__(self, view: Viewport, scene: SceneParts, modes: InputModes | None = None) -> None:
        self.view = view
        self.modes = modes if modes is not None else InputModes()
        self.scene = scene
        self.speed = float(scene.settings.world.move_speed)
        self.yaw = 0.0
        self.pitch = 0.0
        self._last_mouse: tuple[float, float] | None = None
        self._press: tuple[float, float] | None = None
        self._press_card = -1
        self._last_pointer: tuple[float, float] | None = None
        self._drag_distance = 1.0
        self._help = False
        self._last_now = 0.0
        self.hand: Hand
        self.rebind(scene)
        self._events = DirectObject()
        for key, fn in {
            "mouse1": self._on_press,
            "mouse1-up": self._on_release,
            "wheel_up": lambda: self._on_wheel(+1),
            "wheel_down": lambda: self._on_wheel(-1),
            "f": self.frame_selection,
            "c": self.view.frame_all,
            "h": self.toggle_help,
            "tab": self.toggle_panel,
            "control-z": self.undo,
        }.items():
            self._events.accept(key, self._guard(fn))
        self.sync_from_camera()

    def rebind(self, scene: SceneParts) -> None:
        """(Re)create the hand for ``scene``'s workspace (at start and after a scene switch)."""
        self.scene = scene
        world = scene.world
        self.judge = DropJudge(scene.settings.learning)
        self.speed = flying_speed(float(scene.settings.world.move_speed), world.positions)
        self.hand = Hand(
            scene.workspace,
            positions=lambda: world.positions,
            card_size=lambda: world.config.card_size,
            name="mouse",
        )

    @property
    def enabled(self) -> bool:
        """True while the mouse and keys are this control's (``WORLD`` or ``DRAG`` on top)."""
        return self.modes.is_top(Mode.WORLD, Mode.DRAG)

    def _guard(self, fn):
        return self.modes.when(Mode.WORLD, Mode.DRAG)(fn)

    def _sync_drag(self) -> None:
        """``DRAG`` is on the stack exactly while the hand carries a card (Esc then cancels it)."""
        if self.hand.dragging:
            self.modes.push(Mode.DRAG, on_escape=self._on_escape)
        else:
            self.modes.pop(Mode.DRAG)

    # --- camera -------------------------------------------------------------------------------

    def sync_from_camera(self) -> None:
        """Adopt the camera's current heading and pitch (after framing)."""
        hpr = self.view.camera.get_hpr()
        self.yaw, self.pitch = float(hpr[0]), float(hpr[1])
        self.view.camera.set_r(0)

    def _mouse(self) -> tuple[float, float] | None:
        return self.view.mouse()

    def _down(self, key: str) -> bool:
        return self.view.is_down(KeyboardButton.ascii_key(key))

    def _fly(self, dt: float) -> None:
        cam = self.view.camera
        move = np.zeros(3)
        forward = self.view.render.get_relative_vector(cam, (0, 1, 0))
        right = self.view.render.get_relative_vector(cam, (1, 0, 0))
        for key, vec, sign in (("w", forward, 1), ("s", forward, -1), ("d", right, 1), ("a", right, -1)):
            if self._down(key):
                move += sign * np.array([vec[0], vec[1], vec[2]])
        if self._down("e"):
            move[2] += 1
        if self._down("q"):
            move[2] -= 1
        norm = float(np.linalg.norm(move))
        if norm > 0:
            boost = 3.0 if self.view.is_down(KeyboardButton.shift()) else 1.0
            step = move / norm * self.speed * boost * dt
            cam.set_pos(cam.get_pos() + tuple(step))

    def _look(self, mouse: tuple[float, float] | None) -> None:
        looking = self.view.is_down(MouseButton.three())
        if looking and mouse is not None and self._last_mouse is not None:
            dx = mouse[0] - self._last_mouse[0]
            dy = mouse[1] - self._last_mouse[1]
            self.yaw -= dx * LOOK_SPEED
            self.pitch = float(np.clip(self.pitch + dy * LOOK_SPEED * 0.7, -89, 89))
            self.view.camera.set_hpr(self.yaw, self.pitch, 0)

    # --- per frame ------------------------------------------------------------------------------

    def update(self, now: float) -> None:
        dt = max(0.0, min(now - self._last_now, 0.1))
        self._last_now = now
        if self.modes.holds(Mode.VR):
            # The controllers have the hands and the highlight: the desktop window only mirrors an
            # eye (a mouse ray from its camera would pick and highlight cards nobody sees).
            self._last_mouse = None
            return
        mouse = self._mouse()
        if self.enabled:
            self._fly(dt)
            self._look(mouse)
            if mouse is not None:
                self.pointer(mouse)
        self._last_mouse = mouse
        self.scene.world.cards.set_highlight(hovered=self.hand.hovered if self.enabled else -1)
        self.hand.update(now)
        self._sync_drag()

    def pointer(self, mouse: tuple[float, float]) -> None:
        """Hover along the mouse ray; while the button is held, start or continue a drag."""
        self._last_pointer = mouse
        origin, direction = self.view.mouse_ray(*mouse)
        hand = self.hand
        if hand.dragging:
            hand.move_to(self._carry_point(origin, direction))
            return
        hand.point(origin, direction)
        if self._press is not None and self._press_card >= 0:
            moved = math.dist(mouse, self._press)
            if moved > DRAG_THRESHOLD:
                hand.hovered = self._press_card
                if hand.grab():
                    cam_pos = np.array(self.view.camera.get_pos(self.view.render), dtype=np.float32)
                    forward = self._forward()
                    self._drag_distance = float(
                        np.dot(self.scene.world.positions[hand.grabbed] - cam_pos, forward)
                    )
                    hand.move_to(self._carry_point(origin, direction))

    def _carry_point(self, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Where the carried card goes for this mouse ray: the depth follows the cursor.

        Over a cluster as drawn, the card is placed inside it (the ray's closest approach to its
        centroid, judged by the same ``DropJudge`` that decides what the release means); over
        empty space it stays on the camera-facing plane at its drag distance (mouse wheel:
        push / pull). A person can only aim in two dimensions, so depth must come from what is
        under the cursor; a plane at the old depth missed clusters that looked adjacent but lay
        up to a metre behind.
        """
        hit = self.judge.cluster_on_ray(self.scene.workspace, self.hand.grabbed, origin, direction)
        if hit is not None:
            return hit[1]
        return self._drag_point(origin, direction)

    def _forward(self) -> np.ndarray:
        f = self.view.render.get_relative_vector(self.view.camera, (0, 1, 0))
        return np.array([f[0], f[1], f[2]], dtype=np.float32)

    def _drag_point(self, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Where the mouse ray meets the plane facing the camera at the drag distance."""
        cam_pos = np.array(self.view.camera.get_pos(self.view.render), dtype=np.float32)
        forward = self._forward()
        plane_point = cam_pos + forward * self._drag_distance
        denom = float(np.dot(direction, forward))
        if abs(denom) < 1e-6:
            return plane_point
        t = float(np.dot(plane_point - origin, forward)) / denom
        return origin + direction * t

    # --- input events -----------------------------------------------------------------------------

    def _on_press(self) -> None:
        mouse = self._mouse()
        if mouse is None:
            return
        origin, direction = self.view.mouse_ray(*mouse)
        card = self.hand.point(origin, direction)
        self._press = mouse
        self._press_card = card
        self.hand.select()

    def _on_release(self) -> None:
        self._press = None
        self._press_card = -1
        if self.hand.dragging:
            self.hand.release()
        self._sync_drag()

    def _on_wheel(self, direction: int) -> None:
        if self.hand.dragging:
            self._drag_distance = max(0.1, self._drag_distance * (1.0 + 0.1 * direction))
            mouse = self._mouse() or self._last_pointer
            if mouse is not None:
                origin, d = self.view.mouse_ray(*mouse)
                self.hand.move_to(self._carry_point(origin, d))
        else:
            self.speed = float(
                np.clip(self.speed * (SPEED_STEP if direction > 0 else 1 / SPEED_STEP), 0.1, 20)
            )
            self.scene.workspace.post(ev.Message(text=f"flying speed {self.speed:.1f} m/s"))

    def _on_escape(self) -> None:
        """Esc while ``DRAG`` is the top mode: the carried card goes back where it was."""
        if self.hand.dragging:
            self.hand.cancel()
            self._press = None
        self._sync_drag()

    def hide_help(self) -> None:
        """Esc in the world without a start menu: close the help if it is open (never quit)."""
        if not self.scene.hud.help_path.is_hidden():
            self.toggle_help()

    def frame_selection(self) -> None:
        card = self.scene.workspace.selected
        if card >= 0:
            self.view.frame_card(card)

    def toggle_help(self) -> None:
        self._help = self.scene.hud.toggle_help()

    def toggle_panel(self) -> None:
        panel = self.scene.panel.root
        if panel.is_hidden() and self.scene.workspace.selected >= 0:
            panel.show()
        else:
            panel.hide()

    def undo(self) -> None:
        self.scene.workspace.post(ev.UndoRequested(hand="keyboard"))

    def destroy(self) -> None:
        self._events.ignore_all()
        self.modes.pop(Mode.DRAG)
