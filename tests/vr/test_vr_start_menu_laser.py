"""The start menu (scenes, sessions, settings) in VR: before the eyes when it opens, rows hovered
by the laser and activated by the trigger (a setting's left / right half lowers / raises it), and
brought back from the wrist menu's help page."""

from __future__ import annotations

import numpy as np
import pytest
from panda3d.core import Point3
from test_vr_wrist_menu import aim, click, close_menu, open_vr_game, play, settle, wrist

from game.core import events as ev


@pytest.fixture(scope="module")
def vr_game_with_menu(loaded_digits):
    """A VR game that also has the start menu (shown at launch, as on the desktop)."""
    yield from open_vr_game(loaded_digits, pitch=-5, menu=True)


def row_point(menu, i: int, x: float = 0.0) -> np.ndarray:
    """A world point on the start menu's row ``i`` (x in the menu's units, 0 = the middle)."""
    local = Point3(x, 0.0, menu._row_z(i) + 0.02)
    return np.array(menu.root.get_parent().get_relative_point(menu.root, local), dtype=np.float64)


def press_row(game, i: int, x: float = 0.0) -> None:
    point = row_point(game.menu, i, x)
    play(game, aim(game, point))
    assert game.menu.index == i  # the laser hovers the row
    play(game, aim(game, point, trigger=True), aim(game, point, trigger=False))


def test_start_menu_before_the_eyes_driven_by_the_laser(vr_game_with_menu):
    game = vr_game_with_menu
    app, menu, controls = game.app, game.menu, game.vr.controls
    play(game, {})
    assert menu.visible
    # Before the eyes, at reading distance for the person, facing them.
    head = controls.head_position()
    offset = np.array(menu.root.get_pos(app.render)) - head
    assert np.hypot(offset[0], offset[1]) / controls.rig.scale == pytest.approx(0.8, rel=0.02)
    forward = controls.head_world[:3, 1]
    assert float(offset[:2] @ forward[:2]) > 0
    texts = [item.text() for item in menu.items]
    press_row(game, texts.index("Settings"))
    assert menu.page == "settings"
    size_row = next(i for i, item in enumerate(menu.items) if item.text().startswith("Card size"))
    size0 = app.world.config.card_size
    press_row(game, size_row, x=+0.4)  # the right half raises it
    assert app.world.config.card_size > size0
    press_row(game, size_row, x=-0.4)  # the left half lowers it
    assert app.world.config.card_size == pytest.approx(size0)
    press_row(game, [item.text() for item in menu.items].index("Back"))
    assert menu.page == "start"
    press_row(game, [item.text() for item in menu.items].index("Resume"))
    assert not menu.visible
    # The wrist menu's help page brings it back.
    click(game, "help")
    click(game, "scenes")
    play(game, {})
    assert menu.visible and wrist(game).clicked[-2:] == ["help", "scenes"]
    close_menu(game)


def test_a_scene_opened_in_vr_puts_the_person_inside_the_new_cloud(vr_game_with_menu):
    """What the start menu's scene rows end in (``app.switch_scene``): a new world elsewhere."""
    from game.pipeline import LoadedScene

    game = vr_game_with_menu
    app, controls = game.app, game.vr.controls
    src = app.loaded
    ws = src.workspace.copy()
    ws.positions = ws.positions + np.array([25.0, -10.0, 0.0], dtype=np.float32)  # far from the old one
    other = LoadedScene(src.scene, src.dataset, src.network.clone(), src.projector, src.layout, ws, {})
    app.switch_scene(other)
    play(game, {}, {})
    head = controls.head_position()
    lo, hi = ws.positions.min(axis=0), ws.positions.max(axis=0)
    assert (lo[:2] <= head[:2]).all() and (head[:2] <= hi[:2]).all()  # standing inside it
    # The wrist menu and the laser still act on the new world.
    settle(game, 2)  # the new scene's suspicion scores
    click(game, "suspect")
    settle(game, 1)
    assert app.workspace is ws and 0 <= ws.selected < ws.n_cards
    close_menu(game)


def test_the_start_menu_keeps_the_trigger_while_it_is_shown(vr_game_with_menu):
    """Modal as on the desktop: a trigger that misses every row (here aimed at a card of the world)
    selects nothing behind the menu; once the menu is closed the same aim selects the card."""
    game = vr_game_with_menu
    app, menu, ws = game.app, game.menu, game.app.world.workspace
    play(game, {})
    if not menu.visible:
        menu.show()
        play(game, {})
    assert menu.visible
    head = game.vr.controls.head_position()
    positions = np.asarray(app.world.positions)
    distance = np.linalg.norm(positions - head, axis=1)
    card = int(np.argmin(np.where(np.isfinite(distance), distance, np.inf)))
    target = positions[card]
    ws.post(ev.CardSelected(card=-1, hand="test"))
    play(game, aim(game, target, trigger=True), aim(game, target, trigger=False))
    assert ws.selected == -1
    menu.hide()
    play(game, aim(game, target, trigger=True), aim(game, target, trigger=False))
    assert ws.selected >= 0  # the laser picks a card again (the nearest along the ray)
