"""VR: an OpenVR backend, a simulated backend, and the stereo renderer that drives either.

Importing this package loads no native library and changes no engine setting; only starting VR
(``game.vr.launch.start_vr``) does. ``coords`` is the one place OpenVR axes become Panda3D axes.
"""

from game.vr.backend import (
    EYES,
    HANDS,
    LOADING,
    ControllerState,
    FrameState,
    Pose,
    RenderModelMesh,
    RuntimeEvent,
    VRBackend,
    VRUnavailable,
)

__all__ = [
    "EYES",
    "HANDS",
    "LOADING",
    "ControllerState",
    "FrameState",
    "Pose",
    "RenderModelMesh",
    "RuntimeEvent",
    "VRBackend",
    "VRUnavailable",
]
