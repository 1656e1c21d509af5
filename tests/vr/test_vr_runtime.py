"""What a SteamVR runtime does that a session must survive (issue 16), through the openvr double.

Connecting after the scene loaded, quit answered at once, GL flush + ``postPresentHandoff`` after
both eyes, v-sync variables before the window, the IPD re-read on its event, submit errors shown
once per kind, the eye texture's GL name re-read, render-model textures by format, and passing
device/property errors that do not pin the fallback controller model.
"""

from __future__ import annotations

import os

import numpy as np
import openvr
import pytest
import vr_fake_openvr as fake
from vr_helpers import close_app, make_app, synthetic_loaded

from game.core import events as ev
from game.vr import LOADING, VRUnavailable
from game.vr import stereo as stereo_module
from game.vr.launch import attach, backend_for_run
from game.vr.openvr_backend import OpenVRBackend


def started(monkeypatch, **settings) -> tuple[fake.FakeVR, OpenVRBackend]:
    vr = fake.install(monkeypatch, fake.FakeVR(**settings))
    backend = OpenVRBackend()
    backend.start()
    return vr, backend


# --- the backend alone --------------------------------------------------------------------------


def test_probe_asks_without_connecting(monkeypatch):
    vr = fake.install(monkeypatch)
    OpenVRBackend().probe()
    assert vr.log == ["isRuntimeInstalled", "isHmdPresent"]  # no init: SteamVR waits on nothing
    vr.hmd_present = False
    with pytest.raises(VRUnavailable, match="no headset"):
        OpenVRBackend().probe()
    vr.runtime_installed = False
    with pytest.raises(VRUnavailable, match="no SteamVR runtime") as info:
        OpenVRBackend().probe()
    assert "\n" not in str(info.value) and "init" not in vr.log


def test_submit_errors_are_one_notice_per_kind(monkeypatch):
    vr, b = started(monkeypatch, submit_error=openvr.VRCompositorError_InvalidTexture)
    assert b.submit("left", 3) == "InvalidTexture"
    assert b.submit("right", 4) == "InvalidTexture"
    notices = b.take_notices()
    assert len(notices) == 1 and "InvalidTexture" in notices[0]
    assert b.submit("left", 3) == "InvalidTexture" and b.take_notices() == []
    vr.submit_error = openvr.VRCompositorError_TextureIsOnWrongDevice
    assert b.submit("left", 3) == "TextureIsOnWrongDevice"
    assert len(b.take_notices()) == 1
    vr.submit_error = None
    assert b.submit("left", 3) is None
    assert b.submit_errors == {"InvalidTexture": 3, "TextureIsOnWrongDevice": 1}


def test_textured_render_model_in_rgba8_is_read_and_freed(monkeypatch):
    vr, b = started(
        monkeypatch,
        model_loading_polls=1,
        texture_loading_polls=1,
        texture_format=openvr.VRRenderModelTextureFormat_RGBA8_SRGB,
    )
    assert b.render_model("right") == LOADING  # the model loads
    assert b.render_model("right") == LOADING  # its texture loads
    mesh = b.render_model("right")
    assert mesh is not None and not isinstance(mesh, str)
    assert mesh.texture.shape == (2, 2, 4)
    assert mesh.texture[0, 0].tolist() == [255, 0, 0, 255] and mesh.texture[1, 0].tolist() == [0, 0, 255, 255]
    assert vr.freed_textures == 1 and vr.log.count("freeRenderModel") == 1
    assert b.take_notices() == []


@pytest.mark.parametrize(
    "fmt", ["BC2", "BC4", "BC7", "BC7_SRGB", "RGBA16_FLOAT"], ids=lambda f: f"format-{f}"
)
def test_other_texture_formats_take_the_fallback_with_a_message(monkeypatch, fmt):
    vr, b = started(
        monkeypatch,
        model_loading_polls=0,
        texture_loading_polls=0,
        texture_format=getattr(openvr, f"VRRenderModelTextureFormat_{fmt}"),
    )
    assert b.render_model("left") is None  # never read as RGBA8
    notices = b.take_notices()
    assert len(notices) == 1 and fmt in notices[0] and "RGBA8" in notices[0]
    assert vr.freed_textures == 1 and vr.log.count("freeRenderModel") == 1


def test_passing_device_and_property_errors_keep_asking(monkeypatch):
    vr, b = started(
        monkeypatch,
        model_loading_polls=0,
        invalid_device_polls=2,
        property_errors=[openvr.TrackedProp_NotYetAvailable, openvr.TrackedProp_InvalidDevice],
    )
    answers = [b.render_model("left") for _ in range(4)]
    assert answers == [LOADING] * 4  # no device, no device, not yet available, invalid device
    mesh = b.render_model("left")
    assert mesh is not None and not isinstance(mesh, str)
    assert b.take_notices() == []
    # A device that will never name a model: the fallback for good, said once.
    vr.property_errors = [openvr.TrackedProp_ValueNotProvidedByDevice]
    assert b.render_model("right") is None
    assert len(b.take_notices()) == 1


def test_focus_ipd_and_quit_events(monkeypatch):
    vr, b = started(monkeypatch)
    vr.input_available = False
    vr.events = [openvr.VREvent_InputFocusChanged, openvr.VREvent_IpdChanged]
    assert [e.kind for e in b.poll_events()] == ["dashboard_shown", "ipd_changed"]
    vr.input_available = True
    vr.events = [openvr.VREvent_InputFocusChanged, openvr.VREvent_Quit]
    assert [e.kind for e in b.poll_events()] == ["dashboard_hidden", "quit"]
    assert vr.log[-1] == "acknowledgeQuit"
    vr.ipd = 0.07
    assert np.allclose(b.eye_to_head("right")[:3, 3], (0.035, 0.0, 0.0))


# --- with the stereo renderer -------------------------------------------------------------------


@pytest.fixture
def vr_session(monkeypatch):
    vr = fake.install(monkeypatch, fake.FakeVR(model_loading_polls=0))
    backend = backend_for_run("on", scene_vr=False)
    assert backend is not None and "init" not in vr.log  # probed only
    app = make_app(synthetic_loaded())
    session = attach(app, backend)  # connects now: the app can submit from the next step
    assert "init" in vr.log
    session.stereo.trace = vr.log
    seen: list[ev.Event] = []
    app.workspace.subscribe(lambda e, _ws: seen.append(e))
    yield vr, app, session, seen
    session.stop()
    close_app(app)


def test_flush_and_handoff_after_both_eyes(vr_session):
    vr, app, session, _ = vr_session
    vr.log.clear()
    for _ in range(3):
        app.step()
    frame = ["waitGetPoses", "submit:left", "submit:right", "flush", "postPresentHandoff"]
    assert [e for e in vr.log if e in frame] == frame * 3
    assert vr.handoffs == 3
    assert stereo_module.gl_flush_function() is not None  # libGL here: the flush really ran
    assert session.stereo.flushes == 3


def test_ipd_change_moves_the_eye_cameras(vr_session):
    vr, app, session, _ = vr_session
    app.step()
    cams = session.stereo.cameras
    assert cams["right"].get_x() == pytest.approx(0.032, abs=1e-6)
    vr.ipd = 0.070
    vr.events = [openvr.VREvent_IpdChanged]
    app.step()
    assert cams["left"].get_x() == pytest.approx(-0.035, abs=1e-6)
    assert cams["right"].get_x() == pytest.approx(0.035, abs=1e-6)


def test_a_submit_error_is_shown_once_in_the_world(vr_session):
    vr, app, session, seen = vr_session
    vr.submit_error = openvr.VRCompositorError_InvalidTexture
    for _ in range(4):
        app.step()
    app.workspace.flush()
    shown = [e.text for e in seen if isinstance(e, ev.Message) and "InvalidTexture" in e.text]
    assert len(shown) == 1
    assert session.stereo.submit_errors == {"InvalidTexture": 8}


def test_eye_texture_name_is_read_again_when_it_changes(vr_session):
    vr, app, session, _ = vr_session
    app.step()
    stereo = session.stereo
    gsg = app.win.get_gsg()
    old = stereo.texture_id("left")
    # Panda3D drops the GL texture (as after a window event); another texture takes its name.
    stereo.textures["left"].release_all()
    app.step()
    from panda3d.core import Texture

    squatter = Texture("squatter")
    squatter.setup_2d_texture(4, 4, Texture.T_unsigned_byte, Texture.F_rgba8)
    squatter.prepare_now(0, gsg.get_prepared_objects(), gsg)
    app.step()
    new = stereo.texture_id("left")
    assert new != old
    assert vr.submitted[-2][1] == new  # the left eye went in under its new name
    assert stereo.texture_id_changes >= 1


def test_passing_model_errors_do_not_pin_the_fallback(vr_session, monkeypatch):
    vr, app, session, _ = vr_session
    monkeypatch.setattr(stereo_module, "FALLBACK_AFTER", 3)
    monkeypatch.setattr(stereo_module, "RETRY_EVERY", 2)
    stereo = session.stereo
    stereo._models_pending = {"left", "right"}
    stereo._model_polls = {"left": 0, "right": 0}
    vr.invalid_device_polls = 10  # both hands ask: five frames without a device
    for _ in range(4):
        app.step()
    assert stereo.model_source("left") == "fallback"  # stands in while the controller starts
    for _ in range(8):
        app.step()
    assert stereo.model_source("left") == "openvr" and stereo.model_source("right") == "openvr"
    assert not stereo._models_pending


def test_unreadable_texture_format_shows_the_fallback_and_says_why(vr_session):
    vr, app, session, seen = vr_session
    vr.texture_format = openvr.VRRenderModelTextureFormat_BC7
    vr.texture_loading_polls = 0
    stereo = session.stereo
    for hand in ("left", "right"):
        for child in stereo.hands[hand].find_all_matches("controller-model"):
            child.remove_node()
    stereo._models_pending = {"left", "right"}
    app.step()
    app.step()
    app.workspace.flush()
    assert stereo.model_source("left") == "fallback" and not stereo._models_pending
    assert any(isinstance(e, ev.Message) and "BC7" in e.text for e in seen)


# --- the run command ------------------------------------------------------------------------------


def test_run_connects_after_the_scene_loaded_and_answers_quit_at_once(monkeypatch, tmp_path):
    """The scene loads (minutes on a slow machine) before OpenVR is initialised; v-sync variables
    are set before the window opens; a quit from SteamVR on the first frame ends VR at once."""
    import builtins

    import game.app
    import game.pipeline
    from game.cli import main

    vr = fake.install(monkeypatch)
    vr.events = [openvr.VREvent_Quit]
    for name in ("__GL_SYNC_TO_VBLANK", "vblank_mode"):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)

    def open_scene(*args, **kwargs):
        vr.log.append("open_scene")
        return synthetic_loaded()

    monkeypatch.setattr(game.pipeline, "open_scene", open_scene)
    original_init = game.app.LatentReachApp.__init__
    env_at_window: dict[str, str | None] = {}

    def init(self, *args, **kwargs):
        vr.log.append("window")
        env_at_window.update({k: os.environ.get(k) for k in ("__GL_SYNC_TO_VBLANK", "vblank_mode")})
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(game.app.LatentReachApp, "__init__", init)
    try:
        rc = main(["run", "--vr", "--offscreen", "--quiet", "--no-record", "--out", str(tmp_path)])
    finally:
        base = getattr(builtins, "base", None)
        if base is not None:
            base.task_mgr.remove("latent-reach-frame")
            base.destroy()
    assert rc == 0
    assert env_at_window == {"__GL_SYNC_TO_VBLANK": "0", "vblank_mode": "0"}
    order = [e for e in vr.log if e in ("isHmdPresent", "open_scene", "window", "init", "acknowledgeQuit")]
    assert order == ["isHmdPresent", "open_scene", "window", "init", "acknowledgeQuit"]
    assert vr.log.count("waitGetPoses") == 1  # quit answered on the first frame, VR left
    assert vr.shutdowns == 1


def test_the_application_manifest_names_the_program(monkeypatch):
    """SteamVR lists the app as "Latent Reach" (not "python"): manifest registered, process named."""
    import json

    from game.vr.openvr_backend import APP_KEY, APP_MANIFEST, MANIFEST

    vr, b = started(monkeypatch)
    assert vr.applications == [
        ("addApplicationManifest", (str(APP_MANIFEST), True)),
        ("identifyApplication", (os.getpid(), APP_KEY)),
    ]
    app = json.loads(APP_MANIFEST.read_text())["applications"][0]
    assert app["app_key"] == APP_KEY and app["strings"]["en_us"]["name"] == "Latent Reach"
    assert (APP_MANIFEST.parent / app["action_manifest_path"]) == MANIFEST
    assert b.app_key == APP_KEY and b.take_notices() == []
