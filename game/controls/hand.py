"""A hand: point or touch to hover, select, grab, carry, release or cancel a card.

The desktop mouse and each VR controller drive one ``Hand`` each, so both post exactly the same
typed events (``CardSelected``, ``CardGrabbed``, ``CardMoved``, ``CardDropped``, ``GrabCancelled``).
Picking is CPU numpy over the drawn card centres: instanced cards are invisible to Panda3D's
collision system, and a vectorised touch + ray test over 50k centres takes about 0.3 ms (ufuncs
only; the VR hands test a spatial index's few hundred candidates with the same functions).

No panda3d import here: the hand is plain maths plus ``workspace.post``, testable headless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from game.core import events as ev
from game.core.workspace import Workspace

if TYPE_CHECKING:  # pick_index imports this module
    from game.controls.pick_index import PickIndex

PositionsSource = Callable[[], np.ndarray]


def pick_ray(
    positions: np.ndarray,
    origin,
    direction,
    radius: float,
    near: float = 0.0,
    cards: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[int, float]:
    """Nearest card whose bounding sphere (``radius``) the ray hits: (index, distance) or (-1, inf).

    Cards face the viewer, so a sphere of about 0.6 card sides around each centre matches the
    drawn square closely whichever way the ray comes from. ``cards``: test only these (a spatial
    index's candidates, ``PickIndex``); the arithmetic is the same, and equal distances go to the
    lowest card index either way, so the index answers exactly what the brute force answers.
    ``rows``: ``positions[cards]`` already gathered (the index's copy in grid order).
    """
    p = _rows(positions, cards, rows)
    if len(p) == 0:
        return -1, float("inf")
    v = _offsets(p, origin)
    return _first_along(v, _squares(v), _unit(direction), radius, near, cards)


def pick_nearest(
    positions: np.ndarray,
    point,
    radius: float,
    cards: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[int, float]:
    """Card centre nearest ``point`` within ``radius``: (index, distance) or (-1, inf).

    ``cards``, ``rows``: test only these, as in ``pick_ray``.
    """
    p = _rows(positions, cards, rows)
    if len(p) == 0:
        return -1, float("inf")
    return _nearest_within(_squares(_offsets(p, point)), radius, cards)


def pick_touch_or_ray(
    positions: np.ndarray,
    point,
    touch_radius: float,
    origin,
    direction,
    ray_radius: float,
    near: float = 0.0,
    cards: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> tuple[tuple[int, float], tuple[int, float] | None]:
    """``pick_nearest(point, touch_radius)``, then, when nothing is touched, ``pick_ray`` from
    ``origin``: ``(touch answer, ray answer or None when a card is touched)``.

    A controller touches with its tip and points from it or from just behind it: both tests share
    the cards they look at (one gathering, ``cards`` a superset of both tests' candidates) and,
    when ``origin is point``, the cards' offsets and their squared lengths. The arithmetic is
    that of the two functions, so the answers are theirs exactly.
    """
    p = _rows(positions, cards, rows)
    if len(p) == 0:
        return (-1, float("inf")), (-1, float("inf"))
    v = _offsets(p, point)
    vv = _squares(v)
    touched = _nearest_within(vv, touch_radius, cards)
    if touched[0] >= 0:
        return touched, None
    if origin is not point:
        v = _offsets(p, origin)
        vv = _squares(v)
    return touched, _first_along(v, vv, _unit(direction), ray_radius, near, cards)


# The tests below are written with numpy's ufuncs and plain float scalars only (no einsum, matmul,
# clip or reduction methods): each query runs a dozen small array operations, and after the
# renderer has evicted the caches numpy's Python-level wrappers cost several times a ufunc call.
# Coordinates are float32 arrays; the scalars are float32 values (a Python float meets a float32
# array as float32), so every card's arithmetic is the same whichever subset it is tested in.

Offsets = tuple[np.ndarray, np.ndarray, np.ndarray]


def _rows(positions: np.ndarray, cards: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray:
    """The positions tested: all, the ``cards``' (gathered here), or ``rows`` gathered already."""
    if rows is not None:
        return rows
    return positions if cards is None else positions[cards]


def _float32s(v) -> list[float]:
    """Three values rounded to float32, as plain floats."""
    return np.asarray(v, dtype=np.float32).reshape(3).tolist()


def _offsets(p: np.ndarray, point) -> Offsets:
    """The cards' offsets from ``point``, one float32 array per axis."""
    x, y, z = _float32s(point)
    return p[:, 0] - x, p[:, 1] - y, p[:, 2] - z


def _squares(v: Offsets) -> np.ndarray:
    vx, vy, vz = v
    vv = vx * vx
    vv += vy * vy
    vv += vz * vz
    return vv


def _unit(direction) -> tuple[float, float, float]:
    """The direction made unit length (plain floats: a float32 array rounds them to float32 when
    it meets them, the same values whatever the subset)."""
    x, y, z = _float32s(direction)
    n = max(math.sqrt(x * x + y * y + z * z), 1e-12)
    return x / n, y / n, z / n


def _first_along(
    v: Offsets,
    vv: np.ndarray,
    d: tuple[float, float, float],
    radius: float,
    near: float,
    cards: np.ndarray | None,
) -> tuple[int, float]:
    """The ray test of ``pick_ray`` on offsets ``v`` from the origin (``vv``: their squares)."""
    vx, vy, vz = v
    t = vx * d[0]
    t += vy * d[1]
    t += vz * d[2]
    hit = np.less_equal(vv - t * t, radius * radius)
    hit &= np.greater(t, near)
    k, best = _lowest_best(np.where(hit, t, np.inf), cards)
    return (k, best) if best != np.inf else (-1, float("inf"))


def _nearest_within(vv: np.ndarray, radius: float, cards: np.ndarray | None) -> tuple[int, float]:
    """The touch test of ``pick_nearest`` on squared distances ``vv``."""
    inside = np.less_equal(vv, radius * radius)  # False for hidden (NaN) cards
    if not np.logical_or.reduce(inside):  # the usual answer while pointing: two ufunc calls
        return -1, float("inf")
    k, best = _lowest_best(np.where(inside, vv, np.inf), cards)
    if best == np.inf:
        return -1, float("inf")
    return k, float(np.sqrt(np.float32(best)))


def _lowest_best(values: np.ndarray, cards: np.ndarray | None) -> tuple[int, float]:
    """Index of the smallest value (the lowest card index among equal ones) and the value
    (inf: none)."""
    k = int(values.argmin())  # the first of equal minima
    best = float(values[k])
    if cards is None or best == np.inf:
        return k, best
    return int(np.minimum.reduce(cards[np.equal(values, best)])), best


def _vec3(p) -> tuple[float, float, float]:
    a = np.asarray(p, dtype=np.float64).reshape(3)
    return (float(a[0]), float(a[1]), float(a[2]))


class Hand:
    """One pointer (mouse or controller) acting on the cards of ``workspace``.

    ``positions`` returns the positions as drawn now (the world's tween state), so the hand picks
    what the person sees mid-tween. Moves are buffered: ``move_to`` may be called many times per
    frame, ``update`` (once per frame) posts at most one ``CardMoved``.
    """

    def __init__(
        self,
        workspace: Workspace,
        positions: PositionsSource | None = None,
        card_size: Callable[[], float] | float = 0.08,
        name: str = "mouse",
        pick_factor: float = 0.6,
        touch_factor: float = 1.5,
    ) -> None:
        self.workspace = workspace
        self._positions = positions or (lambda: workspace.positions)
        self._card_size = card_size
        self.name = name
        self.pick_factor = pick_factor
        self.touch_factor = touch_factor
        self.hovered = -1
        self.hover_distance = float("inf")
        self.grabbed = -1
        self.grab_origin: tuple[float, float, float] | None = None
        self.position: tuple[float, float, float] | None = None  # where the carried card is
        self._pending_move: tuple[float, float, float] | None = None
        self.enabled = True
        # A game.controls.pick_index.PickIndex over the same positions: the same answers as the
        # brute force below at a cost independent of the card count (the VR hands use one).
        self.index: PickIndex | None = None
        # touch(..., ray=...)'s answer for the laser: (origin, direction, (card, distance)).
        self._ray_ready: tuple[object, object, tuple[int, float]] | None = None

    @property
    def card_size(self) -> float:
        return float(self._card_size() if callable(self._card_size) else self._card_size)

    @property
    def dragging(self) -> bool:
        return self.grabbed >= 0

    # --- hovering -------------------------------------------------------------------------------

    def point(self, origin, direction) -> int:
        """Hover the nearest card along a ray (mouse ray or controller laser)."""
        if self.dragging:
            return self.hovered
        ready, self._ray_ready = self._ray_ready, None
        if ready is not None and ready[0] is origin and ready[1] is direction:
            k, t = ready[2]  # answered by this frame's touch (``touch(..., ray=...)``)
        else:
            radius = self.pick_factor * self.card_size
            if self.index is not None:
                k, t = self.index.ray(origin, direction, radius)
            else:
                k, t = pick_ray(self._positions(), origin, direction, radius)
        self.hovered, self.hover_distance = k, t
        return k

    def touch(self, position, radius: float | None = None, ray=None) -> int:
        """Hover the card nearest a point (a controller tip), within ``radius`` metres.

        ``ray``: ``(origin, direction)`` of the laser that ``point`` may test next when nothing
        is touched (a controller's): both tests then share one gathering of cards, and ``point``
        called with these same two objects takes the answer (the same as its own).
        """
        self._ray_ready = None
        if self.dragging:
            return self.hovered
        size = self.card_size  # once: a property over the world's setting
        r = self.touch_factor * size if radius is None else radius
        if ray is not None:
            origin, direction = ray
            ray_radius = self.pick_factor * size
            if self.index is not None:
                (k, d), along = self.index.touch_or_ray(position, r, origin, direction, ray_radius)
            else:
                (k, d), along = pick_touch_or_ray(
                    self._positions(), position, r, origin, direction, ray_radius
                )
            if along is not None:
                self._ray_ready = (origin, direction, along)
        elif self.index is not None:
            k, d = self.index.nearest(position, r)
        else:
            k, d = pick_nearest(self._positions(), position, r)
        self.hovered, self.hover_distance = k, d
        return k

    def clear_hover(self) -> None:
        if not self.dragging:
            self.hovered, self.hover_distance = -1, float("inf")

    # --- actions ----------------------------------------------------------------------------------

    def select(self) -> int:
        """Select the hovered card (or clear the selection when nothing is hovered)."""
        self.workspace.post(ev.CardSelected(card=int(self.hovered), hand=self.name))
        return self.hovered

    def grab(self) -> bool:
        """Pick up the hovered card; returns False when nothing is hovered or already carrying."""
        if self.dragging or self.hovered < 0:
            return False
        card = self.hovered
        pos = _vec3(self._positions()[card])
        self.grabbed = card
        self.grab_origin = pos
        self.position = pos
        self._pending_move = None
        self.workspace.post(ev.CardGrabbed(card=card, position=pos, hand=self.name))
        return True

    def move_to(self, position) -> None:
        """Carry the grabbed card to ``position`` (buffered; posted by ``update``)."""
        if not self.dragging:
            return
        p = _vec3(position)
        if p != self.position:
            self.position = p
            self._pending_move = p

    def update(self, now: float | None = None) -> None:
        """Post the latest buffered move, at most one ``CardMoved`` per call (once per frame)."""
        if self.dragging and self._pending_move is not None:
            self.workspace.post(ev.CardMoved(card=self.grabbed, position=self._pending_move, hand=self.name))
        self._pending_move = None

    def release(self, position=None) -> ev.CardDropped | None:
        """Drop the carried card at ``position`` (default: where it is); names the nearest centroid."""
        if not self.dragging:
            return None
        if position is not None:
            self.position = _vec3(position)
        assert self.position is not None
        drop = self.workspace.drop_event(self.grabbed, self.position, hand=self.name)
        self.workspace.post(drop)
        self._end_grab()
        return drop

    def cancel(self) -> bool:
        """Abandon the drag: the card returns to where it was grabbed."""
        if not self.dragging:
            return False
        assert self.grab_origin is not None
        self.workspace.post(ev.GrabCancelled(card=self.grabbed, position=self.grab_origin, hand=self.name))
        self._end_grab()
        return True

    def _end_grab(self) -> None:
        self.hovered = self.grabbed
        self.grabbed = -1
        self.grab_origin = None
        self._pending_move = None
