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

import dataclasses
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from openTSNE import TSNEEmbedding, _tsne, affinity
from openTSNE.nearest_neighbors import Annoy
from openTSNE.quad_tree import QuadTree
from openTSNE.tsne import EPSILON, PartialTSNEEmbedding
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
    # The PCA the layout's features were reduced with (``Reduction.basis``; None: not known, e.g.
    # read from an older cache file or session, or a small scene's: then it is the one fitted to
    # the features the layout was made from).
    # Local updates of large scenes keep it, so each job reduces in its base layout's PCA.
    basis: Reduction | None = field(default=None, repr=False)
    # Per card, lower bounds (in ``basis``) on its distances to the cards its next neighbour search
    # would measure besides its ``neighbours``: let ``update_local`` skip that search where it
    # cannot change the card's fate (``graph_step``). Only a time saving, rebuilt by every update;
    # the layout cache stores them with ``basis`` (``state_io``), sessions do not.
    neighbour_gaps: NeighbourGaps | None = field(default=None, repr=False)

    @property
    def axis_scale(self) -> np.ndarray:
        """(3,) metres per t-SNE unit along x, y and z."""
        return self.scale * np.asarray(self.stretch, dtype=np.float64)

    def to_world(self, raw: np.ndarray) -> np.ndarray:
        world: np.ndarray = ((raw - self.center) * self.axis_scale + self.offset).astype(np.float32)
        return world

    def to_raw(self, world: np.ndarray) -> np.ndarray:
        raw: np.ndarray = (np.asarray(world, dtype=np.float64) - self.offset) / self.axis_scale + self.center
        return raw

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


EXACT_AFFINITIES_BELOW = 200  # openTSNE's approximate search (annoy) needs more points than this
EXACT_KNN_BELOW = 5_000  # ``_knn``: exact search below this many points, approximate (annoy) above


def available_cores() -> int:
    """The cores this process may run on (all of them: the layout is the start-up's longest step)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


LARGE_LAYOUT = 5_000  # points above which ``Schedule.for_points`` trades accuracy for time
LARGE_THETA = 0.8  # Barnes-Hut accuracy at scale (the layout's quality is unchanged; see for_points)
LARGE_ITERATIONS = 150  # iterations after the early phase at scale (at most)
LARGE_KNN_TREES = 20  # annoy trees at scale: the 3 x perplexity neighbours it searches for are
# found among (trees x neighbours) candidates, thousands per point, enough for t-SNE's affinities
PCA_FIT_ROWS = 10_000  # PCA components fitted on at most this many rows (seeded), applied to all


@dataclass(frozen=True)
class Schedule:
    """How a first layout is optimised: Barnes-Hut ``theta`` and the iterations of each phase.

    The learning rate is openTSNE's (``N / exaggeration`` in each phase, i.e. ``N / 12`` in the
    early phase as Belkina et al. recommend), so larger sets need no more iterations to converge.
    """

    theta: float
    early_iterations: int
    iterations: int
    knn_trees: int = 50  # annoy's trees for the affinities' neighbour search (openTSNE's default)

    @staticmethod
    def for_points(config: LayoutConfig, n: int) -> Schedule:
        """The scene's settings up to ``LARGE_LAYOUT`` points; above, a coarser Barnes-Hut
        (``LARGE_THETA``), at most ``LARGE_ITERATIONS`` late iterations and fewer annoy trees.
        On 10,000 generated fc7-like points they keep the 10-NN agreement and the class
        separation (0.264 -> 0.261 and 0.968 -> 0.970) for 2.3x less CPU time (docs/benchmarks.md,
        issue 17); a 3-D Barnes-Hut iteration costs N log N (openTSNE's FFT gradients are 1-D and
        2-D only), and 50,000 cards must be laid out in minutes on two cores."""
        if n <= LARGE_LAYOUT:
            return Schedule(config.theta, config.early_iterations, config.iterations)
        return Schedule(
            max(config.theta, LARGE_THETA),
            config.early_iterations,
            min(config.iterations, LARGE_ITERATIONS),
            LARGE_KNN_TREES,
        )

    def describe(self) -> str:
        return (
            f"theta {self.theta:g}, {self.early_iterations}+{self.iterations} iterations, "
            f"{self.knn_trees} annoy trees"
        )


@dataclass
class Reduction:
    """Features reduced for the layout (``Projector.reduction``) and how: a fitted PCA, or, when
    the features have no more dimensions than ``pca_dims``, centring by ``mean``."""

    reduced: np.ndarray  # (N, d) float32
    pca: PCA | None = None
    mean: np.ndarray | None = None
    fitted: bool = False  # made by ``Projector.reduction`` of these very rows (not a transform)

    def basis(self) -> Reduction:
        """The reduction without its rows (what a layout keeps: under a megabyte; an empty array of
        its own, not a view that would keep all N rows alive with every layout version)."""
        return Reduction(np.empty((0, self.dims), self.reduced.dtype), self.pca, self.mean, self.fitted)

    def same_basis(self, other: Reduction) -> bool:
        """Whether ``other`` reduces the same way (equal PCA components and mean, by value)."""
        if (self.pca is None) != (other.pca is None):
            return False
        if self.pca is not None and other.pca is not None:
            return bool(
                np.array_equal(self.pca.components_, other.pca.components_)
                and np.array_equal(self.pca.mean_, other.pca.mean_)
            )
        return self.mean is not None and other.mean is not None and np.array_equal(self.mean, other.mean)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Other rows reduced the same way (float32)."""
        x = np.asarray(features, dtype=np.float32)
        if self.pca is not None:
            out: np.ndarray = self.pca.transform(x).astype(np.float32)
            return out
        assert self.mean is not None
        centred: np.ndarray = (x - self.mean).astype(np.float32)
        return centred

    @property
    def dims(self) -> int:
        """The reduced rows' width."""
        return int(self.reduced.shape[1])


class RowProjection:
    """Rows reduced in ``basis`` as they are made, into one (n, dims) array: a fine-tune's
    re-inference hands it each batch of new features (``Runner.infer_all``'s ``rows_out``) on the
    thread that made them, while they are in cache, so the re-layout (``update_local``, large
    scenes) does not read N x 4,096 floats again on one thread (0.3 s of a 50k re-layout).

    The arithmetic is ``Reduction.transform``'s (scikit-learn's PCA: ``x @ components.T`` less the
    mean's projection), batch by batch: the same numbers within float rounding (BLAS blocks rows
    differently in a smaller product; tested), and the same from run to run. No finiteness check
    here (the job checks the features after the pass and fails there).
    """

    def __init__(self, basis: Reduction, n: int) -> None:
        self.basis = basis
        self.rows = np.empty((n, basis.dims), np.float32)
        self._lock = threading.Lock()
        self._filled = 0
        pca = basis.pca
        if pca is not None:
            self._components_t = pca.components_.T
            self._offset = pca.mean_.reshape(1, -1) @ pca.components_.T
            if getattr(pca, "whiten", False):
                raise ValueError("a whitened PCA is not projected row by row")

    def __call__(self, start: int, features: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float32)
        if self.basis.pca is not None:
            reduced = x @ self._components_t
            reduced -= self._offset
        else:
            assert self.basis.mean is not None
            reduced = x - self.basis.mean
        self.rows[start : start + len(x)] = reduced
        with self._lock:
            self._filled += len(x)

    def reduction(self) -> Reduction | None:
        """The reduced rows with their basis, when every row was handed in (else None)."""
        if self._filled != len(self.rows):
            return None
        return Reduction(self.rows, self.basis.pca, self.basis.mean)


_REDUCTIONS: list[tuple[weakref.ref[np.ndarray], Reduction]] = []
_REDUCTIONS_KEPT = 2  # a job's base features and its result's


def remember_reduction(features: np.ndarray, reduction: Reduction) -> None:
    """Keep ``reduction`` for this very features array (by identity, not by value; dropped with
    it): the next fine-tune starts from these features and its preview reduces in their PCA."""
    if not isinstance(features, np.ndarray):
        return
    kept = [(ref, r) for ref, r in _REDUCTIONS if ref() is not None and ref() is not features]
    _REDUCTIONS[:] = [(weakref.ref(features), reduction), *kept][:_REDUCTIONS_KEPT]


def known_reduction(features: np.ndarray) -> Reduction | None:
    """The reduction remembered for this features array (the same object), if any."""
    for ref, reduction in _REDUCTIONS:
        if ref() is features:
            return reduction
    return None


def _is_fit(reduction: Reduction, features: np.ndarray) -> bool:
    """Whether ``reduction`` is the PCA fitted to ``features`` (remembered for that array)."""
    return reduction.fitted and known_reduction(features) is reduction


BH_THREADS_FROM = 1_000  # placed points from which ``FixedReferenceBH`` runs on ``n_jobs`` threads


class FixedReferenceBH:
    """openTSNE's Barnes-Hut KL gradient (``kl_divergence_bh``) for points placed against a held
    reference embedding, with the reference's tree built once (openTSNE builds it at every
    iteration: at 50,000 held cards that was a third of a local re-layout). Passed to
    ``PartialTSNEEmbedding`` as its ``negative_gradient_method`` (openTSNE accepts a callable).

    Fewer than ``BH_THREADS_FROM`` points (a head-only job moves one to a few dozen cards) are
    done on one thread whatever ``n_jobs`` says: the work is microseconds per point, while each
    of openTSNE's two OpenMP regions per iteration waits for its second thread to be scheduled,
    about 15 ms on a loaded two-core machine (1.2 of a 50k re-layout's 2.6 s at load 4). The
    gradient is the same bit for bit on any number of threads (each point's sums are its own;
    tested); only the optional KL value's summation order depends on them."""

    def __init__(self, reference: np.ndarray) -> None:
        self.reference = reference
        self.tree = QuadTree(reference)

    def __call__(
        self,
        embedding: np.ndarray,
        P: sp.csr_matrix,  # noqa: N803 - openTSNE's keyword
        dof: float,
        bh_params: dict[str, float],
        reference_embedding: np.ndarray | None = None,
        should_eval_error: bool = False,
        n_jobs: int = 1,
        **_: object,
    ) -> tuple[float, np.ndarray]:
        assert reference_embedding is None or reference_embedding is self.reference
        gradient = np.zeros_like(embedding, dtype=np.float64, order="C")
        n_jobs = n_jobs if len(embedding) >= BH_THREADS_FROM else 1
        sum_q = _tsne.estimate_negative_gradient_bh(
            self.tree,
            embedding,
            gradient,
            **bh_params,
            dof=dof,
            num_threads=n_jobs,
            pairwise_normalization=False,
        )
        sum_p, kl_divergence = _tsne.estimate_positive_gradient_nn(
            P.indices,
            P.indptr,
            P.data,
            embedding,
            self.reference,
            gradient,
            dof,
            num_threads=n_jobs,
            should_eval_error=should_eval_error,
        )
        if should_eval_error:
            kl_divergence += sum_p * np.log(sum_q + EPSILON)
        return float(kl_divergence), gradient


class Projector:
    """Fits and updates 3-D layouts; parameters come from the scene's ``[layout]`` table.

    ``n_jobs``: threads for openTSNE (None: every core this process may use). ``exact_below``:
    affinities from an exact neighbour search below this many points, approximate (annoy) above;
    the fine-tune's re-layout raises it, since openTSNE's exact search is several times faster
    than annoy below a few thousand points (the first layout keeps the default).
    """

    def __init__(
        self,
        config: LayoutConfig | None = None,
        n_jobs: int | None = None,
        exact_below: int = EXACT_AFFINITIES_BELOW,
    ) -> None:
        self.config = config or LayoutConfig()
        self.n_jobs = available_cores() if n_jobs is None else n_jobs
        self.exact_below = exact_below

    # --- pieces --------------------------------------------------------------------------------

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """PCA to ``pca_dims`` (or fewer when the features have fewer dimensions or points)."""
        return self.reduction(features).reduced

    def reduction(self, features: np.ndarray) -> Reduction:
        """``reduce``'s rows with the fitted PCA, which can reduce more rows the same way (a
        fine-tune's preview places its cards in the PCA of the layout on show)."""
        x = np.asarray(features, dtype=np.float32)
        dims = min(self.config.pca_dims, x.shape[1], max(len(x) - 1, 1))
        if dims >= x.shape[1]:
            mean = x.mean(0)
            centred: np.ndarray = (x - mean).astype(np.float32)
            return Reduction(centred, mean=mean, fitted=True)
        pca = PCA(n_components=dims, random_state=self.config.seed)
        if len(x) <= PCA_FIT_ROWS:
            reduced: np.ndarray = pca.fit_transform(x).astype(np.float32)
            return Reduction(reduced, pca=pca, fitted=True)
        # The leading components of 10,000 seeded rows are those of all rows to within sampling
        # noise far below what t-SNE resolves; fitting them costs a fifth at 50,000 rows.
        rows = np.sort(np.random.default_rng(self.config.seed).choice(len(x), PCA_FIT_ROWS, replace=False))
        projected: np.ndarray = pca.fit(x[rows]).transform(x).astype(np.float32)
        return Reduction(projected, pca=pca, fitted=True)

    def affinity_method(self, n_points: int) -> str:
        """openTSNE's neighbour search: exact below ``exact_below`` points, else annoy."""
        return "exact" if n_points < self.exact_below else "annoy"

    def affinities(self, reduced: np.ndarray) -> affinity.PerplexityBasedNN:
        perplexity = min(self.config.perplexity, max((len(reduced) - 1) / 3.0, 1.0))
        method = self.affinity_method(len(reduced))
        trees = self.schedule(len(reduced)).knn_trees
        return affinity.PerplexityBasedNN(
            reduced,
            perplexity=perplexity,
            n_jobs=self.n_jobs,
            random_state=self.config.seed,
            method=method,
            verbose=False,
            knn_kwargs={"n_trees": trees} if method == "annoy" else None,
        )

    def schedule(self, n_points: int) -> Schedule:
        """The optimisation schedule of a first layout of ``n_points`` cards."""
        return Schedule.for_points(self.config, n_points)

    def _optimise(
        self,
        init: np.ndarray,
        aff: affinity.PerplexityBasedNN,
        early: int,
        iterations: int,
        theta: float | None = None,
    ) -> TSNEEmbedding:
        emb = TSNEEmbedding(
            init,
            aff,
            negative_gradient_method="bh",
            theta=self.config.theta if theta is None else theta,
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
        reduction = self.reduction(features)
        remember_reduction(features, reduction)
        reduced = reduction.reduced
        aff = self.affinities(reduced)
        init = np.zeros((len(reduced), 3))
        init[:, : min(3, reduced.shape[1])] = reduced[:, :3]  # tiny sets have fewer PCA components
        init = init / (np.std(init[:, 0]) + 1e-12) * 1e-4  # openTSNE's recommended PCA init scale
        plan = self.schedule(len(reduced))
        emb = self._optimise(init, aff, plan.early_iterations, plan.iterations, plan.theta)
        raw = np.asarray(emb, dtype=np.float64)
        tsne: TSNEEmbedding | None = emb
        if self.config.align_axes:
            raw = principal_axes(raw)
            tsne = None  # the optimiser's copy is in the unturned frame: not to be reused
        center, scale, stretch, offset = self._normalisation(raw)
        state = LayoutState(raw, center, scale, offset, np.empty((0, 3)), reduced.shape[1], 0.0, tsne)
        state.stretch = stretch
        state.basis = reduction.basis()
        # For update_local: the neighbours the affinities were built from (no second search).
        state.neighbours = affinity_neighbours(aff, reduced, min(MOBILITY_K, len(reduced) - 1))
        if self._reuses(state, len(reduced)):
            # ... and the bounds that let the first drop's update skip most of its neighbour
            # search (``graph_step``): one search now, under a second of a minutes-long fit at 50k.
            # Measured on the rows every later reduction in this basis gives (``transform``),
            # which are remembered for the next update: below ``PCA_FIT_ROWS`` scikit-learn's
            # randomized ``fit_transform`` rows differ from them by its approximation error
            # (0.3-0.6 at 6,000 x 4,096, against neighbour distances near 8), which the bounds
            # would not allow for. t-SNE keeps the fitted rows: the layout is as before.
            rows = reduced
            if reduction.pca is not None and len(reduced) <= PCA_FIT_ROWS:
                rows = reduction.transform(features)
                remember_reduction(features, Reduction(rows, reduction.pca, reduction.mean, fitted=True))
            k = state.neighbours.shape[1]
            state.neighbour_gaps = graph_step(
                rows, rows, state.neighbours, k, graph_threads(self.n_jobs)
            ).gaps
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
        reduction = self.reduction(features)
        remember_reduction(features, reduction)
        reduced = reduction.reduced
        aff = self.affinities(reduced)
        init = previous.embedding.copy()
        old_nb = previous.neighbours
        if old_nb is not None and len(old_nb) == len(reduced) and len(reduced) > old_nb.shape[1]:
            # A card whose neighbourhood changed starts among its new neighbours (as in
            # update_local): with an exaggeration below 1 the attraction is too weak to carry
            # it across the world in a few warm-started iterations.
            new_nb = affinity_neighbours(aff, reduced, old_nb.shape[1])
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
        state.basis = reduction.basis()
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
        projected: Reduction | None = None,
    ) -> LayoutState:
        """Re-place only the cards whose feature-space neighbourhood changed (see the module doc).

        ``previous_features``: the features ``previous`` was made from (used where ``previous``
        carries no neighbour record); ``move``: indices of cards that move whatever their
        neighbourhood (the edited ones). Falls back to ``update`` (starting from ``anchors``) when
        most cards would move, or when the moving cards are mostly each other's new neighbours:
        placed only against the cards held still they would not attract one another, and a group
        that forms a new cluster would end up strewn along the edges of the old ones.

        ``projected``: ``features`` already reduced in ``local_basis(previous, previous_features)``
        (``RowProjection``, during the re-inference); used where that basis applies, else ignored.
        """
        start = time.perf_counter()
        n = len(features)
        k = min(MOBILITY_K, n - 1)
        graph = previous.neighbours
        if self._reuses(previous, n):
            assert graph is not None
            # Large scenes: the new features in the PCA of the previous layout (no refit), and
            # their neighbours found from its neighbour record (no new annoy index); together two
            # thirds of a 50k update. The result depends on the layouts and features alone; what
            # is remembered only saves time (``base_reduction``).
            prior = self.base_reduction(previous, previous_features)
            if projected is not None and len(projected.reduced) == n and projected.same_basis(prior):
                reduction = projected
            else:
                reduction = Reduction(prior.transform(features), prior.pca, prior.mean)
            gaps = previous.neighbour_gaps if previous.basis is not None else None
            step = graph_step(
                reduction.reduced, prior.reduced, graph, k, graph_threads(self.n_jobs), gaps, keep, move
            )
            new_nb = step.neighbours
        else:
            step = None
            reduction = self.reduction(features)
            new_nb = _knn(reduction.reduced, k, self.n_jobs)
        remember_reduction(features, reduction)  # the next job's base: its rows in its basis
        reduced = reduction.reduced
        old_nb = previous.neighbours
        if old_nb is None or old_nb.shape != new_nb.shape:
            old_nb = _knn(self.reduce(previous_features), k, self.n_jobs)
        free = neighbour_overlap(old_nb, new_nb) < keep
        if move is not None:
            free[np.asarray(move, dtype=np.int64)] = True
        n_iter = self.config.update_iterations if iterations is None else iterations
        grouped = bool(free.any()) and float(free[new_nb[free]].mean()) > LOCAL_MAX_GROUPED
        if free.sum() > LOCAL_MAX_FREE * n or grouped:
            if step is not None and step.settled.any():  # every card's new neighbours, searched
                new_nb = neighbours_from_graph(reduced, step.old, step.graph, k, graph_threads(self.n_jobs))
            state = self.update(features, previous, iterations=n_iter, anchors=anchors)
            state.neighbours, state.moved = new_nb, np.ones(n, dtype=bool)
            return state
        raw = previous.embedding.copy()
        free_idx, held_idx = np.flatnonzero(free), np.flatnonzero(~free)
        if len(free_idx):
            # Start where the updated network puts the card: among its new neighbours.
            placed = self._place_partial(
                reduced[free_idx], reduced[held_idx], raw[held_idx], k, n_iter, LOCAL_LEARNING_RATE
            )
            raw[free_idx] = placed
        neighbours = old_nb.copy()
        neighbours[free] = new_nb[free]
        state = previous.successor(raw, reduced.shape[1], neighbours=neighbours, moved=free)
        state.basis = reduction.basis()
        if step is not None:
            state.neighbour_gaps = step.gaps_after(free)
        state.seconds = time.perf_counter() - start
        return state

    def _reuses(self, previous: LayoutState, n: int) -> bool:
        """Whether ``update_local`` of ``n`` cards after ``previous`` reduces in its basis and
        finds the neighbours from its record (large scenes)."""
        graph = previous.neighbours
        k = min(MOBILITY_K, n - 1)
        return (
            n >= max(EXACT_KNN_BELOW, self.config.reuse_above) and graph is not None and graph.shape == (n, k)
        )

    def local_basis(self, previous: LayoutState, previous_features: np.ndarray) -> Reduction | None:
        """The basis ``update_local`` will reduce the new features in after ``previous`` (made
        from ``previous_features``), where it reuses one (``base_reduction``); None where it refits."""
        if not self._reuses(previous, len(previous_features)):
            return None
        return self.base_reduction(previous, previous_features)

    def base_reduction(self, layout: LayoutState, features: np.ndarray) -> Reduction:
        """``features`` (those ``layout`` was made from) reduced in ``layout``'s PCA, or, when the
        layout does not carry one, in the PCA fitted to them; remembered for the array, and taken
        from there when it was reduced the same way (the same numbers either way)."""
        known = known_reduction(features)
        basis = layout.basis
        if basis is None:
            if known is not None and len(known.reduced) == len(features) and _is_fit(known, features):
                return known
            fitted = self.reduction(features)
            remember_reduction(features, fitted)
            return fitted
        if known is not None and len(known.reduced) == len(features) and known.same_basis(basis):
            return known
        reduced = Reduction(basis.transform(features), basis.pca, basis.mean)
        remember_reduction(features, reduced)
        return reduced

    def place(self, features: np.ndarray, layout: LayoutState, layout_features: np.ndarray) -> np.ndarray:
        """World positions of new cards (``features``) in ``layout``, which was made from
        ``layout_features``; the layout's cards do not move. See ``placer``."""
        return self.placer(layout, layout_features)(features)

    def placer(self, layout: LayoutState, layout_features: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A function that places blocks of new cards in ``layout`` (made from ``layout_features``)
        and returns their world positions; the layout's cards do not move.

        openTSNE's ``transform`` procedure (Poličar et al.): each new card starts at the median
        position of its nearest laid-out cards and is optimised against them alone, held still,
        with transform's learning rate 0.1, exaggeration 1.5 and gradient clipping. Only the new
        cards' affinity rows are computed (``conditional_affinities``, transform's perplexity 5,
        median over 25 neighbours), so no affinity matrix of the laid-out cards is rebuilt. The
        new cards are expressed in the PCA fitted to ``layout_features`` (fitted once here, for
        every block). Cost per iteration (``update_iterations``) grows with the new cards times
        the log of the laid-out ones.
        """
        x = np.asarray(layout_features, dtype=np.float32)
        dims = min(self.config.pca_dims, x.shape[1], max(len(x) - 1, 1))
        mean = x.mean(0)
        pca = None if dims >= x.shape[1] else PCA(n_components=dims, random_state=self.config.seed).fit(x)
        ref = x - mean if pca is None else pca.transform(x)

        def place(features: np.ndarray) -> np.ndarray:
            new = np.asarray(features, dtype=np.float32)
            if len(new) == 0:
                return np.empty((0, 3), np.float32)
            pts = new - mean if pca is None else pca.transform(new)
            raw = self._place_partial(
                pts,
                ref,
                layout.embedding,
                25,
                self.config.update_iterations,
                0.1,
                perplexity=5.0,
                exaggeration=1.5,
            )
            return layout.to_world(raw)

        return place

    def _place_partial(
        self,
        points: np.ndarray,
        reference: np.ndarray,
        reference_raw: np.ndarray,
        k: int,
        iterations: int,
        learning_rate: float,
        perplexity: float | None = None,
        exaggeration: float | None = None,
    ) -> np.ndarray:
        """t-SNE coordinates of ``points`` (reduced features) placed against the ``reference``
        rows (reduced features, at ``reference_raw``), which are held still: each point starts at
        the median of its ``k`` nearest reference rows' positions and is optimised with openTSNE's
        ``PartialTSNEEmbedding`` (interactions among the placed points ignored)."""
        wanted = self.config.perplexity if perplexity is None else perplexity
        perplexity = min(wanted, max((len(reference) - 1) / 3.0, 1.0))
        rows, near = conditional_affinities(points, reference, perplexity)
        if near.shape[1] < k:  # transform's median looks further than its perplexity's neighbours
            near = (
                NearestNeighbors(n_neighbors=min(k, len(reference)))
                .fit(reference)
                .kneighbors(points, return_distance=False)
            )
        init = np.median(reference_raw[near[:, :k]], axis=1)
        return self._optimise_partial(init, reference_raw, rows, iterations, learning_rate, exaggeration)

    def _optimise_partial(
        self,
        init: np.ndarray,
        reference_raw: np.ndarray,
        rows: sp.csr_matrix,
        iterations: int,
        learning_rate: float,
        exaggeration: float | None = None,
    ) -> np.ndarray:
        """openTSNE's ``PartialTSNEEmbedding`` of points starting at ``init`` with affinity rows
        ``rows`` to the held ``reference_raw`` points. The held points never move, so their
        Barnes-Hut tree is built once (``FixedReferenceBH``), not at every iteration as openTSNE's
        own gradient does: the same tree, so the same numbers bit for bit."""
        held = np.ascontiguousarray(reference_raw, dtype=np.float64)
        base = TSNEEmbedding(
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
            base,
            rows,
            negative_gradient_method=FixedReferenceBH(base),
            theta=self.config.theta,
            n_jobs=self.n_jobs,
        )
        if iterations:
            partial = partial.optimize(
                iterations,
                learning_rate=learning_rate,
                exaggeration=self.config.exaggeration if exaggeration is None else exaggeration,
                momentum=0.8,
                max_grad_norm=0.25,
            )
        return np.asarray(partial, dtype=np.float64)

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
    centred: np.ndarray = raw - raw.mean(0)
    if len(raw) < 3:
        return centred
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    rotation = vt.T
    if np.linalg.det(rotation) < 0:
        rotation[:, -1] *= -1
    turned: np.ndarray = centred @ rotation
    return turned


def align(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate, uniformly scale and shift ``moving`` onto ``target`` (orthogonal Procrustes)."""
    mu_m, mu_t = moving.mean(0), target.mean(0)
    a, b = moving - mu_m, target - mu_t
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))  # no reflections: a mirrored world would confuse people
    correction = np.diag([1.0] * (a.shape[1] - 1) + [d])
    rotation = u @ correction @ vt
    scale = float((s * np.diag(correction)).sum() / max((a**2).sum(), 1e-12))
    aligned: np.ndarray = (a @ rotation) * scale + mu_t
    return aligned


def _knn(x: np.ndarray, k: int, n_jobs: int = 1, exact: bool | None = None) -> np.ndarray:
    """Each row's ``k`` nearest other rows (Euclidean), nearest first.

    Exact below ``EXACT_KNN_BELOW`` rows (or when ``exact``); above, openTSNE's annoy (the search
    its affinities use), whose cost grows as N log N where brute force grows with N squared.
    Annoy is asked for ``3 k`` candidates (its search widens with the number asked): the ``k``
    nearest of them agree with the exact ones for ~0.99 of the neighbours (0.88 when asked for
    only ``k``; measured on 8,000 clustered 50-d points), and no row falls below one half.
    """
    if exact is None:
        exact = len(x) < EXACT_KNN_BELOW
    if exact or 3 * k + 1 >= len(x):
        nearest: np.ndarray = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
        return nearest[:, 1:]
    index = Annoy(
        np.ascontiguousarray(x, dtype=np.float32),
        3 * k,
        metric="euclidean",
        n_jobs=n_jobs,
        random_state=0,
        knn_kwargs={"n_trees": LARGE_KNN_TREES},
    )
    return np.asarray(index.build()[0][:, :k], dtype=np.int64)


GRAPH_STEPS = 1  # NN-descent steps (a second found 0.2 % more of the exact neighbours for twice the time)
GRAPH_BLOCK = 512  # rows per block of ``neighbours_from_graph``'s candidate distances (11 MB at
# 50 dims: 2,048 rows' 45 MB cost 2.6x the time, in page faults and cache misses)
GRAPH_FAR = 0.5  # of the distance to its k-th old neighbour: a card moved further is searched afresh
GRAPH_MAX_FAR = 0.05  # more cards moved that far than this fraction: a fresh search of all (annoy)


GRAPH_THREADS = 2  # threads of ``update_local``'s neighbour step at least (as the re-inference's)


def graph_threads(n_jobs: int) -> int:
    """Threads of ``update_local``'s neighbour step: ``n_jobs``, but at least ``GRAPH_THREADS``
    where the cores allow. The job process runs the layout on one thread (the frame loop keeps a
    core); this step is a few tenths of a second of a 50k drop's path right after the re-inference,
    which takes two threads too, and its result is the same bit for bit on any number of threads."""
    return max(n_jobs, min(GRAPH_THREADS, available_cores()))


def neighbours_from_graph(
    new: np.ndarray, old: np.ndarray, graph: np.ndarray, k: int, threads: int = 1
) -> np.ndarray:
    """Each row's ``k`` nearest other rows of ``new`` (nearest first), found among its ``graph``
    neighbours and theirs, in the same space as ``old`` (the features before, in the same PCA).

    Why: after a head-only fine-tune almost every card moved a tiny fraction of its neighbourhood's
    size, so its new nearest neighbours are among its old ones and their neighbours (k + k^2
    candidates, one step of NN-descent, Dong et al. 2011); measuring those costs a fraction of an
    annoy index over every card (1.1 s of the 3 s update at 20k on one core). A card that moved
    further than ``GRAPH_FAR`` of the distance to its k-th old neighbour (the edited ones) is
    searched exactly among all, and is offered as a candidate to the cards it now neighbours.
    When more than ``GRAPH_MAX_FAR`` of the cards moved that far, every card is searched afresh.
    ``threads``: the blocks of rows are shared among this many threads (numpy's gathers, sums and
    sorts let go of the GIL); each block's rows are its own, so the result is the same bit for bit.
    """
    return graph_step(new, old, graph, k, threads).neighbours


@dataclass
class NeighbourGaps:
    """Per card, lower bounds on its distances to the candidates of its next neighbour search that
    are not its neighbours ("outsiders"): the ``GAP_NEAR`` nearest outsiders at the last search
    with a bound each, and one bound for every other outsider. Kept by the layout between local
    updates (``LayoutState.neighbour_gaps``) so that ``graph_step`` can skip the cards whose fate
    the bounds already decide. 8 bytes x GAP_NEAR + 5 per card: 8.3 MB at 50k."""

    near: np.ndarray  # (n, GAP_NEAR) int32: outsiders (an index of -1: none)
    bound: np.ndarray  # (n, GAP_NEAR) float32: a lower bound on the distance to each
    rest: np.ndarray  # (n,) float32: a lower bound on the distance to every other outsider
    known: np.ndarray  # (n,) bool: the row's bounds hold (its candidates unchanged since)

    @staticmethod
    def unknown(n: int) -> NeighbourGaps:
        return NeighbourGaps(
            np.full((n, GAP_NEAR), -1, np.int32),
            np.full((n, GAP_NEAR), np.inf, np.float32),
            np.full(n, np.inf, np.float32),
            np.zeros(n, dtype=bool),
        )


GAP_NEAR = 20  # outsiders bounded one by one per card (the rest share one bound)
GAP_SLACK = 1e-3  # of a bound: what float rounding between a job's rows and the next one's could move
GAP_ROUNDING = 1e-6  # of the largest row's norm, off every bound at every step (float32 rounding)


@dataclass
class GraphStep:
    """What ``graph_step`` found: the new neighbours of the rows it searched, which rows it showed
    need no search, and the bounds that let the next step show it again."""

    neighbours: np.ndarray  # (n, k); a settled row holds its ``graph`` row, not a search's result
    settled: np.ndarray  # (n,) bool: shown to keep at least ``keep`` of its graph row; not searched
    gaps: NeighbourGaps  # the bounds after this step, for ``graph``'s rows
    graph: np.ndarray = field(repr=False)  # the step's graph (the rows' neighbours before it)
    old: np.ndarray = field(repr=False)  # the rows before it (``graph_step``'s ``old``)

    def gaps_after(self, moved: np.ndarray) -> NeighbourGaps:
        """The bounds for the next step once the ``moved`` rows take their new neighbours: a
        row's candidates change when its own row or one of its neighbours' rows does, so its
        bounds are forgotten there."""
        if not moved.any():
            return self.gaps
        known = self.gaps.known & ~(moved | moved[self.graph].any(axis=1))
        return dataclasses.replace(self.gaps, known=known)


def graph_step(
    new: np.ndarray,
    old: np.ndarray,
    graph: np.ndarray,
    k: int,
    threads: int = 1,
    gaps: NeighbourGaps | None = None,
    keep: float | None = None,
    search: np.ndarray | None = None,
) -> GraphStep:
    """``neighbours_from_graph``, searching only the rows it cannot show to keep ``keep`` of their
    ``graph`` neighbours (``update_local``'s test), where the previous step left ``gaps``.

    Why: the step's candidate distances (k + k^2 per card, 0.7 CPU s at 50k) are the largest part
    of a 50k re-layout, for a result that re-places about one card per drop. A search keeps at
    least ``m = ceil(keep k)`` of a row's neighbours when its ``m``-th nearest neighbour (``k``
    distances, measured) is nearer than all but ``k - m`` of the other candidates. Those are
    bounded without measuring them: each was at least its bound away before (measured by the
    previous search, or bounded then), less how far the row and the candidate moved since
    (the triangle inequality). Where the bounds decide, the row's test says "stays", as the
    search's would, and a staying row keeps its old neighbours: the re-layout is the same bit for
    bit (tested). Rows in ``search`` (the edited ones), rows that moved far, and the rows a far
    one is offered to are always searched. On a 50k drop path's real updates 41-99 % of the rows
    settled.
    """
    n = len(new)
    graph = np.asarray(graph, dtype=np.int64)
    moved_by = np.linalg.norm(new - old, axis=1)
    radius = np.linalg.norm(old - old[graph[:, -1]], axis=1)
    far = np.flatnonzero(moved_by > GRAPH_FAR * radius)
    if len(far) > GRAPH_MAX_FAR * n:
        return GraphStep(_knn(new, k), np.zeros(n, dtype=bool), NeighbourGaps.unknown(n), graph, old)
    settled, after = _settled_rows(new, graph, moved_by, gaps, keep, k, threads)
    must = np.zeros(n, dtype=bool)
    must[far] = True
    if search is not None:
        must[np.asarray(search, dtype=np.int64)] = True
    if len(far):
        far_dist, far_near = NearestNeighbors(n_neighbors=k + 1).fit(new).kneighbors(new[far])
        must[far_near.ravel()] = True
    settled &= ~must
    out = graph.copy()
    best = np.zeros((n, k), dtype=np.float32)
    rows = np.flatnonzero(~settled)
    for step in range(GRAPH_STEPS):
        source = graph if step == 0 else out.copy()

        def block(s: int, source: np.ndarray = source, first: bool = step == 0) -> None:
            at = rows[s : s + GRAPH_BLOCK]
            near = source[at]
            cand = np.sort(np.concatenate([near, source[near].reshape(len(at), -1)], axis=1), axis=1)
            # ((new[cand] - new[at][:, None, :]) ** 2).sum(2) in one buffer (the same floats).
            diff = np.take(new, cand, axis=0)
            np.subtract(diff, new[at][:, None, :], out=diff)
            np.square(diff, out=diff)
            d = diff.sum(2)
            d[cand == at[:, None]] = np.inf  # not itself
            d[:, 1:][cand[:, 1:] == cand[:, :-1]] = np.inf  # each candidate once
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            out[at] = np.take_along_axis(cand, order, 1)
            best[at] = np.take_along_axis(d, order, 1)
            if first and GRAPH_STEPS == 1:
                _measure_gaps(after, at, cand, d, near)

        in_threads(block, range(0, len(rows), GRAPH_BLOCK), threads)
    if len(far):
        for row, found, found_d in zip(far, far_near, far_dist, strict=True):
            keep_row = found != row
            out[row], best[row] = found[keep_row][:k], (found_d[keep_row][:k] ** 2)
        for row, found, found_d in zip(far, far_near, far_dist, strict=True):
            # The far card is a candidate for the cards it now neighbours.
            for other, d2 in zip(found, found_d**2, strict=True):
                if other == row or row in out[other] or d2 >= best[other, -1]:
                    continue
                at = int(np.searchsorted(best[other], d2))
                out[other] = np.insert(out[other], at, row)[:k]
                best[other] = np.insert(best[other], at, d2)[:k]
    return GraphStep(out, settled, after, graph, old)


def _measure_gaps(
    gaps: NeighbourGaps, at: np.ndarray, cand: np.ndarray, d: np.ndarray, near: np.ndarray
) -> None:
    """The searched rows ``at``'s bounds from their sorted candidates ``cand`` and squared
    distances ``d`` (self and repeats already infinite; overwritten): the outsiders' distances as
    measured."""
    rows, width = cand.shape
    # Each neighbour's first place among the row's sorted candidates (rows offset apart, so one
    # sorted run): the neighbours are not outsiders (their repeats are infinite already).
    span = int(cand.max()) + 1 if cand.size else 1
    offset = (np.arange(rows, dtype=np.int64) * span)[:, None]
    place = np.searchsorted((cand + offset).ravel(), (near + offset).ravel())
    d.ravel()[place] = np.inf
    q = min(GAP_NEAR, width)
    nearest = np.argpartition(d, q - 1, axis=1)[:, :q]
    taken = np.take_along_axis(d, nearest, 1)
    gaps.near[at, :q] = np.where(np.isfinite(taken), np.take_along_axis(cand, nearest, 1), -1)
    gaps.bound[at, :q] = np.sqrt(taken)
    np.put_along_axis(d, nearest, np.inf, 1)
    gaps.rest[at] = np.sqrt(d.min(axis=1))
    gaps.known[at] = True


def _settled_rows(
    new: np.ndarray,
    graph: np.ndarray,
    moved_by: np.ndarray,
    gaps: NeighbourGaps | None,
    keep: float | None,
    k: int,
    threads: int = 1,
) -> tuple[np.ndarray, NeighbourGaps]:
    """Rows whose ``m = ceil(keep k)`` nearest graph neighbours provably beat all but ``k - m`` of
    their search's other candidates (see ``graph_step``), and the bounds after this step where
    they are known (the searched rows' are measured by the search)."""
    n = len(new)
    settled = np.zeros(n, dtype=bool)
    after = NeighbourGaps.unknown(n)
    if gaps is None or keep is None or len(gaps.known) != n or graph.shape != (n, k):
        return settled, after
    known = np.flatnonzero(gaps.known)
    m = next((h for h in range(k + 1) if h / k >= keep), k + 1)  # ``neighbour_overlap``'s test
    if not len(known) or m > k:
        return settled, after
    # Each outsider's bound less both moves; every other outsider (a neighbour's neighbour) moved
    # at most as far as the furthest of those.
    near = gaps.near[known]
    moved_near = np.where(near >= 0, moved_by[np.maximum(near, 0)], 0.0)
    # Float rounding between one job's rows and the next one's old rows (the same arithmetic by
    # default, a transform's rounding where the rows were projected batch by batch), per step.
    rounding = GAP_ROUNDING * float(np.linalg.norm(new, axis=1).max()) if len(new) else 0.0
    bound = gaps.bound[known] - moved_by[known, None] - moved_near - rounding
    reach = moved_by[graph].max(axis=1)[graph[known]].max(axis=1)  # over neighbours' neighbours
    rest = gaps.rest[known] - moved_by[known] - reach - rounding
    after.near[known], after.bound[known], after.rest[known] = near, bound, rest
    after.known[known] = True
    if m <= 0:
        settled[known] = True
        return settled, after
    # The (k - m + 1)-th nearest outsider is at least this far: k - m outsiders may come closer.
    others = np.concatenate([bound, np.repeat(rest[:, None], k - m + 1, axis=1)], axis=1)
    floor = np.partition(others, k - m, axis=1)[:, k - m]
    mth = np.empty(len(known), dtype=np.float32)

    def block(s: int) -> None:
        at = known[s : s + GRAPH_BLOCK]
        diff = np.take(new, graph[at], axis=0)
        np.subtract(diff, new[at][:, None, :], out=diff)
        to_graph = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        # A row may list itself (annoy keeps a duplicate's twin and drops itself, or the other
        # way round); the search never keeps it, so it cannot count among the ``m``.
        to_graph[graph[at] == at[:, None]] = np.inf
        mth[s : s + len(at)] = np.partition(to_graph, m - 1, axis=1)[:, m - 1]

    in_threads(block, range(0, len(known), GRAPH_BLOCK), threads)
    settled[known] = mth < floor * (1.0 - GAP_SLACK)
    return settled, after


def in_threads(work: Callable[[int], None], items: range, threads: int) -> None:
    """``work(item)`` for every item, shared among ``threads`` threads (1: here, in order); the
    first error is raised once all have stopped."""
    if threads <= 1 or len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        for done in [pool.submit(work, item) for item in items]:
            done.result()


def affinity_neighbours(aff: affinity.PerplexityBasedNN, x: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest neighbours of each row of ``x`` that openTSNE found for ``aff`` (nearest
    first), or a search of their own where openTSNE kept too few."""
    found = getattr(aff, "_PerplexityBasedNN__neighbors", None)  # set by the build; no public name
    if found is not None and found.shape[0] == len(x) and found.shape[1] >= k:
        return np.asarray(found[:, :k], dtype=np.int64)
    return _knn(x, k)


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the fraction of the indices in ``a`` that are also in ``b``.

    Vectorised: each row of ``a`` and of ``b`` holds distinct indices, so after sorting the two
    rows side by side, every index they share appears twice in a row and nothing else does.
    """
    if len(a) == 0:
        return np.zeros(0)
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    hits = np.count_nonzero(both[:, 1:] == both[:, :-1], axis=1)
    overlap: np.ndarray = hits / max(a.shape[1], 1)
    return overlap


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
    """Per point, the fraction of its ``k`` nearest neighbours in ``a`` kept in ``b`` (exact
    searches: a measure, not a step of the layout)."""
    k = min(k, len(a) - 1)
    return neighbour_overlap(_knn(a, k, exact=True), _knn(b, k, exact=True))
