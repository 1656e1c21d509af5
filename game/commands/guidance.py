"""``latent-reach suspects``: the cards whose label is most probably wrong, to look at first."""

from __future__ import annotations

import argparse
import json
import sys

from game.commands._common import add_scene_argument, add_threads_argument, apply_threads, scene_from_args
from game.core.errors import UserError

NAME = "suspects"
HELP = "list the cards whose label is most probably wrong (and the most ambiguous ones)"
DESCRIPTION = (
    "Scores every card's label with cross-validated self-confidence and k-NN label disagreement in "
    "the network's feature space, and prints the top --top suspects in the order the app shows them "
    "(--order; the default auto_partial: by suspicion, or disputed where the network took on some but "
    "fewer than half of the labels it suspects and tells its trusted labels apart). --noise F first "
    "flips a seeded fraction F of the training labels and reports how well the scores find them (AUROC)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument("--top", type=int, default=20, metavar="K", help="how many suspects to print")
    parser.add_argument(
        "--noise", type=float, default=0.0, metavar="F", help="flip this fraction of training labels first"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the folds and the injected noise")
    parser.add_argument(
        "--order",
        default=None,
        choices=("auto_partial", "auto", "suspicion", "disputed", "spread", "cluster"),
        help="the order of the suspects (default: the app's, guidance.APP_ORDER, auto_partial)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    from game.learning.guidance import (
        APP_ORDER,
        ambiguity_scores,
        auroc,
        auto_gates,
        decided_rule,
        inject_label_noise,
        suspicion,
        top_suspects,
        visit_priority,
    )
    from game.pipeline import open_scene

    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    if not 0.0 <= args.noise < 1.0:
        raise UserError(f"--noise must be in [0, 1), got {args.noise}")
    apply_threads(args)
    loaded = open_scene(scene_from_args(args), progress=not args.quiet)
    ws = loaded.workspace
    labels = ws.labels
    flipped = None
    if args.noise > 0:
        labels, flipped = inject_label_noise(labels, ws.n_classes, args.noise, args.seed, mask=ws.is_train)
    details = suspicion(ws.features, labels, ws.n_classes, seed=args.seed)
    scores = details.scores
    ambiguous = ambiguity_scores(ws.top5_scores)
    order = args.order or APP_ORDER
    rule = decided_rule(order, details, labels, ws.predictions, ws.is_train)
    gates = auto_gates(details, labels, ws.predictions, ws.is_train)
    top = top_suspects(visit_priority(details, labels, ws.predictions, ws.is_train, rule), args.top)
    names = ws.class_names
    rows = [
        {
            "card": int(i),
            "suspicion": round(float(scores[i]), 4),
            "ambiguity": round(float(ambiguous[i]), 4),
            "label": names[int(labels[i])],
            "predicted": names[int(ws.predictions[i])],
            "split": "train" if ws.is_train[i] else "heldout",
            "path": ws.sources[i],
            **({"injected": bool(flipped[i])} if flipped is not None else {}),
        }
        for i in top
    ]
    summary: dict[str, object] = {
        "cards": ws.n_cards,
        "feature_layer": ws.feature_layer,
        "order": rule,
        # Why (``guidance.auto_gates``): the two shares the automatic orders decide on.
        "taken_on": None if gates is None else round(gates[0], 4),
        "confused": None if gates is None else round(gates[1], 4),
        "suspects": rows,
    }
    if flipped is not None:
        train = ws.is_train
        summary["noise"] = args.noise
        summary["auroc"] = round(auroc(scores[train], flipped[train]), 4)
        summary["precision_at_top"] = round(float(flipped[top].mean()), 4)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    out = sys.stdout
    why = ""
    if order in ("auto", "auto_partial") and gates is not None:
        why = (
            f" ({order}: the network predicts the given label of {100 * gates[0]:.0f} % of the suspected "
            f"training cards and another class for {100 * gates[1]:.1f} % of the trusted ones)"
        )
    print(f"order: {rule}{why}", file=out)
    print(
        f"{'card':>6} {'suspicion':>9} {'ambig':>6}  {'label':<12} {'predicted':<12} split    path", file=out
    )
    for r in rows:
        mark = " *" if r.get("injected") else ""
        print(
            f"{r['card']:>6} {r['suspicion']:>9.3f} {r['ambiguity']:>6.3f}  {r['label']:<12} "
            f"{r['predicted']:<12} {r['split']:<8} {r['path']}{mark}",
            file=out,
        )
    if flipped is not None:
        print(
            f"injected noise {args.noise:.0%}: AUROC {summary['auroc']:.4f}, "
            f"{summary['precision_at_top']:.0%} of the top {len(top)} were flipped (*)",
            file=out,
        )
    return 0
