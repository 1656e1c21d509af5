"""The job process's re-inference and the app's rebuild at N cards, before/after (issue 17 item 2).

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_reinfer_path.py --cards 50000``
(take ``flock /tmp/latent-reach-50k.lock`` from 20k cards).

On ``bench_drop``'s cached setup (the AlexNet-shaped head over synthetic fc6 outputs), alternating
rounds of the two ways, each after a rank ``--rank`` change of fc7's weight (what a head-only job
makes: ``head_update``):

- "before": the low-rank re-inference on one thread, its features into a new shared-memory segment
  (what the job process did: every 4 KB page is faulted in and zeroed by the first write);
  the finiteness check as one ``np.isfinite`` over the array; the app's rebuild as
  ``state_from_bytes`` + a deep copy + ``load_state_dict``;
- "after": the same on ``stem.REINFER_THREADS`` threads, into a segment ``Segments.premake`` made
  and touched beforehand (the job process does it beside the training; its seconds are printed
  apart, "touch"); the check in blocks (``finetune._check_finite``); the rebuild as ``state_views``
  + ``Network.updated`` (views, no copies).

Printed per round: wall and CPU seconds (this process, all threads) of each part, and the
re-inference's GFLOP/s (``2 N r (in + out)``: the update's two products).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_drop import build_setup  # noqa: E402
from bench_finetune import load_average  # noqa: E402


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way, alternating")
    parser.add_argument("--rank", type=int, default=210)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "latent-reach-bench-drop"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the job process's torch threads (the scene's ``torch_threads``)

    from game.learning import stem as stem_module
    from game.learning.finetune import FineTuneDiverged, _check_finite
    from game.learning.jobprocess import Segments, state_views
    from game.learning.stem import Runner, prime_pre_activations, result_arrays_from
    from game.nets.weights import state_from_bytes

    _scene, network, stem, _labels, _s = build_setup(args.cards, Path(args.cache))
    n = args.cards
    t = time.perf_counter()
    prime_pre_activations(network, n, stem)
    print(f"bench_reinfer_path: {n} cards, primed in {time.perf_counter() - t:.1f} s, load {load_average()}")
    images = np.empty((n, 0), np.uint8)
    fc7 = network.module.classifier[4]
    names = [k for k in network.module.state_dict() if k.startswith(("classifier.4.", "classifier.6."))]
    gen = torch.Generator().manual_seed(0)
    net = network
    for i in range(2 * args.rounds):
        after = i % 2 == 1
        net = net.clone(share=[k for k, _ in net.module.named_parameters() if not k.startswith("classifier")])
        runner = Runner(net, images, stem, False)
        fc7 = net.module.classifier[4]
        with torch.no_grad():
            out_dim, in_dim = fc7.weight.shape
            change = torch.randn(out_dim, args.rank, generator=gen) @ torch.randn(
                args.rank, in_dim, generator=gen
            )
            fc7.weight += change * (1e-3 / args.rank**0.5)
        stem_module.REINFER_THREADS = 2 if after else 1
        segments = Segments(f"lrbench{os.getpid():x}r{i}_")
        touch = 0.0
        if after:
            _, touch, _ = timed(lambda s=segments, b=n * out_dim * 4: (s.premake(b), s._wait_touched()))
        with result_arrays_from(segments.allocate):
            inference, w_inf, c_inf = timed(runner.infer_all)
        rank = runner.last_infer_low_rank or 0
        features = inference.features
        if after:
            _, w_fin, c_fin = timed(lambda f=features: _check_finite("features", f))
        else:
            ok, w_fin, c_fin = timed(lambda f=features: np.isfinite(f).all())
            if not ok:
                raise FineTuneDiverged("features")
        from safetensors.torch import save

        state = net.module.state_dict()
        data = np.frombuffer(save({k: state[k].contiguous() for k in names}), np.uint8).copy()

        def rebuild_before(data=data, base=network):
            loaded = state_from_bytes(data.tobytes())
            other = base.clone(share=[k for k, _ in base.module.named_parameters() if k not in loaded])
            other.module.load_state_dict(loaded, strict=False)
            return other

        def rebuild_after(data=data, base=network):
            views = state_views(data)
            data.tobytes()  # the checkpoint's bytes
            assert views is not None
            return base.updated(views)

        rebuilt, w_reb, c_reb = timed(rebuild_after if after else rebuild_before)
        assert torch.equal(rebuilt.module.classifier[4].weight, fc7.weight)
        gflop = 2 * n * rank * (in_dim + out_dim) / 1e9
        print(
            f"round {i // 2 + 1} {'after ' if after else 'before'}: re-inference {w_inf:.2f} s wall "
            f"{c_inf:.2f} s CPU (rank {rank}, {gflop / max(w_inf, 1e-9):.0f} GFLOP/s wall, "
            f"{gflop / max(c_inf, 1e-9):.0f} per CPU s; threads {stem_module.reinfer_threads()}), "
            f"touch beforehand {touch:.2f} s, finite check {w_fin:.2f}/{c_fin:.2f} s, "
            f"rebuild {w_reb:.2f}/{c_reb:.2f} s (wall/CPU); load {load_average()}",
            flush=True,
        )
        segments.after_sending()
        segments.discard()
        del inference, features
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
