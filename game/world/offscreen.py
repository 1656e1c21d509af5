"""Headless rendering helpers: ``--size`` parsing (the snapshot itself is ``commands._offscreen``,
which opens an app: the world package stays below the app)."""

from __future__ import annotations


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
