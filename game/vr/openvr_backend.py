"""``VRBackend`` on a real headset through pyopenvr (the ``openvr`` package).

A scene application: ``init(VRApplication_Scene)``, the standing tracking universe, the SteamVR
Input action manifest shipped next to this file (``actions.json`` + per-controller bindings; the
deprecated controller-state calls are not used), ``waitGetPoses`` once per frame, both eye
textures submitted as OpenGL texture ids, then ``postPresentHandoff`` (the renderer flushes GL
first), render models polled until loaded.

``probe`` asks only whether a runtime and a headset exist (``VR_IsRuntimeInstalled``,
``VR_IsHmdPresent``: no connection). The run command probes before the scene loads, so
``--vr=require`` still fails in a second, and calls ``start`` once the app can submit frames:
a scene application that loads for minutes without submitting or reading events shows a frozen
app in the headset and cannot answer SteamVR's quit.

Errors the person should know about (a submit the compositor refuses, a controller model in a
texture format we do not read) become one notice per kind (``take_notices``); the renderer
shows them in the world.

``openvr`` is imported in ``start()`` only, so importing ``game.vr`` loads no native library and
changes nothing. Tests hand in the real module with its functions replaced by a test double
(``openvr_module=``) that returns real ``openvr`` structs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from game.vr import coords
from game.vr.backend import (
    HANDS,
    LOADING,
    ControllerState,
    Eye,
    FrameState,
    Pose,
    RenderModelMesh,
    RuntimeEvent,
    VRUnavailable,
)

MANIFEST = Path(__file__).resolve().parent / "actions.json"
# The application manifest: SteamVR lists the program as "Latent Reach" (not "python") in its
# dashboard, library and binding UI; registered for this run only (temporary) at start.
APP_MANIFEST = Path(__file__).resolve().parent / "latent_reach.vrmanifest.json"
APP_KEY = "io.github.latent-reach"
ACTION_SET = "/actions/latent"
_ACTIONS = {
    "pose": "in/hand_pose",
    "tip": "in/tip_pose",
    "grip": "in/grip",
    "trigger": "in/trigger",
    "trigger_value": "in/trigger_value",
    "move": "in/move",
    "pad_click": "in/pad_click",
    "menu": "in/menu",
    "undo": "in/undo",
    "haptic": "out/haptic",
}


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what libopenvr prints on fd 2 while it looks for a runtime.

    Without a runtime it writes several "Unable to read VR Path Registry" lines, and the issue
    asks for a one-line message. Only the init call is wrapped.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# Submit errors: what the person sees in the world the first time each happens.
_SUBMIT_HINTS = {
    "DoNotHaveFocus": "the dashboard or another VR app has the headset",
    "InvalidTexture": "the compositor refused the eye texture (re-read next frame)",
    "TextureUsesUnsupportedFormat": "the eye texture's format is not one SteamVR takes",
    "TextureIsOnWrongDevice": "the window runs on another GPU than the headset: move it to the headset's GPU",
    "IsNotSceneApplication": "SteamVR does not see this program as a VR scene",
    "SharedTexturesNotSupported": "the graphics driver cannot share the eye texture with SteamVR",
}
# Property errors that pass (the device is still starting, or SteamVR is busy): ask again later.
_TRANSIENT_PROPERTY_ERRORS = (
    "TrackedProp_NotYetAvailable",
    "TrackedProp_InvalidDevice",
    "TrackedProp_CouldNotContactServer",
    "TrackedProp_IPCReadFailure",
    "TrackedProp_BufferTooSmall",
)


def _kind(exc: Exception, prefix: str) -> str:
    """``CompositorError_InvalidTexture`` → ``InvalidTexture``."""
    name = type(exc).__name__
    return name[len(prefix) :] if name.startswith(prefix) else name


class OpenVRBackend:
    """The real headset. ``probe`` and ``start`` raise ``VRUnavailable`` with a one-line reason."""

    name = "openvr"

    def __init__(self, openvr_module: ModuleType | None = None, manifest: Path = MANIFEST) -> None:
        self._ovr_override = openvr_module
        self.manifest = manifest
        self.ovr: Any = None
        self.system: Any = None
        self.compositor: Any = None
        self.input: Any = None
        self.render_models: Any = None
        self._actions: dict[str, int] = {}
        self._sources: dict[str, int] = {}
        self._active_sets: Any = None
        self._poses: Any = None
        self._frame = 0
        self._last = FrameState(0, Pose(), {h: ControllerState() for h in HANDS})
        self._models: dict[str, Any] = {}
        self.submit_errors: dict[str, int] = {}  # kind -> count
        self._notices: list[str] = []
        self._told: set[str] = set()
        self.app_key: str | None = None  # set once SteamVR knows the program by its manifest
        self.started = False

    # --- life cycle -----------------------------------------------------------------------------

    def _load(self) -> Any:
        if self.ovr is None:
            try:
                self.ovr = self._ovr_override or importlib.import_module("openvr")
            except (ImportError, OSError) as exc:
                raise VRUnavailable(f"the openvr package cannot load ({exc})") from None
        return self.ovr

    def probe(self) -> None:
        """Is there a runtime and a headset? Connects to nothing (safe before a long load)."""
        ovr = self._load()
        try:
            with _quiet_native_stderr():
                installed = bool(ovr.isRuntimeInstalled())
                present = installed and bool(ovr.isHmdPresent())
        except Exception as exc:  # noqa: BLE001 - a broken library is "no VR", in one line
            raise VRUnavailable(f"OpenVR: {type(exc).__name__} {exc}".strip()) from None
        if not installed:
            raise VRUnavailable("OpenVR: no SteamVR runtime is installed")
        if not present:
            raise VRUnavailable("OpenVR: no headset is connected")

    def start(self) -> None:
        if self.started:
            return
        ovr = self._load()
        try:
            with _quiet_native_stderr():
                self.system = ovr.init(ovr.VRApplication_Scene)
            self.compositor = ovr.VRCompositor()
            self.compositor.setTrackingSpace(ovr.TrackingUniverseStanding)
            self.input = ovr.VRInput()
            self.input.setActionManifestPath(str(self.manifest))
            set_handle = self.input.getActionSetHandle(ACTION_SET)
            self._actions = {k: self.input.getActionHandle(f"{ACTION_SET}/{v}") for k, v in _ACTIONS.items()}
            self._sources = {h: self.input.getInputSourceHandle(f"/user/hand/{h}") for h in HANDS}
            self.render_models = ovr.VRRenderModels()
            self._identify(ovr)
        except ovr.error_code.OpenVRError as exc:
            self._shutdown_quietly()
            raise VRUnavailable(self._describe(exc)) from None
        sets = (ovr.VRActiveActionSet_t * 1)()
        sets[0].ulActionSet = set_handle
        self._active_sets = sets
        self._poses = (ovr.TrackedDevicePose_t * ovr.k_unMaxTrackedDeviceCount)()
        self.started = True

    def _identify(self, ovr: Any) -> None:
        """Register the application manifest and name this process by its key (never fatal)."""
        try:
            apps = ovr.VRApplications()
            apps.addApplicationManifest(str(APP_MANIFEST), True)
            apps.identifyApplication(os.getpid(), APP_KEY)
            self.app_key = APP_KEY
        except Exception as exc:  # noqa: BLE001 - a name in a list must never stop VR
            self.app_key = None
            self._notice(
                "app", f"VR: SteamVR lists this program under its executable's name ({type(exc).__name__})"
            )

    def _describe(self, exc: Exception) -> str:
        what = type(exc).__name__
        value = getattr(exc, "error_value", None)
        if value is not None and what.startswith("InitError"):
            with contextlib.suppress(Exception):
                return f"OpenVR: {self.ovr.getVRInitErrorAsEnglishDescription(int(value))} ({what})"
        return f"OpenVR: {what} {exc}".strip()

    def _shutdown_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.ovr.shutdown()
        self.system = self.compositor = self.input = self.render_models = None

    def _notice(self, key: str, text: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self._notices.append(text)

    def take_notices(self) -> list[str]:
        out, self._notices = self._notices, []
        return out

    def shutdown(self) -> None:
        if self.started:
            for model in self._models.values():
                with contextlib.suppress(Exception):
                    self.render_models.freeRenderModel(model)
            self._models.clear()
            self._shutdown_quietly()
            self.started = False

    # --- display ----------------------------------------------------------------------------------

    def _eye(self, eye: Eye) -> int:
        return self.ovr.Eye_Left if eye == "left" else self.ovr.Eye_Right

    def recommended_size(self) -> tuple[int, int]:
        w, h = self.system.getRecommendedRenderTargetSize()
        return int(w), int(h)

    def eye_to_head(self, eye: Eye) -> np.ndarray:
        return coords.eye_to_head_panda(self.system.getEyeToHeadTransform(self._eye(eye)))

    def projection(self, eye: Eye, near: float, far: float) -> np.ndarray:
        return coords.projection_to_panda(self.system.getProjectionMatrix(self._eye(eye), near, far))

    # --- per frame --------------------------------------------------------------------------------

    def wait_poses(self) -> FrameState:
        ovr = self.ovr
        try:
            self.compositor.waitGetPoses(self._poses, None)
        except ovr.error_code.CompositorError:
            # DoNotHaveFocus (dashboard, another app): keep rendering with the last poses.
            return self._last
        self._frame += 1
        hmd = self._poses[ovr.k_unTrackedDeviceIndex_Hmd]
        head = self._pose(hmd.mDeviceToAbsoluteTracking, bool(hmd.bPoseIsValid))
        if not head.valid:
            head = self._last.head
        # Without focus the per-hand reads below fall back to the last state.
        with contextlib.suppress(ovr.error_code.InputError):
            self.input.updateActionState(self._active_sets)
        hands = {h: self._hand(h) for h in HANDS}
        self._last = FrameState(self._frame, head, hands)
        return self._last

    @staticmethod
    def _pose(matrix: Any, valid: bool) -> Pose:
        return Pose(coords.pose_to_panda(matrix), valid)

    def _hand(self, hand: str) -> ControllerState:
        ovr, inp, a = self.ovr, self.input, self._actions
        src = self._sources[hand]
        state = ControllerState()
        try:
            pose = inp.getPoseActionDataForNextFrame(a["pose"], ovr.TrackingUniverseStanding, src)
            state.connected = bool(pose.bActive)
            state.pose = self._pose(pose.pose.mDeviceToAbsoluteTracking, bool(pose.pose.bPoseIsValid))
            state.grip = bool(inp.getDigitalActionData(a["grip"], src).bState)
            state.trigger = bool(inp.getDigitalActionData(a["trigger"], src).bState)
            state.trigger_value = float(inp.getAnalogActionData(a["trigger_value"], src).x)
            stick = inp.getAnalogActionData(a["move"], src)
            state.thumbstick = (float(stick.x), float(stick.y))
            pad = inp.getDigitalActionData(a["pad_click"], src)
            if pad.bActive and not pad.bState:
                # A touchpad (Vive wand) reports where a resting thumb lies: it moves only pressed.
                state.thumbstick = (0.0, 0.0)
            state.menu = bool(inp.getDigitalActionData(a["menu"], src).bState)
            state.undo = bool(inp.getDigitalActionData(a["undo"], src).bState)
        except ovr.error_code.InputError:
            previous = self._last.hands.get(hand)
            return previous if previous is not None else state
        with contextlib.suppress(ovr.error_code.InputError):  # optional: the grip pose stands in
            tip = inp.getPoseActionDataForNextFrame(a["tip"], ovr.TrackingUniverseStanding, src)
            if tip.bActive and tip.pose.bPoseIsValid:
                state.tip = self._pose(tip.pose.mDeviceToAbsoluteTracking, True)
        return state

    def poll_events(self) -> list[RuntimeEvent]:
        ovr = self.ovr
        out: list[RuntimeEvent] = []
        event = ovr.VREvent_t()
        kinds = {
            ovr.VREvent_Quit: "quit",
            ovr.VREvent_DashboardActivated: "dashboard_shown",
            ovr.VREvent_DashboardDeactivated: "dashboard_hidden",
            ovr.VREvent_IpdChanged: "ipd_changed",
        }
        while self.system.pollNextEvent(event):
            code = int(event.eventType)
            kind = kinds.get(code)
            if code == ovr.VREvent_InputFocusChanged:
                # The current focus event (InputFocusCaptured/Released are deprecated): whether
                # input is ours now is a question to the system, not part of the event.
                available = True
                with contextlib.suppress(Exception):
                    available = bool(self.system.isInputAvailable())
                kind = "dashboard_hidden" if available else "dashboard_shown"
            if kind == "quit":
                # SteamVR is closing: tell it we heard, then the app leaves VR (never crashes).
                with contextlib.suppress(Exception):
                    self.system.acknowledgeQuit_Exiting()
            if kind is not None:
                out.append(RuntimeEvent(kind))
        return out

    def submit(self, eye: Eye, texture_id: int) -> str | None:
        ovr = self.ovr
        texture = ovr.Texture_t()
        texture.handle = int(texture_id)
        texture.eType = ovr.TextureType_OpenGL
        texture.eColorSpace = ovr.ColorSpace_Gamma
        try:
            self.compositor.submit(self._eye(eye), texture)
        except ovr.error_code.CompositorError as exc:
            kind = _kind(exc, "CompositorError_")
            self.submit_errors[kind] = self.submit_errors.get(kind, 0) + 1
            hint = _SUBMIT_HINTS.get(kind, "frames do not reach the headset")
            self._notice(f"submit:{kind}", f"VR: the headset did not take a frame ({kind}): {hint}")
            return kind
        return None

    def post_present_handoff(self) -> None:
        """Both eyes are in (and flushed): let the compositor start now, not at the next wait."""
        with contextlib.suppress(Exception):
            self.compositor.postPresentHandoff()

    def haptic(
        self, hand: str, seconds: float = 0.04, frequency: float = 160.0, amplitude: float = 0.6
    ) -> None:
        with contextlib.suppress(self.ovr.error_code.InputError):
            self.input.triggerHapticVibrationAction(
                self._actions["haptic"], 0.0, seconds, frequency, amplitude, self._sources[hand]
            )

    # --- render models --------------------------------------------------------------------------

    def render_model(self, hand: str) -> RenderModelMesh | str | None:
        """Poll once per frame until loaded (OpenVR loads asynchronously).

        ``LOADING`` while the runtime loads it *or* the controller is not ready (no device for the
        role yet, a property not yet available): the renderer keeps asking, so a passing error
        never pins the fallback model for the session. None means "use the fallback for good"
        (no model of that name, a texture format we do not read); it comes with a notice.
        """
        ovr = self.ovr
        role = ovr.TrackedControllerRole_LeftHand if hand == "left" else ovr.TrackedControllerRole_RightHand
        try:
            index = int(self.system.getTrackedDeviceIndexForControllerRole(role))
        except ovr.error_code.OpenVRError:
            return LOADING
        if index == ovr.k_unTrackedDeviceIndexInvalid or not 0 <= index < ovr.k_unMaxTrackedDeviceCount:
            return LOADING  # not connected yet
        try:
            name = self.system.getStringTrackedDeviceProperty(index, ovr.Prop_RenderModelName_String)
        except ovr.error_code.TrackedPropertyError as exc:
            if type(exc).__name__ in _TRANSIENT_PROPERTY_ERRORS:
                return LOADING
            self._notice(
                f"model:{hand}", f"VR: no controller model for the {hand} hand ({type(exc).__name__})"
            )
            return None
        rm = self.render_models
        model = self._models.get(hand)
        try:
            if model is None:
                model = rm.loadRenderModel_Async(name)
                self._models[hand] = model
            texture = None
            if model.diffuseTextureId >= 0:
                texture = rm.loadTexture_Async(model.diffuseTextureId)
        except ovr.error_code.RenderModelError_Loading:
            return LOADING
        except ovr.error_code.OpenVRError as exc:
            self._drop_model(hand)
            self._notice(f"model:{name}", f"VR: controller model {name!r} cannot load ({type(exc).__name__})")
            return None
        try:
            if texture is not None and int(texture.format) != ovr.VRRenderModelTextureFormat_RGBA8_SRGB:
                self._notice(
                    f"format:{name}",
                    f"VR: controller model {name!r} has a {_texture_format_name(ovr, texture.format)} "
                    "texture (only RGBA8 is read): showing the plain controller",
                )
                return None
            return mesh_from_render_model(name, model, texture)
        finally:
            if texture is not None:
                with contextlib.suppress(Exception):
                    rm.freeTexture(texture)
            self._drop_model(hand)

    def _drop_model(self, hand: str) -> None:
        model = self._models.pop(hand, None)
        if model is not None:
            with contextlib.suppress(Exception):
                self.render_models.freeRenderModel(model)


def _texture_format_name(ovr: Any, value: int) -> str:
    prefix = "VRRenderModelTextureFormat_"
    for name in dir(ovr):
        if name.startswith(prefix) and getattr(ovr, name) == int(value):
            return name[len(prefix) :]
    return f"format {int(value)}"


def mesh_from_render_model(name: str, model: Any, texture: Any) -> RenderModelMesh:
    """Copy a ``RenderModel_t`` (+ texture map) into numpy arrays, converted to Panda3D axes."""
    import ctypes

    n = int(model.unVertexCount)
    floats = np.ctypeslib.as_array(
        ctypes.cast(model.rVertexData, ctypes.POINTER(ctypes.c_float)), shape=(n * 8,)
    )
    v = floats.reshape(n, 8).astype(np.float32)
    m = int(model.unTriangleCount)
    idx = np.ctypeslib.as_array(model.rIndexData, shape=(m * 3,)).astype(np.int32).reshape(m, 3)
    image = None
    if texture is not None:
        w, h = int(texture.unWidth), int(texture.unHeight)
        image = np.ctypeslib.as_array(texture.rubTextureMapData, shape=(h * w * 4,)).reshape(h, w, 4).copy()
    return RenderModelMesh(
        name=name,
        vertices=coords.point_to_panda(v[:, 0:3]).astype(np.float32),
        normals=coords.point_to_panda(v[:, 3:6]).astype(np.float32),
        uvs=v[:, 6:8].copy(),
        triangles=idx,
        texture=image,
    )
