"""VR controllers → the shared ``Hand`` actions, plus locomotion and world scaling.

Per frame (``update(state, paused, dt)``, called right after ``wait_poses``):

- grip pressed: grab the card the controller tip touches, else the card its ray points at; while
  held, the card keeps its offset in the controller's own frame, so it follows the hand in full
  6-DoF (turning the wrist swings it around the grip); grip released: drop. A haptic pulse on
  grab and on drop.
- trigger held: a laser; hovering follows the ray; trigger pressed: select (inspect) what it hits.
- left stick: smooth movement along the head's horizontal heading; right stick: snap turns (x)
  and smooth up/down (y).
- both grips held while neither hand carries a card: scale and rotate the whole world about the
  midpoint of the hands (pulling apart makes the world larger).
- undo button (A/X on Touch and Index): ``UndoRequested``, as the desktop's undo key.
- menu button: ``on_menu(hand)`` (the wrist menu opens on that hand). Menu or undo pressed on a
  hand that carries a card puts the card back where it was (the desktop's Esc during a drag).
- ray targets (``targets``: the wrist menu, the info panel's image) see each free hand's ray
  before the cards do: the first that takes it (returns the distance to its hit) gets the
  trigger and the laser, which then shows without the trigger and stops at the hit. The grip
  still grabs a card the tip touches (the trigger goes where the laser visibly points).
- ``go_to(point)`` and ``see_all()``: the VR forms of the desktop's F (frame the selection) and
  C (frame the whole cloud): a teleport that puts a card in front of the eyes, and a zoomed-out
  overview of the whole cloud that a second call undoes.

Both hands pick through one ``PickIndex`` (refreshed once per frame), so a frame's picking costs
the same at 2k and 50k cards. ``haptic_tick(hand)`` is a short click for whoever wants to mark a
change under the hand (the drop preview's target cluster changing).

The world never learns that a controller moved the card: the ``Hand`` posts the same events as
the mouse does. No panda3d here: tracking space is placed in the world by a numpy ``Rig``, which
the stereo renderer applies to its node (``on_rig``), so all of this is testable headless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypedDict

import numpy as np

from game.controls.hand import Hand
from game.controls.pick_index import PickIndex
from game.core import events as ev
from game.core.workspace import Workspace
from game.vr.backend import HANDS, ControllerState, FrameState

TIP = 0.06  # metres ahead of the controller origin where touching happens


class _Gesture(TypedDict):
    """What a two-handed grab remembers at its start: the world point between the hands, the
    hands' span and angle, and the rig's scale and heading then."""

    anchor: np.ndarray
    distance: float
    angle: float
    scale: float
    heading: float


class RayTarget(Protocol):
    """Something in the world the laser can point at before the cards (wrist menu, info panel).

    ``place`` is called once per frame after the poses are known (before any ``ray``); ``ray``
    gets one hand's laser and returns the distance (world units) to its hit when it takes the
    ray, else None. ``trigger`` is held, ``pressed`` only on the frame it went down.
    """

    def place(self, controls: VRControls) -> None: ...

    def ray(
        self, hand: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None: ...


@dataclass
class Rig:
    """Where tracking space sits in the world: position, heading (degrees, about +Z) and scale.

    ``scale`` > 1 makes the person larger relative to the world (the world looks smaller).
    """

    position: np.ndarray
    heading: float = 0.0
    scale: float = 1.0

    def matrix(self) -> np.ndarray:
        h = math.radians(self.heading)
        k = float(self.scale)
        c, s = math.cos(h) * k, math.sin(h) * k
        x, y, z = np.asarray(self.position, dtype=np.float64).reshape(3).tolist()
        # One array from plain floats (once per VR frame and per rig change).
        return np.array([[c, -s, 0.0, x], [s, c, 0.0, y], [0.0, 0.0, k, z], [0.0, 0.0, 0.0, 1.0]])

    def to_world(self, p: np.ndarray) -> np.ndarray:
        return (self.matrix() @ np.append(np.asarray(p, dtype=np.float64), 1.0))[:3]


@dataclass
class VRControlsConfig:
    move_speed: float = 2.0  # metres per second at full stick
    snap_degrees: float = 30.0
    stick_dead_zone: float = 0.2
    snap_threshold: float = 0.7
    min_scale: float = 0.05
    max_scale: float = 20.0
    pulse_seconds: float = 0.04
    go_to_distance: float = 0.6  # metres (the person's) from the eyes to a card after go_to: arm's length
    overview_width: float = 1.6  # metres (the person's) the whole cloud spans after see_all
    overview_distance: float = 0.9  # metres from the eyes to the cloud's near side after see_all
    tick_seconds: float = 0.008  # haptic_tick: a click, not a buzz


class VRControls:
    """Two ``Hand`` objects driven by controller state; see the module docstring for the mapping."""

    def __init__(
        self,
        workspace: Workspace,
        positions: Callable[[], np.ndarray],
        card_size: Callable[[], float] | float = 0.08,
        *,
        rig: Rig | None = None,
        haptic: Callable[[str, float], None] | None = None,
        on_rig: Callable[[np.ndarray], None] | None = None,
        on_hover: Callable[[str, int], None] | None = None,
        on_menu: Callable[[str], None] | None = None,
        config: VRControlsConfig | None = None,
    ) -> None:
        self.workspace = workspace
        self.config = config or VRControlsConfig()
        self.hands = {h: Hand(workspace, positions, card_size, name=f"vr-{h}") for h in HANDS}
        touch = self.hands["left"]
        self.index = PickIndex(positions, lambda: touch.touch_factor * touch.card_size, auto=False)
        for hand in self.hands.values():
            hand.index = self.index
        self.rig = rig or Rig(np.zeros(3))
        self.haptic = haptic or (lambda hand, seconds: None)
        self.on_rig = on_rig
        self.on_hover = on_hover
        self.on_menu = on_menu
        self.targets: list[RayTarget] = []
        self.positions = positions
        self._previous = {h: ControllerState() for h in HANDS}
        self._grab_offset: dict[str, np.ndarray] = {}
        self._gesture: _Gesture | None = None
        self._snapped = False
        self.lasers: dict[str, tuple[np.ndarray, np.ndarray] | None] = {h: None for h in HANDS}
        # Where a ray target stopped a hand's laser (world units); None: the full beam.
        self.laser_length: dict[str, float | None] = {h: None for h in HANDS}
        self.triggers: dict[str, bool] = {h: False for h in HANDS}  # held this frame (ray targets)
        self.pressed: dict[str, bool] = {h: False for h in HANDS}  # pulled this frame (ray targets)
        self.hand_world: dict[str, np.ndarray] = {h: np.eye(4) for h in HANDS}
        self.head_world = np.eye(4)
        self._world = np.eye(4)  # the rig's matrix for this frame (update)
        self._head_tracking = np.eye(4)
        self._before_overview: Rig | None = None

    # --- per frame ------------------------------------------------------------------------------

    def update(self, state: FrameState, paused: bool = False, dt: float = 1.0 / 90.0) -> None:
        world = self.rig.matrix()
        self._world = world  # once per frame: the tip poses below use it too
        self._head_tracking = state.head.matrix
        self.head_world = world @ state.head.matrix
        for h in HANDS:
            self.hand_world[h] = world @ state.hands[h].pose.matrix
            self.triggers[h] = bool(state.hands[h].trigger) and not paused
            self.pressed[h] = self.triggers[h] and not self._previous[h].trigger
            self.laser_length[h] = None
        for target in self.targets:
            target.place(self)
        if paused:
            # Dashboard up: keep carried cards where they are, forget button edges.
            self._previous = {h: ControllerState() for h in HANDS}
            return
        self.index.refresh()  # once per frame for both hands' picks
        if not self._world_gesture(state):
            for h in HANDS:
                self._hand(h, state.hands[h])
        for h in HANDS:
            self._buttons(h, state.hands[h])
        self._locomotion(state, dt)
        for h in HANDS:
            self.hands[h].update()
            self._previous[h] = state.hands[h]

    def _hand(self, name: str, c: ControllerState) -> None:
        hand = self.hands[name]
        prev = self._previous[name]
        if not (c.connected and c.pose.valid):
            if hand.dragging:
                hand.cancel()
            self.lasers[name] = None
            return
        m = self.hand_world[name]
        if c.tip is not None and c.tip.valid:
            # SteamVR's tip pose: the laser starts there and points where the controller points.
            t = self._world @ c.tip.matrix  # the rig as this frame's hand poses saw it
            origin = t[:3, 3]
            forward = t[:3, 1] / max(math.hypot(*t[:3, 1].tolist()), 1e-9)
            tip = origin
        else:
            origin = m[:3, 3]
            forward = m[:3, 1] / max(math.hypot(*m[:3, 1].tolist()), 1e-9)
            tip = origin + forward * (TIP * self.rig.scale)
        self.lasers[name] = (origin, forward) if c.trigger else None
        if hand.dragging:
            card_world = (m @ self._grab_offset[name])[:3]
            hand.move_to(card_world)
            if not c.grip:
                hand.release(card_world)
                self.haptic(name, self.config.pulse_seconds)
            return
        before = hand.hovered
        # The laser is tested only when nothing is touched, with the trigger or the grip: then
        # one gathering of cards serves both tests (``Hand.touch``'s ray).
        touching = hand.touch(tip, ray=(origin, forward) if c.trigger or c.grip else None) >= 0
        hit = self._target_ray(name, origin, forward, c.trigger, c.trigger and not prev.trigger)
        if hit is not None:
            # The menu or the panel has the ray: the trigger went to it; the grip still grabs a
            # card the tip touches, and no card is picked along the ray.
            self.lasers[name] = (origin, forward)
            self.laser_length[name] = hit
            if not touching:
                hand.hovered = -1
        else:
            if not touching and (c.trigger or c.grip):
                hand.point(origin, forward)
            if c.trigger and not prev.trigger:
                hand.select()
        if c.grip and not prev.grip and hand.hovered >= 0 and hand.grab():
            card = np.append(np.asarray(hand.position, dtype=np.float64), 1.0)
            self._grab_offset[name] = np.linalg.inv(m) @ card
            self.haptic(name, self.config.pulse_seconds)
        if self.on_hover is not None and hand.hovered != before:
            self.on_hover(name, hand.hovered)

    def _target_ray(
        self, name: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None:
        for target in self.targets:
            hit = target.ray(name, origin, forward, trigger, pressed)
            if hit is not None:
                return hit
        return None

    def _buttons(self, name: str, c: ControllerState) -> None:
        """Menu and undo: edges only. On a hand carrying a card either one puts the card back."""
        prev = self._previous[name]
        menu = c.menu and not prev.menu
        undo = c.undo and not prev.undo
        hand = self.hands[name]
        if (menu or undo) and hand.dragging:
            hand.cancel()
            self._grab_offset.pop(name, None)
            self.haptic(name, self.config.pulse_seconds)
            return
        if undo:
            self.workspace.post(ev.UndoRequested(hand=f"vr-{name}"))
        if menu and self.on_menu is not None:
            self.on_menu(name)

    # --- both grips: scale and rotate the world ---------------------------------------------------

    def _world_gesture(self, state: FrameState) -> bool:
        gripping = all(state.hands[h].grip and state.hands[h].pose.valid for h in HANDS)
        carrying = any(self.hands[h].dragging for h in HANDS)
        if not gripping or carrying:
            self._gesture = None
            return False
        left = state.hands["left"].pose.position
        right = state.hands["right"].pose.position
        mid = (left + right) / 2
        span = right - left
        distance = max(float(np.linalg.norm(span)), 1e-3)
        angle = math.degrees(math.atan2(span[1], span[0]))
        if self._gesture is None:
            self._gesture = {
                "anchor": self.rig.to_world(mid),
                "distance": distance,
                "angle": angle,
                "scale": self.rig.scale,
                "heading": self.rig.heading,
            }
            return True
        g = self._gesture
        scale = float(
            np.clip(g["scale"] * g["distance"] / distance, self.config.min_scale, self.config.max_scale)
        )
        heading = g["heading"] + (g["angle"] - angle)
        self.rig.scale, self.rig.heading = scale, heading
        # Keep the point between the hands fixed in the world.
        self.rig.position = np.zeros(3)
        self.rig.position = np.asarray(g["anchor"]) - self.rig.to_world(mid)
        self._rig_changed()
        return True

    # --- sticks ---------------------------------------------------------------------------------

    def _locomotion(self, state: FrameState, dt: float) -> None:
        cfg = self.config
        lx, ly = state.hands["left"].thumbstick
        rx, ry = state.hands["right"].thumbstick
        changed = False
        if abs(lx) > cfg.stick_dead_zone or abs(ly) > cfg.stick_dead_zone:
            forward = self.head_world[:3, 1].copy()
            forward[2] = 0.0
            n = float(np.linalg.norm(forward))
            forward = forward / n if n > 1e-6 else np.array([0.0, 1.0, 0.0])
            right = np.array([forward[1], -forward[0], 0.0])
            step = cfg.move_speed * dt * self.rig.scale
            self.rig.position = self.rig.position + (forward * ly + right * lx) * step
            changed = True
        if abs(ry) > cfg.stick_dead_zone:
            self.rig.position = self.rig.position + np.array(
                [0.0, 0.0, ry * cfg.move_speed * dt * self.rig.scale]
            )
            changed = True
        if abs(rx) >= cfg.snap_threshold and not self._snapped:
            self._snap(-cfg.snap_degrees if rx > 0 else cfg.snap_degrees)
            self._snapped = True
            changed = False  # _snap reported it
        elif abs(rx) < cfg.stick_dead_zone:
            self._snapped = False
        if changed:
            self._rig_changed()

    def _snap(self, degrees: float) -> None:
        """Turn about the head's vertical axis (the person stays where they stand)."""
        self._turn_about_head(degrees)
        self._rig_changed()

    # --- teleports: the desktop's F and C --------------------------------------------------------

    def _heading_forward(self) -> np.ndarray:
        """The head's horizontal pointing direction in the world (unit)."""
        forward = self.head_world[:3, 1].copy()
        forward[2] = 0.0
        n = float(np.linalg.norm(forward))
        return forward / n if n > 1e-6 else np.array([0.0, 1.0, 0.0])

    def go_to(self, point: np.ndarray) -> None:
        """Move so that ``point`` is ``go_to_distance`` ahead of the eyes at eye height: the VR
        form of framing the selection. A teleport without a turn, unless every place straight
        ahead of the card has another card in the face (a dense cluster): then the place turns
        around the card, the person with it (``_approach``)."""
        point = np.asarray(point, dtype=np.float64)
        turn, distance = self._approach(point)
        if turn:
            self._turn_about_head(turn)
        head = self.head_world[:3, 3].copy()
        goal = point - self._heading_forward() * (distance * self.rig.scale)
        self.rig.position = self.rig.position + (goal - head)
        self.head_world = self.rig.matrix() @ self._head_tracking
        self._before_overview = None
        self._rig_changed()

    def _approach(self, point: np.ndarray) -> tuple[float, float]:
        """(turn in degrees, distance in the person's metres) of the first place, in order of
        preference, that no card is nearer the head than the start place allows
        (``placement.CLEARANCE``): straight ahead at arm's length, a quarter further back, the
        same turned around the card, then half as far again; the clearest when none is clear."""
        from game.vr.placement import CLEARANCE, nearest_card

        base = self.config.go_to_distance
        turns = (0.0, 30.0, -30.0, 60.0, -60.0, 90.0, -90.0, 120.0, -120.0, 150.0, -150.0, 180.0)
        # A step back (a quarter more) before a turn; further back only if no turn helps.
        options = [(t, d) for t in turns for d in (base, base * 1.25)] + [(t, base * 1.5) for t in turns]
        s = self.rig.scale
        forward = self._heading_forward()
        goals = []
        for turn, distance in options:
            a = math.radians(turn)
            c, n = math.cos(a), math.sin(a)
            f = np.array([c * forward[0] - n * forward[1], n * forward[0] + c * forward[1], 0.0])
            goals.append(point - f * distance * s)
        # Only the cards near the card can be in the face at any of these places.
        p = np.asarray(self.positions(), dtype=np.float64)
        reach = (base * 1.5 + CLEARANCE) * s
        with np.errstate(invalid="ignore"):
            near = p[np.abs(p - point).max(axis=1) <= reach]
        clearance = nearest_card(np.array(goals), near)
        clear = np.flatnonzero(clearance >= CLEARANCE * s)
        best = int(clear[0]) if len(clear) else int(np.argmax(clearance))
        return options[best]

    def _turn_about_head(self, degrees: float) -> None:
        """Turn the rig about the head's vertical axis (the head stays where it is)."""
        head = self.head_world[:3, 3].copy()
        self.rig.heading += degrees
        a = math.radians(degrees)
        c, s = math.cos(a), math.sin(a)
        d = self.rig.position - head
        self.rig.position = head + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1], d[2]])
        self.head_world = self.rig.matrix() @ self._head_tracking

    @property
    def overview(self) -> bool:
        """True after ``see_all`` until it is undone (or another teleport)."""
        return self._before_overview is not None

    def see_all(self) -> bool:
        """The whole cloud ``overview_width`` wide in front of the eyes (the person grows); a
        second call goes back to where the person stood and how large. Returns ``overview``."""
        if self._before_overview is not None:
            back, self._before_overview = self._before_overview, None
            self.rig.position, self.rig.heading, self.rig.scale = back.position, back.heading, back.scale
            self.head_world = self.rig.matrix() @ self._head_tracking
            self._rig_changed()
            return False
        points = np.asarray(self.positions(), dtype=np.float64)
        if len(points) == 0:
            return False
        saved = Rig(self.rig.position.copy(), self.rig.heading, self.rig.scale)
        lo, hi = points.min(axis=0), points.max(axis=0)
        centre, extent = (lo + hi) / 2, max(float((hi - lo).max()), 1e-3)
        cfg = self.config
        forward = self._heading_forward()
        scale = float(np.clip(extent / cfg.overview_width, cfg.min_scale, cfg.max_scale))
        self.rig.scale = scale
        self.rig.position = np.zeros(3)
        head = (self.rig.matrix() @ self._head_tracking)[:3, 3]
        goal = centre - forward * (extent / 2 + cfg.overview_distance * scale)
        goal[2] = centre[2]
        self.rig.position = goal - head
        self.head_world = self.rig.matrix() @ self._head_tracking
        self._before_overview = saved
        self._rig_changed()
        return True

    def haptic_tick(self, hand_name: str) -> None:
        """A short click on one controller (``"left"``/``"right"`` or a hand's ``"vr-left"`` name)."""
        name = hand_name.removeprefix("vr-")
        if name in self.hands:
            self.haptic(name, self.config.tick_seconds)

    def _rig_changed(self) -> None:
        if self.on_rig is not None:
            self.on_rig(self.rig.matrix())

    # --- queries for the in-world UI --------------------------------------------------------------

    def head_position(self) -> np.ndarray:
        return self.head_world[:3, 3].copy()

    def hand_position(self, hand: str) -> np.ndarray:
        return self.hand_world[hand][:3, 3].copy()
