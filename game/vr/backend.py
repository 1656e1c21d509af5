"""Our own small VR interface: what the stereo renderer and the controls need from a headset.

Wrapping OpenVR behind this protocol lets the same renderer and controls run on a headset
(``OpenVRBackend``), on scripted poses (``SimulatedBackend``) or on a test double. Everything that
crosses this boundary is already in Panda3D axes (Z up, metres, column-vector 4x4 numpy
matrices) — the conversion happens once, in ``game.vr.coords``, inside each backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Eye = Literal["left", "right"]
EYES: tuple[Eye, Eye] = ("left", "right")
HANDS: tuple[str, str] = ("left", "right")


class VRUnavailable(RuntimeError):
    """No runtime, no headset, or the runtime refused to start; the message is one line."""


@dataclass
class Pose:
    """A tracked pose in tracking space (the play area), Panda3D axes; column-vector 4x4."""

    matrix: np.ndarray = field(default_factory=lambda: np.eye(4))
    valid: bool = False

    @property
    def position(self) -> np.ndarray:
        return self.matrix[:3, 3].copy()

    @property
    def forward(self) -> np.ndarray:
        """The device's pointing direction (+Y of its own axes)."""
        f = self.matrix[:3, 1]
        n = float(np.linalg.norm(f))
        return f / n if n > 0 else np.array([0.0, 1.0, 0.0])


@dataclass
class ControllerState:
    """One hand's pose and actions this frame (from the SteamVR action manifest)."""

    pose: Pose = field(default_factory=Pose)
    grip: bool = False
    trigger: bool = False
    trigger_value: float = 0.0
    thumbstick: tuple[float, float] = (0.0, 0.0)
    menu: bool = False
    undo: bool = False
    connected: bool = False
    # The controller's tip (SteamVR's /pose/tip: where the laser starts and touching happens,
    # pointing the way the controller points); None where the runtime gives none.
    tip: Pose | None = None


@dataclass
class FrameState:
    """What ``wait_poses`` returns: the poses to render this frame with and the input state."""

    frame: int
    head: Pose
    hands: dict[str, ControllerState]


@dataclass(frozen=True)
class RuntimeEvent:
    """Runtime events the app reacts to.

    ``quit`` (SteamVR is closing: already acknowledged), ``dashboard_shown`` / ``dashboard_hidden``
    (input goes to the system or comes back), ``ipd_changed`` (the eye transforms changed: the
    renderer re-reads ``eye_to_head`` and ``projection``).
    """

    kind: str


@dataclass
class RenderModelMesh:
    """A controller's render model in Panda3D axes (vertices relative to the controller pose)."""

    name: str
    vertices: np.ndarray  # (N, 3) float32
    normals: np.ndarray  # (N, 3) float32
    uvs: np.ndarray  # (N, 2) float32
    triangles: np.ndarray  # (M, 3) int32
    texture: np.ndarray | None = None  # (H, W, 4) uint8, first row = top of the image


LOADING = "loading"  # render_model() while the runtime is still loading it (or the device is not ready)


@runtime_checkable
class VRBackend(Protocol):
    """The calls the stereo renderer and the VR controls make, in the order they make them.

    ``probe`` (cheap, before the scene loads: is there a runtime and a headset?) and ``start``
    (connects as a scene application: only once the app can submit frames at once) raise
    ``VRUnavailable``. Per frame: ``wait_poses`` (blocks until the compositor wants a frame; also
    reads actions), ``poll_events``, the world updates and draws, then ``submit("left", id)``,
    ``submit("right", id)`` with OpenGL texture ids, a GL flush and ``post_present_handoff``.
    ``take_notices`` hands over what the person should read once (a submit error, a model that
    cannot be shown); the renderer shows each in the world.
    """

    name: str

    def probe(self) -> None: ...

    def start(self) -> None: ...

    def recommended_size(self) -> tuple[int, int]: ...

    def eye_to_head(self, eye: Eye) -> np.ndarray: ...

    def projection(self, eye: Eye, near: float, far: float) -> np.ndarray:
        """A clip matrix acting on Panda3D camera space, OpenGL depth range."""
        ...

    def wait_poses(self) -> FrameState: ...

    def poll_events(self) -> list[RuntimeEvent]: ...

    def submit(self, eye: Eye, texture_id: int) -> str | None:
        """Hand one eye to the compositor; returns the error's kind (e.g. ``InvalidTexture``) or None."""
        ...

    def post_present_handoff(self) -> None:
        """Both eyes are submitted and flushed: the compositor may start its work now."""
        ...

    def take_notices(self) -> list[str]:
        """One-line messages for the person, each returned once."""
        ...

    def haptic(
        self, hand: str, seconds: float = 0.04, frequency: float = 160.0, amplitude: float = 0.6
    ) -> None: ...

    def render_model(self, hand: str) -> RenderModelMesh | str | None:
        """The hand's model, ``LOADING`` while it loads, or None (use the fallback asset)."""
        ...

    def shutdown(self) -> None: ...
