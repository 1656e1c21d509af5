"""``latent-reach features --scene FILE --out STORE``: compute a scene's features on a Dask cluster.

Writes a feature store (see ``game/data/feature_store.py`` for the format): every card's features
from the scene's network and layer, its top-5, label and path, and the network's fingerprint. A
scene with ``[dataset] features = "STORE"`` then opens the store instead of computing features
and shows a seeded sample of at most ``[dataset] max_cards`` cards. With ``--scheduler`` the work
goes to a running cluster (image paths must be readable on its workers); with ``--workers N``
(the default, 2) a local cluster of N processes is started for the run. Needs the optional extra:
pip install 'latent-reach[cluster]'.
"""

from __future__ import annotations

import argparse
import time

from game.commands._common import add_scene_argument, scene_from_args
from game.core.errors import UserError

NAME = "features"
HELP = "compute a scene's features on a Dask cluster into a feature store (optional extra [cluster])"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument("--out", required=True, metavar="STORE", help="feature store folder to write")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="ADDRESS", default=None, help="a running Dask scheduler, e.g. tcp://host:8786"
    )
    where.add_argument(
        "--workers", type=int, default=2, metavar="N", help="start a local cluster of N workers (default 2)"
    )
    parser.add_argument("--block", type=int, default=256, metavar="N", help="images per task (default 256)")
    parser.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch threads per task (default 1)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="local cluster: workers as threads of this process (quick to start; tests, debugging)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from game.data.store_scene import cards_for_scene
    from game.nets import distributed as dist

    if args.block < 1 or args.threads < 1 or args.workers < 1:
        raise UserError("--block, --threads and --workers must be at least 1")
    dist.require_dask()
    scene = scene_from_args(args)
    if scene.dataset.features:
        raise UserError(f"{args.scene} already reads its features from {scene.dataset.features}")
    started = time.perf_counter()
    cards, network = cards_for_scene(scene, progress=not args.quiet)
    client = (
        dist.connect(args.scheduler)
        if args.scheduler
        else dist.local_client(args.workers, processes=not args.in_process)
    )
    try:
        store = dist.compute_feature_store(
            network,
            cards,
            args.out,
            client,
            block_size=args.block,
            meta={"dataset": {"kind": scene.dataset.kind, "path": scene.dataset.path}, "scene": scene.source},
            progress=None if args.quiet else dist.print_progress,
            threads_per_task=args.threads,
        )
    finally:
        dist.close_client(client)
    skipped = f", {len(store.skipped)} image(s) skipped (see skipped.csv)" if store.skipped else ""
    print(
        f"feature store {store.path}: {store.n_cards} cards x {store.features.shape[1]} features "
        f"({store.meta['arch']} layer {store.meta['layer']}){skipped} in {time.perf_counter() - started:.1f} s"
    )
    print(f'open it with a scene that sets [dataset] features = "{store.path}"')
    return 0
