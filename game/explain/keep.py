"""Keeping an edited (what-if) image as a new card, placed by the current network.

The new card needs what every card has: a feature vector at the workspace's layer, a top-5 and a
3-D position. Re-running t-SNE for one card would move everything, so it is placed where its
nearest neighbours in feature space already are (inverse-distance weighted mean of the k nearest
cards' positions): the same idea as openTSNE's placing of new points, at the cost of one forward
pass and one distance computation.
"""

from __future__ import annotations

import numpy as np

from game.core.events import CardAdded
from game.nets.network import Network


def place_by_neighbours(
    feature: np.ndarray, features: np.ndarray, positions: np.ndarray, k: int = 5
) -> np.ndarray:
    """World position for ``feature``: the weighted mean of its ``k`` nearest cards' positions."""
    f = np.asarray(features, dtype=np.float32)
    d = np.sqrt(np.maximum(((f - np.asarray(feature, dtype=np.float32)[None]) ** 2).sum(1), 0.0))
    k = max(1, min(k, len(d)))
    idx = np.argpartition(d, k - 1)[:k]
    w = 1.0 / (d[idx] + 1e-6)
    return (np.asarray(positions, dtype=np.float64)[idx] * w[:, None]).sum(0) / w.sum()


def new_card_event(
    network: Network,
    image: np.ndarray,
    features: np.ndarray,
    positions: np.ndarray,
    label: int | None = None,
    source: str = "what-if",
    k: int = 5,
) -> CardAdded:
    """A ``CardAdded`` for ``image`` (uint8 H, W, C) placed among the current cards.

    ``features``/``positions`` are the workspace's (read only). ``label`` defaults to the
    network's prediction. Runs a forward pass: call it on the worker and ``post`` the event.
    """
    inf = network.infer(np.asarray(image, dtype=np.uint8)[None])
    feature = inf.features[0]
    if feature.shape[0] != np.asarray(features).shape[1]:
        raise ValueError(
            f"the network's feature layer gives {feature.shape[0]} values, the cards have {np.asarray(features).shape[1]}"
        )
    pos = place_by_neighbours(feature, features, positions, k)
    classes, scores = inf.top5_classes[0], inf.top5_scores[0]
    return CardAdded(
        image=np.asarray(image, dtype=np.uint8).copy(),
        label=int(classes[0] if label is None else label),
        top5_classes=tuple(int(c) for c in classes),
        top5_scores=tuple(float(s) for s in scores),
        feature=feature,
        position=(float(pos[0]), float(pos[1]), float(pos[2])),
        source=source,
    )
