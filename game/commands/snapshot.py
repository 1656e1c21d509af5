"""``latent-reach snapshot``: render a scene offscreen (EGL) and write a screenshot."""

from __future__ import annotations

import argparse
from pathlib import Path

from game.commands._common import add_scene_argument, scene_from_args
from game.core.errors import UserError

NAME = "snapshot"
HELP = "render a scene offscreen and write a screenshot (no display needed)"
DESCRIPTION = (
    "Loads the scene, renders it offscreen through EGL with the default camera framing the whole "
    "cloud, optionally selects a card (its info panel shows), and writes a PNG."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the screenshot")
    parser.add_argument("--select", type=int, default=-1, metavar="N", help="select card N (shows its panel)")
    parser.add_argument("--size", default="1280x800", metavar="WxH", help="image size (default 1280x800)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from game.commands._offscreen import render_snapshot
    from game.pipeline import open_scene
    from game.world.offscreen import parse_size

    size = parse_size(args.size)
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"--out must end in .png or .jpg, got {out}")
    loaded = open_scene(scene_from_args(args), progress=not args.quiet)
    result = render_snapshot(loaded, out, size=size, select=args.select)
    print(
        f"wrote {result.path} ({size[0]}x{size[1]}, {result.cards} cards, {result.draw_calls} card draw call(s))"
    )
    return 0
