"""PickIndex answers what the brute-force pick answers, while cards move, testing few cards."""

from __future__ import annotations

import numpy as np
import pytest
from vr_helpers import synthetic_loaded

from game.controls import pick_index
from game.controls.hand import Hand, pick_nearest, pick_ray
from game.controls.pick_index import MAX_LOOSE, PickIndex
from game.controls.vr_controls import VRControls
from game.vr.backend import ControllerState, FrameState, Pose


@pytest.fixture(autouse=True)
def grid_always(monkeypatch):
    """Small test clouds use the grid too (below BRUTE_BELOW the index answers by brute force)."""
    monkeypatch.setattr(pick_index, "BRUTE_BELOW", 0)


def test_small_clouds_take_the_brute_force_with_the_same_answers(monkeypatch):
    monkeypatch.setattr(pick_index, "BRUTE_BELOW", 4096)
    p = cloud(1000)
    index = PickIndex(lambda: p, min_cell=0.18)
    assert agree(index, p, k=20) > 20
    assert index.last_candidates == len(p)


def cloud(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2, 2, size=(8, 3))
    return (centres[rng.integers(0, 8, n)] + rng.normal(scale=0.3, size=(n, 3))).astype(np.float32)


def queries(positions: np.ndarray, k: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(k):
        target = positions[rng.integers(len(positions))] + rng.normal(scale=0.05, size=3)
        origin = target + rng.normal(size=3) * 2.0
        yield target.astype(np.float32), origin, target - origin


def agree(index: PickIndex, positions: np.ndarray, k: int = 60, seed: int = 1) -> int:
    """Compare with the brute force; returns how many queries hit a card (the test must hit)."""
    hits = 0
    for point, origin, direction in queries(positions, k, seed):
        for radius in (0.05, 0.12, 0.3):
            want = pick_nearest(positions, point, radius)
            got = index.nearest(point, radius)
            assert got[0] == want[0]
            assert got[1] == pytest.approx(want[1], rel=1e-5)
            want_ray = pick_ray(positions, origin, direction, radius)
            got_ray = index.ray(origin, direction, radius)
            assert got_ray[0] == want_ray[0]
            assert got_ray[1] == pytest.approx(want_ray[1], rel=1e-4)
            hits += (want[0] >= 0) + (want_ray[0] >= 0)
    return hits


def test_same_answers_as_the_brute_force_and_few_cards_tested():
    p = cloud(5000)
    index = PickIndex(lambda: p, min_cell=0.18)
    assert agree(index, p) > 200
    assert index.builds == 1
    index.nearest(p[10], 0.18)
    assert 0 < index.last_candidates < len(p) / 10  # the point of the index


def test_moving_cards_are_found_where_they_are_now():
    p = cloud(4000, seed=3)
    index = PickIndex(lambda: p, min_cell=0.18)
    index.refresh()
    rng = np.random.default_rng(5)
    # A small shift of every card (a tween's first frames): the stale grid plus slack.
    p += rng.normal(scale=0.01, size=p.shape).astype(np.float32)
    assert agree(index, p, k=30) > 50
    assert index.builds == 1 and index.slack > 0
    # One card carried far away: tested on its own, no rebuild.
    p[17] = (9.0, 9.0, 9.0)
    assert index.nearest((9.0, 9.0, 9.05), 0.1)[0] == 17
    assert index.ray((9.0, 5.0, 9.0), (0.0, 1.0, 0.0), 0.1)[0] == 17
    assert index.builds == 1
    # Many cards moved far (the end of a tween): rebuilt, still right.
    p[: MAX_LOOSE * 2] += 1.0
    assert agree(index, p, k=30, seed=7) > 50
    assert index.builds == 2


def test_new_array_empty_and_degenerate_rays():
    arrays = {"p": cloud(300)}
    index = PickIndex(lambda: arrays["p"], min_cell=0.1)
    assert index.nearest(arrays["p"][0], 0.1)[0] == 0
    arrays["p"] = np.concatenate([arrays["p"], [[5.0, 5.0, 5.0]]]).astype(np.float32)  # a card added
    assert index.nearest((5.0, 5.0, 5.0), 0.1)[0] == 300 and index.builds == 2
    assert index.ray((5.0, 5.0, 0.0), (0.0, 0.0, 1.0), 0.1)[0] == 300  # axis-parallel ray
    assert index.ray((50.0, 50.0, 50.0), (1.0, 0.0, 0.0), 0.1) == (-1, float("inf"))  # misses the box
    assert index.ray((5.0, 5.0, 6.0), (0.0, 0.0, 1.0), 0.1)[0] == -1  # the card is behind
    arrays["p"] = np.zeros((0, 3), dtype=np.float32)
    assert index.nearest((0, 0, 0), 1.0) == (-1, float("inf"))
    assert index.ray((0, 0, 0), (1, 0, 0), 1.0) == (-1, float("inf"))


def test_the_vr_hands_pick_through_one_shared_index():
    loaded = synthetic_loaded(n=200)
    ws = loaded.workspace
    controls = VRControls(ws, lambda: ws.positions, 0.12)
    assert controls.hands["left"].index is controls.index is controls.hands["right"].index
    card = 42
    tip = 0.06
    hands = {
        "left": ControllerState(),
        "right": ControllerState(pose=Pose(np.eye(4), True), connected=True),
    }
    hands["right"].pose.matrix[:3, 3] = ws.positions[card] - np.array([0.0, tip, 0.0])
    controls.update(FrameState(1, Pose(np.eye(4), True), hands))
    brute = Hand(ws, card_size=0.12)
    assert controls.hands["right"].hovered == brute.touch(ws.positions[card]) == card
    assert controls.index.builds == 1


def test_haptic_tick_clicks_the_named_controller():
    ws = synthetic_loaded(n=20).workspace
    pulses: list[tuple[str, float]] = []
    controls = VRControls(ws, lambda: ws.positions, 0.12, haptic=lambda h, s: pulses.append((h, s)))
    controls.haptic_tick("vr-right")  # a Hand's name, as a drop preview knows it
    controls.haptic_tick("left")
    controls.haptic_tick("mouse")  # not a controller: nothing
    assert pulses == [("right", controls.config.tick_seconds), ("left", controls.config.tick_seconds)]
    assert controls.config.tick_seconds < controls.config.pulse_seconds


def test_with_the_tween_as_motion_source_still_frames_compare_nothing():
    from game.world.tween import Tween

    tw = Tween(cloud(5000, seed=2), duration=1.0)
    index = PickIndex(lambda: tw.current, min_cell=0.18, auto=False, motion=lambda: tw)
    for _ in range(5):
        index.refresh()
    assert index.builds == 1 and index.compares == 0 and index.slack == 0.0
    assert agree(index, tw.current, k=20) > 20


def test_a_carried_card_is_picked_where_it_is_without_a_rebuild():
    from game.world.tween import Tween

    tw = Tween(cloud(5000, seed=4), duration=1.0)
    index = PickIndex(lambda: tw.current, min_cell=0.18, auto=False, motion=lambda: tw)
    index.refresh()
    for k in range(30):  # carried a little further every frame, then dropped far away
        tw.pin(11, (3.0 + 0.1 * k, 3.0, 3.0))
        index.refresh()
        assert index.nearest((3.0 + 0.1 * k, 3.0, 3.02), 0.05)[0] == 11
    tw.pin(11, (-6.0, 0.0, 0.0))
    index.refresh()
    assert index.ray((-6.0, -5.0, 0.0), (0.0, 1.0, 0.0), 0.05)[0] == 11
    assert agree(index, tw.current, k=20, seed=9) > 20
    assert index.builds == 1 and index.compares == 0


def test_picks_are_right_during_and_after_a_glide_with_fewer_rebuilds_than_frames():
    from game.world.tween import Tween

    start = cloud(6000, seed=5)
    target = cloud(6000, seed=6)  # every card moves, most by metres
    tw = Tween(start, duration=1.0)
    index = PickIndex(lambda: tw.current, min_cell=0.18, auto=False, motion=lambda: tw)
    index.refresh()
    tw.retarget(target, now=0.0)
    frames = 0
    for now in np.linspace(0.0, 1.0, 91)[1:]:  # a one-second glide at 90 Hz
        tw.update(float(now))
        index.refresh()
        frames += 1
        if frames % 10 == 0:
            assert agree(index, tw.current, k=6, seed=frames) > 0
    tw.update(1.5)
    index.refresh()
    np.testing.assert_array_equal(tw.current, target)
    assert agree(index, target, k=30, seed=77) > 30
    assert 1 < index.builds < frames and index.compares == 0
    # Nothing moves any more: at most one rebuild (a tight grid for the still frames), then none.
    index.refresh()
    builds = index.builds
    assert index.slack == 0.0
    for _ in range(5):
        index.refresh()
    assert index.builds == builds and index.compares == 0


def test_a_new_tracker_falls_back_to_comparing():
    """A new scene brings a new world and tween: the old marks mean nothing there."""
    from game.world.tween import Tween

    worlds = {"tween": Tween(cloud(5000, seed=8))}
    index = PickIndex(
        lambda: worlds["tween"].current, min_cell=0.18, auto=False, motion=lambda: worlds["tween"]
    )
    index.refresh()
    worlds["tween"] = Tween(cloud(5000, seed=10))
    index.refresh()  # a new array: rebuilt
    assert index.builds == 2
    worlds["tween"].current[3] = (7.0, 7.0, 7.0)  # written without the tween knowing: still found
    worlds["tween"].pin(4, (8.0, 8.0, 8.0))
    index.refresh()
    assert index.nearest((8.0, 8.0, 8.0), 0.1)[0] == 4


def test_rays_in_every_direction_and_hidden_cards_agree_with_the_brute_force():
    p = cloud(5000, seed=12)
    p[::97] = np.nan  # hidden cards: never picked, never break the grid
    index = PickIndex(lambda: p, min_cell=0.12)
    rng = np.random.default_rng(13)
    hits = 0
    axes = [np.eye(3)[i] * s for i in range(3) for s in (1.0, -1.0)]
    directions = axes + list(rng.normal(size=(40, 3)))
    for k, direction in enumerate(directions):
        target = p[(k * 37) % len(p)]
        if not np.isfinite(target).all():
            continue
        origin = target - 3.0 * np.asarray(direction) / np.linalg.norm(direction)
        for near in (0.0, 1.0):
            want = pick_ray(p, origin, direction, 0.06, near)
            got = index.ray(origin, direction, 0.06, near)
            assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-5)
            hits += want[0] >= 0
        assert index.nearest(target, 0.2)[0] == pick_nearest(p, target, 0.2)[0]
    assert hits > 30


def test_subset_picks_break_ties_towards_the_lowest_card_as_the_full_pass_does():
    p = np.array([[0, 1, 0], [0, 1, 0], [0, 2, 0], [0, 1, 0]], dtype=np.float32)
    assert pick_ray(p, (0, 0, 0), (0, 1, 0), 0.1) == (0, 1.0)
    assert pick_ray(p, (0, 0, 0), (0, 1, 0), 0.1, cards=np.array([3, 2, 1])) == (1, 1.0)
    assert pick_nearest(p, (0, 1, 0), 0.1, cards=np.array([3, 1])) == (1, 0.0)
    assert pick_nearest(p, (0, 5, 0), 0.1, cards=np.array([3, 1])) == (-1, float("inf"))


def brute_touch_then_ray(p, point, touch_r, origin, direction, ray_r, near=0.0):
    """What a hand did before the shared gathering: a touch, then (nothing touched) a ray."""
    touched = pick_nearest(p, point, touch_r)
    return touched, None if touched[0] >= 0 else pick_ray(p, origin, direction, ray_r, near)


def same(got, want) -> None:
    (k, d), ray = got
    assert k == want[0][0] and d == pytest.approx(want[0][1], rel=1e-5)
    if want[1] is None:
        assert ray is None
    else:
        assert ray is not None and ray[0] == want[1][0]
        assert ray[1] == pytest.approx(want[1][1], rel=1e-5)


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_one_gathering_for_touch_and_laser_answers_as_the_two_queries(seed):
    """Random clouds with hidden cards, tips inside and outside the cloud, the laser from the tip
    itself (a tip pose) or from behind it, near limits, moving and carried cards."""
    from game.controls.hand import pick_touch_or_ray
    from game.world.tween import Tween

    rng = np.random.default_rng(seed)
    p = cloud(6000, seed=seed)
    p[rng.integers(0, len(p), 60)] = np.nan
    tw = Tween(p.copy(), duration=1.0)
    index = PickIndex(lambda: tw.current, min_cell=0.18, auto=False, motion=lambda: tw)
    index.refresh()
    index.refresh()  # still: the first half reads the copy in grid order, the second cannot
    assert index._sorted is not None
    touches = rays = 0
    for k in range(120):
        if k == 60:  # a card carried far off and the whole cloud mid-glide: slack, loose cards
            tw.pin(5, (6.0, 6.0, 6.0))
            shifted = tw.current + rng.normal(scale=0.01, size=tw.current.shape).astype(np.float32)
            tw.retarget(shifted, now=0.0)
            tw.update(0.3)
            index.refresh()
            assert index.slack > 0.0 and len(index._loose)
        q = tw.current
        shown = q[np.isfinite(q).all(axis=1)]
        target = shown[rng.integers(len(shown))]
        if k % 7 == 0:
            target = rng.uniform(-5, 5, size=3)  # often outside the grid's box
        tip = (target + rng.normal(scale=0.3, size=3)).astype(np.float64)
        # Half the lasers aim at a card (hits), half anywhere.
        direction = shown[rng.integers(len(shown))] - tip if k % 4 < 2 else rng.normal(size=3)
        origin = tip if k % 2 else tip - 0.06 * direction / np.linalg.norm(direction)
        near = 0.0 if k % 3 else 0.5
        want = brute_touch_then_ray(q, tip, 0.12, origin, direction, 0.05, near)
        same(index.touch_or_ray(tip, 0.12, origin, direction, 0.05, near), want)
        same(pick_touch_or_ray(q, tip, 0.12, origin, direction, 0.05, near), want)
        touches += want[0][0] >= 0
        rays += want[1] is not None and want[1][0] >= 0
    assert touches > 20 and rays > 20  # both branches were taken and hit
    assert index.builds == 1


def test_zero_direction_and_empty_clouds_answer_as_the_two_queries():
    p = cloud(5000, seed=30)
    index = PickIndex(lambda: p, min_cell=0.18)
    for point in (p[3], np.array([0.5, 0.5, 0.5])):
        want = brute_touch_then_ray(p, point, 0.1, point, (0, 0, 0), 0.05)
        same(index.touch_or_ray(point, 0.1, point, (0, 0, 0), 0.05), want)
    empty = np.zeros((0, 3), dtype=np.float32)
    index = PickIndex(lambda: empty, min_cell=0.18)
    assert index.touch_or_ray((0, 0, 0), 0.1, (0, 0, 0), (0, 1, 0), 0.05)[0] == (-1, float("inf"))


def vr_frame(right: np.ndarray, left: np.ndarray, trigger: bool) -> FrameState:
    hands = {}
    for name, m in (("left", left), ("right", right)):
        hands[name] = ControllerState(pose=Pose(m, True), connected=True, trigger=trigger)
    return FrameState(1, Pose(np.eye(4), True), hands)


def aim(rng, positions: np.ndarray) -> np.ndarray:
    """A controller pose near a card, pointing somewhere random (its +Y)."""
    m = np.eye(4)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    m[:3, :3] = q * np.sign(np.linalg.det(q))
    m[:3, 3] = positions[rng.integers(len(positions))] + rng.normal(scale=0.3, size=3)
    return m


def test_both_vr_hands_hover_what_a_touch_then_a_ray_by_brute_force_hovers():
    """Through VRControls: both hands, triggers held, tips without a tip pose (the laser starts
    behind the tip) and with one (the laser starts at the tip); hidden cards."""
    from game.controls.vr_controls import TIP

    loaded = synthetic_loaded(n=300)
    ws = loaded.workspace
    p = cloud(5000, seed=40)
    p[::53] = np.nan
    controls = VRControls(ws, lambda: p, 0.08)
    brute = Hand(ws, lambda: p, 0.08)
    rng = np.random.default_rng(41)
    hovered = {"touch": 0, "ray": 0}
    for frame in range(80):
        poses = {h: aim(rng, p[np.isfinite(p).all(axis=1)]) for h in ("left", "right")}
        state = vr_frame(poses["right"], poses["left"], trigger=True)
        if frame % 2:
            for h in ("left", "right"):
                state.hands[h].tip = Pose(poses[h].copy(), True)
        controls.update(state)
        for h in ("left", "right"):
            m = poses[h]
            origin, forward = m[:3, 3], m[:3, 1] / np.linalg.norm(m[:3, 1])
            tip = origin if frame % 2 else origin + forward * TIP
            want = brute.touch(tip)
            if want < 0:
                want = brute.point(origin, forward)
                hovered["ray"] += want >= 0
            else:
                hovered["touch"] += 1
            assert controls.hands[h].hovered == want
    assert hovered["touch"] > 10 and hovered["ray"] > 10


def test_still_frames_read_the_copy_in_grid_order_and_every_change_drops_it():
    """The copy of the positions in grid order answers still frames; a carried card, a card
    hidden by a zero-length re-layout (no card travels: the tween's bound is 0), a glide and a
    new layout each drop it, and it is made again once the cards are still."""
    from game.world.tween import Tween

    tw = Tween(cloud(6000, seed=50), duration=1.0)
    index = PickIndex(lambda: tw.current, min_cell=0.18, auto=False, motion=lambda: tw)
    index.refresh()  # built
    assert index._sorted is None
    index.refresh()  # still: copied once
    assert index.sorted_copies == 1
    np.testing.assert_array_equal(index._sorted[:, :3], tw.current[index._order])
    np.testing.assert_array_equal(index._sorted[:, 3], index._order)  # each row's card
    assert agree(index, tw.current, k=20, seed=51) > 20
    for _ in range(3):
        index.refresh()
    assert index.sorted_copies == 1 and index.builds == 1

    # Carried: the copy goes at once; the card is found where it is, not where it was.
    was = tw.current[11].copy()
    tw.pin(11, (3.0, 3.0, 3.0))
    index.refresh()
    assert index._sorted is None
    assert index.nearest((3.0, 3.0, 3.02), 0.05)[0] == 11
    assert index.nearest(was, 0.01)[0] != 11
    index.refresh()  # still again: a new copy holds the card's new place
    assert index.sorted_copies == 2 and index.builds == 1
    assert index.nearest((3.0, 3.0, 3.02), 0.05)[0] == 11
    assert index.nearest(was, 0.01)[0] != 11
    assert agree(index, tw.current, k=20, seed=52) > 20

    # Hidden without any card travelling: the tween's bound is 0, yet the copy must go.
    hidden = tw.current.copy()
    hidden[40] = np.nan
    tw.retarget(hidden, now=0.0, duration=0.0)
    index.refresh()
    assert index._sorted is None
    assert index.nearest(tw.start[40], 0.05)[0] != 40
    index.refresh()
    assert index.sorted_copies == 3
    assert index.nearest(tw.start[40], 0.05)[0] != 40
    assert pick_nearest(tw.current, tw.start[40], 0.05)[0] == index.nearest(tw.start[40], 0.05)[0]

    # A glide: no copy while the cards move, a copy of the new layout once they are still.
    target = cloud(6000, seed=53)
    tw.retarget(target, now=0.0, duration=1.0)
    for now in np.linspace(0.0, 1.0, 31)[1:]:
        tw.update(float(now))
        index.refresh()
        assert index._sorted is None
    assert agree(index, tw.current, k=10, seed=54) > 0
    tw.update(1.5)
    index.refresh()
    index.refresh()
    assert index._sorted is not None
    np.testing.assert_array_equal(index._sorted[:, :3], target[index._order])
    assert agree(index, target, k=20, seed=55) > 20

    # Cards added (a new array, another order): rebuilt, copied again once still.
    copies = index.sorted_copies
    tw.retarget(np.concatenate([target, cloud(500, seed=56)]), now=2.0, duration=0.0)
    index.refresh()
    assert index._sorted is None
    index.refresh()
    assert index.sorted_copies == copies + 1 and len(index._sorted) == 6500
    assert agree(index, tw.current, k=20, seed=57) > 20


def test_without_a_motion_source_the_copy_lives_while_the_compare_finds_no_change():
    p = cloud(5000, seed=60)
    index = PickIndex(lambda: p, min_cell=0.18)  # auto: a compare before every query
    assert agree(index, p, k=10, seed=61) > 10
    assert index._sorted is not None and index.sorted_copies == 1
    p[7] = (9.0, 9.0, 9.0)  # moved in place
    assert index.nearest((9.0, 9.0, 9.0), 0.05)[0] == 7
    assert index._sorted is None
    assert agree(index, p, k=10, seed=62) > 10


def test_ties_through_the_copy_in_grid_order_go_to_the_lowest_card():
    """Cards at the very same place (exact ties): the index, reading card numbers from its copy
    in grid order (float32), answers the lowest card as the brute force does."""
    p = cloud(6000, seed=40)
    twins = np.arange(0, 6000, 7)
    p[twins[1:]] = p[twins[:-1]]  # each card also stands where the previous one of its kind stood
    p[5990] = p[14]  # a high card number on a low one's spot
    index = PickIndex(lambda: p, min_cell=0.18, auto=False)
    index.refresh()
    index.refresh()
    assert index._sorted is not None
    rng = np.random.default_rng(41)
    for k in range(80):
        target = p[twins[k % len(twins)]] if k % 2 else p[14]
        origin = target + rng.normal(size=3) * 1.5
        direction = target - origin
        assert index.ray(origin, direction, 0.05) == pick_ray(p, origin, direction, 0.05)
        assert index.nearest(target, 0.1) == pick_nearest(p, target, 0.1)
        assert index.nearest(target, 0.1)[0] == int(np.flatnonzero((p == target).all(axis=1)).min())
