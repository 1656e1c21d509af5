"""One vectorised tween for every moving card.

A ``LerpPosInterval`` per card costs milliseconds per frame at 10k cards; here the whole field is
two numpy arrays and one ease curve, so a 50k-card update is a few fused array operations.
Pure numpy (no panda3d) so it can be unit-tested and benchmarked alone.
"""

from __future__ import annotations

import numpy as np


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
        self.t0 = now
        self.active = self.duration > 0
        if not self.active:
            self.current[:] = self.target

    def resize(self, positions: np.ndarray) -> None:
        """Grow to ``len(positions)`` cards; the new ones appear at their position at once."""
        n_old = len(self.current)
        extra = np.asarray(positions[n_old:], dtype=np.float32)
        self.current = np.concatenate([self.current, extra])
        self.start = np.concatenate([self.start, extra])
        self.target = np.concatenate([self.target, extra])
        self._delta = np.concatenate([self._delta, np.zeros_like(extra)])

    def pin(self, card: int, position: np.ndarray | tuple[float, float, float]) -> None:
        """Put one card at ``position`` now and keep it there for the rest of the tween."""
        p = np.asarray(position, dtype=np.float32)
        self.current[card] = p
        self.start[card] = p
        self.target[card] = p
        self._delta[card] = 0.0

    def update(self, now: float) -> bool:
        """Advance to time ``now``; returns True when positions changed this call."""
        if not self.active:
            return False
        s = (now - self.t0) / self.duration if self.duration > 0 else 1.0
        if s >= 1.0:
            self.current[:] = self.target
            self.active = False
            return True
        e = np.float32(ease_in_out(max(s, 0.0)))
        # current = start + delta * e, written in place (no temporaries of size N).
        np.multiply(self._delta, e, out=self.current)
        self.current += self.start
        return True
