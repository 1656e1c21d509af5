"""How long quitting takes: from the quit input to a closed window, and to the end of the process.

Run: ``.venv/bin/python benchmarks/bench_quit.py [--how ctrl-q|menu|close] [--rounds 3] [--no-menu]``

Starts ``latent-reach run --no-record`` in a real X window on a virtual display (Xvfb), waits
until the window is mapped and the first frames are drawn, sends the quit input through the X
server with xdotool (Ctrl+Q; the start menu's "Quit" row chosen with Up + Enter; or the window
manager's close request, WM_DELETE_WINDOW, sent through Xlib) and reports the seconds until the window is gone and
until the process has ended. Needs ``Xvfb`` and ``xdotool`` (Debian packages).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = subprocess.DEVNULL if not os.environ.get("BENCH_QUIT_LOG") else open(os.environ["BENCH_QUIT_LOG"], "ab")  # noqa: SIM115


def _start_display(number: int) -> subprocess.Popen[bytes]:
    xvfb = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            return xvfb
        time.sleep(0.05)
    xvfb.kill()
    raise RuntimeError("Xvfb did not start")


def _window(env: dict[str, str], pid: int) -> str | None:
    out = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--pid", str(pid), "--name", "."],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0] if out else None


def _drag(env: dict[str, str], win: str) -> None:
    """Drag from the window's centre 150 px to the left: a card there is moved and a fine-tune starts."""
    geo = subprocess.run(
        ["xdotool", "getwindowgeometry", "--shell", win], env=env, capture_output=True, text=True
    )
    g = dict(line.split("=", 1) for line in geo.stdout.split())
    x, y = int(g["X"]) + int(g["WIDTH"]) // 2 - 80, int(g["Y"]) + int(g["HEIGHT"]) // 2
    steps = [["mousemove", str(x), str(y)], ["mousedown", "1"]]
    steps += [["mousemove", str(x - 10 * k), str(y)] for k in range(1, 16)]
    steps += [["mouseup", "1"]]
    for step in steps:
        subprocess.run(["xdotool", *step], env=env, check=True)
        time.sleep(0.05)


def _close_request(display: str, win: str) -> None:
    """Send WM_DELETE_WINDOW (what a window manager's close button sends) through Xlib."""
    import ctypes
    import ctypes.util

    xlib = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XInternAtom.restype = ctypes.c_ulong
    xlib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    xlib.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    xlib.XFlush.argtypes = [ctypes.c_void_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):
        _fields_ = [
            ("type", ctypes.c_int),
            ("serial", ctypes.c_ulong),
            ("send_event", ctypes.c_int),
            ("display", ctypes.c_void_p),
            ("window", ctypes.c_ulong),
            ("message_type", ctypes.c_ulong),
            ("format", ctypes.c_int),
            ("data", ctypes.c_long * 5),
            ("pad", ctypes.c_long * 24),  # XEvent is a union of 24 longs; room to spare
        ]

    dpy = xlib.XOpenDisplay(display.encode())
    if not dpy:
        raise RuntimeError(f"cannot open display {display}")
    try:
        msg = ClientMessage()
        msg.type = 33  # ClientMessage
        msg.window = int(win)
        msg.message_type = xlib.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        msg.format = 32
        msg.data[0] = xlib.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        msg.data[1] = 0  # CurrentTime
        xlib.XSendEvent(dpy, int(win), 0, 0, ctypes.byref(msg))
        xlib.XFlush(dpy)
    finally:
        xlib.XCloseDisplay(dpy)


def one_round(
    how: str, menu: bool, display: str, warmup: float, drag: float | None = None
) -> tuple[float, float]:
    env = dict(os.environ, DISPLAY=display, OMP_NUM_THREADS="1")
    exe = str(ROOT / ".venv" / "bin" / "latent-reach")
    cmd = [exe, "run", "--no-record", "--quiet", "--size", "800x500"] + ([] if menu else ["--no-menu"])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=LOG)
    try:
        deadline = time.monotonic() + 300
        win = None
        while win is None and time.monotonic() < deadline and proc.poll() is None:
            win = _window(env, proc.pid)
            time.sleep(0.2)
        if win is None:
            raise RuntimeError(
                f"no window appeared: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
            )
        time.sleep(warmup)  # let the first frames (and the fine-tune process start) happen
        # No window manager on Xvfb: give the window the input focus; keys then go through XTEST.
        subprocess.run(["xdotool", "windowfocus", "--sync", win], env=env, capture_output=True)
        if drag is not None:
            _drag(env, win)
            time.sleep(drag)  # quit while the drop's fine-tune is waiting or running
        t0 = time.monotonic()
        if how == "ctrl-q":
            subprocess.run(["xdotool", "key", "ctrl+q"], env=env, check=True)
        elif how == "menu":
            subprocess.run(["xdotool", "key", "Up", "Return"], env=env, check=True)
        else:
            _close_request(display, win)
        closed = None
        while proc.poll() is None and time.monotonic() - t0 < 60:
            if closed is None and _window(env, proc.pid) is None:
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
    parser.add_argument("--display", type=int, default=97)
    args = parser.parse_args()
    for tool in ("Xvfb", "xdotool"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (apt-get install xvfb xdotool)", file=sys.stderr)
            return 2
    xvfb = _start_display(args.display)
    try:
        closed, ended = [], []
        for i in range(args.rounds):
            c, e = one_round(args.how, not args.no_menu, f":{args.display}", args.warmup, args.drag)
            closed.append(c)
            ended.append(e)
            print(f"round {i + 1}: window closed after {c:.2f} s, process ended after {e:.2f} s")
        print(
            f"quit by {args.how}{' (--no-menu)' if args.no_menu else ''}: window closed median "
            f"{statistics.median(closed):.2f} s (max {max(closed):.2f}), process ended median "
            f"{statistics.median(ended):.2f} s (max {max(ended):.2f})"
        )
    finally:
        xvfb.terminate()
        xvfb.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
