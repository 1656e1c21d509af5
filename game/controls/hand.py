"""A hand: point or touch to hover, select, grab, carry, release or cancel a card.

The desktop mouse and each VR controller drive one ``Hand`` each, so both post exactly the same
typed events (``CardSelected``, ``CardGrabbed``, ``CardMoved``, ``CardDropped``, ``GrabCancelled``).
Picking is CPU numpy over the drawn card centres: instanced cards are invisible to Panda3D's
collision system, and a vectorised ray test over 50k centres takes about a millisecond.

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
) -> tuple[int, float]:
    """Nearest card whose bounding sphere (``radius``) the ray hits: (index, distance) or (-1, inf).

    Cards face the viewer, so a sphere of about 0.6 card sides around each centre matches the
    drawn square closely whichever way the ray comes from. ``cards``: test only these (a spatial
    index's candidates, ``PickIndex``); the arithmetic is the same, and equal distances go to the
    lowest card index either way, so the index answers exactly what the brute force answers.
    """
    p = positions if cards is None else positions[cards]
    if len(p) == 0:
        return -1, float("inf")
    o = np.asarray(origin, dtype=np.float32)
    d = np.asarray(direction, dtype=np.float32)
    d = d / max(math.sqrt(float(d @ d)), 1e-12)  # np.linalg.norm costs 3x more on 3 values
    v = p - o
    t = v @ d
    dist2 = np.einsum("ij,ij->i", v, v) - t * t
    hit = (dist2 <= radius * radius) & (t > near)
    if not hit.any():
        return -1, float("inf")
    t_hit = np.where(hit, t, np.inf)
    return _lowest_best(t_hit, cards)


def pick_nearest(
    positions: np.ndarray, point, radius: float, cards: np.ndarray | None = None
) -> tuple[int, float]:
    """Card centre nearest ``point`` within ``radius``: (index, distance) or (-1, inf).

    ``cards``: test only these, as in ``pick_ray``.
    """
    p = positions if cards is None else positions[cards]
    if len(p) == 0:
        return -1, float("inf")
    v = p - np.asarray(point, dtype=np.float32)
    d2 = np.einsum("ij,ij->i", v, v)
    d2 = np.where(d2 <= radius * radius, d2, np.inf)  # also drops hidden (NaN) cards
    k, best = _lowest_best(d2, cards)
    if best == np.inf:
        return -1, float("inf")
    return k, float(np.sqrt(best))


def _lowest_best(values: np.ndarray, cards: np.ndarray | None) -> tuple[int, float]:
    """Index of the smallest value (the lowest card index among equal ones) and the value."""
    if cards is None:
        k = int(np.argmin(values))  # the first of equal minima
        return k, float(values[k])
    best = values.min()
    return int(cards[values == best].min()), float(best)


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
        radius = self.pick_factor * self.card_size
        if self.index is not None:
            k, t = self.index.ray(origin, direction, radius)
        else:
            k, t = pick_ray(self._positions(), origin, direction, radius)
        self.hovered, self.hover_distance = k, t
        return k

    def touch(self, position, radius: float | None = None) -> int:
        """Hover the card nearest a point (a controller tip), within ``radius`` metres."""
        if self.dragging:
            return self.hovered
        r = self.touch_factor * self.card_size if radius is None else radius
        if self.index is not None:
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
