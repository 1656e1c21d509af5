"""``explain_suspect`` says why a card is suspect, in numbers a person can check (no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from game.core.workspace import Workspace
from game.learning.guidance import explain_suspect, suspicion, suspicion_scores


def _blobs(seed: int = 0, per_class: int = 30, classes: int = 3) -> Workspace:
    """Three well separated feature blobs; card 0 sits in blob 2 but is labelled 0."""
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, 8) * 12.0
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(0, 1.0, (len(labels), 8))
    features[0] = centres[2] + rng.normal(0, 0.3, 8)  # looks like a 2 ...
    n = len(labels)
    top5 = np.tile(np.array([[2, 0, 1]]), (n, 1))  # ... and the network says 2
    scores = np.tile(np.array([[0.72, 0.2, 0.08]], np.float32), (n, 1))
    top5[1:, 0], top5[1:, 1] = labels[1:], (labels[1:] + 1) % classes
    top5[1:, 2] = (labels[1:] + 2) % classes
    return Workspace(
        images=np.zeros((n, 4, 4, 1), np.uint8),
        labels=labels,
        class_names=["zero", "one", "two"],
        top5_classes=top5,
        top5_scores=scores,
        features=features.astype(np.float32),
        positions=np.zeros((n, 3), np.float32),
        is_train=np.ones(n, bool),
        sources=[f"#{i}" for i in range(n)],
    )


def test_the_reason_counts_look_alikes_and_quotes_both_models():
    ws = _blobs()
    details = suspicion(ws.features, ws.labels, ws.n_classes, seed=0)
    text = explain_suspect(ws, 0, details)
    assert text.startswith("labelled zero; ")
    near = details.neighbours[0]
    n_two = int((ws.labels[near] == 2).sum())
    assert n_two >= 8  # it sits inside blob 2
    assert f"{n_two} of its {len(near)} look-alikes are two" in text
    held = details.held_out[0]
    assert int(np.argmax(held)) == 2
    assert "never saw its label says two at" in text
    assert text.endswith("the network says two at 72 %")
    # The details are those behind the scores (one computation, two uses).
    np.testing.assert_allclose(details.scores, suspicion_scores(ws.features, ws.labels, 3, seed=0))


def test_a_confident_network_on_its_own_training_label_is_flagged_as_learnt():
    ws = _blobs()
    ws.top5_classes[0] = [0, 2, 1]  # the network memorised the wrong label
    ws.top5_scores[0] = [0.9994, 0.0005, 0.0001]
    text = explain_suspect(ws, 0)
    assert "the network says zero at 99.9 % (trained on this label)" in text
    ws.is_train[0] = False
    assert "(trained on this label)" not in explain_suspect(ws, 0)


def test_a_clean_card_reads_as_clean_and_relabels_are_read_live():
    ws = _blobs()
    details = suspicion(ws.features, ws.labels, ws.n_classes, seed=0)
    text = explain_suspect(ws, 40, details)  # a "one" among ones
    assert text.startswith("labelled one; all ")
    assert "look-alikes are one too" in text
    ws.labels[0] = 2  # the person fixed card 0: the same details now describe the new label
    assert explain_suspect(ws, 0, details).startswith("labelled two; ")
    with pytest.raises(IndexError):
        explain_suspect(ws, ws.n_cards)
