"""A fine-tune's time in a real window on a software renderer, with and without frame pacing.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_frame_pacing.py [--scene scenes/shapes.toml] [--runs 2]``
(needs Xvfb and xdotool, as the desktop tests do).

Why: on a machine without a GPU driver the window is drawn by Mesa's llvmpipe, which takes the
CPU the frame loop is given, frame after frame; the job process runs at a lower priority, so a
fine-tune could take minutes (issue 17's outside try: 263 s for a first job over 5,200 photos).
``game.world.frame_pacing`` pauses the frame loop during jobs on a software renderer.

Per run, alternating ``LATENT_REACH_FRAME_PACING=1`` (the default) and ``=0``: ``latent-reach run``
opens the scene in a window on an Xvfb screen, a card is dragged with real pointer events onto
another cluster (the desktop tests' ``choose_drag`` and ``drag``) and released; printed are the
seconds from the release to the session's model event (the job's result applied). The ratio
(paced / unpaced) is the figure; both arms run in the same minutes on the same machine. (The
frame rate meanwhile is not measured here: the view report is written only when the view
changes. By construction the paced loop keeps half the time: tests/world/test_world_frame_pacing.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "desktop"))
sys.path.insert(0, str(ROOT))

from desktop_helpers import GameProcess, VirtualDisplay, missing_tools, ready  # noqa: E402
from test_desktop_window import choose_drag, drag  # noqa: E402


def one_run(display: VirtualDisplay, folder: Path, scene: str, paced: bool, settle_s: float) -> dict:
    os.environ["LATENT_REACH_FRAME_PACING"] = "1" if paced else "0"
    game = GameProcess(display, folder, "--scene", scene, start_timeout=600)
    try:
        report = game.wait_report("the first view", ready, timeout=600)
        time.sleep(settle_s)  # the job process starts and prepares after the first view
        report = game.report() or report
        card, _source, target = choose_drag(report)
        drag(game, card["card"], card["px"], target["centroid_px"])
        t0 = time.monotonic()
        game.x.release(1)
        game.wait_event("a new model", lambda e: e["kind"] == "model", timeout=900)
        seconds = time.monotonic() - t0
        return {"paced": paced, "job_seconds": round(seconds, 2)}
    finally:
        game.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default=str(ROOT / "scenes" / "shapes.toml"))
    parser.add_argument("--runs", type=int, default=2, help="runs per arm (alternating)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds between first view and drag")
    parser.add_argument("--json", help="write the runs here")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"needs {', '.join(missing)} (scripts/bootstrap.sh installs them)", file=sys.stderr)
        return 2
    runs: list[dict] = []
    display = VirtualDisplay()
    try:
        with tempfile.TemporaryDirectory(prefix="latent-reach-pacing-") as tmp:
            for i in range(args.runs):
                for paced in (True, False):
                    run = one_run(display, Path(tmp) / f"run{i}-{int(paced)}", args.scene, paced, args.settle)
                    run["load"] = round(os.getloadavg()[0], 2)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    finally:
        display.close()
    on = [r["job_seconds"] for r in runs if r["paced"]]
    off = [r["job_seconds"] for r in runs if not r["paced"]]
    ratio = statistics.median(on) / statistics.median(off)
    print(
        f"drop -> model, median: paced {statistics.median(on):.1f} s, unpaced {statistics.median(off):.1f} s; ratio {ratio:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"scene": args.scene, "runs": runs, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
