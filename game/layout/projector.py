"""PCA -> openTSNE 3-D -> world metres, and the stable update the fine-tune loop relies on.

The world is Z-up metres: cards fill a box of ``volume`` (x, y, z) centred on x = y = 0, its floor
``floor_clearance`` above the ground. The normalisation (centre, scale and per-axis stretch) is
fixed when the layout is first fitted and reused on every update: if it were recomputed, one card
moving far away would shrink the whole world and every other card would appear to move.

Readability (issue 12): a plain 3-D t-SNE makes dense balls of cards with empty space between
them, and a uniform scale limited by the volume's height, so from any view each card covers
several others. Three settings spread the cloud without letting anything but the neighbourhoods
decide where a card goes:

* ``exaggeration`` below 1 after the early phase (and in every update): weaker attraction, so
  each cluster spreads into the empty space around it (the kernel's neighbourhoods still rule);
* ``align_axes``: the fitted coordinates are turned (a rotation, which t-SNE is blind to) so the
  cloud's longest principal axis runs along x, the next along y and the shortest up, where the
  volume is lowest;
* ``stretch``: a per-axis scale between one uniform scale (0) and each axis filling its side of
  the volume (1); the stretch is part of the world transform, so updates keep it.

Two updates after fine-tuning:

* ``update_local`` (the default): only the cards whose neighbourhood in feature space really
  changed move (fewer than ``keep`` of their 10 nearest neighbours are those they had when they
  were last placed), plus the cards the caller names (the edited ones). They are placed by a
  partial t-SNE against every other card held still, starting at the median position of their
  new feature-space neighbours, i.e. where the updated network puts them. Why: a head-only
  fine-tune reorders the 10 nearest neighbours of about one card in ten by tiny amounts (below
  what a 3-D t-SNE resolves: its first layout keeps only ~0.68 of the 50-d neighbours); a full
  re-optimisation turns that into a visible reshuffle of every cluster (0.88-0.91 of the layout's
  10-NN kept, measured on digits), where the person expects the cards they did not touch to stay.
* ``update``: warm-start t-SNE of every card from the current embedding with the new features'
  affinities, then align the result to the old embedding (rotation, uniform scale, shift).
  openTSNE's ``transform`` of all points is not used for this: it barely moves existing points,
  which hides real change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from openTSNE import TSNEEmbedding, affinity
from openTSNE.tsne import PartialTSNEEmbedding
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from game.core.scene import LayoutConfig


@dataclass
class LayoutState:
    """A fitted layout: raw t-SNE coordinates, the world transform, and world positions."""

    embedding: np.ndarray  # (N, 3) t-SNE units
    center: np.ndarray  # (3,) raw-space point mapped to the volume's centre
    scale: float  # metres per t-SNE unit (times ``stretch`` per axis)
    offset: np.ndarray  # (3,) world position of the volume's centre
    positions: np.ndarray  # (N, 3) float32 world metres
    pca_dims: int = 0
    seconds: float = 0.0
    tsne: TSNEEmbedding | None = field(default=None, repr=False)
    # (N, MOBILITY_K) feature-space neighbours of each card when it was last placed (None: those
    # of the features the layout was made from); ``update_local`` compares against them, so slow
    # drift over many fine-tunes adds up until a card moves.
    neighbours: np.ndarray | None = field(default=None, repr=False)
    moved: np.ndarray | None = field(default=None, repr=False)  # (N,) bool: placed by the last update
    # (3,) per-axis factor on ``scale`` (``LayoutConfig.stretch``); ones: one uniform scale.
    stretch: np.ndarray = field(default_factory=lambda: np.ones(3))

    @property
    def axis_scale(self) -> np.ndarray:
        """(3,) metres per t-SNE unit along x, y and z."""
        return self.scale * np.asarray(self.stretch, dtype=np.float64)

    def to_world(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.center) * self.axis_scale + self.offset).astype(np.float32)

    def to_raw(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world, dtype=np.float64) - self.offset) / self.axis_scale + self.center

    def successor(
        self,
        raw: np.ndarray,
        pca_dims: int,
        tsne: TSNEEmbedding | None = None,
        neighbours: np.ndarray | None = None,
        moved: np.ndarray | None = None,
    ) -> LayoutState:
        """A layout of ``raw`` in this one's world transform (so unmoved cards keep their place)."""
        state = LayoutState(
            raw,
            self.center,
            self.scale,
            self.offset,
            np.empty((0, 3)),
            pca_dims,
            0.0,
            tsne,
            neighbours,
            moved,
            self.stretch,
        )
        state.positions = state.to_world(raw)
        return state


MOBILITY_K = 10  # neighbours compared to decide whether a card moves in a local update
LOCAL_LEARNING_RATE = 10.0  # partial t-SNE: its affinity rows sum to 1, so no N-scaled rate
LOCAL_MAX_FREE = 0.5  # more moving cards than this fraction: a full update instead
LOCAL_MAX_GROUPED = 0.5  # ... or when more of the moving cards' new neighbours are moving too


class Projector:
    """Fits and updates 3-D layouts; parameters come from the scene's ``[layout]`` table."""

    def __init__(self, config: LayoutConfig | None = None, n_jobs: int = 2) -> None:
        self.config = config or LayoutConfig()
        self.n_jobs = n_jobs

    # --- pieces --------------------------------------------------------------------------------

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """PCA to ``pca_dims`` (or fewer when the features have fewer dimensions or points)."""
        x = np.asarray(features, dtype=np.float32)
        dims = min(self.config.pca_dims, x.shape[1], max(len(x) - 1, 1))
        if dims >= x.shape[1]:
            return (x - x.mean(0)).astype(np.float32)
        return PCA(n_components=dims, random_state=self.config.seed).fit_transform(x).astype(np.float32)

    def affinity_method(self, n_points: int) -> str:
        """openTSNE's neighbour search: exact for tiny sets (annoy needs enough points), else annoy."""
        return "exact" if n_points < 200 else "annoy"

    def affinities(self, reduced: np.ndarray) -> affinity.PerplexityBasedNN:
        perplexity = min(self.config.perplexity, max((len(reduced) - 1) / 3.0, 1.0))
        return affinity.PerplexityBasedNN(
            reduced,
            perplexity=perplexity,
            n_jobs=self.n_jobs,
            random_state=self.config.seed,
            method=self.affinity_method(len(reduced)),
            verbose=False,
        )

    def _optimise(
        self, init: np.ndarray, aff: affinity.PerplexityBasedNN, early: int, iterations: int
    ) -> TSNEEmbedding:
        emb = TSNEEmbedding(
            init,
            aff,
            negative_gradient_method="bh",
            theta=self.config.theta,
            n_jobs=self.n_jobs,
            random_state=self.config.seed,
            verbose=False,
        )
        if early:
            emb = emb.optimize(early, exaggeration=12, momentum=0.5)
        if iterations:
            emb = emb.optimize(iterations, exaggeration=self.config.exaggeration, momentum=0.8)
        return emb

    # --- public --------------------------------------------------------------------------------

    def fit(self, features: np.ndarray) -> LayoutState:
        """A fresh layout of ``features`` normalised into the walkable volume."""
        start = time.perf_counter()
        reduced = self.reduce(features)
        aff = self.affinities(reduced)
        init = np.zeros((len(reduced), 3))
        init[:, : min(3, reduced.shape[1])] = reduced[:, :3]  # tiny sets have fewer PCA components
        init = init / (np.std(init[:, 0]) + 1e-12) * 1e-4  # openTSNE's recommended PCA init scale
        emb = self._optimise(init, aff, self.config.early_iterations, self.config.iterations)
        raw = np.asarray(emb, dtype=np.float64)
        tsne: TSNEEmbedding | None = emb
        if self.config.align_axes:
            raw = principal_axes(raw)
            tsne = None  # the optimiser's copy is in the unturned frame: not to be reused
        center, scale, stretch, offset = self._normalisation(raw)
        state = LayoutState(raw, center, scale, offset, np.empty((0, 3)), reduced.shape[1], 0.0, tsne)
        state.stretch = stretch
        state.neighbours = _knn(reduced, min(MOBILITY_K, len(reduced) - 1))  # for update_local
        state.positions = state.to_world(raw)
        state.seconds = time.perf_counter() - start
        return state

    def update(
        self,
        features: np.ndarray,
        previous: LayoutState,
        iterations: int | None = None,
        anchors: np.ndarray | None = None,
    ) -> LayoutState:
        """Re-layout after the features changed, warm-started from ``previous`` and aligned to it.

        ``anchors`` (optional ``(N, 3)`` world positions) replace the starting point of some cards,
        e.g. where the person dropped them; NaN rows keep the previous position.
        """
        start = time.perf_counter()
        reduced = self.reduce(features)
        aff = self.affinities(reduced)
        init = previous.embedding.copy()
        old_nb = previous.neighbours
        if old_nb is not None and len(old_nb) == len(reduced) and len(reduced) > old_nb.shape[1]:
            # A card whose neighbourhood changed starts among its new neighbours (as in
            # update_local): with an exaggeration below 1 the attraction is too weak to carry
            # it across the world in a few warm-started iterations.
            new_nb = _knn(reduced, old_nb.shape[1])
            changed = neighbour_overlap(old_nb, new_nb) < 0.5
            if changed.any():
                init[changed] = np.median(previous.embedding[new_nb[changed]], axis=1)
        if anchors is not None:
            mask = ~np.isnan(anchors).any(axis=1)
            init[mask] = previous.to_raw(anchors[mask])
        n_iter = self.config.update_iterations if iterations is None else iterations
        emb = self._optimise(init, aff, 0, n_iter)
        raw = align(np.asarray(emb, dtype=np.float64), previous.embedding)
        state = previous.successor(raw, reduced.shape[1], tsne=emb)
        state.seconds = time.perf_counter() - start
        return state

    def update_local(
        self,
        features: np.ndarray,
        previous: LayoutState,
        previous_features: np.ndarray,
        keep: float = 0.5,
        move: np.ndarray | None = None,
        iterations: int | None = None,
        anchors: np.ndarray | None = None,
    ) -> LayoutState:
        """Re-place only the cards whose feature-space neighbourhood changed (see the module doc).

        ``previous_features``: the features ``previous`` was made from (used where ``previous``
        carries no neighbour record); ``move``: indices of cards that move whatever their
        neighbourhood (the edited ones). Falls back to ``update`` (starting from ``anchors``) when
        most cards would move, or when the moving cards are mostly each other's new neighbours:
        placed only against the cards held still they would not attract one another, and a group
        that forms a new cluster would end up strewn along the edges of the old ones.
        """
        start = time.perf_counter()
        reduced = self.reduce(features)
        n = len(reduced)
        k = min(MOBILITY_K, n - 1)
        new_nb = _knn(reduced, k)
        old_nb = previous.neighbours
        if old_nb is None or old_nb.shape != new_nb.shape:
            old_nb = _knn(self.reduce(previous_features), k)
        free = neighbour_overlap(old_nb, new_nb) < keep
        if move is not None:
            free[np.asarray(move, dtype=np.int64)] = True
        n_iter = self.config.update_iterations if iterations is None else iterations
        grouped = bool(free.any()) and float(free[new_nb[free]].mean()) > LOCAL_MAX_GROUPED
        if free.sum() > LOCAL_MAX_FREE * n or grouped:
            state = self.update(features, previous, iterations=n_iter, anchors=anchors)
            state.neighbours, state.moved = new_nb, np.ones(n, dtype=bool)
            return state
        raw = previous.embedding.copy()
        free_idx, held_idx = np.flatnonzero(free), np.flatnonzero(~free)
        if len(free_idx):
            perplexity = min(self.config.perplexity, max((len(held_idx) - 1) / 3.0, 1.0))
            rows, near = conditional_affinities(reduced[free_idx], reduced[held_idx], perplexity)
            # Start where the updated network puts the card: among its new neighbours.
            init = np.median(raw[held_idx][near[:, :k]], axis=1)
            held = np.ascontiguousarray(raw[held_idx])
            reference = TSNEEmbedding(
                held,
                affinity.PrecomputedAffinities(sp.identity(len(held), format="csr"), normalize=False),
                negative_gradient_method="bh",
                theta=self.config.theta,
                n_jobs=self.n_jobs,
                random_state=self.config.seed,
                verbose=False,
            )
            partial = PartialTSNEEmbedding(
                init,
                reference,
                rows,
                negative_gradient_method="bh",
                theta=self.config.theta,
                n_jobs=self.n_jobs,
            )
            if n_iter:
                partial = partial.optimize(
                    n_iter,
                    learning_rate=LOCAL_LEARNING_RATE,
                    exaggeration=self.config.exaggeration,
                    momentum=0.8,
                    max_grad_norm=0.25,
                )
            raw[free_idx] = np.asarray(partial, dtype=np.float64)
        neighbours = old_nb.copy()
        neighbours[free] = new_nb[free]
        state = previous.successor(raw, reduced.shape[1], neighbours=neighbours, moved=free)
        state.seconds = time.perf_counter() - start
        return state

    def _normalisation(self, raw: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Centre, uniform scale, per-axis stretch and offset that put the 1st-99th percentile
        box of ``raw`` in the volume: the tightest axis fills its side; the others fill theirs
        as far as ``stretch`` allows (0: not beyond the uniform scale, 1: fully)."""
        lo, hi = np.percentile(raw, 1, axis=0), np.percentile(raw, 99, axis=0)
        center = (lo + hi) / 2.0
        extent = np.maximum(hi - lo, 1e-9)
        volume = np.asarray(self.config.volume, dtype=np.float64)
        fits = volume / extent  # the scale at which each axis fills its side
        scale = float(np.min(fits))
        stretch = (fits / scale) ** float(self.config.stretch)
        offset = np.array([0.0, 0.0, self.config.floor_clearance + volume[2] / 2.0])
        return center, scale, stretch, offset


def warm_up() -> None:
    """Fit and locally update a tiny layout, so a fresh process (the job process) pays the lazy
    imports of PCA, neighbour search and openTSNE's optimisers before its first fine-tune."""
    # Shapes that take the same paths as real data (randomized PCA, approximate neighbours).
    x = np.random.default_rng(0).normal(size=(600, 60)).astype(np.float32)
    config = LayoutConfig(pca_dims=10, early_iterations=2, iterations=2, perplexity=5.0)
    projector = Projector(config, n_jobs=1)
    first = projector.fit(x)
    projector.update_local(x, first, x, move=np.array([0]), iterations=2)


def principal_axes(raw: np.ndarray) -> np.ndarray:
    """``raw`` centred and turned so its principal axes run along x, y, z, longest first.

    A proper rotation (no mirror: a mirrored world would confuse people who know it), so t-SNE
    distances, and the layout as the network's neighbourhoods made it, are unchanged.
    """
    centred = raw - raw.mean(0)
    if len(raw) < 3:
        return centred
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    rotation = vt.T
    if np.linalg.det(rotation) < 0:
        rotation[:, -1] *= -1
    return centred @ rotation


def align(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate, uniformly scale and shift ``moving`` onto ``target`` (orthogonal Procrustes)."""
    mu_m, mu_t = moving.mean(0), target.mean(0)
    a, b = moving - mu_m, target - mu_t
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))  # no reflections: a mirrored world would confuse people
    correction = np.diag([1.0] * (a.shape[1] - 1) + [d])
    rotation = u @ correction @ vt
    scale = float((s * np.diag(correction)).sum() / max((a**2).sum(), 1e-12))
    return (a @ rotation) * scale + mu_t


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows (Euclidean), nearest first."""
    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the fraction of the indices in ``a`` that are also in ``b`` (rows of equal length)."""
    a_sorted, b_sorted = np.sort(a, axis=1), np.sort(b, axis=1)
    hits = np.array([np.intersect1d(x, y, assume_unique=True).size for x, y in zip(a_sorted, b_sorted)])
    return hits / max(a.shape[1], 1)


def conditional_affinities(
    points: np.ndarray, reference: np.ndarray, perplexity: float
) -> tuple[sp.csr_matrix, np.ndarray]:
    """t-SNE's conditional affinities p(j|i) of each of ``points`` to the ``reference`` rows.

    Gaussian kernels over the ``3 * perplexity`` nearest reference rows, each bandwidth found by
    bisection so that the row's perplexity is ``perplexity`` (rows sum to 1). Only the moving
    cards' rows are needed, which openTSNE cannot compute without building every card's.
    Returns the (len(points), len(reference)) matrix and the neighbour indices, nearest first.
    """
    k = int(min(len(reference), max(3 * perplexity, 1)))
    dist, near = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(points)
    d2 = dist.astype(np.float64) ** 2
    d2 -= d2[:, :1]  # shift by the nearest distance: same probabilities, no underflow
    target = np.log(perplexity)
    lo = np.full(len(d2), -np.inf)
    hi = np.full(len(d2), np.inf)
    beta = np.ones(len(d2))
    for _ in range(64):
        w = np.exp(-d2 * beta[:, None])
        total = w.sum(1)
        entropy = np.log(total) + beta * (d2 * w).sum(1) / total
        too_flat = entropy > target  # too many neighbours share the mass: narrow the kernel
        lo = np.where(too_flat, beta, lo)
        hi = np.where(too_flat, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2.0, np.where(np.isinf(lo), beta / 2.0, (lo + hi) / 2.0))
    w = np.exp(-d2 * beta[:, None])
    w /= w.sum(1, keepdims=True)
    rows = np.repeat(np.arange(len(points)), k)
    matrix = sp.csr_matrix((w.ravel(), (rows, near.ravel())), shape=(len(points), len(reference)))
    return matrix, near


def neighbour_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours in ``a`` that are also so in ``b``."""
    return float(per_point_agreement(a, b, k).mean())


def per_point_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> np.ndarray:
    """Per point, the fraction of its ``k`` nearest neighbours in ``a`` kept in ``b``."""
    k = min(k, len(a) - 1)
    return neighbour_overlap(_knn(a, k), _knn(b, k))
