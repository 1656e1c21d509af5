"""Every model version as a checkpoint, so undo can go back and a failed job loses nothing.

A checkpoint holds what the person saw at that version (labels, top-5, features, layout) and the
weights as safetensors bytes. Version 0 stores the whole network; later versions store only the
parameters a job could change (the head, unless fine-tuning everything), which keeps an
AlexNet-sized history in memory affordable. ``full_state`` merges them back into a whole state dict.
Version numbers are never reused: after an undo from v2 to v1, the next job makes v3, so a session
file's versions stay unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from game.layout.projector import LayoutState
from game.nets.weights import state_from_bytes


@dataclass
class Checkpoint:
    version: int
    weights: bytes  # safetensors bytes (the whole network for version 0, else changed params)
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

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
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

    def push(self, checkpoint: Checkpoint) -> Checkpoint:
        if checkpoint.version <= self._highest:
            raise ValueError(f"version {checkpoint.version} is not newer than {self._highest}")
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"model-v{checkpoint.version:04d}.safetensors"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(checkpoint.weights)
            tmp.replace(path)
            checkpoint.path = str(path)
        self._stack.append(checkpoint)
        self._highest = checkpoint.version
        return checkpoint

    def pop(self) -> Checkpoint:
        """Drop the live version (undo); the base version 0 is never dropped."""
        if len(self._stack) < 2:
            raise IndexError("nothing to undo")
        return self._stack.pop()

    def full_state(self, version: int | None = None) -> dict[str, torch.Tensor]:
        """The whole state dict of ``version`` (default: the live one)."""
        target = self.current.version if version is None else version
        state: dict[str, torch.Tensor] = {}
        for cp in self._stack:
            state.update(state_from_bytes(cp.weights))
            if cp.version == target:
                return state
        raise KeyError(f"no checkpoint for version {target}")

    def full_bytes(self, version: int | None = None) -> bytes:
        """``full_state`` as safetensors bytes (what the session recorder stores)."""
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in self.full_state(version).items()})
