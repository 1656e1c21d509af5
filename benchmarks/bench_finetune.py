"""Fine-tune benchmark: drop-to-tween latency, edit quality, layout stability, frame gaps.

Run: ``.venv/bin/python benchmarks/bench_finetune.py [--edits 10] [--alexnet-images 2000]``

Part 1, the embedded default (digits, small CNN, the scene's own settings): relabel edits one
after another, each dropped at a random other class's centroid through the app's event path, with
a headless 90 Hz "frame loop" on the main thread (flush events, ``controller.update``, a little
numpy work, sleep to the next frame) while the job runs on the worker. Measures per edit:

* drop -> tween start: from posting ``CardDropped`` to the frame that applies ``ModelUpdated``
  (includes the scene's ``delay_seconds``);
* held-out accuracy loss (edited cards left out), whether the card ended nearest its target
  centroid, and the fraction of their 10 nearest layout neighbours the other cards kept;
* the longest gap between frames while a job ran (a headless proxy: no rendering).

Peer in the same run (for load-robust ratios): the prototype path, i.e. ``Network.infer`` on all
images plus ``Projector.update`` with the layout's default settings (approximate affinities, all
update iterations), without any training.

Part 2, AlexNet-shaped (random weights) on synthetic 64x64 RGB images resized to 224: drop ->
tween with the convolutions frozen; the frozen stem's outputs are computed once beforehand. The
trainable head (fc7, fc8) is first trained ``--alexnet-head-epochs`` epochs on the stem outputs
(0: left random), because a job stops once its edits are learned: with a head whose predictions
follow no label an edit needs 20-60 steps to flip, which no real network would make one wait for.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from game.core import events as ev  # noqa: E402
from game.core.worker import Worker  # noqa: E402
from game.learning.controller import FineTuneController  # noqa: E402
from game.learning.headless import drop_position, heldout_accuracy, neighbours_kept  # noqa: E402

FRAME = 1.0 / 90.0


def frame_loop_until_model(loaded, ctl, drop: ev.CardDropped, timeout: float = 120.0) -> tuple[float, float]:
    """Post the drop, run 90 Hz frames until a ModelUpdated is applied; (latency, longest gap)."""
    ws = loaded.workspace
    work = np.random.default_rng(0).random((64, 64))
    t_drop = time.perf_counter()
    ws.post(drop)
    last = t_drop
    max_gap = 0.0
    t_first = None
    while True:
        start = time.perf_counter()
        t_first = start if t_first is None else t_first
        max_gap = max(max_gap, start - last)
        last = start
        applied = ws.flush()
        ctl.update()
        if start == t_first and not ctl.busy and not ctl.pending:
            raise RuntimeError(
                f"the drop queued no trainable edit: {[e for e in applied if e.kind == 'edit']}"
            )
        if any(isinstance(e, ev.ModelUpdated) for e in applied):
            return start - t_drop, max_gap
        failed = [e for e in applied if isinstance(e, ev.JobStatus) and e.state == "failed"]
        if failed:
            raise RuntimeError(f"fine-tune failed: {failed[0].message}")
        if start - t_drop > timeout:
            raise TimeoutError("no ModelUpdated")
        _ = work @ work  # a frame's worth of main-thread numpy work
        rest = FRAME - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)


def run_edits(loaded, ctl, n_edits: int, seed: int) -> list[dict]:
    ws = loaded.workspace
    rng = np.random.default_rng(seed)
    rows = []
    used: set[int] = set()
    for _ in range(n_edits):
        choices = np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))
        card = int(rng.choice([c for c in choices if c not in used]))
        used.add(card)
        target = int((ws.labels[card] + rng.integers(1, ws.n_classes)) % ws.n_classes)
        before_pos = np.asarray(loaded.models.layout().positions).copy()
        acc0 = heldout_accuracy(ws.predictions, ws.original_labels, ws.is_train.copy(), np.array([card]))
        pos = drop_position(loaded, card, target, rng)
        latency, gap = frame_loop_until_model(loaded, ctl, ws.drop_event(card, pos))
        result = ctl.last_result
        (outcome,) = result.outcomes
        acc1 = heldout_accuracy(ws.predictions, ws.original_labels, ws.is_train.copy(), np.array([card]))
        rows.append(
            {
                "card": card,
                "target": target,
                "latency": latency,
                "job": result.seconds["total"],
                "train": result.seconds["train"],
                "layout": result.seconds["layout"],
                "steps": result.steps,
                "moved": int(result.layout.moved.sum()) if result.layout.moved is not None else -1,
                "gap": gap,
                "acc_loss": 100 * (acc0 - acc1),
                "flipped": int(ws.predictions[card]) == target,
                "nearest_target": outcome.ended_nearest_target,
                "kept": neighbours_kept(before_pos, np.asarray(ws.positions), np.array([card])),
            }
        )
        r = rows[-1]
        print(
            f"  card {card:4d} -> {target}: drop->tween {r['latency']:.2f} s (job {r['job']:.2f}: train "
            f"{r['train']:.2f} in {r['steps']} steps, layout {r['layout']:.2f}, {r['moved']} cards moved), gap {1000 * r['gap']:.1f} ms, acc loss "
            f"{r['acc_loss']:+.2f} pt, flipped {r['flipped']}, nearest target {r['nearest_target']}, "
            f"10-NN kept {r['kept']:.3f}",
            flush=True,
        )
    return rows


def prototype_peer(loaded, repeats: int = 3) -> float:
    """Seconds of the naive path: full inference + default Projector.update, no training."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        inf = loaded.network.infer(loaded.workspace.images)
        loaded.projector.update(inf.features, loaded.layout)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_digits(n_edits: int) -> dict:
    from game.pipeline import open_scene

    loaded = open_scene(None, progress=False)
    cfg = loaded.scene.learning
    print(
        f"digits: {loaded.workspace.n_cards} cards, held-out accuracy {100 * loaded.heldout_accuracy():.2f}%, "
        f"delay {cfg.delay_seconds} s, torch threads in the worker {cfg.torch_threads}",
        flush=True,
    )
    peer_loaded = copy.copy(loaded)
    torch.set_num_threads(1)
    peer = prototype_peer(peer_loaded)
    print(f"  peer (infer + default Projector.update, no training): {peer:.2f} s", flush=True)
    worker = Worker(torch_threads=cfg.torch_threads)
    ctl = FineTuneController(loaded, worker)
    worker.wait_idle()
    rows = run_edits(loaded, ctl, n_edits, seed=1)
    worker.close(wait=True, timeout=30)
    return {"rows": rows, "peer": peer}


def bench_first_drop(trials: int, after: float, prestart: bool) -> list[dict]:
    """Issue 12: the first drop made ``after`` seconds after a scene opens, against the second.

    Each trial opens the default scene (layout cached), makes the controller as the game does
    (its job process from the scene's settings), runs 90 Hz frames for ``after`` seconds (the
    window appearing, the person picking a card), drops a card and measures drop -> tween; then a
    second drop on the warm controller. ``prestart``: the job process is started before the
    scene opens (``backend.prestart_process``, as ``latent-reach run`` does).
    """
    from game.learning.backend import prestart_process
    from game.pipeline import open_scene

    rows = []
    rng = np.random.default_rng(7)
    for trial in range(trials):
        t_open = time.perf_counter()
        if prestart:
            from game.core.scene import load_scene

            prestart_process(load_scene().learning)
        loaded = open_scene(None, progress=False)
        opened = time.perf_counter() - t_open
        worker = Worker(torch_threads=loaded.scene.learning.torch_threads)
        ctl = FineTuneController(loaded, worker)
        ws = loaded.workspace
        end = time.perf_counter() + after
        while time.perf_counter() < end:
            ws.flush()
            ctl.update()
            time.sleep(FRAME)
        ready_at_drop = ctl.ready
        on = getattr(ctl.backend, "name", "?")  # where the first job will train
        latencies = []
        for _ in range(2):
            choices = np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))
            card = int(rng.choice(choices))
            target = int((ws.labels[card] + rng.integers(1, ws.n_classes)) % ws.n_classes)
            pos = drop_position(loaded, card, target, rng)
            latencies.append(frame_loop_until_model(loaded, ctl, ws.drop_event(card, pos))[0])
        ctl.close()
        worker.close(wait=True, timeout=30)
        rows.append(
            {"open": opened, "ready": ready_at_drop, "first": latencies[0], "second": latencies[1], "on": on}
        )
        print(
            f"  first-drop trial {trial + 1}: scene opened in {opened:.1f} s, all ready at the drop: "
            f"{ready_at_drop}, first job on the {on}, first drop -> tween {latencies[0]:.2f} s, "
            f"second {latencies[1]:.2f} s",
            flush=True,
        )
    return rows


def train_head(network, stem, labels: np.ndarray, is_train: np.ndarray, epochs: int) -> float:
    """A few epochs of the trainable head on the cached stem outputs: a network whose predictions
    follow the labels, as a real one would. With a random head no prediction follows any label,
    so every edit needs many steps to flip (timing a case no person would meet)."""
    from game.learning.stem import _classifier

    head = torch.nn.Sequential(*list(_classifier(network.module))[stem.start :])
    x = stem.inputs[torch.from_numpy(np.flatnonzero(is_train))]
    y = torch.from_numpy(labels[is_train]).long()
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - t


def bench_alexnet(n_images: int, n_edits: int, head_epochs: int = 3) -> dict:
    loaded, stem, t_stem = alexnet_loaded(n_images, head_epochs)
    worker = Worker(torch_threads=loaded.scene.learning.torch_threads)
    ctl = FineTuneController(loaded, worker, stem=stem)
    worker.wait_idle()
    rows = run_edits(loaded, ctl, n_edits, seed=2)
    worker.close(wait=True, timeout=30)
    return {"rows": rows, "stem_seconds": t_stem}


def alexnet_loaded(n_images: int, head_epochs: int = 3):  # -> (LoadedScene, StemCache, seconds)
    """An AlexNet-shaped scene on synthetic images (see the module docstring), its frozen stem's
    outputs and the seconds they took."""
    from game.core.scene import load_scene
    from game.core.workspace import Workspace
    from game.data.dataset import Dataset
    from game.layout.projector import Projector
    from game.learning.finetune import _Runner, compute_stem_cache
    from game.nets.architectures import AlexNet
    from game.nets.network import Network
    from game.pipeline import LoadedScene

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_classes = 10
    labels = np.repeat(np.arange(n_classes), n_images // n_classes)
    # Synthetic images with a class-dependent colour and noise, so classes form clusters.
    base = rng.integers(0, 256, size=(n_classes, 1, 1, 3))
    images = np.clip(base[labels] + rng.normal(0, 40, (len(labels), 64, 64, 3)), 0, 255).astype(np.uint8)
    scene = load_scene()
    scene.network.arch = "alexnet"
    scene.layout.early_iterations, scene.layout.iterations = 50, 150
    data = Dataset(
        images, labels, [f"c{i}" for i in range(n_classes)], [f"syn:{i}" for i in range(len(labels))]
    )
    is_train = ~data.heldout_mask(0.2, 0)
    network = Network(AlexNet(n_classes), "alexnet", n_classes, 3, 224, "", "imagenet")
    torch.set_num_threads(2)
    t = time.perf_counter()
    stem = compute_stem_cache(network, images, scene.learning.head_layers, batch_size=64)
    assert stem is not None
    t_stem = time.perf_counter() - t
    t_head = train_head(network, stem, labels, is_train, head_epochs) if head_epochs else 0.0
    inference = _Runner(network, images, stem, full=False).infer_all()
    projector = Projector(scene.layout)
    layout = projector.fit(inference.features)
    ws = Workspace(
        images=images,
        labels=labels,
        class_names=data.class_names,
        top5_classes=inference.top5_classes,
        top5_scores=inference.top5_scores,
        features=inference.features,
        positions=layout.positions,
        is_train=is_train,
        sources=data.sources,
        feature_layer=network.feature_layer,
    )
    loaded = LoadedScene(scene, data, network, projector, layout, ws, {})
    print(
        f"alexnet: {len(images)} images 64x64 -> 224, stem (frozen convs + fc6) computed once in "
        f"{t_stem:.1f} s with 2 threads; head (fc7, fc8) "
        + (f"trained {head_epochs} epochs on the stem outputs ({t_head:.1f} s)" if head_epochs else "random")
        + f", training accuracy {np.mean(inference.top5_classes[is_train, 0] == labels[is_train]):.2f}",
        flush=True,
    )
    torch.set_num_threads(1)
    return loaded, stem, t_stem


def summarise(name: str, rows: list[dict]) -> None:
    lat = [r["latency"] for r in rows]
    print(
        f"{name}: drop->tween median {statistics.median(lat):.2f} s (max {max(lat):.2f}); job median "
        f"{statistics.median(r['job'] for r in rows):.2f} s; longest frame gap "
        f"{1000 * max(r['gap'] for r in rows):.1f} ms; held-out loss mean "
        f"{statistics.mean(r['acc_loss'] for r in rows):+.2f} pt (max {max(r['acc_loss'] for r in rows):+.2f}); "
        f"flipped {sum(r['flipped'] for r in rows)}/{len(rows)}; nearest target "
        f"{sum(r['nearest_target'] for r in rows)}/{len(rows)}; unconcerned 10-NN kept mean "
        f"{statistics.mean(r['kept'] for r in rows):.3f} (min {min(r['kept'] for r in rows):.3f})",
        flush=True,
    )


def load_average() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--alexnet-images", type=int, default=2000)
    parser.add_argument("--alexnet-edits", type=int, default=3)
    parser.add_argument("--skip-alexnet", action="store_true")
    parser.add_argument(
        "--alexnet-head-epochs", type=int, default=3, help="train the head this long first (0: random head)"
    )
    parser.add_argument(
        "--first-drop", type=int, default=0, metavar="N", help="only issue 12's first-drop bench, N trials"
    )
    parser.add_argument(
        "--first-drop-after", type=float, default=1.0, help="seconds from opening to the drop"
    )
    parser.add_argument("--no-prestart", action="store_true", help="first-drop bench without prestart")
    args = parser.parse_args()
    print(f"load average at start: {load_average()}")
    if args.first_drop:
        rows = bench_first_drop(args.first_drop, args.first_drop_after, not args.no_prestart)
        first = statistics.median(r["first"] for r in rows)
        second = statistics.median(r["second"] for r in rows)
        print(
            f"first drop {args.first_drop_after:.1f} s after opening (prestart {not args.no_prestart}): "
            f"median drop->tween {first:.2f} s (max {max(r['first'] for r in rows):.2f}); "
            f"second drop {second:.2f} s; load average at end: {load_average()}"
        )
        return 0
    digits = bench_digits(args.edits)
    summarise("digits", digits["rows"])
    med = statistics.median(r["latency"] for r in digits["rows"])
    print(f"digits: drop->tween / peer = {med / digits['peer']:.2f}")
    if not args.skip_alexnet:
        alex = bench_alexnet(args.alexnet_images, args.alexnet_edits, args.alexnet_head_epochs)
        summarise("alexnet", alex["rows"])
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
