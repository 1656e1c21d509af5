"""How far a fine-tune trusts the labels it replays: the guidance's suspicion, turned into weights.

Why (issue 13): a job trains the cards around each edit and a replay sample of training cards with
their *current* labels, so every mislabelled card among them re-teaches its wrong label; on the
memorised digits networks, after 30 edits the network still predicted the wrong training label
of every remaining mislabelled card. The network's own predictions cannot tell which labels are
wrong (it memorised them), the guidance's suspicion can (AUROC 0.99 on the suite). So the
cross-entropy weight of a neighbour or replayed card is derived from its suspicion:

* ``"none"``: weight 1 (the old way; recorded sessions replay with it);
* ``"soft"``: weight ``1 - suspicion``;
* ``"drop"``: weight 0 above ``DROP_ABOVE`` (the card is more probably mislabelled than not),
  else 1; dropped cards leave the replay pool.

The edited cards themselves always train with the person's labels, and the feature terms (pull
target, drift) still use every card: only the labels are distrusted.

``pull_share(memorised(...))`` (``pull_scale = "memorised"``, off by default) weighs the pull by
how far the network memorised the labels the guidance distrusts (an A/B of issue 13, not adopted:
docs/benchmarks.md).

The scores are ``game.learning.guidance.suspicion`` on the job's features and labels (this job's
edits applied), with a fixed seed so a job stays a pure function of its request. Above
``REFERENCE_CARDS`` cards they are computed on the rows that need them plus a seeded sample of the
others (the score of a card is then judged against a sample of the dataset instead of all of it),
so a job at 50,000 cards does not run the guidance over every card; features wider than
``PROJECT_ABOVE`` (an AlexNet head's 4,096) first go through a fixed random projection to that many
dimensions (distances kept up to a few per cent), because the guidance's PCA of 4,096 x 4,096
numbers took seconds, most of a job at that scale. The suite's networks (128 features) are
unaffected.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from game.learning.guidance import suspicion_scores

TrustMode = Literal["none", "soft", "drop"]
DROP_ABOVE = 0.5  # "drop": a card whose suspicion exceeds this trains no label
REFERENCE_CARDS = 2048  # suspicion over all cards up to this many, else over a sample (the suite: all)
TRUST_SEED = 0  # the guidance's folds and PCA, and the reference sample: fixed per job
PROJECT_ABOVE = 256  # wider features are randomly projected to this many dimensions first


def narrowed(features: np.ndarray, dims: int = PROJECT_ABOVE) -> np.ndarray:
    """``features`` (rows, F) as they are up to ``dims`` columns, else times a fixed Gaussian
    ``(F, dims)`` matrix scaled by ``1 / sqrt(dims)`` (a Johnson-Lindenstrauss projection)."""
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    if x.shape[1] <= dims:
        return x
    r = np.random.default_rng(TRUST_SEED).standard_normal((x.shape[1], dims), dtype=np.float32)
    projected: np.ndarray = x @ (r / np.float32(np.sqrt(dims)))
    return projected


def reference_rows(n: int, rows: np.ndarray, limit: int = REFERENCE_CARDS) -> np.ndarray:
    """The cards the suspicion is computed over: all of them up to ``limit``, else ``rows`` plus a
    seeded sample of the others (``limit`` in all, at least ``rows``), sorted."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    others = np.setdiff1d(np.arange(n, dtype=np.int64), rows)
    extra = max(limit - len(rows), 0)
    rng = np.random.default_rng(TRUST_SEED)
    sample = rng.choice(others, min(extra, len(others)), replace=False)
    return np.sort(np.concatenate([rows, sample]))


def trust_from_scores(scores: np.ndarray, mode: TrustMode) -> np.ndarray:
    """Cross-entropy weights in [0, 1] from suspicion scores."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if mode == "soft":
        return (1.0 - s).astype(np.float32)
    if mode == "drop":
        return (s <= DROP_ABOVE).astype(np.float32)
    return np.ones(len(s), dtype=np.float32)


def label_trust(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    rows: np.ndarray,
    mode: TrustMode,
) -> np.ndarray:
    """``(N,)`` cross-entropy weights: ``trust_from_scores`` for ``rows``, 1 elsewhere (and
    everywhere for ``"none"``)."""
    n = len(labels)
    out = np.ones(n, dtype=np.float32)
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if mode == "none" or not len(rows) or n < 3:
        return out
    ref = reference_rows(n, rows)
    feats = narrowed(np.asarray(features)[ref])
    scores = suspicion_scores(feats, np.asarray(labels, dtype=np.int64)[ref], n_classes, seed=TRUST_SEED)
    weights = trust_from_scores(scores, mode)
    pos = np.searchsorted(ref, rows)
    out[rows] = weights[pos]
    return out


def memorised(predicted: np.ndarray, labels: np.ndarray, trust: np.ndarray) -> float:
    """The share of distrusted cards (trust below ``1 - DROP_ABOVE``) whose label the network
    predicts: 1.0 where it memorised the labels the guidance suspects, near 0 where it never
    fitted them (it predicts another class); 1.0 when no card is distrusted (nothing to judge by).

    Why (issue 13, ``pull_scale = "memorised"``): the feature pull moves an edit toward its drop's
    neighbours. A network that memorised its noise cannot be taught the edit by cross-entropy on
    trusted labels alone within a few steps, and the pull is what carries it; one that never
    fitted its noise already separates the classes by their true look, and there cross-entropy
    alone did better on the suite than with the pull (shapes, photo crops), so the pull's weight is
    this share. ``predicted``, ``labels`` and ``trust`` are aligned per card."""
    distrusted = np.asarray(trust) < 1.0 - DROP_ABOVE
    if not distrusted.any():
        return 1.0
    hits = np.asarray(predicted)[distrusted] == np.asarray(labels)[distrusted]
    return float(hits.mean())


def pull_share(memorised_share: float) -> float:
    """The pull's factor from ``memorised``: 0 up to chance (half the distrusted labels predicted,
    the same "more probably than not" as ``DROP_ABOVE``), rising linearly to 1 when every one is.

    Why not the share itself: some distrusted cards carry their right label (the guidance's false
    alarms), and a network predicts those whether or not it memorised its noise, so a network that
    never fitted its noise still shows a share of about 0.2 on the suite (shapes, digits 1-4-7-9),
    and that much pull still cost the edits there; a network that memorised its noise predicts
    nearly all of them."""
    return float(np.clip((memorised_share - DROP_ABOVE) / (1.0 - DROP_ABOVE), 0.0, 1.0))
