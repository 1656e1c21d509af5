"""The training step: a relabel flips the prediction, keeps held-out accuracy, is deterministic."""

import numpy as np
import pytest
import torch

from game.learning.edits import cluster_geometry, interpret
from game.learning.finetune import (
    FineTuneDiverged,
    FineTuneRequest,
    compute_stem_cache,
    run_finetune,
)


def pick_relabel(loaded, seed=3):
    """A correctly predicted training card and another class, dropped at that class's centroid."""
    ws = loaded.workspace
    rng = np.random.default_rng(seed)
    card = int(rng.choice(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))))
    new = (int(ws.labels[card]) + 3) % ws.n_classes
    cfg = loaded.scene.learning
    centroids, radii = cluster_geometry(
        loaded.layout.positions, ws.labels, ws.n_classes, cfg.cluster_percentile, card
    )
    return card, new, interpret(card, centroids[new], int(ws.labels[card]), centroids, radii, cfg)


def request(loaded, edits, stem, version=1):
    ws = loaded.workspace
    return FineTuneRequest(
        version=version,
        network=loaded.network,
        images=ws.images,
        labels=ws.labels,
        is_train=ws.is_train,
        features=ws.features,
        layout=loaded.layout,
        edits=edits,
        config=loaded.scene.learning,
        projector=loaded.projector,
        n_classes=ws.n_classes,
        stem=stem,
        seed=7,
    )


@pytest.fixture(scope="module")
def stem(loaded_digits):
    return compute_stem_cache(loaded_digits.network, loaded_digits.workspace.images, 2)


def test_stem_cache_matches_network_infer(loaded_digits, stem):
    from game.learning.finetune import _Runner

    net = loaded_digits.network.clone()
    images = loaded_digits.workspace.images[:300]
    cached = _Runner(net, images, compute_stem_cache(net, images, 2), full=False).infer_all()
    direct = net.infer(images)
    np.testing.assert_allclose(cached.features, direct.features, atol=1e-4)
    np.testing.assert_array_equal(cached.top5_classes[:, 0], direct.top5_classes[:, 0])


def test_relabel_flips_prediction_and_keeps_heldout_accuracy(loaded_digits, stem):
    card, new, edit = pick_relabel(loaded_digits)
    assert edit.action == "relabel" and edit.new_label == new
    ws = loaded_digits.workspace
    before = loaded_digits.network.module.state_dict()["classifier.fc1.weight"].clone()
    result = run_finetune(request(loaded_digits, [edit], stem))
    held = ~ws.is_train
    acc0 = np.mean(ws.predictions[held] == ws.original_labels[held])
    acc1 = np.mean(result.inference.top5_classes[held, 0] == ws.original_labels[held])
    assert result.inference.top5_classes[card, 0] == new
    assert result.labels[card] == new and (np.delete(result.labels, card) == np.delete(ws.labels, card)).all()
    assert acc1 >= acc0 - 0.02, (acc0, acc1)
    assert result.learned and result.steps < loaded_digits.scene.learning.max_steps
    assert result.layout.positions.shape == ws.positions.shape
    (outcome,) = result.outcomes
    assert outcome.card == card and outcome.new_label == new
    # The live network is never trained in place.
    assert torch.equal(loaded_digits.network.module.state_dict()["classifier.fc1.weight"], before)
    # The new version shares the frozen stem's tensors with the old one; the head is its own.
    live = dict(loaded_digits.network.module.named_parameters())
    for name, p in result.network.module.named_parameters():
        assert (p is live[name]) == (name not in result.weight_names), name
    assert set(result.weight_names) == {n for n in live if n.startswith("classifier.")}


def test_the_trained_network_keeps_no_gradients(loaded_digits, stem):
    """The result's network outlives the job (the app's live model with the thread backend): the
    last step's gradients, as large as the trained weights, must not stay on it."""
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    result = run_finetune(request(loaded_digits, [edit], stem))
    params = list(result.network.module.parameters())
    held = [n for n, p in result.network.module.named_parameters() if p.grad is not None]
    assert params and not held, held


def test_finetune_is_deterministic(loaded_digits, stem):
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    a = run_finetune(request(loaded_digits, [edit], stem))
    b = run_finetune(request(loaded_digits, [edit], stem))
    assert a.weights == b.weights
    np.testing.assert_array_equal(a.inference.features, b.inference.features)
    np.testing.assert_array_equal(a.layout.positions, b.layout.positions)


def test_nan_loss_raises_diverged(loaded_digits, stem):
    _, _, edit = pick_relabel(loaded_digits)
    broken = loaded_digits.network.clone()
    with torch.no_grad():
        broken.module.classifier.fc2.weight.fill_(float("nan"))
    req = request(loaded_digits, [edit], stem)
    req.network = broken
    with pytest.raises(FineTuneDiverged):
        run_finetune(req)


def test_full_finetune_option_trains_without_stem(loaded_digits):
    import dataclasses

    _, new, edit = pick_relabel(loaded_digits, seed=11)
    req = request(loaded_digits, [edit], None)
    req.config = dataclasses.replace(loaded_digits.scene.learning, full_finetune=True, learning_rate=3e-3)
    result = run_finetune(req)
    assert "features.conv1.weight" in result.weight_names
    assert result.inference.top5_classes[edit.card, 0] == new


def test_no_replay_trains_without_nan(loaded_digits, stem):
    """``replay_samples = 0`` (issue 13): the pull's scale came from an empty replay sample (NaN),
    and every job failed at step 0. It now comes from the edits and their neighbours."""
    import dataclasses

    _, new, edit = pick_relabel(loaded_digits, seed=5)
    req = request(loaded_digits, [edit], stem)
    req.config = dataclasses.replace(loaded_digits.scene.learning, replay_samples=0)
    result = run_finetune(req)
    assert np.isfinite(result.losses).all()
    assert result.inference.top5_classes[edit.card, 0] == new


def test_prepare_batch_neighbours_and_replay_pool(loaded_digits):
    from game.learning.finetune import prepare_batch

    ws = loaded_digits.workspace
    card, new, edit = pick_relabel(loaded_digits, seed=5)
    batch = prepare_batch(request(loaded_digits, [edit], None), np.random.default_rng(0))
    cfg = loaded_digits.scene.learning
    assert batch.n_edits == 1 and batch.targets.tolist() == [new]
    assert card not in batch.neighbour_cards and card not in batch.replay_pool
    assert ws.is_train[batch.replay_pool].all() and len(batch.replay_pool) == cfg.replay_samples
    rows = batch.fixed_rows
    drop_cards = rows[batch.drop_rows[0].numpy()]
    old_cards = rows[batch.old_rows[0].numpy()]
    assert len(drop_cards) == cfg.neighbours
    # The drop's neighbours sit around the drop (mostly the target class), the old ones around the card.
    pos = loaded_digits.layout.positions
    assert np.mean(ws.labels[drop_cards] == new) > 0.5
    d_drop = np.linalg.norm(pos[drop_cards] - np.asarray(edit.position), axis=1).max()
    d_other = np.linalg.norm(pos[old_cards] - np.asarray(edit.position), axis=1).min()
    assert d_drop <= d_other
    assert batch.fixed_labels[0] == new and batch.fixed_weights[0] == edit.repeats


def _targets(n_edits=1, relabel=True, reference=None):
    from game.learning.loss import StepTargets

    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    return StepTargets(
        labels=torch.tensor([1, 1, 0]),
        weights=torch.ones(3),
        n_edits=n_edits,
        edit_labels=torch.tensor([1]),
        edit_weights=torch.ones(1),
        is_relabel=torch.tensor([relabel]),
        drop_rows=torch.tensor([[1]]),
        old_rows=torch.tensor([[2]]),
        reference=feats[1:] if reference is None else reference,
        pull_spread=1.0,
        spread=1.0,
    ), feats


def test_loss_terms_by_hand():
    from game.learning.loss import LossWeights, edits_learned, finetune_loss

    t, feats = _targets()
    logits = torch.zeros(3, 2)  # uniform: cross-entropy log 2 for every row
    terms = finetune_loss(logits, feats, feats, t, LossWeights(1.0, 0.5, 1.0))
    assert torch.isclose(terms.cross_entropy, torch.log(torch.tensor(2.0)))
    # Edit at (0,0): distance 1 to the drop's neighbour (1,0) and 1 to the old one (0,1).
    assert (
        torch.isclose(terms.to_target, torch.ones(1)).all()
        and torch.isclose(terms.to_old, torch.ones(1)).all()
    )
    assert torch.isclose(terms.feature, torch.tensor(1.0 + 0.5))  # d_t^2 + relu(margin + d_t - d_o)
    assert terms.drift == 0.0  # unconcerned rows kept their features
    assert torch.isclose(terms.total, terms.cross_entropy + terms.feature)
    # A reinforce has no push; drift counts moved features in units of the spread.
    t2, _ = _targets(relabel=False, reference=torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    terms2 = finetune_loss(logits, feats, feats, t2, LossWeights(1.0, 0.5, 2.0))
    assert torch.isclose(terms2.feature, torch.tensor(1.0)) and torch.isclose(terms2.drift, torch.tensor(2.0))
    assert torch.isclose(terms2.total, terms2.cross_entropy + terms2.feature + 2.0 * terms2.drift)
    assert not edits_learned(logits, terms, t)  # a tie predicts class 0, not the target 1
    assert edits_learned(torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]), terms2, t2)


def test_pull_stops_at_the_drop_neighbours_radius():
    """The pull is a hinge at the neighbours' mean distance from their own mean: an edit already
    that near is not dragged onto the mean (which collapses a class's natural spread)."""
    from game.learning.loss import LossWeights, StepTargets, finetune_loss

    def terms(edit, pull_inside):
        space = torch.tensor(
            [edit, [1.0, 0.0], [3.0, 0.0], [0.0, 5.0]]
        )  # drop neighbours: mean (2, 0), radius 1
        t = StepTargets(
            labels=torch.tensor([1, 1, 1, 0]),
            weights=torch.ones(4),
            n_edits=1,
            edit_labels=torch.tensor([1]),
            edit_weights=torch.ones(1),
            is_relabel=torch.tensor([False]),
            drop_rows=torch.tensor([[1, 2]]),
            old_rows=torch.tensor([[3, 3]]),
            reference=space[1:],
            pull_spread=1.0,
            spread=1.0,
        )
        return finetune_loss(torch.zeros(4, 2), space, space, t, LossWeights(1.0, 0.5, 1.0, pull_inside))

    far = terms([-2.0, 0.0], 1.0)  # 4 from the mean, 3 beyond the radius
    assert torch.isclose(far.to_target, torch.tensor([4.0])).all()
    assert torch.isclose(far.feature, torch.tensor(9.0))
    assert torch.isclose(terms([-2.0, 0.0], 0.0).feature, torch.tensor(16.0))  # the old pull: onto the mean
    assert terms([1.5, 0.5], 1.0).feature == 0.0  # inside the radius: no pull
    assert LossWeights().pull_inside == 1.0  # the method's default


def test_loss_can_be_swapped(loaded_digits, stem):
    """A loss passed to ``run_finetune`` replaces the built-in one: cross-entropy alone gives the
    same result as switching the other terms off in the settings, bit for bit."""
    import dataclasses

    from game.learning.loss import LossWeights, finetune_loss

    calls = []

    def ce_only(logits, feats, space, targets, weights):
        calls.append(len(logits))
        return finetune_loss(logits, feats, space, targets, LossWeights(0.0, weights.feature_margin, 0.0))

    _, _, edit = pick_relabel(loaded_digits, seed=5)
    swapped = run_finetune(request(loaded_digits, [edit], stem), loss_fn=ce_only)
    req = request(loaded_digits, [edit], stem)
    req.config = dataclasses.replace(loaded_digits.scene.learning, feature_weight=0.0, preserve_weight=0.0)
    configured = run_finetune(req)
    assert len(calls) == len(swapped.losses) and calls
    assert swapped.weights == configured.weights
    default = run_finetune(request(loaded_digits, [edit], stem))
    assert default.weights != swapped.weights


def test_damping_derived_from_samples_against_dimensions(loaded_digits, stem):
    """Fewer training images than the head has inputs: the preconditioner needs more damping.
    Digits (1,438 training images, 1,024 inputs) stay near the bottom of the range, far below the
    150-image case's. The first-use training drew its initial weights from the process's random
    state until 2026-12-02, so each run had another network (0.0100 and 0.0103 seen; a bound at
    0.01 failed one CI run); the bound is 0.02, clear of such differences."""
    from game.learning.stem import DAMPING_GRID, DEFAULT_DAMPING, derive_damping

    x = stem.inputs[torch.from_numpy(np.flatnonzero(loaded_digits.workspace.is_train))]
    assert DEFAULT_DAMPING <= derive_damping(x) <= 4 * DEFAULT_DAMPING
    few = [derive_damping(x[:n]) for n in (1000, 400, 150)]
    assert few == sorted(few) and few[-1] >= 10 * DEFAULT_DAMPING
    assert all(DAMPING_GRID[0] <= d <= DAMPING_GRID[-1] for d in few)


def test_derived_damping_is_continuous_in_the_data(loaded_digits, stem):
    """A retrained network moves the inputs a little: the damping must move a little too, not
    jump a grid step (digits flipped between 0.005 and 0.01 from run to run with a grid)."""
    from game.learning.stem import DAMPING_GRID, derive_damping

    x = stem.inputs[torch.from_numpy(np.flatnonzero(loaded_digits.workspace.is_train))][:400]
    d = derive_damping(x)
    assert DAMPING_GRID[0] < d < DAMPING_GRID[-1]  # an interior answer, found by bisection
    assert min(abs(d / g - 1.0) for g in DAMPING_GRID) > 1e-3  # not rounded to a grid step
    g = torch.Generator().manual_seed(1)
    nudged = derive_damping(x * (1.0 + 1e-3 * torch.randn(x.shape, generator=g)))
    assert abs(nudged / d - 1.0) < 0.05


def test_explicit_damping_overrides_the_derived_one(loaded_digits, stem):
    import dataclasses

    _, _, edit = pick_relabel(loaded_digits, seed=5)
    derived = run_finetune(request(loaded_digits, [edit], stem))
    same = request(loaded_digits, [edit], stem)
    same.config = dataclasses.replace(loaded_digits.scene.learning, head_damping=stem.derived_damping)
    assert run_finetune(same).weights == derived.weights
    other = request(loaded_digits, [edit], stem)
    other.config = dataclasses.replace(loaded_digits.scene.learning, head_damping=0.5)
    assert run_finetune(other).weights != derived.weights
    assert stem.damping == 0.5  # the cached inverse follows the damping asked for


def test_stem_cache_ignores_other_threads_passes(loaded_digits, stem):
    """Another thread running the same network while the stem is computed must not add rows."""
    import threading

    net = loaded_digits.network
    images = loaded_digits.workspace.images
    stop = threading.Event()

    def other():
        while not stop.is_set():
            net.infer(images[:64])

    t = threading.Thread(target=other)
    t.start()
    try:
        again = compute_stem_cache(net, images, 2)
    finally:
        stop.set()
        t.join()
    assert torch.equal(again.inputs, stem.inputs)


def test_spread_of_large_features_is_summed_in_blocks_to_the_one_block_value():
    """50k cards x 4,096 must not take a float64 copy (1.6 GB); the blocked sum gives the same
    spread, and small arrays keep the one-block arithmetic exactly."""
    from game.learning import finetune

    rng = np.random.default_rng(3)
    rows = finetune.SPREAD_WHOLE_BELOW // 512 + 37  # above the threshold at 512 columns, ragged last block
    big = (rng.normal(size=(rows, 512)) * 3 + 50).astype(np.float32)
    x64 = big.astype(np.float64)
    one_block = float(np.sqrt(((x64 - x64.mean(0)) ** 2).sum(1).mean()))
    assert big.size >= finetune.SPREAD_WHOLE_BELOW
    assert finetune._spread(big) == pytest.approx(one_block, rel=1e-12)
    small = big[:100]
    s64 = small.astype(np.float64)
    assert finetune._spread(small) == float(np.sqrt(((s64 - s64.mean(0)) ** 2).sum(1).mean()))
