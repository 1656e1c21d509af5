"""``latent-reach whatif``: inpaint a rectangle of a card's image and print the top-5 before and after."""

from __future__ import annotations

import argparse
from pathlib import Path

from game.commands._common import add_scene_argument, add_threads_argument, apply_threads, scene_from_args
from game.core.errors import UserError

NAME = "whatif"
HELP = "inpaint part of a card's image and print the network's top-5 before and after"
DESCRIPTION = (
    "Fills the rectangle --mask x0,y0,x1,y1 (pixels; x to the right, y down; x1 and y1 exclusive) of "
    "card N's image from its surroundings (OpenCV inpainting: Telea by default, Navier-Stokes with "
    "--method ns), classifies the edited image and prints the top-5 before and after. --out writes the "
    "edited image (PNG, the image's own size)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument("--card", type=int, required=True, metavar="N", help="card (dataset image) index")
    parser.add_argument("--mask", required=True, metavar="X0,Y0,X1,Y1", help="rectangle to inpaint")
    parser.add_argument("--method", default="telea", choices=["telea", "ns"], help="inpainting algorithm")
    parser.add_argument(
        "--radius", type=float, default=3.0, metavar="PX", help="inpainting neighbourhood radius"
    )
    parser.add_argument("--out", default="", metavar="FILE.png", help="write the edited image here")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from game.explain.cli_support import open_card, parse_mask
    from game.explain.whatif import whatif

    apply_threads(args)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() != ".png":
        raise UserError(f"--out must end in .png, got {out}")
    scene = scene_from_args(args)
    ctx = open_card(scene, args.card)
    mask = parse_mask(args.mask, ctx.image.shape[:2])
    result = whatif(ctx.network, ctx.image, mask, method=args.method, radius=args.radius)
    h, w = ctx.image.shape[:2]
    print(
        f"card {ctx.index} ({w}x{h}), label {ctx.describe(int(ctx.dataset.labels[ctx.index]))}, "
        f"mask {args.mask} ({int(mask.sum())} pixels), {args.method}"
    )
    print(result.table(ctx.class_names))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        edited = result.edited
        Image.fromarray(edited[:, :, 0] if edited.shape[2] == 1 else edited).save(out)
        print(f"edited image: {out}")
    return 0
