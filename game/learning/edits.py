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

from typing import Final

import numpy as np
import numpy.typing as npt

from game.core.events import CardDropped, EditAction, EditQueued
from game.core.scene import LearningConfig
from game.core.workspace import Workspace, class_centroids, cluster_radii

RELABEL: Final[EditAction] = "relabel"
REINFORCE: Final[EditAction] = "reinforce"
UNSURE: Final[EditAction] = "unsure"


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

    ``reference_positions`` are the positions the clusters are measured on; by default the
    workspace's ``cluster_positions`` (the current model's layout, or the layer switched to). The
    dropped card itself is left out.
    """
    if reference_positions is None:
        return DropJudge(config).judge_drop(drop, workspace)  # the one judge, without its cache
    if not 0 <= drop.card < workspace.n_cards:
        raise ValueError(f"dropped card {drop.card} is not one of the {workspace.n_cards} cards")
    centroids, radii = cluster_geometry(
        reference_positions,
        workspace.labels,
        workspace.n_classes,
        config.cluster_percentile,
        exclude=drop.card,
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


class DropJudge:
    """What releasing a carried card would mean, asked every frame while it is carried.

    The drop preview (desktop and VR) and the fine-tune controller both go through ``judge``, so
    what the person is shown before letting go is exactly what is trained. The cluster geometry
    without the carried card is cached per card and layout, so a frame's question costs one
    distance per class.
    """

    def __init__(self, config: LearningConfig) -> None:
        self.config = config
        self._key: tuple[int, int, int, int] | None = None
        self._geometry: tuple[np.ndarray, np.ndarray] | None = None

    def geometry(self, workspace: Workspace, card: int) -> tuple[np.ndarray, np.ndarray]:
        """Centroids and radii of every class, measured on ``workspace.cluster_positions``
        without ``card``."""
        ref = workspace.cluster_positions
        key = (id(workspace), int(card), workspace.cluster_revision, workspace.n_cards)
        if key != self._key or self._geometry is None:
            self._geometry = cluster_geometry(
                ref, workspace.labels, workspace.n_classes, self.config.cluster_percentile, exclude=card
            )
            self._key = key
        return self._geometry

    def judge(self, workspace: Workspace, card: int, position: npt.ArrayLike) -> EditQueued:
        """The edit a release of ``card`` at ``position`` means."""
        if not 0 <= card < workspace.n_cards:
            raise ValueError(f"dropped card {card} is not one of the {workspace.n_cards} cards")
        centroids, radii = self.geometry(workspace, card)
        return interpret(
            card, np.asarray(position), int(workspace.labels[card]), centroids, radii, self.config
        )

    def judge_drop(self, drop: CardDropped, workspace: Workspace) -> EditQueued:
        return self.judge(workspace, drop.card, drop.position)

    def cluster_on_ray(
        self, workspace: Workspace, card: int, origin: npt.ArrayLike, direction: npt.ArrayLike
    ) -> tuple[int, np.ndarray] | None:
        """The cluster the person points at, and where on the ray to put the card inside it.

        A cluster is under the ray when the ray passes within the distance that still counts as
        "in" it (``unsure_factor`` times its radius); of several, the one the ray passes most
        centrally (relative to its radius) wins, so a small cluster in front of a big one can
        still be hit. The point is the ray's closest approach to the centroid: on screen the card
        stays under the cursor, in depth it lands inside the cluster as drawn. ``None`` when the
        ray meets no cluster (the caller keeps the card on its drag plane).
        """
        centroids, radii = self.geometry(workspace, card)
        o = np.asarray(origin, dtype=np.float64).reshape(3)
        d = np.asarray(direction, dtype=np.float64).reshape(3)
        d = d / max(float(np.linalg.norm(d)), 1e-12)
        c = centroids.astype(np.float64)
        valid = np.isfinite(c).all(axis=1) & (radii > 0)
        if not valid.any():
            return None
        v = np.where(valid[:, None], c - o[None, :], 0.0)
        t = v @ d
        perp = np.linalg.norm(v - t[:, None] * d[None, :], axis=1)
        reach = self.config.unsure_factor * np.maximum(radii.astype(np.float64), 1e-9)
        inside = valid & (t > 0) & (perp <= reach)
        if not inside.any():
            return None
        score = np.where(inside, perp / reach, np.inf)
        old_label = int(workspace.labels[card])
        # Most central first, and only a point the judge places in that very cluster: the judge
        # takes the nearest centroid by plain distance, so next to a big cluster a point inside
        # a small one can be judged "unsure", and the preview must never say what the carry
        # did not do.
        for k in np.argsort(score, kind="stable"):
            if not np.isfinite(score[k]):
                break
            point = (o + d * t[k]).astype(np.float32)
            edit = interpret(card, point, old_label, centroids, radii, self.config)
            if edit.action != UNSURE and edit.new_label == int(k):
                return int(k), point
        return None


def describe_edit(edit: EditQueued, class_names: list[str]) -> str:
    """One line telling what a release does, e.g. ``release: relabel 7 -> 2`` (ASCII: the default font has no arrow glyph)."""

    def name(k: int) -> str:
        return class_names[k] if 0 <= k < len(class_names) else str(k)

    if edit.action == RELABEL:
        times = f" (x{edit.repeats})" if edit.repeats > 1 else ""
        return f"release: relabel {name(edit.old_label)} -> {name(edit.new_label)}{times}"
    if edit.action == REINFORCE:
        return f"release: reinforce {name(edit.old_label)} x{edit.repeats}"
    return "release: unsure (far from every cluster)"
