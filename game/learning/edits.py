"""What a drop means: relabel, reinforce (with repeats) or unsure.

The person drops a card at ``p``. With ``c`` the nearest class centroid and ``R_c`` that class's
cluster radius (the ``cluster_percentile`` of its cards' distances to ``c``):

* within ``unsure_factor * R_c`` of a centroid of another class: **relabel** to that class;
* within that distance of its own class's centroid: **reinforce**, the image is used ``r`` times,
  ``r`` falling linearly from ``r_max`` at the centroid to 1 at ``R_c`` (and 1 beyond it), the
  heuristic of the VR fine-tuning paper (a card pushed to the heart of its cluster is a confident
  statement, one dropped at the rim a weak one);
* farther than ``unsure_factor * R_c`` from every centroid: **unsure**, no relabel and, unless the
  scene's ``train_unsure`` says so, nothing trained.

Relabels get repeats by the same rule, so a card dropped into the heart of another cluster counts
more than one dropped at its edge. Centroids and radii are computed without the dropped card, so
where it was dragged from (or to) does not bend the clusters it is judged against.
"""

from __future__ import annotations

import numpy as np

from game.core.events import CardDropped, EditQueued
from game.core.scene import LearningConfig
from game.core.workspace import Workspace, class_centroids, cluster_radii

RELABEL = "relabel"
REINFORCE = "reinforce"
UNSURE = "unsure"


def repeats_for(distance: float, radius: float, r_max: int) -> int:
    """``r_max`` at the centroid, falling linearly to 1 at ``radius`` and staying 1 beyond it."""
    if r_max <= 1 or radius <= 0:
        return 1
    frac = max(0.0, 1.0 - float(distance) / float(radius))
    return int(np.clip(round(1 + (r_max - 1) * frac), 1, r_max))


def cluster_geometry(
    positions: np.ndarray, labels: np.ndarray, n_classes: int, percentile: float, exclude: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids and radii of every class, leaving out card ``exclude`` (-1: none)."""
    keep = np.ones(len(labels), dtype=bool)
    if exclude >= 0:
        keep[exclude] = False
    pos, lab = positions[keep], labels[keep]
    return class_centroids(pos, lab, n_classes), cluster_radii(pos, lab, n_classes, percentile)


def interpret(
    card: int,
    position: np.ndarray,
    old_label: int,
    centroids: np.ndarray,
    radii: np.ndarray,
    config: LearningConfig,
) -> EditQueued:
    """The edit a drop of ``card`` at ``position`` means, given the clusters it is judged against."""
    p = np.asarray(position, dtype=np.float64)
    d = np.linalg.norm(centroids.astype(np.float64) - p[None, :], axis=1)
    d = np.where(np.isnan(d), np.inf, d)
    nearest = int(np.argmin(d))
    dist = float(d[nearest])
    radius = float(radii[nearest])
    pos = (float(p[0]), float(p[1]), float(p[2]))
    if not np.isfinite(dist) or dist > config.unsure_factor * max(radius, 1e-9):
        return EditQueued(card, UNSURE, int(old_label), int(old_label), 0, pos)
    r = repeats_for(dist, radius, config.r_max)
    action = REINFORCE if nearest == int(old_label) else RELABEL
    return EditQueued(card, action, int(old_label), nearest, r, pos)


def interpret_drop(
    drop: CardDropped,
    workspace: Workspace,
    config: LearningConfig,
    reference_positions: np.ndarray | None = None,
) -> EditQueued:
    """Turn a ``CardDropped`` into the ``EditQueued`` it means.

    ``reference_positions`` are the positions the clusters are measured on (the current model's
    layout); by default the workspace's positions. The dropped card itself is left out.
    """
    if not 0 <= drop.card < workspace.n_cards:
        raise ValueError(f"dropped card {drop.card} is not one of the {workspace.n_cards} cards")
    positions = workspace.positions if reference_positions is None else reference_positions
    centroids, radii = cluster_geometry(
        positions, workspace.labels, workspace.n_classes, config.cluster_percentile, exclude=drop.card
    )
    return interpret(
        drop.card, np.asarray(drop.position), int(workspace.labels[drop.card]), centroids, radii, config
    )


def is_trainable(edit: EditQueued, config: LearningConfig) -> bool:
    """Whether an edit goes into a fine-tune job (unsure ones only when the scene says so)."""
    return edit.action != UNSURE or config.train_unsure


def target_label(edit: EditQueued) -> int:
    """The label an edit trains towards (unsure edits keep the old one)."""
    return edit.new_label if edit.action != UNSURE else edit.old_label
