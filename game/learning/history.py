"""Every model version as a checkpoint, so undo can go back and a failed job loses nothing.

A checkpoint holds what the person saw at that version (labels, top-5, features, layout) and the
weights of the parameters a job could change (the head, unless fine-tuning everything) as
safetensors bytes; those are what a session stores per version. The base version's bytes (the
whole network) are made by ``ModelStore.weights`` on the background thread that asks, each time,
and not kept (the checkpoint's stay ``b""``). Version numbers are never reused: after an undo
from v2 to v1, the next job makes v3, so a session file's versions stay unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from game.layout.projector import LayoutState


@dataclass
class Checkpoint:
    version: int
    weights: bytes  # safetensors of the trainable part (the base version: b"", see ``ModelStore.weights``)
    labels: np.ndarray
    top5_classes: np.ndarray
    top5_scores: np.ndarray
    features: np.ndarray
    layout: LayoutState
    summary: str = ""
    path: str = ""  # where it was written, when a checkpoint folder is set

    @property
    def name(self) -> str:
        return self.path or f"v{self.version}"


class ModelHistory:
    """A stack of checkpoints: the top is the live model; ``pop`` is undo."""

    def __init__(self) -> None:
        self._stack: list[Checkpoint] = []
        self._highest = -1

    def __len__(self) -> int:
        return len(self._stack)

    @property
    def current(self) -> Checkpoint:
        return self._stack[-1]

    @property
    def previous(self) -> Checkpoint | None:
        return self._stack[-2] if len(self._stack) > 1 else None

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Every kept checkpoint, oldest first."""
        return list(self._stack)

    @property
    def versions(self) -> list[int]:
        return [c.version for c in self._stack]

    def next_version(self) -> int:
        return self._highest + 1

    def find(self, version: int) -> Checkpoint:
        for cp in self._stack:
            if cp.version == version:
                return cp
        raise KeyError(f"no checkpoint for version {version} (kept: {self.versions})")

    def push(self, checkpoint: Checkpoint) -> Checkpoint:
        if checkpoint.version <= self._highest:
            raise ValueError(f"version {checkpoint.version} is not newer than {self._highest}")
        if self._stack:
            # The bounds that speed up the next local re-layout serve the live version only (8 MB
            # at 50k cards per version otherwise); an undo's next job searches every card again.
            self._stack[-1].layout.neighbour_gaps = None
        self._stack.append(checkpoint)
        self._highest = checkpoint.version
        return checkpoint

    def pop(self) -> Checkpoint:
        """Drop the live version (undo); the base version is never dropped."""
        if len(self._stack) < 2:
            raise IndexError("nothing to undo")
        return self._stack.pop()


def write_checkpoint_file(directory: str | Path, version: int, weights: bytes) -> str:
    """Write one version's weights into the checkpoint folder (a background thread's work)."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model-v{version:04d}.safetensors"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(weights)
    tmp.replace(path)
    return str(path)
