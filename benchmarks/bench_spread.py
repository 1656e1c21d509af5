"""Memory and time of the features' spread that every fine-tune measures (``finetune._spread``).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_spread.py [--cards 50000] [--dims 4096]``

The job process measures the spread of every card's features before training. At 50k cards x
4,096 the one-block float64 expression it used took a 1.6 GB copy plus temporaries; the blocked
sum replaces it above ``SPREAD_WHOLE_BELOW`` elements. Both are run on the same array here, with
numpy's allocations traced (``tracemalloc``), and must give the same value.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from game.learning import finetune  # noqa: E402


def one_block(x: np.ndarray) -> float:
    """The expression the spread used before (kept for arrays below the threshold)."""
    x64 = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(((x64 - x64.mean(0)) ** 2).sum(1).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=50_000)
    parser.add_argument("--dims", type=int, default=4096)
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(args.cards, args.dims)).astype(np.float32)
    print(f"{args.cards} x {args.dims} float32 features, load {os.getloadavg()[0]:.1f}")
    for name, fn in (("one float64 block (before)", one_block), ("float64 blocks of rows", finetune._spread)):
        tracemalloc.start()
        t0 = time.perf_counter()
        value = fn(x)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:28s} spread {value:.6f}  {seconds:5.2f} s  peak extra {peak / 2**20:6.0f} MiB")


if __name__ == "__main__":
    main()
