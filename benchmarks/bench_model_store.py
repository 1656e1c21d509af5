"""Issue 15's "done when" on an AlexNet-shaped scene: the apply frame, session growth, Grad-CAM.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_model_store.py [--images 2000] [--edits 3]``

Builds the AlexNet-shaped scene of ``bench_finetune`` (synthetic 64x64 RGB images resized to 224,
frozen convolutions + fc6, trainable fc7/fc8), records a session that follows the model store
(``SessionRecorder.start(store=...)``), attaches the fine-tune controller as the game does (job
process from the scene's settings) and then, per edit:

* drops a card and runs a headless 90 Hz frame loop (flush, ``controller.update``, the worker's
  callbacks) until the ``ModelUpdated`` is applied; the *apply frames* are the frame whose
  ``update`` pushed the result into the store and the frame whose ``flush`` applied it: their
  main-thread work is what the person sees as a hitch;
* half a second after the drop, while the job runs, asks for a Grad-CAM of another card through
  ``ExplainService`` on the worker's interactive lane, and times it to its callback; the same
  request made with nothing running is the "usual time" (and, for contrast, one on the
  background lane queues behind the fine-tune);
* measures the session file's growth from the fine-tune (after the recorder flushed) against the
  trainable part's safetensors bytes (issue 15: "grows by the trainable part only"; issue 17:
  "by less than the trainable weights plus 10 %"), and says how many bytes of per-card features
  the ``ModelUpdated`` carried that the file no longer stores (recomputed from the weights on
  replay, ``game.sessions.features``); the row sizes by table show what the growth is made of.

For reference it also times what the frame thread did before the store: serialising the whole
network (``save(full_state)``) once per fine-tune.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_finetune import FRAME, alexnet_loaded, load_average  # noqa: E402

from game.core import events as ev  # noqa: E402
from game.core.worker import Worker  # noqa: E402
from game.learning.controller import FineTuneController  # noqa: E402
from game.learning.headless import drop_position  # noqa: E402


def session_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def stored_bytes(path: Path) -> dict[str, int]:
    """Payload bytes per table (blobs and texts), read from the file as it is now."""
    import sqlite3

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            "weights": conn.execute("SELECT coalesce(sum(length(data)), 0) FROM weights").fetchone()[0],
            "event arrays": conn.execute("SELECT coalesce(sum(length(npy)), 0) FROM event_arrays").fetchone()[
                0
            ],
            "events": conn.execute("SELECT coalesce(sum(length(fields)), 0) FROM events").fetchone()[0],
            "poses": conn.execute(
                'SELECT coalesce(sum(length("values") + length(times)), 0) FROM poses'
            ).fetchone()[0],
        }
    finally:
        conn.close()


def gradcam_seconds(service, network, image, version, frame, lane_note: str, timeout: float = 300.0) -> float:
    """Request one Grad-CAM and run frames until its callback; seconds from request to result."""
    got: list[float] = []
    t = time.perf_counter()
    service.request_map(
        network, image, "gradcam", lambda _r: got.append(time.perf_counter()), version=version
    )
    while not got:
        frame()
        if time.perf_counter() - t > timeout:
            raise TimeoutError(f"no Grad-CAM ({lane_note})")
    return got[0] - t


def main() -> int:
    from safetensors.torch import save

    from game.explain.service import ExplainService
    from game.sessions.recorder import SessionRecorder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=3)
    parser.add_argument("--head-epochs", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    loaded, stem, _ = alexnet_loaded(args.images, args.head_epochs)
    ws = loaded.workspace
    folder = Path(tempfile.mkdtemp(prefix="bench-model-store-"))
    recorder = SessionRecorder.start(
        loaded.scene, ws, folder=folder, store=loaded.models, layout=loaded.layout
    )
    worker = Worker(torch_threads=loaded.scene.learning.torch_threads)
    ctl = FineTuneController(loaded, worker, stem=stem)
    interactive = ExplainService(worker.lane("interactive"))
    background = ExplainService(worker)
    t = time.perf_counter()
    while not ctl.ready:
        worker.poll()
        time.sleep(0.05)
    assert recorder.flush(600)
    print(
        f"controller ready after {time.perf_counter() - t:.1f} s ({ctl.backend.name}); session with the "
        f"whole base network: {session_bytes(recorder.path) / 1e6:.1f} MB",
        flush=True,
    )
    work: dict[str, float] = {}

    def frame() -> None:
        start = time.perf_counter()
        before = ctl.last_result
        t0 = time.perf_counter()
        applied = ws.flush()
        t1 = time.perf_counter()
        ctl.update()
        t2 = time.perf_counter()
        if any(isinstance(e, ev.ModelUpdated) for e in applied):
            work["apply_flush"] = t1 - t0
        if ctl.last_result is not before:
            work["apply_update"] = t2 - t1
        rest = FRAME - (time.perf_counter() - start)
        if rest > 0:
            time.sleep(rest)

    rng = np.random.default_rng(3)
    probe = int(rng.integers(ws.n_cards))
    net = loaded.models.network()
    gradcam_seconds(interactive, net, ws.images[probe], ws.model_version, frame, "warm-up")
    idle = [
        gradcam_seconds(interactive, net, ws.images[probe], ws.model_version, frame, "idle") for _ in range(3)
    ]
    full = loaded.models.network().module.state_dict()
    t = time.perf_counter()
    save({k: v.contiguous() for k, v in full.items()})
    old_frame_cost = time.perf_counter() - t
    rows = []
    carried: list[int] = []  # bytes of features each ModelUpdated carried (live, in memory)
    ws.subscribe(
        lambda e, _w: (
            carried.append(e.features.nbytes)
            if isinstance(e, ev.ModelUpdated) and e.features is not None
            else None
        )
    )
    for i in range(args.edits):
        choices = np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))
        card = int(rng.choice(choices))
        target = int((ws.labels[card] + rng.integers(1, ws.n_classes)) % ws.n_classes)
        assert recorder.flush(120)
        size0 = session_bytes(recorder.path)
        parts0 = stored_bytes(recorder.path)
        carried.clear()
        work.clear()
        t_drop = time.perf_counter()
        ws.post(ws.drop_event(card, drop_position(loaded, card, target, rng)))
        while time.perf_counter() - t_drop < 0.5:
            frame()
        busy = ctl.busy
        version = ws.model_version
        during = gradcam_seconds(interactive, net, ws.images[probe], version, frame, "during a fine-tune")
        still_busy = ctl.busy
        queued_behind = None
        if i == 0 and ctl.busy:  # what a Grad-CAM on the single FIFO lane waited (issue 15, before)
            queued_behind = gradcam_seconds(
                background, net, ws.images[probe], version, frame, "background lane"
            )
        while "apply_flush" not in work:
            frame()
            if time.perf_counter() - t_drop > 600:
                raise TimeoutError("no ModelUpdated")
        latency = time.perf_counter() - t_drop
        assert recorder.flush(120)
        grown = session_bytes(recorder.path) - size0
        parts = {k: v - parts0[k] for k, v in stored_bytes(recorder.path).items()}
        trainable = len(loaded.models.weights(ws.model_version))
        rows.append(
            {
                "latency": latency,
                "apply_update_ms": work.get("apply_update", float("nan")) * 1e3,
                "apply_flush_ms": work["apply_flush"] * 1e3,
                "gradcam_during": during,
                "job_running": busy and still_busy,
                "background_gradcam": queued_behind,
                "grown": grown,
                "trainable": trainable,
                "parts": parts,
                "features_left_out": sum(carried),
            }
        )
        r = rows[-1]
        print(
            f"edit {i + 1}: drop->tween {latency:.2f} s; apply frames: update {r['apply_update_ms']:.2f} ms, "
            f"flush {r['apply_flush_ms']:.2f} ms; Grad-CAM during the job {during:.2f} s "
            f"(job running throughout: {r['job_running']})"
            + (f", on the background lane {queued_behind:.2f} s" if queued_behind is not None else "")
            + f"; session +{grown / 1e6:.2f} MB (trainable part {trainable / 1e6:.2f} MB, growth "
            f"{grown / trainable:.4f}x of it; rows: "
            + ", ".join(f"{k} +{v / 1e6:.3f} MB" for k, v in parts.items())
            + f"; features the ModelUpdated carried, not stored: {sum(carried) / 1e6:.2f} MB)",
            flush=True,
        )
        net = loaded.models.network()
        interactive_warm = gradcam_seconds(
            interactive, net, ws.images[probe], ws.model_version, frame, "new version"
        )
        print(
            f"  first Grad-CAM on the new version (copies the network once): {interactive_warm:.2f} s",
            flush=True,
        )
    recorder.close()
    ctl.close()
    worker.close(wait=True, timeout=60)
    whole = sum(v.numel() * v.element_size() for v in full.values())
    print(
        f"AlexNet {args.images} images: apply frame (update + flush) max "
        f"{max(r['apply_update_ms'] + r['apply_flush_ms'] for r in rows):.2f} ms; before the store the "
        f"frame thread serialised {whole / 1e6:.0f} MB per fine-tune ({old_frame_cost * 1e3:.0f} ms here); "
        f"Grad-CAM idle median {statistics.median(idle):.2f} s, during a fine-tune median "
        f"{statistics.median(r['gradcam_during'] for r in rows):.2f} s; session growth per fine-tune median "
        f"{statistics.median(r['grown'] for r in rows) / 1e6:.2f} MB ({statistics.median(r['grown'] for r in rows):,.0f}"
        f" bytes; trainable part {rows[-1]['trainable']:,} bytes; growth/trainable max "
        f"{max(r['grown'] / r['trainable'] for r in rows):.4f}); load average at end: {load_average()}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
