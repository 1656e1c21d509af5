"""Keys at the mirror window while VR runs: the headset has the input, the desktop's keys are quiet.

The game as ``latent-reach run --vr`` assembles it (desktop controls, explanations, guidance,
start menu) on the simulated headset: H does not bring the desktop help into the headset, C and
F do not move the desktop camera, X does not change the heat-map method, M does not open the
start menu, Esc changes nothing, the desktop mouse hand no longer overrides the highlight the VR
hands set; Ctrl+Q still quits. When VR stops (SteamVR quit), the keys are the desktop's again.
"""

from __future__ import annotations

import numpy as np
import pytest
from direct.showbase.MessengerGlobal import messenger
from vr_helpers import synthetic_loaded

from game.controls.modes import InputModes, Mode
from game.vr.simulated import SimulatedBackend


def test_in_vr_only_keys_bound_for_vr_act_and_esc_is_quiet():
    calls: list[str] = []
    modes = InputModes(on_base_escape=lambda: calls.append("base"))
    world_key = modes.when(Mode.WORLD, Mode.DRAG)(lambda: calls.append("world"))
    menu_key = modes.when(Mode.MENU)(lambda: calls.append("menu"))
    any_mode = modes.desktop(lambda: calls.append("desktop"))
    modes.push(Mode.VR)
    world_key(), any_mode(), modes.escape()
    modes.push(Mode.MENU, on_escape=lambda: calls.append("close"))  # the start menu, by the laser
    menu_key(), modes.escape()
    assert calls == [] and modes.stack == (Mode.WORLD, Mode.VR, Mode.MENU)
    modes.reset()  # a scene switch keeps VR
    assert modes.stack == (Mode.WORLD, Mode.VR)
    modes.pop(Mode.VR)
    world_key(), any_mode(), modes.escape()
    assert calls == ["world", "desktop", "base"]


@pytest.fixture
def vr_desktop_game():
    from game.assembly import open_game

    loaded = synthetic_loaded(n=60)
    card = 7
    tip = loaded.workspace.positions[card] - np.array([0.0, 0.06, 0.0])  # the right tip on card 7
    backend = SimulatedBackend(
        [
            {"head": {"pos": [0.0, -2.5, 1.7]}, "right": {"pos": [0.4, 0.3, 1.2]}},
            {"frames": 4, "right": {"pos": [float(v) for v in tip]}},
        ],
        size=(96, 96),
    )
    backend.start()
    game = open_game(loaded, offscreen=True, size=(96, 96), controls=True, menu=True, vr_backend=backend)
    assert game.vr is not None and game.menu is not None
    game.vr.controls.rig.position[:] = 0.0  # tracking space = world, so the script's tip is on the card
    game.vr.controls.rig.heading, game.vr.controls.rig.scale = 0.0, 1.0
    game.menu.hide()
    game.card = card
    game.backend = backend
    yield game
    game.destroy()
    game.app.task_mgr.remove("latent-reach-frame")
    game.app.destroy()


def test_desktop_keys_are_quiet_at_the_mirror_window_and_ctrl_q_still_quits(vr_desktop_game, monkeypatch):
    game = vr_desktop_game
    app = game.app
    assert game.modes.stack == (Mode.WORLD, Mode.VR)
    for _ in range(5):
        app.step()
    hand = game.vr.controls.hands["right"]
    assert hand.hovered == game.card
    # The VR hand's highlight stands: the desktop controls' frame hook (after the pose task)
    # no longer sets the mouse hand's -1 over it every frame.
    assert app.world.cards.hovered == game.card

    help_path = app.world.hud.help_path
    camera = app.camera.get_pos(app.render)
    method = game.explain.method
    app.workspace.selected = game.card
    for key in ("h", "c", "f", "x", "m", "escape", "tab"):
        messenger.send(key)
        app.step()
    assert help_path.is_hidden()  # the desktop help never comes into the headset
    assert (app.camera.get_pos(app.render) - camera).length() == 0.0
    assert game.explain.method == method
    assert not game.menu.visible
    assert game.modes.stack == (Mode.WORLD, Mode.VR)

    quits: list[bool] = []
    monkeypatch.setattr(app, "userExit", lambda: quits.append(True))
    messenger.send("control-q")
    assert quits == [True]

    # SteamVR quits: back to the desktop, whose keys act again.
    game.backend.extend([{"event": "quit"}])
    app.step()
    assert not game.vr.stereo.running and game.modes.stack == (Mode.WORLD,)
    messenger.send("h")
    assert not help_path.is_hidden()
