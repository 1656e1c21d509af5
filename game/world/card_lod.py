"""Which cards get a full-resolution image: a fixed pool of slots for the cards nearest the viewer.

Every card is always drawn from a small thumbnail (see ``cards``); a fixed number of pool slots
hold full-resolution tiles for the selected and hovered cards ("pinned") and for the cards
nearest the viewer (the eye or head, and in VR the hands). Texture memory is then
``N x thumbnail + slots x full tile`` instead of ``N x full tile``.

Why the selection is spread over frames: finding the nearest cards is O(N); done at once it
would cost a frame 1 ms or more at 50k cards. A *scan* instead looks at ``budget`` cards per
frame and keeps the best ``slots`` candidates, so per-frame work is O(budget + slots) whatever
N is; at 50k cards and the default budget a scan takes 13 frames (0.14 s at 90 Hz). A scan starts only
when the viewer moved or turned enough, or the cards moved, and not more often than every
``min_frames`` frames: standing still costs a comparison per frame.

Pure numpy (no Panda3D), so it is tested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BEHIND_COS = 0.2  # cards outside this cone around the view direction count as ...
BEHIND_FACTOR = 3.0  # ... this many times farther (turning the head brings them in soon after)
UNPINNED = 1e30  # score of a card that was pinned until now: the first to give its slot up


@dataclass
class PoolChanges:
    """What the renderer must upload: a tile per ``(slot, card)`` load; ``cleared`` cards lost theirs."""

    loads: list[tuple[int, int]] = field(default_factory=list)
    cleared: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.loads or self.cleared)


@dataclass
class _Scan:
    eye: np.ndarray
    forward: np.ndarray
    hands: np.ndarray  # (H, 3) extra focus points: only their distance counts
    start: int = 0
    cards: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))


class NearPool:
    """Slot bookkeeping for ``n`` cards and ``slots`` full-resolution slots."""

    def __init__(
        self,
        n: int,
        slots: int,
        *,
        budget: int = 4096,
        move: float = 0.1,
        turn_deg: float = 15.0,
        min_frames: int = 6,
    ) -> None:
        self.n = int(n)
        self.slots = int(slots)
        self.budget = max(1, int(budget))
        self.move = float(move)
        self.turn_cos = float(np.cos(np.radians(turn_deg)))
        self.min_frames = int(min_frames)
        self.card_slot = np.full(self.n, -1, np.int32)  # the slot holding each card, or -1
        self.slot_card = np.full(self.slots, -1, np.int64)  # the card in each slot, or -1
        self.slot_score = np.full(self.slots, np.inf, np.float32)  # lower = more wanted
        self.pinned: list[int] = []
        self.frame = 0
        self.scans_done = 0
        self._scan: _Scan | None = None
        self._last_eye: np.ndarray | None = None
        self._last_forward: np.ndarray | None = None
        self._last_start = -(10**9)
        self._cards_moved = True

    # --- inputs ---------------------------------------------------------------------------------

    def cards_moved(self) -> None:
        """Positions changed (a tween, a drag): the next scan may start even if the viewer is still."""
        self._cards_moved = True

    def pin(self, cards: list[int]) -> PoolChanges:
        """Cards that must be full resolution now (selected, hovered): loaded this frame if needed."""
        before = self.pinned
        self.pinned = [c for c in dict.fromkeys(int(c) for c in cards) if 0 <= c < self.n]
        for card in before:
            if card not in self.pinned and self.card_slot[card] >= 0:
                self.slot_score[self.card_slot[card]] = UNPINNED  # evictable, after empty slots
        changes = PoolChanges()
        for card in self.pinned:
            if self.card_slot[card] >= 0 or self.slots == 0:
                continue
            score = np.where(np.isin(self.slot_card, self.pinned), -np.inf, self.slot_score)
            slot = int(np.argmax(score))  # an empty slot has score inf: taken first
            self._put(slot, card, -np.inf, changes)
        for card in self.pinned:
            self.slot_score[self.card_slot[card]] = -np.inf
        return changes

    # --- per frame ------------------------------------------------------------------------------

    def step(
        self, positions: np.ndarray, eye: np.ndarray, forward: np.ndarray, hands: np.ndarray | None = None
    ) -> PoolChanges:
        """One frame's share of the work; returns the tiles to upload (empty on most frames)."""
        self.frame += 1
        if self.slots == 0 or self.n == 0:
            return PoolChanges()
        eye = np.asarray(eye, np.float32).reshape(3)
        forward = np.asarray(forward, np.float32).reshape(3)
        forward = forward / max(float(np.linalg.norm(forward)), 1e-9)
        if self._scan is None:
            if not self._should_start(eye, forward):
                return PoolChanges()
            extra = np.empty((0, 3), np.float32) if hands is None else np.asarray(hands, np.float32)
            self._scan = _Scan(eye, forward, extra.reshape(-1, 3))
            self._last_eye, self._last_forward = eye, forward
            self._last_start = self.frame
            self._cards_moved = False
        scan = self._scan
        stop = min(self.n, scan.start + self.budget)
        scores = self.scores(positions[scan.start : stop], scan.eye, scan.forward, scan.hands)
        cards = np.concatenate([scan.cards, np.arange(scan.start, stop)])
        scores = np.concatenate([scan.scores, scores])
        if len(cards) > self.slots:
            keep = np.argpartition(scores, self.slots - 1)[: self.slots]
            cards, scores = cards[keep], scores[keep]
        scan.cards, scan.scores, scan.start = cards, scores, stop
        if stop < self.n:
            return PoolChanges()
        self._scan = None
        self.scans_done += 1
        return self._assign(cards, scores)

    def _should_start(self, eye: np.ndarray, forward: np.ndarray) -> bool:
        if self.frame - self._last_start < self.min_frames:
            return False
        if self._last_eye is None or self._last_forward is None or self._cards_moved:
            return True
        moved = float(np.linalg.norm(eye - self._last_eye)) > self.move
        turned = float(forward @ self._last_forward) < self.turn_cos
        return moved or turned

    @staticmethod
    def scores(
        positions: np.ndarray, eye: np.ndarray, forward: np.ndarray, hands: np.ndarray | None = None
    ) -> np.ndarray:
        """Lower is more wanted: distance to the eye (x3 outside the view cone), or to a hand."""
        d = np.asarray(positions, np.float32) - eye
        dist = np.sqrt(np.einsum("ij,ij->i", d, d))
        cos = (d @ forward) / np.maximum(dist, 1e-6)
        score = np.where(cos < BEHIND_COS, dist * BEHIND_FACTOR, dist).astype(np.float32)
        if hands is not None:
            for hand in np.asarray(hands, np.float32).reshape(-1, 3):
                h = np.asarray(positions, np.float32) - hand
                score = np.minimum(score, np.sqrt(np.einsum("ij,ij->i", h, h)))
        # Cards with no finite position (hidden) are never wanted.
        return np.where(np.isfinite(score), score, np.inf).astype(np.float32)

    def _assign(self, cards: np.ndarray, scores: np.ndarray) -> PoolChanges:
        """Give the scan's best cards a slot, reusing the slots of cards no longer wanted."""
        finite = np.isfinite(scores)
        cards, scores = cards[finite], scores[finite]
        pinned = np.asarray(self.pinned, np.int64)
        if len(pinned):
            room = self.slots - len(pinned)
            others = ~np.isin(cards, pinned)
            cards, scores = cards[others], scores[others]
            if len(cards) > room:
                keep = np.argpartition(scores, room - 1)[:room] if room > 0 else np.empty(0, np.int64)
                cards, scores = cards[keep], scores[keep]
            cards = np.concatenate([pinned, cards])
            scores = np.concatenate([np.full(len(pinned), -np.inf, np.float32), scores])
        changes = PoolChanges()
        held = self.card_slot[cards] >= 0
        self.slot_score[:] = np.inf  # slots of cards no longer wanted are free to reuse ...
        self.slot_score[self.card_slot[cards[held]]] = scores[held]  # ... the others keep theirs
        free = np.flatnonzero(~np.isin(self.slot_card, cards[held]))
        # Prefer empty slots, then slots whose card is gone; a card not reassigned keeps its tile.
        free = free[np.argsort(self.slot_card[free] >= 0, kind="stable")]
        for slot, card, score in zip(free, cards[~held], scores[~held], strict=False):
            self._put(int(slot), int(card), float(score), changes)
        return changes

    def _put(self, slot: int, card: int, score: float, changes: PoolChanges) -> None:
        old = int(self.slot_card[slot])
        if old >= 0:
            self.card_slot[old] = -1
            changes.cleared.append(old)
        self.slot_card[slot] = card
        self.card_slot[card] = slot
        self.slot_score[slot] = score
        changes.loads.append((slot, card))

    @property
    def full_res_cards(self) -> np.ndarray:
        """Cards drawn at full resolution right now."""
        return self.slot_card[self.slot_card >= 0]
