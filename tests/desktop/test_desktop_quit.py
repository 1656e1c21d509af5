"""Quitting ends the game, with ``--no-menu``: the window's close button (Ctrl+Q is the last test
of test_desktop_window.py, on the game the other tests used).

The close button is what a window manager sends (WM_DELETE_WINDOW). This test starts its own game
in a module of its own, so no other game's window is open meanwhile. The time to a closed window
and to the end of the process is printed (``-s``), not asserted: speed is measured in benchmarks;
here the process must just end.
"""

from __future__ import annotations

from desktop_helpers import quit_and_time


def test_the_close_button_ends_the_process(own_game, shoot):
    quit_and_time(own_game, lambda: own_game.x.close_window(own_game.window), shoot, "close button")
