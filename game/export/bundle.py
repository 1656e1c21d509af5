"""One folder with everything a session produced: labels, weights, and the layout.

``export_workspace`` takes plain state (a ``Workspace``, a state dict or safetensors bytes, and
the time of each card's last edit) so the live app, a headless ``--move`` run and a recorded
session all export through the same function.

Files written into ``out_dir``:

* ``labels.csv``: one row per card, ``card, path, split, original_label, new_label, changed,
  edit_time`` (class names; ``edit_time`` empty for cards never relabelled). It is a complete
  label file, so retraining elsewhere needs nothing else.
* ``weights.safetensors``: the fine-tuned weights, when given.
* ``projector/``: the TensorBoard Embedding Projector files (``game.export.projector``).
* ``export.json``: what was written and a few counts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from game.core.workspace import Workspace
from game.data.names import display_name
from game.export.projector import write_projector

LABEL_COLUMNS = ["card", "path", "split", "original_label", "new_label", "changed", "edit_time"]


@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    n_cards: int = 0
    n_changed: int = 0

    def summary(self) -> str:
        return f"exported {self.n_cards} cards ({self.n_changed} relabelled) to {self.out_dir}: " + ", ".join(
            str(p.relative_to(self.out_dir)) for p in self.files
        )


def _format_time(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{float(value):.3f}"


def write_labels_csv(
    path: Path, workspace: Workspace, edit_times: Mapping[int, float | str] | None = None
) -> int:
    """The label file; returns how many cards changed label."""
    names = workspace.class_names
    times = edit_times or {}
    changed = workspace.labels != workspace.original_labels
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(LABEL_COLUMNS)
        for i in range(workspace.n_cards):
            w.writerow(
                [
                    i,
                    display_name(workspace.sources[i]),
                    "train" if workspace.is_train[i] else "heldout",
                    display_name(names[int(workspace.original_labels[i])]),
                    display_name(names[int(workspace.labels[i])]),
                    int(changed[i]),
                    _format_time(times.get(i)) if changed[i] else "",
                ]
            )
    return int(changed.sum())


def write_weights(path: Path, weights: object) -> None:
    """``weights``: a state dict, an ``nn.Module`` or safetensors bytes."""
    from torch import nn

    from game.nets.weights import save_weights, state_from_bytes

    if isinstance(weights, (bytes, bytearray)):
        weights = state_from_bytes(bytes(weights))
    if not isinstance(weights, (dict, nn.Module)):
        raise TypeError(f"weights must be a state dict, a module or safetensors bytes, not {type(weights)}")
    save_weights(weights, path)


def export_workspace(
    workspace: Workspace,
    weights: object | None,
    edit_times: Mapping[int, float | str] | None,
    out_dir: str | Path,
    include_features: bool = True,
    extra: Mapping[str, object] | None = None,
) -> ExportResult:
    """Write labels, weights (if any) and the projector files for ``workspace`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out, n_cards=workspace.n_cards)
    result.n_changed = write_labels_csv(out / "labels.csv", workspace, edit_times)
    result.files.append(out / "labels.csv")
    if weights is not None:
        write_weights(out / "weights.safetensors", weights)
        result.files.append(out / "weights.safetensors")
    names = workspace.class_names
    changed = workspace.labels != workspace.original_labels
    names = [display_name(n) for n in names]  # a session may hold names that are not UTF-8
    metadata: dict[str, Sequence[object]] = {
        "label": [names[int(c)] for c in workspace.labels],
        "original_label": [names[int(c)] for c in workspace.original_labels],
        "predicted": [names[int(c)] for c in workspace.predictions],
        "changed": [int(c) for c in changed],
        "split": ["train" if t else "heldout" for t in workspace.is_train],
        "path": [display_name(s) for s in workspace.sources],
    }
    features = np.asarray(workspace.features) if include_features else None
    result.files += write_projector(
        out / "projector", workspace.positions, metadata, images=workspace.images, features=features
    )
    manifest = {
        "cards": workspace.n_cards,
        "relabelled": result.n_changed,
        "classes": list(names),
        "model_version": workspace.model_version,
        "feature_layer": workspace.feature_layer,
        "files": [str(p.relative_to(out)) for p in result.files],
        **dict(extra or {}),
    }
    (out / "export.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    result.files.append(out / "export.json")
    return result
