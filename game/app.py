"""The game application: a ShowBase that wires the workspace, the world, the hands and the worker.

Per frame, in this order (one task, ``latent-reach-frame``):

1. every object in ``app.frame_hooks`` gets ``update(now)`` (``game.assembly.assemble_game`` puts
   the desktop controls first, then explanations, guidance, the fine-tune controller, the recorder),
2. ``app.worker.poll()`` runs callbacks of finished background jobs,
3. ``app.workspace.flush()`` applies queued events and notifies listeners (the world among them),
4. ``app.world.update(now)`` advances tweens and timers and uploads changed card data,

then Panda3D renders. ``now`` is the app clock (seconds): real time when running, or exactly the
``dt`` passed to ``step`` when driven programmatically (tests, replays, demo recordings).

The app is the engine shell only (window, camera, world, frame loop, scene switch): it builds no
controls, menu or learning. ``game.assembly.assemble_game`` adds those, in one place, for the
desktop, VR, headless runs and tests; the app knows them only as frame hooks and listeners.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from direct.showbase.ShowBase import ShowBase
from panda3d.core import PerspectiveLens

from game.core import events as ev
from game.core.worker import Worker
from game.world import engine
from game.world.frame_pacing import SOFTWARE_FPS_CAP, FramePacer, is_software_renderer, pacing_wanted
from game.world.framing import frame_points as framing_pose
from game.world.world import World

if TYPE_CHECKING:
    from game.pipeline import LoadedScene
    from game.world.drop_preview import DropPreview

# How long another thread may keep the GIL once the frame loop asks for it back (Python's default
# is 5 ms). Panda3D releases the GIL while it renders; the frame loop then waits for the worker
# thread (explanations, guidance, layer switches, fine-tune hand-overs) to let go of it before the
# frame can end, so the interval is added to any frame that overlaps Python work on the worker.
GIL_SWITCH_INTERVAL_S = 0.001


class FrameHook(Protocol):
    def update(self, now: float) -> None: ...


class LatentReachApp(ShowBase):
    """ShowBase for one loaded scene; see the module docstring for the frame order."""

    def __init__(
        self,
        loaded: LoadedScene,
        *,
        offscreen: bool,
        size: tuple[int, int] = (1280, 800),
        fullscreen: bool = False,
        worker: Worker | None = None,
        multisamples: int = 4,
        fov: float = 70.0,
        controls: bool = False,
    ) -> None:
        if controls:
            raise TypeError(
                "LatentReachApp builds no controls any more: use game.assembly.open_game(loaded, "
                "controls=True, ...) (or assemble_game(app, controls=True)) and its GameSystems"
            )
        # ``controls=False`` is still accepted from callers written when True was the default.
        engine.configure(offscreen=offscreen, size=size, fullscreen=fullscreen, multisamples=multisamples)
        self._previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # while the app runs, the frame loop comes first
        ShowBase.__init__(self, windowType="offscreen" if offscreen else "onscreen")
        self.offscreen = offscreen
        self.size = (int(size[0]), int(size[1]))
        self.frame_hooks: list[FrameHook] = []
        self.scene_listeners: list[Callable[[LoadedScene], None]] = []
        # Told after the camera was placed by framing (the desktop controls adopt its heading).
        self.camera_listeners: list[Callable[[], None]] = []
        self.worker = worker or Worker()
        self._owns_worker = worker is None
        self.now = 0.0
        self.frame_count = 0
        self._step_dt: float | None = None
        # Frames drawn on the CPU (llvmpipe): give a running job half the time (frame_pacing).
        self.software_renderer: bool | None = None  # None until the first frame names the renderer
        self._pacer = FramePacer()
        self._pacing = pacing_wanted()
        self._fps_capped = False  # the clock's 60 fps limit on, now
        self.disable_mouse()
        lens = PerspectiveLens()
        lens.set_fov(fov)
        lens.set_aspect_ratio(self.size[0] / self.size[1])
        lens.set_near_far(0.03, 200.0)
        # Shift the picture left so the framed cloud is centred in the part the docked info
        # panel (right edge) leaves free; picking and projection use the same lens.
        lens.set_film_offset(lens.get_film_size()[0] * 0.1, 0)
        self.cam.node().set_lens(lens)
        self.camLens = lens
        self.world: World  # set by _set_scene; None only once the app is destroyed
        self.drop_preview: DropPreview | None = None
        self._destroyed = False
        self._set_scene(loaded, replacing=False)
        self._frame_task_handle = self.task_mgr.add(self._frame_task, "latent-reach-frame", sort=-50)
        from game.world.view_report import attach_from_env

        attach_from_env(self)  # $LATENT_REACH_VIEW_REPORT=FILE: what is where on screen (tests/desktop)

    # --- scene ------------------------------------------------------------------------------

    def _set_scene(self, loaded: LoadedScene, *, replacing: bool = True) -> None:
        if replacing:
            self.world.destroy()
        self.loaded = loaded
        self.workspace = loaded.workspace
        bg = loaded.scene.world.background
        self.set_background_color(bg[0], bg[1], bg[2], 1)
        self.world = World(self.render, self.aspect2d, self.loader, self.workspace, loaded.scene.world)
        self._set_drop_preview(loaded)
        self.world.now = self.now
        self.world.panel.place_on_screen(self.aspect2d, self.aspect_ratio)
        self.world.hud.layout(self.aspect_ratio)
        self.frame_all()
        for listener in list(self.scene_listeners):
            listener(loaded)

    def _set_drop_preview(self, loaded) -> None:
        """What a release of the carried card will do, for every hand (game/world/drop_preview)."""
        from game.learning.edits import DropJudge
        from game.world.drop_preview import DropPreview

        if self.drop_preview is not None:
            self.drop_preview.destroy()
        self.drop_preview = DropPreview(
            self.workspace,
            DropJudge(loaded.scene.learning),
            self.world.root,
            self.aspect2d,
            self.world.colours,
            aspect_ratio=self.aspect_ratio,
        )

    def switch_scene(self, loaded: LoadedScene) -> None:
        """Replace the world with another loaded scene (start menu). Listeners are told."""
        self._set_scene(loaded)

    @property
    def aspect_ratio(self) -> float:
        return self.size[0] / self.size[1]

    # --- camera -----------------------------------------------------------------------------

    def frame_points(
        self, points: np.ndarray, pitch: float = 22.0, margin: float = 0.85, extra: np.ndarray | None = None
    ) -> None:
        """Place the camera so ``points`` fill the view, looking slightly down (``extra``: points
        that must all be in view, see ``game.world.framing``)."""
        lens = self.camLens
        fov = (float(lens.get_fov()[0]), float(lens.get_fov()[1]))
        eye, target = framing_pose(points, fov, pitch_deg=pitch, margin=margin, extra=extra)
        self.camera.set_pos(*eye)
        self.camera.look_at(*target)
        self._camera_placed()

    def frame_all(self) -> None:
        """The whole cloud and every class label in view."""
        self.frame_points(self.world.positions, extra=self.world.centroid_markers.label_corners())

    def frame_card(self, card: int, distance: float = 0.6) -> None:
        p = self.world.positions[card]
        forward = self.render.get_relative_vector(self.camera, (0, 1, 0))
        eye = p - distance * np.array([forward[0], forward[1], forward[2]], dtype=np.float32)
        self.camera.set_pos(*map(float, eye))
        self.camera.look_at(*map(float, p))
        self._camera_placed()

    def _camera_placed(self) -> None:
        for listener in list(self.camera_listeners):
            listener()

    # --- frames -----------------------------------------------------------------------------

    def frame_dt(self) -> float:
        """This frame's step in seconds: the ``dt`` given to ``step``, else real time (at most 0.1)."""
        if self._step_dt is not None:
            return self._step_dt
        return min(float(self.clock.get_dt()), 0.1)

    def _frame_task(self, task):
        if self.software_renderer is None:
            self._detect_renderer()
        if self._step_dt is None and self.software_renderer and self._pacing:
            # Real-time frames only (``step`` is never paced). During a job the pacer alone limits
            # the frames: the clock limiter's wait would count as frame work and pause cheap frames
            # longer than their share.
            busy = self.worker.busy
            self._cap_frame_rate(not busy)
            self._pacer.pace(busy)
        dt = self.frame_dt()
        self.now += dt
        now = self.now
        self.world.now = now
        for hook in list(self.frame_hooks):
            self._guarded(hook.update, now, what=type(hook).__name__)
        self._guarded(self.worker.poll, what="a finished job")
        # A listener that raises leaves the rest of the queue for the next frame: nothing is lost.
        self._guarded(self.workspace.flush, what="an event")
        self.world.update(now)
        self.frame_count += 1
        return task.cont

    def _detect_renderer(self) -> None:
        """Name the OpenGL renderer once the window has a context (on a software one the frame
        task caps the frame rate and paces frames during jobs)."""
        gsg = self.win.get_gsg() if self.win is not None else None
        renderer = gsg.get_driver_renderer() if gsg is not None else ""
        if not renderer:
            return  # no context yet: the next frame asks again
        self.software_renderer = is_software_renderer(renderer)

    def _cap_frame_rate(self, on: bool) -> None:
        """An on-screen window on a software renderer: at most ``SOFTWARE_FPS_CAP`` frames a
        second while no job runs (there is no vsync to wait on)."""
        on = on and not self.offscreen
        if on == self._fps_capped:
            return
        from panda3d.core import ClockObject

        self._fps_capped = on
        if on:
            self.clock.set_mode(ClockObject.M_limited)
            self.clock.set_frame_rate(SOFTWARE_FPS_CAP)
        else:
            self.clock.set_mode(ClockObject.M_normal)

    def _guarded(self, fn, *args, what: str) -> None:
        """Run one part of the frame; a bug in it is reported in the world, not fatal to the game."""
        try:
            fn(*args)
        except Exception as exc:
            import sys
            import traceback

            traceback.print_exc(file=sys.stderr)
            self.workspace.post(ev.Message(text=f"internal error in {what}: {exc}", level="error"))

    def step(self, dt: float | None = None) -> None:
        """Run exactly one frame (hooks, worker, flush, tweens, render); ``dt`` in seconds."""
        self._step_dt = 1.0 / 60.0 if dt is None else float(dt)
        try:
            self.task_mgr.step()
        finally:
            self._step_dt = None

    def pixels(self) -> np.ndarray:
        """The last rendered frame as an ``(H, W, 3)`` uint8 array, top row first."""
        tex = self.win.get_screenshot()
        if tex is None:
            raise RuntimeError("no frame rendered yet")
        data = np.frombuffer(bytes(tex.get_ram_image_as("RGB")), dtype=np.uint8)
        h, w = tex.get_y_size(), tex.get_x_size()
        return data.reshape(h, w, 3)[::-1].copy()

    def screenshot(self, path: str | Path) -> Path:
        """Write the last rendered frame (rendering one if none was) to ``path`` (PNG/JPG)."""
        if self.frame_count == 0:
            self.step(0.0)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(self.pixels()).save(out)
        return out

    def project(self, point) -> tuple[float, float] | None:
        """Pixel (x, y from top-left) where a world point is drawn, or None when off-screen."""
        from panda3d.core import Point2, Point3

        p = self.cam.get_relative_point(self.render, Point3(*map(float, point)))
        p2 = Point2()
        if not self.camLens.project(p, p2):
            return None
        w, h = self.size
        return ((p2[0] + 1) / 2 * w, (1 - p2[1]) / 2 * h)

    def mouse_ray(self, mx: float, my: float) -> tuple[np.ndarray, np.ndarray]:
        """World ray (origin, direction) through normalised screen coords (-1..1, y up)."""
        from panda3d.core import Point3

        near, far = Point3(), Point3()
        self.camLens.extrude((mx, my), near, far)
        a = self.render.get_relative_point(self.cam, near)
        b = self.render.get_relative_point(self.cam, far)
        o = np.array([a[0], a[1], a[2]], dtype=np.float32)
        d = np.array([b[0] - a[0], b[1] - a[1], b[2] - a[2]], dtype=np.float32)
        return o, d / np.linalg.norm(d)

    def userExit(self) -> None:  # noqa: N802 (ShowBase's name)
        """Quit (Ctrl+Q, the menu's Quit, the window's close button): the window closes at once.

        Cleanup (the session file, job processes, a worker job that must end before the
        interpreter does) goes on behind the closed window, in ``destroy`` and at exit.
        """
        if self.win is not None and not self.offscreen:
            # Closed, but ``self.win`` stays set: exit callbacks (VR's stop removes its mirror
            # region) still find it; ShowBase.destroy drops it.
            self.graphics_engine.remove_window(self.win)
            self.graphics_engine.render_frame()  # lets the window system see it go now
        ShowBase.userExit(self)

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        # The task manager is process-wide: a task left behind would run in the next app.
        self.task_mgr.remove(self._frame_task_handle)
        # What was assembled onto the app (controls, menu, recorder, VR) lets go while the world
        # it points into still exists; ShowBase.destroy would run these callbacks only after.
        callbacks, self.finalExitCallbacks[:] = list(self.finalExitCallbacks), []
        for callback in callbacks:
            callback()
        if self.drop_preview is not None:
            self.drop_preview.destroy()
            self.drop_preview = None
        self.world.destroy()
        self.world = None  # type: ignore[assignment]  # destroyed (view reports look for it)
        if self._owns_worker:
            self.worker.close()
        sys.setswitchinterval(self._previous_switch_interval)
        ShowBase.destroy(self)
