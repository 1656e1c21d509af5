"""One vectorised tween for every moving card.

A ``LerpPosInterval`` per card costs milliseconds per frame at 10k cards; here the whole field is
two numpy arrays and one ease curve, so a 50k-card update is a few fused array operations.
Pure numpy (no panda3d) so it can be unit-tested and benchmarked alone.

Whoever keeps something derived from the positions (the VR pick index) asks ``mark()`` and later
``moved_since(mark)`` instead of comparing all cards every frame: the tween knows how far any card
can have gone (every card moves along its own straight segment, ``start + delta * e``, so between
two ease values no card moved further than ``max |delta| * |e1 - e0|``) and which cards
were put somewhere by hand (``pin``). A still frame costs one integer compare; a carried card is
one index; a glide is one float per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Float32 rounding of start + delta * e (per axis, then as a distance): a bound on it, relative
# to the largest coordinate.
ROUNDING = 8 * float(np.finfo(np.float32).eps)
PIN_LOG = 4096  # pins remembered for moved_since (a mark older than that reads as "all may have moved")


@dataclass(frozen=True)
class Mark:
    """A moment in the tween's history, for ``moved_since``."""

    version: int
    epoch: int
    travel: float
    pins: int


def ease_in_out(s: np.ndarray | float) -> np.ndarray | float:
    """Smoothstep easing: 0 at 0, 1 at 1, zero velocity at both ends."""
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


class Tween:
    """Moves ``current`` from a start layout to a target layout over ``duration`` seconds.

    ``retarget`` starts from wherever the cards are now, so a new layout arriving mid-tween never
    makes cards jump. ``pin`` fixes single cards (the one in the hand) outside the tween.
    """

    def __init__(self, positions: np.ndarray, duration: float = 1.0) -> None:
        self.current = np.array(positions, dtype=np.float32)
        self.start = self.current.copy()
        self.target = self.current.copy()
        self.duration = float(duration)
        self.t0 = 0.0
        self.active = False
        self._delta = np.zeros_like(self.current)
        self.version = 0  # bumped whenever ``current`` changes
        self._epoch = 0  # bumped when cards are added (``current`` is a new array)
        self._travel = 0.0  # sum of the per-axis bounds of every change so far (metres)
        self._ease = 0.0  # ease value of ``current`` within the present segment
        self._reach = 0.0  # the longest segment (|delta|) of the present glide
        self._scale = 1.0  # largest coordinate magnitude: the float32 rounding bound's scale
        self._jumpers = np.zeros(0, dtype=np.int64)  # cards of the segment not on a segment
        self._pins: list[int] = []  # cards pinned, in order; self._pin_base pins were dropped
        self._pin_base = 0

    # --- what moved -------------------------------------------------------------------------------

    def mark(self) -> Mark:
        return Mark(self.version, self._epoch, self._travel, self._pin_base + len(self._pins))

    def moved_since(self, mark: Mark) -> tuple[float, np.ndarray] | None:
        """Since ``mark``: (bound, cards) — no card except ``cards`` moved further than ``bound``
        metres; ``cards`` (pinned by hand) may be anywhere. None: unknown (cards
        were added, or the mark is too old); compare or rebuild."""
        if mark.epoch != self._epoch or mark.pins < self._pin_base:
            return None
        if mark.version == self.version:
            return 0.0, np.zeros(0, dtype=np.int64)
        pinned = self._pins[mark.pins - self._pin_base :]
        cards = np.unique(np.asarray(pinned, dtype=np.int64)) if pinned else np.zeros(0, dtype=np.int64)
        return self._travel - mark.travel, cards

    def _moved(self, bound: float) -> None:
        """Record a change of ``current`` in which no card moved further than ``bound``."""
        self.version += 1
        if bound > 0.0:
            self._travel += bound + ROUNDING * self._scale

    def _new_segment(self) -> None:
        self._ease = 0.0
        length = np.sqrt(np.einsum("ij,ij->i", self._delta, self._delta))
        finite = np.isfinite(length)
        self._reach = float(length[finite].max()) if finite.any() else 0.0
        # A card coming from a non-finite place (hidden) is not on a segment: it appears at its
        # target on the last frame, and is reported then as if pinned.
        self._jumpers = np.flatnonzero(~finite & np.isfinite(self.target).all(axis=1))
        here = self.current[np.isfinite(self.current)]
        self._scale = float(np.abs(here).max()) + self._reach if len(here) else 1.0

    def _log_pins(self, cards) -> None:
        self._pins.extend(int(c) for c in cards)
        if len(self._pins) > PIN_LOG:
            drop = len(self._pins) // 2
            del self._pins[:drop]
            self._pin_base += drop

    def retarget(self, target: np.ndarray, now: float, duration: float | None = None) -> None:
        """Tween from the current positions to ``target`` (rows may be added at the end)."""
        target = np.asarray(target, dtype=np.float32)
        if len(target) != len(self.current):
            self.resize(target)
        if duration is not None:
            self.duration = float(duration)
        self.start = self.current.copy()
        self.target = target.copy()
        self._delta = self.target - self.start
        self._new_segment()
        self.t0 = now
        self.active = self.duration > 0
        if not self.active:
            self.current[:] = self.target
            self._log_pins(self._jumpers)
            self._moved(self._reach)

    def resize(self, positions: np.ndarray) -> None:
        """Grow to ``len(positions)`` cards; the new ones appear at their position at once."""
        n_old = len(self.current)
        extra = np.asarray(positions[n_old:], dtype=np.float32)
        self.current = np.concatenate([self.current, extra])
        self.start = np.concatenate([self.start, extra])
        self.target = np.concatenate([self.target, extra])
        self._delta = np.concatenate([self._delta, np.zeros_like(extra)])
        self.version += 1
        self._epoch += 1

    def pin(self, card: int, position: np.ndarray | tuple[float, float, float]) -> None:
        """Put one card at ``position`` now and keep it there for the rest of the tween."""
        p = np.asarray(position, dtype=np.float32)
        self.current[card] = p
        self.start[card] = p
        self.target[card] = p
        self._delta[card] = 0.0
        self.version += 1
        self._log_pins((card,))

    def update(self, now: float) -> bool:
        """Advance to time ``now``; returns True when positions changed this call."""
        if not self.active:
            return False
        s = (now - self.t0) / self.duration if self.duration > 0 else 1.0
        if s >= 1.0:
            self.current[:] = self.target
            self.active = False
            self._log_pins(self._jumpers)
            self._moved(self._reach * abs(1.0 - self._ease))
            self._ease = 1.0
            return True
        e = np.float32(ease_in_out(max(s, 0.0)))
        # current = start + delta * e, written in place (no temporaries of size N).
        np.multiply(self._delta, e, out=self.current)
        self.current += self.start
        self._moved(self._reach * abs(float(e) - self._ease))
        self._ease = float(e)
        return True
