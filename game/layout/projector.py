"""PCA -> openTSNE 3-D -> world metres, and the stable update the fine-tune loop relies on.

The world is Z-up metres: cards fill a box of ``volume`` (x, y, z) centred on x = y = 0, its floor
``floor_clearance`` above the ground. The normalisation (centre and scale) is fixed when the
layout is first fitted and reused on every update: if it were recomputed, one card moving far
away would shrink the whole world and every other card would appear to move.

Updates after fine-tuning warm-start t-SNE from the current embedding with the new features'
affinities, then align the result to the old embedding (rotation, uniform scale, shift), so cards
the change did not concern stay where they were. openTSNE's ``transform`` is not used for this:
it barely moves existing points, which hides real change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from openTSNE import TSNEEmbedding, affinity
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from game.core.scene import LayoutConfig


@dataclass
class LayoutState:
    """A fitted layout: raw t-SNE coordinates, the world transform, and world positions."""

    embedding: np.ndarray  # (N, 3) t-SNE units
    center: np.ndarray  # (3,) raw-space point mapped to the volume's centre
    scale: float  # metres per t-SNE unit
    offset: np.ndarray  # (3,) world position of the volume's centre
    positions: np.ndarray  # (N, 3) float32 world metres
    pca_dims: int = 0
    seconds: float = 0.0
    tsne: TSNEEmbedding | None = field(default=None, repr=False)

    def to_world(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.center) * self.scale + self.offset).astype(np.float32)

    def to_raw(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world, dtype=np.float64) - self.offset) / self.scale + self.center


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
            emb = emb.optimize(iterations, momentum=0.8)
        return emb

    # --- public --------------------------------------------------------------------------------

    def fit(self, features: np.ndarray) -> LayoutState:
        """A fresh layout of ``features`` normalised into the walkable volume."""
        start = time.perf_counter()
        reduced = self.reduce(features)
        aff = self.affinities(reduced)
        init = reduced[:, :3].astype(np.float64)
        init = init / (np.std(init[:, 0]) + 1e-12) * 1e-4  # openTSNE's recommended PCA init scale
        emb = self._optimise(init, aff, self.config.early_iterations, self.config.iterations)
        raw = np.asarray(emb, dtype=np.float64)
        center, scale, offset = self._normalisation(raw)
        state = LayoutState(raw, center, scale, offset, np.empty((0, 3)), reduced.shape[1], 0.0, emb)
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
        if anchors is not None:
            mask = ~np.isnan(anchors).any(axis=1)
            init[mask] = previous.to_raw(anchors[mask])
        n_iter = self.config.update_iterations if iterations is None else iterations
        emb = self._optimise(init, aff, 0, n_iter)
        raw = align(np.asarray(emb, dtype=np.float64), previous.embedding)
        state = LayoutState(
            raw,
            previous.center,
            previous.scale,
            previous.offset,
            np.empty((0, 3)),
            reduced.shape[1],
            0.0,
            emb,
        )
        state.positions = state.to_world(raw)
        state.seconds = time.perf_counter() - start
        return state

    def _normalisation(self, raw: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        lo, hi = np.percentile(raw, 1, axis=0), np.percentile(raw, 99, axis=0)
        center = (lo + hi) / 2.0
        extent = np.maximum(hi - lo, 1e-9)
        volume = np.asarray(self.config.volume, dtype=np.float64)
        scale = float(np.min(volume / extent))
        offset = np.array([0.0, 0.0, self.config.floor_clearance + volume[2] / 2.0])
        return center, scale, offset


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


def neighbour_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours in ``a`` that are also so in ``b``."""
    return float(per_point_agreement(a, b, k).mean())


def per_point_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> np.ndarray:
    """Per point, the fraction of its ``k`` nearest neighbours in ``a`` kept in ``b``."""
    k = min(k, len(a) - 1)
    na = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a, return_distance=False)[:, 1:]
    nb = NearestNeighbors(n_neighbors=k + 1).fit(b).kneighbors(b, return_distance=False)[:, 1:]
    return np.array([len(set(x) & set(y)) / k for x, y in zip(na, nb)])
