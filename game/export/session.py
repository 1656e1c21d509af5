"""Exporting a recorded session: replay it to its end, then ``export_workspace``.

Events are applied to the restored starting workspace in order, exactly as replay does, so the
export shows the state the person ended with. Edit times are the session clock of each card's
last relabel (with the wall-clock time when the file records when it started); the weights are
those of the model version the workspace ends at (after an undo, not the last one stored), the
starting weights with any head-only checkpoint laid over them.
"""

from __future__ import annotations

import time
from pathlib import Path

from game.core.events import EditQueued
from game.export.bundle import ExportResult, export_workspace


def _wall_clock(started_epoch: str | None, t: float) -> str:
    if not started_epoch:
        return f"{t:.3f}"
    try:
        stamp = float(started_epoch) + t
    except ValueError:
        return f"{t:.3f}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp)) + f".{int((stamp % 1) * 1000):03d}"


def export_session(path: str | Path, out_dir: str | Path, check_fingerprint: bool = True) -> ExportResult:
    """Replay the session at ``path`` to its end and export the final state into ``out_dir``."""
    from game.sessions.reader import SessionReader
    from game.sessions.restore import restore

    with SessionReader(path) as reader:
        session = restore(reader, check_fingerprint=check_fingerprint)
        ws = session.workspace
        edit_times: dict[int, str] = {}
        started = reader.meta.get("started_epoch")
        for item in reader.events():
            e = item.event
            ws.apply(e)
            if isinstance(e, EditQueued) and e.action == "relabel":
                edit_times[e.card] = _wall_clock(started, item.t)
        # The model the person ended with: after an undo that is not the last one stored.
        stored = [v for v, _, _ in reader.model_versions()]
        weights = None
        if stored:
            version = ws.model_version if ws.model_version in stored else stored[-1]
            weights = session.network(version).module.state_dict()
        extra = {"session": str(Path(path).resolve()), "damage": reader.damage or ""}
        return export_workspace(ws, weights, edit_times, out_dir, extra=extra)
