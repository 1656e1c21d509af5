"""One place that assembles the game: which systems a run has, built in one order, torn down once.

Every way of starting Latent Reach goes through ``assemble_game`` (or ``open_game``, which opens
the app first): the desktop window (``commands/run.py``), VR (the same, with a backend), headless
renders (``commands/_offscreen.py``, the demo, session export) and the tests. The result is a
typed ``GameSystems``; nothing is attached to the app as an attribute. The app only sees frame
hooks, scene listeners, camera listeners and exit callbacks, in this order per frame:

    desktop controls → explanations → guidance → fine-tune controller → recorder's pose hook

Input goes through one ``InputModes`` stack (``game/controls/modes.py``) shared by every control:
the menu, what-if painting and a carried card push their mode, Esc pops the top one. Ctrl+Q and
the window's close button quit (with or without the start menu); Esc never quits.

Controls never get the app: ``assemble_game`` hands each one narrow services
(``game/controls/services.py``): an ``AppViewport`` (camera, mouse, framing), the ``SceneParts`` of
the scene on show (workspace, world, model store, settings, projector), the worker, and for the
menu two callables (show a loaded scene, quit).

When the start menu opens another scene it first prestarts the job process for it (as
``latent-reach run`` does before the first scene), then loads it on the worker; the app replaces
its world and calls the one scene listener registered here, which passes the new ``SceneParts``
to every control's ``rebind`` and rebuilds the fine-tune controller (taking the prestarted
process) and the recorder (a new session file) for the new workspace.

Imports only go downwards: commands → assembly → {app, controls, vr, world} → core/learning.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from direct.showbase.DirectObject import DirectObject

from game.app import LatentReachApp
from game.controls.modes import InputModes, Mode
from game.controls.services import SceneParts
from game.controls.wording import Wording
from game.core import events as ev
from game.core.errors import UserError
from game.core.worker import Worker

if TYPE_CHECKING:
    from panda3d.core import NodePath

    from game.controls.desktop import DesktopControls
    from game.controls.explain_controls import ExplainControls
    from game.controls.guidance_controls import GuidanceControls
    from game.controls.menu import MenuController
    from game.core.scene import Scene
    from game.learning.controller import FineTuneController
    from game.pipeline import LoadedScene
    from game.sessions.recorder import SessionRecorder
    from game.vr.backend import VRBackend
    from game.vr.launch import VRSession


class AppViewport:
    """The app's camera, mouse and framing as the controls' ``Viewport`` (nothing else of it)."""

    def __init__(self, app: LatentReachApp) -> None:
        self._app = app

    @property
    def camera(self) -> NodePath:
        return self._app.camera

    @property
    def render(self) -> NodePath:
        return self._app.render

    @property
    def render2d(self) -> NodePath:
        return self._app.render2d

    def mouse(self) -> tuple[float, float] | None:
        watcher = self._app.mouseWatcherNode
        if watcher is None or not watcher.has_mouse():
            return None
        m = watcher.get_mouse()
        return float(m[0]), float(m[1])

    def is_down(self, button: Any) -> bool:
        watcher = self._app.mouseWatcherNode
        return watcher is not None and bool(watcher.is_button_down(button))

    def mouse_ray(self, mx: float, my: float) -> tuple[np.ndarray, np.ndarray]:
        return self._app.mouse_ray(mx, my)

    def project(self, point: Any) -> tuple[float, float] | None:
        return self._app.project(point)

    def frame_card(self, card: int, distance: float = 0.6) -> None:
        self._app.frame_card(card, distance)

    def frame_all(self) -> None:
        self._app.frame_all()


def scene_parts(app: LatentReachApp) -> SceneParts:
    """The scene the app shows now, as the controls see it."""
    return SceneParts.of(app.loaded, app.world)


def prestart_learning(scene: Scene) -> None:
    """Start the job process for a scene about to open (the start menu calls it before loading),
    so the new controller takes a warm child instead of starting one after the switch."""
    from game.learning import backend

    backend.prestart_process(scene.learning)


class StartRecording(Protocol):
    """Starts recording the app's current scene (``commands._session_world.session_recording``)."""

    def __call__(self, app: LatentReachApp, vr: VRSession | None) -> SessionRecorder: ...


class Learning:
    """The fine-tune controller (a frame hook on the app clock) and, when recording, the session
    recorder, for the app's current scene. ``restart`` rebuilds both for another scene (or, in
    a benchmark, after the scene's learning settings changed)."""

    def __init__(
        self, app: LatentReachApp, recording: StartRecording | None = None, vr: VRSession | None = None
    ) -> None:
        self.app = app
        self.recording = recording
        self.vr = vr
        self.controller: FineTuneController | None = None
        self.recorder: SessionRecorder | None = None

    def restart(self, loaded: LoadedScene) -> None:
        """Close the old controller and recorder; start new ones on ``loaded``. A part that
        fails is reported in the world and left out, so the game still runs without it."""
        self.stop()
        try:
            from game.learning.controller import FineTuneController

            self.controller = FineTuneController(loaded, self.app.worker, clock=lambda: self.app.now)
            self.controller.preview_listeners.append(self.app.world.show_preview)  # issue 17
            self.app.frame_hooks.append(self.controller)
        except Exception as exc:  # the world stays usable without learning
            loaded.workspace.post(ev.Message(text=f"fine-tuning unavailable: {exc}", level="warning"))
        if self.recording is not None:
            try:
                self.recorder = self.recording(self.app, self.vr)
            except Exception as exc:
                loaded.workspace.post(ev.Message(text=f"recording unavailable: {exc}", level="warning"))

    def stop(self) -> None:
        controller, self.controller = self.controller, None
        if controller is not None:
            if controller in self.app.frame_hooks:
                self.app.frame_hooks.remove(controller)
            controller.close()  # stops listening to the old workspace; ends its job process
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder.close()  # its pose hook removes itself once closed


class GameSystems:
    """Everything a run added to the app, typed; ``destroy`` (also run when the app is destroyed
    or exits) lets go of it in reverse order."""

    def __init__(
        self,
        app: LatentReachApp,
        modes: InputModes,
        *,
        controls: DesktopControls | None = None,
        explain: ExplainControls | None = None,
        guidance: GuidanceControls | None = None,
        menu: MenuController | None = None,
        vr: VRSession | None = None,
        learning: Learning | None = None,
    ) -> None:
        self.app = app
        self.modes = modes
        self.controls = controls
        self.explain = explain
        self.guidance = guidance
        self.menu = menu
        self.vr = vr
        self.learning = learning
        self.keys = DirectObject()
        self._destroyed = False

    @property
    def controller(self) -> FineTuneController | None:
        return self.learning.controller if self.learning is not None else None

    @property
    def recorder(self) -> SessionRecorder | None:
        return self.learning.recorder if self.learning is not None else None

    def on_scene(self, loaded: LoadedScene) -> None:
        """The start menu opened another scene: the app has its new world and workspace."""
        self.modes.reset()  # the old drag, painting and menu belong to the old world
        bound = [p for p in (self.controls, self.explain, self.guidance, self.menu) if p is not None]
        if bound:
            parts = SceneParts.of(loaded, self.app.world)
            for part in bound:
                part.rebind(parts)
        if self.learning is not None:
            self.learning.restart(loaded)
        self.dress_world()

    def dress_world(self) -> None:
        """What each new world (and its HUD and drop preview) needs to know about this game."""
        self.app.world.hud.set_menu(self.menu is not None)
        preview, vr = self.app.drop_preview, self.vr
        controller = self.controller
        if controller is not None:
            # One judge for the preview, the desktop carry and the edits the controller queues.
            if preview is not None:
                preview.judge = controller.judge
            if self.controls is not None:
                self.controls.judge = controller.judge
        if vr is not None and preview is not None:
            preview.in_world_text = True  # the 2-D overlay is not in the headset
            preview.on_target_change.append(lambda hand, edit: vr.controls.haptic_tick(hand))

    def escape_in_world(self) -> None:
        """Esc with nothing on top of ``WORLD``: open the menu, or hide the help. Never quit."""
        if self.menu is not None:
            self.menu.toggle()
        elif self.controls is not None:
            self.controls.hide_help()

    def quit(self) -> None:
        """Ctrl+Q, in every mode and with or without the start menu (Esc never quits)."""
        self.app.userExit()

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        self.keys.ignore_all()
        if self.on_scene in self.app.scene_listeners:
            self.app.scene_listeners.remove(self.on_scene)
        if self.learning is not None:
            self.learning.stop()
        for part in (self.menu, self.guidance, self.explain, self.controls):
            if part is not None:
                if part in self.app.frame_hooks:
                    self.app.frame_hooks.remove(part)  # type: ignore[arg-type]
                part.destroy()
        if self.controls is not None and self.controls.sync_from_camera in self.app.camera_listeners:
            self.app.camera_listeners.remove(self.controls.sync_from_camera)
        if self.vr is not None:
            with contextlib.suppress(Exception):
                self.vr.stop("exit")


def _leave_vr(modes: InputModes) -> None:
    """VR stopped (SteamVR quit): the desktop's keys and mouse are the input again."""
    modes.pop(Mode.VR)


def assemble_game(
    app: LatentReachApp,
    *,
    controls: bool = False,
    menu: bool = False,
    learning: bool = False,
    recording: StartRecording | None = None,
    vr_backend: VRBackend | None = None,
) -> GameSystems:
    """Add the systems a run has to ``app`` and return them.

    ``controls``: mouse and keyboard (flight, hand, explanations, guidance); ``menu``: the start
    menu, shown at once; ``learning``: the fine-tune controller; ``recording``: also record the
    session (implies ``learning``); ``vr_backend``: render for a started VR backend and drive
    the hands with its controllers. Quitting (Ctrl+Q, the window's close button) works in every
    windowed run.
    """
    modes = InputModes()
    wording = Wording()  # the texts' words for the input device: keys, or controller and wrist menu
    wants_learning = learning or recording is not None
    vr: VRSession | None = None
    if vr_backend is not None:
        from game.vr.backend import VRUnavailable
        from game.vr.launch import attach

        try:
            vr = attach(app, vr_backend)  # connects a backend that was only probed
        except VRUnavailable as exc:  # probed fine, then refused to connect: the desktop, as for "on"
            if getattr(vr_backend, "required", False):
                raise UserError(f"VR required but unavailable: {exc}") from None
            print(f"VR unavailable ({exc}); running in desktop mode.", file=sys.stderr)
    if vr is not None:
        wording.set_device("vr")
        vr.stop_listeners.append(lambda reason: wording.set_device("desktop"))
        modes.push(Mode.VR)  # the headset has the input: the mirror window's keys are quiet
        vr.stop_listeners.append(lambda reason: _leave_vr(modes))
    # What the controls get instead of the app (see game/controls/services.py).
    view = AppViewport(app)
    parts = scene_parts(app) if controls or menu else None
    desktop = explain = guidance = None
    if controls and parts is not None:
        from game.controls.desktop import DesktopControls
        from game.controls.explain_controls import ExplainControls
        from game.controls.guidance_controls import GuidanceControls

        desktop = DesktopControls(view, parts, modes)
        app.frame_hooks.insert(0, desktop)
        app.camera_listeners.append(desktop.sync_from_camera)
        explain = ExplainControls(view, parts, app.worker, modes=modes, wording=wording)  # X, P, G
        app.frame_hooks.append(explain)
        guidance = GuidanceControls(view, parts, app.worker, modes=modes, wording=wording)  # N, L
        app.frame_hooks.append(guidance)
    menu_ctl = None
    if menu and parts is not None:
        from game.controls.menu import MenuController

        menu_ctl = MenuController(
            view,
            parts,
            app.worker,
            switch_scene=app.switch_scene,
            quit=lambda: app.userExit(),  # looked up when chosen (a test may replace it)
            prestart=prestart_learning if wants_learning else None,
            modes=modes,
            flight=desktop,
            wording=wording,
        )
    slot = None
    if wants_learning:
        slot = Learning(app, recording, vr)
        slot.restart(app.loaded)
    systems = GameSystems(
        app,
        modes,
        controls=desktop,
        explain=explain,
        guidance=guidance,
        menu=menu_ctl,
        vr=vr,
        learning=slot,
    )
    systems.dress_world()
    if vr is not None:
        from game.vr.wrist_menu import attach_wrist_menu

        # The desktop's keys in the hand; the start menu (if this run has one) by the laser.
        attach_wrist_menu(vr, explain=explain, guidance=guidance, start_menu=menu_ctl)
    modes.on_base_escape = systems.escape_in_world
    app.scene_listeners.append(systems.on_scene)
    app.finalExitCallbacks.append(systems.destroy)
    systems.keys.accept("escape", modes.escape)
    systems.keys.accept("control-q", systems.quit)
    if menu_ctl is not None:
        menu_ctl.show_start()
    return systems


def open_game(
    loaded: LoadedScene,
    *,
    offscreen: bool,
    size: tuple[int, int] = (1280, 800),
    fullscreen: bool = False,
    multisamples: int = 4,
    worker: Worker | None = None,
    controls: bool = False,
    menu: bool = False,
    learning: bool = False,
    recording: StartRecording | None = None,
    vr_backend: VRBackend | None = None,
) -> GameSystems:
    """Open an app on ``loaded`` and assemble it (see ``assemble_game``); ``.app`` is the app."""
    if vr_backend is not None:
        from game.vr.launch import prepare_engine

        prepare_engine()  # driver v-sync off before the window opens: SteamVR paces the frames
    app = LatentReachApp(
        loaded,
        offscreen=offscreen,
        size=size,
        fullscreen=fullscreen,
        multisamples=multisamples,
        worker=worker,
    )
    return assemble_game(
        app, controls=controls, menu=menu, learning=learning, recording=recording, vr_backend=vr_backend
    )
