"""How long re-inferring an AlexNet-shaped head over every card takes after a head-only fine-tune.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_reinfer.py [--rows 5000] [--cards 50000]``

After a fine-tune of fc7 + fc8 every card's fc7 features and scores change, so the drop -> tween
path must pass every card's stem output (fc6's 4,096 activations) through fc7 (4,096 x 4,096)
and fc8. This times that pass on ``--rows`` random rows with the process's torch threads and
scales it to ``--cards``: the floor under issue 17's "drop -> tween <= 3 s at 50k" on this
machine, whatever the layout costs on top.

``--rank R`` (default 200; 0: skip) also times what ``game.learning.head_update`` does instead
since: the kept fc7 pre-activations plus a rank-R update, ``Z + (X V) U^T``, then ReLU and fc8
(R: the rank of a job's fc7 change, 180-280 measured), on the same rows, scaled the same way.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows timed")
    parser.add_argument("--cards", type=int, default=50_000, help="card count to scale to")
    parser.add_argument("--width", type=int, default=4096, help="fc6/fc7 width (AlexNet: 4096)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many")
    parser.add_argument("--rank", type=int, default=200, help="rank of the low-rank update (0: skip)")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    head = torch.nn.Sequential(
        torch.nn.Linear(args.width, args.width), torch.nn.ReLU(), torch.nn.Linear(args.width, args.classes)
    ).eval()
    x = torch.randn(args.rows, args.width)
    best = float("inf")
    with torch.no_grad():
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            head(x)
            best = min(best, time.perf_counter() - t0)
    flop = 2.0 * args.rows * args.width * (args.width + args.classes)
    print(f"torch {torch.__version__}, {threads} threads, load {os.getloadavg()[0]:.1f}")
    print(
        f"fc7+fc8 over {args.rows} rows: {best:.3f} s ({flop / best / 1e9:.0f} GFLOP/s); "
        f"scaled to {args.cards} cards: {best * args.cards / args.rows:.1f} s"
    )
    if args.rank:
        fc7, fc8 = head[0], head[2]
        z = torch.randn(args.rows, args.width)
        u, v = torch.randn(args.width, args.rank), torch.randn(args.width, args.rank)
        low = float("inf")
        with torch.no_grad():
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                new = torch.addmm(z, x @ v, u.T) + fc7.bias
                fc8(torch.relu(new))
                low = min(low, time.perf_counter() - t0)
        print(
            f"kept fc7 pre-activations + rank-{args.rank} update, ReLU, fc8 over {args.rows} rows: "
            f"{low:.3f} s; scaled to {args.cards} cards: {low * args.cards / args.rows:.1f} s "
            f"({best / low:.1f}x less)"
        )


if __name__ == "__main__":
    main()
