"""A test double for the ``openvr`` module: its functions replaced, its structs real.

``install(monkeypatch)`` swaps ``openvr.init``, ``openvr.shutdown``, the probes
(``isRuntimeInstalled``, ``isHmdPresent``) and the interface factories (``VRCompositor``,
``VRInput``, ``VRRenderModels``) for fakes that fill real ``openvr`` structs (``HmdMatrix34_t``,
``TrackedDevicePose_t`` arrays, ``InputDigitalActionData_t``, ``RenderModel_TextureMap_t``...)
and append every call that matters to ``FakeVR.log``, so a test can check the order of a frame.

What a runtime does that the double can play: render models that load over several polls, with
a texture in any ``EVRRenderModelTextureFormat`` (``loadTexture_Async``/``freeTexture``); no device
for a role yet (``k_unTrackedDeviceIndexInvalid``) or a property error for the first polls;
``VREvent_IpdChanged`` with a new eye distance; submit errors; focus changes with
``isInputAvailable``; quit at any frame.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvr
from openvr import error_code

from game.vr import coords


def matrix34(values: np.ndarray) -> openvr.HmdMatrix34_t:
    m = openvr.HmdMatrix34_t()
    for r in range(3):
        for c in range(4):
            m.m[r][c] = float(values[r][c])
    return m


def matrix44(values: np.ndarray) -> openvr.HmdMatrix44_t:
    m = openvr.HmdMatrix44_t()
    for r in range(4):
        for c in range(4):
            m.m[r][c] = float(values[r][c])
    return m


@dataclass
class FakeVR:
    """State shared by the fake interfaces; tests set poses/buttons and read ``log``."""

    size: tuple[int, int] = (96, 80)
    head: np.ndarray = field(default_factory=lambda: coords.compose((0.0, 1.7, -0.5))[:3])  # OpenVR axes
    hands: dict[str, np.ndarray] = field(
        default_factory=lambda: {
            "left": coords.compose((-0.2, 1.2, -0.4))[:3],
            "right": coords.compose((0.2, 1.2, -0.4))[:3],
        }
    )
    buttons: dict[str, dict[str, Any]] = field(default_factory=lambda: {"left": {}, "right": {}})
    log: list[str] = field(default_factory=list)
    submitted: list[tuple[int, int, int, int]] = field(default_factory=list)  # eye, handle, type, space
    haptics: list[tuple[str, float]] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    init_error: int | None = None
    model_loading_polls: int = 2
    manifest: dict[str, Any] | None = None
    wait_error: int | None = None
    shutdowns: int = 0
    runtime_installed: bool = True
    hmd_present: bool = True
    input_available: bool = True
    ipd: float = 0.064
    submit_error: int | None = None  # a VRCompositorError_* every submit raises
    handoffs: int = 0
    invalid_device_polls: int = 0  # the first polls find no device for the role
    property_errors: list[int] = field(default_factory=list)  # TrackedProp_* raised, one per poll
    texture_format: int | None = None  # None: an untextured model; else a 2x2 texture in this format
    texture_loading_polls: int = 1
    freed_textures: int = 0
    tip_offset: tuple[float, float, float] | None = None  # /pose/tip relative to the grip (OpenVR axes)
    applications: list[tuple[str, Any]] = field(default_factory=list)  # VRApplications calls
    _keep: list[Any] = field(default_factory=list)


class FakeSystem:
    def __init__(self, vr: FakeVR) -> None:
        self.vr = vr

    def getRecommendedRenderTargetSize(self):
        return self.vr.size

    def getProjectionMatrix(self, eye, near, far):
        left, right = (-1.0, 0.9) if eye == openvr.Eye_Left else (-0.9, 1.0)
        return matrix44(coords.projection_from_raw(left, right, -1.1, 1.1, near, far))

    def getEyeToHeadTransform(self, eye):
        half = self.vr.ipd / 2
        x = -half if eye == openvr.Eye_Left else half
        self.vr.log.append("getEyeToHeadTransform")
        return matrix34(coords.compose((x, 0.0, 0.0))[:3])

    def isInputAvailable(self):
        return self.vr.input_available

    def pollNextEvent(self, event):
        if not self.vr.events:
            return False
        event.eventType = self.vr.events.pop(0)
        return True

    def acknowledgeQuit_Exiting(self):
        self.vr.log.append("acknowledgeQuit")

    def getTrackedDeviceIndexForControllerRole(self, role):
        if self.vr.invalid_device_polls > 0:
            self.vr.invalid_device_polls -= 1
            return openvr.k_unTrackedDeviceIndexInvalid
        return 1 if role == openvr.TrackedControllerRole_LeftHand else 2

    def getStringTrackedDeviceProperty(self, index, prop):
        assert prop == openvr.Prop_RenderModelName_String
        assert 0 <= index < openvr.k_unMaxTrackedDeviceCount, "asked about an invalid device index"
        if self.vr.property_errors:
            error_code.TrackedPropertyError.check_error_value(self.vr.property_errors.pop(0))
        return "fake_controller"


class FakeCompositor:
    def __init__(self, vr: FakeVR) -> None:
        self.vr = vr

    def setTrackingSpace(self, origin):
        assert origin == openvr.TrackingUniverseStanding

    def waitGetPoses(self, render, game):
        self.vr.log.append("waitGetPoses")
        if self.vr.wait_error is not None:
            error_code.CompositorError.check_error_value(self.vr.wait_error)
        assert isinstance(render[0], openvr.TrackedDevicePose_t)
        hmd = render[openvr.k_unTrackedDeviceIndex_Hmd]
        hmd.mDeviceToAbsoluteTracking = matrix34(self.vr.head)
        hmd.bPoseIsValid = True
        hmd.bDeviceIsConnected = True
        return render, game

    def submit(self, eye, texture, bounds=None, flags=openvr.Submit_Default):
        assert isinstance(texture, openvr.Texture_t)
        self.vr.log.append("submit:" + ("left" if eye == openvr.Eye_Left else "right"))
        self.vr.submitted.append(
            (int(eye), int(texture.handle or 0), int(texture.eType), int(texture.eColorSpace))
        )
        if self.vr.submit_error is not None:
            error_code.CompositorError.check_error_value(self.vr.submit_error)

    def postPresentHandoff(self):
        self.vr.handoffs += 1
        self.vr.log.append("postPresentHandoff")


class FakeInput:
    def __init__(self, vr: FakeVR) -> None:
        self.vr = vr
        self.names: dict[str, int] = {}
        self.sources: dict[int, str] = {}

    def setActionManifestPath(self, path):
        self.vr.manifest = json.loads(Path(path).read_text())

    def _handle(self, name: str) -> int:
        known = {a["name"] for a in self.vr.manifest["actions"]} | {
            s["name"] for s in self.vr.manifest["action_sets"]
        }
        if name not in known:
            error_code.InputError.check_error_value(openvr.VRInputError_NameNotFound)
        return self.names.setdefault(name, len(self.names) + 1)

    def getActionSetHandle(self, name):
        return self._handle(name)

    def getActionHandle(self, name):
        return self._handle(name)

    def getInputSourceHandle(self, path):
        handle = 100 + len(self.sources)
        self.sources[handle] = path.rsplit("/", 1)[-1]
        return handle

    def updateActionState(self, sets):
        assert isinstance(sets[0], openvr.VRActiveActionSet_t)
        self.vr.log.append("updateActionState")
        return sets

    def _action(self, handle: int) -> str:
        return next(n for n, h in self.names.items() if h == handle).rsplit("/", 1)[-1]

    def getPoseActionDataForNextFrame(self, action, origin, src):
        data = openvr.InputPoseActionData_t()
        hand = np.vstack([self.vr.hands[self.sources[src]], [0.0, 0.0, 0.0, 1.0]])
        if self._action(action) == "tip_pose":
            if self.vr.tip_offset is None:
                return data  # not bound: bActive False
            hand = hand @ coords.compose(self.vr.tip_offset)
        data.bActive = True
        data.pose.mDeviceToAbsoluteTracking = matrix34(hand[:3])
        data.pose.bPoseIsValid = True
        return data

    def getDigitalActionData(self, action, src):
        data = openvr.InputDigitalActionData_t()
        name, buttons = self._action(action), self.vr.buttons[self.sources[src]]
        # pad_click is bound only on touchpad controllers: active when a test gives it a value.
        data.bActive = name != "pad_click" or name in buttons
        data.bState = bool(buttons.get(name, False))
        return data

    def getAnalogActionData(self, action, src):
        data = openvr.InputAnalogActionData_t()
        data.bActive = True
        value = self.vr.buttons[self.sources[src]].get(self._action(action), 0.0)
        if isinstance(value, (tuple, list)):
            data.x, data.y = value
        else:
            data.x = float(value)
        return data

    def triggerHapticVibrationAction(self, action, start, seconds, frequency, amplitude, src):
        assert self._action(action) == "haptic"
        self.vr.haptics.append((self.sources[src], seconds))


class FakeRenderModels:
    def __init__(self, vr: FakeVR) -> None:
        self.vr = vr
        self.polls = 0
        self.texture_polls = 0

    def loadRenderModel_Async(self, name):
        self.polls += 1
        if self.polls <= self.vr.model_loading_polls:
            error_code.RenderModelError.check_error_value(openvr.VRRenderModelError_Loading)
        # One triangle in OpenVR axes: pointing forward (-Z).
        verts = (openvr.RenderModel_Vertex_t * 3)()
        for i, p in enumerate(((0.0, 0.0, 0.0), (0.02, 0.0, 0.0), (0.0, 0.0, -0.1))):
            verts[i].vPosition = openvr.HmdVector3_t(*p)
            verts[i].vNormal = openvr.HmdVector3_t(0.0, 1.0, 0.0)
            verts[i].rfTextureCoord[0] = 0.5
            verts[i].rfTextureCoord[1] = 0.5
        idx = (ctypes.c_uint16 * 3)(0, 1, 2)
        model = openvr.RenderModel_t()
        model.rVertexData = ctypes.cast(verts, ctypes.POINTER(openvr.RenderModel_Vertex_t))
        model.unVertexCount = 3
        model.rIndexData = ctypes.cast(idx, ctypes.POINTER(ctypes.c_uint16))
        model.unTriangleCount = 1
        model.diffuseTextureId = -1 if self.vr.texture_format is None else 7
        self.vr._keep += [verts, idx, model]
        return model

    def loadTexture_Async(self, texture_id):
        assert texture_id == 7
        self.texture_polls += 1
        if self.texture_polls <= self.vr.texture_loading_polls:
            error_code.RenderModelError.check_error_value(openvr.VRRenderModelError_Loading)
        # 2x2 RGBA8: red, green / blue, white (first row = top of the image).
        pixels = (ctypes.c_uint8 * 16)(255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 255, 255)
        texture = openvr.RenderModel_TextureMap_t()
        texture.unWidth, texture.unHeight = 2, 2
        texture.rubTextureMapData = ctypes.cast(pixels, ctypes.POINTER(ctypes.c_ubyte))
        texture.format = int(self.vr.texture_format)
        texture.unMipLevels = 1
        self.vr._keep += [pixels, texture]
        return texture

    def freeTexture(self, texture):
        assert isinstance(texture, openvr.RenderModel_TextureMap_t)
        self.vr.freed_textures += 1
        self.vr.log.append("freeTexture")

    def freeRenderModel(self, model):
        self.vr.log.append("freeRenderModel")


class FakeApplications:
    def __init__(self, vr: FakeVR) -> None:
        self.vr = vr

    def addApplicationManifest(self, path, temporary=False):
        assert Path(path).is_file(), path
        self.vr.applications.append(("addApplicationManifest", (path, temporary)))

    def identifyApplication(self, pid, key):
        self.vr.applications.append(("identifyApplication", (pid, key)))


def install(monkeypatch, vr: FakeVR | None = None) -> FakeVR:
    """Replace the ``openvr`` module's functions with fakes sharing one ``FakeVR``."""
    vr = vr or FakeVR()

    def init(app_type, startup=None):
        assert app_type == openvr.VRApplication_Scene
        vr.log.append("init")
        if vr.init_error is not None:
            error_code.InitError.check_error_value(vr.init_error)
        return FakeSystem(vr)

    def shutdown():
        vr.shutdowns += 1
        vr.log.append("shutdown")

    def probe(name: str, answer: Any):
        def call():
            vr.log.append(name)
            return answer()

        return call

    monkeypatch.setattr(openvr, "init", init)
    monkeypatch.setattr(openvr, "shutdown", shutdown)
    monkeypatch.setattr(
        openvr, "isRuntimeInstalled", probe("isRuntimeInstalled", lambda: vr.runtime_installed)
    )
    monkeypatch.setattr(openvr, "isHmdPresent", probe("isHmdPresent", lambda: vr.hmd_present))
    monkeypatch.setattr(openvr, "VRCompositor", lambda: FakeCompositor(vr))
    monkeypatch.setattr(openvr, "VRInput", lambda: FakeInput(vr))
    monkeypatch.setattr(openvr, "VRRenderModels", lambda: FakeRenderModels(vr))
    monkeypatch.setattr(openvr, "VRApplications", lambda: FakeApplications(vr))
    return vr
