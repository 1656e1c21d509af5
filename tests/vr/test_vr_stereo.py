"""The real OpenVR backend (openvr functions replaced by a double) rendering offscreen via EGL."""

from __future__ import annotations

import numpy as np
import pytest
import vr_fake_openvr as fake
from vr_helpers import close_app, make_app, synthetic_loaded, texture_pixels

from game.controls.vr_controls import Rig
from game.core import events as ev
from game.vr import coords
from game.vr.launch import attach, open_backend

FRAME = ["waitGetPoses", "draw:left", "draw:right", "submit:left", "submit:right"]


@pytest.fixture
def vr_app(monkeypatch):
    vr = fake.install(monkeypatch)
    backend = open_backend("on")
    assert backend is not None and backend.name == "openvr"
    app = make_app(synthetic_loaded())
    session = attach(app, backend)
    # Stand 2.5 m behind the cloud, facing it (+Y); the double's head is at Panda (0, 0.5, 1.7).
    session.controls.rig = Rig(np.array([0.0, -3.0, 0.0]))
    session.stereo.set_rig(session.controls.rig.matrix())
    session.stereo.trace = vr.log
    yield vr, app, session
    session.stop()
    close_app(app)


def test_frame_order_and_both_eyes_render(vr_app):
    vr, app, session = vr_app
    vr.log.clear()
    for _ in range(3):
        app.step()
    order = [e for e in vr.log if e in FRAME]
    assert order == FRAME * 3
    stereo = session.stereo
    ids = {eye: stereo.texture_id(eye) for eye in ("left", "right")}
    assert ids["left"] > 0 and ids["right"] > 0 and ids["left"] != ids["right"]
    assert [s[1] for s in vr.submitted[-2:]] == [ids["left"], ids["right"]]
    bg = np.array([round(c * 255) for c in app.loaded.scene.world.background])
    left = texture_pixels(app, stereo.textures["left"])
    right = texture_pixels(app, stereo.textures["right"])
    assert left.shape == (80, 96, 3)  # the recommended size from the runtime
    for img in (left, right):
        differs = np.abs(img.astype(int) - bg).sum(axis=2) > 30
        assert differs.mean() > 0.01, "no cards drawn in an eye buffer"
    assert np.abs(left.astype(int) - right.astype(int)).sum() > 0  # two viewpoints
    # The desktop window mirrors the left eye (letterboxed), not a black screen.
    assert app.pixels().mean() > 5


def test_cameras_use_converted_projection_and_poses(vr_app):
    vr, app, session = vr_app
    app.step()
    stereo = session.stereo
    lens = stereo.cameras["left"].node().get_lens()
    mat = lens.get_projection_mat()
    got = coords.from_panda_values([mat.get_cell(r, c) for r in range(4) for c in range(4)])
    assert np.allclose(got, session.backend.projection("left", stereo.near, stereo.far), atol=1e-5)
    # The head node sits at the converted pose: OpenVR (0, 1.7, -0.5) -> Panda (0, 0.5, 1.7).
    p = stereo.head.get_pos()
    assert np.allclose((p[0], p[1], p[2]), (0.0, 0.5, 1.7), atol=1e-5)
    e = stereo.cameras["right"].get_pos()
    assert np.allclose((e[0], e[1], e[2]), (0.032, 0.0, 0.0), atol=1e-6)
    # A point straight ahead of the head lands left of centre in the right eye and right of
    # centre in the left eye (parallax).
    from panda3d.core import Point2, Point3

    film = {}
    for eye in ("left", "right"):
        ahead = stereo.cameras[eye].get_relative_point(stereo.head, Point3(0, 2.0, 0))
        film[eye] = Point2()
        assert stereo.cameras[eye].node().get_lens().project(ahead, film[eye])
    assert film["right"][0] < 0 < film["left"][0]


def test_controller_models_fall_back_or_load(vr_app):
    vr, app, session = vr_app
    for _ in range(4):
        app.step()
    tags = [session.stereo.hands[h].find("controller-model").get_tag("source") for h in ("left", "right")]
    assert tags == ["openvr", "openvr"]  # the double's model loads after two "loading" polls


def test_quit_returns_to_desktop_without_crashing(vr_app):
    vr, app, session = vr_app
    app.step()
    seen = []
    app.workspace.subscribe(lambda e, ws: seen.append(e))
    vr.events.append(__import__("openvr").VREvent_Quit)
    app.step()
    app.step()
    assert not session.stereo.active and not session.stereo.running
    assert "acknowledgeQuit" in vr.log and vr.shutdowns == 1
    assert any(isinstance(e, ev.Message) and "desktop" in e.text for e in seen)
    assert app.camNode.is_active()
    assert app.pixels().shape == (120, 160, 3)


def test_dashboard_pauses_input(vr_app):
    vr, app, session = vr_app
    vr.events.append(__import__("openvr").VREvent_DashboardActivated)
    app.step()
    assert session.stereo.paused
    vr.events.append(__import__("openvr").VREvent_DashboardDeactivated)
    app.step()
    assert not session.stereo.paused
