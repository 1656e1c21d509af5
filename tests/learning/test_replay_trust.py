"""``label_trust``: neighbours and replayed cards train their labels as far as the guidance trusts them.

Blobs with 20 % of the labels flipped: the guidance's suspicion finds the flipped cards, so with
``"drop"`` they train no label and leave the replay pool, with ``"soft"`` they weigh little, and
with ``"none"`` (the old way, kept for recorded sessions) everything weighs 1. Then the real
digits scene: a job's batch built with ``"drop"`` carries the weights and a smaller pool.
"""

import dataclasses

import numpy as np
from test_learning_finetune import pick_relabel, request

from game.learning.finetune import prepare_batch
from game.learning.replay_trust import DROP_ABOVE, label_trust, reference_rows, trust_from_scores

N, CLASSES, DIM = 400, 3, 16


def _blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, CLASSES, N)
    centres = rng.normal(0.0, 2.0, (CLASSES, DIM))  # well separated in every direction
    x = rng.normal(0.0, 1.0, (N, DIM)) + centres[truth]
    noisy = truth.copy()
    flip = rng.random(N) < 0.2
    noisy[flip] = (truth[flip] + rng.integers(1, CLASSES, flip.sum())) % CLASSES
    return x.astype(np.float32), truth, noisy


def test_trust_from_scores():
    s = np.array([0.0, 0.2, DROP_ABOVE, 0.51, 1.0, 1.5])
    np.testing.assert_allclose(trust_from_scores(s, "soft"), [1.0, 0.8, 0.5, 0.49, 0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(trust_from_scores(s, "drop"), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(trust_from_scores(s, "none"), np.ones(6))


def test_reference_rows_all_cards_when_small_else_rows_plus_a_fixed_sample():
    np.testing.assert_array_equal(reference_rows(50, np.array([3, 7]), limit=100), np.arange(50))
    rows = np.array([5, 999, 5, 42])
    ref = reference_rows(1000, rows, limit=100)
    assert len(ref) == 100 and np.all(np.diff(ref) > 0)
    assert set(rows) <= set(ref.tolist())
    np.testing.assert_array_equal(ref, reference_rows(1000, rows, limit=100))  # deterministic


def test_drop_distrusts_the_flipped_labels_and_only_the_rows_asked():
    x, truth, noisy = _blobs()
    flipped = noisy != truth
    rows = np.arange(0, N, 2)
    w = label_trust(x, noisy, CLASSES, rows, "drop")
    others = np.setdiff1d(np.arange(N), rows)
    assert (w[others] == 1).all()  # cards not asked about keep weight 1
    on_rows = flipped[rows]
    # nearly every flipped label among the rows is dropped, nearly every right one kept
    assert (w[rows][on_rows] == 0).mean() > 0.9
    assert (w[rows][~on_rows] == 1).mean() > 0.95


def test_soft_weighs_flipped_labels_less_and_none_trusts_all():
    x, truth, noisy = _blobs()
    flipped = noisy != truth
    rows = np.arange(N)
    soft = label_trust(x, noisy, CLASSES, rows, "soft")
    assert soft[flipped].mean() < 0.3 < 0.7 < soft[~flipped].mean()  # 20 % noisy neighbours cap it
    assert ((soft >= 0) & (soft <= 1)).all()
    np.testing.assert_array_equal(label_trust(x, noisy, CLASSES, rows, "none"), np.ones(N))


def request_with_wrong_labels(loaded_digits, seed: int):
    """A relabel job's request whose labels have 60 training cards (not the edit) set wrong;
    returns it, the edit and the wrong cards."""
    _, _, edit = pick_relabel(loaded_digits)
    req = request(loaded_digits, [edit], None)
    ws = loaded_digits.workspace
    labels = ws.labels.copy()
    rng = np.random.default_rng(seed)
    wrong = rng.choice(np.flatnonzero(ws.is_train & (np.arange(len(labels)) != edit.card)), 60, replace=False)
    labels[wrong] = (labels[wrong] + 1 + rng.integers(0, ws.n_classes - 1, len(wrong))) % ws.n_classes
    req.labels = labels
    return req, edit, wrong


def test_a_job_batch_with_drop_carries_the_weights_and_a_trusted_pool(loaded_digits):
    req, edit, wrong = request_with_wrong_labels(loaded_digits, seed=1)
    req.config = dataclasses.replace(loaded_digits.scene.learning, label_trust="none")
    plain = prepare_batch(req, np.random.default_rng(0))
    assert plain.trust is None
    req.config = dataclasses.replace(loaded_digits.scene.learning, label_trust="drop")
    batch = prepare_batch(req, np.random.default_rng(0))
    assert batch.trust is not None
    # the pool is the old pool without the distrusted cards, and it lost most wrong labels
    assert set(batch.replay_pool.tolist()) < set(plain.replay_pool.tolist())
    assert (batch.trust[batch.replay_pool] == 1).all()
    lost = np.setdiff1d(plain.replay_pool, batch.replay_pool)
    in_plain = np.intersect1d(plain.replay_pool, wrong)
    assert len(in_plain) and np.isin(in_plain, lost).mean() > 0.8
    # the edit itself is untouched; the neighbours' weights are the trust (held-out ones stay 0)
    assert batch.cards.tolist() == [edit.card] and batch.trust is not None
    np.testing.assert_array_equal(batch.fixed_weights.numpy(), plain.fixed_weights.numpy())


def test_the_training_steps_weigh_neighbours_and_replay_by_the_trust(loaded_digits):
    from game.learning.finetune import run_finetune
    from game.learning.loss import finetune_loss

    _, _, edit = pick_relabel(loaded_digits)
    req = request(loaded_digits, [edit], None)
    req.config = dataclasses.replace(
        loaded_digits.scene.learning, label_trust="soft", max_steps=2, min_steps=2
    )
    batch = prepare_batch(req, np.random.default_rng(req.seed))
    assert batch.trust is not None
    seen = []

    def spy(logits, feats, space, targets, weights):
        seen.append(targets.weights.clone())
        return finetune_loss(logits, feats, space, targets, weights)

    run_finetune(req, loss_fn=spy)
    n_fixed = len(batch.fixed_rows)
    expected = batch.fixed_weights.numpy().copy()
    expected[batch.n_edits :] *= batch.trust[batch.neighbour_cards]
    np.testing.assert_allclose(seen[0].numpy()[:n_fixed], expected, rtol=1e-6)
    replayed = seen[0].numpy()[n_fixed:]
    assert len(replayed) and (replayed <= 1).all() and (replayed < 1).any()


def test_wide_features_are_projected_keeping_distances_and_narrow_ones_untouched():
    from game.learning.replay_trust import PROJECT_ABOVE, narrowed

    rng = np.random.default_rng(2)
    small = rng.normal(size=(20, PROJECT_ABOVE)).astype(np.float32)
    np.testing.assert_array_equal(narrowed(small), small)
    wide = rng.normal(size=(40, 2048)).astype(np.float32)
    out = narrowed(wide)
    assert out.shape == (40, PROJECT_ABOVE)
    np.testing.assert_array_equal(out, narrowed(wide))  # the projection is fixed
    d_in = np.linalg.norm(wide[:, None] - wide[None], axis=2)[np.triu_indices(40, 1)]
    d_out = np.linalg.norm(out[:, None] - out[None], axis=2)[np.triu_indices(40, 1)]
    assert np.abs(d_out / d_in - 1).max() < 0.25


def test_memorised_is_the_share_of_distrusted_labels_the_network_predicts():
    from game.learning.replay_trust import memorised

    labels = np.array([0, 1, 2, 0, 1, 2])
    trust = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # cards 1-4 distrusted
    assert memorised(labels, labels, trust) == 1.0  # it predicts every label: memorised
    predicted = np.array([2, 1, 0, 1, 2, 1])  # of the distrusted, only card 1's label predicted
    assert memorised(predicted, labels, trust) == 0.25
    assert memorised(predicted, labels, np.ones(6)) == 1.0  # nothing distrusted: the pull as set
    soft = np.array([0.9, 0.4, 0.6, 0.6, 0.6, 0.9])  # "soft" trust: below 1 - DROP_ABOVE counts
    assert memorised(predicted, labels, soft) == 1.0


def test_the_pull_weighs_as_much_as_the_network_memorised_the_distrusted_labels(loaded_digits):
    """Labels flipped after the network was trained: it predicts none of them (it never fitted
    them), so with ``pull_scale = "memorised"`` the pull nearly vanishes; ``"fixed"`` and label
    trust ``"none"`` keep ``feature_weight``."""
    from game.learning.finetune import run_finetune
    from game.learning.loss import finetune_loss

    _, _, edit = pick_relabel(loaded_digits)
    ws = loaded_digits.workspace
    labels = ws.labels.copy()
    rng = np.random.default_rng(1)
    wrong = rng.choice(
        np.flatnonzero(ws.is_train & (np.arange(len(labels)) != edit.card)), 300, replace=False
    )
    labels[wrong] = (labels[wrong] + 1 + rng.integers(0, ws.n_classes - 1, len(wrong))) % ws.n_classes

    def pull(trust: str, scale: str) -> float:
        req = request(loaded_digits, [edit], None)
        req.labels = labels
        req.config = dataclasses.replace(
            loaded_digits.scene.learning,
            label_trust=trust,
            pull_scale=scale,
            feature_weight=2.0,
            max_steps=1,
            min_steps=1,
        )
        seen: list[float] = []

        def spy(logits, feats, space, targets, weights):
            seen.append(weights.feature_weight)
            return finetune_loss(logits, feats, space, targets, weights)

        run_finetune(req, loss_fn=spy)
        return seen[0]

    assert pull("drop", "fixed") == 2.0
    assert pull("none", "memorised") == 2.0  # no suspicion computed: nothing to judge by
    assert 0.0 <= pull("drop", "memorised") < 0.4  # the network predicts few of the flipped labels


def test_pull_share_is_zero_up_to_chance_and_linear_to_one():
    from game.learning.replay_trust import pull_share

    assert pull_share(0.0) == 0.0
    assert pull_share(0.2) == 0.0  # an unmemorised network's share: the guidance's false alarms
    assert pull_share(DROP_ABOVE) == 0.0
    assert abs(pull_share(0.75) - 0.5) < 1e-9
    assert pull_share(1.0) == 1.0
    shares = np.linspace(0, 1, 21)
    assert np.all(np.diff([pull_share(s) for s in shares]) >= 0)  # never weaker for more memorised
