"""Replay reproduces the workspace: playing, stepping, seeking, speed, poses; the summary."""

from __future__ import annotations

import numpy as np
import pytest
from sessions_helpers import tiny_workspace

from game.core import events as ev
from game.core.workspace import Workspace
from game.sessions.reader import SessionReader
from game.sessions.recorder import SessionRecorder
from game.sessions.replay import ReplayDriver
from game.sessions.summary import summarize, summary_text

STATE = ("labels", "top5_classes", "top5_scores", "features", "positions", "card_state", "original_labels")


def assert_same_state(a: Workspace, b: Workspace) -> None:
    assert a.n_cards == b.n_cards
    for name in STATE:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.model_version == b.model_version and a.selected == b.selected
    assert a.feature_layer == b.feature_layer


def _model_event(
    ws: Workspace, version: int, rng: np.random.Generator, relabel: dict[int, int]
) -> ev.ModelUpdated:
    labels = ws.labels.copy()
    for card, label in relabel.items():
        labels[card] = label
    top5 = ws.top5_classes.copy()
    flip = rng.random(ws.n_cards) < 0.3
    top5[flip, 0] = labels[flip]
    return ev.ModelUpdated(
        version=version,
        labels=labels,
        top5_classes=top5,
        top5_scores=rng.random(ws.top5_scores.shape).astype(np.float32),
        features=rng.normal(size=ws.features.shape).astype(np.float32),
        positions=(ws.positions + rng.normal(scale=0.05, size=ws.positions.shape)).astype(np.float32),
        summary=f"fine-tune {version}",
    )


def record_session(path, seed: int = 0, weights_for: tuple[int, ...] = ()):
    """A scripted session on a tiny workspace; returns (initial copy, final live workspace).

    ``weights_for``: model versions whose (stand-in) weights the file stores, so their model and
    layer events are written without features (the replay then needs a feature source)."""
    rng = np.random.default_rng(seed)
    ws = tiny_workspace()
    initial = ws.copy()
    clock = [0.0]
    rec = SessionRecorder(path, None, ws, clock=lambda: clock[0])
    rec.attach(ws)

    def at(t: float, *events: ev.Event) -> None:
        clock[0] = t
        for e in events:
            ws.post(e)
        ws.flush()

    t = 0.0
    version = 0
    for round_ in range(4):
        card = int(rng.integers(0, ws.n_cards))
        start = tuple(float(x) for x in ws.positions[card])
        at(t + 0.1, ev.CardSelected(card), ev.CardGrabbed(card, start))
        for k in range(30):
            at(t + 0.2 + k / 90, ev.CardMoved(card, (start[0] + k * 0.01, start[1], start[2])))
        target = (round_ + 1) % ws.n_classes
        at(t + 0.6, ev.CardDropped(card, (start[0] + 0.3, start[1], start[2]), target, 0.1))
        at(t + 0.61, ev.EditQueued(card, "relabel", int(ws.labels[card]), target, 1, start))
        other = (card + 5) % ws.n_cards
        at(t + 0.7, ev.CardGrabbed(other, (0.0, 0.0, 1.0)), ev.CardMoved(other, (0.5, 0.5, 1.0)))
        at(t + 0.8, ev.GrabCancelled(other, (0.0, 0.0, 1.0)))
        at(t + 1.0, ev.JobStatus(round_, "running"))
        if round_ != 2:
            version += 1
            if version in weights_for:
                rec.record_model(version, f"weights of v{version}".encode())
            at(t + 1.5, _model_event(ws, version, rng, {card: target}), ev.JobStatus(round_, "done"))
        t += 2.0
    at(t, ev.UndoRequested())
    at(t + 0.2, ev.PositionsChanged(ws.positions[::-1].copy(), reason="undo"))
    at(
        t + 0.3,
        ev.LayerChanged("conv2", rng.normal(size=(ws.n_cards, 4)).astype(np.float32), ws.positions * 0.9),
    )
    at(t + 0.4, ev.CardSelected(-1))
    # a last drag left open at the end
    at(t + 0.5, ev.CardGrabbed(2, (0.0, 0.0, 0.0)), ev.CardMoved(2, (1.0, 1.0, 1.0)))
    for i in range(int((t + 1) * 90)):
        clock[0] = i / 90
        rec.record_pose(i / 90, (i / 90, 0.0, 1.7, 1.0, 0.0, 0.0, 0.0), None, ((0.3, 0.2, 1.2), (1, 0, 0, 0)))
    clock[0] = t + 1
    rec.close()
    return initial, ws


@pytest.fixture
def session(tmp_path):
    path = tmp_path / "r.session.sqlite"
    initial, final = record_session(path)
    reader = SessionReader(path)
    yield reader, initial, final
    reader.close()


def _state_at(reader: SessionReader, initial: Workspace, t: float) -> Workspace:
    ws = initial.copy()
    for item in reader.events(1, reader.last_seq_at(t)):
        ws.apply(item.event)
    return ws


def test_play_to_end_reproduces_the_live_workspace(session):
    reader, initial, final = session
    ws = reader.initial_workspace(initial.images)
    assert_same_state(ws, initial)
    seen = []
    ws.subscribe(lambda e, w: seen.append(e.kind))
    driver = ReplayDriver(reader, ws, auto_flush=True)
    driver.play()
    now = 0.0
    while not driver.finished:
        now += 1 / 30
        driver.update(now)
    assert_same_state(ws, final)
    assert len(seen) == reader.event_count and not driver.playing


def test_paused_driver_posts_nothing_and_speed_scales_time(session):
    reader, initial, _ = session
    ws = initial.copy()
    driver = ReplayDriver(reader, ws, auto_flush=True)
    driver.update(0.0)
    driver.update(5.0)
    assert driver.clock == 0.0 and driver.posted == 0
    driver.set_speed(4.0)
    driver.play()
    driver.update(5.5)
    assert driver.clock == pytest.approx(2.0)
    assert driver.posted == reader.last_seq_at(2.0)
    with pytest.raises(ValueError, match="between"):
        driver.set_speed(10)
    with pytest.raises(ValueError):
        driver.set_speed(0.1)


def test_step_posts_one_event_at_a_time(session):
    reader, initial, final = session
    ws = initial.copy()
    driver = ReplayDriver(reader, ws, auto_flush=True)
    times = []
    while (item := driver.step()) is not None:
        times.append(item.t)
        assert driver.clock == item.t and not driver.playing
    assert len(times) == reader.event_count
    assert_same_state(ws, final)


@pytest.mark.parametrize("t", [0.0, 0.35, 0.65, 1.2, 1.6, 3.7, 5.9, 7.0, 8.25, 8.45, 99.0])
def test_seek_gives_the_state_at_that_time(session, t):
    reader, initial, _ = session
    ws = initial.copy()
    driver = ReplayDriver(reader, ws, auto_flush=True)
    # from the end, backwards (and forwards from the start in the next seek)
    driver.seek(reader.duration)
    driver.seek(t)
    assert_same_state(ws, _state_at(reader, initial, t))
    # playing on from there ends in the recorded end state
    driver.play()
    driver.set_speed(8.0)
    now = 0.0
    while not driver.finished:
        now += 0.1
        driver.update(now)
    assert_same_state(ws, _state_at(reader, initial, 1e9))


def test_seek_skips_superseded_events(session):
    reader, _, _ = session
    end = reader.last_seq_at(7.0)
    keep, last_model = reader.fast_forward_plan(end)
    assert last_model > 0 and len(keep) < end / 4


def test_camera_follows_the_recorded_head(session):
    reader, initial, _ = session
    got = []
    driver = ReplayDriver(reader, initial.copy(), on_pose=lambda *poses: got.append(poses))
    driver.seek(3.0)
    head, left, right = got[-1]
    assert head[0] == pytest.approx(3.0, abs=1e-4) and head[2] == pytest.approx(1.7)
    assert left is None
    np.testing.assert_allclose(right, [0.3, 0.2, 1.2, 1, 0, 0, 0], atol=1e-6)
    driver.play()
    driver.update(0.0)
    driver.update(0.5)
    assert got[-1][0][0] == pytest.approx(3.5, abs=1e-4)


def test_summary_counts_edits_and_accuracy(session):
    reader, initial, _ = session
    s = summarize(reader)
    assert s["events"]["edit"] == 4 and s["undos"] == 1 and len(s["edits"]) == 4
    assert [m["version"] for m in s["models"]] == [0, 1, 2, 3]
    held = ~initial.is_train
    acc0 = float(np.mean(initial.top5_classes[held, 0] == initial.original_labels[held]))
    assert s["models"][0]["heldout_accuracy"] == pytest.approx(acc0, abs=1e-4)
    assert s["pose_frames"] > 0 and s["damage"] is None
    text = summary_text(s)
    assert "held-out accuracy" in text and "relabel" in text
