"""Stereo rendering for a ``VRBackend``: two eye buffers, per-eye cameras, mirror, submit.

Per frame, in this order:

1. an early task (sort ``TASK_SORT``, before the world and the controls update) calls
   ``backend.wait_poses()`` — it blocks until the compositor wants a frame, so the poses are as
   fresh as they can be — polls runtime events, and moves the head and hand nodes;
2. listeners (the VR controls) turn the frame's input into hand actions;
3. Panda3D draws: the left eye buffer (lower sort), then the right one, then the desktop window;
   each eye buffer is multisampled (4x) and Panda3D resolves it into the eye texture when that
   buffer's frame ends, after its draw callbacks;
4. a third, empty 1x1 buffer sorted after both eyes ("vr-submit") runs a draw callback: both eye
   textures are resolved by then. It submits the left texture and then the right one, as OpenGL
   texture ids, flushes GL (OpenVR asks OpenGL applications to flush after submitting, or the
   compositor can miss the frame) and calls ``post_present_handoff`` so the compositor starts at
   once instead of at the next wait. (Submitting from the right eye's own callback would hand
   over its texture before the resolve: last frame's picture, or nothing.)

Runtime events: ``quit`` stops VR at once; the dashboard pauses input; ``ipd_changed``
re-reads both eye transforms and projections. Backend notices (a submit error, a controller
model that cannot be shown) go to the world once each, as warnings (``on_notice``).

Node layout: ``rig`` (tracking space placed in the world: walking, snap turns, world scaling move
it) → ``head`` (HMD pose) → one camera per eye at ``eye_to_head``; ``hands[left|right]`` under
``rig``. Each camera has a ``MatrixLens`` holding the backend's projection, already converted to
OpenGL depth and Panda3D axes by ``game.vr.coords``.

Cards in VR face the head position (world up kept) and the head and hands choose the cards
drawn at full resolution: ``world.set_viewer(head, face=True, hands=...)`` while VR runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from panda3d.core import (
    Camera,
    CardMaker,
    FrameBufferProperties,
    GraphicsOutput,
    GraphicsPipe,
    LMatrix4f,
    MatrixLens,
    NodePath,
    OrthographicLens,
    PythonCallbackObject,
    Texture,
    WindowProperties,
)

from game.vr import coords
from game.vr.backend import EYES, HANDS, Eye, FrameState, VRBackend

TASK_SORT = -100  # before every other task: poses first, then the world updates
Listener = Callable[[FrameState, bool], None]
MULTISAMPLES = 4  # eye-buffer anti-aliasing (resolved before submit, see the module docstring)
FALLBACK_AFTER = 90  # frames of "loading" before the fallback model stands in (still polling)
RETRY_EVERY = 30  # frames between polls once the fallback stands in


def _gl_library_candidates() -> list[str]:
    """Where ``glFlush`` lives on each platform (Panda3D's GL back end links the same library)."""
    if sys.platform == "win32":
        return ["opengl32"]
    if sys.platform == "darwin":
        return ["/System/Library/Frameworks/OpenGL.framework/OpenGL"]
    found = ctypes.util.find_library("GL")
    return ["libGL.so.1", "libOpenGL.so.0"] + ([found] if found else [])


@functools.cache
def gl_flush_function() -> Callable[[], None] | None:
    """``glFlush`` of the process's OpenGL library, or None (then the flush is skipped).

    Panda3D does not expose a flush; the draw callback runs on the thread that holds the GL
    context, so the library's entry point flushes exactly that context.
    """
    for name in _gl_library_candidates():
        try:
            lib = ctypes.CDLL(name)
            fn = lib.glFlush
        except (OSError, AttributeError):
            continue
        fn.restype = None
        fn.argtypes = []
        return fn
    return None


def _mat(m: np.ndarray) -> LMatrix4f:
    return LMatrix4f(*coords.panda_values(m))


def matrix_of(node: NodePath, other: NodePath) -> np.ndarray:
    """``node``'s transform relative to ``other`` as a column-vector numpy 4x4."""
    m = node.get_mat(other)
    return coords.from_panda_values([m.get_cell(r, c) for r in range(4) for c in range(4)])


class VRStereo:
    """Renders ``base.render`` for a headset through ``backend``; ``start()`` begins, ``stop()`` ends."""

    def __init__(
        self,
        base: Any,
        backend: VRBackend,
        *,
        near: float = 0.05,
        far: float = 200.0,
        mirror_eye: Eye = "left",
        multisamples: int = MULTISAMPLES,
        clear_colour: tuple[float, float, float, float] | None = None,
        on_stop: Callable[[str], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.base = base
        self.backend = backend
        self.near, self.far = near, far
        self.mirror_eye = mirror_eye
        self.multisamples = int(multisamples)
        self.clear_colour = clear_colour
        self.on_stop = on_stop
        self.on_notice = on_notice or self._post_notice
        self.notices: list[str] = []  # every notice shown, in order (tests, the session report)
        self.flushes = 0
        self.texture_id_changes = 0
        self.ipd_reads = 0
        self.submit_errors: dict[str, int] = {}
        self.listeners: list[Listener] = []
        self._trace: list[str] | None = None  # tests: see ``trace``
        self.rig = base.render.attach_new_node("vr-rig")
        self.head = self.rig.attach_new_node("vr-head")
        self.hands = {h: self.rig.attach_new_node(f"vr-hand-{h}") for h in HANDS}
        self._hands_shown: dict[str, bool] = {}  # each hand node's last show / hide
        self.buffers: dict[str, GraphicsOutput] = {}
        self.textures: dict[str, Texture] = {}
        self.cameras: dict[str, NodePath] = {}
        self.regions: dict[str, Any] = {}
        self._texture_ids: dict[str, int] = {}
        self.state: FrameState | None = None
        self.paused = False  # the SteamVR dashboard is up: render, but ignore input
        self.active = False
        self.frames = 0
        self._mirror: Any = None
        self._mirror_root: NodePath | None = None
        self._models_pending = set(HANDS)
        self._model_polls = {h: 0 for h in HANDS}
        self._main_cam_was_active = True
        self._gl_flush = gl_flush_function()
        self._submit_buffer: GraphicsOutput | None = None
        self._faced_world: Any = None

    @property
    def trace(self) -> list[str] | None:
        """Tests: a list that gets "wait_poses", "draw:left", "draw:right", "flush" in the order
        they happen, or None (no eye callbacks then: a Python call per eye per frame saved)."""
        return self._trace

    @trace.setter
    def trace(self, log: list[str] | None) -> None:
        self._trace = log
        self._watch_eyes()

    def _watch_eyes(self) -> None:
        """Draw callbacks on the eye regions only while tracing (they only note the draws)."""
        for eye, callback in (("left", self._after_left), ("right", self._after_right)):
            region = self.regions.get(eye)
            if region is None:
                continue
            if self._trace is not None:
                region.set_draw_callback(PythonCallbackObject(callback))
            else:
                region.clear_draw_callback()

    @property
    def running(self) -> bool:
        """True while frames go to the headset (False after ``stop``, e.g. SteamVR quit)."""
        return self.active

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the eye buffers and the mirror, and add the per-frame task (backend already started)."""
        w, h = self.backend.recommended_size()
        for i, eye in enumerate(EYES):
            self._make_eye(eye, w, h, sort=-20 + i)
        self._watch_eyes()
        self._make_submitter(sort=-20 + len(EYES))
        self._make_mirror(w, h)
        self.base.task_mgr.add(self._task, "vr-wait-poses", sort=TASK_SORT)
        self.active = True

    def _make_eye(self, eye: Eye, w: int, h: int, sort: int) -> None:
        base = self.base
        fbp = FrameBufferProperties()
        fbp.set_rgba_bits(8, 8, 8, 8)
        fbp.set_depth_bits(24)
        if self.multisamples > 1:
            fbp.set_multisamples(self.multisamples)
        props = WindowProperties.size(w, h)
        buf = base.graphics_engine.make_output(
            base.pipe,
            f"vr-eye-{eye}",
            sort,
            fbp,
            props,
            GraphicsPipe.BF_refuse_window,
            base.win.get_gsg(),
            base.win,
        )
        if buf is None:
            raise RuntimeError(f"could not open the {eye} eye buffer ({w}x{h})")
        tex = Texture(f"vr-eye-{eye}")
        buf.add_render_texture(tex, GraphicsOutput.RTM_bind_or_copy)
        colour = self.clear_colour or tuple(base.win.get_clear_color())
        buf.set_clear_color(colour)
        buf.set_clear_color_active(True)
        buf.set_clear_depth_active(True)
        lens = MatrixLens()
        cam = self.head.attach_new_node(Camera(f"vr-camera-{eye}", lens))
        self.cameras[eye] = cam
        self._read_eye(eye)
        region = buf.make_display_region()
        region.set_camera(cam)
        self.buffers[eye], self.textures[eye], self.cameras[eye] = buf, tex, cam
        self.regions[eye] = region

    def _make_submitter(self, sort: int) -> None:
        """A 1x1 buffer drawn after both eye buffers: its draw callback submits (see step 4)."""
        base = self.base
        fbp = FrameBufferProperties()
        fbp.set_rgba_bits(8, 8, 8, 8)
        buf = base.graphics_engine.make_output(
            base.pipe,
            "vr-submit",
            sort,
            fbp,
            WindowProperties.size(1, 1),
            GraphicsPipe.BF_refuse_window,
            base.win.get_gsg(),
            base.win,
        )
        if buf is None:
            raise RuntimeError("could not open the VR submit buffer")
        buf.set_clear_color_active(False)
        buf.set_clear_depth_active(False)
        empty = NodePath("vr-submit-scene")
        cam = empty.attach_new_node(Camera("vr-submit-camera", OrthographicLens()))
        region = buf.make_display_region()
        region.set_camera(cam)
        region.set_draw_callback(PythonCallbackObject(self._submit))
        self._submit_buffer = buf
        self.regions["submit"] = region

    @property
    def eye_multisamples(self) -> int:
        """Samples the eye buffers got (the driver may give fewer than asked, or none)."""
        buf = self.buffers.get("left")
        return int(buf.get_fb_properties().get_multisamples()) if buf is not None else 0

    def _read_eye(self, eye: Eye) -> None:
        """Eye offset (IPD) and projection from the runtime: at start and on ``ipd_changed``."""
        cam = self.cameras[eye]
        cam.node().get_lens().set_user_mat(_mat(self.backend.projection(eye, self.near, self.far)))
        cam.set_mat(_mat(self.backend.eye_to_head(eye)))
        self.ipd_reads += 1

    def _make_mirror(self, w: int, h: int) -> None:
        """Show one eye on the desktop window instead of a third render of the scene."""
        base = self.base
        root = NodePath("vr-mirror")
        root.set_depth_test(False)
        root.set_depth_write(False)
        cm = CardMaker("vr-mirror-card")
        cm.set_frame(-1, 1, -1, 1)
        card = root.attach_new_node(cm.generate())
        card.set_texture(self.textures[self.mirror_eye])
        lens = OrthographicLens()
        lens.set_film_size(2, 2)
        lens.set_near_far(-10, 10)
        cam = root.attach_new_node(Camera("vr-mirror-camera", lens))
        region = base.win.make_display_region()
        region.set_sort(-5)
        region.set_camera(cam)
        region.set_clear_color_active(True)
        region.set_clear_color((0, 0, 0, 1))
        # Fit the eye's aspect into the window's (letterbox).
        ww, wh = base.win.get_x_size() or w, base.win.get_y_size() or h
        eye_aspect, win_aspect = w / h, ww / wh
        if eye_aspect > win_aspect:
            card.set_scale(1.0, 1.0, win_aspect / eye_aspect)
        else:
            card.set_scale(eye_aspect / win_aspect, 1.0, 1.0)
        self._mirror, self._mirror_root = region, root
        cam_node = getattr(base, "camNode", None)
        if cam_node is not None:
            self._main_cam_was_active = cam_node.is_active()
            cam_node.set_active(False)

    def stop(self, reason: str = "stopped") -> None:
        """Leave VR: remove buffers, mirror and task, give the desktop camera back, shut down."""
        if not self.active:
            return
        self.active = False
        base = self.base
        base.task_mgr.remove("vr-wait-poses")
        for region in self.regions.values():
            region.clear_draw_callback()
        for buf in self.buffers.values():
            base.graphics_engine.remove_window(buf)
        self.buffers.clear()
        if self._submit_buffer is not None:
            base.graphics_engine.remove_window(self._submit_buffer)
            self._submit_buffer = None
        self._give_world_back()
        self.regions.clear()
        if self._mirror is not None:
            base.win.remove_display_region(self._mirror)
            self._mirror = None
        if self._mirror_root is not None:
            self._mirror_root.remove_node()
        cam_node = getattr(base, "camNode", None)
        if cam_node is not None:
            cam_node.set_active(self._main_cam_was_active)
        with contextlib.suppress(Exception):
            self.backend.shutdown()
        if self.on_stop is not None:
            self.on_stop(reason)

    # --- per frame ------------------------------------------------------------------------------

    def _task(self, task: Any) -> int:
        self.step_poses()
        return task.cont

    def step_poses(self) -> FrameState | None:
        """``wait_poses`` → runtime events → head/hand nodes → listeners (before the world updates)."""
        state = self.backend.wait_poses()
        if self.trace is not None:
            self.trace.append("wait_poses")
        for event in self.backend.poll_events():
            if event.kind == "quit":
                self.stop("SteamVR quit: back to desktop mode")
                return None
            if event.kind == "dashboard_shown":
                self.paused = True
            elif event.kind == "dashboard_hidden":
                self.paused = False
            elif event.kind == "ipd_changed":
                for eye in EYES:
                    self._read_eye(eye)
        for text in self.backend.take_notices():
            self.notices.append(text)
            self.on_notice(text)
        self.state = state
        self.head.set_mat(_mat(state.head.matrix))
        shown = self._hands_shown
        for hand in HANDS:
            c = state.hands[hand]
            node = self.hands[hand]
            tracked = c.connected and c.pose.valid
            if tracked:
                node.set_mat(_mat(c.pose.matrix))
            if shown.get(hand) != tracked:  # show / hide only on a change (no call per frame)
                node.show() if tracked else node.hide()
                shown[hand] = tracked
        self._poll_models()
        self._face_world()
        for listener in list(self.listeners):
            listener(state, self.paused)
        self.frames += 1
        return state

    def _after_left(self, cbdata: Any) -> None:
        cbdata.upcall()
        if self.trace is not None:
            self.trace.append("draw:left")

    def _after_right(self, cbdata: Any) -> None:
        cbdata.upcall()
        if self.trace is not None:
            self.trace.append("draw:right")

    def _submit(self, cbdata: Any) -> None:
        """Both eye buffers have drawn and been resolved into their textures: hand them over."""
        if not self.active:
            return
        gsg = self.base.win.get_gsg()
        prepared = gsg.get_prepared_objects()  # once for both eyes
        for eye in EYES:
            kind = self.backend.submit(eye, self.texture_id(eye, gsg, prepared))
            if kind is not None:
                self.submit_errors[kind] = self.submit_errors.get(kind, 0) + 1
        if self._gl_flush is not None:
            self._gl_flush()
            self.flushes += 1
        if self.trace is not None:
            self.trace.append("flush")
        self.backend.post_present_handoff()

    def texture_id(self, eye: Eye, gsg: Any = None, prepared: Any = None) -> int:
        """The OpenGL name of an eye texture, asked every frame (about a microsecond).

        Panda3D may give a texture a new GL name (a buffer re-created, textures released after a
        window event); a cached name would then point at nothing and the headset stay grey.
        ``gsg``, ``prepared``: the window's GSG and its prepared objects (the submit reads them
        once for both eyes).
        """
        if gsg is None:
            gsg = self.base.win.get_gsg()
        if prepared is None:
            prepared = gsg.get_prepared_objects()
        context = self.textures[eye].prepare_now(0, prepared, gsg)
        native = int(context.get_native_id()) if context is not None else 0
        if native and self._texture_ids.get(eye) not in (None, native):
            self.texture_id_changes += 1
        if native:
            self._texture_ids[eye] = native
        return native

    def _post_notice(self, text: str) -> None:
        """Default ``on_notice``: a warning in the world (the wrist display in VR)."""
        from game.core import events as ev

        workspace = getattr(self.base, "workspace", None)
        if workspace is not None:
            workspace.post(ev.Message(text=text, level="warning"))

    def _face_world(self) -> None:
        """The world's cards face the head and load full resolution near head and hands (a new
        world after a scene switch is told at its first frame)."""
        world = getattr(self.base, "world", None)
        if world is None or world is self._faced_world or not hasattr(world, "set_viewer"):
            return
        world.set_viewer(self.head, face=True, hands=list(self.hands.values()))
        self._faced_world = world

    def _give_world_back(self) -> None:
        world = self._faced_world
        self._faced_world = None
        current: Any = getattr(self.base, "world", None)
        if world is not None and current is world:
            current.set_viewer(None)

    # --- world <-> tracking space -----------------------------------------------------------------

    def set_rig(self, matrix: np.ndarray) -> None:
        """Place tracking space in the world (column-vector 4x4, Panda3D axes)."""
        self.rig.set_mat(_mat(matrix))

    def head_world(self) -> np.ndarray:
        return matrix_of(self.head, self.base.render)

    # --- controller models ------------------------------------------------------------------------

    def _poll_models(self) -> None:
        """Ask for each hand's model until it loaded or the backend says "fallback for good".

        While the runtime says ``LOADING`` (loading, controller not on yet, a property not yet
        available) the fallback model stands in after ``FALLBACK_AFTER`` frames, and the backend
        is still asked every ``RETRY_EVERY`` frames: a passing error never pins the fallback.
        """
        if not self._models_pending:
            return
        from game.vr.models import attach_controller_model

        for hand in list(self._models_pending):
            polls = self._model_polls[hand] = self._model_polls[hand] + 1
            standing_in = polls > FALLBACK_AFTER
            if standing_in and (polls - FALLBACK_AFTER) % RETRY_EVERY != 1:
                continue
            mesh = self.backend.render_model(hand)
            if isinstance(mesh, str):  # LOADING: ask again
                if polls == FALLBACK_AFTER:
                    attach_controller_model(self.hands[hand], None, self.base.loader)
                continue
            attach_controller_model(self.hands[hand], mesh, self.base.loader)
            self._models_pending.discard(hand)

    def model_source(self, hand: str) -> str | None:
        """Where the hand's model came from: "openvr", "fallback", or None (none yet)."""
        found = self.hands[hand].find("controller-model")
        return None if found.is_empty() else found.get_tag("source")
