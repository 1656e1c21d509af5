"""How the orders in which suspects can be shown (``guidance.visit_priority``) differ, without
fine-tuning (issue 13's tenth session).

``--case NAME --seed N``: on a bench_suite case's base network, how many training cards by
suspicion are mislabelled before the first right label, and, of the mislabelled training cards
among the 10 nearest training cards (base features) of each misclassified held-out card, how many
the first 30 wrong labels of each order hold (what the simulated person would edit first if
nothing were rescored).

``--fixture``: the app's guidance-test setting (the embedded digits, network trained on clean
labels, 15 % of training labels flipped afterwards, noise seeds 1 and 2): wrong labels among the
first 10 and 30 cards each order shows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/visit_orders.py --case digits-1479 --seed 0
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/visit_orders.py --fixture
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # as bench_suite: one BLAS thread, set before numpy loads

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

ORDERS = ("suspicion", "spread", "disputed", "cluster", "disputed@10", "disputed@30")


def shown(details, labels, predictions, is_train, order: str) -> np.ndarray:
    from game.learning.guidance import top_suspects, visit_priority, within_top

    rule, _, window = order.partition("@")
    priority = visit_priority(details, labels, predictions, is_train, rule)
    if window:
        return within_top(details.scores, priority, int(window), exclude=~is_train)
    return top_suspects(priority, len(labels), exclude=~is_train)


def case_report(name: str, seed: int) -> None:
    import bench_edits
    import bench_suite

    from game.learning.guidance import suspicion

    case = next(c for c in bench_suite.CASES if c.name == name)
    base = bench_edits.build_base(bench_suite.case_args(case, seed, 30), bench_suite.make_data(case))
    ws, truth, flipped, is_train = base["workspace"], base["truth"], base["flipped"], base["is_train"]
    details = suspicion(ws.features, ws.labels, ws.n_classes, seed=seed)
    held, train = np.flatnonzero(~is_train), np.flatnonzero(is_train)
    wrong = held[ws.predictions[held] != truth[held]]
    feats = np.asarray(ws.features).reshape(len(truth), -1)
    near_errors: set[int] = set()
    for c in wrong:
        near = train[np.argsort(((feats[train] - feats[c]) ** 2).sum(1))[:10]]
        near_errors |= {int(n) for n in near if flipped[n]}
    by_suspicion = shown(details, ws.labels, ws.predictions, is_train, "suspicion")
    first_right = int(np.argmin(flipped[by_suspicion]))
    print(
        f"{name} seed {seed}: {int(flipped[train].sum())} mislabelled training cards; the first "
        f"{first_right} by suspicion are all mislabelled; {len(wrong)} held-out errors, "
        f"{len(near_errors)} mislabelled training cards among their 10 nearest"
    )
    for order in ORDERS:
        cards = shown(details, ws.labels, ws.predictions, is_train, order)
        edits = [int(c) for c in cards if flipped[c]][:30]
        looks = int(np.flatnonzero(np.isin(cards, edits[-1:]))[0]) + 1 if edits else 0
        print(
            f"  {order:12s}: first 30 wrong labels hold {len(near_errors & set(edits))} of those, "
            f"reached after {looks} looks"
        )


def fixture_report() -> None:
    from game.core.scene import load_scene
    from game.learning.guidance import inject_label_noise, suspicion
    from game.pipeline import open_scene

    ws = open_scene(load_scene(None), progress=False).workspace
    for seed in (1, 2):
        noisy, flipped = inject_label_noise(ws.labels, ws.n_classes, 0.15, seed=seed, mask=ws.is_train)
        details = suspicion(ws.features, noisy, ws.n_classes, seed=0)
        for order in ORDERS:
            cards = shown(details, noisy, ws.predictions, ws.is_train, order)[:30]
            print(
                f"noise seed {seed} {order:12s}: wrong labels among the first 10 shown "
                f"{int(flipped[cards[:10]].sum())}/10, first 30 {int(flipped[cards].sum())}/30"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="digits-1479")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixture", action="store_true", help="the guidance test's setting instead")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.fixture:
        fixture_report()
    else:
        case_report(args.case, args.seed)


if __name__ == "__main__":
    main()
