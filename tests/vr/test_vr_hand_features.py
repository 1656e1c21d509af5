"""The desktop's features in the hand, without an engine: the menu button, putting a carried card
back, ray targets taking the laser before the cards, and the teleports behind F and C."""

from __future__ import annotations

import numpy as np
import pytest
from vr_helpers import synthetic_loaded

from game.controls.vr_controls import Rig, VRControls
from game.core import events as ev
from game.vr import coords
from game.vr.backend import ControllerState, FrameState, Pose

HEAD = (0.0, -1.0, 1.7)


def _state(right=(0.2, -0.5, 1.5), *, hpr=(0.0, 0.0, 0.0), head=HEAD, head_hpr=(0.0, 0.0, 0.0), **buttons):
    """Both hands connected; ``buttons`` like ``right_grip=True`` or ``left_menu=True``."""
    hands = {}
    for name, pos in (("left", (-0.2, -0.5, 1.5)), ("right", right)):
        rot = coords.hpr_to_rotation(*hpr) if name == "right" else None
        kw = {k.split("_", 1)[1]: v for k, v in buttons.items() if k.startswith(name + "_")}
        hands[name] = ControllerState(Pose(coords.compose(pos, rot), True), connected=True, **kw)
    return FrameState(1, Pose(coords.compose(head, coords.hpr_to_rotation(*head_hpr)), True), hands)


def _controls():
    ws = synthetic_loaded().workspace
    seen: list[ev.Event] = []
    ws.subscribe(lambda e, _ws: seen.append(e))
    c = VRControls(ws, lambda: ws.positions, 0.12, rig=Rig(np.zeros(3)))
    return c, ws, seen


def test_menu_button_calls_on_menu_with_its_hand_once_per_press():
    c, _ws, _seen = _controls()
    opened: list[str] = []
    c.on_menu = opened.append
    c.update(_state(left_menu=True))
    c.update(_state(left_menu=True))  # held: no second toggle
    c.update(_state())
    c.update(_state(right_menu=True))
    assert opened == ["left", "right"]


@pytest.mark.parametrize("button", ["menu", "undo"])
def test_menu_or_undo_while_carrying_puts_the_card_back(button):
    c, ws, seen = _controls()
    opened: list[str] = []
    c.on_menu = opened.append
    card = 5
    start = ws.positions[card].astype(float).copy()
    hold = tuple(start - [0.0, 0.06, 0.0])  # the tip touches the card
    c.update(_state(hold))
    c.update(_state(hold, right_grip=True))
    assert c.hands["right"].dragging
    moved = tuple(np.array(hold) + [0.3, 0.0, 0.0])
    c.update(_state(moved, right_grip=True))
    c.update(_state(moved, right_grip=True, **{f"right_{button}": True}))
    ws.flush()
    assert not c.hands["right"].dragging
    assert np.allclose(ws.positions[card], start, atol=1e-5)  # back where it was
    assert any(isinstance(e, ev.GrabCancelled) for e in seen)
    assert not any(isinstance(e, ev.UndoRequested) for e in seen) and opened == []
    c.update(_state(moved, right_grip=False))  # letting go afterwards drops nothing
    ws.flush()
    assert not any(isinstance(e, ev.CardDropped) for e in seen)


class _Wall:
    """A ray target covering everything in front of the controllers (a menu in the way)."""

    def __init__(self) -> None:
        self.placed = 0
        self.presses: list[str] = []

    def place(self, controls) -> None:
        self.placed += 1

    def ray(self, hand, origin, forward, trigger, pressed):
        if pressed:
            self.presses.append(hand)
        return 0.3


def test_a_ray_target_takes_the_laser_and_the_trigger_before_the_cards():
    c, ws, seen = _controls()
    card = 7
    p = ws.positions[card].astype(float)
    aim = tuple(p - [0.0, 0.5, 0.0])  # half a metre in front, pointing +Y at it
    wall = _Wall()
    c.targets.append(wall)
    c.update(_state(aim))
    assert c.lasers["right"] is not None and c.laser_length["right"] == pytest.approx(0.3)  # no trigger
    c.update(_state(aim, right_trigger=True))
    ws.flush()
    assert wall.presses == ["right"] and ws.selected != card
    assert not any(isinstance(e, ev.CardSelected) for e in seen)
    c.targets.remove(wall)
    c.update(_state(aim))
    c.update(_state(aim, right_trigger=True))
    ws.flush()
    assert ws.selected == card  # without the target the same press selects the card
    assert wall.placed == 2  # once per frame while it was a target


def test_go_to_puts_the_card_at_arms_length_ahead_of_the_eyes():
    c, ws, _seen = _controls()
    c.rig = Rig(np.array([1.0, 2.0, 0.0]), heading=40.0, scale=0.5)
    c.update(_state(head_hpr=(25.0, -10.0, 0.0)))
    heading_before = c.rig.heading
    card = ws.positions[3].astype(float)
    c.go_to(card)
    c.update(_state(head_hpr=(25.0, -10.0, 0.0)))
    head = c.head_position()
    offset = card - head
    forward = c.head_world[:3, 1].copy()
    forward[2] = 0.0
    forward /= np.linalg.norm(forward)
    assert offset[2] == pytest.approx(0.0, abs=1e-9)  # at eye height
    assert np.allclose(offset, forward * c.config.go_to_distance * c.rig.scale)
    assert c.rig.heading == heading_before and c.rig.scale == 0.5  # a step, no turn, no resize


def test_see_all_shows_the_whole_cloud_in_front_and_a_second_call_goes_back():
    c, ws, _seen = _controls()
    c.rig = Rig(np.array([0.1, -0.2, 0.0]), heading=10.0, scale=0.4)
    c.update(_state())
    before = (c.rig.position.copy(), c.rig.heading, c.rig.scale)
    assert c.see_all() and c.overview
    c.update(_state())
    points = ws.positions.astype(float)
    extent = float(np.ptp(points, axis=0).max())
    assert c.rig.scale == pytest.approx(extent / c.config.overview_width)
    # Every card ahead of the eyes within a 60-degree cone: the cloud is seen whole.
    head = c.head_position()
    forward = c.head_world[:3, 1] / np.linalg.norm(c.head_world[:3, 1])
    to_cards = points - head
    cos = to_cards @ forward / np.linalg.norm(to_cards, axis=1)
    assert cos.min() > np.cos(np.radians(30))
    assert not c.see_all() and not c.overview
    assert np.allclose(c.rig.position, before[0]) and (c.rig.heading, c.rig.scale) == before[1:]


def test_go_to_in_a_dense_cluster_keeps_every_other_card_out_of_the_face():
    """A card with neighbours all around where the eyes would land straight ahead of it: the
    place keeps the start place's clearance, the card still ahead of the eyes at eye height."""
    from game.vr.placement import CLEARANCE, nearest_card

    c, ws, _seen = _controls()
    c.rig = Rig(np.array([0.0, -3.0, 0.0]), heading=0.0, scale=1.0)
    c.update(_state(head=(0.0, 0.0, 1.6)))
    card = np.array([0.0, 0.0, 1.6])
    rng = np.random.default_rng(3)
    # Neighbours: a thick wall across the straight-ahead approach (where the eyes would be at
    # 0.6 to 0.9 m from the card), open to the sides; hidden cards too.
    wall = np.column_stack(
        [rng.uniform(-0.5, 0.5, 400), rng.uniform(-1.05, -0.45, 400), rng.uniform(1.3, 1.9, 400)]
    )
    cloud = np.vstack([card[None], wall, np.full((5, 3), np.nan)]).astype(np.float32)
    c.positions = lambda: cloud
    straight = card - c._heading_forward() * c.config.go_to_distance
    assert nearest_card(straight[None], cloud)[0] < CLEARANCE  # the old place: a card in the face
    c.go_to(card)
    c.update(_state(head=(0.0, 0.0, 1.6)))
    head = c.head_position()
    assert nearest_card(head[None], cloud[1:])[0] >= CLEARANCE  # no neighbour in the face
    offset = card - head
    assert offset[2] == pytest.approx(0.0, abs=1e-6)  # at eye height
    forward = c._heading_forward()
    assert np.allclose(offset / np.linalg.norm(offset), forward, atol=1e-6)  # ahead of the eyes
    assert c.config.go_to_distance <= np.linalg.norm(offset) <= 1.5 * c.config.go_to_distance + 1e-9


def test_go_to_with_room_straight_ahead_neither_turns_nor_steps_back():
    c, _ws, _seen = _controls()
    c.update(_state())
    card = np.array([5.0, 5.0, 1.0])
    c.positions = lambda: np.array([card, card + (0.0, 0.0, 3.0)], dtype=np.float32)
    heading = c.rig.heading
    c.go_to(card)
    assert c.rig.heading == heading
    assert np.linalg.norm(card - c.head_position()) == pytest.approx(c.config.go_to_distance)
