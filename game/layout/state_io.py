"""A ``LayoutState`` as named arrays and back: the one pair of functions every store uses.

The layout cache (``pipeline``), the session file's starting layout (``sessions.recorder``) and
its restore (``sessions.restore``) each used to write their own keys; now they all call these,
with a ``prefix`` where the arrays share a table with others (sessions: ``"layout_"``). The
openTSNE object and ``moved`` are not stored (large, and rebuilt or meaningless after loading).

The layout cache also stores what lets the first drop after a launch skip most of its neighbour
search (``search_state``): the PCA the layout was reduced in and the neighbour bounds
(``NeighbourGaps``) measured in it. Without them a cached 50,000-card scene's first re-layout
searched every card (about 0.8 CPU s more than the drops after it, docs/benchmarks.md, issue 17).
Sessions store the PCA alone (``basis=True``, where the layout has bounds, i.e. a large scene):
the live jobs reduce in it, so a replay must too (a refit below ``PCA_FIT_ROWS`` gives scikit-learn's
randomized ``fit_transform`` rows, not the same rows); the bounds (8 MB at 50k) only save time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
from sklearn.decomposition import PCA

from game.layout.projector import GAP_NEAR, LayoutState, NeighbourGaps, Reduction

# Keys of the search state (without the prefix).
_BASIS_COMPONENTS, _BASIS_MEAN, _BASIS_VARIANCE = "basis_components", "basis_mean", "basis_variance"
_GAPS = ("gaps_near", "gaps_bound", "gaps_rest", "gaps_known")


def layout_to_arrays(
    layout: LayoutState,
    prefix: str = "",
    positions: bool = True,
    search_state: bool = False,
    basis: bool = False,
) -> dict[str, np.ndarray]:
    """The fitted numbers of ``layout`` by name; ``positions=False`` leaves the world positions
    out (a session stores them once, as the starting workspace's); ``search_state`` adds the PCA
    and the neighbour bounds where the layout has both (the layout cache), ``basis`` the PCA
    alone, where it has both (a session)."""
    out = {
        "embedding": np.asarray(layout.embedding),
        "center": np.asarray(layout.center),
        "scale": np.asarray(float(layout.scale)),
        "offset": np.asarray(layout.offset),
        "pca_dims": np.asarray(int(layout.pca_dims)),
        "stretch": np.asarray(layout.stretch, dtype=np.float64),  # per-axis scale factors
    }
    if positions:
        out["positions"] = np.asarray(layout.positions, dtype=np.float32)
    if layout.neighbours is not None:
        out["neighbours"] = np.asarray(layout.neighbours)
    if search_state or basis:
        state = _search_state_to_arrays(layout)
        out.update(state if search_state else {k: v for k, v in state.items() if k not in _GAPS})
    return {prefix + k: v for k, v in out.items()}


def layout_from_arrays(
    arrays: Mapping[str, np.ndarray], prefix: str = "", positions: np.ndarray | None = None
) -> LayoutState:
    """The ``LayoutState`` that ``layout_to_arrays`` stored; ``positions`` when they were left out.
    A missing key raises ``KeyError``; a search state that does not fit the layout, ``ValueError``
    (the caller treats the file as damaged)."""

    get = functools.partial(_stored, arrays, prefix)

    world = get("positions") if positions is None else positions
    neighbours = arrays.get(prefix + "neighbours")
    stretch = arrays.get(prefix + "stretch")  # absent in files from before it existed: uniform
    state = LayoutState(
        embedding=get("embedding"),
        center=get("center"),
        scale=float(get("scale")),
        offset=get("offset"),
        positions=np.asarray(world, dtype=np.float32),
        pca_dims=int(get("pca_dims")),
        neighbours=None if neighbours is None else np.asarray(neighbours),
        stretch=np.ones(3) if stretch is None else np.asarray(stretch, dtype=np.float64),
    )
    if prefix + _GAPS[0] in arrays:
        state.basis, state.neighbour_gaps = _search_state_from_arrays(arrays, prefix, state)
    elif prefix + _BASIS_MEAN in arrays:
        state.basis = _basis_from_arrays(arrays, prefix, state)
    return state


def _search_state_to_arrays(layout: LayoutState) -> dict[str, np.ndarray]:
    """The layout's PCA and neighbour bounds by name; nothing where it lacks either, or where its
    PCA whitens (``Projector`` never fits one that does; ``Reduction.transform`` would need more)."""
    basis, gaps = layout.basis, layout.neighbour_gaps
    if basis is None or gaps is None or (basis.pca is not None and basis.pca.whiten):
        return {}
    if basis.pca is not None:
        out = {
            _BASIS_COMPONENTS: np.asarray(basis.pca.components_),
            _BASIS_MEAN: np.asarray(basis.pca.mean_),
            _BASIS_VARIANCE: np.asarray(basis.pca.explained_variance_),
        }
    elif basis.mean is not None:
        out = {_BASIS_MEAN: np.asarray(basis.mean)}
    else:
        return {}
    near, bound, rest, known = _GAPS
    out.update({near: gaps.near, bound: gaps.bound, rest: gaps.rest, known: gaps.known})
    return out


def _search_state_from_arrays(
    arrays: Mapping[str, np.ndarray], prefix: str, state: LayoutState
) -> tuple[Reduction, NeighbourGaps]:
    """``_search_state_to_arrays``' basis and bounds, checked against the layout they belong to:
    bounds that claimed too much would let a card keep neighbours a search would change, so a
    file whose shapes, types or values cannot be such bounds is refused, not half used."""
    n = len(state.embedding)

    get = functools.partial(_stored, arrays, prefix)

    near, bound, rest, known = (get(name) for name in _GAPS)
    if (
        near.shape != (n, GAP_NEAR)
        or bound.shape != (n, GAP_NEAR)
        or rest.shape != (n,)
        or known.shape != (n,)
        or near.dtype != np.int32
        or bound.dtype != np.float32
        or rest.dtype != np.float32
        or known.dtype != np.bool_
    ):
        raise ValueError("the stored neighbour bounds do not fit the layout")
    if (
        near.min(initial=-1) < -1
        or near.max(initial=-1) >= n
        or np.isnan(bound).any()
        or np.isnan(rest).any()
    ):
        raise ValueError("the stored neighbour bounds hold impossible values")
    if (bound < 0).any() or (rest < 0).any():
        raise ValueError("the stored neighbour bounds hold negative distances")
    return _basis_from_arrays(arrays, prefix, state), NeighbourGaps(near, bound, rest, known)


def _basis_from_arrays(arrays: Mapping[str, np.ndarray], prefix: str, state: LayoutState) -> Reduction:
    """The stored PCA (or centring) the layout was reduced in, checked against the layout."""

    get = functools.partial(_stored, arrays, prefix)

    mean = get(_BASIS_MEAN)
    if prefix + _BASIS_COMPONENTS not in arrays:
        if (
            mean.ndim != 1
            or mean.shape[0] != state.pca_dims
            or mean.dtype.kind != "f"
            or not np.isfinite(mean).all()
        ):
            raise ValueError("the stored centring does not fit the layout")
        return Reduction(np.empty((0, len(mean)), np.float32), mean=mean)
    components, variance = get(_BASIS_COMPONENTS), get(_BASIS_VARIANCE)
    dims = state.pca_dims
    if (
        components.ndim != 2
        or components.shape[0] != dims
        or mean.shape != (components.shape[1],)
        or variance.shape != (dims,)
        or components.dtype.kind != "f"
        or mean.dtype != components.dtype
        or variance.dtype != components.dtype
        or not (np.isfinite(components).all() and np.isfinite(mean).all() and np.isfinite(variance).all())
        or (variance < 0).any()
    ):
        raise ValueError("the stored PCA does not fit the layout")
    return Reduction(np.empty((0, dims), np.float32), pca=pca_from_arrays(components, mean, variance))


def _stored(arrays: Mapping[str, np.ndarray], prefix: str, name: str) -> np.ndarray:
    """One stored array by its name without the prefix (``KeyError`` when missing)."""
    return np.asarray(arrays[prefix + name])


def pca_from_arrays(components: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> PCA:
    """A fitted scikit-learn ``PCA`` (no whitening) from its components, mean and variances: its
    ``transform`` reads exactly these (``x @ components.T`` less the mean's projection), so it
    reduces bit for bit as the PCA they were taken from (tested)."""
    pca = PCA(n_components=len(components))
    pca.components_ = components
    pca.mean_ = mean
    pca.explained_variance_ = variance
    pca.n_components_ = len(components)
    pca.n_features_in_ = components.shape[1]
    try:  # a scikit-learn that wants more of a fitted PCA fails here (a refit), not at a drop
        pca.transform(np.zeros((1, components.shape[1]), components.dtype))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"this scikit-learn cannot use the stored PCA ({exc})") from None
    return pca
