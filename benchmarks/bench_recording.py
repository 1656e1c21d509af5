"""Session recording: cost on the frame loop, file size per minute, seek time in a long session.

    .venv/bin/python benchmarks/bench_recording.py [--seconds 10] [--minutes 30]

1. Frame loop at 90 Hz (paced with sleep, as in VR): each frame posts one CardMoved (a drag),
   flushes the workspace and computes head + two controller poses. The same loop runs without a
   recorder (the peer) and with one (subscribed listener + ``record_pose``); the difference of
   the main thread's busy time per frame is the recording cost. Target: <= 0.2 ms per frame.
2. Size per minute: from that recorded loop (poses + an event every frame), and from a synthetic
   long session (poses at 90 Hz, drags 20 % of the time, a fine-tune every 30 s on the digits
   scene's shapes: 1,797 cards, 128-d features, ~0.6 MB of weights per version).
3. Seek: the time to open the synthetic session and find the middle by time (the index), and to
   rebuild the workspace state at the middle with ``ReplayDriver.seek``. Target: <= 0.5 s.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from game.core import events as ev  # noqa: E402
from game.core.workspace import Workspace  # noqa: E402
from game.sessions.reader import SessionReader  # noqa: E402
from game.sessions.recorder import SessionRecorder  # noqa: E402
from game.sessions.replay import ReplayDriver  # noqa: E402

HZ = 90.0


def digits_like_workspace(n: int = 1797, dims: int = 128, classes: int = 10) -> Workspace:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    top5 = np.stack([(labels + k) % classes for k in range(5)], axis=1)
    return Workspace(
        images=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
        labels=labels,
        class_names=[str(i) for i in range(classes)],
        top5_classes=top5,
        top5_scores=rng.random((n, 5)).astype(np.float32),
        features=rng.normal(size=(n, dims)).astype(np.float32),
        positions=rng.normal(size=(n, 3)).astype(np.float32),
        is_train=rng.random(n) > 0.2,
        sources=[f"digits:{i}" for i in range(n)],
    )


def poses_at(t: float) -> tuple[tuple, tuple, tuple]:
    """Head and two controllers moving smoothly (what a VR frame would read from OpenVR)."""
    s, c = math.sin(t), math.cos(t)
    head = (0.1 * s, 0.1 * c, 1.7, c, 0.0, 0.0, s)
    left = ((-0.2 + 0.05 * s, 0.3, 1.2), (1.0, 0.0, 0.0, 0.0))
    right = ((0.2, 0.3 + 0.05 * c, 1.2), (c, s, 0.0, 0.0))
    return head, left, right


def frame_loop(seconds: float, recorder: SessionRecorder | None, ws: Workspace) -> list[float]:
    """Busy time (seconds) of each frame's main-thread work, paced at 90 Hz."""
    if recorder is not None:
        recorder.attach(ws)
    busy = []
    period = 1.0 / HZ
    start = time.perf_counter()
    next_frame = start
    for i in range(int(seconds * HZ)):
        t0 = time.perf_counter()
        t = t0 - start
        ws.post(ev.CardMoved(i % ws.n_cards, (0.01 * i, 0.0, 1.2)))
        ws.flush()
        head, left, right = poses_at(t)
        if recorder is not None:
            recorder.record_pose(None, head, left, right)
        busy.append(time.perf_counter() - t0)
        next_frame += period
        delay = next_frame - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return busy


def micro(n: int = 100_000) -> dict[str, float]:
    """Per-call cost of the two hot-path calls in a tight loop (microseconds)."""
    with tempfile.TemporaryDirectory() as d:
        rec = SessionRecorder(Path(d) / "micro.session.sqlite", flush_interval=0.5)
        head, left, right = poses_at(0.3)
        t0 = time.perf_counter()
        for i in range(n):
            rec.record_pose(i / HZ, head, left, right)
        pose_us = (time.perf_counter() - t0) / n * 1e6
        e = ev.CardMoved(3, (0.1, 0.2, 0.3))
        t0 = time.perf_counter()
        for _ in range(n):
            rec.on_event(e)
        event_us = (time.perf_counter() - t0) / n * 1e6
        rec.close()
    return {"record_pose_us": pose_us, "on_event_us": event_us}


def synthetic_session(path: Path, minutes: float, ws: Workspace) -> dict[str, float]:
    """Write a long session as fast as possible on a fake clock; returns its size figures."""
    rng = np.random.default_rng(1)
    clock = [0.0]
    rec = SessionRecorder(path, None, ws, clock=lambda: clock[0])
    rec.record_model(0, rng.bytes(600_000), t=0.0)
    n_frames = int(minutes * 60 * HZ)
    drag_card, version = -1, 0
    n_events = 0
    for i in range(n_frames):
        t = i / HZ
        clock[0] = t
        head, left, right = poses_at(t)
        rec.record_pose(t, head, left, right)
        phase = t % 10.0  # every 10 s: 2 s drag then a drop and an edit
        if phase < 2.0:
            if drag_card < 0:
                drag_card = int(rng.integers(0, ws.n_cards))
                rec.on_event(ev.CardGrabbed(drag_card, (0.0, 0.0, 1.0)))
                n_events += 1
            rec.on_event(ev.CardMoved(drag_card, (phase, 0.0, 1.0)))
            n_events += 1
        elif drag_card >= 0:
            rec.on_event(ev.CardDropped(drag_card, (2.0, 0.0, 1.0), 3, 0.2))
            rec.on_event(ev.EditQueued(drag_card, "relabel", 1, 3, 1, (2.0, 0.0, 1.0)))
            n_events += 2
            drag_card = -1
        if i and i % int(30 * HZ) == 0:  # a fine-tune every 30 s
            version += 1
            rec.on_event(
                ev.ModelUpdated(
                    version=version,
                    labels=ws.labels,
                    top5_classes=ws.top5_classes,
                    top5_scores=rng.random(ws.top5_scores.shape).astype(np.float32),
                    features=rng.normal(size=ws.features.shape).astype(np.float32),
                    positions=rng.normal(size=ws.positions.shape).astype(np.float32),
                    summary=f"v{version}",
                )
            )
            rec.record_model(version, rng.bytes(600_000))
            n_events += 1
        if i % 2000 == 0:
            rec.flush()  # keep the queue from growing without bound on the fake clock
    rec.close()
    return {"events": n_events, "frames": n_frames, "versions": version}


def table_bytes(path: Path) -> dict[str, int]:
    """Payload bytes per kind of content (SQLite's own overhead not counted)."""
    import sqlite3

    conn = sqlite3.connect(path)
    q = {
        "poses": 'SELECT sum(length(times) + length("values")) FROM poses',
        "event fields": "SELECT sum(length(fields)) FROM events",
        "event arrays": "SELECT sum(length(npy)) FROM event_arrays",
        "weights": "SELECT sum(length(data)) FROM weights",
    }
    out = {k: int(conn.execute(sql).fetchone()[0] or 0) for k, sql in q.items()}
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each 90 Hz loop")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the synthetic session")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")

    m = micro()
    print(f"hot-path calls: record_pose {m['record_pose_us']:.2f} us, on_event {m['on_event_us']:.2f} us")

    with tempfile.TemporaryDirectory() as d:
        ws = digits_like_workspace()
        base = frame_loop(args.seconds, None, ws.copy())
        path = Path(d) / "loop.session.sqlite"
        rec = SessionRecorder(path, None, ws)
        busy = frame_loop(args.seconds, rec, ws)
        rec.close()
        empty = Path(d) / "empty.session.sqlite"
        SessionRecorder(empty, None, ws).close()  # the starting state alone (features, labels, ...)
        size_loop = path.stat().st_size - empty.stat().st_size
        b_med, r_med = statistics.median(base) * 1e3, statistics.median(busy) * 1e3
        b_p99 = float(np.percentile(base, 99)) * 1e3
        r_p99 = float(np.percentile(busy, 99)) * 1e3
        print(
            f"90 Hz loop, {len(busy)} frames: busy per frame median {b_med:.3f} ms without recording, "
            f"{r_med:.3f} ms with (+{r_med - b_med:.3f} ms; target <= 0.2 ms); "
            f"p99 {b_p99:.3f} -> {r_p99:.3f} ms; mean +{(np.mean(busy) - np.mean(base)) * 1e3:.3f} ms"
        )
        print(
            f"size, loop session (poses + one event per frame): "
            f"{size_loop / args.seconds * 60 / 1e6:.2f} MB per minute "
            f"(+ {empty.stat().st_size / 1e6:.2f} MB once for the starting state)"
        )

        long_path = Path(d) / "long.session.sqlite"
        t0 = time.perf_counter()
        info = synthetic_session(long_path, args.minutes, ws)
        write_s = time.perf_counter() - t0
        size = long_path.stat().st_size
        print(
            f"synthetic {args.minutes:.0f}-minute session: {info['frames']} pose frames, {info['events']} events, "
            f"{info['versions']} fine-tunes; {size / 1e6:.1f} MB = {size / args.minutes / 1e6:.2f} MB per minute "
            f"(written in {write_s:.1f} s)"
        )

        parts = table_bytes(long_path)
        print(
            "  of which per minute: "
            + ", ".join(f"{k} {v / args.minutes / 1e6:.2f} MB" for k, v in parts.items())
        )

        mid = args.minutes * 60 / 2
        t0 = time.perf_counter()
        reader = SessionReader(long_path)
        seq = reader.seek(mid)
        first = next(reader.events(seq))
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        live = reader.initial_workspace(ws.images)
        driver = ReplayDriver(reader, live, auto_flush=True)
        driver.seek(mid)
        seek_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = reader.initial_workspace(ws.images)
        for item in reader.events(1, reader.last_seq_at(mid)):
            naive.apply(item.event)
        naive_s = time.perf_counter() - t0
        assert np.array_equal(naive.positions, live.positions), "seek state differs from a full replay"
        assert np.array_equal(naive.card_state, live.card_state)
        print(
            f"seek to the middle (t={mid:.0f} s): open + index lookup + first event {index_s * 1e3:.1f} ms "
            f"(event #{first.seq}); full workspace state via ReplayDriver.seek {seek_s * 1e3:.1f} ms "
            f"vs {naive_s * 1e3:.0f} ms replaying every event from the start "
            f"({naive_s / seek_s:.0f}x); target <= 500 ms"
        )
        reader.close()


if __name__ == "__main__":
    main()
