"""OpenVRBackend against the openvr test double, and the simulated backend's script playback."""

from __future__ import annotations

import json

import numpy as np
import openvr
import pytest
import vr_fake_openvr as fake

from game.core.errors import UserError
from game.vr import LOADING, VRUnavailable
from game.vr.openvr_backend import MANIFEST, OpenVRBackend
from game.vr.simulated import SimulatedBackend


def test_manifest_and_bindings_agree():
    manifest = json.loads(MANIFEST.read_text())
    names = {a["name"] for a in manifest["actions"]}
    assert {"/actions/latent/in/hand_pose", "/actions/latent/in/grip", "/actions/latent/out/haptic"} <= names
    for entry in manifest["default_bindings"]:
        binding = json.loads((MANIFEST.parent / entry["binding_url"]).read_text())
        assert binding["controller_type"] == entry["controller_type"]
        used = set()
        for group in binding["bindings"]["/actions/latent"].values():
            for item in group:
                used.add(item.get("output"))
                used.update(i["output"] for i in item.get("inputs", {}).values())
        used.discard(None)
        assert used <= names, used - names
        for needed in ("in/hand_pose", "in/grip", "in/trigger", "in/move", "out/haptic"):
            assert f"/actions/latent/{needed}" in used


def test_start_reads_size_eyes_and_converts_poses(monkeypatch):
    vr = fake.install(monkeypatch)
    b = OpenVRBackend()
    b.start()
    assert b.recommended_size() == (96, 80)
    assert vr.manifest is not None  # the shipped manifest was handed to SteamVR Input
    left = b.eye_to_head("left")
    assert np.allclose(left[:3, 3], (-0.032, 0.0, 0.0))
    state = b.wait_poses()
    # The example: an OpenVR pose at (0, 1.7, -0.5) is Panda3D (0, 0.5, 1.7).
    assert np.allclose(state.head.position, (0.0, 0.5, 1.7), atol=1e-6)
    assert state.head.valid
    assert np.allclose(state.hands["right"].pose.position, (0.2, 0.4, 1.2), atol=1e-6)
    assert vr.log[-1] == "updateActionState" and vr.log[-2] == "waitGetPoses"


def test_projection_matches_hand_computed(monkeypatch):
    fake.install(monkeypatch)
    b = OpenVRBackend()
    b.start()
    p = b.projection("left", 0.1, 100.0)
    # Left eye tangents: left -1, right 0.9, top -1.1, bottom 1.1 (see the double).
    assert p[0, 0] == pytest.approx(2 / 1.9, rel=1e-6)
    assert p[0, 1] == pytest.approx((0.9 - 1.0) / 1.9 * -1, rel=1e-5)  # x offset column moves to Panda Y
    assert p[1, 2] == pytest.approx(2 / 2.2, rel=1e-6)  # Panda Z (up) -> NDC y
    assert p[2, 1] == pytest.approx(-(100.1) / (0.1 - 100.0), rel=1e-6)
    assert p[2, 3] == pytest.approx(2 * 100.0 * 0.1 / (0.1 - 100.0), rel=1e-5)
    assert np.allclose(p[3], (0, 1, 0, 0))


def test_buttons_haptics_and_submit_use_real_structs(monkeypatch):
    vr = fake.install(monkeypatch)
    vr.buttons["right"] = {"grip": True, "trigger_value": 0.75, "move": (0.5, -1.0)}
    b = OpenVRBackend()
    b.start()
    hand = b.wait_poses().hands["right"]
    assert hand.grip and not hand.trigger
    assert hand.trigger_value == pytest.approx(0.75)
    assert hand.thumbstick == pytest.approx((0.5, -1.0))
    assert not b.wait_poses().hands["left"].grip
    b.haptic("right", 0.05)
    assert vr.haptics == [("right", 0.05)]
    b.submit("left", 7)
    b.submit("right", 8)
    assert vr.submitted == [
        (openvr.Eye_Left, 7, openvr.TextureType_OpenGL, openvr.ColorSpace_Gamma),
        (openvr.Eye_Right, 8, openvr.TextureType_OpenGL, openvr.ColorSpace_Gamma),
    ]


def test_init_failure_is_one_line_unavailable(monkeypatch):
    vr = fake.install(monkeypatch)
    vr.init_error = openvr.VRInitError_Init_HmdNotFound
    with pytest.raises(VRUnavailable) as info:
        OpenVRBackend().start()
    text = str(info.value)
    assert "\n" not in text and "HmdNotFound" in text
    assert vr.shutdowns == 1


def test_real_library_without_runtime_is_unavailable():
    # No SteamVR on this machine: the real library must fail cleanly, in one line.
    with pytest.raises(VRUnavailable) as info:
        OpenVRBackend().start()
    assert "\n" not in str(info.value)


def test_quit_and_dashboard_events_and_lost_focus(monkeypatch):
    vr = fake.install(monkeypatch)
    b = OpenVRBackend()
    b.start()
    first = b.wait_poses()
    vr.events = [openvr.VREvent_DashboardActivated, openvr.VREvent_DashboardDeactivated, openvr.VREvent_Quit]
    assert [e.kind for e in b.poll_events()] == ["dashboard_shown", "dashboard_hidden", "quit"]
    assert "acknowledgeQuit" in vr.log
    vr.wait_error = openvr.VRCompositorError_DoNotHaveFocus
    again = b.wait_poses()  # no crash: last poses are reused
    assert np.allclose(again.head.matrix, first.head.matrix)
    b.shutdown()
    assert vr.shutdowns == 1


def test_render_model_polled_until_loaded(monkeypatch):
    fake.install(monkeypatch)
    b = OpenVRBackend()
    b.start()
    assert b.render_model("left") == LOADING
    assert b.render_model("left") == LOADING
    mesh = b.render_model("left")
    assert mesh is not None and mesh != LOADING
    assert mesh.triangles.tolist() == [[0, 1, 2]]
    assert np.allclose(mesh.vertices[2], (0.0, 0.1, 0.0))  # OpenVR -Z forward -> Panda +Y
    assert np.allclose(mesh.normals[0], (0.0, 0.0, 1.0))


def test_simulated_script_holds_and_lerps():
    steps = [
        {"head": {"pos": [0, 0, 1.6]}, "right": {"pos": [0.0, 0.0, 1.0]}},
        {"frames": 4, "lerp": True, "right": {"pos": [0.0, 0.4, 1.0], "grip": True}},
        {"right": {"grip": False}, "event": "quit"},
    ]
    sim = SimulatedBackend(steps, size=(64, 48))
    sim.start()
    ys = []
    grips = []
    for _ in range(sim.length):
        s = sim.wait_poses()
        ys.append(round(float(s.hands["right"].pose.position[1]), 3))
        grips.append(s.hands["right"].grip)
    assert ys == [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]
    assert grips == [False, True, True, True, True, False]
    assert [e.kind for e in sim.poll_events()] == ["quit"]
    assert sim.finished
    assert np.allclose(sim.eye_to_head("right")[:3, 3], (0.032, 0, 0))


def test_simulated_script_rejects_typos(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"steps": [{"rigth": {}}]}))
    with pytest.raises(UserError, match="rigth"):
        SimulatedBackend.from_file(path)


def test_a_resting_thumb_on_a_touchpad_moves_nobody(monkeypatch):
    """Vive wands: the touchpad's position counts only while it is pressed (pad_click bound)."""
    vr = fake.install(monkeypatch)
    b = OpenVRBackend()
    b.start()
    vr.buttons["left"] = {"move": (0.0, 0.8), "pad_click": False}  # thumb resting on the pad
    assert b.wait_poses().hands["left"].thumbstick == (0.0, 0.0)
    vr.buttons["left"]["pad_click"] = True
    assert b.wait_poses().hands["left"].thumbstick == pytest.approx((0.0, 0.8))
    vr.buttons["right"] = {"move": (0.9, 0.0)}  # a thumbstick (pad_click not bound): as it is
    assert b.wait_poses().hands["right"].thumbstick == pytest.approx((0.9, 0.0))
