"""In the headset no text names a desktop key: the guidance legend, the info panel's status lines,
the start menu's hint and the wrist menu's hints name the wrist-menu button (by the label it
shows) or the controller gesture instead, read from what the simulated headset's world shows.
When VR stops, the same texts name the keys again."""

from __future__ import annotations

import re

import pytest
from test_vr_wrist_menu import aim, click, close_menu, on_image, open_vr_game, play, settle, wrist

from game.controls.wording import WORDS, Wording

# A desktop key in a text: "press N", "X: next", "(N)", "Ctrl+Z", "Esc", "Bksp", arrows, ...
KEY = re.compile(
    r"press [A-Z]\b|\b[A-Z]: |\([A-Z]\)|Ctrl|\bEsc\b|\bEnter\b|Bksp|Backspace|\bDel\b|\bTab\b"
    r"|Up/Down|Left/Right|\b[A-Z] (undo|clear|keep|done)\b"
)


@pytest.fixture(scope="module")
def vr_game(module_digits):
    yield from open_vr_game(module_digits, pitch=-14, menu=True)


def labels(game) -> set[str]:
    """The wrist menu's button labels as drawn (one line each)."""
    return {b.label().replace("\n", " ") for b in wrist(game).buttons}


def named_buttons(text: str) -> list[str]:
    """The buttons a text names after "wrist menu:" (comma-separated, up to the line's end)."""
    found = re.search(r"wrist menu: ([^\n]*)", text)
    assert found, text
    return [name.strip() for name in found.group(1).split(",")]


def status(game) -> str:
    return game.app.world.panel.status.get_text()


def test_the_words_table_has_both_devices_and_no_vr_text_names_a_key():
    for action, (desktop, vr) in WORDS.items():
        assert desktop and vr and desktop != vr, action
        assert not KEY.search(vr), (action, vr)
    assert KEY.search(WORDS["next_suspect"][0])  # the pattern does find desktop keys
    with pytest.raises(ValueError):
        Wording("keyboard")  # type: ignore[arg-type]


def test_start_menu_legend_status_lines_and_hints_in_the_headset(vr_game):
    game = vr_game
    app = game.app
    # The start menu before the eyes at the start: its hint speaks of the trigger, not arrows.
    assert game.menu.visible
    hint = game.menu._hint.text
    assert "Trigger" in hint and not KEY.search(hint), hint
    game.menu.hide()
    play(game, {})
    # The guidance legend under the wrist display.
    settle(game)
    legend = app.world.hud.legend_text
    assert legend.startswith("? = label probably wrong") and not KEY.search(legend), legend
    assert set(named_buttons(legend)) <= labels(game) and "Next suspect" in named_buttons(legend)
    # The panel's status line after a heat map: the Heat map and Next class buttons.
    click(game, "suspect")
    settle(game, 1)
    click(game, "heatmap")
    settle(game)
    assert game.explain.last_map is not None
    line = status(game)
    assert " ms " in line and not KEY.search(line), line
    shown = labels(game)
    for name in named_buttons(line):  # "Heat map" heads the label "Heat map <method>"
        assert any(label == name or label.startswith(name + " ") for label in shown), (name, shown)
    # What-if painting: the gesture, then the painting tools by their labels.
    click(game, "paint")
    assert game.explain.painting
    line = status(game)
    assert "trigger on the image" in line and not KEY.search(line), line
    assert set(named_buttons(line)) <= labels(game)  # "Painting done" while painting
    close_menu(game)
    settle(game, 1)
    tap = on_image(app, 0.5, 0.5)
    play(game, aim(game, tap), aim(game, tap, trigger=True), aim(game, tap, trigger=False))
    settle(game)
    assert game.explain.last_whatif is not None
    line = status(game)
    assert line.startswith("what-if: ") and not KEY.search(line), line
    tools = named_buttons(line)
    assert "Undo stroke" in tools and "Painting done" in tools
    assert set(tools) <= labels(game), (tools, labels(game))
    # Every wrist-menu hint (shown under the buttons when one is pointed at).
    for button in wrist(game).buttons:
        assert not KEY.search(button.hint), button.hint
    click(game, "paint")  # done painting
    assert not game.explain.painting


def test_when_vr_stops_the_texts_name_the_keys_again(vr_game):
    """Last in this module: it stops the headset (SteamVR quit) and reads the desktop words."""
    game = vr_game
    app = game.app
    if game.app.workspace.selected < 0:
        click(game, "suspect")
        settle(game, 1)
    if game.explain.method is None:
        click(game, "heatmap")
    settle(game)
    assert "wrist menu" in app.world.hud.legend_text
    assert "wrist menu" in status(game)
    play(game, {"event": "quit"})
    assert not game.vr.stereo.running
    assert game.explain.wording.device == "desktop"
    assert "press N" in app.world.hud.legend_text
    assert "X: next method" in status(game)
    game.menu.show_start()
    assert "Up/Down" in game.menu._hint.text
