"""Guidance scores find injected label errors; ambiguity is a different ranking."""

from __future__ import annotations

import numpy as np
import pytest

from game.learning.guidance import (
    ambiguity_scores,
    auroc,
    inject_label_noise,
    suspicion_scores,
    top_suspects,
)


def test_noise_is_seeded_and_flips_the_asked_fraction():
    labels = np.repeat(np.arange(5), 40)
    mask = np.arange(200) < 150
    a, flipped = inject_label_noise(labels, 5, 0.2, seed=3, mask=mask)
    b, _ = inject_label_noise(labels, 5, 0.2, seed=3, mask=mask)
    assert np.array_equal(a, b)
    assert flipped.sum() == 30
    assert not flipped[~mask].any()
    assert np.all(a[flipped] != labels[flipped])
    assert np.all(a[~flipped] == labels[~flipped])
    with pytest.raises(ValueError):
        inject_label_noise(labels, 5, 1.5)


def test_suspicion_finds_injected_errors_on_digits(loaded_digits):
    ws = loaded_digits.workspace
    noisy, flipped = inject_label_noise(ws.labels, ws.n_classes, 0.15, seed=1, mask=ws.is_train)
    scores = suspicion_scores(ws.features, noisy, ws.n_classes, seed=0, folds=3)
    assert scores.shape == (ws.n_cards,)
    assert np.all((scores >= 0) & (scores <= 1))
    train = ws.is_train
    assert auroc(scores[train], flipped[train]) >= 0.95
    top = top_suspects(scores, 30, exclude=~train)
    assert flipped[top].mean() >= 0.8  # the cards a person would visit first are mostly wrong


def test_ambiguity_is_label_agnostic_and_ranks_differently(loaded_digits):
    ws = loaded_digits.workspace
    noisy, flipped = inject_label_noise(ws.labels, ws.n_classes, 0.15, seed=1, mask=ws.is_train)
    amb = ambiguity_scores(ws.top5_scores)
    assert amb.shape == (ws.n_cards,)
    sus = suspicion_scores(ws.features, noisy, ws.n_classes, seed=0, folds=3)
    # The label changed, ambiguity did not: it cannot know which labels were flipped.
    train = ws.is_train
    assert auroc(amb[train], flipped[train]) < 0.7
    overlap = len(set(top_suspects(amb, 50)) & set(top_suspects(sus, 50)))
    assert overlap < 25


def test_ambiguity_from_probabilities():
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    assert np.allclose(ambiguity_scores(probs), [1.0, 0.0, 0.7])
    assert np.allclose(ambiguity_scores(probs[:, ::-1]), [1.0, 0.0, 0.7])  # order does not matter


def test_top_suspects_order_and_exclusion():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert top_suspects(s, 3).tolist() == [1, 3, 2]
    assert top_suspects(s, 3, exclude=[1]).tolist() == [3, 2, 4]
    mask = np.array([False, True, True, False, False])
    assert top_suspects(s, 10, exclude=mask).tolist() == [3, 4, 0]
    assert top_suspects(s, 0).tolist() == []


def test_auroc_reference_values():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1], bool)) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1], bool)) == 0.5
