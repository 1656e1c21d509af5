"""First launch (train the small CNN, features, layout) and warm launch of the embedded default.

Each launch is a fresh process (`latent-reach project`) with its own cache folder: the first run
starts from an empty cache, the second reuses it.

    .venv/bin/python benchmarks/bench_launch.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def launch(cache: Path, out: Path, threads: int) -> float:
    env = dict(os.environ, LATENT_REACH_CACHE=str(cache), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "game", "project", "--out", str(out), "--quiet", "--threads", str(threads)]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "layout.npz"
        cold = launch(cache, out, args.threads)
        warm = launch(cache, out, args.threads)
    print(f"first launch (empty cache): {cold:6.2f} s   target < 15 s")
    print(f"warm launch (cached):       {warm:6.2f} s   target <  5 s")
    print(f"ratio cold / warm:          {cold / warm:6.2f}")


if __name__ == "__main__":
    main()
