"""How long quitting takes: from the quit input to a closed window, and to the end of the process.

Run: ``.venv/bin/python benchmarks/bench_quit.py [--how ctrl-q|menu|close] [--rounds 3] [--no-menu]``

Starts ``latent-reach run --no-record`` in a real X window on a virtual display (Xvfb), waits
until the window is mapped and the first frames are drawn, sends the quit input through the X
server with xdotool (Ctrl+Q; the start menu's "Quit" row chosen with Up + Enter; or the window
manager's close request, WM_DELETE_WINDOW, sent through Xlib) and reports the seconds until the
window is gone and until the process has ended. Needs ``Xvfb``, ``xdotool`` and ``xwd`` (Debian
packages); the display, input and close request are the desktop tests' own helpers
(``tests/desktop/desktop_helpers.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The real-window helpers the desktop tests use (Xvfb, XTEST input, WM_DELETE_WINDOW): one copy.
sys.path.insert(0, str(ROOT / "tests" / "desktop"))

from desktop_helpers import VirtualDisplay, X, latent_reach_command, missing_tools  # noqa: E402

LOG = subprocess.DEVNULL if not os.environ.get("BENCH_QUIT_LOG") else open(os.environ["BENCH_QUIT_LOG"], "ab")  # noqa: SIM115


def _drag(x: X, win: int) -> None:
    """Drag from the window's centre 150 px to the left: a card there is moved and a fine-tune starts."""
    left, top, width, height = x.geometry(win)
    cx, cy = left + width // 2 - 80, top + height // 2
    x.move(cx, cy)
    x.press(1)
    for k in range(1, 16):
        time.sleep(0.05)
        x.move(cx - 10 * k, cy)
    time.sleep(0.05)
    x.release(1)


def one_round(
    how: str, menu: bool, display: VirtualDisplay, warmup: float, drag: float | None = None
) -> tuple[float, float]:
    x = X(display)
    env = dict(display.env(), OMP_NUM_THREADS="1")
    cmd = [*latent_reach_command(), "run", "--no-record", "--quiet", "--size", "800x500"]
    cmd += [] if menu else ["--no-menu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=LOG)
    try:
        deadline = time.monotonic() + 300
        wins: list[int] = []
        while not wins and time.monotonic() < deadline and proc.poll() is None:
            wins = x.windows()
            time.sleep(0.2)
        if not wins:
            raise RuntimeError("no window appeared (set BENCH_QUIT_LOG=FILE for the game's errors)")
        win = wins[0]
        time.sleep(warmup)  # let the first frames (and the fine-tune process start) happen
        # No window manager on Xvfb: give the window the input focus; keys then go through XTEST.
        x.xdotool("windowfocus", "--sync", str(win))
        if drag is not None:
            _drag(x, win)
            time.sleep(drag)  # quit while the drop's fine-tune is waiting or running
        t0 = time.monotonic()
        if how == "ctrl-q":
            x.key("ctrl+q")
        elif how == "menu":
            x.key("Up", "Return")
        else:
            x.close_window(win)
        closed = None
        while proc.poll() is None and time.monotonic() - t0 < 60:
            if closed is None and win not in x.windows():
                closed = time.monotonic() - t0
            time.sleep(0.02)
        ended = time.monotonic() - t0
        if proc.poll() is None:
            raise RuntimeError("the process did not end within 60 s")
        return (closed if closed is not None else ended), ended
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--how", choices=("ctrl-q", "menu", "close"), default="ctrl-q")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-menu", action="store_true", help="start with --no-menu")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds to run before quitting")
    parser.add_argument(
        "--drag",
        type=float,
        default=None,
        metavar="S",
        help="drag a card first, quit S seconds after the drop",
    )
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print(f"{', '.join(missing)} not found (apt-get install xvfb xdotool x11-apps)", file=sys.stderr)
        return 2
    display = VirtualDisplay()  # picks a free display number itself
    try:
        closed, ended = [], []
        for i in range(args.rounds):
            c, e = one_round(args.how, not args.no_menu, display, args.warmup, args.drag)
            closed.append(c)
            ended.append(e)
            print(f"round {i + 1}: window closed after {c:.2f} s, process ended after {e:.2f} s")
        print(
            f"quit by {args.how}{' (--no-menu)' if args.no_menu else ''}: window closed median "
            f"{statistics.median(closed):.2f} s (max {max(closed):.2f}), process ended median "
            f"{statistics.median(ended):.2f} s (max {max(ended):.2f})"
        )
    finally:
        display.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
