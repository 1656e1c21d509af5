"""VR controls without an engine: world scaling/rotation with both grips, snap turn, smooth move."""

from __future__ import annotations

import numpy as np
import pytest
from vr_helpers import synthetic_loaded

from game.controls.vr_controls import Rig, VRControls
from game.vr import coords
from game.vr.backend import ControllerState, FrameState, Pose
from game.vr.launch import DEMO_SCRIPT
from game.vr.simulated import SimulatedBackend


def _state(left, right, grips=(False, False), lstick=(0.0, 0.0), rstick=(0.0, 0.0), head=(0.0, 0.0, 1.7)):
    def hand(p, grip, stick):
        return ControllerState(Pose(coords.compose(p), True), grip=grip, thumbstick=stick, connected=True)

    return FrameState(
        1,
        Pose(coords.compose(head), True),
        {"left": hand(left, grips[0], lstick), "right": hand(right, grips[1], rstick)},
    )


def _controls():
    ws = synthetic_loaded().workspace
    rigs = []
    c = VRControls(ws, lambda: ws.positions + 100.0, 0.1, rig=Rig(np.zeros(3)), on_rig=rigs.append)
    return c, rigs


def test_both_grips_scale_and_rotate_about_the_hands():
    c, rigs = _controls()
    c.update(_state((-0.2, 0.5, 1.2), (0.2, 0.5, 1.2), grips=(True, True)))
    anchor = c.rig.to_world((0.0, 0.5, 1.2))
    # Hands twice as far apart: the world looks twice as big -> the rig (the person) halves.
    c.update(_state((-0.4, 0.5, 1.2), (0.4, 0.5, 1.2), grips=(True, True)))
    assert c.rig.scale == pytest.approx(0.5)
    assert np.allclose(c.rig.to_world((0.0, 0.5, 1.2)), anchor)  # the point between the hands stays put
    # Turn the hands 90 degrees counter-clockwise (seen from above): the rig turns the other way.
    c.update(_state((0.0, 0.1, 1.2), (0.0, 0.9, 1.2), grips=(True, True)))
    assert c.rig.heading == pytest.approx(-90.0)
    assert np.allclose(c.rig.to_world((0.0, 0.5, 1.2)), anchor)
    assert rigs, "the renderer was told about the new rig"
    assert not any(h.dragging for h in c.hands.values())


def test_snap_turn_once_per_push_and_smooth_move():
    c, _ = _controls()
    c.update(_state((-0.2, 0.5, 1.2), (0.2, 0.5, 1.2), rstick=(0.9, 0.0)))
    c.update(_state((-0.2, 0.5, 1.2), (0.2, 0.5, 1.2), rstick=(0.95, 0.0)))  # still held: no second turn
    assert c.rig.heading == pytest.approx(-30.0)
    head = c.head_position()
    assert np.allclose(head[:2], (0.0, 0.0), atol=1e-9)  # turned about the head, not the play-area origin
    c.update(_state((-0.2, 0.5, 1.2), (0.2, 0.5, 1.2)))
    before = c.rig.position.copy()
    c.update(_state((-0.2, 0.5, 1.2), (0.2, 0.5, 1.2), lstick=(0.0, 1.0)), dt=0.5)
    moved = c.rig.position - before
    assert np.linalg.norm(moved) == pytest.approx(1.0)  # 2 m/s for half a second
    # Forward is where the head looks: after a -30 degree snap the head looks towards +X a little.
    assert moved[0] > 0.4 and moved[1] > 0.8


def test_demo_script_parses():
    sim = SimulatedBackend.from_file(DEMO_SCRIPT)
    assert sim.length > 100 and sim.loop


def test_undo_button_posts_undo_once_per_press():
    c, _ = _controls()
    seen = []
    c.workspace.subscribe(lambda e, ws: seen.append(e))
    pressed = _state((-0.2, 0.5, 1.2), (0.2, 0.5, 1.2))
    pressed.hands["right"].undo = True
    c.update(pressed)
    c.update(pressed)
    c.workspace.flush()
    assert [type(e).__name__ for e in seen] == ["UndoRequested"] and seen[0].hand == "vr-right"


def test_the_tip_pose_places_the_laser_and_the_touch():
    """SteamVR's /pose/tip (when bound) starts the laser and touches; else 6 cm ahead of the grip."""
    ws = synthetic_loaded().workspace
    controls = VRControls(ws, lambda: ws.positions, 0.12, rig=Rig(np.zeros(3)))
    card = 9
    target = ws.positions[card].astype(float)
    grip = Pose(coords.compose(target + [0.0, 0.0, -0.5]), True)  # half a metre below the card
    tip = Pose(coords.compose(target + [0.0, 0.0, -0.01]), True)  # the tip right at the card
    right = ControllerState(grip, trigger=True, connected=True, tip=tip)
    state = FrameState(
        1, Pose(coords.compose((0.0, -2.0, 1.7)), True), {"left": ControllerState(), "right": right}
    )
    controls.update(state)
    assert controls.hands["right"].hovered == card
    origin, _ = controls.lasers["right"]
    assert np.allclose(origin, tip.position)
    right_without = ControllerState(grip, trigger=True, connected=True)
    controls.update(FrameState(2, state.head, {"left": ControllerState(), "right": right_without}))
    assert np.allclose(controls.lasers["right"][0], grip.position)  # the grip pose stands in


def test_openvr_backend_reads_the_tip_pose(monkeypatch):
    import vr_fake_openvr as fake

    from game.vr.openvr_backend import OpenVRBackend

    vr = fake.install(monkeypatch)
    b = OpenVRBackend()
    b.start()
    assert b.wait_poses().hands["right"].tip is None  # not bound: the grip pose stands in
    vr.tip_offset = (0.0, -0.02, -0.07)  # OpenVR: 7 cm forward (-Z), 2 cm down
    hand = b.wait_poses().hands["right"]
    assert hand.tip is not None and hand.tip.valid
    assert np.allclose(hand.tip.position - hand.pose.position, (0.0, 0.07, -0.02), atol=1e-6)  # Panda axes
