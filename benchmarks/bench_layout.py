"""Projection of the embedded default, ours (PCA -> openTSNE 3-D -> metres) vs scikit-learn's TSNE.

Both run on the same features in the same process, so the ratio holds even on a busy machine.
Prints each one's time and its 10-NN agreement with the 50-d PCA space (how well the layout keeps
each image's neighbours).

    .venv/bin/python benchmarks/bench_layout.py [--threads 2] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from game.layout.projector import Projector, neighbour_agreement
    from game.pipeline import open_scene

    torch.set_num_threads(args.threads)
    loaded = open_scene(progress=False)
    features = loaded.workspace.features
    reference = PCA(n_components=50, random_state=0).fit_transform(features)
    projector = Projector(loaded.scene.layout, n_jobs=args.threads)

    ours_times, ours_state = [], None
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours_state = projector.fit(features)
        ours_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    sk = TSNE(n_components=3, random_state=0, n_jobs=args.threads, init="pca").fit_transform(features)
    sk_time = time.perf_counter() - t

    ours = float(np.median(ours_times))
    result = {
        "cards": len(features),
        "feature_dims": int(features.shape[1]),
        "threads": args.threads,
        "ours_seconds": round(ours, 3),
        "sklearn_seconds": round(sk_time, 3),
        "speedup": round(sk_time / ours, 2),
        "ours_knn10_vs_pca50": round(neighbour_agreement(reference, ours_state.positions), 4),
        "sklearn_knn10_vs_pca50": round(neighbour_agreement(reference, sk), 4),
    }
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
