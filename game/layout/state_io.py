"""A ``LayoutState`` as named arrays and back: the one pair of functions every store uses.

The layout cache (``pipeline``), the session file's starting layout (``sessions.recorder``) and
its restore (``sessions.restore``) each used to write their own keys; now they all call these,
with a ``prefix`` where the arrays share a table with others (sessions: ``"layout_"``). The
openTSNE object and ``moved`` are not stored (large, and rebuilt or meaningless after loading).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from game.layout.projector import LayoutState


def layout_to_arrays(layout: LayoutState, prefix: str = "", positions: bool = True) -> dict[str, np.ndarray]:
    """The fitted numbers of ``layout`` by name; ``positions=False`` leaves the world positions
    out (a session stores them once, as the starting workspace's)."""
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
    return {prefix + k: v for k, v in out.items()}


def layout_from_arrays(
    arrays: Mapping[str, np.ndarray], prefix: str = "", positions: np.ndarray | None = None
) -> LayoutState:
    """The ``LayoutState`` that ``layout_to_arrays`` stored; ``positions`` when they were left out.
    A missing key raises ``KeyError``."""

    def get(name: str) -> np.ndarray:
        return np.asarray(arrays[prefix + name])

    world = get("positions") if positions is None else positions
    neighbours = arrays.get(prefix + "neighbours")
    stretch = arrays.get(prefix + "stretch")  # absent in files from before it existed: uniform
    return LayoutState(
        embedding=get("embedding"),
        center=get("center"),
        scale=float(get("scale")),
        offset=get("offset"),
        positions=np.asarray(world, dtype=np.float32),
        pca_dims=int(get("pca_dims")),
        neighbours=None if neighbours is None else np.asarray(neighbours),
        stretch=np.ones(3) if stretch is None else np.asarray(stretch, dtype=np.float64),
    )
