"""``SimulatedBackend``: scripted head and controller poses and button presses.

Plays a script through exactly the calls a headset gets (``wait_poses`` → draw → ``submit``), so
tests, demos and benchmarks exercise the real stereo renderer and VR controls without hardware.
A script is a list of steps (from JSON or built in code). Each step holds for ``frames`` frames;
fields a step leaves out keep their previous value; ``"lerp": true`` moves positions linearly
from the previous step over the step's frames. Positions are tracking-space metres in Panda3D
axes (Z up, Y forward), orientations Panda3D heading/pitch/roll in degrees, because that is how
a person writing a demo thinks::

    {"size": [640, 720], "steps": [
      {"head": {"pos": [0, 0, 1.7]}, "right": {"pos": [0.2, 0.4, 1.2], "hpr": [0, -20, 0]}},
      {"frames": 10, "lerp": true, "right": {"pos": [0.2, 0.6, 1.2], "grip": true}},
      {"right": {"grip": false}, "event": "quit"}
    ]}

The projection and eye offsets are built as OpenVR would return them and go through
``game.vr.coords`` like a headset's. A step's ``"ipd": 0.07`` changes the eye distance from that
step on and sends ``ipd_changed``, as SteamVR does when the lens slider moves;
``submit_error = "InvalidTexture"`` makes every submit fail with that kind (one notice).
``extend(steps)`` appends steps while it plays (a test aiming at a menu button it has just seen).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from game.core.errors import UserError
from game.vr import coords
from game.vr.backend import HANDS, ControllerState, Eye, FrameState, Pose, RenderModelMesh, RuntimeEvent

_HAND_KEYS = {"pos", "hpr", "grip", "trigger", "trigger_value", "stick", "menu", "undo", "connected"}
_STEP_KEYS = {"frames", "lerp", "head", "left", "right", "event", "ipd"}


@dataclass
class _Track:
    pos: np.ndarray
    hpr: np.ndarray
    buttons: dict[str, Any] = field(default_factory=dict)


def _check_step(i: int, step: dict[str, Any]) -> None:
    unknown = set(step) - _STEP_KEYS
    if unknown:
        raise UserError(f"VR script step {i}: unknown keys {sorted(unknown)} (known: {sorted(_STEP_KEYS)})")
    for part in ("head", "left", "right"):
        bad = set(step.get(part, {})) - (_HAND_KEYS if part != "head" else {"pos", "hpr"})
        if bad:
            raise UserError(f"VR script step {i}: unknown keys {sorted(bad)} in {part!r}")


class SimulatedBackend:
    """A headset made of a script; records what the renderer submits and which pulses it asks for."""

    name = "simulated"

    def __init__(
        self,
        steps: list[dict[str, Any]] | None = None,
        size: tuple[int, int] = (640, 720),
        ipd: float = 0.064,
        loop: bool = False,
    ) -> None:
        self.steps = [copy.deepcopy(s) for s in (steps or [{}])]
        for i, s in enumerate(self.steps):
            _check_step(i, s)
        self.size = (int(size[0]), int(size[1]))
        self.ipd = float(ipd)
        self.loop = loop
        self.frame = 0
        self.started = False
        self.submitted: list[tuple[int, Eye, int]] = []
        self.haptics: list[tuple[int, str, float]] = []
        self.log: list[str] = []
        self.submit_error: str | None = None  # tests: every submit fails with this kind
        self._notices: list[str] = []
        self._told: set[str] = set()
        self._frames = self._expand()
        self._pending_events: list[RuntimeEvent] = []

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> SimulatedBackend:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"VR script {p}: {exc}") from None
        if isinstance(data, list):
            data = {"steps": data}
        kwargs.setdefault("size", tuple(data.get("size", (640, 720))))
        kwargs.setdefault("ipd", float(data.get("ipd", 0.064)))
        kwargs.setdefault("loop", bool(data.get("loop", False)))
        return cls(data.get("steps", []), **kwargs)

    # --- script expansion (done once: per-frame playback is a list lookup) ------------------------

    def _expand(self) -> list[tuple[FrameState, str | None, float]]:
        self._tracks = {
            "head": _Track(np.array([0.0, 0.0, 1.7]), np.zeros(3)),
            "left": _Track(np.array([-0.2, 0.3, 1.2]), np.zeros(3), {"connected": True}),
            "right": _Track(np.array([0.2, 0.3, 1.2]), np.zeros(3), {"connected": True}),
        }
        self._script_ipd = self.ipd
        return self._expand_steps(self.steps)

    def _expand_steps(self, steps: list[dict[str, Any]]) -> list[tuple[FrameState, str | None, float]]:
        """Frames for ``steps``, continuing from where the tracks are (``self._tracks``)."""
        tracks = self._tracks
        out: list[tuple[FrameState, str | None, float]] = []
        ipd = self._script_ipd
        for step in steps:
            ipd = float(step.get("ipd", ipd))
            n = max(1, int(step.get("frames", 1)))
            start = {k: (t.pos.copy(), t.hpr.copy()) for k, t in tracks.items()}
            for name, track in tracks.items():
                spec = step.get(name, {})
                if "pos" in spec:
                    track.pos = np.asarray(spec["pos"], dtype=np.float64)
                if "hpr" in spec:
                    track.hpr = np.asarray(spec["hpr"], dtype=np.float64)
                track.buttons.update({k: v for k, v in spec.items() if k not in ("pos", "hpr")})
            for f in range(n):
                t = (f + 1) / n if step.get("lerp") else 1.0
                poses = {}
                for name, track in tracks.items():
                    p0, h0 = start[name]
                    pos = p0 + (track.pos - p0) * t
                    hpr = h0 + (track.hpr - h0) * t
                    poses[name] = Pose(coords.compose(pos, coords.hpr_to_rotation(*hpr)), True)
                hands = {}
                for h in HANDS:
                    b = tracks[h].buttons
                    stick = b.get("stick", (0.0, 0.0))
                    hands[h] = ControllerState(
                        pose=poses[h],
                        grip=bool(b.get("grip", False)),
                        trigger=bool(b.get("trigger", False)),
                        trigger_value=float(b.get("trigger_value", 1.0 if b.get("trigger") else 0.0)),
                        thumbstick=(float(stick[0]), float(stick[1])),
                        menu=bool(b.get("menu", False)),
                        undo=bool(b.get("undo", False)),
                        connected=bool(b.get("connected", True)),
                    )
                event = step.get("event") if f == 0 else None
                out.append((FrameState(0, poses["head"], hands), event, ipd))
        self._script_ipd = ipd
        return out

    def extend(self, steps: list[dict[str, Any]]) -> int:
        """Play ``steps`` next, from where the script is now (tests that aim at what they see:
        a menu button placed by the previous frame). Returns the number of frames added."""
        for i, step in enumerate(steps):
            _check_step(len(self.steps) + i, step)
        self.steps.extend(copy.deepcopy(steps))
        if self._frames and len(self._frames) < self.frame:
            state, _event, ipd = self._frames[-1]  # the last frame was held meanwhile
            self._frames.extend([(state, None, ipd)] * (self.frame - len(self._frames)))
        added = self._expand_steps(steps)
        self._frames.extend(added)
        return len(added)

    @property
    def finished(self) -> bool:
        return not self.loop and self.frame >= len(self._frames)

    @property
    def length(self) -> int:
        return len(self._frames)

    # --- VRBackend --------------------------------------------------------------------------------

    def probe(self) -> None:
        self.log.append("probe")

    def start(self) -> None:
        self.started = True
        self.log.append("start")

    def shutdown(self) -> None:
        self.started = False
        self.log.append("shutdown")

    def recommended_size(self) -> tuple[int, int]:
        return self.size

    def eye_to_head(self, eye: Eye) -> np.ndarray:
        offset = -self.ipd / 2 if eye == "left" else self.ipd / 2
        return coords.eye_to_head_panda(coords.compose((offset, 0.0, 0.0))[:3, :])

    def projection(self, eye: Eye, near: float, far: float) -> np.ndarray:
        w, h = self.size
        tan_x = 1.0
        tan_y = tan_x * h / w
        # Slightly off-centre towards the nose, like a real headset's lenses.
        inner = 0.9 * tan_x
        left, right = (-tan_x, inner) if eye == "left" else (-inner, tan_x)
        return coords.projection_to_panda(coords.projection_from_raw(left, right, -tan_y, tan_y, near, far))

    def wait_poses(self) -> FrameState:
        if not self._frames:
            self._frames = [
                (FrameState(0, Pose(np.eye(4), True), {h: ControllerState() for h in HANDS}), None, self.ipd)
            ]
        i = self.frame % len(self._frames) if self.loop else min(self.frame, len(self._frames) - 1)
        state, event, ipd = self._frames[i]
        if ipd != self.ipd:
            self.ipd = ipd
            self._pending_events.append(RuntimeEvent("ipd_changed"))
        if event is not None and (self.loop or self.frame < len(self._frames)):
            self._pending_events.append(RuntimeEvent(event))
        self.frame += 1
        self.log.append("wait_poses")
        return FrameState(self.frame, state.head, state.hands)

    def poll_events(self) -> list[RuntimeEvent]:
        out, self._pending_events = self._pending_events, []
        return out

    def submit(self, eye: Eye, texture_id: int) -> str | None:
        self.submitted.append((self.frame, eye, int(texture_id)))
        self.log.append(f"submit:{eye}")
        kind = self.submit_error
        if kind is not None and kind not in self._told:
            self._told.add(kind)
            self._notices.append(f"VR: the headset did not take a frame ({kind})")
        return kind

    def post_present_handoff(self) -> None:
        self.log.append("handoff")

    def take_notices(self) -> list[str]:
        out, self._notices = self._notices, []
        return out

    def haptic(
        self, hand: str, seconds: float = 0.04, frequency: float = 160.0, amplitude: float = 0.6
    ) -> None:
        self.haptics.append((self.frame, hand, float(seconds)))

    def render_model(self, hand: str) -> RenderModelMesh | str | None:
        return None  # always the fallback asset from models/
