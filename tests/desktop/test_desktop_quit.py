"""Quitting ends the game: Ctrl+Q and the window's close button, with ``--no-menu``.

Each test starts its own game (a quit cannot be undone) in a module of its own, so no other
game's window is open meanwhile. The time to a closed window and to the end of the process is
printed (``-s``), not asserted: speed is measured in benchmarks, here it must just end.
"""

from __future__ import annotations

import time

from desktop_helpers import GameProcess, focus, ready, wait_for


def _quit_and_time(game: GameProcess, quit, shoot, what: str) -> None:
    game.wait_report("the first view", ready, timeout=60)
    game.settled_screen()
    shoot(game, "open")
    t0 = time.monotonic()
    quit()
    wait_for("the window to close", lambda: not game.window_open() or None, timeout=60, interval=0.05)
    window_s = time.monotonic() - t0
    exit_s = window_s + game.wait_exit(timeout=60)
    assert game.proc.returncode == 0, game.log()
    print(f"\n{what}: window closed after {window_s:.2f} s, process exited after {exit_s:.2f} s")


def test_ctrl_q_closes_the_window_and_ends_the_process(own_game, shoot):
    focus(own_game)
    _quit_and_time(own_game, lambda: own_game.x.key("ctrl+q"), shoot, "Ctrl+Q")


def test_the_close_button_ends_the_process(own_game, shoot):
    _quit_and_time(own_game, lambda: own_game.x.close_window(own_game.window), shoot, "close button")
