"""``latent-reach project``: dataset -> network -> features -> 3-D layout, written to a file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from game.commands._common import add_scene_argument, add_threads_argument, apply_threads, scene_from_args
from game.core.errors import UserError

NAME = "project"
HELP = "compute the 3-D layout of a scene without a window and write it to an .npz file"
DESCRIPTION = (
    "Loads the scene's dataset, builds (or trains, at first use) its network, computes features of the "
    "feature layer and top-5 predictions, and lays the images out in 3-D (PCA -> t-SNE -> metres). "
    "Writes positions, labels, top-5 and centroids to --out."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the layout")
    parser.add_argument("--no-cache", action="store_true", help="recompute the layout even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from game.pipeline import open_scene

    apply_threads(args)
    scene = scene_from_args(args)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out must end in .npz, got {out}")
    loaded = open_scene(scene, progress=not args.quiet, use_cache=not args.no_cache)
    ws = loaded.workspace
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        positions=ws.positions,
        labels=ws.labels,
        top5_classes=ws.top5_classes,
        top5_scores=ws.top5_scores,
        centroids=ws.centroids(),
        class_names=np.asarray(ws.class_names),
        sources=np.asarray(ws.sources),
        is_train=ws.is_train,
    )
    summary = {
        "scene": scene.scene.name,
        "cards": ws.n_cards,
        "classes": ws.n_classes,
        "feature_layer": ws.feature_layer,
        "feature_dims": int(ws.features.shape[1]),
        "heldout_accuracy": round(loaded.heldout_accuracy(), 4),
        "skipped_files": len(loaded.dataset.skipped),
        "seconds": {k: round(v, 3) for k, v in loaded.timings.items()},
        "out": str(out),
    }
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0
