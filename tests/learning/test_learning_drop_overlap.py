"""The drop -> tween path with work overlapped or copies left out (issue 17, the tenth session),
each against the sequential path: the preview placed beside the re-inference, the trained weights'
bytes made on a thread beside it, the first layer's gradient in one buffer per job, the re-layout's
neighbour step on the re-inference's threads. The numbers are those of the path before."""

import dataclasses
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save
from test_learning_finetune import pick_relabel, request
from torch import nn

from game.learning import head_update
from game.learning import stem as stem_module
from game.learning.finetune import HeadOptimiser, compute_stem_cache, run_finetune
from game.learning.preview import Preview
from game.learning.stem import in_threads, prime_pre_activations

PREVIEW_CARDS = 300


def _staged_job(loaded, monkeypatch, threads, preview=True):
    """A relabel job on a fresh, primed stem cache (the low-rank re-inference, as at scale), its
    re-inference on ``threads`` threads; returns the result, the previews and their threads."""
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(stem_module, "REINFER_THREADS", threads)
    stem = compute_stem_cache(loaded.network, loaded.workspace.images, 2)
    prime_pre_activations(loaded.network, len(loaded.workspace.images), stem)
    _, _, edit = pick_relabel(loaded, seed=5)
    req = request(loaded, [edit], stem)
    got: list[tuple[Preview, int]] = []
    if preview:
        req.config = dataclasses.replace(req.config, preview_above=0, preview_cards=PREVIEW_CARDS)
        req.on_preview = lambda p: got.append((p, threading.get_ident()))
    return run_finetune(req), got


def _assert_same_result(a, b):
    assert a.weights == b.weights
    assert a.losses == b.losses and a.steps == b.steps
    np.testing.assert_array_equal(a.inference.features, b.inference.features)
    np.testing.assert_array_equal(a.inference.top5_scores, b.inference.top5_scores)
    np.testing.assert_array_equal(a.layout.positions, b.layout.positions)
    np.testing.assert_array_equal(a.layout.moved, b.layout.moved)


def test_the_preview_placed_beside_the_re_inference_changes_no_number(
    loaded_digits, monkeypatch, one_torch_thread
):
    before, seq = _staged_job(loaded_digits, monkeypatch, 1)  # placed first, then the pass
    beside, par = _staged_job(loaded_digits, monkeypatch, 2)  # placed on the pass's second thread
    plain, none = _staged_job(loaded_digits, monkeypatch, 2, preview=False)
    assert none == [] and len(seq) == 1 and len(par) == 1
    assert par[0][1] != threading.get_ident()  # it ran beside the pass, not on the job's thread
    assert seq[0][1] == threading.get_ident()
    (p_seq, _), (p_par, _) = seq[0], par[0]
    np.testing.assert_array_equal(p_seq.cards, p_par.cards)
    np.testing.assert_array_equal(p_seq.positions, p_par.positions)
    assert p_seq.candidates == p_par.candidates
    _assert_same_result(before, beside)
    _assert_same_result(plain, beside)
    assert "preview beside" in beside.seconds and "infer cpu" in beside.seconds


def test_the_weights_bytes_made_beside_are_the_trained_weights(loaded_digits, monkeypatch, one_torch_thread):
    result, _ = _staged_job(loaded_digits, monkeypatch, 2, preview=False)
    state = result.network.module.state_dict()
    assert result.weights == save({n: state[n].detach().clone() for n in result.weight_names})


def test_first_runs_once_on_a_helper_before_its_items_and_every_item_runs():
    done: list[tuple[str, int]] = []
    lock = threading.Lock()
    caller = threading.get_ident()

    def first() -> None:
        with lock:
            done.append(("first", threading.get_ident()))

    def work(i: int) -> None:
        with lock:
            done.append((f"item {i}", threading.get_ident()))

    in_threads(work, range(20), 2, first=first)
    assert sorted(d for d, _ in done if d != "first") == sorted(f"item {i}" for i in range(20))
    helper = [t for d, t in done if d == "first"]
    assert len(helper) == 1 and helper[0] != caller
    helper_items = [d for d, t in done if t == helper[0]]
    assert helper_items[0] == "first"  # before that thread took any item
    # One thread: first, then the items in order, here.
    done.clear()
    in_threads(work, range(3), 1, first=first)
    assert [d for d, _ in done] == ["first", "item 0", "item 1", "item 2"]
    assert {t for _, t in done} == {caller}


def test_an_error_in_first_is_raised_as_on_one_thread():
    """``first`` on a helper thread: its error reaches the caller, as it does on one thread."""

    def first() -> None:
        raise ValueError("preview broke")

    for threads in (1, 2):
        with pytest.raises(ValueError, match="preview broke"):
            in_threads(lambda item: None, range(4), threads, first=first)


def test_a_job_that_fails_after_training_leaves_no_weights_thread_running(loaded_digits, monkeypatch):
    """The trained weights' bytes are made on a thread from the end of training; a job cancelled
    (or failing) after that joins it before the error leaves ``run_finetune``: a CLI exits right
    after, and torch aborts the process under a thread still inside it."""
    import time

    from game.learning import finetune
    from game.learning.finetune import FineTuneCancelled

    real = finetune.state_to_bytes

    def slow_bytes(*args):  # still at work when the job is cancelled
        time.sleep(0.5)
        return real(*args)

    monkeypatch.setattr(finetune, "state_to_bytes", slow_bytes)
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    req = request(loaded_digits, [edit], None)

    def cancelled() -> bool:  # false while training, true from the first check after it
        return any(t.name == "finetune-weights" for t in threading.enumerate())

    with pytest.raises(FineTuneCancelled):
        run_finetune(req, cancelled=cancelled)
    assert not any(t.name == "finetune-weights" for t in threading.enumerate())


def test_first_runs_to_its_end_when_an_item_fails():
    finished = threading.Event()

    def first() -> None:
        finished.wait(0.05)
        finished.set()

    def work(i: int) -> None:
        if i == 0:
            raise ValueError("item 0")

    with pytest.raises(ValueError, match="item 0"):
        in_threads(work, range(4), 2, first=first)
    assert finished.is_set()


def test_the_first_layer_gradient_in_one_buffer_steps_as_a_new_one_did():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    inputs, precond = torch.randn(40, 64), torch.randn(64, 64) * 0.1
    reference = layer.weight.detach().clone()
    optimiser = HeadOptimiser(
        None, torch.optim.SGD([layer.weight], lr=0.05), layer.weight, inputs, precond, inputs @ precond
    )

    class Runner:
        last_pre_activation: torch.Tensor | None = None

    runner = Runner()
    for step in range(3):
        rows = np.arange(step, step + 12)
        z = nn.functional.linear(inputs[torch.from_numpy(rows)], layer.weight.detach(), layer.bias)
        runner.last_pre_activation = z
        optimiser.zero_grad()
        optimiser.before_backward(runner)
        (z**2).sum().backward()
        expected = z.grad.T @ (inputs @ precond)[torch.from_numpy(rows)]  # what the step computed before
        reference = reference.add(expected, alpha=-0.05)
        optimiser.step(runner, rows)
        assert torch.equal(layer.weight.detach(), reference)


def test_the_pull_spread_from_kept_pre_activations_at_scale_only(
    loaded_digits, monkeypatch, one_torch_thread
):
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    images = loaded_digits.workspace.images
    stem = compute_stem_cache(loaded_digits.network, images, 2)
    prime_pre_activations(loaded_digits.network, len(images), stem)
    runner = stem_module.Runner(loaded_digits.network.clone(), images, stem, False)
    rows = np.arange(5, 400, 3)
    assert runner.kept_pre_activations(rows) is None  # a small scene: ``forward`` as before
    monkeypatch.setattr(stem_module, "LARGE_JOB_CARDS", 0)
    kept = runner.kept_pre_activations(rows)
    with torch.no_grad():
        runner.forward(rows)
    assert kept is not None and runner.last_pre_activation is not None
    torch.testing.assert_close(kept, runner.last_pre_activation, rtol=0, atol=1e-5)
    with torch.no_grad():  # trained since: not the kept state's weights any more
        runner.network.module.classifier.fc1.weight[0, 0] += 1.0
    assert runner.kept_pre_activations(rows) is None


def test_the_re_layout_neighbour_step_takes_the_re_inference_threads():
    # The job process's projector runs on one thread; its neighbour step (bit for bit the same on
    # any number: tests/layout) takes two where there are two cores.
    from game.layout import projector

    assert projector.graph_threads(1) == min(projector.GRAPH_THREADS, projector.available_cores())
    assert projector.graph_threads(4) == 4
