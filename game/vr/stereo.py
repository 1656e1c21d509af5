"""Stereo rendering for a ``VRBackend``: two eye buffers, per-eye cameras, mirror, submit.

Per frame, in this order:

1. an early task (sort ``TASK_SORT``, before the world and the controls update) calls
   ``backend.wait_poses()`` — it blocks until the compositor wants a frame, so the poses are as
   fresh as they can be — polls runtime events, and moves the head and hand nodes;
2. listeners (the VR controls) turn the frame's input into hand actions;
3. Panda3D draws: the left eye buffer (lower sort), then the right one, then the desktop window;
4. the right buffer's draw callback, run right after it has drawn, submits the left texture and
   then the right one (both drawn by then), as OpenGL texture ids.

Node layout: ``rig`` (tracking space placed in the world: walking, snap turns, world scaling move
it) → ``head`` (HMD pose) → one camera per eye at ``eye_to_head``; ``hands[left|right]`` under
``rig``. Each camera has a ``MatrixLens`` holding the backend's projection, already converted to
OpenGL depth and Panda3D axes by ``game.vr.coords``.

Multisampling is off in the eye buffers: the texture must be resolved before it is submitted,
and a draw callback runs before Panda3D's resolve.
"""

from __future__ import annotations

import contextlib
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
from game.vr.backend import EYES, HANDS, LOADING, Eye, FrameState, VRBackend

TASK_SORT = -100  # before every other task: poses first, then the world updates
Listener = Callable[[FrameState, bool], None]


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
        clear_colour: tuple[float, float, float, float] | None = None,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:
        self.base = base
        self.backend = backend
        self.near, self.far = near, far
        self.mirror_eye = mirror_eye
        self.clear_colour = clear_colour
        self.on_stop = on_stop
        self.listeners: list[Listener] = []
        self.trace: list[str] | None = None  # tests: appended "draw:left" ... when not None
        self.rig = base.render.attach_new_node("vr-rig")
        self.head = self.rig.attach_new_node("vr-head")
        self.hands = {h: self.rig.attach_new_node(f"vr-hand-{h}") for h in HANDS}
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
        self._main_cam_was_active = True

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
        self.regions["right"].set_draw_callback(PythonCallbackObject(self._after_right))
        self.regions["left"].set_draw_callback(PythonCallbackObject(self._after_left))
        self._make_mirror(w, h)
        self.base.task_mgr.add(self._task, "vr-wait-poses", sort=TASK_SORT)
        self.active = True

    def _make_eye(self, eye: Eye, w: int, h: int, sort: int) -> None:
        base = self.base
        fbp = FrameBufferProperties()
        fbp.set_rgba_bits(8, 8, 8, 8)
        fbp.set_depth_bits(24)
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
        lens.set_user_mat(_mat(self.backend.projection(eye, self.near, self.far)))
        cam = self.head.attach_new_node(Camera(f"vr-camera-{eye}", lens))
        cam.set_mat(_mat(self.backend.eye_to_head(eye)))
        region = buf.make_display_region()
        region.set_camera(cam)
        self.buffers[eye], self.textures[eye], self.cameras[eye] = buf, tex, cam
        self.regions[eye] = region

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
        self.state = state
        self.head.set_mat(_mat(state.head.matrix))
        for hand in HANDS:
            c = state.hands[hand]
            node = self.hands[hand]
            if c.connected and c.pose.valid:
                node.set_mat(_mat(c.pose.matrix))
                node.show()
            else:
                node.hide()
        self._poll_models()
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
        if self.active:
            for eye in EYES:
                self.backend.submit(eye, self.texture_id(eye))

    def texture_id(self, eye: Eye) -> int:
        """The OpenGL name of an eye texture (prepared on the window's GSG; looked up once)."""
        cached = self._texture_ids.get(eye)
        if cached:
            return cached
        gsg = self.base.win.get_gsg()
        context = self.textures[eye].prepare_now(0, gsg.get_prepared_objects(), gsg)
        native = int(context.get_native_id()) if context is not None else 0
        if native:
            self._texture_ids[eye] = native
        return native

    # --- world <-> tracking space -----------------------------------------------------------------

    def set_rig(self, matrix: np.ndarray) -> None:
        """Place tracking space in the world (column-vector 4x4, Panda3D axes)."""
        self.rig.set_mat(_mat(matrix))

    def head_world(self) -> np.ndarray:
        return matrix_of(self.head, self.base.render)

    # --- controller models ------------------------------------------------------------------------

    def _poll_models(self) -> None:
        if not self._models_pending:
            return
        from game.vr.models import attach_controller_model

        for hand in list(self._models_pending):
            mesh = self.backend.render_model(hand)
            if mesh == LOADING:
                continue
            attach_controller_model(
                self.hands[hand], mesh if not isinstance(mesh, str) else None, self.base.loader
            )
            self._models_pending.discard(hand)
