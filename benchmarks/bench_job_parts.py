"""A head-only job's CPU seconds per part at N cards, in this process (issue 17, drop -> tween).

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python
benchmarks/bench_job_parts.py --cards 10000 --rounds 3`` (``flock /tmp/latent-reach-50k.lock`` from
20,000 cards). The job process's settings: torch and BLAS on one thread (the re-inference on
``stem.REINFER_THREADS``), the projector's ``n_jobs`` 1.

On ``bench_drop``'s cached setup (stem outputs, trained head, first layout), ``--rounds`` relabel
jobs in a row, each from the last one's network, features and layout (as the app chains them),
through ``run_finetune`` with a preview listener (the staged update). Printed per job: wall and CPU
seconds of the whole job and CPU seconds of its parts (this process, every thread), measured by
wrapping ``finetune``'s functions, so the same file runs on an older tree (copy it there, as
``bench_relayout``) for a before/after: prepare (``prepare_batch``, ``measure_scales``), train
(``make_optimiser``, ``train``, ``finish_training``), preview + re-inference (the preview's
functions and ``reinfer``: the preview's placement runs beside the re-inference since the tenth
session), re-layout (``relayout``). Where the two overlap, or the weights' bytes are made on a
thread beside them, their CPU falls in the part that runs meanwhile; the job's total does not.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_drop import build_setup  # noqa: E402
from bench_finetune import load_average  # noqa: E402

PARTS = {
    "prepare_batch": "prepare",
    "measure_scales": "prepare",
    "make_optimiser": "train",
    "train": "train",
    "finish_training": "train",
    "send_preview": "preview + infer",
    "start_preview": "preview + infer",
    "reinfer": "preview + infer",
    "relayout": "layout",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "latent-reach-bench-drop"))
    parser.add_argument(
        "--save",
        default="",
        help="write each job's features, top-5 scores and positions to SAVE-<job>.npz (to compare "
        "two settings' numbers: benchmarks/compare_job_outputs.py)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the job process's
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)

    import game.learning.finetune as finetune
    from game.core.events import EditQueued
    from game.layout.projector import LayoutState, Projector
    from game.learning.edits import cluster_geometry
    from game.learning.preview import prepare_features
    from game.learning.stem import prime_pre_activations

    cpu: dict[str, float] = {}

    def timed(part: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def run(*a: Any, **k: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[part] = cpu.get(part, 0.0) + time.process_time() - start

        return run

    for name, part in PARTS.items():
        if hasattr(finetune, name):
            setattr(finetune, name, timed(part, getattr(finetune, name)))

    scene, network, stem, labels, s = build_setup(args.cards, Path(args.cache))
    n, classes = args.cards, 6
    stem.preconditioned_inputs(s["is_train"])
    prime_pre_activations(network, n, stem)
    layout = LayoutState(
        s["embedding"], s["center"], float(s["scale"]), s["offset"], np.empty((0, 3)), int(s["pca_dims"])
    )
    layout.stretch, layout.neighbours = s["stretch"], s["neighbours"]
    layout.positions = layout.to_world(layout.embedding)
    projector = Projector(scene.layout, n_jobs=1)  # the job process's
    features, predictions = s["features"], s["top5_classes"][:, 0]
    prepare_features(features, projector)  # done while the person looks, as the backends do
    cfg = scene.learning
    labels = np.asarray(labels).copy()
    rng = np.random.default_rng(0)
    print(
        f"bench_job_parts: {n} cards, tree {ROOT}, load {load_average()}",
        flush=True,
    )
    for r in range(args.rounds):
        card = int(rng.choice(np.flatnonzero(s["is_train"] & (predictions == labels))))
        target = int((labels[card] + 1) % classes)
        centroids, radii = cluster_geometry(
            np.asarray(layout.positions, np.float64), labels, classes, cfg.cluster_percentile, exclude=card
        )
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        at = centroids[target] + direction * 0.15 * radii[target]
        edit = EditQueued(
            card=card,
            action="relabel",
            old_label=int(labels[card]),
            new_label=target,
            repeats=1,
            position=(float(at[0]), float(at[1]), float(at[2])),
        )
        previews: list[Any] = []
        req = finetune.FineTuneRequest(
            version=r + 1,
            network=network,
            images=np.empty((n, 0), np.uint8),
            labels=labels,
            is_train=s["is_train"],
            features=features,
            layout=layout,
            edits=[edit],
            config=cfg,
            projector=projector,
            n_classes=classes,
            stem=stem,
            seed=cfg.seed + r + 1,
            on_preview=previews.append,
        )
        cpu.clear()
        wall, start = time.perf_counter(), time.process_time()
        result = finetune.run_finetune(req)
        wall, total = time.perf_counter() - wall, time.process_time() - start
        print(
            f"job {r + 1}: wall {wall:.2f} s, CPU {total:.2f} s ("
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            + f"); {result.steps} steps, preview {'sent' if previews else 'none'}; load {load_average()}",
            flush=True,
        )
        if args.save:
            np.savez(
                f"{args.save}-{r + 1}.npz",
                features=result.inference.features,
                top5_scores=result.inference.top5_scores,
                top5_classes=result.inference.top5_classes,
                positions=np.asarray(result.layout.positions),
            )
        network, features, layout = result.network, result.inference.features, result.layout
        labels, predictions = result.labels, result.inference.top5_classes[:, 0]
        prepare_features(features, projector)  # the job process does this after answering
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
