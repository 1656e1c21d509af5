"""Headless snapshots of a scene (``snapshot``, ``run`` without a display, tests).

Here, not in ``game.world``: it opens an app through ``game.assembly``, and the world package
stays below the app (the app imports the world, never the other way round).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from game.core import events as ev

if TYPE_CHECKING:
    from game.pipeline import LoadedScene


@dataclass
class SnapshotResult:
    path: Path
    frame_ms: float
    draw_calls: int
    cards: int


def render_snapshot(
    loaded: LoadedScene,
    out: str | Path,
    size: tuple[int, int] = (1280, 800),
    select: int = -1,
    frames: int = 3,
) -> SnapshotResult:
    """Open an offscreen app on ``loaded``, optionally select a card, render and save ``out``."""
    from game.assembly import open_game
    from game.core.errors import UserError

    ws = loaded.workspace
    if select >= ws.n_cards:
        raise UserError(f"--select {select}: the scene has {ws.n_cards} cards (0..{ws.n_cards - 1})")
    app = open_game(loaded, offscreen=True, size=size).app
    try:
        if select >= 0:
            ws.post(ev.CardSelected(card=select, hand="snapshot"))
        app.step(0.0)
        t0 = time.perf_counter()
        for _ in range(frames):
            app.step(1.0 / 60.0)
        frame_ms = 1000 * (time.perf_counter() - t0) / max(frames, 1)
        path = app.screenshot(out)
        return SnapshotResult(path, frame_ms, app.world.cards.draw_calls, ws.n_cards)
    finally:
        app.destroy()
