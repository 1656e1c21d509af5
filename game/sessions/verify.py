"""``replay --verify``: re-run every fine-tune from the recorded edits and compare the results.

The recorded person's actions (select, grab, move, drop, undo, ...) are posted again into the
starting workspace with a real ``FineTuneController`` listening, so drops are re-interpreted and
fine-tunes re-run by today's code. Jobs start exactly where the recording says they started
(its ``JobStatus`` queued with ``task == "finetune"``), and their results are applied exactly where the
recorded ``ModelUpdated`` arrived, so drops made while a job ran are judged against the same model
as they were live. Each produced ``EditQueued`` and ``ModelUpdated`` is compared with the recorded
one; the first difference beyond the tolerance is reported by event number and time.

Tolerance (``DEFAULT_TOLERANCE``): edits and labels must match exactly; top-1 predictions may
differ on at most 0.5 % of the cards, top-5 scores by 1e-3, and card positions by 5 cm
(t-SNE's multi-threaded gradient sums are not bitwise reproducible; the training step is).
Per-card features are not compared (files since schema 3 do not store them: they follow from the
weights). Instead each re-run version's trainable weights are compared with the stored ones:
the largest difference is reported as ``weights_abs`` (0 when bitwise equal) and counted in
``identical_weights``; it is not a divergence on its own (a different torch thread count may
sum in another order), the predictions and layout above decide.

A recording that ends while a fine-tune runs (the app was killed) has no result to compare that
job with: the re-run job is cancelled, the report says so, and the worker thread is joined before
``verify_session`` returns. A daemon thread still inside torch when the interpreter finalises makes
the process abort (``terminate called without an active exception``, exit 134) after OK is printed.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from game.core import events as ev

# Kinds the system produces (``Event.derived``); everything else is the person's input.
PRODUCED = frozenset(k for k, cls in ev.EVENT_TYPES.items() if cls.derived)

DEFAULT_TOLERANCE = {
    "prediction_mismatch_fraction": 0.005,
    "score_abs": 1e-3,
    "position_m": 0.05,
    "edit_position_m": 1e-5,
}


@dataclass
class Divergence:
    seq: int
    t: float
    what: str
    detail: str


@dataclass
class VerifyReport:
    session: str
    checked_edits: int = 0
    checked_models: int = 0
    identical_weights: int = 0  # re-run versions whose trainable weights equal the stored bitwise
    compared_weights: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    worst: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    seconds: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.divergences

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def text(self) -> str:
        head = f"verify {self.session}: {self.checked_edits} edits and {self.checked_models} model versions re-run"
        worst = ", ".join(f"{k} {v:.3g}" for k, v in self.worst.items())
        lines = [head, f"  largest differences: {worst or 'none'}"]
        if self.compared_weights:
            lines.append(
                f"  trainable weights bitwise equal to the stored ones: {self.identical_weights} of "
                f"{self.compared_weights} versions"
            )
        lines.append("  tolerance: " + ", ".join(f"{k} {v:g}" for k, v in self.tolerance.items()))
        if self.note:
            lines.append(f"  note: {self.note}")
        if self.ok:
            lines.append(f"  OK: everything matches within tolerance ({self.seconds:.1f} s)")
        else:
            d = self.divergences[0]
            lines.append(f"  DIVERGED at event #{d.seq} (t={d.t:.3f} s), {d.what}: {d.detail}")
        return "\n".join(lines)


def _bump(worst: dict[str, float], key: str, value: float) -> None:
    worst[key] = max(worst.get(key, 0.0), float(value))


def compare_edits(recorded: ev.EditQueued, produced: ev.EditQueued, tol: dict[str, float]) -> str | None:
    """Why two edits differ, or None."""
    for name in ("card", "action", "old_label", "new_label", "repeats"):
        a, b = getattr(recorded, name), getattr(produced, name)
        if a != b:
            return f"{name} recorded {a!r}, re-run {b!r}"
    dist = float(np.max(np.abs(np.subtract(recorded.position, produced.position))))
    if dist > tol["edit_position_m"]:
        return f"position differs by {dist:.3g} m"
    return None


def compare_models(
    recorded: ev.ModelUpdated, produced: ev.ModelUpdated, tol: dict[str, float], worst: dict[str, float]
) -> str | None:
    """Why two model updates differ beyond the tolerance, or None (``worst`` collects maxima)."""
    if recorded.version != produced.version:
        return f"model version recorded v{recorded.version}, re-run v{produced.version}"
    r_lab, p_lab = np.asarray(recorded.labels), np.asarray(produced.labels)
    if r_lab.shape != p_lab.shape or not np.array_equal(r_lab, p_lab):
        n = int(np.sum(r_lab != p_lab)) if r_lab.shape == p_lab.shape else -1
        return f"labels differ ({n} cards)"
    r_top, p_top = np.asarray(recorded.top5_classes), np.asarray(produced.top5_classes)
    mismatch = float(np.mean(r_top[:, 0] != p_top[:, 0]))
    _bump(worst, "prediction_mismatch_fraction", mismatch)
    scores = float(np.max(np.abs(np.asarray(recorded.top5_scores) - np.asarray(produced.top5_scores))))
    _bump(worst, "score_abs", scores)
    moved = np.linalg.norm(np.asarray(recorded.positions) - np.asarray(produced.positions), axis=1)
    _bump(worst, "position_m", float(moved.max()))
    if mismatch > tol["prediction_mismatch_fraction"]:
        cards = np.flatnonzero(r_top[:, 0] != p_top[:, 0])[:8].tolist()
        return f"top-1 predictions differ on {mismatch:.2%} of cards (e.g. {cards})"
    if scores > tol["score_abs"]:
        return f"top-5 scores differ by up to {scores:.3g}"
    if moved.max() > tol["position_m"]:
        card = int(np.argmax(moved))
        return (
            f"card {card} is {moved.max():.3f} m from its recorded position (median {np.median(moved):.4f} m)"
        )
    return None


def compare_weights(recorded: bytes, produced: bytes) -> float:
    """The largest absolute difference between two safetensors blobs' common tensors (0.0 when
    the bytes are equal; inf when their names or shapes differ)."""
    if recorded == produced:
        return 0.0
    from game.nets.weights import state_from_bytes

    a, b = state_from_bytes(recorded), state_from_bytes(produced)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


def _check_weights(report: VerifyReport, reader: Any, store: Any, version: int) -> None:
    """Compare the re-run's trainable weights of ``version`` with the file's (see module docs)."""
    from game.sessions.paths import SessionError

    if version == store.base_version:
        return  # not re-run (and its bytes are the whole network)
    try:
        produced = store.weights(version)
        recorded = reader.model_weights(version)
    except (KeyError, SessionError):
        return
    diff = compare_weights(recorded, produced)
    report.compared_weights += 1
    report.identical_weights += int(diff == 0.0)
    _bump(report.worst, "weights_abs", diff)


def _starts_finetune(status: ev.JobStatus) -> bool:
    """Whether the recorded status is a fine-tune being queued (job 0 is the edit queue's
    "N edits waiting"; files from before ``task`` existed leave it empty, and their only queued
    status with a job number is the fine-tune's)."""
    return status.job_id > 0 and status.state == "queued" and status.task in ("finetune", "")


def verify_session(
    restored: Any,
    tolerance: dict[str, float] | None = None,
    progress: bool = True,
    stop_at_first: bool = True,
) -> VerifyReport:
    """Re-run the session in ``restored`` (a ``RestoredSession``) and compare; see module docs."""
    from game.core.worker import Worker
    from game.learning.controller import FineTuneController

    t_start = time.perf_counter()
    tol = dict(DEFAULT_TOLERANCE, **(tolerance or {}))
    reader = restored.reader
    report = VerifyReport(str(reader.path), tolerance=tol)
    loaded = restored.as_loaded()
    restored.layout()  # a clear error now if the file cannot seed a re-layout
    ws = loaded.workspace
    clock = [0.0]
    worker = Worker()
    controller = FineTuneController(loaded, worker, clock=lambda: clock[0], job_process=False)
    edits: deque[ev.EditQueued] = deque()
    models: deque[ev.ModelUpdated] = deque()

    def collect(event: ev.Event, _ws: Any) -> None:
        if isinstance(event, ev.EditQueued):
            edits.append(event)
        elif isinstance(event, ev.ModelUpdated):
            models.append(event)

    ws.subscribe(collect)

    def diverge(seq: int, t: float, what: str, detail: str) -> bool:
        report.divergences.append(Divergence(seq, t, what, detail))
        return stop_at_first

    unfinished: tuple[int, float] | None = None  # (seq, t) of a started job with no recorded result
    try:
        for item in reader.events():
            e, kind = item.event, item.event.kind
            clock[0] = item.t
            if kind not in PRODUCED:
                ws.post(e)
                ws.flush()
                continue
            if isinstance(e, ev.JobStatus) and _starts_finetune(e):
                started = controller.apply_edits_now()
                unfinished = (item.seq, item.t) if started else unfinished
                if not started and diverge(
                    item.seq, item.t, "fine-tune start", "a job starts here; none pending"
                ):
                    break
                ws.flush()
            elif kind == "edit":
                ws.flush()
                if not edits:
                    if diverge(item.seq, item.t, f"edit of card {e.card}", "the re-run made no edit here"):
                        break
                    continue
                why = compare_edits(e, edits.popleft(), tol)
                report.checked_edits += 1
                if why and diverge(item.seq, item.t, f"edit of card {e.card}", why):
                    break
            elif kind == "model":
                unfinished = None
                if not models:
                    worker.wait_idle(600)  # the job (or undo) runs on the worker; apply it here
                    worker.poll()
                    ws.flush()
                if not models:
                    if diverge(
                        item.seq, item.t, f"model v{e.version}", "the re-run produced no model update here"
                    ):
                        break
                    continue
                why = compare_models(e, models.popleft(), tol, report.worst)
                report.checked_models += 1
                _check_weights(report, reader, controller.store, e.version)
                if progress:
                    print(f"\rverified model v{e.version} ({report.checked_models})", end="", file=sys.stderr)
                if why and diverge(
                    item.seq,
                    item.t,
                    f"model v{e.version} ({e.summary.splitlines()[0] if e.summary else ''})",
                    why,
                ):
                    break
    finally:
        if progress:
            print(file=sys.stderr)
        ws.unsubscribe(collect)
        _stop(controller, worker)
    notes = []
    if unfinished is not None and not report.divergences and not reader.damage:
        seq, t = unfinished
        notes.append(
            f"the recording ends while the fine-tune started at event #{seq} (t={t:.3f} s) ran; "
            "its result was never recorded, so it was not compared"
        )
    if reader.damage:
        notes.append(f"the file is damaged; verified up to where it stopped ({reader.damage})")
    report.note = "; ".join(notes)
    report.seconds = time.perf_counter() - t_start
    return report


def _stop(controller: Any, worker: Any) -> None:
    """Cancel whatever the re-run still has in flight and join the worker thread.

    Nothing may be left running in torch when ``verify_session`` returns: the command exits right
    after printing, and a daemon thread inside torch at finalisation aborts the process. The exit
    handler in ``game.core.worker`` only waits a bounded time, which a busy machine can exceed.
    """
    running = getattr(controller, "_running", None)
    if running is not None and getattr(running, "cancelled", None) is not None:
        running.cancelled.set()  # the fine-tune checks this between steps
        controller.backend.cancel()
    worker.drop_queued()
    controller.close()  # queues the backend's close behind the running job
    worker.close(wait=True, timeout=None)
