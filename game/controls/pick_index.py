"""A uniform grid over the card centres, so picking costs the same at 2k and at 50k cards.

Testing both controller tips and both lasers against every card costs milliseconds per VR frame
at 20k-50k cards (out of an 11.1 ms frame at 90 Hz). ``PickIndex`` sorts the cards once into
cells (a counting-sort order and one start offset per cell, all numpy). The cells of one (x, y)
column are consecutive, so a query gathers whole runs of a column: a touch looks at the columns
of a small box, a laser at the columns along its path (one slab of columns per cell it crosses
in its main horizontal direction), each with the z range the ray passes through there. The cards
found are tested by ``hand.pick_nearest`` / ``hand.pick_ray`` themselves, so the answers are the
brute force's. A VR hand touches with its tip and, when nothing is touched, points its laser from
there: ``touch_or_ray`` gathers the cells of both at once and tests them in one pass
(``hand.pick_touch_or_ray``; a query's cost is its numpy calls, not its cards).

Cards move (tweens after a fine-tune, the carried card). The index is not rebuilt for every
move. With a ``motion`` source (the world's ``Tween``: ``mark()`` / ``moved_since(mark)``), a
refresh asks how far any card can have gone since the last one and which cards were put
somewhere by hand, without looking at the cards: a still frame costs one integer compare, a
carried card is one index, a glide one float. Without it, ``refresh`` compares every position
with the indexed copy (one vectorised pass). Either way, queries widen their search by the
``slack`` (how far any card may be from where it was indexed) and test the cards' *current*
positions; cards put somewhere else ("loose": the carried card, a dropped one, up to
``MAX_LOOSE``) are tested one by one with every query. The grid is rebuilt when the slack passes
``rebuild_fraction`` of a cell or there are more loose cards (during a glide: every two or three
frames; a cell of slack doubles the cards a laser tests, a rebuild costs a millisecond at 50k),
and once when a glide ends, so still frames query a tight grid.

Still frames also read the positions from a copy in grid order (``p[order]`` with each row's
card number in a fourth float32 column, made by the first refresh that finds nothing changed,
dropped by any change the refresh sees: a glide, a carried card, a hidden card, another layout),
so a cell's cards and their numbers are one contiguous read instead of a scattered row each
(after the renderer has evicted the caches, each row is a cache miss). The copy holds the
current positions, so the answers are the same. The laser's tube is found in cell units from one
multiply-add at the slab edges; queries use ufuncs and array methods, not numpy's Python-level
wrappers (2-4x a ufunc's cost once the caches are cold: docs/benchmarks.md, issue 16). With ``auto=False`` the caller
must refresh after the positions change and before querying (the VR controls: once per frame,
before both hands pick; the world moves cards only after them).

No panda3d: plain numpy, testable and benchmarkable alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np

from game.controls.hand import pick_nearest, pick_ray, pick_touch_or_ray

PositionsSource = Callable[[], np.ndarray]
Keys = np.ndarray | list[int]
Runs = tuple[Keys, Keys] | None  # first and last keys of runs of cells; None: no cell
Candidates = tuple[np.ndarray, np.ndarray | None]  # cards to test, and their positions if gathered
MAX_CELLS_PER_AXIS = 40  # 40**3 cells fit a uint16 key: a linear-time (radix) sort
ID_LIMIT = 1 << 24  # card indices are exact in float32 below this (the copy in grid order)
MAX_LOOSE = 64  # moved cards tested one by one before the grid is rebuilt
# Fewer cards: one vectorised pass over all of them is cheaper than the grid. Measured in the VR
# frame (bench_vr --python-work, 2026-12-02 21:21-21:44, ufunc-only tests): both hands' picks by
# brute force 0.21 / 0.24 / 0.30 / 0.34 ms at 5k / 10k / 16k / 20k cards against the grid's
# 0.31-0.39; at 50k 0.61-0.64 against 0.41-0.43.
BRUTE_BELOW = 24576
SQRT3 = 1.7320509  # per-axis max -> distance bound
EDGE = 1e-3  # cells: float32 keys vs float64 query cells may disagree at a cell's edge


class MotionSource(Protocol):
    """What moved since a mark (``game.world.tween.Tween``); equal marks: nothing changed."""

    def mark(self) -> Any: ...

    def moved_since(self, mark: Any) -> tuple[float, np.ndarray] | None: ...


class PickIndex:
    """Nearest card to a point and first card along a ray, over a grid of ``positions()``.

    ``min_cell`` (metres) is the smallest cell edge; pass the largest pick radius (the touch
    radius) so a query looks at no more than 3x3x3 cells. ``auto`` (default) checks for moved
    cards on every query; a caller that queries several times per frame (two VR hands) sets it
    False and calls ``refresh()`` once per frame. ``motion`` returns the tracker of the positions
    (see the module docstring), or None; it may be set after construction.
    """

    def __init__(
        self,
        positions: PositionsSource,
        min_cell: float | Callable[[], float] = 0.1,
        *,
        auto: bool = True,
        rebuild_fraction: float = 1.0,
        motion: Callable[[], MotionSource | None] | None = None,
    ) -> None:
        self._positions = positions
        self._min_cell = min_cell
        self.auto = auto
        self.rebuild_fraction = rebuild_fraction
        self.motion = motion
        self.builds = 0  # tests and benchmarks: how often the grid was rebuilt
        self.compares = 0  # tests and benchmarks: refreshes that compared every card
        self.slack = 0.0  # how far any card may be from its indexed cell (metres)
        self.last_candidates = 0  # cards tested by the last query (benchmarks)
        self._loose = np.zeros(0, dtype=np.int64)  # moved too far from their cell: tested always
        self._indexed: np.ndarray | None = None  # positions when built (a copy)
        self._mark: Any = None  # the motion source's mark at the last refresh
        self._tracker: MotionSource | None = None  # the motion source that made it
        self._source_id = 0
        self.cell = 0.0
        self._order = np.zeros(0, dtype=np.int64)
        self._starts = np.zeros(1, dtype=np.int64)
        self._ends = self._starts[1:]  # where each cell's run ends (a view)
        # The positions in grid order (``p[_order]``) while the cards are still, else None: a
        # cell's cards are then read contiguously instead of one scattered row each.
        self._sorted: np.ndarray | None = None
        self.sorted_copies = 0  # tests and benchmarks: how often the copy was made
        self._lo_f = [0.0, 0.0, 0.0]  # the grid's low corner and cells per axis, as plain floats
        self._dims_i = [1, 1, 1]  # and ints (the queries' scalar arithmetic)

    # --- building -------------------------------------------------------------------------------

    @property
    def min_cell(self) -> float:
        return float(self._min_cell() if callable(self._min_cell) else self._min_cell)

    def refresh(self) -> np.ndarray:
        """Note what moved since the last refresh; rebuild when cards moved too far. Returns them."""
        p = self._positions()
        old = self._indexed
        if old is None or id(p) != self._source_id or len(p) != len(old) or self.cell < self.min_cell:
            self._build(p)
            return p
        if not len(p):
            return p
        limit = self.rebuild_fraction * self.cell
        tracker = self.motion() if self.motion is not None else None
        if tracker is not None and tracker is self._tracker:
            mark = tracker.mark()
            if mark == self._mark:  # nothing at all changed since the last refresh: the common case
                if self.slack > 0.0:  # a glide has ended: one tight rebuild for the still frames
                    self._build(p)
                self._keep_sorted(p)
                return p
            moved = tracker.moved_since(self._mark)
            if moved is not None:
                self._mark = mark
                self._sorted = None  # something changed: copied again once all is still
                bound, cards = moved
                if bound == 0.0 and not len(cards):
                    if self.slack > 0.0:
                        self._build(p)
                    return p
                slack = self.slack + bound
                loose = np.union1d(self._loose, cards) if len(cards) else self._loose
                if slack > limit or len(loose) > MAX_LOOSE:
                    self._build(p)
                else:
                    self.slack, self._loose = slack, loose
                return p
        if self._compare(p, old, limit):
            self._keep_sorted(p)
        else:
            self._sorted = None
        self._remember(tracker)
        return p

    def _keep_sorted(self, p: np.ndarray) -> None:
        """The cards are where they were at the last refresh: copy them in grid order (once;
        kept until a refresh sees a change). A fourth column holds each row's card index (exact
        in float32 below 2**24 cards), so a query reads one array for both."""
        if self._sorted is None and 0 < len(self._order) < ID_LIMIT:
            rows = np.empty((len(self._order), 4), dtype=np.float32)
            rows[:, :3] = p[self._order]
            rows[:, 3] = self._order
            self._sorted = rows
            self.sorted_copies += 1

    def _remember(self, tracker: MotionSource | None) -> None:
        self._tracker = tracker
        self._mark = tracker.mark() if tracker is not None else None

    def _compare(self, p: np.ndarray, old: np.ndarray, limit: float) -> bool:
        """No motion source (or it lost track): compare every card with the indexed copy.
        True when none moved."""
        self.compares += 1
        if np.array_equal(p, old):  # nothing moved (one compare, no temporaries)
            self.slack, self._loose = 0.0, self._loose[:0]
            return True
        axis_limit = limit / SQRT3
        deviation = np.abs(p - old)
        drift = float(deviation.max())
        if drift <= axis_limit:
            self.slack, self._loose = drift * SQRT3, self._loose[:0]
            return False
        loose = np.flatnonzero(deviation.max(axis=1) > axis_limit)
        if len(loose) > MAX_LOOSE:
            self._build(p)
        else:
            self.slack, self._loose = axis_limit * SQRT3, loose
        return False

    def _build(self, p: np.ndarray) -> None:
        self.builds += 1
        self._source_id = id(p)
        self._indexed = np.array(p, dtype=np.float32, copy=True)
        self._remember(self.motion() if self.motion is not None else None)
        self.slack = 0.0
        self._loose = np.zeros(0, dtype=np.int64)
        self._sorted = None  # another order: copied again on the next still refresh
        n = len(p)
        if n < max(BRUTE_BELOW, 1):  # queries take the brute force: no grid to keep
            self.cell = self.min_cell
            self._order = np.zeros(0, dtype=np.int64)
            self._starts = np.zeros(1, dtype=np.int64)
            self._ends = self._starts[1:]
            return
        # Column by column: numpy's min over axis 0 of an (n, 3) array is 25x slower.
        cols = [self._indexed[:, axis] for axis in range(3)]
        lo = np.array([c.min() for c in cols], dtype=np.float32)
        hi = np.array([c.max() for c in cols], dtype=np.float32)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # hidden cards (NaN): not indexed
            finite = self._indexed[np.isfinite(self._indexed).all(axis=1)]
            lo = finite.min(axis=0) if len(finite) else np.zeros(3, dtype=np.float32)
            hi = finite.max(axis=0) if len(finite) else np.zeros(3, dtype=np.float32)
        extent = float((hi - lo).max())
        self.cell = max(self.min_cell, extent / (MAX_CELLS_PER_AXIS - 1), 1e-6)
        d = np.minimum(((hi - lo) / self.cell).astype(np.int64) + 1, MAX_CELLS_PER_AXIS)
        self._lo_f = [float(v) for v in lo]
        self._dims_i = [int(v) for v in d]
        cells = int(np.prod(d))
        with np.errstate(invalid="ignore"):  # hidden (NaN) cards
            c = ((self._indexed - lo) * np.float32(1.0 / self.cell)).astype(np.int32)  # >= 0: floor
        np.minimum(c, d.astype(np.int32) - 1, out=c)
        np.maximum(c, 0, out=c)  # a NaN card's cast is negative: it sits in cell 0, never hit
        keys = (c[:, 0] * int(d[1]) + c[:, 1]) * int(d[2]) + c[:, 2]  # x, then y, then z: columns
        # 16-bit keys sort in linear time (numpy's radix sort for small integers).
        self._order = np.argsort(keys.astype(np.uint16) if cells <= 65535 else keys, kind="stable")
        counts = np.bincount(keys, minlength=cells)
        self._starts = np.zeros(cells + 1, dtype=np.int64 if n >= 1 << 31 else np.int32)  # fewer cache lines
        np.cumsum(counts, out=self._starts[1:])
        self._ends = self._starts[1:]

    def _current(self) -> np.ndarray:
        if self.auto or self._indexed is None:
            return self.refresh()
        p = self._positions()
        if id(p) != self._source_id or len(p) != len(self._indexed):
            return self.refresh()
        return p

    # --- gathering cells ------------------------------------------------------------------------
    # Queries cost their numpy calls (about a microsecond each on small arrays; 6-30 us each once
    # the renderer has evicted the caches), not the cards they test: scalars are plain Python
    # floats, each step is one call over all the cells, and the calls are ufuncs and array
    # methods, not numpy's Python-level wrappers (np.clip, np.cumsum, np.repeat, .max(): two to
    # four times a ufunc's cost when cold).

    def _gather(self, p: np.ndarray, first: Keys, last: Keys) -> Candidates:
        """The cards of key runs ``first[i] .. last[i]`` (inclusive), plus the loose cards, and
        their positions when the copy in grid order has them (read run by run), else None."""
        begin = self._starts[first]
        lengths = self._ends[last] - begin
        ends = np.add.accumulate(lengths)
        total = int(ends[-1]) if len(ends) else 0
        self.last_candidates = total + len(self._loose)
        if total == 0:
            return self._loose, None
        # Concatenate the runs begin[i] .. begin[i] + length[i] without a Python loop.
        slots = (begin - (ends - lengths)).repeat(lengths) + np.arange(total)
        if self._sorted is not None:  # one read for positions and card indices (float32)
            both = self._sorted[slots]
            found, rows = both[:, 3], both[:, :3]
        else:
            found, rows = self._order[slots], None
        if not len(self._loose):
            return found, rows
        found = np.concatenate([found, self._loose])
        return found, (np.concatenate([rows, p[self._loose]]) if rows is not None else None)

    def _only_loose(self) -> Candidates:
        """No indexed cell in reach: the loose cards are the only candidates."""
        self.last_candidates = len(self._loose)
        return self._loose, None

    def _runs(self, p: np.ndarray, runs: Runs) -> Candidates:
        return self._only_loose() if runs is None else self._gather(p, *runs)

    def _box(self, centre: list[float], reach: float) -> Runs:
        """Key runs of the cells that meet the cube of half-side ``reach`` around ``centre``
        (None: no indexed cell there)."""
        return self._box_between(centre, centre, reach)

    def _tube(self, o: list[float], d: list[float], t0: float, t1: float, reach: float) -> Runs:
        """Key runs of the cells that may hold a card within ``reach`` of the segment
        ``o + t d``, t in [t0, t1] (``d`` a unit vector).

        One slab of columns per cell along the main horizontal axis ``a``. Along the segment, the
        other two coordinates are linear in the ``a`` coordinate, so in cell units they are known
        at every slab edge from one multiply-add: at the edges clipped to the segment's ``a``
        range, a slab's ``b`` and ``z`` range is that of its two edges, grown by the reach
        (``rho`` cells) and by what the segment does over a reach along ``a`` (``|slope| rho``).
        A segment that stays within about a cell along both horizontal axes (a vertical laser)
        takes the box around it instead."""
        inv, lo, dims = 1.0 / self.cell, self._lo_f, self._dims_i
        a = 0 if abs(d[0]) >= abs(d[1]) else 1
        b = 1 - a
        rho = reach * inv
        if abs(d[a]) * (t1 - t0) * inv <= 1.0:  # short along a (and along b): its bounding box
            ends = [(o[i] + t0 * d[i], o[i] + t1 * d[i]) for i in range(3)]
            return self._box_between([min(e) for e in ends], [max(e) for e in ends], reach)
        # The segment's a range in cell units, and the slabs within reach of it.
        ea, eb = (o[a] + t0 * d[a] - lo[a]) * inv, (o[a] + t1 * d[a] - lo[a]) * inv
        a_lo, a_hi = (ea, eb) if ea <= eb else (eb, ea)
        s0 = max(math.floor(a_lo - rho - EDGE), 0)
        s1 = min(math.floor(a_hi + rho + EDGE), dims[a] - 1)
        if s0 > s1:
            return None
        kb, kz = d[b] / d[a], d[2] / d[a]  # cells of b and z per cell of a along the segment
        # In cell units: b = (o_b - lo_b) inv + (x - (o_a - lo_a) inv) kb at a coordinate x.
        oa = (o[a] - lo[a]) * inv
        gb, gz = (abs(kb) + 1.0) * rho + EDGE, (abs(kz) + 1.0) * rho + EDGE
        consts = np.array(
            [
                [kb, (o[b] - lo[b]) * inv - oa * kb, -gb, gb, dims[b] - 1],
                [kz, (o[2] - lo[2]) * inv - oa * kz, -gz, gz, dims[2] - 1],
            ]
        )
        x = np.arange(s0, s1 + 2, dtype=np.float64)
        np.maximum(x, a_lo, out=x)
        np.minimum(x, a_hi, out=x)
        at = x * consts[:, :1] + consts[:, 1:2]  # (2, slabs + 1): b and z at the slab edges
        span = np.empty((2, 2, s1 - s0 + 1))  # (low | high, b | z, slab)
        np.minimum(at[:, :-1], at[:, 1:], out=span[0])
        np.maximum(at[:, :-1], at[:, 1:], out=span[1])
        span += consts[:, 2:4].T[:, :, None]
        np.maximum(span, 0.0, out=span)  # in range before the cast (steep rays: huge)
        np.minimum(span, consts[:, 4:5], out=span)
        cells = span.astype(np.int64)  # >= 0: the cast floors
        (b0, z0), (b1, z1) = cells
        width = int(np.maximum.reduce(b1 - b0)) + 1
        col = b0[:, None] + np.arange(width)  # (slabs, width): columns, masked below
        ny, nz = dims[1], dims[2]
        stride_a, stride_b = (ny * nz, nz) if a == 0 else (nz, ny * nz)
        base = np.arange(s0 * stride_a, (s1 + 1) * stride_a, stride_a)[:, None] + col * stride_b
        keep = col <= b1[:, None]
        keep &= (z0 <= z1)[:, None]
        first = (base + z0[:, None])[keep]
        if not len(first):
            return None
        return first, (base + z1[:, None])[keep]

    def _box_between(self, low: list[float], high: list[float], reach: float) -> Runs:
        """Key runs of the cells that meet the box ``low``..``high`` grown by ``reach``."""
        inv, lo, dims = 1.0 / self.cell, self._lo_f, self._dims_i
        first, last = [], []
        for axis in range(3):
            f = max(math.floor((low[axis] - reach - lo[axis]) * inv - EDGE), 0)
            g = min(math.floor((high[axis] + reach - lo[axis]) * inv + EDGE), dims[axis] - 1)
            if f > g:
                return None
            first.append(f)
            last.append(g)
        ny, nz = dims[1], dims[2]
        z0, span = first[2], last[2] - first[2]
        ys = range(first[1], last[1] + 1)
        starts = [(x * ny + y) * nz + z0 for x in range(first[0], last[0] + 1) for y in ys]
        return starts, [k + span for k in starts]

    # --- queries --------------------------------------------------------------------------------

    def nearest(self, point, radius: float) -> tuple[int, float]:
        """Card centre nearest ``point`` within ``radius``: (index, distance) or (-1, inf)."""
        p = self._current()
        if len(p) < max(BRUTE_BELOW, 1):
            self.last_candidates = len(p)
            return pick_nearest(p, point, radius)
        cand, rows = self._runs(p, self._box(_floats(point), radius + self.slack))
        if not len(cand):
            return -1, float("inf")
        return pick_nearest(p, point, radius, cand, rows)

    def ray(self, origin, direction, radius: float, near: float = 0.0) -> tuple[int, float]:
        """Nearest card whose sphere of ``radius`` the ray hits: (index, distance) or (-1, inf)."""
        p = self._current()
        if len(p) < max(BRUTE_BELOW, 1):
            self.last_candidates = len(p)
            return pick_ray(p, origin, direction, radius, near)
        runs = self._ray(_floats(origin), _floats(direction), radius, near)
        if runs is False:  # a zero direction: the brute force's answer
            self.last_candidates = len(p)
            return pick_ray(p, origin, direction, radius, near)
        cand, rows = self._runs(p, runs)
        if not len(cand):
            return -1, float("inf")
        return pick_ray(p, origin, direction, radius, near, cand, rows)

    def touch_or_ray(
        self, point, touch_radius: float, origin, direction, ray_radius: float, near: float = 0.0
    ) -> tuple[tuple[int, float], tuple[int, float] | None]:
        """``nearest(point, touch_radius)`` and, when nothing is touched, ``ray(origin, ...)``,
        from one gathering of the cells of both (``hand.pick_touch_or_ray``): (touch answer, ray
        answer or None when a card is touched); the same answers as the two queries."""
        p = self._current()
        if len(p) < max(BRUTE_BELOW, 1):
            self.last_candidates = len(p)
            return pick_touch_or_ray(p, point, touch_radius, origin, direction, ray_radius, near)
        box = self._box(_floats(point), touch_radius + self.slack)
        tube = self._ray(_floats(origin), _floats(direction), ray_radius, near)
        if tube is False:  # a zero direction: the brute force's answer, as ray() gives
            touched = self.nearest(point, touch_radius)
            if touched[0] >= 0:
                return touched, None
            self.last_candidates = len(p)
            return touched, pick_ray(p, origin, direction, ray_radius, near)
        if box is None or tube is None:
            cand, rows = self._runs(p, box if tube is None else tube)
        else:
            cand, rows = self._gather(p, np.concatenate((box[0], tube[0])), np.concatenate((box[1], tube[1])))
        if not len(cand):
            return (-1, float("inf")), (-1, float("inf"))
        return pick_touch_or_ray(p, point, touch_radius, origin, direction, ray_radius, near, cand, rows)

    def _ray(self, o: list[float], d: list[float], radius: float, near: float) -> Runs | Literal[False]:
        """Key runs of the cells along a ray (None: none in reach; False: a zero direction)."""
        length = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        if length == 0.0:
            return False
        d = [v / length for v in d]
        reach = radius + self.slack
        # Clip the ray to the grid's box grown by the reach: only there can cards be.
        t0, t1 = max(near, 0.0), math.inf
        for axis in range(3):
            lo = self._lo_f[axis] - reach
            hi = self._lo_f[axis] + self._dims_i[axis] * self.cell + reach
            if d[axis] == 0.0:
                if not lo <= o[axis] <= hi:
                    t1 = -math.inf
                continue
            ta, tb = (lo - o[axis]) / d[axis], (hi - o[axis]) / d[axis]
            t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
        if t1 < t0:  # the ray misses the grid: only cards that moved out of it can be hit
            return None
        return self._tube(o, d, t0, t1, reach * (1.0 + 1e-6) + 1e-6)


def _floats(v) -> list[float]:
    """Three plain floats (the queries' scalar arithmetic) from a 3-vector of any kind."""
    if isinstance(v, np.ndarray):
        return [float(x) for x in v.reshape(3).tolist()]
    return [float(x) for x in v]
