"""Explanation speed at batch 1: every method on the small CNN (digits, 8x8) and on an
AlexNet-shaped network (random weights, 224x224), torch limited to 2 threads.

Targets (issue 6): Grad-CAM <= 30 ms and SmoothGrad (25 samples) <= 0.5 s on AlexNet; inpaint +
re-classify <= 30 ms on the small CNN and <= 50 ms on AlexNet.

Each figure is the median of several calls after a warm-up. Peers measured in the same run, so
ratios hold even on a busy machine:
  * forward      - one plain forward pass (no_grad)
  * fwd+bwd      - forward + backward to the input, hand-written (what saliency costs at least)
  * cam by hand  - forward with a hook on the last conv + backward to it (minimal Grad-CAM)
  * 25x fwd+bwd  - one batch of 25 noisy copies, forward + backward (minimal SmoothGrad)
  * classify     - Network.classify of one image (what-if's re-classification alone)

    .venv/bin/python benchmarks/bench_explain.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from game.explain.attribution import METHODS, Explainer  # noqa: E402
from game.explain.class_model import ClassModelOptions, class_model  # noqa: E402
from game.explain.pixels import PixelModel, image_to_tensor  # noqa: E402
from game.explain.whatif import inpaint, rect_mask, whatif  # noqa: E402
from game.nets.architectures import AlexNet, SmallCNN, resolve_layer  # noqa: E402
from game.nets.network import Network  # noqa: E402

TARGETS_MS = {
    ("alexnet", "gradcam"): 30.0,
    ("alexnet", "smoothgrad"): 500.0,
    ("alexnet", "smoothgrad (bf16)"): 500.0,
    ("small_cnn", "whatif"): 30.0,
    ("alexnet", "whatif"): 50.0,
}


def timeit(
    fn: Callable[[], object], min_reps: int = 3, budget_s: float = 2.0, warmup: int = 1
) -> tuple[float, float]:
    """(median, best) seconds of ``fn`` over at least ``min_reps`` calls (more while under ``budget_s``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def paired(
    fn: Callable[[], object], peer: Callable[[], object], min_reps: int = 5, budget_s: float = 2.0
) -> tuple[float, float, float]:
    """Alternate ``fn`` and ``peer`` call by call: median and best of ``fn``, median per-pair ratio.

    Alternating makes the ratio robust to other work on the machine (it hits both alike)."""
    fn(), peer()
    a: list[float] = []
    b: list[float] = []
    start = time.perf_counter()
    while len(a) < min_reps or (time.perf_counter() - start < budget_s and len(a) < 40):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        peer()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return statistics.median(a), min(a), statistics.median(x / y for x, y in zip(a, b, strict=True))


def peers(explainer: Explainer, image: np.ndarray, target: int) -> dict[str, Callable[[], object]]:
    model: PixelModel = explainer.model
    x = image_to_tensor(image)
    _, layer = resolve_layer(explainer.network.module, explainer.gradcam_layer_name)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        xi = x.clone().requires_grad_(True)
        model(xi)[0, target].backward()

    def cam_by_hand() -> None:
        acts: list[torch.Tensor] = []

        def hook(_m: object, _i: object, out: torch.Tensor) -> torch.Tensor:
            out = out.detach().requires_grad_(True)
            acts.append(out)
            return out

        h = layer.register_forward_hook(hook)
        try:
            score = model(x)[0, target]
        finally:
            h.remove()
        (g,) = torch.autograd.grad(score, acts[0])
        torch.relu((g.mean((2, 3), keepdim=True) * acts[0]).sum(1))

    def smooth_by_hand() -> None:
        xs = (x + 0.15 * torch.randn((25, *x.shape[1:]))).requires_grad_(True)
        model(xs)[:, target].sum().backward()

    return {"forward": forward, "fwd+bwd": fwd_bwd, "cam by hand": cam_by_hand, "25x fwd+bwd": smooth_by_hand}


PEER_OF = {
    "saliency": "fwd+bwd",
    "smoothgrad": "25x fwd+bwd",
    "ig": "fwd+bwd",
    "guided": "fwd+bwd",
    "gradcam": "cam by hand",
    "occlusion": "forward",
}


Row = tuple[str, float, float, float | None, str]  # what, median s, best s, ratio to peer, peer name


def bench_network(name: str, net: Network, image: np.ndarray, mask: np.ndarray, quick: bool) -> list[Row]:
    explainer = Explainer(net)
    target = int(net.classify(image[None])[0][0, 0])
    peer_fns = peers(explainer, image, target)
    rows: list[Row] = []
    for pname, pfn in peer_fns.items():
        rows.append((pname, *timeit(pfn, min_reps=5), None, ""))
    for method in METHODS:
        slow = name == "alexnet" and method in ("occlusion", "ig", "smoothgrad")
        reps = (1 if quick else 3) if slow else 7
        t, best, ratio = paired(
            lambda m=method: explainer.attribute(image, m, target),
            peer_fns[PEER_OF[method]],
            min_reps=reps,
            budget_s=0.0 if slow else 2.0,
        )
        rows.append((method, t, best, ratio, PEER_OF[method]))
    for method in ("smoothgrad", "ig"):
        t, best, ratio = paired(
            lambda m=method: explainer.attribute(image, m, target, bf16=True),
            peer_fns[PEER_OF[method]],
            min_reps=1 if quick else 3,
            budget_s=0.0,
        )
        rows.append((f"{method} (bf16)", t, best, ratio, PEER_OF[method]))
    t, best, ratio = paired(lambda: explainer.attribute(image, "gradcam"), peer_fns["cam by hand"])
    rows.append(("gradcam (default target)", t, best, ratio, "cam by hand"))
    before = net.classify(image[None])
    before1 = (before[0][0], before[1][0])
    classify = lambda: net.classify(image[None])  # noqa: E731
    rows.append(("classify", *timeit(classify, min_reps=7), None, ""))
    rows.append(("inpaint", *timeit(lambda: inpaint(image, mask), min_reps=7), None, ""))
    t, best, ratio = paired(lambda: whatif(net, image, mask, before=before1), classify, min_reps=7)
    rows.append(("whatif", t, best, ratio, "classify"))
    t, best, ratio = paired(lambda: whatif(net, image, mask), classify, min_reps=7)
    rows.append(("whatif (no before)", t, best, ratio, "classify"))
    steps = 20 if name == "alexnet" else 150
    opts = ClassModelOptions(steps=steps)
    t, best = timeit(lambda: class_model(explainer.network, target, image.shape, opts, copy=False), 1, 0.0, 0)
    rows.append((f"class model ({steps} steps)", t, best, None, ""))
    return rows


def report(name: str, rows: list[Row]) -> None:
    print(f"\n## {name}")
    print(f"{'what':<28}{'median ms':>10}{'best ms':>10}  {'vs peer (same run)':<26}target (median / best)")
    for key, sec, best, ratio, peer in rows:
        ms, bms = sec * 1000, best * 1000
        rtext = f"{ratio:.2f}x {peer}" if ratio is not None else ""
        tgt = TARGETS_MS.get((name, key))
        verdict = ""
        if tgt:
            verdict = (
                f"<= {tgt:.0f} ms: {'ok' if ms <= tgt else 'missed'} / {'ok' if bms <= tgt else 'missed'}"
            )
        print(f"{key:<28}{ms:>10.1f}{bms:>10.1f}  {rtext:<26}{verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one call for the slow AlexNet methods")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1")

    small = Network(SmallCNN(10, 1).eval(), "small_cnn", 10, 1, 8)
    digit = rng.integers(0, 256, (8, 8, 1)).astype(np.uint8)
    report("small_cnn", bench_network("small_cnn", small, digit, rect_mask((8, 8), 2, 2, 6, 5), args.quick))

    alex = Network(AlexNet(1000).eval(), "alexnet", 1000, 3, 224, normalise="imagenet")
    photo = rng.integers(0, 256, (224, 224, 3)).astype(np.uint8)
    report(
        "alexnet", bench_network("alexnet", alex, photo, rect_mask((224, 224), 60, 60, 120, 110), args.quick)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
