"""Which held-out cards of a bench_suite case are wrong before and after the simulated person's
edits, and what their nearest training cards look like (issue 13: why a case's gain is short).

For each held-out card misclassified before or after: its true class, the prediction before and
after, and of its 10 nearest training cards (the base network's features) how many carry a wrong
label and how many the person edited. Full method, default settings, one thread (as bench_suite).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/suite_errors.py --case digits-1479 --seed 0
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # as bench_suite: one BLAS thread, set before numpy loads

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_edits  # noqa: E402
import bench_suite  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="digits-1479")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-edits", type=int, default=30)
    args_in = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    case = next(c for c in bench_suite.CASES if c.name == args_in.case)
    args = bench_suite.case_args(case, args_in.seed, args_in.max_edits)
    base = bench_edits.build_base(args, bench_suite.make_data(case))
    captured: dict[str, Any] = {}
    fresh = bench_edits.fresh_loaded

    def keep(base: dict[str, Any], learning: dict[str, Any] | None = None) -> Any:
        captured["loaded"] = fresh(base, learning)
        return captured["loaded"]

    bench_edits.fresh_loaded = keep  # the simulated person's workspace, to read its end state
    ws0 = base["workspace"]
    truth, flipped, is_train = base["truth"], base["flipped"], base["is_train"]
    before = ws0.predictions.copy()
    run = bench_edits.simulate(base, args, None, 1, f"{case.name}/s{args_in.seed}")
    ws = captured["loaded"].workspace
    held = np.flatnonzero(~is_train)
    train = np.flatnonzero(is_train)
    edited = np.asarray(run["edited"], dtype=np.int64)
    wrong0 = held[before[held] != truth[held]]
    wrong1 = held[ws.predictions[held] != truth[held]]
    print(
        f"{case.name} seed {args_in.seed}: held-out {len(held)}, wrong before {wrong0.tolist()}, after {wrong1.tolist()}"
    )
    feats = np.asarray(ws0.features).reshape(len(truth), -1)
    for c in sorted(set(wrong0.tolist()) | set(wrong1.tolist())):
        near = train[np.argsort(((feats[train] - feats[c]) ** 2).sum(1))[:10]]
        print(
            f"  card {c}: truth {truth[c]}, predicted {before[c]} -> {ws.predictions[c]}; 10 nearest training "
            f"cards: labels {ws0.labels[near].tolist()}, truth {truth[near].tolist()}, "
            f"mislabelled {int(flipped[near].sum())}, edited {int(np.isin(near, edited).sum())}"
        )
    left = int(np.sum(ws.labels[train] != truth[train]))
    print(
        f"  mislabelled training cards: {int(flipped[train].sum())} before, {left} after {len(edited)} edits"
    )


if __name__ == "__main__":
    main()
