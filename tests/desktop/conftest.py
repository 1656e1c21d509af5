"""Fixtures for the real-window tests: one Xvfb for the session, the game in its own process.

The tests skip, saying why, only when Xvfb, xdotool or xwd are not installed (scripts/bootstrap.sh
installs them; so does CI). The app inherits the suite's environment (tests/conftest.py): the
trained-model and layout cache, Panda3D's model cache, Mesa's shader cache and one torch thread,
so the small CNN trains once per run however many apps start.

Screenshots of every test go to ``$LATENT_REACH_DESKTOP_SHOTS`` if set, else to a ``desktop-shots``
folder in pytest's temporary directory (its path is printed with ``-s``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from desktop_helpers import GameProcess, VirtualDisplay, missing_tools, save_png


@pytest.fixture(scope="session")
def display():
    if not sys.platform.startswith("linux"):
        pytest.skip("real-window tests run on Linux (Xvfb)")
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"real-window tests need {', '.join(missing)} (Debian packages xvfb, xdotool, x11-apps; "
            "scripts/bootstrap.sh installs them)"
        )
    d = VirtualDisplay()
    yield d
    d.close()


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory) -> Path:
    env = os.environ.get("LATENT_REACH_DESKTOP_SHOTS")
    folder = Path(env) if env else tmp_path_factory.mktemp("desktop-shots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndesktop screenshots: {folder}")
    return folder


@pytest.fixture
def shoot(request, shots_dir):
    """``shoot(game, name)``: a screenshot of the screen, saved as ``TEST-name.png``, returned."""
    counter = [0]

    def take(game: GameProcess, name: str):
        img = game.x.screenshot()
        counter[0] += 1
        save_png(img, shots_dir / f"{request.node.name}-{counter[0]:02d}-{name}.png")
        return img

    return take


@pytest.fixture(scope="module")
def _shared_games(display, tmp_path_factory):
    started: list[GameProcess] = []
    yield started
    for g in started:
        g.close()


@pytest.fixture
def game(display, tmp_path_factory, _shared_games):
    """The game window shared by a module's tests; a new one when a test has quit the last.

    After each test the mouse button is let go and a card left in the hand is put back (Esc), so
    a test that failed mid-drag leaves the next one a usable game.
    """
    if not _shared_games or _shared_games[-1].proc.poll() is not None:
        g = GameProcess(display, tmp_path_factory.mktemp("game"))
        print(f"\nwindow mapped {g.mapped_after:.1f} s after launch")
        _shared_games.append(g)
    g = _shared_games[-1]
    yield g
    if g.proc.poll() is None:
        g.reset_input()


@pytest.fixture
def own_game(display, tmp_path):
    """A game window for one test (one that quits it)."""
    g = GameProcess(display, tmp_path / "game")
    yield g
    g.close()
