"""Headless rendering helpers shared by ``snapshot``, ``run`` (without a display) and tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from game.core import events as ev


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x800"`` -> (1280, 800); a clear error otherwise."""
    from game.core.errors import UserError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 1280x800, not {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise UserError(f"--size {text}: each side must be between 16 and 8192 pixels")
    return w, h


@dataclass
class SnapshotResult:
    path: Path
    frame_ms: float
    draw_calls: int
    cards: int


def render_snapshot(loaded, out: str | Path, size=(1280, 800), select: int = -1, frames: int = 3):
    """Open an offscreen app on ``loaded``, optionally select a card, render and save ``out``."""
    from game.app import LatentReachApp
    from game.core.errors import UserError

    ws = loaded.workspace
    if select >= ws.n_cards:
        raise UserError(f"--select {select}: the scene has {ws.n_cards} cards (0..{ws.n_cards - 1})")
    app = LatentReachApp(loaded, offscreen=True, size=size, controls=False)
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
