"""Drop -> tween start at N cards (issue 17, "drop -> tween <= 3 s at 50k, head-only"), per part.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_drop.py --cards 50000 [--thread] [--drops 2]``

The real path from a relabel drop to the world's tween, with the frame loop's calls made
headless: ``Workspace.post(CardDropped)`` -> ``FineTuneController`` (drop judge, edit queue,
``delay_seconds``) -> the training backend (the job process by default, as the scene has it;
``--thread``: the worker thread) -> ``run_finetune`` (prepare, train, head re-inference,
``Projector.update_local``) -> result back, checkpoint pushed, ``ModelUpdated`` -> the
workspace applies it -> a ``Tween`` (``game.world.tween``, what the world runs) is retargeted.

What is generated instead of computed (setup, not timed): the frozen stem's outputs of an
AlexNet-shaped network (fc6's 4,096 non-negative activations) come from ``synthetic_features``
(bench_scale: classes of sub-clusters in a low-rank latent, noise, ReLU), since the real stem over
50,000 images takes hours on two cores; the head (fc7, fc8) is trained a few epochs on a subset so
predictions follow the labels; the first layout is ``Projector.fit`` with few iterations (its
quality does not change what the update costs: that depends on the features). Images are 8x8
placeholders (the head-only path never reads them). The setup is cached under ``--cache`` by N.
Its layout carries the PCA and neighbour bounds that the app's layout cache stores with a large
scene's layout (``state_io``, since issue 17's thirteenth session; made once per N beside the
setup): the first drop skips most of its neighbour search, as after a cached launch.
``--cold-search`` leaves them out (a layout cached before they were stored: the first drop
searches every card).

Printed per drop (wall seconds; "CPU": this process's and the job process's CPU seconds from
the drop to the tween, the steadier figure on a shared machine; "job CPU s": the job's process's
CPU seconds, every thread, during each part of ``run_finetune``): drop -> job start (the queue's delay), the job's parts inside ``run_finetune``
(``FineTuneResult.seconds``: prepare, train, infer, layout, and the rest), the transfer to and from
the job process (the backend's wall time minus the job's), the main thread's apply (checkpoint,
``ModelUpdated``), and drop -> tween start.

The staged update (from ``learning.preview_above`` cards; ``--preview-above`` overrides it): the
job first sends a preview of the cards near the edit (``game.learning.preview``), which the
controller hands to its preview listeners and the world tweens at once. Printed then: drop ->
first (preview) tween, the preview's own seconds and cards, and drop -> full tween (the
``ModelUpdated``, as before); peak RSS of this process and of the job process, and the peak of
their summed PSS over the drops (the result's features are shared memory between the two since
issue 17: RSS counts those pages in both processes, PSS once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_finetune import load_average  # noqa: E402
from bench_scale import proc_kb_field_mb, pss_mb, rss, synthetic_features  # noqa: E402

from game.core import events as ev  # noqa: E402

MB = 1024 * 1024


def peak_rss_mb(pid: int | None) -> float:
    """The peak resident set (VmHWM) of process ``pid`` in MB (Linux /proc; 0 elsewhere)."""
    return proc_kb_field_mb(pid, "status", "VmHWM")


class PssPeak:
    """The peak of the summed PSS of some processes, sampled every ``interval`` seconds."""

    def __init__(self, pids, interval: float = 0.25) -> None:
        import threading

        self.pids, self.interval, self.peak = list(pids), interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, sum(pss_mb(p) for p in self.pids))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def session_bytes(path: Path) -> int:
    """The bytes the session's committed content takes (its pages in use, read through the
    write-ahead log). Not the files' sizes: the log keeps its largest size until the recorder
    closes (the base network's 230 MB at the start), so a fine-tune's weights can land in it
    without either file growing, and a checkpoint moves them at a time of its own choosing."""
    import sqlite3

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        pages, free, size = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
    finally:
        conn.close()
    return (pages - free) * size


def flushed(recorder) -> None:
    """Wait until the recorder has written everything posted so far (and did not fail)."""
    if not recorder.flush(600) or getattr(recorder, "error", None) is not None:
        raise SystemExit(f"the session recorder did not catch up ({getattr(recorder, 'error', None)})")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def build_setup(n: int, cache: Path, classes: int = 6):
    """Stem outputs, a trained head, the first inference and a cheap first layout (cached by N)."""
    from game.core.scene import load_scene
    from game.layout.projector import Projector
    from game.learning.stem import Runner, StemCache, head_start
    from game.nets.architectures import AlexNet
    from game.nets.network import Network
    from game.nets.weights import read_state_dict, save_weights

    scene = load_scene()
    torch.manual_seed(0)
    network = Network(AlexNet(classes), "alexnet", classes, 3, 224, "", "imagenet")
    start = head_start(network.module, scene.learning.head_layers)
    assert start is not None
    cache.mkdir(parents=True, exist_ok=True)
    arrays, weights = cache / f"drop-setup-{n}.npz", cache / f"drop-head-{n}.safetensors"
    x, labels = synthetic_features(n, 4096, classes, seed=1)
    stem = StemCache(start, torch.from_numpy(x))
    if arrays.exists() and weights.exists():
        network.module.load_state_dict(read_state_dict(weights), strict=False)
        saved = np.load(arrays)
        return scene, network, stem, labels, dict(saved)
    from bench_scale import train_head

    is_train = np.random.default_rng(0).random(n) >= 0.2
    sub = np.zeros(n, bool)
    sub[np.random.default_rng(1).choice(np.flatnonzero(is_train), min(4000, int(is_train.sum())), False)] = (
        True
    )
    train_head(network, stem, labels, sub, 3)
    save_weights(network.module, weights)
    runner = Runner(network, np.zeros((n, 1, 1, 1), np.uint8), stem, False)
    inference = runner.infer_all()
    scene.layout.early_iterations, scene.layout.iterations = 25, 25
    layout = Projector(scene.layout, n_jobs=2).fit(inference.features)
    out = {
        "is_train": is_train,
        "features": inference.features,
        "top5_classes": inference.top5_classes,
        "top5_scores": inference.top5_scores,
        "embedding": layout.embedding,
        "center": layout.center,
        "scale": np.array(layout.scale),
        "offset": layout.offset,
        "stretch": layout.stretch,
        "neighbours": layout.neighbours,
        "pca_dims": np.array(layout.pca_dims),
    }
    np.savez(arrays, **out)
    return scene, network, stem, labels, out


def add_search_state(layout, features: np.ndarray, projector, path: Path) -> None:
    """Give ``layout`` (the setup's, read from its file) the PCA and neighbour bounds that the
    app's layout cache stores with it (``state_io.layout_to_arrays(search_state=True)``): made once
    as the fit makes them (the same seeded PCA, one full neighbour step) and kept in ``path``."""
    from game.layout.projector import graph_step, graph_threads
    from game.layout.state_io import layout_from_arrays, layout_to_arrays

    if path.exists():
        with np.load(path) as z:
            extra = {name: z[name] for name in z.files}
    else:
        layout.basis = projector.reduction(features).basis()
        rows = layout.basis.transform(features)  # as ``Projector.fit`` measures them (see there)
        k = layout.neighbours.shape[1]
        step = graph_step(rows, rows, layout.neighbours, k, graph_threads(2))
        layout.neighbour_gaps = step.gaps
        every = layout_to_arrays(layout, search_state=True)
        extra = {key: v for key, v in every.items() if key.startswith(("basis_", "gaps_"))}
        np.savez(path, **extra)
    loaded = layout_from_arrays({**layout_to_arrays(layout), **extra})  # checked as the cache is
    layout.basis, layout.neighbour_gaps = loaded.basis, loaded.neighbour_gaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--drops", type=int, default=2, help="drops measured one after another")
    parser.add_argument(
        "--thread", action="store_true", help="jobs on the worker thread, not the job process"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="the job's torch threads (0: the scene's)"
    )
    parser.add_argument(
        "--full-pass", action="store_true", help="re-infer by the full head pass (no low-rank update)"
    )
    parser.add_argument(
        "--preview-above", type=int, default=-1, help="learning.preview_above (-1: the scene's)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=2.0,
        help="seconds between a tween's start and the next drop (the person watches the glide; "
        "the job process prepares the next job's spread meanwhile)",
    )
    parser.add_argument(
        "--cold-search",
        action="store_true",
        help="the setup layout without the PCA and neighbour bounds a layout cache stores",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds of frame loop between the backend's readiness and the first drop (a person "
        "looks around first; shows whether start-up work still running lands in the first job)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="record a session (SessionRecorder, following the model store, as the app does) and "
        "print its growth per fine-tune against the trainable part's bytes (issue 17); the "
        "recorder's writes share the cores, so time drops without it",
    )
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "latent-reach-bench-drop"))
    args = parser.parse_args()
    # Read by game.learning.head_update at each re-inference; the job process inherits it.
    os.environ["LATENT_REACH_HEAD_UPDATE"] = "off" if args.full_pass else "log"

    from game.core.worker import Worker
    from game.data.dataset import Dataset
    from game.layout.projector import LayoutState, Projector
    from game.learning.controller import FineTuneController
    from game.learning.headless import drop_position
    from game.learning.preview import preview_target
    from game.nets.network import Inference
    from game.pipeline import LoadedScene, make_workspace
    from game.world.tween import Tween

    t = time.perf_counter()
    scene, network, stem, labels, s = build_setup(args.cards, Path(args.cache))
    n = args.cards
    print(f"(setup {time.perf_counter() - t:.1f} s, not timed)", flush=True)
    if args.torch_threads:
        scene.learning.torch_threads = args.torch_threads
    scene.learning.job_process = not args.thread
    if args.preview_above >= 0:
        scene.learning.preview_above = args.preview_above
    torch.set_num_threads(scene.learning.torch_threads)
    names = [f"class{i}" for i in range(6)]
    data = Dataset(np.zeros((n, 8, 8, 3), np.uint8), labels, names, [f"gen:{i}" for i in range(n)])
    inference = Inference(s["features"], s["top5_classes"], s["top5_scores"], None)
    layout = LayoutState(
        s["embedding"], s["center"], float(s["scale"]), s["offset"], np.empty((0, 3)), int(s["pca_dims"])
    )
    layout.stretch, layout.neighbours = s["stretch"], s["neighbours"]
    layout.positions = layout.to_world(layout.embedding)
    projector = Projector(scene.layout, n_jobs=2)
    if not args.cold_search:
        add_search_state(layout, s["features"], projector, Path(args.cache) / f"drop-search-{n}.npz")
    ws = make_workspace(data, inference, layout, s["is_train"], network.feature_layer)
    # Only the workspace holds the features from here, as in the app (its controller may swap them
    # for the array it shares with the job process: held once between the two).
    del inference, s["features"]
    loaded = LoadedScene(scene, data, network, projector, layout, ws, {})
    worker = Worker()
    recorder = None
    if args.record:
        from game.sessions.recorder import SessionRecorder

        recorder = SessionRecorder.start(
            scene,
            ws,
            folder=Path(tempfile.mkdtemp(prefix="bench-drop-session-")),
            store=loaded.models,
            layout=layout,
            label="bench",
        )
    controller = FineTuneController(loaded, worker, clock=time.perf_counter, stem=stem)
    t = time.perf_counter()
    if not controller.wait_ready(1200):
        raise SystemExit("the backend did not get ready")
    print(
        f"bench_drop: {n} cards, backend {controller.backend.name}, job torch threads "
        f"{scene.learning.torch_threads}, {os.cpu_count()} cores, ready in {time.perf_counter() - t:.1f} s, "
        f"RSS {rss() / MB:.0f} MB, load {load_average()}",
        flush=True,
    )

    tween = Tween(ws.positions, scene.world.tween_seconds)
    marks: dict[str, float] = {}
    run_wall: list[float] = []
    real_run = controller.backend.run

    def timed_run(request, progress, cancelled):
        t0 = time.perf_counter()
        marks.setdefault("job start", t0)
        try:
            return real_run(request, progress, cancelled)
        finally:
            run_wall.append(time.perf_counter() - t0)

    controller.backend.run = timed_run  # type: ignore[method-assign]

    def listen(e: ev.Event, _ws) -> None:
        if isinstance(e, ev.ModelUpdated):
            # The world's handler: retarget every card's tween to the new positions.
            t0 = time.perf_counter()
            tween.retarget(np.asarray(e.positions), t0, scene.world.tween_seconds)
            marks["tween start"] = time.perf_counter()
            marks["retarget"] = marks["tween start"] - t0

    ws.subscribe(listen)

    def on_preview(preview) -> None:
        # The world's show_preview: the previewed cards' tween retargeted at once.
        if preview is not None:
            tween.retarget(
                preview_target(ws.positions, preview), time.perf_counter(), scene.world.tween_seconds
            )
            marks.setdefault("preview tween", time.perf_counter())

    controller.preview_listeners.append(on_preview)
    child = controller.process._proc.pid if controller.process is not None else None
    together = PssPeak([os.getpid()] + ([child] if child is not None else []))
    rng = np.random.default_rng(0)
    rows = []
    growth: list[tuple[int, int]] = []
    for d in range(args.drops):
        if d or args.settle > 0:
            end = time.perf_counter() + (args.pause if d else args.settle)
            while time.perf_counter() < end:  # the frame loop goes on while the person looks
                worker.poll()
                ws.flush()
                controller.update()
                tween.update(time.perf_counter())
                time.sleep(1 / 120)
        choices = np.flatnonzero(
            ws.is_train & (ws.predictions == ws.labels) & (ws.labels == ws.original_labels)
        )
        card = int(rng.choice(choices))
        target = int((ws.labels[card] + 1) % ws.n_classes)
        marks.clear()
        if recorder is not None:
            flushed(recorder)
            size0 = session_bytes(recorder.path)
        applied_before = controller.last_result
        child = controller.process._proc.pid if controller.process is not None else None
        cpu0, cpu_child0 = time.process_time(), cpu_seconds(child)
        t0 = time.perf_counter()
        ws.post(ws.drop_event(card, drop_position(loaded, card, target, rng)))
        while "tween start" not in marks and time.perf_counter() - t0 < 600:
            worker.poll()
            ws.flush()
            controller.update()
            tween.update(time.perf_counter())
            time.sleep(1 / 120)
        cpu = time.process_time() - cpu0 + cpu_seconds(child) - cpu_child0
        result = controller.last_result
        if result is None or result is applied_before:
            raise SystemExit(f"drop {d}: no model update ({controller.failures})")
        sec = result.seconds
        inner = sec["total"]
        preview = controller.last_preview
        previewed = preview is not None and preview.version == result.version
        row = {
            "queue delay": marks["job start"] - t0,
            "prepare": sec["prepare"],
            "train": sec["train"],
            "preview": sec.get("preview", 0.0),
            "infer": sec["infer"],
            "layout": sec["layout"],
            "job rest": inner
            - sec["prepare"]
            - sec["train"]
            - (sec.get("preview", 0.0) - sec.get("preview beside", 0.0))  # (placed beside infer)
            - sec["infer"]
            - sec["layout"],
            "transfer": run_wall[-1] - inner,
            "(child after job": sec.get("child after the job", float("nan")),
            "to app": sec.get("to the app", float("nan")),
            "rebuild)": sec.get("rebuild", float("nan")),
            "apply": marks["tween start"] - marks["job start"] - run_wall[-1],
            "drop -> preview tween": marks["preview tween"] - t0
            if "preview tween" in marks
            else float("nan"),
            "drop -> tween": marks["tween start"] - t0,
            "CPU": cpu,
        }
        rows.append(row)
        flipped = int(ws.predictions[card]) == target
        moved = int(result.layout.moved.sum()) if result.layout.moved is not None else -1
        print(
            f"drop {d + 1}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in row.items())
            + f" s; {result.steps} steps, flipped {flipped}, cards re-placed {moved}, "
            + (
                f"preview re-placed {len(preview.cards)} of {preview.candidates}, "
                if previewed and preview is not None
                else "no preview, "
            )
            + f"RSS {rss() / MB:.0f} MB, peak {peak_rss_mb(os.getpid()):.0f} MB, "
            f"job process peak RSS {peak_rss_mb(child):.0f} MB; PSS app {pss_mb(os.getpid()):.0f} + "
            f"job {pss_mb(child):.0f} MB (peak of the sum so far {together.peak:.0f} MB)",
            flush=True,
        )
        if recorder is not None:
            flushed(recorder)
            grown, trainable = (
                session_bytes(recorder.path) - size0,
                len(loaded.models.weights(ws.model_version)),
            )
            growth.append((grown, trainable))
            print(
                f"  session +{grown:,} bytes for this fine-tune; trainable part {trainable:,} bytes: "
                f"{grown / trainable:.4f}x (issue 17: under 1.10x)",
                flush=True,
            )
        cpu_parts = [(k[: -len(" cpu")], v) for k, v in sec.items() if k.endswith(" cpu")]
        if cpu_parts:  # the job's own CPU seconds per part (its process, every thread)
            print("  job CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu_parts), flush=True)
    best = min(rows, key=lambda r: r["drop -> tween"])
    firsts = [r["drop -> preview tween"] for r in rows if not np.isnan(r["drop -> preview tween"])]
    first = f"{min(firsts):.2f} s" if firsts else "none (fewer cards than learning.preview_above)"
    print(
        f"best drop -> first (preview) tween at {n} cards: {first}; "
        f"best drop -> full tween: {best['drop -> tween']:.2f} s "
        f"(infer {best['infer']:.2f}, layout {best['layout']:.2f}, train {best['train']:.2f}, "
        f"transfer {best['transfer']:.2f}, CPU {best['CPU']:.1f} s); "
        f"peak RSS app {peak_rss_mb(os.getpid()):.0f} MB, job process {peak_rss_mb(child):.0f} MB, "
        f"peak PSS of both together {together.stop():.0f} MB (over the drops); "
        f"load at end {load_average()}"
    )
    if recorder is not None:
        path = recorder.close()
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        if growth:
            print(
                f"session growth per fine-tune at {n} cards: max {max(g / t for g, t in growth):.4f}x "
                f"of the trainable part; file {size / MB:.1f} MiB after {len(growth)} fine-tunes",
                flush=True,
            )
        shutil.rmtree(path.parent, ignore_errors=True)
    controller.close()
    worker.close(wait=True, timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
