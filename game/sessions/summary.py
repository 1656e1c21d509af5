"""What happened in a session, as JSON and as text: events, edits, accuracy per model version.

Computed from the file alone (the starting predictions and every ``ModelUpdated`` are in it), so
a summary needs neither the dataset nor the network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from game.core import events as ev
from game.sessions.reader import SessionReader


def heldout_accuracy(top5_classes: np.ndarray, original_labels: np.ndarray, is_train: np.ndarray) -> float:
    """Top-1 accuracy on the held-out cards against the labels the dataset came with."""
    held = ~np.asarray(is_train, dtype=bool)
    n = min(len(held), len(top5_classes), len(original_labels))
    held = held[:n]
    if not held.any():
        return float("nan")
    pred = np.asarray(top5_classes)[:n, 0]
    return float(np.mean(pred[held] == np.asarray(original_labels)[:n][held]))


def summarize(reader: SessionReader) -> dict[str, Any]:
    """A JSON-ready summary of the session in ``reader``."""
    initial = reader.initial_arrays()
    original = initial.get("original_labels")
    is_train = initial.get("is_train")
    names = reader.class_names

    def name(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    models: list[dict[str, Any]] = []
    if original is not None and "top5_classes" in initial:
        assert is_train is not None  # stored with original_labels
        models.append(
            {
                "version": int(reader.meta.get("model_version", 0)),
                "t": 0.0,
                "heldout_accuracy": round(heldout_accuracy(initial["top5_classes"], original, is_train), 4),
                "changed_predictions": 0,
                "summary": "start",
            }
        )
    edits: list[dict[str, Any]] = []
    undos = 0
    jobs: dict[str, int] = {}
    previous = initial.get("top5_classes")
    for item in reader.events():  # all of them, so that damage anywhere is found and reported
        e = item.event
        if e.kind == "edit":
            assert isinstance(e, ev.EditQueued)
            edits.append(
                {
                    "t": round(item.t, 3),
                    "card": e.card,
                    "action": e.action,
                    "from": name(e.old_label),
                    "to": name(e.new_label),
                    "repeats": e.repeats,
                }
            )
        elif e.kind == "undo":
            undos += 1
        elif e.kind == "job":
            assert isinstance(e, ev.JobStatus)
            jobs[e.state] = jobs.get(e.state, 0) + 1
        elif e.kind == "model":
            assert isinstance(e, ev.ModelUpdated)
            top5 = np.asarray(e.top5_classes)
            changed = 0
            if previous is not None and len(previous) == len(top5):
                changed = int(np.sum(previous[:, 0] != top5[:, 0]))
            previous = top5
            acc = float("nan")
            if original is not None:
                assert is_train is not None  # stored with original_labels
                acc = heldout_accuracy(top5, original, is_train)
            models.append(
                {
                    "version": int(e.version),
                    "t": round(item.t, 3),
                    "heldout_accuracy": round(acc, 4),
                    "changed_predictions": changed,
                    "summary": e.summary,
                }
            )
    frames = len(reader.poses())
    duration = reader.duration
    return {
        "file": str(reader.path),
        "scene": reader.meta.get("scene_name", ""),
        "started_at": reader.meta.get("started_at", ""),
        "schema_version": reader.schema_version,
        "duration_s": round(duration, 3),
        "cards": int(reader.meta.get("n_cards", 0)),
        "events": reader.counts_by_kind(),
        "edits": edits,
        "undos": undos,
        "jobs": jobs,
        "models": models,
        "pose_frames": frames,
        "pose_rate_hz": round(frames / duration, 1) if duration > 0 else 0.0,
        "stored_checkpoints": sorted({v for v, _, _ in reader.model_versions()}),
        "damage": reader.damage,
        "skipped_event_kinds": dict(reader.skipped_kinds),
    }


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines."""
    lines = [
        f"Session {summary['file']}",
        f"  scene: {summary['scene'] or '?'}   started: {summary['started_at']}   "
        f"duration: {summary['duration_s']:.1f} s   cards: {summary['cards']}",
        "  events: " + (", ".join(f"{k} {n}" for k, n in summary["events"].items()) or "none"),
        f"  poses: {summary['pose_frames']} frames ({summary['pose_rate_hz']} Hz)",
        f"  edits: {len(summary['edits'])}   undos: {summary['undos']}   "
        f"checkpoints stored: {summary['stored_checkpoints']}",
    ]
    for e in summary["edits"]:
        lines.append(
            f"    t={e['t']:8.2f} s  card {e['card']:5d}  {e['action']:9s} {e['from']} -> {e['to']}"
            f"  (x{e['repeats']})"
        )
    lines.append("  held-out accuracy per model version:")
    for m in summary["models"]:
        lines.append(
            f"    v{m['version']:<3d} t={m['t']:8.2f} s  accuracy {m['heldout_accuracy']:.4f}  "
            f"changed predictions {m['changed_predictions']:4d}  {(m['summary'] or '').splitlines()[0] if m['summary'] else ''}"
        )
    if summary["damage"]:
        lines.append(f"  DAMAGED: {summary['damage']}")
    if summary["skipped_event_kinds"]:
        lines.append(f"  skipped unknown event kinds: {summary['skipped_event_kinds']}")
    return "\n".join(lines)
