"""The edit queue: trainable edits wait here until the person pauses, then go to one job.

Kept apart from the controller because this is the part that decides *when* a fine-tune starts:
``delay_seconds`` after the last trainable edit (so a person can move several cards into one
job), with the newest edit of a card replacing older ones. No threads, no torch: the frame loop
owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from game.core import events as ev
from game.learning.finetune import latest_edits


class EditQueue:
    """Pending edits by card, and the time of the last one."""

    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = float(delay_seconds)
        self.pending: dict[int, ev.EditQueued] = {}
        self.last_edit: float | None = None

    def __len__(self) -> int:
        return len(self.pending)

    def __bool__(self) -> bool:
        return bool(self.pending)

    def __iter__(self) -> Iterator[int]:
        return iter(self.pending)

    def add(self, edit: ev.EditQueued, now: float) -> int:
        """Queue a trainable edit (a card's newer edit replaces its older one); how many wait now."""
        self.pending.pop(edit.card, None)
        self.pending[edit.card] = edit
        self.last_edit = now
        return len(self.pending)

    def discard(self, card: int) -> None:
        """The card was dropped somewhere that trains nothing (unsure): its pending edit goes."""
        self.pending.pop(card, None)

    def due(self, now: float) -> bool:
        """Whether the person paused long enough since the last edit for a job to start."""
        return (
            bool(self.pending) and self.last_edit is not None and now - self.last_edit >= self.delay_seconds
        )

    def take(self) -> list[ev.EditQueued]:
        """Every pending edit for one job (newest per card); the queue is empty after."""
        edits = latest_edits(list(self.pending.values()))
        self.clear()
        return edits

    def clear(self) -> int:
        n = len(self.pending)
        self.pending.clear()
        self.last_edit = None
        return n

    def put_back(self, edits: Iterable[ev.EditQueued]) -> None:
        """A job failed: its edits wait again, unless the card was dropped anew meanwhile."""
        for edit in edits:
            self.pending.setdefault(edit.card, edit)

    def items(self) -> Iterable[tuple[int, ev.EditQueued]]:
        return self.pending.items()
