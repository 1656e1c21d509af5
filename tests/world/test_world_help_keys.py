"""Every key the game binds is in the help; the hint is on a backing card; menu rows fit the menu."""

from __future__ import annotations

import numpy as np
import pytest

# How each Panda3D event name a control accepts is written in the help (None: not a key of its
# own, e.g. the release of a button). A binding missing here fails the test: add it to the help.
HELP_WORDS: dict[str, str | None] = {
    "mouse1": "left click",
    "mouse1-up": None,
    "wheel_up": "mouse wheel",
    "wheel_down": "mouse wheel",
    "escape": "Esc",
    "control-q": "Ctrl+Q",
    "control-z": "Ctrl+Z",
    "tab": "Tab",
    "backspace": "Backspace",
    "delete": "Del",
    "arrow_up": "Up",
    "arrow_down": "Down",
    "arrow_left": "Left",
    "arrow_right": "Right",
    "enter": "Enter",
    "f": "F frame",
    "c": "C frame",
    "h": "H: show",
    "m": "M or Esc",
    "n": "N next",
    "l": "L switch",
    "x": "X heat",
    "t": "T next",
    "p": "P what-if",
    "g": "G class",
    "i": "I Telea",
    "k": "K keep",
}


@pytest.fixture(scope="module")
def game(loaded_digits, tmp_path_factory):
    import os

    from game.assembly import open_game
    from game.pipeline import LoadedScene

    folder = tmp_path_factory.mktemp("sessions")
    long_name = "2026-12-02T08-01-33_digits_a_session_with_a_really_long_name_that_overflows.session.sqlite"
    (folder / long_name).write_bytes(b"")
    old = os.environ.get("LATENT_REACH_SESSIONS")
    os.environ["LATENT_REACH_SESSIONS"] = str(folder)
    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    g = open_game(loaded, offscreen=True, size=(640, 400), controls=True, menu=True, multisamples=0)
    g.app.step(0.0)
    yield g
    g.destroy()
    g.app.destroy()
    if old is None:
        os.environ.pop("LATENT_REACH_SESSIONS", None)
    else:
        os.environ["LATENT_REACH_SESSIONS"] = old


def _bound_keys(game) -> set[str]:
    keys: set[str] = set(game.keys.getAllAccepting())
    for part in (game.controls, game.explain, game.guidance, game.menu):
        events = getattr(part, "_events", None)
        if events is not None:
            keys |= set(events.getAllAccepting())
    return keys


def test_every_bound_key_is_in_the_help(game):
    from game.world.hud import HELP_TEXT

    keys = _bound_keys(game)
    assert {"escape", "control-q", "n", "l", "control-z", "x", "m"} <= keys  # the wiring is seen
    unknown = sorted(k for k in keys if k not in HELP_WORDS)
    assert not unknown, f"bindings without a help entry: {unknown}"
    missing = sorted(k for k in keys if HELP_WORDS[k] and HELP_WORDS[k] not in HELP_TEXT)
    assert not missing, f"the help does not mention: {[(k, HELP_WORDS[k]) for k in missing]}"
    assert "label probably wrong" in HELP_TEXT  # the "?" markers are explained


def test_the_hint_has_a_backing_and_says_only_what_works(game):
    from game.world.hud import HINT_MENU, HINT_NO_MENU

    hud = game.app.world.hud
    assert hud.hint.backing is not None
    hud.set_menu(False)
    assert hud.hint.text == HINT_NO_MENU and "M:" not in HINT_NO_MENU and "Ctrl+Q" in HINT_NO_MENU
    hud.set_menu(True)
    assert hud.hint.text == HINT_MENU and "M: menu" in HINT_MENU
    # Drawn on its card: the pixels under the hint are the dark backing, not the scene.
    game.menu.hide()
    game.app.step(0.0)
    px = game.app.pixels().astype(int)
    lo, hi = hud.hint.backing.get_tight_bounds(game.app.render2d)
    w, h = game.app.size
    x0, x1 = int((lo[0] + 1) / 2 * w) + 1, int((hi[0] + 1) / 2 * w) - 1
    y0, y1 = int((1 - hi[2]) / 2 * h) + 1, int((1 - lo[2]) / 2 * h) - 1
    box = px[y0:y1, x0:x1]
    assert box.size and np.median(box) < 40  # dark card behind light text
    assert (box.max(axis=2) > 150).any()  # the text


def test_long_menu_rows_end_in_an_ellipsis_inside_the_menu(game):
    from game.controls.menu import WIDTH

    menu = game.menu
    menu.show_start()
    texts = [row.text for row in menu._rows]
    session_rows = [t for t in texts if t.startswith("Session: ")]
    assert session_rows and all(t.endswith("...") for t in session_rows)
    for row in menu._rows:
        width = row.node.calc_width(row.text) * 0.06
        assert width <= WIDTH - 0.16 + 1e-6
    menu.hide()
