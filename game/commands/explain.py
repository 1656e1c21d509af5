"""``latent-reach explain``: a card's heat map (saliency, SmoothGrad, IG, guided, Grad-CAM,
occlusion) written as a PNG overlay, or several methods side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from game.commands._common import add_scene_argument, add_threads_argument, apply_threads, scene_from_args
from game.core.errors import UserError

NAME = "explain"
HELP = "write a card's explanation heat map (Grad-CAM, saliency, SmoothGrad, IG, guided, occlusion) as a PNG"
DESCRIPTION = (
    "Opens the scene's dataset and network (no layout needed), explains card N's prediction with the "
    "chosen attribution method(s) and writes the image with the heat map blended over it, enlarged "
    "with nearest-neighbour sampling for viewing. With --methods or --all, writes one picture with "
    "the original and each method side by side."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from game.explain.attribution import METHODS

    add_scene_argument(parser)
    parser.add_argument("--card", type=int, required=True, metavar="N", help="card (dataset image) index")
    parser.add_argument(
        "--method", default="gradcam", metavar="NAME", help=f"one of {', '.join(METHODS)} (default gradcam)"
    )
    parser.add_argument("--methods", default="", metavar="A,B,C", help="several methods side by side")
    parser.add_argument("--all", action="store_true", help="every method side by side")
    parser.add_argument(
        "--target",
        default=None,
        metavar="CLASS",
        help="class index or name to explain (default: the prediction)",
    )
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the picture")
    parser.add_argument(
        "--size",
        type=int,
        default=256,
        metavar="PX",
        help="enlarge a single map to at least this side (default 256)",
    )
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from game.explain.attribution import METHOD_TITLES, METHODS, Explainer, canonical_method
    from game.explain.cli_support import open_card, parse_target
    from game.explain.render import overlay, side_by_side, to_rgb, upscale

    apply_threads(args)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must end in .png, got {out}")
    try:
        if args.all:
            methods = list(METHODS)
        elif args.methods:
            methods = [canonical_method(m) for m in args.methods.split(",") if m.strip()]
        else:
            methods = [canonical_method(args.method)]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scene = scene_from_args(args)
    ctx = open_card(scene, args.card)
    target = parse_target(args.target, ctx.class_names, ctx.network.n_classes)
    explainer = Explainer(ctx.network)
    classes, scores = ctx.network.classify(ctx.image[None])
    exps = explainer.attribute_many(ctx.image, methods, target)
    if len(exps) == 1 and not (args.all or args.methods):
        picture = upscale(overlay(ctx.image, exps[0].heat), args.size)
    else:
        tiles = [("Original", to_rgb(ctx.image))] + [
            (METHOD_TITLES[e.method], overlay(ctx.image, e.heat)) for e in exps
        ]
        picture = side_by_side(tiles)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture, "RGBA").save(out)
    summary = {
        "card": ctx.index,
        "label": ctx.describe(int(ctx.dataset.labels[ctx.index])),
        "prediction": ctx.describe(int(classes[0, 0])),
        "target": ctx.describe(exps[0].target),
        "top5": [f"{ctx.describe(int(c))}: {s:.4f}" for c, s in zip(classes[0], scores[0], strict=True)],
        "methods": {e.method: round(e.seconds, 4) for e in exps},
        "out": str(out),
        "size": f"{picture.shape[1]}x{picture.shape[0]}",
    }
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0
