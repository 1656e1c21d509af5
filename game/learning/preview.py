"""The first stage of a staged model update: a quick preview of the cards around a job's edits.

Why: at 50,000 cards a head-only job's full result (every card re-inferred, the layout updated
against every card) takes seconds after training, and the person who dropped a card waits for it
to move. What they look at is the edited cards and their surroundings. So after training, and
before the full re-inference, the job re-infers only the ``preview_cards`` cards nearest the drops
and the edited cards' old places (in the 3-D layout on show), reduces their new features with the
PCA of the layout on show (no refit), decides which of them move as ``Projector.update_local``
does (fewer than ``relayout_keep`` of their 10 feature neighbours kept, or edited), and places
those by a partial t-SNE against every other card held where it is. That is sent back at once;
the world starts tweening those cards; the full result follows and retargets the tween.

What a preview is not: a model version. It changes nothing in the workspace or the model store,
is never posted as a workspace event and so never recorded (``replay --verify`` re-creates the
same full results with or without it); it does not touch the job's random streams, so the full
result is bit for bit what it is without a preview (tested). When the job fails or is cancelled,
the previewed cards glide back to where the current version puts them (the controller tells its
preview listeners ``None``).

When: from ``preview_above`` cards (the scene's setting; 5,000 by default). The embedded scenes
(up to 2,000 cards) get their full result in about a second, so they skip it and stay bitwise
what they were.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the job's modules; the world imports this one for ``Preview`` alone
    from game.core.events import EditQueued
    from game.layout.projector import LayoutState, Projector, Reduction
    from game.learning.stem import Runner


@dataclass(frozen=True)
class Preview:
    """Where a running job puts the cards near its edits, before its full result.

    ``version`` is the model version the job will produce (the preview is not one); ``cards``
    (int64) are the cards it re-placed, ``positions`` (float32, world metres) where.
    """

    version: int
    cards: np.ndarray
    positions: np.ndarray
    seconds: float = 0.0
    candidates: int = 0  # cards re-inferred to decide which of them move


PreviewSink = Callable[[Preview], None]


def wants_preview(n_cards: int, preview_above: int) -> bool:
    """Whether a job on ``n_cards`` cards sends a preview (``preview_above`` 0: always)."""
    return n_cards >= preview_above


def preview_rows(positions: np.ndarray, edits: list[EditQueued], count: int) -> np.ndarray:
    """The ``count`` cards nearest any drop position or edited card's place in ``positions``
    (the layout on show), and the edited cards; sorted."""
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    cards = np.array([e.card for e in edits], dtype=np.int64)
    centres = np.array([e.position for e in edits] + [positions[c] for c in cards], dtype=np.float64)
    nearest = np.full(n, np.inf)
    for c in centres:
        np.minimum(nearest, ((positions - c) ** 2).sum(1), out=nearest)
    count = min(max(int(count), 0), n)
    rows = np.argpartition(nearest, count - 1)[:count] if 0 < count < n else np.arange(n if count else 0)
    return np.union1d(rows, cards).astype(np.int64)


def rows_features(runner: Runner, rows: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The feature layer's output of ``rows`` under the runner's (trained) weights: by the
    low-rank update of the kept pre-activations where the re-inference uses it (a large head;
    within float noise of the full pass, and the factors are then ready for the re-inference),
    else by the head's pass."""
    import torch

    quick = runner.rows_features_low_rank(rows)
    if quick is not None:
        return quick
    runner.network.module.eval()
    out: np.ndarray | None = None
    for s in range(0, len(rows), batch):
        with torch.no_grad():
            _, features = runner.forward(rows[s : s + batch])
        if out is None:
            out = np.empty((len(rows), features.shape[1]), dtype=np.float32)
        out[s : s + len(features)] = features.detach().numpy()
    return out if out is not None else np.empty((0, 0), np.float32)


def place_preview(
    version: int,
    projector: Projector,
    layout: LayoutState,
    features: np.ndarray,
    edits: list[EditQueued],
    rows: np.ndarray,
    new: np.ndarray,
    keep: float,
    iterations: int,
    start: float | None = None,
) -> Preview:
    """The preview of a trained job (see the module doc), its second stage: ``rows`` (cards near
    the edits, ``preview_rows``) with their new features ``new`` (``rows_features``) reduced,
    the cards among them that move decided and placed; ``layout`` and ``features`` are the version
    on show (the job's base). It reads neither the network nor the kept
    pre-activations, so it may run beside the job's re-inference (``finetune.run_finetune``);
    ``start``: when the preview began (its ``seconds`` count from there)."""
    from sklearn.neighbors import NearestNeighbors

    from game.layout.projector import LOCAL_LEARNING_RATE, MOBILITY_K, neighbour_overlap

    start = time.perf_counter() if start is None else start
    n = len(layout.positions)
    reduction = projector.base_reduction(layout, features)  # the PCA on show (remembered)
    space = reduction.reduced.copy()
    space[rows] = reduction.transform(new)
    k = min(MOBILITY_K, n - 1)
    near = NearestNeighbors(n_neighbors=k + 1).fit(space).kneighbors(space[rows], return_distance=False)
    new_nb = _without_self(near, rows, k)
    old_all = layout.neighbours
    if old_all is not None and old_all.shape == (n, k):
        old_nb = old_all[rows]
    else:  # no record of the neighbours the layout was placed with: those of the old features
        old = NearestNeighbors(n_neighbors=k + 1).fit(reduction.reduced)
        old_nb = _without_self(old.kneighbors(reduction.reduced[rows], return_distance=False), rows, k)
    moving = neighbour_overlap(old_nb, new_nb) < keep
    moving |= np.isin(rows, [e.card for e in edits])
    free = rows[moving]
    held = np.setdiff1d(np.arange(n), free)
    if len(free) and len(held):
        raw = projector._place_partial(
            space[free], space[held], layout.embedding[held], k, iterations, LOCAL_LEARNING_RATE
        )
        positions = layout.to_world(raw)
    else:
        free, positions = free[:0], np.empty((0, 3), np.float32)
    return Preview(version, free, positions, time.perf_counter() - start, len(rows))


def reduces_ahead(n_cards: int, preview_above: int) -> bool:
    """Whether jobs on ``n_cards`` cards use the PCA of their base features (the preview, and
    ``Projector.update_local`` from ``EXACT_KNN_BELOW`` cards), so it is worth fitting ahead."""
    from game.layout.projector import EXACT_KNN_BELOW

    return n_cards >= EXACT_KNN_BELOW or wants_preview(n_cards, preview_above)


def prepare_features(
    features: np.ndarray, projector: Projector, reduce: bool = True, basis: Reduction | None = None
) -> None:
    """What a job on ``features`` (the version on show) measures first: their spread and, when
    ``reduce``, their reduction (the preview and the local re-layout reduce in it), remembered
    for this array: in ``basis`` where the layout on show carries its PCA (``LayoutState.basis``:
    what ``Projector.base_reduction`` reduces in then; a layout cache's or a fit's, whose PCA a
    refit here would not always match bit for bit, and a refit costs 1.4 CPU s at 50k against
    0.3 for the projection), else the PCA fitted to them. Backends call it when they prepare a
    large scene and after each result, while the person looks (the job process once it has
    answered), so neither the first drop nor a later one waits for them. The same functions on
    the same array: the same numbers, whether remembered or not."""
    from game.layout.projector import Reduction, known_reduction, remember_reduction
    from game.learning.finetune import remember_spread

    remember_spread(features)
    if reduce and known_reduction(features) is None:
        if basis is not None:
            remember_reduction(features, Reduction(basis.transform(features), basis.pca, basis.mean))
        else:
            remember_reduction(features, projector.reduction(features))


def _without_self(near: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """``k`` neighbours per row, the row itself left out (it is usually first, but ties may not)."""
    out = np.empty((len(rows), k), dtype=np.int64)
    for i, (row, found) in enumerate(zip(rows, near, strict=True)):
        others = found[found != row]
        out[i] = others[:k]
    return out


def preview_target(positions: np.ndarray, preview: Preview | None) -> np.ndarray:
    """Where the world tweens every card for ``preview``: ``positions`` (the workspace's, i.e.
    the version on show and the pending drops) with the previewed cards at their preview places;
    ``None`` (taken back): ``positions`` as they are. Cards beyond ``positions`` are ignored."""
    target = np.array(positions, dtype=np.float32)
    if preview is not None and len(preview.cards):
        inside = preview.cards < len(target)
        target[preview.cards[inside]] = preview.positions[inside]
    return target
