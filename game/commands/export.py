"""``latent-reach export``: corrected labels, fine-tuned weights and the layout, for other tools."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from game.commands._common import add_threads_argument, apply_threads
from game.core.errors import UserError

NAME = "export"
HELP = "export labels (CSV), weights (safetensors) and the layout (TensorBoard Embedding Projector)"
DESCRIPTION = (
    "Exports a recorded session (replayed to its end) or a scene's workspace into --out: labels.csv "
    "(path, original and new label, time of the edit), weights.safetensors, and projector/ "
    "(tensors.tsv, metadata.tsv, sprite.png, projector_config.pbtxt) for TensorBoard's Embedding "
    "Projector. With --scene, --move CARD:CLASS applies edits first (one fine-tune per move)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", metavar="SESSION_OR_WORKSPACE", help="a session file (or its name) to export"
    )
    parser.add_argument("--scene", metavar="FILE", help="export a scene's workspace instead of a session")
    parser.add_argument(
        "--move",
        action="append",
        default=[],
        metavar="CARD:CLASS",
        help="with --scene: move card CARD into class CLASS (index or name) before exporting",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--no-features", action="store_true", help="leave out projector/features.tsv")
    parser.add_argument(
        "--no-fingerprint-check", action="store_true", help="export a session even if the dataset changed"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(parser)


def _export_scene(args: argparse.Namespace) -> int:
    from game.core.scene import load_scene
    from game.export import export_workspace
    from game.pipeline import open_scene

    loaded = open_scene(load_scene(args.scene), progress=not args.quiet)
    ws = loaded.workspace
    edit_times: dict[int, str] = {}
    if args.move:
        from game.learning.headless import apply_moves, parse_move

        moves = [parse_move(m, ws.class_names, ws.n_cards) for m in args.move]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        report = apply_moves(loaded, moves, together=False)
        for message in report.messages:
            print(message, file=sys.stderr)
        edit_times = {card: stamp for card, _ in moves}
    result = export_workspace(
        ws,
        loaded.models.network().module.state_dict(),  # the live version after the moves
        edit_times,
        args.out,
        include_features=not args.no_features,
        extra={"scene": loaded.scene.source},
    )
    print(result.summary())
    return 0


def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    if bool(args.source) == bool(args.scene):
        raise UserError("give either a session (SESSION_OR_WORKSPACE) or --scene FILE, not both or neither")
    if args.move and not args.scene:
        raise UserError("--move works with --scene (a session's edits are already in it)")
    if args.scene:
        return _export_scene(args)
    from game.export.session import export_session
    from game.sessions.paths import resolve_session

    path = resolve_session(args.source)
    result = export_session(path, Path(args.out), check_fingerprint=not args.no_fingerprint_check)
    print(result.summary())
    return 0
