"""Desktop fallback, ``require`` → exit 2, no import side effects, and a scripted VR grab."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import openvr
import pytest
import vr_fake_openvr as fake
from vr_helpers import close_app, make_app, synthetic_loaded

from game.controls.hand import Hand
from game.controls.vr_controls import Rig
from game.core import events as ev
from game.core.errors import UserError
from game.vr.launch import attach, open_backend, parse_mode
from game.vr.simulated import SimulatedBackend


def at_origin(session) -> None:
    """Tracking space = the world (VR otherwise starts inside the cloud at room scale)."""
    session.controls.rig = Rig(np.zeros(3))
    session.stereo.set_rig(session.controls.rig.matrix())


HAND_EVENTS = (ev.CardGrabbed, ev.CardMoved, ev.CardDropped, ev.CardSelected, ev.GrabCancelled)


def test_init_failure_falls_back_to_desktop_with_one_line(monkeypatch):
    vr = fake.install(monkeypatch)
    vr.init_error = openvr.VRInitError_Init_HmdNotFound
    out = io.StringIO()
    assert open_backend("on", out=out) is None
    text = out.getvalue()
    assert text.count("\n") == 1 and "desktop mode" in text


def test_no_runtime_on_this_machine_falls_back(capfd):
    assert open_backend("on") is None
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "desktop mode" in err[0]


def test_require_is_a_user_error_with_exit_code_2(monkeypatch):
    vr = fake.install(monkeypatch)
    vr.init_error = openvr.VRInitError_Init_HmdNotFound
    with pytest.raises(UserError) as info:
        open_backend("require")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_modes():
    assert parse_mode(None) == "off" and parse_mode(True) == "on" and parse_mode("require") == "require"
    with pytest.raises(UserError):
        parse_mode("sometimes")


def test_importing_vr_changes_nothing():
    code = (
        "import sys; from panda3d.core import ConfigVariableBool;"
        "before = ConfigVariableBool('sync-video').get_value();"
        "import game.vr, game.vr.coords, game.vr.launch, game.vr.simulated, game.vr.openvr_backend;"
        "import game.vr.stereo, game.vr.ui, game.controls.vr_controls;"
        "print('openvr' in sys.modules, ConfigVariableBool('sync-video').get_value() == before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def _hand_events(seen):
    kinds = [type(e).__name__ for e in seen if isinstance(e, HAND_EVENTS)]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    return collapsed


def test_scripted_grab_move_release_matches_the_mouse():
    loaded = synthetic_loaded()
    ws = loaded.workspace
    card = 5
    start = ws.positions[card].astype(float)
    target = start + np.array([0.3, 0.0, 0.2])
    tip = 0.06  # the controller touches with a point 6 cm ahead of its origin (+Y forward)
    hold = (start - [0, tip, 0]).tolist()
    steps = [
        {"head": {"pos": [0.0, -1.0, 1.7]}, "right": {"pos": hold}},
        {"right": {"grip": True}},
        {"frames": 5, "lerp": True, "right": {"pos": (target - [0, tip, 0]).tolist()}},
        {"right": {"grip": False}},
        {"frames": 2},
    ]
    backend = SimulatedBackend(steps, size=(64, 48))
    backend.start()
    app = make_app(loaded)
    try:
        session = attach(app, backend)
        at_origin(session)  # the script is written in world coordinates
        seen = []
        ws.subscribe(lambda e, _ws: seen.append(e))
        for _ in range(backend.length):
            app.step()
        session.stop()
    finally:
        close_app(app)
    vr_kinds = _hand_events(seen)
    assert vr_kinds == ["CardGrabbed", "CardMoved", "CardDropped"]
    drop = next(e for e in seen if isinstance(e, ev.CardDropped))
    assert drop.card == card and drop.hand == "vr-right"
    assert np.allclose(drop.position, target, atol=1e-4)
    assert np.allclose(ws.positions[card], target, atol=1e-4)
    assert [h for _, h, _ in backend.haptics] == ["right", "right"]  # grab and drop
    assert backend.log.count("submit:left") == backend.length

    # The same gesture with the desktop hand posts the same kinds of events.
    mouse_ws = synthetic_loaded().workspace
    mouse_seen = []
    mouse_ws.subscribe(lambda e, _ws: mouse_seen.append(e))
    mouse = Hand(mouse_ws, card_size=0.12)
    assert mouse.touch(start) == card and mouse.grab()
    for t in np.linspace(0, 1, 5)[1:]:
        mouse.move_to(start + t * (target - start))
        mouse.update()
    mouse.release(target)
    mouse_ws.flush()
    assert _hand_events(mouse_seen) == vr_kinds
    assert np.allclose(mouse_ws.positions[card], ws.positions[card], atol=1e-5)


def test_trigger_selects_what_the_laser_points_at():
    loaded = synthetic_loaded()
    card = 7
    p = loaded.workspace.positions[card].astype(float)
    origin = (p - [0.0, 1.0, 0.0]).tolist()  # a metre in front, pointing +Y at it
    steps = [{"right": {"pos": origin}}, {"right": {"trigger": True}}, {"right": {"trigger": False}}]
    backend = SimulatedBackend(steps, size=(64, 48))
    backend.start()
    app = make_app(loaded)
    try:
        session = attach(app, backend)
        at_origin(session)  # the script is written in world coordinates
        for _ in range(backend.length):
            app.step()
        # In-world UI: the info panel floats beside the selected card and faces the head.
        panel = app.world.panel.root
        assert panel.get_parent() == app.render and not panel.is_hidden()
        where = np.array(panel.get_pos(app.render))
        assert np.linalg.norm(where - p) < 0.6
        head = session.controls.head_position()
        facing = np.array(app.render.get_relative_vector(panel, (0, -1, 0)))
        facing /= np.linalg.norm(facing)  # the panel is scaled
        to_head = (head - where) / np.linalg.norm(head - where)
        assert float(facing @ to_head) > 0.9
        # The fine-tune status floats above the left hand.
        hud = np.array(app.world.hud.root.get_pos(app.render))
        assert np.linalg.norm(hud - session.controls.hand_position("left")) < 0.3
        session.stop()
        assert app.world.panel.root.get_parent() == app.aspect2d  # back on the desktop overlay
    finally:
        close_app(app)
    assert loaded.workspace.selected == card


def test_run_vr_require_exits_2_before_loading(capsys):
    from game.cli import main

    assert main(["run", "--vr=require", "--offscreen", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "VR required" in err[0]


def test_scene_flag_and_cli_flag(monkeypatch):
    from game.vr.launch import backend_for_run

    vr = fake.install(monkeypatch)
    assert backend_for_run(None, scene_vr=False) is None and "init" not in vr.log
    backend = backend_for_run(None, scene_vr=True)  # vr = true in the scene
    assert backend is not None and backend.name == "openvr"
    assert backend_for_run("off", scene_vr=True) is None


def test_headless_simulated_run_writes_the_mirror(tmp_path):
    from game.commands.run import run_app_with_vr

    loaded = synthetic_loaded()
    backend = SimulatedBackend([{"head": {"pos": [0.0, -2.5, 1.7]}, "frames": 3}], size=(64, 48))
    backend.start()
    rc = run_app_with_vr(loaded, backend, size=(96, 72), offscreen=True, out=tmp_path)
    assert rc == 0
    shot = tmp_path / "vr-mirror.png"
    assert shot.is_file()
    assert backend.log.count("submit:right") == 3
    import builtins

    base = builtins.base  # the app ShowBase registered itself; close it for the next test
    base.task_mgr.remove("latent-reach-frame")
    base.destroy()
