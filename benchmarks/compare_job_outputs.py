"""How far two runs of ``bench_job_parts.py --save`` are apart, job by job (issue 17).

Run: ``.venv/bin/python benchmarks/compare_job_outputs.py A B`` where A and B are the ``--save``
prefixes of two runs with the same cards and rounds but another setting or tree (for example
``LATENT_REACH_HEAD_UPDATE=off``, the full pass, against the default). Printed per job: the largest feature
difference against the largest feature, the largest top-5 score difference, the share of cards
whose top-1 class differs and the largest position difference in metres: the quantities that
``replay --verify`` bounds (scores 1e-3, top-1 0.5 %, positions 5 cm).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    a, b = argv
    job = 1
    while Path(f"{a}-{job}.npz").exists() and Path(f"{b}-{job}.npz").exists():
        x, y = np.load(f"{a}-{job}.npz"), np.load(f"{b}-{job}.npz")
        features = float(np.abs(x["features"] - y["features"]).max())
        scale = float(np.abs(x["features"]).max())
        scores = float(np.abs(x["top5_scores"] - y["top5_scores"]).max())
        top1 = float(np.mean(x["top5_classes"][:, 0] != y["top5_classes"][:, 0]))
        moved = float(np.linalg.norm(x["positions"] - y["positions"], axis=1).max())
        print(
            f"job {job}: features {features:.3g} (largest {scale:.3g}, relative {features / max(scale, 1e-30):.2g}), "
            f"top-5 scores {scores:.3g}, top-1 differs on {100 * top1:.3f} % of cards, positions {moved:.3g} m"
        )
        job += 1
    if job == 1:
        print(f"no pair of {a}-1.npz and {b}-1.npz")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
