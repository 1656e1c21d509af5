"""Frame gaps of the REAL app while a fine-tune job runs, and drop -> tween start latency.

Run: ``.venv/bin/python benchmarks/bench_frame_gap.py [--size 640x400] [--drops 5] [--json F]``

Opens the embedded default (digits), builds ``LatentReachApp(offscreen=True)``, attaches the
fine-tune controller exactly as the desktop game does (``game.assembly.Learning``), then steps frames with wall-clock ``dt``, paced
to ``--fps`` (90 by default, like a vsynced headset loop; 0 runs uncapped). ``--drops`` times it
drops a card into another class's cluster by posting ``CardGrabbed`` + ``CardDropped`` (as the
hands do) and keeps stepping until the frame that applies the job's ``ModelUpdated`` (the start
of the tween): that is the drop -> tween latency (it includes the scene's ``delay_seconds``).

A frame's *gap* is its end minus the later of the previous frame's end and its own due time: the
frame's work plus any delay in waking up for it (uncapped: simply the time between frame ends).
Gaps are tagged by what was going on: *idle* (nothing pending, no job, no tween), *pending* (the
``delay_seconds`` before the job starts), *job* (the fine-tune job in flight), *apply* (the frame
that applies the result), *tween* (cards moving to their new places). The idle frames of the same
run are the peer: ``job max / idle max`` and ``job p50 / idle p50`` are load-robust figures on a
shared machine.

``--modes`` runs the same drops with the job on a thread of this process (``thread``: the GIL is
shared with the frame loop) and in the persistent child process (``process``,
``learning.job_process``), one after the other in the same app.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_GAP_MS = 11.0
TARGET_TWEEN_S = 1.0


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _summary(values: list[float]) -> dict:
    return {
        "frames": len(values),
        "p50_ms": _pct(values, 50) * 1e3,
        "p95_ms": _pct(values, 95) * 1e3,
        "max_ms": (max(values) if values else float("nan")) * 1e3,
    }


def run_mode(
    app, learning, mode: str, drops: int, idle_seconds: float, seed: int, fps: float, nice: int
) -> dict:
    """Attach a controller with ``mode`` ("thread", "process" or "process:NICE"), drop, time frames."""
    if mode.startswith("process:"):
        nice = int(mode.split(":", 1)[1])
    import dataclasses

    from game.core import events as ev
    from game.learning.headless import drop_position

    loaded = app.loaded
    loaded.scene.learning = dataclasses.replace(
        loaded.scene.learning, job_process=mode.startswith("process"), job_nice=nice
    )
    learning.restart(loaded)  # closes the previous mode's controller (and its job process)
    ctl = learning.controller
    ws = loaded.workspace
    rng = np.random.default_rng(seed)

    applied: list[float] = []

    def listen(event, _ws) -> None:
        if isinstance(event, ev.ModelUpdated):
            applied.append(time.perf_counter())
        elif isinstance(event, (ev.Message, ev.EditQueued)) or (
            isinstance(event, ev.JobStatus) and event.state not in ("running",)
        ):
            print(f"[{mode}] {event}", file=sys.stderr)

    ws.subscribe(listen)
    gaps: dict[str, list[float]] = {"idle": [], "pending": [], "job": [], "apply": [], "tween": []}
    period = 1.0 / fps if fps > 0 else 0.0
    clock = {"start": time.perf_counter(), "end": time.perf_counter(), "due": time.perf_counter()}

    def frame(tag: str | None) -> None:
        """One frame, paced to ``fps`` like a vsynced loop; its gap is measured from when it was due.

        The gap is this frame's end minus the later of (the previous frame's end, this frame's due
        time): the frame's own work plus any delay in waking up for it. Uncapped, that is simply the
        time between two frame ends.
        """
        if period:
            wait = clock["due"] - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        start = time.perf_counter()
        app.step(min(start - clock["start"], 0.1))  # wall-clock dt, as the running game gets it
        end = time.perf_counter()
        if tag is not None:
            gaps[tag].append(end - max(clock["end"], clock["due"] if period else clock["end"]))
        clock["start"], clock["end"] = start, end
        clock["due"] = max(clock["due"] + period, end) if period else end

    def tag_now(tween_until: float) -> str:
        if ctl.busy:
            return "job"
        if ctl.pending:
            return "pending"
        if time.perf_counter() < tween_until:
            return "tween"
        return "idle"

    # Warm-up: the controller's prepare job (base weights, frozen stem; the child's imports).
    t0 = time.perf_counter()
    while not ctl.ready or app.worker.busy:
        frame(None)
        if time.perf_counter() - t0 > 300:
            raise TimeoutError("the controller's prepare job did not finish")
    prepare_s = time.perf_counter() - t0
    print(f"[{mode}] controller ready after {prepare_s:.1f} s", file=sys.stderr)
    for _ in range(30):
        frame(None)

    tween_s = loaded.scene.world.tween_seconds
    latencies, job_seconds = [], []
    tween_until = 0.0
    for i in range(drops):
        end_idle = time.perf_counter() + idle_seconds
        while time.perf_counter() < end_idle:
            frame(tag_now(tween_until))
        labels = ws.labels
        card = int(rng.integers(len(labels)))
        target = int((labels[card] + 1 + rng.integers(ws.n_classes - 1)) % ws.n_classes)
        pos = drop_position(loaded, card, target, rng)
        n_applied = len(applied)
        ws.post(ev.CardGrabbed(card, tuple(map(float, ws.positions[card])), hand="bench"))
        t_drop = time.perf_counter()
        ws.post(ws.drop_event(card, pos, hand="bench"))
        while len(applied) == n_applied:
            tag = tag_now(0.0) if ctl.busy or ctl.pending else "job"
            frame(tag)
            if len(applied) > n_applied:  # this frame applied the ModelUpdated (labels, tween start)
                gaps["apply"].append(gaps[tag].pop())
            if time.perf_counter() - t_drop > 120:
                raise TimeoutError(f"drop {i}: no ModelUpdated after 120 s")
        latencies.append(applied[n_applied] - t_drop)
        print(
            f"[{mode}] drop {i + 1}/{drops}: card {card} -> class {target}, tween after {latencies[-1]:.2f} s",
            file=sys.stderr,
        )
        if ctl.last_result is not None:
            job_seconds.append(ctl.last_result.seconds.get("total", float("nan")))
        tween_until = time.perf_counter() + tween_s
    end_idle = time.perf_counter() + max(idle_seconds, tween_s)
    while time.perf_counter() < end_idle:
        frame(tag_now(tween_until))
    ws.unsubscribe(listen)
    return {
        "mode": mode,
        "prepare_s": prepare_s,
        "gaps": {k: _summary(v) for k, v in gaps.items()},
        "drop_to_tween_s": latencies,
        "drop_to_tween_median_s": statistics.median(latencies),
        "job_total_s": job_seconds,
        "controller": ctl,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x400", help="offscreen buffer WxH (default 640x400)")
    parser.add_argument("--drops", type=int, default=5)
    parser.add_argument("--idle", type=float, default=1.5, help="idle seconds before each drop")
    parser.add_argument(
        "--modes", default="thread,process", help="comma list of thread, process, process:NICE"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nice", type=int, default=5, help="learning.job_nice for the process mode")
    parser.add_argument("--fps", type=float, default=90.0, help="frame pacing like vsync (0: uncapped)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="GIL switch interval in ms after the app starts (default: the app's own, 1 ms; Python's is 5)",
    )
    args = parser.parse_args(argv)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints every thread's stack
    w, h = (int(v) for v in args.size.lower().split("x"))

    from game.app import LatentReachApp
    from game.assembly import Learning
    from game.pipeline import open_scene

    loaded = open_scene(None)
    app = LatentReachApp(loaded, offscreen=True, size=(w, h))
    learning = Learning(app)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval / 1000.0)
    print(f"GIL switch interval {1000 * sys.getswitchinterval():g} ms", flush=True)
    results = []
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            results.append(
                run_mode(app, learning, mode, args.drops, args.idle, args.seed, args.fps, args.nice)
            )
    finally:
        controllers = [r.pop("controller") for r in results]
        for ctl in controllers:
            ctl.close()
        app.worker.close(wait=True, timeout=30)
        app.destroy()

    load = os.getloadavg()
    print(
        f"\nframe gaps of LatentReachApp offscreen {w}x{h}, paced at {args.fps:g} fps (0: uncapped), "
        f"{args.drops} drops per mode, load avg {load[0]:.2f}"
    )
    print(f"{'mode':8} {'phase':8} {'frames':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for r in results:
        for phase, s in r["gaps"].items():
            print(
                f"{r['mode']:8} {phase:8} {s['frames']:6d} {s['p50_ms']:8.2f} {s['p95_ms']:8.2f} {s['max_ms']:8.2f}"
            )
    print()
    for r in results:
        idle, job = r["gaps"]["idle"], r["gaps"]["job"]
        lat = ", ".join(f"{x:.2f}" for x in r["drop_to_tween_s"])
        jobs = ", ".join(f"{x:.2f}" for x in r["job_total_s"])
        verdict = "met" if job["max_ms"] <= TARGET_GAP_MS else "NOT met"
        print(
            f"{r['mode']}: longest gap while a job ran {job['max_ms']:.1f} ms (target <= {TARGET_GAP_MS} ms: "
            f"{verdict}); idle max {idle['max_ms']:.1f} ms; job max / idle max = "
            f"{job['max_ms'] / idle['max_ms']:.2f}, job p50 / idle p50 = {job['p50_ms'] / idle['p50_ms']:.2f}"
        )
        verdict = "met" if r["drop_to_tween_median_s"] <= TARGET_TWEEN_S else "NOT met"
        print(
            f"{r['mode']}: drop -> tween start median {r['drop_to_tween_median_s']:.2f} s "
            f"(target <= {TARGET_TWEEN_S} s: {verdict}); each: {lat}; job totals: {jobs}; "
            f"prepare {r['prepare_s']:.1f} s"
        )
    if len(results) == 2:
        a, b = results
        print(
            f"{b['mode']} / {a['mode']}: longest job gap {b['gaps']['job']['max_ms'] / a['gaps']['job']['max_ms']:.2f}, "
            f"drop->tween median {b['drop_to_tween_median_s'] / a['drop_to_tween_median_s']:.2f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"size": [w, h], "drops": args.drops, "loadavg": list(load), "results": results}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
