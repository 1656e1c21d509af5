"""``latent-reach edit``: move cards and fine-tune without a window, then report what changed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from game.commands._common import add_scene_argument, add_threads_argument, apply_threads, scene_from_args
from game.core.errors import UserError

if TYPE_CHECKING:
    from game.learning.headless import MoveReport, MovesReport

NAME = "edit"
HELP = "move cards into classes and fine-tune the network headless; print what each move did"
DESCRIPTION = (
    "Drops each card given with --move CARD:CLASS at that class's centroid (through the same events "
    "as the game), runs the fine-tune job, and prints per move: old and new label, the prediction, "
    "held-out accuracy before and after, where the card ended and whether that is nearest the target "
    "centroid, and how many of their 10 nearest neighbours the other cards kept."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument(
        "--move",
        action="append",
        required=True,
        metavar="CARD:CLASS",
        help="card index and target class (name or index); repeat for several moves",
    )
    parser.add_argument(
        "--separately", action="store_true", help="one fine-tune per move instead of one job for all"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(parser)


def landing(m: MoveReport, target: str) -> str:
    """Where the card ended, judged against the class the person asked for (``target``).

    The drop is read by the nearest centroid at the drop position, which may not be the requested
    class when clusters overlap (then the card was relabelled to that class, not ``target``); the
    job's own "ended nearest its edit's class" must not be reported as "not the target" for a card
    that ended in the requested cluster.
    """
    where = "the target" if m.nearest_class == target else f"NOT the target {target}"
    if m.action != "none" and m.new_label != target:
        where += f"; the drop was read as {m.action} to {m.new_label}"
    elif m.action == "none":
        where += "; the drop was not trained"
    return where


def move_line(m: MoveReport, target: str) -> str:
    """One report line per move."""
    x, y, z = m.final_position
    return (
        f"card {m.card}: {m.action} {m.old_label} -> {m.new_label} (repeats {m.repeats}); "
        f"predicted {m.predicted_before} -> {m.predicted_after}; "
        f"held-out accuracy {100 * m.heldout_before:.2f}% -> {100 * m.heldout_after:.2f}%; "
        f"ended at ({x:.2f}, {y:.2f}, {z:.2f}), nearest centroid {m.nearest_class} "
        f"({landing(m, target)}); "
        f"other cards kept {100 * m.neighbours_kept:.1f}% of their 10 nearest neighbours; "
        f"model v{m.version}, {m.steps} steps, {m.seconds:.2f} s"
    )


def report_dict(report: MovesReport, targets: list[str]) -> dict[str, Any]:
    """The JSON report: per move also the requested ``target`` and whether the card ended nearest
    it (``ended_nearest_target`` is judged against the requested class, as printed)."""
    d = report.to_dict()
    for move, m, target in zip(d["moves"], report.moves, targets, strict=True):
        move["target"] = target
        move["ended_nearest_edit_label"] = m.ended_nearest_target
        move["ended_nearest_target"] = m.nearest_class == target
    return d


def run(args: argparse.Namespace) -> int:
    from game.learning.headless import apply_moves, parse_move
    from game.pipeline import open_scene

    apply_threads(args)
    scene = scene_from_args(args)
    if args.json and Path(args.json).is_dir():
        raise UserError(f"--json {args.json} is a folder; give a file name")
    # Validate the moves against the dataset before the (slower) network and layout.
    from game.data.dataset import load_dataset

    data = load_dataset(scene, progress=not args.quiet)
    moves = [parse_move(m, list(data.class_names), len(data.labels)) for m in args.move]
    loaded = open_scene(scene, progress=not args.quiet)
    report = apply_moves(loaded, moves, together=not args.separately)
    targets = [data.class_names[t] for _, t in moves]
    for m, target in zip(report.moves, targets, strict=True):
        print(move_line(m, target))
    for text in report.messages:
        print(f"note: {text}", file=sys.stderr)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report_dict(report, targets), indent=2), encoding="utf-8")
    failed = any("failed" in t.lower() for t in report.messages)
    return 1 if failed else 0
