"""Starting VR for the app: pick a backend, fall back to the desktop, wire renderer and controls.

Modes: ``off``; ``on`` (try OpenVR, else one line on stderr and the desktop); ``require`` (no VR
is a ``UserError``: one line, exit code 2); ``simulate`` (a scripted ``SimulatedBackend``).

The run command calls, in this order::

    backend = backend_for_run(...)           # probe only (open_backend(start=False)): no connection yet
    loaded = open_scene(...)                 # may train for minutes: SteamVR is not waiting on us
    game = open_game(loaded, vr_backend=backend, ...)   # game.assembly: prepare_engine() (driver
                                             # v-sync off), the app, then attach(app, backend):
                                             # connects now, frames flow from the next step

``start_vr(app, mode)`` does the last step for an app that already exists (v-sync then stays as
the window was opened). Nothing here runs at import time, and nothing here imports the app or
the commands: ``VRSession`` uses what any app offers (render, camera, world, workspace, scene
and exit callbacks, ``frame_dt``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from game.core import events as ev
from game.core.errors import UserError
from game.vr.backend import VRBackend, VRUnavailable

MODES = ("off", "on", "require", "simulate")
DEMO_SCRIPT = Path(__file__).resolve().parent / "demo_script.json"  # --vr=simulate without a script


def parse_mode(value: str | bool | None) -> str:
    """``--vr`` values: none/true → "on", "require", "simulate", "off"/false."""
    if value is None or value is False:
        return "off"
    if value is True or value == "":
        return "on"
    v = str(value).strip().lower()
    aliases = {
        "true": "on",
        "yes": "on",
        "1": "on",
        "false": "off",
        "no": "off",
        "0": "off",
        "sim": "simulate",
    }
    v = aliases.get(v, v)
    if v not in MODES:
        raise UserError(f"--vr must be one of {', '.join(MODES)}, not {value!r}")
    return v


def open_backend(
    mode: str,
    script: str | Path | None = None,
    *,
    openvr_module: Any = None,
    out: TextIO | None = None,
    start: bool = True,
) -> VRBackend | None:
    """A started backend, or None (desktop mode; one line on ``out``). ``require`` raises instead.

    ``start=False`` only probes (runtime installed, headset present) and leaves connecting to
    ``attach``: a scene application that does not submit frames or read events (a long scene
    load) shows a frozen app in the headset and cannot answer SteamVR's quit.
    """
    mode = parse_mode(mode)
    if mode == "off":
        return None
    backend: VRBackend
    if mode == "simulate" or script is not None:
        from game.vr.simulated import SimulatedBackend

        backend = SimulatedBackend.from_file(script if script is not None else DEMO_SCRIPT)
    else:
        from game.vr.openvr_backend import OpenVRBackend

        backend = OpenVRBackend(openvr_module=openvr_module)
    backend.required = mode == "require"  # type: ignore[union-attr]  # read by game.assembly
    try:
        backend.start() if start else backend.probe()
    except VRUnavailable as exc:
        if mode == "require":
            raise UserError(f"VR required but unavailable: {exc}") from None
        print(f"VR unavailable ({exc}); running in desktop mode.", file=out or sys.stderr)
        return None
    return backend


def prepare_engine() -> None:
    """Driver v-sync off for windows opened from now on (SteamVR's compositor paces frames).

    ``sync-video`` is Panda3D's request; NVIDIA and Mesa drivers may force v-sync on anyway, and
    a mirror window synced to a 60 Hz monitor caps the headset below 90 Hz. Their variables are
    read when the GL library creates a context, so they are set here, before the window opens
    (a value the person set is kept).
    """
    import os

    from panda3d.core import ConfigVariableBool

    ConfigVariableBool("sync-video").set_value(False)
    os.environ.setdefault("__GL_SYNC_TO_VBLANK", "0")  # NVIDIA
    os.environ.setdefault("vblank_mode", "0")  # Mesa


class VRSession:
    """Stereo renderer + VR controls + in-world UI on one app; ``stop()`` returns to the desktop."""

    def __init__(self, app: Any, backend: VRBackend) -> None:
        from game.controls.vr_controls import Rig, VRControls
        from game.vr.stereo import VRStereo
        from game.vr.ui import VRWorldUI

        self.app = app
        self.backend = backend
        self._hovered: int | None = None  # a hover change this frame, drawn after the controls
        self.stereo = VRStereo(
            app, backend, clear_colour=tuple(app.win.get_clear_color()), on_stop=self._stopped
        )
        self.controls = VRControls(
            app.workspace,
            lambda: app.world.positions,
            lambda: app.world.config.card_size,
            rig=Rig(*self._start_place()),
            haptic=lambda hand, seconds: backend.haptic(hand, seconds),
            on_rig=self.stereo.set_rig,
            on_hover=self._hover,
        )
        # The pick index asks the world's tween what moved instead of comparing every card.
        self.controls.index.motion = lambda: app.world.tween
        self.ui = VRWorldUI(app, scale=lambda: self.controls.rig.scale)  # panels in the person's metres
        self.stereo.listeners.append(self._on_frame)
        self.stereo.start()
        self.stereo.set_rig(self.controls.rig.matrix())
        self._place_labels()
        app.scene_listeners.append(self._on_scene)
        # Closing the window must still hand the headset back to SteamVR.
        app.finalExitCallbacks.append(lambda: self.stop("exit"))
        self.stopped_reason: str | None = None
        # Told the reason when VR stops (game.assembly: the texts go back to desktop words).
        self.stop_listeners: list[Callable[[str], None]] = []

    def _start_place(self) -> tuple[np.ndarray, float, float]:
        """Inside the cloud at room scale, cards readable at arm's length (game.vr.placement)."""
        from game.vr.placement import room_scale_start

        world = self.app.world
        place = room_scale_start(world.positions, world.config.card_size, self.app.workspace.labels)
        self.place = place
        return place.position, place.heading, place.scale

    def _place_labels(self, on: bool = True) -> None:
        """Class labels by their clusters at a comfortable height (the desktop's row is high)."""
        from game.vr.placement import LabelPlacement

        self.app.world.centroid_markers.set_placement(LabelPlacement.at(self.place) if on else None)

    def _on_frame(self, state, paused: bool) -> None:
        app = self.app
        self.controls.update(state, paused, app.frame_dt())
        if self._hovered is not None:  # once a frame, whichever hands changed what they hover
            app.world.cards.set_highlight(hovered=self._hovered)
            self._hovered = None
        ws = app.workspace
        selected = None
        if 0 <= ws.selected < len(app.world.positions):
            selected = np.asarray(app.world.positions[ws.selected], dtype=np.float64)
        self.ui.update(
            self.controls.head_position(), self.controls.hand_position("left"), selected, self.controls.lasers
        )

    def _hover(self, hand: str, card: int) -> None:
        self._hovered = card  # the last change wins, as it did when each one was drawn at once

    def _on_scene(self, loaded: Any) -> None:
        for hand in self.controls.hands.values():
            hand.workspace = loaded.workspace
        self.controls.workspace = loaded.workspace
        self.ui.rebind()
        # Another cloud (the start menu opened a scene): stand inside it, as at the start.
        rig = self.controls.rig
        rig.position, rig.heading, rig.scale = self._start_place()
        self.stereo.set_rig(rig.matrix())
        self._place_labels()

    def _stopped(self, reason: str) -> None:
        self.stopped_reason = reason
        self.ui.restore()
        self._place_labels(on=False)
        self.app.workspace.post(ev.Message(text=reason, level="warning"))
        for listener in list(self.stop_listeners):
            listener(reason)

    def stop(self, reason: str = "VR stopped") -> None:
        self.stereo.stop(reason)


def attach(app: Any, backend: VRBackend) -> VRSession:
    """Start rendering ``app`` for ``backend`` and drive it with controllers.

    Connects a backend that was only probed (raises ``VRUnavailable``): the scene is loaded and
    the app exists, so frames and events flow from the next step on.
    """
    if not getattr(backend, "started", True):
        backend.start()
    return VRSession(app, backend)  # the caller keeps it (GameSystems.vr); nothing goes on the app


def backend_for_run(flag: str | None, scene_vr: bool, script: str | None = None) -> VRBackend | None:
    """The run command's choice: ``--vr[=MODE]`` wins over the scene's ``vr = true``.

    Called before the scene loads, so ``--vr=require`` fails (exit 2) in a second, not after a
    minute of training and layout; it only probes (``attach`` connects once the app exists).
    """
    if flag is not None:
        mode = parse_mode(flag)
    elif script is not None:
        mode = "simulate"
    else:
        mode = "on" if scene_vr else "off"
    return open_backend(mode, script, start=False)


def start_vr(app: Any, mode: str, script: str | Path | None = None, **kwargs: Any) -> VRSession | None:
    """For an app that exists already: open a backend for ``mode`` and attach it (None: desktop)."""
    backend = open_backend(mode, script, **kwargs)
    if backend is None:
        return None
    return attach(app, backend)
