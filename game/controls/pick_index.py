"""A uniform grid over the card centres, so picking costs the same at 2k and at 50k cards.

Testing both controller tips and both lasers against every card costs milliseconds per VR frame
at 20k-50k cards (out of an 11.1 ms frame at 90 Hz). ``PickIndex`` sorts the cards once into
cells (a counting-sort order and one start offset per cell, all numpy) and answers the same two
questions as ``hand.pick_nearest`` and ``hand.pick_ray`` by testing only the cards in the cells
near the point or along the ray, with the same arithmetic, so the answers are the brute force's.

Cards move (tweens after a fine-tune, the carried card). The index is not rebuilt for every
move: ``refresh`` measures how far any card is from where it was indexed (one vectorised max),
queries widen their search by that slack and test the cards' *current* positions. Cards that
moved further than half a cell are "loose": up to ``MAX_LOOSE`` of them (the carried card, a
dropped one) are tested one by one with every query; more than that (a tween) rebuilds the grid.
Still scenes cost one comparison per frame; a tween costs a rebuild every few frames.

No panda3d: plain numpy, testable and benchmarkable alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from game.controls.hand import pick_nearest, pick_ray

PositionsSource = Callable[[], np.ndarray]
MAX_CELLS_PER_AXIS = 40  # 40**3 cells fit a uint16 key: a linear-time (radix) sort
MAX_LOOSE = 64  # moved cards tested one by one before the grid is rebuilt
BRUTE_BELOW = 4096  # fewer cards: one vectorised pass over all of them is cheaper than the grid
SQRT3 = 1.7320509  # per-axis max -> distance bound


class PickIndex:
    """Nearest card to a point and first card along a ray, over a grid of ``positions()``.

    ``min_cell`` (metres) is the smallest cell edge; pass the largest pick radius (the touch
    radius) so a query looks at no more than 3x3x3 cells. ``auto`` (default) checks for moved
    cards on every query; a caller that queries several times per frame (two VR hands) sets it
    False and calls ``refresh()`` once per frame.
    """

    def __init__(
        self,
        positions: PositionsSource,
        min_cell: float | Callable[[], float] = 0.1,
        *,
        auto: bool = True,
        rebuild_fraction: float = 0.5,
    ) -> None:
        self._positions = positions
        self._min_cell = min_cell
        self.auto = auto
        self.rebuild_fraction = rebuild_fraction
        self.builds = 0  # tests and benchmarks: how often the grid was rebuilt
        self.slack = 0.0  # how far any card may be from its indexed cell (metres)
        self.last_candidates = 0  # cards tested by the last query (benchmarks)
        self._loose = np.zeros(0, dtype=np.int64)  # moved too far from their cell: tested always
        self._indexed: np.ndarray | None = None  # positions when built (a copy)
        self._source_id = 0
        self.cell = 0.0
        self._lo = np.zeros(3, dtype=np.float32)
        self._dims = np.ones(3, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._starts = np.zeros(1, dtype=np.int64)
        self._strides = np.array([1, 1, 1], dtype=np.int64)
        self._offsets: dict[int, np.ndarray] = {}  # neighbour offsets in key space, by reach in cells

    # --- building -------------------------------------------------------------------------------

    @property
    def min_cell(self) -> float:
        return float(self._min_cell() if callable(self._min_cell) else self._min_cell)

    def refresh(self) -> np.ndarray:
        """Compare the cards with the indexed copy; rebuild when they moved too far. Returns them."""
        p = self._positions()
        old = self._indexed
        if old is None or id(p) != self._source_id or len(p) != len(old) or self.cell < self.min_cell:
            self._build(p)
            return p
        if not len(p):
            return p
        if np.array_equal(p, old):  # the common case: nothing moved (one compare, no temporaries)
            self.slack, self._loose = 0.0, self._loose[:0]
            return p
        limit = self.rebuild_fraction * self.cell
        deviation = np.abs(p - old)
        drift = float(deviation.max())
        if drift <= limit:
            self.slack, self._loose = drift * SQRT3, self._loose[:0]
            return p
        loose = np.flatnonzero(deviation.max(axis=1) > limit)
        if len(loose) > MAX_LOOSE:
            self._build(p)
        else:
            self.slack, self._loose = limit * SQRT3, loose
        return p

    def _build(self, p: np.ndarray) -> None:
        self.builds += 1
        self._source_id = id(p)
        self._indexed = np.array(p, dtype=np.float32, copy=True)
        self.slack = 0.0
        self._loose = np.zeros(0, dtype=np.int64)
        n = len(p)
        if n == 0:
            self.cell = self.min_cell
            self._order = np.zeros(0, dtype=np.int64)
            self._starts = np.zeros(1, dtype=np.int64)
            return
        lo = self._indexed.min(axis=0)
        hi = self._indexed.max(axis=0)
        extent = float((hi - lo).max())
        self.cell = max(self.min_cell, extent / (MAX_CELLS_PER_AXIS - 1), 1e-6)
        self._lo = lo
        self._dims = np.minimum(((hi - lo) / self.cell).astype(np.int64) + 1, MAX_CELLS_PER_AXIS)
        d = self._dims
        self._strides = np.array([d[1] * d[2], d[2], 1], dtype=np.int64)
        self._offsets = {}
        cells = int(np.prod(d))
        keys = self._keys(self._indexed)
        # 16-bit keys sort in linear time (numpy's radix sort for small integers).
        self._order = np.argsort(keys.astype(np.uint16) if cells <= 65535 else keys, kind="stable")
        counts = np.bincount(keys, minlength=cells)
        self._starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

    def _keys(self, points: np.ndarray) -> np.ndarray:
        """Cell keys (int64) of points, clamped to the grid (few ufunc calls: this runs per query)."""
        c = ((points - self._lo) * np.float32(1.0 / self.cell)).astype(np.int64)  # >= 0: floor
        np.minimum(c, self._dims - 1, out=c)
        np.maximum(c, 0, out=c)
        return c @ self._strides

    # --- queries --------------------------------------------------------------------------------

    def _current(self) -> np.ndarray:
        if self.auto or self._indexed is None:
            return self.refresh()
        p = self._positions()
        if id(p) != self._source_id or len(p) != len(self._indexed):
            return self.refresh()
        return p

    def _around(self, points: np.ndarray, reach: float) -> np.ndarray:
        """Keys of the cells within ``reach`` of any of ``points`` (unique; may include a few more).

        Neighbours are offsets in key space: at the grid's faces an offset may wrap to a cell on
        the far side, which only adds candidates (every candidate is tested exactly).
        """
        k = int(np.ceil(reach / self.cell))
        offsets = self._offsets.get(k)
        if offsets is None:
            r = np.arange(-k, k + 1)
            d1, d2 = int(self._dims[1]), int(self._dims[2])
            offsets = (r[:, None, None] * (d1 * d2) + r[None, :, None] * d2 + r[None, None, :]).ravel()
            self._offsets[k] = offsets
        near = (self._keys(points)[:, None] + offsets[None, :]).ravel()
        np.minimum(near, len(self._starts) - 2, out=near)  # wrapped or clamped: only more candidates
        np.maximum(near, 0, out=near)
        near.sort()
        keep = np.empty(len(near), dtype=bool)
        keep[0] = True
        np.not_equal(near[1:], near[:-1], out=keep[1:])
        return near[keep]  # unique (np.unique is several times slower on small arrays)

    def _candidates(self, keys: np.ndarray) -> np.ndarray:
        starts = self._starts[keys]
        lengths = self._starts[keys + 1] - starts
        total = int(lengths.sum())
        self.last_candidates = total + len(self._loose)
        if total == 0:
            return self._loose
        # Concatenate the ranges start[i] .. start[i] + length[i] without a Python loop.
        shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        found = self._order[shift + np.arange(total)]
        return np.concatenate([found, self._loose]) if len(self._loose) else found

    def nearest(self, point, radius: float) -> tuple[int, float]:
        """Card centre nearest ``point`` within ``radius``: (index, distance) or (-1, inf)."""
        p = self._current()
        if len(p) == 0:
            return -1, float("inf")
        if len(p) < BRUTE_BELOW:
            self.last_candidates = len(p)
            return pick_nearest(p, point, radius)
        q = np.asarray(point, dtype=np.float32).reshape(1, 3)
        cand = self._candidates(self._around(q, radius + self.slack))
        if len(cand) == 0:
            return -1, float("inf")
        v = p[cand] - q[0]
        d2 = np.einsum("ij,ij->i", v, v)
        best = d2.min()
        if best > radius * radius:
            return -1, float("inf")
        # Ties (equal distance) go to the lowest card index, as in the brute force.
        return int(cand[d2 == best].min()), float(np.sqrt(best))

    def ray(self, origin, direction, radius: float, near: float = 0.0) -> tuple[int, float]:
        """Nearest card whose sphere of ``radius`` the ray hits: (index, distance) or (-1, inf)."""
        p = self._current()
        if len(p) == 0:
            return -1, float("inf")
        if len(p) < BRUTE_BELOW:
            self.last_candidates = len(p)
            return pick_ray(p, origin, direction, radius, near)
        o = np.asarray(origin, dtype=np.float32)
        d = np.asarray(direction, dtype=np.float32)
        d = d / max(float(np.linalg.norm(d)), 1e-12)
        reach = radius + self.slack
        # Clip the ray to the grid's box grown by the reach: samples only where cards can be.
        t0, t1 = max(near, 0.0), np.inf
        for axis in range(3):
            lo = float(self._lo[axis]) - reach
            hi = lo + float(self._dims[axis]) * self.cell + 2 * reach
            oa, da = float(o[axis]), float(d[axis])
            if da == 0.0:
                if not lo <= oa <= hi:
                    t1 = -np.inf
                continue
            ta, tb = (lo - oa) / da, (hi - oa) / da
            t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
        if t1 >= t0:
            # Samples one cell apart: a card within ``reach`` of the ray is within reach + cell/2
            # of one of them.
            n = int(np.ceil((t1 - t0) / self.cell)) + 1
            ts = np.arange(n, dtype=np.float32) * np.float32((t1 - t0) / max(n - 1, 1)) + np.float32(t0)
            keys = self._around(o + ts[:, None] * d, reach + self.cell / 2)
            # A round tube, not the samples' square one: only cells whose centre lies within
            # reach + half a cell diagonal of the line can hold a card the ray passes near.
            d1, d2 = int(self._dims[1]), int(self._dims[2])
            cells = np.stack([keys // (d1 * d2), (keys // d2) % d1, keys % d2], axis=1)
            v = (cells + 0.5) * self.cell + self._lo - o
            along = v @ d
            off2 = np.einsum("ij,ij->i", v, v) - along * along
            keep = off2 <= (reach + 0.8660254 * self.cell) ** 2
            cand = self._candidates(keys[keep])
        else:  # the ray misses the grid: only cards that moved out of it can be hit
            cand = self._loose
        if len(cand) == 0:
            return -1, float("inf")
        v = p[cand] - o
        t = v @ d
        dist2 = np.einsum("ij,ij->i", v, v) - t * t
        hit = (dist2 <= radius * radius) & (t > near)
        if not hit.any():
            return -1, float("inf")
        t_hit = np.where(hit, t, np.inf)
        # Ties (equal distance) go to the lowest card index, as in the brute force.
        best = float(t_hit.min())
        k = int(cand[t_hit == best].min())
        return k, best
