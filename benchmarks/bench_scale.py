"""Scale benchmark (issue 17 item 1): the real path at N cards, per stage, with time and peak memory.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_scale.py --cards 2000 [--tsne-limit 600]``

An image folder of N colour images (the shapes generator at 64x64, written as PNG files; not
timed as part of the path) goes through what the app does with an AlexNet-shaped network
(random weights, seeded; the timing is what counts):

1. reading images: ``load_image_folder`` (decode, EXIF, resize to 64, stack);
2. the trunk pass (since 2026-12-02 16:40): ``cached_inference`` as ``open_scene`` calls it on a
   first launch (an empty cache), ``Network.infer`` over every image in batches of ``--batch``
   with the stem's outputs (the head's inputs) written to the cache as it goes
   (``game.nets.stem_store``): the one pass of the convolutions and fc6 per launch;
3. the fine-tune's stem cache (``compute_stem_cache``, which the controller runs when a scene
   opens; done here and handed to it), read from that store; the head (fc7, fc8) is then trained
   ``--head-epochs`` (default 3) epochs on it so predictions follow the labels (setup, not part of
   the path: see ``benchmarks/bench_finetune.py``), and the trained head's features (fc7, 4,096-d)
   are made from the stored stem outputs by the head alone (``infer_head``, the same floats as a
   whole-network pass). Before 16:40 the stem and the features were two passes of the trunk
   ("fine-tune preparation (stem)" and "features (Network.infer)" in the older JSON files);
4. PCA: ``Projector.reduce`` (to the scene's ``pca_dims``);
5. 3-D layout: ``Projector.fit`` (PCA again, openTSNE, normalisation; the scene's iterations);
6. opening the world offscreen (EGL) and drawing the first frame;
7. recording start (``SessionRecorder.start``: the starting state and weights), then the
   fine-tune controller's preparation (``wait_ready``; timed from 2026-12-02 14:40 on);
8. one relabel drop -> fine-tune (head only, on the worker thread) -> tween end, frames drawn;
9. recording close (every event, the new model version), with the session's size.

``--stage layout``: only the initial layout (features -> positions), with features from a
generator instead of images and a network (AlexNet's fc7 at 50,000 images takes about an hour on
two cores): ``synthetic_features`` draws fc7-like 4,096-d vectors (6 overlapping classes of 5 sub-clusters
in a 32-d latent, a random linear map, noise, ReLU). It prints PCA and layout time and memory, and
the layout's quality: the 10-NN agreement from the 50-d PCA space to 3-D and the class
separation (the fraction of each card's 10 nearest cards in 3-D that share its class), for ours
and for the peer.

``--stage reopen``: the second launch of a folder scene of N images from the caches (decoded
images, features, layout, all keyed by content); see ``reopen_stage``.

Each stage prints its wall time and peak memory: the process's resident set (RSS) sampled every
20 ms during the stage (torch's allocations included), and how far it rose over the stage's
start; and the peak of its anonymous part ("anon": the resident set less file-backed pages, so
memory-mapped cache files such as the stem outputs read back are not in it). The peer is scikit-learn's ``TSNE(n_components=3)`` (Barnes-Hut) on the same PCA output,
run in a child process that is stopped at ``--tsne-limit`` seconds.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
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
    return _statm()[0]


def rss_anon() -> int:
    """The resident set less its file-backed and shared pages (statm's resident - shared): the
    process's own memory. Memory-mapped cache files (features, stem outputs) are in ``rss`` when
    touched but not here: the kernel drops and rereads those pages under pressure."""
    resident, shared = _statm()
    return resident - shared


def proc_kb_field_mb(pid: int | None, file: str, field: str) -> float:
    """The kB figure after ``field`` in ``/proc/<pid>/<file>``, in MB (0 where there is none)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/{file}", encoding="ascii") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith(field)), 0.0)
    except (OSError, ValueError):
        return 0.0


def pss_mb(pid: int | None) -> float:
    """Proportional set size of ``pid`` in MB (Linux ``smaps_rollup``; 0 elsewhere): its private
    pages plus its share of pages mapped by several processes. The fine-tune result's features are
    shared memory between the app and its job process, counted in both processes' RSS but once in
    the sum of their PSS, which is what the machine holds."""
    return proc_kb_field_mb(pid, "smaps_rollup", "Pss:")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the fine-tune job process, its resource tracker), read from
    /proc's parent links; empty where there is no /proc."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                # "pid (comm) state ppid ...": comm may hold spaces and brackets, so split after it
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def children_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of each descendant so far, by pid: a stage's job-process work."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for child in descendants(os.getpid()):
        try:
            with open(f"/proc/{child}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[child] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return out


def tree_pss_mb() -> float:
    """This process's PSS plus every descendant's: the path's memory when the fine-tune job runs
    in its own process, as the app's default does."""
    me = os.getpid()
    return pss_mb(me) + sum(pss_mb(child) for child in descendants(me))


def _statm() -> tuple[int, int]:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            fields = f.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return int(fields[1]) * page, int(fields[2]) * page
    except (OSError, ValueError, IndexError):
        return 0, 0


class Stages:
    """Times stages and samples the RSS peak of each from a background thread, and the summed
    PSS of this process and its children (every 0.25 s: ``smaps_rollup`` walks the page tables,
    too slow for the RSS's 20 ms)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.on_row = lambda: None  # called after every stage (the --json file is kept current)
        self._peak = 0
        self._peak_anon = 0
        self._peak_tree = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._tree_thread = threading.Thread(target=self._sample_tree, daemon=True)
        self._tree_thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            resident, shared = _statm()
            self._peak = max(self._peak, resident)
            self._peak_anon = max(self._peak_anon, resident - shared)

    def _sample_tree(self) -> None:
        while not self._stop.wait(0.25):
            self._peak_tree = max(self._peak_tree, tree_pss_mb())

    @contextmanager
    def stage(self, name: str, **extra):
        start_rss = rss()
        self._peak = start_rss
        self._peak_anon = rss_anon()
        self._peak_tree = tree_pss_mb()
        t = time.perf_counter()
        cpu = time.process_time()
        cpu_children = children_cpu_seconds()
        row = {"stage": name, **extra}
        yield row
        row["seconds"] = time.perf_counter() - t
        # CPU seconds of every thread of this process and of its children (the job process):
        # on a shared machine the wall time says how busy the others were; CPU / cores is the
        # wall time the stage needs on a quiet one.
        children = children_cpu_seconds()
        row["cpu_seconds"] = time.process_time() - cpu
        row["cpu_children_seconds"] = sum(v - cpu_children.get(k, 0.0) for k, v in children.items())
        row["cpu_seconds"] += row["cpu_children_seconds"]
        row["peak_rss_mb"] = max(self._peak, rss()) / MB
        row["rise_mb"] = row["peak_rss_mb"] - start_rss / MB
        row["peak_anon_mb"] = max(self._peak_anon, rss_anon()) / MB
        row["peak_pss_tree_mb"] = max(self._peak_tree, tree_pss_mb())
        self.rows.append(row)
        self.on_row()
        note = f"  ({row['note']})" if row.get("note") else ""
        print(
            f"{name:<34} {row['seconds']:8.2f} s (CPU {row['cpu_seconds']:7.1f} s)   peak RSS {row['peak_rss_mb']:7.0f} MB "
            f"(+{row['rise_mb']:.0f}, anon {row['peak_anon_mb']:.0f}; PSS with the job process "
            f"{row['peak_pss_tree_mb']:.0f}){note}",
            flush=True,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._tree_thread.join()


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


def synthetic_features(
    n: int, dims: int = 4096, classes: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """fc7-like features without images or a network: (n, dims) float32 >= 0 and (n,) labels.

    Each class is 5 sub-clusters in a 32-d latent; a random linear map to ``dims``, Gaussian
    noise and a ReLU give the sparse, non-negative, low-rank-plus-noise look of AlexNet's fc7.
    Built in blocks so the only large array is the result.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    # Overlapping classes: 10-NN class agreement ~0.95 in the 50-d PCA space, so a layout that
    # loses the classes shows it (well-separated blobs would score 1.0 whatever the layout).
    centres = rng.normal(scale=1.0, size=(classes, 32))
    sub = rng.normal(scale=1.0, size=(classes, 5, 32))
    latent = centres[labels] + sub[labels, rng.integers(0, 5, n)] + rng.normal(scale=1.6, size=(n, 32))
    mix = (rng.normal(size=(32, dims)) / np.sqrt(32)).astype(np.float32)
    out = np.empty((n, dims), np.float32)
    for start in range(0, n, 4096):
        block = latent[start : start + 4096].astype(np.float32) @ mix
        block += rng.normal(scale=0.5, size=block.shape).astype(np.float32)
        out[start : start + 4096] = np.maximum(block, 0.0)
    return out, labels


def class_separation(positions: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's ``k`` nearest points that share its class."""
    from sklearn.neighbors import NearestNeighbors

    near = NearestNeighbors(n_neighbors=k + 1).fit(positions).kneighbors(positions, return_distance=False)
    return float((labels[near[:, 1:]] == labels[:, None]).mean())


TSNE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from sklearn.manifold import TSNE
    x = np.load(sys.argv[1])
    t = time.perf_counter()
    y = TSNE(n_components=3, perplexity=float(sys.argv[2]), init="pca", random_state=0,
             n_jobs=int(sys.argv[3])).fit_transform(x)
    np.save(sys.argv[4], y)
    # VmHWM: this program's own peak (ru_maxrss would carry the parent's from before exec)
    hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")]
    print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time(),
                      "peak_rss_mb": (hwm or [0])[0] / 1024}))
    """
)


def sklearn_peer(reduced: np.ndarray, perplexity: float, limit: float, threads: int, tmp: Path) -> dict:
    path = tmp / "reduced.npy"
    np.save(path, reduced)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out_path = tmp / "sklearn_embedding.npy"
    cmd = [sys.executable, "-c", TSNE_CHILD, str(path), str(perplexity), str(threads), str(out_path)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"finished": False, "seconds": time.perf_counter() - t}
    if out.returncode != 0:
        return {"finished": False, "error": out.stderr.strip().splitlines()[-1:], "seconds": 0.0}
    return {"finished": True, "embedding": str(out_path), **json.loads(out.stdout.strip().splitlines()[-1])}


def layout_stage(args: argparse.Namespace) -> int:
    """``--stage layout``: generated features -> PCA -> 3-D layout, its quality, and the peer."""
    from game.core.scene import load_scene
    from game.layout.projector import Projector, Schedule, neighbour_agreement

    scene = load_scene()
    stages = Stages()
    tmp = scratch_dir("bench-scale-layout-")
    t = time.perf_counter()
    features, labels = synthetic_features(args.cards)
    print(f"(generated {features.shape} features in {time.perf_counter() - t:.1f} s, not timed)", flush=True)
    projector = Projector(scene.layout, n_jobs=args.threads)
    if args.plain_schedule:  # the scene's settings at every size (what the layout did before)
        plain = Schedule(scene.layout.theta, scene.layout.early_iterations, scene.layout.iterations, 50)
        projector.schedule = lambda n_points: plain  # type: ignore[method-assign]
    with stages.stage("PCA") as row:
        reduced = projector.reduce(features)
        row["note"] = f"to {reduced.shape[1]} dims"
    with stages.stage("3-D layout (PCA + openTSNE)") as row:
        layout = projector.fit(features)
        row["note"] = projector.schedule(len(features)).describe()
    del features
    quality = {
        "agreement": neighbour_agreement(reduced, layout.embedding),
        "separation": class_separation(layout.embedding, labels),
    }
    print(
        f"layout quality: 10-NN agreement 50-d PCA -> 3-D {quality['agreement']:.3f}, "
        f"class separation {quality['separation']:.3f}",
        flush=True,
    )
    layout_s = stages.rows[-1]["seconds"]
    peer = {"finished": False, "skipped": True}
    if args.tsne_limit > 0:
        peer = sklearn_peer(reduced, scene.layout.perplexity, args.tsne_limit, args.threads, tmp)
    report_peer(peer, reduced, labels, layout_s, args.tsne_limit)
    print(
        f"process peak RSS {max(r['peak_rss_mb'] for r in stages.rows):.0f} MB; peak PSS with the job "
        f"process {max(r['peak_pss_tree_mb'] for r in stages.rows):.0f} MB; load average at end {load_average()}"
    )
    stages.close()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cards": args.cards,
                    "stage": "layout",
                    "plain": args.plain_schedule,
                    "stages": stages.rows,
                    "quality": quality,
                    "peer": peer,
                },
                indent=2,
            )
        )
    return 0


REOPEN_SCENE = """
[dataset]
kind = "folder"
path = "images"
image_size = 64

[network]
arch = "alexnet"
weights = "alexnet.safetensors"
batch_size = 64

[layout]
early_iterations = {early}
iterations = {late}
"""


def reopen_stage(args: argparse.Namespace) -> int:
    """``--stage reopen``: a second launch of a folder scene of N images (``open_scene``), from
    the content-keyed caches of decoded images, features and layout.

    The first launch fills the caches and is not timed; in it the network pass is replaced by
    ``synthetic_features`` (AlexNet over 50,000 images takes about an hour here) and the layout
    runs 5+5 iterations (the cached arrays have the same size whatever the iterations). The
    second launch is the real code with nothing replaced; it counts image decodes and network
    passes, which must both be zero.
    """
    import game.data.folder as folder_mod
    from game.nets.architectures import AlexNet
    from game.nets.network import Inference, Network
    from game.nets.weights import save_weights
    from game.pipeline import open_scene

    tmp = scratch_dir("bench-scale-reopen-")
    os.environ["LATENT_REACH_CACHE"] = str(tmp / "cache")
    t = time.perf_counter()
    n_files, n_bytes = write_folder(tmp / "images", args.cards)
    torch.manual_seed(0)
    save_weights(AlexNet(6), tmp / "alexnet.safetensors")
    (tmp / "scene.toml").write_text(REOPEN_SCENE.format(early=5, late=5))
    print(
        f"(generated {n_files} PNG files, {n_bytes / MB:.1f} MB, in {time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    real_infer = Network.infer

    def generated(self, images, batch_size=256, progress=False, tap=None):
        feats, _ = synthetic_features(len(images))
        top = np.zeros((len(images), 5), np.int64)
        return Inference(
            feats, top, np.full((len(images), 5), 0.2, np.float32), np.zeros((len(images), 6), np.float32)
        )

    stages = Stages()
    Network.infer = generated  # type: ignore[method-assign]
    with stages.stage("first launch (fills the caches)") as row:
        first = open_scene(str(tmp / "scene.toml"), progress=False)
        row["note"] = "network pass generated, 5+5 layout iterations; not the figure"
    Network.infer = real_infer  # type: ignore[method-assign]
    positions = first.workspace.positions.copy()
    del first
    calls = {"read": 0, "infer": 0}
    read = folder_mod.read_image

    def counted_read(*a, **k):
        calls["read"] += 1
        return read(*a, **k)

    def counted_infer(self, *a, **k):
        calls["infer"] += 1
        return real_infer(self, *a, **k)

    folder_mod.read_image = counted_read
    Network.infer = counted_infer  # type: ignore[method-assign]
    with stages.stage("second launch (open_scene, cached)") as row:
        second = open_scene(str(tmp / "scene.toml"), progress=False)
        row["note"] = (
            f"{second.workspace.n_cards} cards; images decoded {calls['read']}, network passes "
            f"{calls['infer']}; " + ", ".join(f"{k} {v:.1f} s" for k, v in second.timings.items())
        )
    same = bool(np.array_equal(second.workspace.positions, positions))
    print(f"second launch: same positions as the first {same}; load average at end {load_average()}")
    stages.close()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"cards": args.cards, "stage": "reopen", "stages": stages.rows, "same_positions": same},
                indent=2,
            )
        )
    return 0


def report_peer(
    peer: dict, reduced: np.ndarray, labels: np.ndarray | None, layout_s: float, limit: float
) -> None:
    """Print the peer's time (and its layout quality), and how many times faster ours is."""
    from game.layout.projector import neighbour_agreement

    if peer.get("skipped"):
        print("peer: scikit-learn TSNE not run (--tsne-limit 0)")
    elif peer["finished"]:
        y = np.load(peer.pop("embedding"))
        peer["agreement"] = neighbour_agreement(reduced, y)
        quality = f"10-NN agreement {peer['agreement']:.3f}"
        if labels is not None:
            peer["separation"] = class_separation(y, labels)
            quality += f", class separation {peer['separation']:.3f}"
        print(
            f"peer: scikit-learn TSNE(n_components=3) on the same {reduced.shape} PCA output: "
            f"{peer['seconds']:.1f} s, peak RSS {peer['peak_rss_mb']:.0f} MB, {quality} "
            f"(ours: {layout_s:.1f} s, {peer['seconds'] / layout_s:.1f}x faster)"
        )
    else:
        print(f"peer: scikit-learn TSNE(n_components=3) did not finish within {limit:.0f} s")


def plot(json_files: list[str], out: str) -> None:
    """Log-log plots against N from ``--json`` outputs. Left: the layout and reopen stages and the
    peer; middle: every stage of the whole path (``--stage all``); per stage the wall time (solid)
    and the CPU time (dotted; on a shared machine the steadier figure). Right: each run's peak
    memory against the 8 GB target (a run stopped by its timeout is drawn hollow): the app's RSS
    or, where the run measured it, the summed PSS of the app and its job process
    (``peak_pss_tree_mb``), whichever is larger, since the job process holds half of a large
    scene's memory (the app's RSS alone drew 3.9 GB for a 7.6 GB path)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Series = dict[str, dict[int, float]]
    wall: Series = {}
    cpu: Series = {}
    path_wall: Series = {}
    path_cpu: Series = {}
    peak: Series = {}
    partial: set[int] = set()
    for name in json_files:
        run = json.loads(Path(name).read_text())
        n = int(run["cards"])
        kind = run.get("stage", "all")
        to_wall, to_cpu = (path_wall, path_cpu) if kind == "all" else (wall, cpu)
        if not run.get("plain"):
            for row in run.get("stages", []):
                if row["stage"].startswith("first launch"):
                    continue
                label = "second launch" if row["stage"].startswith("second") else row["stage"].split(" (")[0]
                to_wall.setdefault(label, {})[n] = row["seconds"]
                if "cpu_seconds" in row:
                    to_cpu.setdefault(label, {})[n] = row["cpu_seconds"]
            rows = [
                max(r["peak_rss_mb"], r.get("peak_pss_tree_mb") or 0.0)
                for r in run.get("stages", [])
                if not r["stage"].startswith("first")
            ]
            if rows:
                peak.setdefault({"all": "whole path"}.get(kind, f"{kind} stage"), {})[n] = max(rows) / 1024
            if kind == "all" and not run.get("complete", True):
                partial.add(n)
        peer = run.get("peer") or {}
        if peer.get("finished"):
            wall.setdefault("scikit-learn TSNE 3-D (peer)", {})[n] = peer["seconds"]
            if "cpu_seconds" in peer:
                cpu.setdefault("scikit-learn TSNE 3-D (peer)", {})[n] = peer["cpu_seconds"]
    fig, (ax, ax_path, ax_mem) = plt.subplots(
        1, 3, figsize=(18, 7.5), dpi=100, gridspec_kw={"width_ratios": [1, 1, 0.6]}
    )
    ticks = [2000, 5000, 10_000, 20_000, 50_000]

    def n_axis(axis) -> None:
        axis.set_xscale("log")
        axis.set_xlim(1500, 70_000)
        axis.set_xticks(ticks, [f"{t // 1000}k" for t in ticks])
        axis.minorticks_off()
        axis.set_xlabel("cards N")

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, w, c in ((ax, wall, cpu), (ax_path, path_wall, path_cpu)):
        for i, label in enumerate(sorted(w)):
            colour = colours[i % len(colours)]
            ns = sorted(w[label])
            axis.plot(ns, [w[label][n] for n in ns], "-", marker="o", color=colour, label=f"{label}, wall")
            if label in c:
                ns = sorted(c[label])
                axis.plot(ns, [c[label][n] for n in ns], ":", marker="s", color=colour, label=f"{label}, CPU")
        n_axis(axis)
        axis.set_yscale("log")
        axis.set_ylabel("seconds")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.axhline(300, color="grey", lw=0.8, ls="--")
    ax.text(1900, 320, "5 min: initial layout target at 50k", fontsize=8, color="grey")
    ax.axhline(30, color="grey", lw=0.8, ls="--")
    ax.text(1900, 32, "30 s: second launch target at 50k", fontsize=8, color="grey")
    ax.set_title("layout and reopen stages, scikit-learn peer", fontsize=10)
    ax_path.axhline(3, color="grey", lw=0.8, ls="--")
    ax_path.text(1900, 3.2, "3 s: drop -> tween target at 50k", fontsize=8, color="grey")
    ax_path.set_title("whole path (AlexNet at 224 px, fc7), per stage", fontsize=10)
    for i, label in enumerate(sorted(peak)):
        ns = sorted(peak[label])
        ax_mem.plot(ns, [peak[label][n] for n in ns], "-", color=colours[i % len(colours)], label=label)
        for n in ns:
            hollow = label == "whole path" and n in partial
            ax_mem.plot(
                [n], [peak[label][n]], "o", color=colours[i % len(colours)], mfc="white" if hollow else None
            )
    ax_mem.axhline(8, color="red", lw=0.8, ls="--")
    ax_mem.text(1900, 8.3, "8 GB target at 50k", fontsize=8, color="red")
    n_axis(ax_mem)
    ax_mem.set_ylim(0, max([10.0] + [v * 1.1 for s in peak.values() for v in s.values()]))
    ax_mem.set_ylabel("peak memory (app RSS or app + job process PSS), GB")
    ax_mem.set_title("peak memory (hollow: run stopped early)", fontsize=10)
    ax_mem.grid(True, which="both", alpha=0.3)
    ax_mem.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.suptitle("bench_scale on the shared 2-core VM (loads: docs/benchmarks.md)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for the run's images, caches and sessions (2.3 GB at 50k), removed when
    the process ends: normally, on an exception, on Ctrl+C or on ``timeout``'s SIGTERM (see
    ``main``). ``LATENT_REACH_BENCH_KEEP=1`` keeps it, to look at what the run wrote."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("LATENT_REACH_BENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def wait_for_memory_lock(path: str | None) -> None:
    """``--lock FILE``: hold an exclusive lock on FILE from here to the end (the world, the
    controller and the drop take 5-10 GB at 50k; the stages before take under 3.5 GB), so
    another large run sharing the lock never peaks at the same time. The wait is printed and
    is in no stage's time. POSIX only (a benchmark's convenience; elsewhere it is ignored)."""
    if not path or os.name != "posix":
        return
    import fcntl

    handle = open(path, "a")  # noqa: SIM115 - held until the process ends
    atexit.register(handle.close)
    t = time.perf_counter()
    fcntl.flock(handle, fcntl.LOCK_EX)
    print(f"(waited {time.perf_counter() - t:.1f} s for {path}, not timed)", flush=True)


def main() -> int:
    # SIGTERM (``timeout``, a killed job) ends through SystemExit, so the scratch folder goes.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64, help="images per feature batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--tsne-limit", type=float, default=600.0, help="seconds for the sklearn peer (0: not run)"
    )
    parser.add_argument(
        "--head-epochs",
        type=int,
        default=3,
        help="setup, not timed: epochs of the head on the stem outputs before the path (default 3)",
    )
    parser.add_argument("--no-world", action="store_true", help="skip the offscreen world")
    parser.add_argument(
        "--thread-job",
        action="store_true",
        help="run the fine-tune on the app's worker thread (one process, the runs before "
        "2026-12-03) instead of the job process that the app uses by default",
    )
    parser.add_argument(
        "--lock",
        metavar="FILE",
        default=None,
        help="flock FILE from the world's opening on (the memory-heavy stages), e.g. "
        "/tmp/latent-reach-50k.lock, so other large runs wait for it",
    )
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the figures here")
    parser.add_argument(
        "--stage",
        choices=("all", "layout", "reopen"),
        default="all",
        help="layout: only features -> positions, on generated features; reopen: a second launch "
        "from the caches (see the module doc)",
    )
    parser.add_argument(
        "--plain-schedule",
        action="store_true",
        help="--stage layout: the scene's theta and iterations at every size (no large-set schedule)",
    )
    parser.add_argument(
        "--plot",
        nargs="+",
        metavar="JSON",
        default=None,
        help="instead of running: plot these --json outputs (log-log) to docs/img/bench_scale.png",
    )
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, str(ROOT / "docs" / "img" / "bench_scale.png"))
        return 0
    torch.set_num_threads(args.threads)
    if args.stage == "layout":
        print(
            f"bench_scale --stage layout: {args.cards} cards, {args.threads} threads, "
            f"{os.cpu_count()} cores, load average at start {load_average()}",
            flush=True,
        )
        return layout_stage(args)
    if args.stage == "reopen":
        print(
            f"bench_scale --stage reopen: {args.cards} cards, {os.cpu_count()} cores, "
            f"load average at start {load_average()}",
            flush=True,
        )
        return reopen_stage(args)
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
    from game.nets.cache import cached_inference
    from game.nets.network import Network
    from game.nets.split import infer_head
    from game.pipeline import LoadedScene, make_workspace
    from game.sessions.recorder import SessionRecorder

    stages = Stages()
    arrays: dict[str, float] = {}  # the large arrays of the path, MB: what bounds the memory

    def save_json(done: bool = False) -> None:
        if args.json:
            figures = {
                "cards": args.cards,
                "job": "worker thread" if args.thread_job else "job process",
                "stages": stages.rows,
                "arrays_mb": arrays,
                "complete": done,
            }
            Path(args.json).write_text(json.dumps({**figures, "peer": peer} if done else figures, indent=2))

    stages.on_row = save_json
    tmp = scratch_dir("bench-scale-")
    os.environ["LATENT_REACH_CACHE"] = str(tmp / "cache")  # a first launch: an empty cache
    t = time.perf_counter()
    n_files, n_bytes = write_folder(tmp / "images", args.cards)
    print(f"(generated {n_files} PNG files, {n_bytes / MB:.1f} MB, in {time.perf_counter() - t:.1f} s)")

    scene = load_scene()
    scene.network.arch = "alexnet"
    # The app's default is the job process (a child: its memory is in the stages' "PSS with the
    # job process"); --thread-job keeps everything in this process, as the runs before 2026-12-03.
    scene.learning.job_process = not args.thread_job
    with stages.stage("reading images") as row:
        data = load_image_folder(tmp / "images", image_size=64, progress=False)
        row["note"] = f"{len(data.images)} images {data.images.shape[1:]}"
        arrays["images (uint8)"] = data.images.nbytes / MB
    is_train = ~data.heldout_mask(0.2, 0)
    torch.manual_seed(0)
    network = Network(AlexNet(data.n_classes), "alexnet", data.n_classes, 3, 224, "", "imagenet")
    head_layers = scene.learning.head_layers
    with stages.stage("trunk pass (features + stem outputs)") as row:
        # The app's first launch (``cached_inference`` as ``open_scene`` calls it): one pass of the
        # whole network, the stem's outputs written to the cache as it goes (``stem_store``).
        first, _ = cached_inference(network, data.images, args.batch, use_cache=True, stem_layers=head_layers)
        row["note"] = f"{first.features.shape[1]}-d, batches of {args.batch}; stem outputs stored"
        del first  # the head is trained below, so the features are made again from the stem
    with stages.stage("stem outputs read from the store") as row:
        stem = compute_stem_cache(network, data.images, head_layers, batch_size=args.batch)
        assert stem is not None
        row["note"] = f"stem outputs {tuple(stem.inputs.shape)}, read from the cache"
        arrays["stem outputs (fine-tune inputs)"] = stem.inputs.numel() * stem.inputs.element_size() / MB
    t = time.perf_counter()
    train_head(network, stem, data.labels, is_train, args.head_epochs)
    print(
        f"(setup: head trained {args.head_epochs} epoch(s) on the stem outputs in {time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    with stages.stage("features from the stem (head only)") as row:
        # The trained head's features: only classifier[start:] runs (``infer_head``), the same
        # floats as a whole-network pass, without the trunk's second pass.
        inference = infer_head(network, stem.inputs, stem.start, args.batch)
        row["note"] = f"{inference.features.shape[1]}-d, batches of {args.batch}"
        arrays["features"] = inference.features.nbytes / MB
        arrays["logits, top-5"] = (
            sum(a.nbytes for a in (inference.logits, inference.top5_classes, inference.top5_scores)) / MB
        )
    if not args.thread_job:
        stem = None  # the app holds no stem cache with the job process (see the controller below)
    projector = Projector(scene.layout, n_jobs=args.threads)
    with stages.stage("PCA") as row:
        reduced = projector.reduce(inference.features)
        row["note"] = f"to {reduced.shape[1]} dims"
    with stages.stage("3-D layout (PCA + openTSNE)") as row:
        layout = projector.fit(inference.features)
        row["note"] = projector.schedule(len(inference.features)).describe()
    ws = make_workspace(data, inference, layout, is_train, network.feature_layer)
    # Only the workspace holds the features from here, as in the app (its controller may swap them
    # for the array it shares with the job process: held once between the two).
    del inference
    loaded = LoadedScene(scene, data, network, projector, layout, ws, {})
    accuracy = float(np.mean(ws.predictions[~is_train] == data.labels[~is_train]))

    app = None
    wait_for_memory_lock(args.lock)
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
    with stages.stage("fine-tune controller ready") as row:
        # The backend's preparation (with the stem handed over: the head's kept pre-activations,
        # a pass of the head over every card), which the app runs in the background at launch.
        # The app hands the job process no stem cache: the child reads the stem store itself (a
        # stem handed over would be held in both processes, the app's kept for a restart).
        controller = FineTuneController(
            loaded, worker, clock=time.perf_counter, stem=stem if args.thread_job else None
        )
        row["note"] = "ready" if controller.wait_ready(600) else "not ready after 600 s"
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
    print("large arrays (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in arrays.items()), flush=True)
    peer = {"finished": False, "skipped": True}
    if args.tsne_limit > 0:
        peer = sklearn_peer(reduced, scene.layout.perplexity, args.tsne_limit, args.threads, tmp)
    layout_s = next(r["seconds"] for r in stages.rows if r["stage"].startswith("3-D layout"))
    report_peer(peer, reduced, data.labels, layout_s, args.tsne_limit)
    print(
        f"process peak RSS {max(r['peak_rss_mb'] for r in stages.rows):.0f} MB; peak PSS with the job "
        f"process {max(r['peak_pss_tree_mb'] for r in stages.rows):.0f} MB; load average at end {load_average()}"
    )
    stages.close()
    save_json(done=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
