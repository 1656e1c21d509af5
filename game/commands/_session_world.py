"""Sessions meet the Panda3D world: record poses from the app, replay into a window or offscreen.

This is engine code (it drives ``LatentReachApp``), so it lives with the commands, not in
``game.sessions``, which stays free of panda3d.

Recording a live app takes one call after the app and the fine-tune controller exist::

    recorder = start_recording(app, controller)   # subscribes, records poses every frame

``start_recording`` subscribes the recorder to the workspace, appends a ``PoseRecorderHook`` to
``app.frame_hooks`` (head = the camera, or the headset and both controllers in VR) and lets the
recorder follow the scene's model store (each version's trainable part, fetched on its own
thread); ``app.finalExitCallbacks`` closes the file when the app exits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from game.commands._session_export import FRAME_SIZE
from game.sessions.recorder import SessionRecorder
from game.sessions.replay import MAX_SPEED, MIN_SPEED, ReplayDriver
from game.sessions.replay_models import ReplayModelFollower

if TYPE_CHECKING:
    from game.app import LatentReachApp
    from game.assembly import StartRecording
    from game.vr.launch import VRSession


def matrix_to_pose(m: np.ndarray) -> tuple[float, ...]:
    """A 4x4 column-vector transform (maybe scaled) -> ``(x, y, z, qw, qx, qy, qz)``."""
    r = np.asarray(m, dtype=np.float64)[:3, :3]
    scale = np.linalg.norm(r, axis=0)
    r = r / np.where(scale > 0, scale, 1.0)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        q = (0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = ((r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s)
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = ((r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s)
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = ((r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s)
    t = np.asarray(m, dtype=np.float64)[:3, 3]
    return (float(t[0]), float(t[1]), float(t[2]), *(float(v) for v in q))


def node_pose(node: Any, relative_to: Any) -> tuple[float, ...]:
    """A NodePath's pose relative to another as ``(x, y, z, qw, qx, qy, qz)``."""
    p = node.get_pos(relative_to)
    q = node.get_quat(relative_to)
    return (p[0], p[1], p[2], q.get_r(), q.get_i(), q.get_j(), q.get_k())


class PoseRecorderHook:
    """Frame hook: records the head (camera, or headset in VR) and both controllers each frame."""

    def __init__(self, app: Any, recorder: SessionRecorder, vr: VRSession | None = None) -> None:
        self.app = app
        self.recorder = recorder
        self._vr_state: Any = None
        self._vr = vr  # given by whoever assembled the game (GameSystems.vr), never looked up
        if vr is not None:
            vr.stereo.listeners.append(self._on_vr_frame)

    def _on_vr_frame(self, state: Any, paused: bool) -> None:
        self._vr_state = state

    def update(self, now: float) -> None:
        if self.recorder.closed:  # the session ended (scene switch, exit): stop being called
            if self in self.app.frame_hooks:
                self.app.frame_hooks.remove(self)
            return
        vr = self._vr
        state = self._vr_state
        if vr is not None and state is not None and getattr(vr.stereo, "running", True):
            rig = vr.controls.rig.matrix()
            head = matrix_to_pose(rig @ state.head.matrix) if state.head.valid else None
            hands = []
            for name in ("left", "right"):
                c = state.hands.get(name)
                ok = c is not None and c.connected and c.pose.valid
                hands.append(matrix_to_pose(rig @ c.pose.matrix) if ok else None)
            self.recorder.record_pose(None, head, hands[0], hands[1])
        else:
            self.recorder.record_pose(None, node_pose(self.app.camera, self.app.render))


def start_recording(
    app: Any,
    controller: Any = None,
    folder: str | Path | None = None,
    label: str = "",
    vr: VRSession | None = None,
) -> SessionRecorder:
    """Record ``app``'s session: events, poses every frame, and every model version (the
    recorder follows the scene's model store; ``controller`` is no longer needed)."""
    loaded = app.loaded
    recorder = SessionRecorder.start(
        loaded.scene, loaded.workspace, folder=folder, store=loaded.models, layout=loaded.layout, label=label
    )
    app.frame_hooks.append(PoseRecorderHook(app, recorder, vr))
    app.finalExitCallbacks.append(recorder.close)
    return recorder


def session_recording(folder: str | Path | None = None) -> StartRecording:
    """What ``game.assembly`` calls to record each scene the app shows into ``folder``."""

    def start(app: LatentReachApp, vr: VRSession | None) -> SessionRecorder:
        return start_recording(app, folder=folder, vr=vr)

    return start


# --- replay in the world ----------------------------------------------------------------------


def _set_camera(app: Any, head: np.ndarray) -> None:
    from panda3d.core import Quat

    app.camera.set_pos(float(head[0]), float(head[1]), float(head[2]))
    app.camera.set_quat(Quat(float(head[3]), float(head[4]), float(head[5]), float(head[6])))


class WorldRenderer:
    """Export frames drawn by the real world offscreen (EGL); the camera follows the head."""

    name = "world"

    def __init__(self, restored: Any, free_camera: bool = False, size: tuple[int, int] = FRAME_SIZE) -> None:
        from game.assembly import open_game

        self.free_camera = free_camera
        self.app = open_game(restored.as_loaded(with_network=False), offscreen=True, size=size).app
        self.app.step(0.0)
        self._last_t: float | None = None

    def set_pose(self, head: np.ndarray | None, left: np.ndarray | None, right: np.ndarray | None) -> None:
        if head is not None and not self.free_camera:
            _set_camera(self.app, head)

    def render(self, t: float, note: str) -> np.ndarray:
        dt = 0.0 if self._last_t is None else max(t - self._last_t, 0.0)
        self._last_t = t
        self.app.step(dt)
        return self.app.pixels()

    def close(self) -> None:
        self.app.destroy()


class ReplayHook:
    """Frame hook that drives a ``ReplayDriver`` from the app clock, with keyboard controls."""

    KEYS = "space play/pause, n step, [ ] slower/faster, left/right seek -/+5 s, home restart"

    def __init__(self, app: Any, driver: ReplayDriver) -> None:
        self.app = app
        self.driver = driver
        app.accept("space", driver.toggle)
        app.accept("n", driver.step)
        app.accept("[", self._speed, [0.5])
        app.accept("]", self._speed, [2.0])
        app.accept("arrow_left", self._seek, [-5.0])
        app.accept("arrow_right", self._seek, [5.0])
        app.accept("home", self._seek_to, [0.0])

    def _speed(self, factor: float) -> None:
        self.driver.set_speed(min(max(self.driver.speed * factor, MIN_SPEED), MAX_SPEED))
        self._tell()

    def _seek(self, delta: float) -> None:
        self._seek_to(self.driver.clock + delta)

    def _seek_to(self, t: float) -> None:
        self.driver.seek(t)
        self._tell()

    def _tell(self) -> None:
        from game.core import events as ev

        d = self.driver
        self.app.workspace.post(ev.Message(f"replay t={d.clock:.1f}/{d.duration:.1f} s, x{d.speed:g}"))

    def update(self, now: float) -> None:
        self.driver.update(now)


def play_in_window(reader: Any, speed: float = 1.0, start: float = 0.0, free_camera: bool = False) -> int:
    """Replay in a desktop window (the camera follows the recorded head unless ``free_camera``)."""
    from game.assembly import open_game
    from game.core.errors import UserError
    from game.sessions.restore import restore
    from game.world.engine import display_available

    if not display_available():
        raise UserError("no display found; use --export DIR for a headless replay (frames, video, summary)")
    restored = restore(reader)
    # Free camera: the desktop controls fly it; otherwise only quitting (Ctrl+Q, close button).
    app = open_game(restored.as_loaded(with_network=False), offscreen=False, controls=free_camera).app

    def follow_head(head: np.ndarray | None, left: np.ndarray | None, right: np.ndarray | None) -> None:
        if head is not None:
            _set_camera(app, head)

    driver = ReplayDriver(reader, app.workspace, on_pose=None if free_camera else follow_head, speed=speed)
    if start:
        driver.seek(start)
    app.frame_hooks.append(ReplayHook(app, driver))
    # Free camera: the explanations read the network of the version shown, not the starting one.
    models = ReplayModelFollower(reader, app.loaded.models, app.workspace)
    app.frame_hooks.append(models)
    print(f"replaying {reader.path.name} ({driver.duration:.1f} s); keys: {ReplayHook.KEYS}")
    driver.play()
    try:
        app.run()
    finally:
        models.close()
    return 0
