"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import os

from game.core.scene import DEFAULT_SCENE, Scene, load_scene


def add_scene_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scene",
        default=str(DEFAULT_SCENE),
        metavar="FILE",
        help="scene preset (TOML); default: the embedded digits scene (scenes/digits.toml)",
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N", help="torch threads (default: all cores)"
    )


def scene_from_args(args: argparse.Namespace) -> Scene:
    return load_scene(args.scene)


def apply_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", 0) or (os.cpu_count() or 1)
    import torch

    torch.set_num_threads(threads)
