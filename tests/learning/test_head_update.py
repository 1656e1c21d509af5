"""Re-inference after a head-only fine-tune as a low-rank update (``head_update``): the same
features as the full pass within float noise, the full pass where the update is not low-rank."""

import numpy as np
import pytest
import torch
from test_learning_finetune import pick_relabel

from game.learning import head_update
from game.learning.finetune import FineTuneRequest, Runner, compute_stem_cache, run_finetune
from game.learning.head_update import cache_for, low_rank_difference
from game.learning.stem import prime_pre_activations
from game.nets.weights import state_from_bytes


def test_low_rank_difference_finds_the_rank_and_the_factors():
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(300, 200, generator=gen)
    delta = torch.randn(300, 9, generator=gen) @ torch.randn(9, 200, generator=gen) * 0.01
    new = old + delta  # float32: the sum is rounded, the factorisation need not carry that
    factors = low_rank_difference(new, old)
    assert factors is not None
    u, v = factors
    assert u.shape == (300, 9) and v.shape == (200, 9)
    missed = (new.double() - old.double() - u.double() @ v.double().T).norm()
    assert missed <= 2 * head_update.RELATIVE_TOLERANCE * new.double().norm()


def test_low_rank_difference_gives_up_on_a_full_rank_change_and_sees_no_change():
    gen = torch.Generator().manual_seed(1)
    old = torch.randn(300, 200, generator=gen)
    assert low_rank_difference(old + torch.randn(300, 200, generator=gen), old, max_rank=64) is None
    u, v = low_rank_difference(old.clone(), old)
    assert u.shape == (300, 0) and v.shape == (200, 0)


def _sgd_steps(old, steps=4, rows=12, rate=0.05, seed=0):
    """``old`` after ``steps`` SGD steps of the ``G^T (X P)`` kind on overlapping rows (as a
    job's first layer takes them), in float32, and the record ``(A, B)`` of those steps the way
    ``HeadOptimiser.change`` builds it."""
    gen = torch.Generator().manual_seed(seed)
    out_dim, in_dim = old.shape
    inputs = torch.randn(40, in_dim, generator=gen)
    new = old.clone()
    a = torch.zeros(40, out_dim, dtype=torch.float64)
    for _ in range(steps):
        idx = torch.randperm(40, generator=gen)[:rows]
        grad = torch.randn(rows, out_dim, generator=gen) * 0.1
        new -= rate * (grad.T @ inputs[idx])
        a.index_add_(0, idx, grad.double() * -rate)
    used = a.abs().sum(1) > 0
    return new, a[used], inputs[used].double()


def test_factors_from_steps_match_the_difference_and_the_search():
    gen = torch.Generator().manual_seed(4)
    old = torch.randn(300, 200, generator=gen)
    new, a, b = _sgd_steps(old)
    got = head_update.factors_from_steps(new, old, a, b)
    assert got is not None
    u, v = got
    searched = low_rank_difference(new, old)
    assert searched is not None
    assert u.shape[1] == searched[0].shape[1] == len(a)  # the rank: one per card trained
    truth = new.double() - old.double()
    limit = head_update.RELATIVE_TOLERANCE * new.double().norm()
    assert (truth - u.double() @ v.double().T).norm() <= limit
    np.testing.assert_allclose((u @ v.T).numpy(), (searched[0] @ searched[1].T).numpy(), atol=1e-6)


def test_factors_from_steps_refuse_what_the_record_does_not_explain():
    gen = torch.Generator().manual_seed(5)
    old = torch.randn(300, 200, generator=gen)
    new, a, b = _sgd_steps(old)
    # Something else moved the weight too (a momentum, a decay): the search must take over.
    moved = new + 1e-3 * torch.randn(300, 1, generator=gen) @ torch.randn(1, 200, generator=gen)
    assert head_update.factors_from_steps(moved, old, a, b) is None
    assert low_rank_difference(moved, old) is not None  # ... and finds the extra rank
    # Too many cards trained to be worth factorising them, or a rank beyond what pays: refused.
    many = a.repeat(2 * head_update.MAX_RANK // len(a) + 1, 1)
    assert head_update.factors_from_steps(new, old, many, b.repeat(len(many) // len(b), 1)) is None
    assert head_update.factors_from_steps(new, old, a, b, max_rank=len(a) - 1) is None
    assert head_update.factors_from_steps(new, old, a[:, :10], b) is None  # shapes that do not fit
    # No step at all: no change, rank 0.
    none = head_update.factors_from_steps(old, old, a[:0], b[:0])
    assert none is not None and none[0].shape == (300, 0) and none[1].shape == (200, 0)


def _first_layer(network):
    return network.module.classifier.fc1


def test_runner_low_rank_pass_matches_the_full_pass(loaded_digits, monkeypatch):
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    base = loaded_digits.network
    images = loaded_digits.workspace.images
    stem = compute_stem_cache(base, images, 2)
    prime_pre_activations(base, len(images), stem)
    assert len(cache_for(stem)) == 1
    net = base.clone()
    runner = Runner(net, images, stem, full=False)
    assert runner.base_pre_activations is not None  # found by the first layer's weights
    fc1 = _first_layer(net)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # what a job does: a low-rank change of the weight, any change of the bias
        out_dim, in_dim = fc1.weight.shape
        fc1.weight += torch.randn(out_dim, 5, generator=gen) @ torch.randn(5, in_dim, generator=gen) * 0.02
        fc1.bias += 0.01
    fast = runner.infer_all()
    assert runner.last_infer_low_rank == 5
    full = Runner(net, images, compute_stem_cache(net, images, 2), full=False)._infer_all_full(1024)
    # Against the float64 truth, the low-rank pass is as close as the full float32 pass is.
    x = stem.inputs.double()
    truth = torch.relu(x @ fc1.weight.detach().double().T + fc1.bias.detach().double()).numpy()
    full_error = np.abs(full.features - truth).max()
    fast_error = np.abs(fast.features - truth).max()
    assert fast_error <= 4 * full_error + 1e-6, (fast_error, full_error)
    np.testing.assert_allclose(fast.features, full.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.logits, full.logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(fast.top5_classes[:, 0], full.top5_classes[:, 0])
    # The new pre-activations are kept (newest first), with the base for an undo or a cancel.
    assert len(cache_for(stem)) == 2
    again = Runner(net, images, stem, full=False)
    assert again.base_pre_activations is not None and again.base_pre_activations.chain == 1


def test_runner_full_pass_when_the_change_is_not_low_rank(loaded_digits, monkeypatch):
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(head_update, "MAX_RANK", 16)
    base = loaded_digits.network
    images = loaded_digits.workspace.images[:400]
    stem = compute_stem_cache(base, images, 2)
    prime_pre_activations(base, len(images), stem)
    net = base.clone()
    runner = Runner(net, images, stem, full=False)
    with torch.no_grad():
        fc1 = _first_layer(net)
        fc1.weight += torch.randn(fc1.weight.shape, generator=torch.Generator().manual_seed(3)) * 0.01
    result = runner.infer_all()
    assert runner.last_infer_low_rank is None
    reference = Runner(net, images, stem, full=False)._infer_all_full(1024)
    np.testing.assert_array_equal(result.features, reference.features)


def _relabel(loaded, seed):
    return pick_relabel(loaded, seed)[2]  # the edit: a correct training card dropped in another class


def _request(loaded, edit, stem, network=None, features=None):
    ws = loaded.workspace
    return FineTuneRequest(
        version=1,
        network=network or loaded.network,
        images=ws.images,
        labels=ws.labels,
        is_train=ws.is_train,
        features=ws.features if features is None else features,
        layout=loaded.layout,
        edits=[edit],
        config=loaded.scene.learning,
        projector=loaded.projector,
        n_classes=ws.n_classes,
        stem=stem,
        seed=7,
    )


@pytest.mark.parametrize("seed", [3, 5])
def test_finetune_low_rank_reinference_matches_the_full_pass(loaded_digits, monkeypatch, seed):
    """A real job (training as it is) twice: once re-inferred by the low-rank update from the
    primed start network, once by the full pass; then a second job from the first's result."""
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    # The digits head's first layer has 128 outputs, fewer than the rows a job trains on: any
    # rank up to all 128 is taken here (AlexNet's fc7 update has a few hundred of 4,096).
    monkeypatch.setattr(head_update, "PAYING_RANK_FRACTION", 2.0)
    net, images = loaded_digits.network, loaded_digits.workspace.images
    edit = _relabel(loaded_digits, seed)
    fast_stem = compute_stem_cache(net, images, 2)
    prime_pre_activations(net, len(images), fast_stem)
    fast = run_finetune(_request(loaded_digits, edit, fast_stem))
    kept = cache_for(fast_stem).find(
        _first_layer(fast.network).weight.detach(), _first_layer(fast.network).bias
    )
    assert kept is not None and kept.chain == 1  # made by the low-rank update
    full = run_finetune(_request(loaded_digits, edit, compute_stem_cache(net, images, 2)))
    assert fast.weights == full.weights  # training is untouched; only the re-inference differs
    np.testing.assert_allclose(fast.inference.features, full.inference.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.inference.top5_scores, full.inference.top5_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fast.inference.top5_classes, full.inference.top5_classes)
    np.testing.assert_array_equal(fast.labels, full.labels)
    # A second job from the first's result chains on the kept state.
    second = _relabel(loaded_digits, seed + 10)
    again = run_finetune(_request(loaded_digits, second, fast_stem, fast.network, fast.inference.features))
    chained = cache_for(fast_stem).find(
        _first_layer(again.network).weight.detach(), _first_layer(again.network).bias
    )
    assert chained is not None and chained.chain == 2
    reference = Runner(again.network, images, fast_stem, full=False)._infer_all_full(1024)
    np.testing.assert_allclose(again.inference.features, reference.features, rtol=1e-5, atol=2e-5)
    np.testing.assert_array_equal(again.inference.top5_classes[:, 0], reference.top5_classes[:, 0])


def _factoring_answers(monkeypatch) -> list[bool]:
    """What every ``HeadOptimiser.factor`` call answers from now on (whether the job factored)."""
    from game.learning import finetune

    answers: list[bool] = []
    real_factor = finetune.HeadOptimiser.factor
    monkeypatch.setattr(
        finetune.HeadOptimiser, "factor", lambda *a, **k: answers.append(real_factor(*a, **k)) or answers[-1]
    )
    return answers


def test_a_large_scene_factorises_from_the_training_steps(loaded_digits, monkeypatch):
    """From LARGE_JOB_CARDS cards on a job trains the first layer's weight as the record's
    factors (``HeadOptimiser.factor``) and its re-inference takes them (``change``), never the
    search, and gives the full pass's features within float noise; the weights are those of a
    job that trained densely and searched, within float rounding. (At the tight tolerance:
    float32's rounding of the weight over this job's few steps is far below it; at 60 steps it
    would come near, and the search would take over, correctly.)"""
    from game.learning import finetune

    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(head_update, "PAYING_RANK_FRACTION", 2.0)
    net, images = loaded_digits.network, loaded_digits.workspace.images
    edit = _relabel(loaded_digits, 3)
    searched_stem = compute_stem_cache(net, images, 2)
    prime_pre_activations(net, len(images), searched_stem)
    searched = run_finetune(_request(loaded_digits, edit, searched_stem))

    monkeypatch.setattr(finetune, "LARGE_JOB_CARDS", 0)
    searches = []
    real_search = head_update.low_rank_difference
    monkeypatch.setattr(
        head_update, "low_rank_difference", lambda *a, **k: searches.append(1) or real_search(*a, **k)
    )
    factored = _factoring_answers(monkeypatch)
    stem = compute_stem_cache(net, images, 2)
    prime_pre_activations(net, len(images), stem)
    fast = run_finetune(_request(loaded_digits, edit, stem))
    assert factored == [True]  # the steps trained the factors, not the weight
    assert not searches  # the preview and the re-inference both took the record's factors
    kept = cache_for(stem).find(_first_layer(fast.network).weight.detach(), _first_layer(fast.network).bias)
    assert kept is not None and kept.chain == 1  # a low-rank update, not the full pass
    assert fast.steps == searched.steps
    ours, dense = state_from_bytes(fast.weights), state_from_bytes(searched.weights)
    assert ours.keys() == dense.keys()
    for name, weight in dense.items():  # the same SGD and Adam steps, rounded differently
        scale = float(weight.abs().max())
        np.testing.assert_allclose(ours[name], weight, rtol=0, atol=1e-5 * scale, err_msg=name)
    full = Runner(fast.network, images, compute_stem_cache(net, images, 2), full=False)._infer_all_full(1024)
    np.testing.assert_allclose(fast.inference.features, full.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.inference.features, searched.inference.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fast.inference.top5_classes[:, 0], full.top5_classes[:, 0])


def test_a_large_scene_factorises_to_its_looser_tolerance(loaded_digits, monkeypatch):
    """From LARGE_JOB_CARDS cards the factorisation keeps what ``LARGE_RELATIVE_TOLERANCE``
    needs: a lower rank, features still within 1e-4 of the largest feature of the full pass."""
    from game.learning import finetune
    from game.learning import stem as stem_module

    assert head_update.tolerance_for(4095, 4096) == head_update.RELATIVE_TOLERANCE
    assert head_update.tolerance_for(4096, 4096) == head_update.LARGE_RELATIVE_TOLERANCE
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(head_update, "PAYING_RANK_FRACTION", 2.0)
    monkeypatch.setattr(finetune, "LARGE_JOB_CARDS", 0)
    net, images = loaded_digits.network, loaded_digits.workspace.images
    edit = _relabel(loaded_digits, 5)
    ranks = []
    for large in (10**9, 0):  # the tight tolerance, then the large scenes'
        monkeypatch.setattr(stem_module, "LARGE_JOB_CARDS", large)
        stem = compute_stem_cache(net, images, 2)
        prime_pre_activations(net, len(images), stem)
        job = run_finetune(_request(loaded_digits, edit, stem))
        start = cache_for(stem).find(_first_layer(net).weight.detach(), _first_layer(net).bias)
        assert start is not None and start.derived is not None  # rebuilt from the job's state
        ranks.append(start.derived[1].shape[1])  # the update's U: (out, rank)
        full = Runner(job.network, images, compute_stem_cache(net, images, 2), full=False)._infer_all_full(
            1024
        )
        largest = float(np.abs(full.features).max())
        np.testing.assert_allclose(job.inference.features, full.features, rtol=0, atol=1e-4 * largest)
    assert 0 < ranks[1] < ranks[0], ranks


def test_small_heads_keep_the_full_pass(loaded_digits):
    """Below MIN_MULTIPLY_ADDS nothing is kept and the re-inference is the full pass, bitwise."""
    net, images = loaded_digits.network, loaded_digits.workspace.images
    stem = compute_stem_cache(net, images, 2)
    prime_pre_activations(net, len(images), stem)
    assert len(cache_for(stem)) == 0
    runner = Runner(net.clone(), images, stem, full=False)
    np.testing.assert_array_equal(runner.infer_all().features, runner._infer_all_full(1024).features)
    assert runner.last_infer_low_rank is None


def test_the_full_pass_writes_its_batches_into_one_array_with_the_joined_values(loaded_digits):
    """``_infer_all_full`` fills arrays allocated at the first batch (no list join and cast, which
    held the features three times at 50k cards); the values are the join's, bit for bit, short last
    batch included."""
    net = loaded_digits.network
    images = loaded_digits.workspace.images[:203]
    runner = Runner(net, images, compute_stem_cache(net, images, 2), full=False)
    out = runner._infer_all_full(64)
    with torch.no_grad():  # as infer_all runs it
        parts = [runner.forward(np.arange(s, min(s + 64, len(images)))) for s in range(0, len(images), 64)]
    joined_logits = np.concatenate([logits.float().numpy() for logits, _ in parts])
    joined_features = np.concatenate([f.float().numpy() for _, f in parts])
    assert out.features.dtype == np.float32 and out.features.shape == joined_features.shape
    assert out.features.tobytes() == joined_features.tobytes()
    assert out.logits.tobytes() == joined_logits.tobytes()


def test_the_step_record_sums_per_card_and_gives_up_past_its_limit():
    """``StepRecord``: the change of SGD steps on overlapping rows is ``A^T B`` (one row per
    card), and past its limit of cards it lets go of everything and answers None."""
    from game.learning.finetune import StepRecord

    gen = torch.Generator().manual_seed(6)
    inputs = torch.randn(30, 20, generator=gen)
    record, change = StepRecord(8, 20, most=25), torch.zeros(8, 20, dtype=torch.float64)
    for rows in (np.array([3, 5, 7, 5]), np.array([7, 9, 11]), np.array([3, 12])):
        grads = torch.randn(len(rows), 8, generator=gen)
        record.add(rows, grads, inputs[rows])
        change -= 0.1 * grads.double().T @ inputs[rows].double()
    got = record.factors(0.1)
    assert got is not None
    a, b = got
    assert a.shape == (6, 8) and b.shape == (6, 20)  # cards 3, 5, 7, 9, 11, 12
    torch.testing.assert_close(a.T @ b, change)
    record.add(np.arange(100, 130), torch.randn(30, 8, generator=gen), inputs)  # 36 cards > 25
    assert record.factors(0.1) is None and not record.slot
    assert record.grads.untyped_storage().nbytes() == 0 == record.inputs.untyped_storage().nbytes()


def test_a_factored_record_preconditions_each_card_once_and_never_gives_up():
    """``StepRecord.add_rows`` (factored training): the same sums as ``add``, each card's inputs
    made once, and past its size an error, never a silent loss of the job's only copy of the
    weight's change."""
    from game.learning.finetune import StepRecord

    gen = torch.Generator().manual_seed(7)
    inputs = torch.randn(30, 20, generator=gen)
    made: list[list[int]] = []

    def preconditioned(cards: np.ndarray) -> torch.Tensor:
        made.append(cards.tolist())
        return inputs[torch.from_numpy(cards)]

    plain, factored = StepRecord(8, 20), StepRecord(8, 20, most=6, reserve=6)
    for rows in (np.array([3, 5, 7, 5]), np.array([7, 9, 11]), np.array([3, 12])):
        grads = torch.randn(len(rows), 8, generator=gen)
        plain.add(rows, grads, inputs[rows])
        factored.add_rows(rows, grads, preconditioned)
    assert made == [[3, 5, 7], [9, 11], [12]]
    ours, theirs = factored.factors(0.1), plain.factors(0.1)
    assert ours is not None and theirs is not None
    torch.testing.assert_close(ours[0].T @ ours[1], theirs[0].T @ theirs[1])
    with pytest.raises(RuntimeError, match="sized for 6 cards"):
        factored.add_rows(np.array([1]), torch.randn(1, 8, generator=gen), preconditioned)


def test_no_factored_training_where_the_first_head_layer_gives_the_features(loaded_digits, monkeypatch):
    """Where the feature layer is the first head layer itself, ``forward`` runs that layer to
    capture its output, so training it as factors would step on stale weights: refused."""
    from game.learning import finetune

    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(finetune, "LARGE_JOB_CARDS", 0)
    monkeypatch.setattr(finetune.Runner, "feature_module", lambda runner: runner.first_linear())
    factored = _factoring_answers(monkeypatch)
    net, images = loaded_digits.network, loaded_digits.workspace.images
    stem = compute_stem_cache(net, images, 2)
    prime_pre_activations(net, len(images), stem)
    run_finetune(_request(loaded_digits, _relabel(loaded_digits, 3), stem))
    assert factored == [False]
