"""A real X display for the desktop tests: Xvfb, input through the X server, screenshots, the app.

Nothing here talks to the game's Python objects: the app runs as ``latent-reach run`` in its own
process, input goes through the X server (``xdotool``, which uses the XTEST extension: the same
path as a physical mouse and keyboard), screenshots come from the X server (``xwd``), and outcomes
are read from the recorded session file and from ``$LATENT_REACH_VIEW_REPORT`` (the app's own
account of where things are drawn, game/world/view_report.py).

Every wait polls for an outcome with a generous deadline: the machine running the suite may be a
loaded 2-core box, where the window takes seconds to appear and a frame may take 100 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TITLE = "Latent Reach"
SCREEN = (1280, 800)
REQUIRED_TOOLS = ("Xvfb", "xdotool", "xwd")


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def latent_reach_command() -> list[str]:
    """The installed console script next to the running Python (the venv's), else ``-m game``."""
    script = Path(sys.executable).with_name("latent-reach")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "game"]


def wait_for(what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``fn`` until it returns something other than None or False (an array counts);
    fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- the X server ---------------------------------------------------------------------------------


class VirtualDisplay:
    """An Xvfb server on a display number it picks itself (``-displayfd``: no race with others)."""

    def __init__(self, size: tuple[int, int] = SCREEN, timeout: float = 30.0) -> None:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_fd),
                "-screen",
                "0",
                f"{size[0]}x{size[1]}x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(write_fd)
        number = b""
        deadline = time.monotonic() + timeout
        with os.fdopen(read_fd, "rb") as pipe:
            os.set_blocking(pipe.fileno(), False)
            while not number.endswith(b"\n"):
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise RuntimeError(f"Xvfb exited with {self.proc.returncode}: {err[-500:]}")
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("Xvfb did not report a display number")
                chunk = pipe.read()
                if chunk:
                    number += chunk
                else:
                    time.sleep(0.05)
        self.display = f":{int(number.strip())}"
        self.size = size

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DISPLAY"] = self.display
        env.pop("WAYLAND_DISPLAY", None)
        return env

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()


class X:
    """Input and screenshots on one display, all through the X server."""

    def __init__(self, display: VirtualDisplay) -> None:
        self.display = display

    def run(self, *args: str, timeout: float = 20.0) -> str:
        out = subprocess.run(
            args, env=self.display.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def xdotool(self, *args: str) -> str:
        return self.run("xdotool", *args)

    def windows(self, name: str = TITLE) -> list[int]:
        """Visible windows whose title is ``name`` (empty when none)."""
        out = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", f"^{name}$"],
            env=self.display.env(),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return [int(w) for w in out.stdout.split()]

    def geometry(self, window: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a window on the screen."""
        out = self.xdotool("getwindowgeometry", "--shell", str(window))
        values = dict(line.split("=", 1) for line in out.split() if "=" in line)
        return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])

    # --- input (XTEST: as a physical mouse and keyboard) ---

    def move(self, x: float, y: float) -> None:
        self.xdotool("mousemove", str(round(x)), str(round(y)))

    def press(self, button: int = 1) -> None:
        self.xdotool("mousedown", str(button))

    def release(self, button: int = 1) -> None:
        self.xdotool("mouseup", str(button))

    def click(self, button: int = 1) -> None:
        self.xdotool("click", str(button))

    def key(self, *keys: str) -> None:
        self.xdotool("key", *keys)

    # --- screenshots ---

    def screenshot(self) -> np.ndarray:
        """The whole screen as an (H, W, 3) uint8 array (``xwd -root``)."""
        out = subprocess.run(
            ["xwd", "-root", "-silent"], env=self.display.env(), capture_output=True, timeout=30, check=True
        )
        return read_xwd(out.stdout)

    # --- the window manager's close button, without a window manager ---

    def close_window(self, window: int) -> None:
        """Send WM_DELETE_WINDOW, what a window manager sends when the close button is clicked."""
        send_wm_delete(self.display.display, window)


def read_xwd(data: bytes) -> np.ndarray:
    """Decode an XWD dump of a 24/32-bit TrueColor screen (what ``xwd`` writes for Xvfb)."""
    fields = struct.unpack(">25I", data[:100])
    header_size, _version, _format, _depth, width, height = fields[:6]
    byte_order, bits_per_pixel, bytes_per_line = fields[7], fields[11], fields[12]
    masks = fields[14:17]
    ncolours = fields[19]
    if bits_per_pixel != 32:
        raise ValueError(f"xwd: {bits_per_pixel} bits per pixel not supported")
    offset = header_size + 12 * ncolours
    px = np.frombuffer(
        data, dtype="<u4" if byte_order == 0 else ">u4", count=bytes_per_line // 4 * height, offset=offset
    ).reshape(height, bytes_per_line // 4)[:, :width]
    channels = []
    for mask in masks:
        shift = (mask & -mask).bit_length() - 1
        channels.append(((px & mask) >> shift).astype(np.uint8))
    return np.dstack(channels)


def send_wm_delete(display: str, window: int) -> None:
    """A ``WM_PROTOCOLS``/``WM_DELETE_WINDOW`` client message to ``window`` through libX11."""
    lib = ctypes.util.find_library("X11")
    if lib is None:
        raise RuntimeError("libX11 not found")
    x11 = ctypes.CDLL(lib)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]

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
        ]

    class XEvent(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    x11.XSendEvent.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_int,
        ctypes.c_long,
        ctypes.POINTER(XEvent),
    ]
    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        raise RuntimeError(f"cannot open display {display}")
    try:
        event = XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = window
        event.xclient.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        event.xclient.data[1] = 0  # CurrentTime
        if not x11.XSendEvent(dpy, window, 0, 0, ctypes.byref(event)):
            raise RuntimeError("XSendEvent failed")
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)


# --- the game in its own process -------------------------------------------------------------------


class GameProcess:
    """``latent-reach run`` in a real window on ``display``; its session and view report in ``folder``."""

    def __init__(
        self, display: VirtualDisplay, folder: Path, *extra: str, start_timeout: float = 300.0
    ) -> None:
        self.display = display
        self.x = X(display)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sessions = self.folder / "sessions"
        self.report_path = self.folder / "view.json"
        self.log_path = self.folder / "app.log"
        env = display.env()
        env["LATENT_REACH_VIEW_REPORT"] = str(self.report_path)
        env.setdefault("OMP_NUM_THREADS", "1")
        w, h = display.size
        cmd = [
            *latent_reach_command(),
            "run",
            "--no-menu",
            "--quiet",
            "--size",
            f"{w}x{h}",
            "--sessions",
            str(self.sessions),
            *extra,
        ]
        self._others = set(self.x.windows())  # another game's window is not this one's
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in close())
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.window = self._wait_window(start_timeout)
        self.mapped_after = time.monotonic() - self.started
        self.origin = self.x.geometry(self.window)[:2]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def _wait_window(self, timeout: float) -> int:
        def window() -> int | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"latent-reach exited with {self.proc.returncode}:\n{self.log()}")
            found = [w for w in self.x.windows() if w not in self._others]
            return found[0] if found else None

        return wait_for("the game window to be mapped", window, timeout, interval=0.25)

    def window_open(self) -> bool:
        return self.window in self.x.windows()

    # --- what the app says is where ---

    def report(self) -> dict | None:
        try:
            return json.loads(self.report_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait_report(self, what: str, pred: Callable[[dict], bool], timeout: float = 30.0) -> dict:
        def check() -> dict | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"latent-reach exited with {self.proc.returncode}:\n{self.log()}")
            r = self.report()
            return r if r is not None and pred(r) else None

        return wait_for(what, check, timeout)

    def settled_screen(self, timeout: float = 60.0, still: float = 0.003) -> np.ndarray:
        """A screenshot once the window shows the world and stands still (no tween, no fade).

        The app's first report can come before its first frame reaches the screen (a software
        renderer on a busy machine): waiting on the pixels themselves is what a person does.
        """
        last: list[np.ndarray] = []

        def stable() -> np.ndarray | None:
            img = self.x.screenshot()
            prev = last[-1] if last else None
            last[:] = [img]
            drawn = float(img.std()) > 5.0
            if prev is None or not drawn:
                return None
            return img if changed_pixels(prev, img).mean() < still else None

        return wait_for("the window to show a still picture", stable, timeout, interval=0.3)

    def wait_quiet(self, seconds: float, timeout: float = 30.0) -> None:
        """Wait until the view report has not been rewritten for ``seconds``: nothing on screen
        moves (camera, cards, hand, preview)."""

        def quiet() -> bool | None:
            try:
                age = time.time() - self.report_path.stat().st_mtime
            except FileNotFoundError:
                return None
            return True if age >= seconds else None

        wait_for(f"the view to stand still for {seconds} s", quiet, timeout, interval=0.1)

    def screen(self, px) -> tuple[float, float]:
        """Window pixel -> screen pixel."""
        return self.origin[0] + float(px[0]), self.origin[1] + float(px[1])

    # --- the recorded session ---

    def session_file(self) -> Path | None:
        files = sorted(self.sessions.glob("*.session.sqlite")) if self.sessions.is_dir() else []
        return files[-1] if files else None

    def events(self, kinds: tuple[str, ...] | None = None) -> list[dict]:
        """Recorded events (seq, kind, card and their JSON fields), read while the app writes."""
        path = self.session_file()
        if path is None:
            return []
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute("SELECT seq, kind, card, fields FROM events ORDER BY seq").fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return []  # not created yet, or mid-checkpoint: the caller polls again
        out = []
        for seq, kind, card, fields in rows:
            if kinds is None or kind in kinds:
                out.append({"seq": seq, "kind": kind, "card": card, **json.loads(fields)})
        return out

    def wait_event(self, what: str, pred: Callable[[dict], bool], timeout: float = 30.0) -> dict:
        def check() -> dict | None:
            for e in self.events():
                if pred(e):
                    return e
            if self.proc.poll() is not None:
                raise AssertionError(f"latent-reach exited with {self.proc.returncode}:\n{self.log()}")
            return None

        return wait_for(what, check, timeout, interval=0.2)

    def reset_input(self) -> None:
        """Let go of the mouse button; Esc if a card is still carried (after a failed test)."""
        with contextlib.suppress(Exception):
            self.x.release(1)
            report = self.report() or {}
            if report.get("carried") is not None:
                self.x.key("Escape")
                self.wait_report("the hand to be empty", lambda r: r["carried"] is None, timeout=20)

    # --- ending ---

    def wait_exit(self, timeout: float) -> float:
        """Seconds until the process has exited (fails after ``timeout``)."""
        t0 = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"latent-reach still running {timeout:.0f} s after quitting") from None
        return time.monotonic() - t0

    def close(self) -> None:
        """Kill the app and anything it started (its own process group), then close the log."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # A job process left behind by a killed parent is in the same group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def ready(report: dict) -> bool:
    """A report of a settled first view: every class drawn, some cards pickable, nothing carried."""
    classes = report["classes"]
    return (
        report.get("carried") is None
        and all(c.get("centroid_px") for c in classes)
        and sum(bool(c["pickable"]) for c in classes) >= 2
    )


def focus(game: GameProcess) -> None:
    """Pointer over an empty corner of the window, the window focused (keys go to it)."""
    game.x.move(*game.screen((20, 20)))
    game.x.xdotool("windowfocus", str(game.window))


def quit_and_time(game: GameProcess, quit: Callable[[], None], shoot, what: str) -> tuple[float, float]:
    """Quit a settled game with ``quit()``; seconds to a closed window and to the process's end.

    Both are printed, not asserted (speed belongs in benchmarks); the process must end, with 0.
    """
    game.wait_report("the first view", ready, timeout=60)
    game.settled_screen()
    shoot(game, "open")
    t0 = time.monotonic()
    quit()
    wait_for("the window to close", lambda: not game.window_open() or None, timeout=60, interval=0.05)
    window_s = time.monotonic() - t0
    exit_s = window_s + game.wait_exit(timeout=60)
    assert game.proc.returncode == 0, game.log()
    print(f"\n{what}: window closed after {window_s:.2f} s, process exited after {exit_s:.2f} s")
    return window_s, exit_s


def save_png(img: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def bright_pixels(img: np.ndarray, box: tuple[int, int, int, int], level: int = 200) -> int:
    """Pixels in ``box`` (x0, y0, x1, y1) whose every channel is at least ``level`` (text)."""
    x0, y0, x1, y1 = box
    region = img[max(0, y0) : y1, max(0, x0) : x1]
    return int((region.min(axis=2) >= level).sum())


def changed_pixels(a: np.ndarray, b: np.ndarray, tol: int = 24) -> np.ndarray:
    """A boolean mask of the pixels that differ by more than ``tol`` in any channel."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > tol
