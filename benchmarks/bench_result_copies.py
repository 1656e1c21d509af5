"""Peak RSS of the whole-result copies fixed for issue 17: ``Network.infer``, ``compute_stem_cache``
and the preparation's float64 gather of the training rows, against the old join / gather.

Run one mode per process (peak RSS is per process):
``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_result_copies.py MODE [--cards 20000]``
with MODE one of infer_old, infer_new, stem_old, stem_new, prep_old, prep_new, prepare_old,
prepare_new, reinfer_old, reinfer_new.

AlexNet-shaped network at 64 px input (random weights, seeded), random 64x64 RGB images,
4,096-d fc7; the prep modes use random 4,096-d rows, 80 % training. "old" is the code before the
fix written out here (a list of batches joined, ``.astype``; ``torch.cat``; the float32 gather
then ``.double()``), "new" the library's current function. Prints the peak RSS rise over the
RSS just before the call.

``prepare_*`` (2026-12-02 16:55): the fine-tune preparation's work on the stem outputs
(``StemCache.preconditioned_inputs``: derived damping, preconditioner, preconditioned inputs).
"old" sets ``BLOCKED_NUMBERS`` and ``KEEP_PRECONDITIONED_NUMBERS`` out of reach, which is the
code before the blocked sums (every training row in float64 at once, the (N x D) preconditioned
inputs kept); "new" is the library's current thresholds.

``reinfer_*`` (2026-12-02 17:00): a head-only job's re-inference (``Runner.infer_all``) by the
low-rank update from the primed start network (fc7 pre-activations kept), on random 4,096-d stem
outputs; the weight change is of rank 64. "old" keeps the base's array and writes a new one
(what the code did before: ``PreActivationCache.newest`` answers None here, which is the only
condition of the in-place path), "new" writes over the base's array.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from game.learning import head_update  # noqa: E402
from game.learning import stem as stem_mod  # noqa: E402
from game.learning.stem import (  # noqa: E402
    Runner,
    StemCache,
    compute_stem_cache,
    prime_pre_activations,
    rows_float64,
)
from game.nets.architectures import AlexNet  # noqa: E402
from game.nets.network import Inference, Network, top_k  # noqa: E402

MODES = (
    "infer_old",
    "infer_new",
    "stem_old",
    "stem_new",
    "prep_old",
    "prep_new",
    "prepare_old",
    "prepare_new",
    "reinfer_old",
    "reinfer_new",
)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def old_infer(net: Network, images: np.ndarray, batch: int = 256) -> Inference:
    feats, logits_all = [], []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            lg, f = net.forward_with_features(net.preprocess(images[s : s + batch]))
            feats.append(f.float().numpy())
            logits_all.append(lg.float().numpy())
    all_logits = np.concatenate(logits_all).astype(np.float32)
    return Inference(np.concatenate(feats).astype(np.float32), *top_k(all_logits), all_logits)


def old_stem(net: Network, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    head = net.module.classifier
    handle = head[4].register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach()))
    with torch.no_grad():
        for s in range(0, len(images), batch):
            net.module(net.preprocess(images[s : s + batch]))
    handle.remove()
    return torch.cat(captured).float().contiguous()


def primed_runner(net: Network, x: torch.Tensor, old: bool) -> Runner:
    """A job's runner after training: the start network's pre-activations primed (kept), the
    first head layer changed by a rank-64 update (what a job's preconditioned steps make)."""
    stem = StemCache(4, x)  # AlexNet's classifier[4] is fc7: its inputs are the stem's outputs
    prime_pre_activations(net, len(x), stem)
    if old:
        head_update.cache_for(stem).newest = lambda: None  # type: ignore[method-assign]
    runner = Runner(net, np.empty((len(x), 0), np.uint8), stem, full=False)
    fc7 = net.module.classifier[4]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        fc7.weight += torch.randn(4096, 64, generator=gen) @ torch.randn(64, 4096, generator=gen) * 1e-3
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--cards", type=int, default=20000)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = Network(AlexNet(n_classes=10), "alexnet", 10, 3, 64, "fc7", "imagenet")
    rng = np.random.default_rng(0)
    if args.mode.startswith(("prep", "reinfer")):  # prep_*, prepare_*, reinfer_*
        x = torch.relu(torch.randn(args.cards, 4096))
        is_train = rng.random(args.cards) < 0.8
    else:
        images = rng.integers(0, 256, size=(args.cards, 64, 64, 3), dtype=np.uint8)
    net.infer(np.zeros((8, 64, 64, 3), np.uint8))  # torch's first-pass allocations, not counted
    runner = None
    if args.mode.startswith("reinfer"):
        runner = primed_runner(net, x, old=args.mode == "reinfer_old")
    base, t0 = rss_mb(), time.perf_counter()
    if runner is not None:
        runner.infer_all()
        print(f"low-rank update of rank {runner.last_infer_low_rank}")
    if args.mode == "infer_old":
        old_infer(net, images)
    elif args.mode == "infer_new":
        net.infer(images)
    elif args.mode == "stem_old":
        old_stem(net, images)
    elif args.mode == "stem_new":
        compute_stem_cache(net, images, 2, use_cache=False)
    elif args.mode == "prep_old":
        x[torch.from_numpy(np.flatnonzero(is_train))].double()
    elif args.mode == "prep_new":
        rows_float64(x, is_train)
    elif args.mode.startswith("reinfer"):
        pass  # below: the priming pass is before the measured call
    else:
        if args.mode == "prepare_old":  # every training row in float64 at once, (N x D) kept
            stem_mod.BLOCKED_NUMBERS = stem_mod.KEEP_PRECONDITIONED_NUMBERS = 1 << 62
        stem = StemCache(0, x)
        stem.preconditioned_inputs(is_train)  # the derived damping, the preconditioner, (x P)
        print(f"damping {stem.damping:.6g}, preconditioned kept: {stem.preconditioned is not None}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.mode} cards={args.cards} rss_before={base:.0f} MB peak={peak:.0f} MB "
        f"rise={peak - base:.0f} MB {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
