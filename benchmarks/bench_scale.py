"""Scale benchmark (issue 17 item 1): the real path at N cards, per stage, with time and peak memory.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_scale.py --cards 2000 [--tsne-limit 600]``

An image folder of N colour images (the shapes generator at 64x64, written as PNG files; not
timed as part of the path) goes through what the app does with an AlexNet-shaped network
(random weights, seeded; the timing is what counts):

1. reading images: ``load_image_folder`` (decode, EXIF, resize to 64, stack);
2. fine-tune preparation: the frozen stem's outputs (``compute_stem_cache``), which the
   controller computes on its worker when a scene opens (done once here and handed to it);
   the head (fc7, fc8) is then trained 3 epochs on them so predictions follow the labels
   (setup, not part of the path: see ``benchmarks/bench_finetune.py``);
3. features: ``Network.infer`` over every image in batches of ``--batch`` (fc7, 4,096-d);
4. PCA: ``Projector.reduce`` (to the scene's ``pca_dims``);
5. 3-D layout: ``Projector.fit`` (PCA again, openTSNE, normalisation; the scene's iterations);
6. opening the world offscreen (EGL) and drawing the first frame;
7. recording start (``SessionRecorder.start``: the starting state and weights);
8. one relabel drop -> fine-tune (head only, on the worker thread) -> tween end, frames drawn;
9. recording close (every event, the new model version), with the session's size.

Each stage prints its wall time and peak memory: the process's resident set (RSS) sampled every
20 ms during the stage (torch's allocations included), and how far it rose over the stage's
start. The peer is scikit-learn's ``TSNE(n_components=3)`` (Barnes-Hut) on the same PCA output,
run in a child process that is stopped at ``--tsne-limit`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_finetune import load_average  # noqa: E402

from game.core import events as ev  # noqa: E402

MB = 1024 * 1024


def rss() -> int:
    """The process's resident set size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class Stages:
    """Times stages and samples the RSS peak of each from a background thread."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, rss())

    @contextmanager
    def stage(self, name: str, **extra):
        start_rss = rss()
        self._peak = start_rss
        t = time.perf_counter()
        row = {"stage": name, **extra}
        yield row
        row["seconds"] = time.perf_counter() - t
        row["peak_rss_mb"] = max(self._peak, rss()) / MB
        row["rise_mb"] = row["peak_rss_mb"] - start_rss / MB
        self.rows.append(row)
        note = f"  ({row['note']})" if row.get("note") else ""
        print(
            f"{name:<34} {row['seconds']:8.2f} s   peak RSS {row['peak_rss_mb']:7.0f} MB "
            f"(+{row['rise_mb']:.0f}){note}",
            flush=True,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def train_head(network, stem, labels: np.ndarray, is_train: np.ndarray, epochs: int) -> None:
    """A few epochs of the trainable head on the stem outputs, so predictions follow the labels
    (as ``bench_finetune.train_head``; a random head needs many steps per edit, which no real
    network would)."""
    from game.learning.stem import _classifier

    head = torch.nn.Sequential(*list(_classifier(network.module))[stem.start :])
    x = stem.inputs[torch.from_numpy(np.flatnonzero(is_train))]
    y = torch.from_numpy(labels[is_train]).long()
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(x[idx]), y[idx]).backward()
            opt.step()
    network.module.eval()


def write_folder(root: Path, n: int, size: int = 64) -> tuple[int, int]:
    """N generated colour images (6 shape classes) as PNG files in class subfolders."""
    from PIL import Image

    from game.data.shapes import CLASSES, load_shapes_dataset

    per_class = -(-n // len(CLASSES))
    data = load_shapes_dataset(per_class=per_class, size=size, seed=0)
    written = 0
    for i in range(len(data.images)):
        if written == n:
            break
        folder = root / data.class_names[data.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i]).save(folder / f"{i:06d}.png")
        written += 1
    return written, sum(p.stat().st_size for p in root.rglob("*.png"))


TSNE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from sklearn.manifold import TSNE
    x = np.load(sys.argv[1])
    t = time.perf_counter()
    TSNE(n_components=3, perplexity=float(sys.argv[2]), init="pca", random_state=0,
         n_jobs=int(sys.argv[3])).fit_transform(x)
    # VmHWM: this program's own peak (ru_maxrss would carry the parent's from before exec)
    hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")]
    print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": (hwm or [0])[0] / 1024}))
    """
)


def sklearn_peer(reduced: np.ndarray, perplexity: float, limit: float, threads: int, tmp: Path) -> dict:
    path = tmp / "reduced.npy"
    np.save(path, reduced)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-c", TSNE_CHILD, str(path), str(perplexity), str(threads)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"finished": False, "seconds": time.perf_counter() - t}
    if out.returncode != 0:
        return {"finished": False, "error": out.stderr.strip().splitlines()[-1:], "seconds": 0.0}
    return {"finished": True, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64, help="images per feature batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--tsne-limit", type=float, default=600.0, help="seconds for the sklearn peer")
    parser.add_argument("--no-world", action="store_true", help="skip the offscreen world")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"bench_scale: {args.cards} cards, torch {args.threads} threads, {os.cpu_count()} cores, "
        f"load average at start {load_average()}",
        flush=True,
    )

    from game.core.scene import load_scene
    from game.core.worker import Worker
    from game.data.folder import load_image_folder
    from game.layout.projector import Projector
    from game.learning.controller import FineTuneController
    from game.learning.headless import drop_position
    from game.learning.stem import compute_stem_cache
    from game.nets.architectures import AlexNet
    from game.nets.network import Network
    from game.pipeline import LoadedScene, make_workspace
    from game.sessions.recorder import SessionRecorder

    stages = Stages()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    t = time.perf_counter()
    n_files, n_bytes = write_folder(tmp / "images", args.cards)
    print(f"(generated {n_files} PNG files, {n_bytes / MB:.1f} MB, in {time.perf_counter() - t:.1f} s)")

    scene = load_scene()
    scene.network.arch = "alexnet"
    scene.learning.job_process = False  # the worker thread: one process to measure
    with stages.stage("reading images") as row:
        data = load_image_folder(tmp / "images", image_size=64, progress=False)
        row["note"] = f"{len(data.images)} images {data.images.shape[1:]}"
    is_train = ~data.heldout_mask(0.2, 0)
    torch.manual_seed(0)
    network = Network(AlexNet(data.n_classes), "alexnet", data.n_classes, 3, 224, "", "imagenet")
    with stages.stage("fine-tune preparation (stem)") as row:
        stem = compute_stem_cache(network, data.images, scene.learning.head_layers, batch_size=args.batch)
        assert stem is not None
        row["note"] = f"stem outputs {tuple(stem.inputs.shape)}"
    t = time.perf_counter()
    train_head(network, stem, data.labels, is_train, 3)
    print(f"(setup: head trained 3 epochs on the stem outputs in {time.perf_counter() - t:.1f} s)")
    with stages.stage("features (Network.infer)") as row:
        inference = network.infer(data.images, batch_size=args.batch)
        row["note"] = f"{inference.features.shape[1]}-d, batches of {args.batch}"
    projector = Projector(scene.layout)
    with stages.stage("PCA") as row:
        reduced = projector.reduce(inference.features)
        row["note"] = f"to {reduced.shape[1]} dims"
    with stages.stage("3-D layout (PCA + openTSNE)") as row:
        layout = projector.fit(inference.features)
        row["note"] = f"{scene.layout.early_iterations}+{scene.layout.iterations} iterations"
    ws = make_workspace(data, inference, layout, is_train, network.feature_layer)
    loaded = LoadedScene(scene, data, network, projector, layout, ws, {})
    accuracy = float(np.mean(ws.predictions[~is_train] == data.labels[~is_train]))

    app = None
    if not args.no_world:
        with stages.stage("open the world offscreen") as row:
            from game.assembly import open_game

            app = open_game(loaded, offscreen=True, size=(960, 544)).app
            app.step(0.0)
            row["note"] = "960x544, first frame drawn"
    worker = app.worker if app is not None else Worker()
    with stages.stage("recording start") as row:
        recorder = SessionRecorder.start(
            scene, ws, folder=tmp / "sessions", store=loaded.models, layout=layout, label="bench"
        )
    controller = FineTuneController(loaded, worker, clock=time.perf_counter, stem=stem)
    controller.wait_ready(600)
    applied: list[float] = []
    ws.subscribe(
        lambda e, _ws: applied.append(time.perf_counter()) if isinstance(e, ev.ModelUpdated) else None
    )

    def frame() -> None:
        if app is not None:
            controller.update()
            app.step(1.0 / 30.0)
        else:
            worker.poll()
            ws.flush()
            controller.update()
            time.sleep(1.0 / 30.0)

    rng = np.random.default_rng(0)
    choices = np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))
    card = int(rng.choice(choices if len(choices) else np.flatnonzero(ws.is_train)))
    target = int((ws.labels[card] + 1) % ws.n_classes)
    with stages.stage("drop -> fine-tune -> tween end") as row:
        t0 = time.perf_counter()
        ws.post(ws.drop_event(card, drop_position(loaded, card, target, rng)))
        deadline = t0 + 600
        while not applied and time.perf_counter() < deadline:
            frame()
        t_model = (applied[0] - t0) if applied else float("nan")
        for _ in range(int(30 * scene.world.tween_seconds) + 2):
            frame()
        result = controller.last_result
        row["note"] = (
            f"model applied after {t_model:.2f} s (job {result.seconds['total']:.2f} s: train "
            f"{result.seconds['train']:.2f}, layout {result.seconds['layout']:.2f}), flipped "
            f"{int(ws.predictions[card]) == target}"
            if result is not None
            else "no model update"
        )
    with stages.stage("recording close") as row:
        controller.close()
        path = recorder.close()
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        row["note"] = f"session {size / MB:.1f} MB"
    if app is not None:
        app.destroy()
    worker.close(wait=True, timeout=60)

    print(f"held-out accuracy of the briefly trained head: {accuracy:.3f}")
    peer = sklearn_peer(reduced, scene.layout.perplexity, args.tsne_limit, args.threads, tmp)
    layout_s = next(r["seconds"] for r in stages.rows if r["stage"].startswith("3-D layout"))
    if peer["finished"]:
        print(
            f"peer: scikit-learn TSNE(n_components=3) on the same {reduced.shape} PCA output: "
            f"{peer['seconds']:.1f} s, peak RSS {peer['peak_rss_mb']:.0f} MB "
            f"(ours: {layout_s:.1f} s, {peer['seconds'] / layout_s:.1f}x faster)"
        )
    else:
        print(f"peer: scikit-learn TSNE(n_components=3) did not finish within {args.tsne_limit:.0f} s")
    print(
        f"process peak RSS {max(r['peak_rss_mb'] for r in stages.rows):.0f} MB; load average at end {load_average()}"
    )
    stages.close()
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cards": args.cards, "stages": stages.rows, "peer": peer}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
