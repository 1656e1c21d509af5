"""Hand picking and the drag event sequence, on a small synthetic workspace (no panda3d)."""

from __future__ import annotations

import numpy as np
import pytest

from game.controls.hand import Hand, pick_nearest, pick_ray
from game.core import events as ev
from game.core.workspace import CARD_PENDING, Workspace


def make_workspace() -> Workspace:
    # Two classes: class 0 around x=-1, class 1 around x=+1; card 0 sits alone at the origin.
    pos = np.array([[0, 0, 1], [-1, 0, 1], [-1.1, 0, 1], [1, 0, 1], [1.1, 0, 1]], dtype=np.float32)
    n = len(pos)
    return Workspace(
        images=np.zeros((n, 8, 8, 1), np.uint8),
        labels=np.array([0, 0, 0, 1, 1]),
        class_names=["a", "b"],
        top5_classes=np.zeros((n, 2), np.int64),
        top5_scores=np.zeros((n, 2), np.float32),
        features=np.zeros((n, 4), np.float32),
        positions=pos,
        is_train=np.ones(n, bool),
        sources=[f"s{i}" for i in range(n)],
    )


def test_pick_ray_nearest_hit_along_ray():
    pos = np.array([[0, 5, 0], [0, 2, 0], [0.5, 1, 0]], dtype=np.float32)
    k, t = pick_ray(pos, (0, 0, 0), (0, 1, 0), radius=0.1)
    assert k == 1 and t == pytest.approx(2.0)
    assert pick_ray(pos, (0, 0, 0), (0, -1, 0), radius=0.1)[0] == -1  # behind the origin
    assert pick_ray(pos, (0.5, 0, 0), (0, 1, 0), radius=0.1)[0] == 2


def test_pick_nearest_within_radius():
    pos = np.array([[0, 0, 0], [1, 0, 0]], dtype=np.float32)
    assert pick_nearest(pos, (0.9, 0, 0), 0.2)[0] == 1
    assert pick_nearest(pos, (0.5, 0.5, 0), 0.2)[0] == -1


def test_drag_posts_grab_moves_and_drop_with_nearest_centroid():
    ws = make_workspace()
    seen: list[ev.Event] = []
    ws.subscribe(lambda e, w: seen.append(e))
    hand = Hand(ws, card_size=0.1)
    assert hand.point((0, -3, 1), (0, 1, 0)) == 0
    hand.select()
    assert hand.grab()
    # Several moves in one frame become one CardMoved with the last position.
    hand.move_to((0.5, 0, 1))
    hand.move_to((0.9, 0, 1))
    hand.update(0.0)
    hand.update(0.016)  # nothing new: no event
    drop = hand.release()
    ws.flush()
    kinds = [type(e) for e in seen]
    assert kinds == [ev.CardSelected, ev.CardGrabbed, ev.CardMoved, ev.CardDropped]
    assert seen[2].position == pytest.approx((0.9, 0, 1))
    assert drop is not None and drop.nearest_class == 1
    assert drop.distance == pytest.approx(ws.nearest_centroid(np.array([0.9, 0, 1]))[1], abs=1e-4)
    assert ws.card_state[0] == CARD_PENDING
    assert tuple(ws.positions[0]) == pytest.approx((0.9, 0, 1))
    assert not hand.dragging


def test_cancel_returns_card_to_grab_position():
    ws = make_workspace()
    hand = Hand(ws, card_size=0.1, name="left")
    hand.touch((1.02, 0, 1))
    assert hand.hovered == 3
    hand.grab()
    hand.move_to((3, 3, 3))
    hand.update(0.0)
    ws.flush()
    assert tuple(ws.positions[3]) == pytest.approx((3, 3, 3))
    assert hand.cancel()
    events = []
    ws.subscribe(lambda e, w: events.append(e))
    ws.flush()
    assert isinstance(events[0], ev.GrabCancelled) and events[0].hand == "left"
    assert tuple(ws.positions[3]) == pytest.approx((1, 0, 1))
    assert ws.card_state[3] == 0


def test_grab_needs_a_hovered_card():
    ws = make_workspace()
    hand = Hand(ws, card_size=0.1)
    hand.point((0, -3, 5), (0, 1, 0))
    assert hand.hovered == -1
    assert not hand.grab()
    assert hand.release() is None
    assert not hand.cancel()
