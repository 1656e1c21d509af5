"""A head-only job's re-inference and re-layout at N cards, part by part (issue 17 item 2).

Run: ``OMP_NUM_THREADS=1 flock /tmp/latent-reach-50k.lock nice -n 10 .venv/bin/python
benchmarks/bench_relayout.py --cards 50000 --rounds 3`` (the job process's threads: torch and BLAS
on one, the re-inference on ``stem.REINFER_THREADS``, the projector's ``n_jobs`` 2).

On ``bench_drop``'s cached setup: per round, fc7's weight changed by rank ``--rank`` (what a
head-only job makes), then what ``run_finetune`` does after training, timed apart: the
re-inference (``Runner.infer_all``, each batch's features reduced in the layout's PCA on its own
thread where this tree has ``RowProjection``), then ``Projector.update_local`` of the result with
the edited card moved, and its parts run alone on the same arrays: the new features' PCA
transform (skipped by the update where the re-inference reduced them), the neighbour step
(``neighbours_from_graph``) and the partial t-SNE of the moved cards (``_place_partial``).
Feature-detected, so the same file runs on an older tree (copy it there) for a before/after.
Printed: wall / CPU seconds of this process (all threads) and the load average.
"""

from __future__ import annotations

import argparse
import inspect
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


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> str:
    """Wall / CPU seconds since ``start`` (this process, all threads)."""
    return f"{time.perf_counter() - start[0]:.2f}/{time.process_time() - start[1]:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank", type=int, default=210)
    parser.add_argument(
        "--chain",
        action="store_true",
        help="each round starts from the last round's layout and features (as jobs chain), so the "
        "neighbour step can skip the cards its gaps settle (from the second round)",
    )
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "latent-reach-bench-drop"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the job process's
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # the job process's BLAS (OMP_NUM_THREADS=1 there)

    from game.layout import projector as projector_module
    from game.layout.projector import LayoutState, Projector, neighbours_from_graph
    from game.learning.preview import prepare_features
    from game.learning.stem import Runner, prime_pre_activations

    scene, network, stem, _labels, s = build_setup(args.cards, Path(args.cache))
    n = args.cards
    prime_pre_activations(network, n, stem)
    layout = LayoutState(
        s["embedding"], s["center"], float(s["scale"]), s["offset"], np.empty((0, 3)), int(s["pca_dims"])
    )
    layout.stretch, layout.neighbours = s["stretch"], s["neighbours"]
    layout.positions = layout.to_world(layout.embedding)
    base = s["features"]
    projector = Projector(scene.layout, n_jobs=2)
    prepare_features(base, projector)  # done while the person looks, as the backends do
    fused = hasattr(projector_module, "RowProjection")
    graph_threads = "threads" in inspect.signature(neighbours_from_graph).parameters
    cfg = scene.learning
    print(
        f"bench_relayout: {n} cards, tree {ROOT}, fused projection {fused}, load {load_average()}",
        flush=True,
    )
    gen = torch.Generator().manual_seed(0)
    net = network
    for r in range(args.rounds):
        # Each round's network from the last (as jobs chain): its kept pre-activations are the base.
        net = net.clone(share=[k for k, _ in net.module.named_parameters() if not k.startswith("classifier")])
        runner = Runner(net, np.empty((n, 0), np.uint8), stem, False)
        with torch.no_grad():
            change = torch.randn(4096, args.rank, generator=gen) @ torch.randn(args.rank, 4096, generator=gen)
            net.module.classifier[4].weight += change * (1e-3 / args.rank**0.5)
        card = 100 + r
        rows = None
        t = clock()
        if fused:
            basis = projector.local_basis(layout, base)
            rows = projector_module.RowProjection(basis, n) if basis is not None else None
            inference = runner.infer_all(rows_out=rows)
        else:
            inference = runner.infer_all()
        infer = since(t)
        new = inference.features
        kwargs: dict[str, Any] = {"projected": rows.reduction()} if rows is not None else {}
        t = clock()
        state = projector.update_local(
            new,
            layout,
            base,
            keep=cfg.relayout_keep,
            move=np.array([card]),
            iterations=cfg.layout_iterations,
            **kwargs,
        )
        update = since(t)
        prior = projector.base_reduction(layout, base)
        t = clock()
        reduced = prior.transform(new)
        pca = since(t)
        extra = (projector.n_jobs,) if graph_threads else ()
        t = clock()
        neighbours_from_graph(reduced, prior.reduced, layout.neighbours, 10, *extra)
        graph = since(t)
        skipped = ""
        gaps = getattr(layout, "neighbour_gaps", None)
        if gaps is not None:
            t = clock()
            step = projector_module.graph_step(
                reduced, prior.reduced, layout.neighbours, 10, 2, gaps, cfg.relayout_keep, np.array([card])
            )
            skipped = f", with the gaps {since(t)} ({step.settled.mean():.1%} of the cards settled)"
        moved = np.asarray(state.moved, dtype=bool)
        free, held = np.flatnonzero(moved), np.flatnonzero(~moved)
        t = clock()
        projector._place_partial(
            reduced[free], reduced[held], layout.embedding[held], 10, cfg.layout_iterations, 10.0
        )
        place = since(t)
        print(
            f"round {r + 1}: re-inference {infer} s (rank {runner.last_infer_low_rank}), "
            f"update_local {update} s ({len(free)} cards moved); alone: PCA transform {pca}, "
            f"neighbour step {graph}{skipped}, partial t-SNE {place} s (wall/CPU); load {load_average()}",
            flush=True,
        )
        if args.chain:
            layout, base = state, new
        del inference, new, reduced, state
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
