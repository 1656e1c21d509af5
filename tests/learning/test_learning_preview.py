"""The staged update's preview (issue 17): through both backends, before the full result, never a
model version nor an event; a failed or cancelled job takes it back; the full result is bitwise
the same with or without it; small scenes skip it by default."""

import copy
import dataclasses

import numpy as np
import pytest
from test_learning_finetune import pick_relabel, request

from game.core import events as ev
from game.learning.controller import FineTuneController
from game.learning.finetune import FineTuneDiverged, compute_stem_cache, run_finetune
from game.learning.preview import Preview, preview_rows, preview_target
from game.world.tween import Tween

PREVIEW_CARDS = 300


@pytest.fixture
def loaded(fresh_digits):
    fresh_digits.scene = copy.deepcopy(fresh_digits.scene)
    learning = fresh_digits.scene.learning
    learning.preview_above, learning.preview_cards = 0, PREVIEW_CARDS  # digits is small: force it
    return fresh_digits


class Screen:
    """What the world does with previews and model updates (``World.show_preview`` and its
    ``ModelUpdated`` handler), on a tween that jumps at once (duration 0), with the order seen."""

    def __init__(self, ctl: FineTuneController) -> None:
        self.ws = ctl.workspace
        self.tween = Tween(self.ws.positions, 0.0)
        self.seen: list[object] = []
        self.shown_during_preview: np.ndarray | None = None
        ctl.preview_listeners.append(self.on_preview)
        self.ws.subscribe(self.on_event)

    def on_preview(self, preview: Preview | None) -> None:
        self.seen.append(preview)
        self.tween.retarget(preview_target(self.ws.positions, preview), 0.0, 0.0)
        if preview is not None:
            self.shown_during_preview = self.tween.current.copy()

    def on_event(self, event: ev.Event, ws) -> None:
        self.seen.append(event)
        if isinstance(event, ev.ModelUpdated):
            self.tween.retarget(ws.positions, 0.0, 0.0)

    @property
    def previews(self) -> list[Preview]:
        return [s for s in self.seen if isinstance(s, Preview)]

    def models(self) -> list[ev.ModelUpdated]:
        return [s for s in self.seen if isinstance(s, ev.ModelUpdated)]


def drop(loaded, seed=3):
    _, target, edit = pick_relabel(loaded, seed=seed)
    ws = loaded.workspace
    ws.post(ws.drop_event(edit.card, edit.position))
    ws.flush()
    return edit.card, target


def run_frames(ctl: FineTuneController, until, limit: float = 300.0) -> None:
    """The frame loop: poll, flush, update, until ``until()`` (or fail after ``limit`` s)."""
    import time

    end = time.monotonic() + limit
    while not until():
        assert time.monotonic() < end, "no answer in time"
        ctl.update()
        ctl.workspace.flush()
        time.sleep(0.005)


def check_preview_then_full(loaded, ctl: FineTuneController) -> None:
    screen = Screen(ctl)
    before = ctl.store.version
    card, target = drop(loaded)
    assert ctl.apply_edits_now()
    run_frames(ctl, lambda: not ctl.busy)
    ctl.workspace.flush()
    previews, models = screen.previews, screen.models()
    assert len(previews) == 1 and len(models) == 1, ctl.failures
    preview, model = previews[0], models[0]
    assert screen.seen.index(preview) < screen.seen.index(model)  # the preview came first
    assert preview.version == model.version == before + 1 == ctl.store.version  # one new version
    assert card in preview.cards and 0 < len(preview.cards) <= PREVIEW_CARDS + 1
    assert preview.positions.shape == (len(preview.cards), 3) and np.isfinite(preview.positions).all()
    # The previewed cards moved on screen before the full result; the full result then set all.
    assert screen.shown_during_preview is not None
    assert not np.array_equal(screen.shown_during_preview[card], ctl.store.previous.layout.positions[card])
    np.testing.assert_array_equal(screen.tween.current, ctl.workspace.positions)
    assert int(ctl.workspace.labels[card]) == target
    # Never an event: what the workspace (and so the recorder) saw is what it sees without one.
    assert not any(isinstance(e, ev.Event) and type(e).kind not in ev.EVENT_TYPES for e in screen.seen)


def test_preview_before_the_full_result_on_the_thread(loaded, worker):
    ctl = FineTuneController(loaded, worker, job_process=False)
    assert ctl.wait_ready(120)
    check_preview_then_full(loaded, ctl)
    ctl.close()


def test_preview_before_the_full_result_from_the_job_process(loaded, worker):
    ctl = FineTuneController(loaded, worker, job_process=True)
    try:
        assert ctl.wait_ready(300)
        assert ctl.backend.name == "process"
        # A scene with previews: the child got the features on show when it was prepared (their
        # spread and PCA ready), so the first job does not send them.
        assert ctl.process._kept_key == ctl.process._key(ctl.store.network())
        check_preview_then_full(loaded, ctl)
    finally:
        ctl.close()
        worker.wait_idle(30, lane="background")


def test_a_failed_job_takes_its_preview_back(loaded, worker):
    def fails_after_preview(req, **kw):
        run_finetune(req, **kw)  # sends the preview
        raise FineTuneDiverged("the loss became NaN (test)")

    loaded.scene.learning.relayout_keep = 1.0  # every card whose neighbours changed at all moves
    ctl = FineTuneController(loaded, worker, train_fn=fails_after_preview)
    assert ctl.wait_ready(120)
    screen = Screen(ctl)
    version, shown = ctl.store.version, ctl.workspace.positions.copy()
    card, _ = drop(loaded)
    ctl.apply_edits_now()
    run_frames(ctl, lambda: not ctl.busy)
    assert ctl.failures and ctl.store.version == version
    assert [type(s).__name__ for s in screen.seen if s is None or isinstance(s, Preview)] == [
        "Preview",
        "NoneType",
    ]
    preview = screen.previews[0]
    moved = preview.cards[preview.cards != card]
    assert len(moved) and not np.array_equal(screen.shown_during_preview[moved], shown[moved])
    # Back where the current version puts every card (the dropped card where it was dropped).
    np.testing.assert_array_equal(screen.tween.current, ctl.workspace.positions)
    np.testing.assert_array_equal(screen.tween.current[moved], ctl.store.current.layout.positions[moved])
    assert card in ctl.pending  # the edit waits for the next job
    ctl.close()


def test_undo_while_the_preview_shows_cancels_and_takes_it_back(loaded, worker):
    ctl = FineTuneController(loaded, worker, job_process=False)
    assert ctl.wait_ready(120)
    screen = Screen(ctl)
    version = ctl.store.version
    ctl.preview_listeners.append(lambda p: ctl.undo() if p is not None else None)  # undo at once
    drop(loaded)
    ctl.apply_edits_now()
    run_frames(ctl, lambda: not ctl.busy)
    ctl.workspace.flush()
    kinds = [s for s in screen.seen if s is None or isinstance(s, Preview)]
    assert len(kinds) == 2 and isinstance(kinds[0], Preview) and kinds[1] is None
    assert ctl.store.version == version  # no new model version
    models = screen.models()
    assert models and models[-1].version == version  # the cancel posts the current version
    np.testing.assert_array_equal(screen.tween.current, ctl.workspace.positions)
    np.testing.assert_array_equal(screen.tween.current, ctl.store.current.layout.positions)
    ctl.close()


def test_the_full_result_is_bitwise_the_same_with_a_preview(loaded_digits):
    stem = compute_stem_cache(loaded_digits.network, loaded_digits.workspace.images, 2)
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    plain = run_finetune(request(loaded_digits, [edit], stem))
    got: list[Preview] = []
    req = request(loaded_digits, [edit], stem)
    req.config = dataclasses.replace(req.config, preview_above=0, preview_cards=PREVIEW_CARDS)
    req.on_preview = got.append
    staged = run_finetune(req)
    assert len(got) == 1 and "preview" in staged.seconds
    assert plain.weights == staged.weights
    np.testing.assert_array_equal(plain.inference.features, staged.inference.features)
    np.testing.assert_array_equal(plain.inference.top5_scores, staged.inference.top5_scores)
    np.testing.assert_array_equal(plain.layout.positions, staged.layout.positions)
    assert plain.losses == staged.losses


def test_small_scenes_skip_the_preview_by_default(loaded_digits):
    assert loaded_digits.scene.learning.preview_above > loaded_digits.workspace.n_cards
    stem = compute_stem_cache(loaded_digits.network, loaded_digits.workspace.images, 2)
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    got: list[Preview] = []
    req = request(loaded_digits, [edit], stem)
    req.on_preview = got.append
    result = run_finetune(req)
    assert got == [] and "preview" not in result.seconds


def test_preview_rows_are_the_cards_nearest_the_drop_and_the_old_place():
    positions = np.zeros((100, 3), np.float32)
    positions[:, 0] = np.arange(100)
    edit = ev.EditQueued(
        card=10, action="relabel", old_label=0, new_label=1, repeats=1, position=(80.2, 0.0, 0.0)
    )
    rows = preview_rows(positions, [edit], 6)
    assert set(rows) >= {10}
    assert set(rows) <= {8, 9, 10, 11, 12, 78, 79, 80, 81, 82}
    assert len(rows) == 6


def test_preview_target_moves_only_the_previewed_cards():
    positions = np.arange(12, dtype=np.float32).reshape(4, 3)
    preview = Preview(2, np.array([1, 3]), np.ones((2, 3), np.float32))
    target = preview_target(positions, preview)
    np.testing.assert_array_equal(target[[0, 2]], positions[[0, 2]])
    np.testing.assert_array_equal(target[[1, 3]], 1.0)
    np.testing.assert_array_equal(preview_target(positions, None), positions)


def test_no_preview_while_another_feature_layer_is_shown(loaded, worker):
    """The preview's places are in the trained layer's layout: with another layer on show (the
    workspace's positions are that layer's) the previewed cards would land among the wrong
    layout, so the preview is not shown (the full result switches back to the trained layer)."""
    from game.learning.controller import _Running

    ctl = FineTuneController(loaded, worker, job_process=False)
    shown: list[Preview | None] = []
    ctl.preview_listeners.append(shown.append)
    job = _Running(1, "finetune")
    ctl._running = job
    preview = Preview(1, np.array([0, 1]), np.ones((2, 3), np.float32))
    ctl._display_positions = ctl.workspace.positions.copy()  # as after a LayerChanged to another
    ctl._preview_arrived(job, preview)
    ctl._show_preview()
    assert shown == [] and ctl.last_preview is None
    ctl._display_positions = None  # the trained layer on show: the same preview is shown
    ctl._preview_arrived(job, preview)
    ctl._show_preview()
    assert len(shown) == 1 and shown[0] is not None and np.array_equal(shown[0].cards, [0, 1])
    ctl._running = None
    ctl.close()
