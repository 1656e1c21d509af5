"""The fine-tune controller: drops in, model updates out, all through the workspace's events.

It listens to the workspace. A ``CardDropped`` becomes an ``EditQueued`` (posted, so the recorder
and the world see it); trainable edits wait in a pending queue. ``update(now)``, called once per
frame, starts a job ``delay_seconds`` after the last drop, taking every pending edit, so the
person can keep moving cards in the meantime. The job runs on the ``Worker`` (never on the frame
loop); its result comes back through ``worker.poll()`` inside ``update`` and is posted as one
``ModelUpdated`` (the world tweens every card to its new place). ``JobStatus`` events report
queued / running (with progress) / done / failed / cancelled.

Failures (an exception, a NaN loss) roll back for free: the job trained a clone, the live network
was never touched. The job's edits go back into the pending queue and a ``Message`` says so; they
are retried with the next drop or ``apply_edits_now``. ``UndoRequested`` drops pending edits if
there are any, else cancels a running job, else restores the previous checkpoint (weights on the
worker, then a ``ModelUpdated`` with the previous version's data so the world tweens back).

Headless use (CLI, tests, benchmarks): post drops, ``workspace.flush()``, ``apply_edits_now()``,
``wait()``.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from game.core import events as ev
from game.core.worker import Job, Worker
from game.learning.edits import DropJudge, is_trainable
from game.learning.finetune import (
    FineTuneCancelled,
    FineTuneRequest,
    FineTuneResult,
    StemCache,
    compute_stem_cache,
    latest_edits,
    run_finetune,
)
from game.learning.history import Checkpoint, ModelHistory
from game.nets.weights import state_to_bytes

TrainFn = Callable[..., FineTuneResult]


@dataclass
class _Running:
    """A job in flight (a fine-tune or an undo)."""

    job_id: int
    kind: str  # "finetune" or "undo"
    edits: list[ev.EditQueued] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


class FineTuneController:
    """Owns the fine-tune loop of one loaded scene; see the module docstring.

    ``train_fn`` is ``run_finetune`` unless a test injects a failing one; ``on_checkpoint(version,
    full_weights_bytes)`` is called for every new model version (e.g. the session recorder's
    ``record_model``), on the main thread.
    """

    def __init__(
        self,
        loaded: Any,  # game.pipeline.LoadedScene (not imported: keeps this module light)
        worker: Worker,
        clock: Callable[[], float] = time.monotonic,
        train_fn: TrainFn = run_finetune,
        on_checkpoint: Callable[[int, bytes], None] | None = None,
        stem: StemCache | None = None,
        job_process: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.workspace = loaded.workspace
        self.worker = worker
        self.clock = clock
        self.train_fn = train_fn
        self.on_checkpoint = on_checkpoint
        self.config = loaded.scene.learning
        self.judge = DropJudge(self.config)  # what a drop means; the drop preview asks the same
        self.pending: dict[int, ev.EditQueued] = {}
        self.results: list[FineTuneResult] = []  # every applied job's result, oldest first
        self.failures: list[str] = []
        self._last_drop: float | None = None
        self._running: _Running | None = None
        self._job_ids = itertools.count(1)
        self._stem: StemCache | None = stem  # given: already computed (e.g. with the first features)
        self._stem_ready = threading.Event()
        # Positions of another feature layer the person switched to (None: the model's own layout).
        self._display_positions: np.ndarray | None = None
        # Jobs in a persistent child process (the frame loop then never waits for the job's GIL);
        # a test's injected ``train_fn`` runs on the worker thread itself.
        self.process = None
        # ``job_process`` overrides the scene: headless callers have no frame loop to protect
        # and skip the child's start-up and transfers.
        use_process = self.config.job_process if job_process is None else job_process
        if use_process and train_fn is run_finetune:
            from game.learning.jobprocess import JobProcess

            self.process = JobProcess(
                torch_threads=self.config.torch_threads, nice=getattr(self.config, "job_nice", 5)
            )
        ws = self.workspace
        self.history = ModelHistory(self.config.checkpoint_dir or None)
        self.history.push(
            Checkpoint(
                int(ws.model_version),
                b"",  # filled by the prepare job below (serialising weights is not frame work)
                ws.labels.copy(),
                ws.top5_classes.copy(),
                ws.top5_scores.copy(),
                ws.features.copy(),
                loaded.layout,
            )
        )
        ws.subscribe(self._on_event)
        # Runs before any fine-tune (the worker is a FIFO): base weights and the frozen stem.
        worker.submit(self._prepare, self.history.current, loaded.network, ws.images, name="finetune-prepare")

    # --- per frame -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A job (fine-tune or undo) is running or waiting on the worker."""
        return self._running is not None

    def update(self, now: float | None = None) -> None:
        """Call once per frame: collect finished jobs, start a job when the delay has passed."""
        self.worker.poll()
        now = self.clock() if now is None else now
        if (
            self._running is None
            and self.pending
            and self._last_drop is not None
            and now - self._last_drop >= self.config.delay_seconds
        ):
            self._start_job()

    def apply_edits_now(self) -> bool:
        """Start a job with every pending edit at once, ignoring the delay (headless use)."""
        if self._running is None and self.pending:
            self._start_job()
            return True
        return False

    def wait(self, timeout: float | None = 600.0) -> None:
        """Block until no job is in flight, applying results (headless scripts and tests only)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running is not None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self.worker.wait_idle(left):
                raise TimeoutError("the fine-tune job did not finish in time")
            self.worker.poll()
            self.workspace.flush()

    def close(self) -> None:
        """Stop listening; the job process (if any) quits after its current job."""
        if self._on_event in self.workspace._listeners:
            self.workspace.unsubscribe(self._on_event)
        if self.process is not None:
            process, self.process = self.process, None
            # On the worker, after any queued job: closing from here would cut a job short.
            self.worker.submit(process.close, name="finetune-process-close")

    # --- events ----------------------------------------------------------------------------------

    def _on_event(self, event: ev.Event, workspace: Any) -> None:
        if isinstance(event, ev.CardDropped):
            # Judged on the clusters the person sees (the workspace's cluster_positions: the
            # model's layout or the layer switched to) by the same judge the drop preview asks.
            workspace.post(self.judge.judge_drop(event, workspace))
        elif isinstance(event, ev.CardAdded):
            self._follow_added_cards()
        elif isinstance(event, ev.LayerChanged):
            training_layer = self.loaded.network.feature_layer
            self._display_positions = None if event.layer == training_layer else event.positions.copy()
        elif isinstance(event, ev.EditQueued):
            if is_trainable(event, self.config):
                self.pending.pop(event.card, None)
                self.pending[event.card] = event
                self._last_drop = self.clock()
                n = len(self.pending)
                workspace.post(ev.JobStatus(0, "queued", f"{n} edit{'s' if n != 1 else ''} waiting"))
            else:
                self.pending.pop(event.card, None)
                workspace.post(ev.Message(f"card {event.card} dropped far from every cluster: marked unsure"))
        elif isinstance(event, ev.UndoRequested):
            self.undo()

    # --- jobs ----------------------------------------------------------------------------------

    def _prepare(self, base: Checkpoint, network: Any, images: np.ndarray) -> None:
        """Worker: version 0's weights as bytes, and the frozen stem's outputs for head-only jobs."""
        try:
            base.weights = state_to_bytes(network.module)
            if self.process is not None:
                try:
                    self.process.init(
                        network,
                        images,
                        self.workspace.is_train.copy(),
                        self.config.full_finetune,
                        self.config.head_layers,
                        self._stem,
                    )
                    return
                except Exception as exc:  # no child process: jobs run on this thread instead
                    process, self.process = self.process, None
                    process.close(timeout=1.0)
                    self.workspace.post(
                        ev.Message(
                            f"fine-tune process unavailable ({exc}); training on a thread", level="warning"
                        )
                    )
            _warm_up_optimisers()
            if not self.config.full_finetune and self._stem is None:
                self._stem = compute_stem_cache(network, images, self.config.head_layers)
            if self._stem is not None:
                self._stem.preconditioned_inputs(self.workspace.is_train.copy())
        finally:
            self._stem_ready.set()

    def _follow_added_cards(self) -> None:
        """Cards joined the workspace (a kept what-if image): every checkpoint gets their rows, and
        the frozen stem (or the job process) is prepared again with the new images, so drops,
        jobs and undo all see the same cards as the world."""
        ws = self.workspace
        for cp in self.history.checkpoints:
            pad_checkpoint(cp, ws)
        if self._display_positions is not None:
            k = ws.n_cards - len(self._display_positions)
            self._display_positions = np.concatenate([self._display_positions, ws.positions[-k:]])
        self.loaded.layout = self.history.current.layout
        # Queued behind any job already waiting (the worker runs jobs in order): that job keeps
        # the stem of the cards its request was made with; every later one gets the new stem.
        self.worker.submit(
            self._prepare_cards, self.loaded.network, ws.images, ws.is_train.copy(), name="finetune-prepare"
        )

    def _prepare_cards(self, network: Any, images: np.ndarray, is_train: np.ndarray) -> None:
        """Worker: the stem's outputs (or the job process's copy of the images) for a new card set."""
        self._stem = None
        try:
            if self.process is not None:
                try:
                    self.process.init(
                        network, images, is_train, self.config.full_finetune, self.config.head_layers, None
                    )
                    return
                except Exception as exc:
                    process, self.process = self.process, None
                    process.close(timeout=1.0)
                    self.workspace.post(
                        ev.Message(
                            f"fine-tune process unavailable ({exc}); training on a thread", level="warning"
                        )
                    )
            stem = (
                None
                if self.config.full_finetune
                else compute_stem_cache(network, images, self.config.head_layers)
            )
            if stem is not None:
                stem.preconditioned_inputs(is_train)
            self._stem = stem
        finally:
            self._stem_ready.set()

    def _start_job(self) -> None:
        edits = latest_edits(list(self.pending.values()))
        self.pending.clear()
        self._last_drop = None
        current = self.history.current
        ws = self.workspace
        job = _Running(next(self._job_ids), "finetune", edits, started=self.clock())
        request = FineTuneRequest(
            version=self.history.next_version(),
            network=self.loaded.network,
            images=ws.images,
            labels=current.labels.copy(),
            is_train=ws.is_train.copy(),
            features=current.features,
            layout=current.layout,
            edits=edits,
            config=self.config,
            projector=self.loaded.projector,
            n_classes=ws.n_classes,
            stem=None,
            seed=self.config.seed + self.history.next_version(),
        )
        self._running = job
        ws.post(ev.JobStatus(job.job_id, "queued", f"fine-tune with {len(edits)} edit(s)"))
        self.worker.submit(
            self._run_job,
            job,
            request,
            name="finetune",
            on_done=lambda j: self._job_done(job, j),
            on_error=lambda j: self._job_failed(job, j),
        )

    def _run_job(self, job: _Running, request: FineTuneRequest) -> FineTuneResult:
        """Worker thread: train, re-infer, re-layout. Posts progress; never touches the workspace."""
        ws = self.workspace
        ws.post(ev.JobStatus(job.job_id, "running", "training", 0.0))
        self._stem_ready.wait()
        request.stem = self._stem
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            if fraction - last[0] >= 0.1 or fraction >= 1.0:
                last[0] = fraction
                ws.post(ev.JobStatus(job.job_id, "running", message, float(fraction)))

        if self.process is not None:
            return self.process.run(request, progress=progress, cancelled=job.cancelled.is_set)
        return self.train_fn(request, progress=progress, cancelled=job.cancelled.is_set)

    def _job_done(self, job: _Running, worker_job: Job) -> None:
        """Main thread (inside ``poll``): apply the result as one ModelUpdated."""
        self._running = None
        ws = self.workspace
        if job.cancelled.is_set():
            ws.post(ev.JobStatus(job.job_id, "cancelled", "fine-tune cancelled"))
            self._post_checkpoint(self.history.current, "fine-tune cancelled")
            return
        result: FineTuneResult = worker_job.result
        summary = result.summary(ws.class_names)
        checkpoint = self.history.push(
            Checkpoint(
                result.version,
                result.weights,
                result.labels,
                result.inference.top5_classes,
                result.inference.top5_scores,
                result.inference.features,
                result.layout,
                summary,
            )
        )
        pad_checkpoint(checkpoint, ws)  # cards added while the job ran
        self.loaded.network = result.network
        self.loaded.layout = checkpoint.layout
        self.results.append(result)
        shown = self._post_checkpoint(checkpoint, summary)
        if self._display_positions is not None:
            # Fine-tuning works in the network's own feature layer; the view goes back to it.
            self._display_positions = None
            ws.post(ev.LayerChanged(result.network.feature_layer, checkpoint.features, shown))
            ws.post(ev.Message(f"fine-tuned: showing the trained layer {result.network.feature_layer} again"))
        ws.post(ev.JobStatus(job.job_id, "done", summary.splitlines()[0], 1.0))
        if self.on_checkpoint is not None:
            self.on_checkpoint(checkpoint.version, self.history.full_bytes(checkpoint.version))

    def _job_failed(self, job: _Running, worker_job: Job) -> None:
        """Main thread: the live model is untouched; put the edits back and tell the person."""
        self._running = None
        ws = self.workspace
        if isinstance(worker_job.error, FineTuneCancelled) or job.cancelled.is_set():
            ws.post(ev.JobStatus(job.job_id, "cancelled", "fine-tune cancelled"))
            self._post_checkpoint(self.history.current, "fine-tune cancelled")
            return
        for edit in job.edits:  # newer drops of the same card win
            self.pending.setdefault(edit.card, edit)
        error = worker_job.error
        reason = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        self.failures.append(reason)
        version = self.history.current.version
        ws.post(ev.JobStatus(job.job_id, "failed", reason))
        ws.post(
            ev.Message(
                f"Fine-tune failed ({reason}); kept model v{version}. "
                f"Your {len(job.edits)} edit(s) are kept and will be retried with the next drop.",
                level="error",
            )
        )

    def _post_checkpoint(self, cp: Checkpoint, summary: str) -> np.ndarray:
        """Post a checkpoint's state as a ModelUpdated (cards with pending edits stay where dropped);
        returns the positions posted."""
        positions = np.asarray(cp.layout.positions, dtype=np.float32).copy()
        for card, edit in self.pending.items():
            positions[card] = edit.position
        self.workspace.post(
            ev.ModelUpdated(
                version=cp.version,
                labels=cp.labels.copy(),
                top5_classes=cp.top5_classes,
                top5_scores=cp.top5_scores,
                features=cp.features,
                positions=positions,
                checkpoint=cp.name,
                summary=summary,
            )
        )
        return positions

    # --- undo ----------------------------------------------------------------------------------

    def undo(self) -> None:
        """Drop pending edits; else cancel the running job; else go back one model version."""
        ws = self.workspace
        if self.pending:
            n = len(self.pending)
            self.pending.clear()
            self._last_drop = None
            if self._running is None:
                self._post_checkpoint(self.history.current, f"undid {n} pending edit(s)")
            ws.post(ev.Message(f"Undid {n} edit(s) not yet trained"))
            return
        if self._running is not None:
            if self._running.kind == "finetune":
                self._running.cancelled.set()
                if self.process is not None:
                    self.process.cancel()  # stops it inside the child, not only when it answers
                ws.post(ev.Message("Cancelling the running fine-tune"))
            return
        previous = self.history.previous
        if previous is None:
            ws.post(ev.Message("Nothing to undo"))
            return
        job = _Running(next(self._job_ids), "undo", started=self.clock())
        self._running = job
        ws.post(ev.JobStatus(job.job_id, "running", f"restoring model v{previous.version}"))
        state = previous.version
        self.worker.submit(
            self._restore,
            state,
            name="undo",
            on_done=lambda j: self._undo_done(job, j),
            on_error=lambda j: self._undo_failed(job, j),
        )

    def _restore(self, version: int) -> Any:
        """Worker: a network with the weights of ``version``."""
        network = self.loaded.network.clone()
        network.module.load_state_dict(self.history.full_state(version), strict=False)
        return network

    def _undo_done(self, job: _Running, worker_job: Job) -> None:
        self._running = None
        dropped = self.history.pop()
        cp = self.history.current
        self.loaded.network = worker_job.result
        self.loaded.layout = cp.layout
        self._post_checkpoint(cp, f"undo: back from v{dropped.version} to v{cp.version}")
        self.workspace.post(ev.JobStatus(job.job_id, "done", f"back to model v{cp.version}", 1.0))

    def _undo_failed(self, job: _Running, worker_job: Job) -> None:
        self._running = None
        self.workspace.post(ev.JobStatus(job.job_id, "failed", f"undo failed: {worker_job.error}"))
        self.workspace.post(ev.Message(f"Undo failed: {worker_job.error}", level="error"))


def pad_checkpoint(cp: Checkpoint, workspace: Any) -> None:
    """Give ``cp`` rows for cards the workspace gained after it was made (their current values).

    A kept what-if card has no history: every version shows it with the label, scores, features
    and position it was added with.
    """
    k = workspace.n_cards - len(cp.labels)
    if k <= 0:
        return
    cp.labels = np.concatenate([cp.labels, workspace.labels[-k:]])
    cp.top5_classes = np.concatenate([cp.top5_classes, workspace.top5_classes[-k:]])
    cp.top5_scores = np.concatenate([cp.top5_scores, workspace.top5_scores[-k:]])
    extra = workspace.features[-k:]
    if extra.shape[1] != cp.features.shape[1]:  # the workspace shows another layer
        extra = np.repeat(cp.features.mean(0, keepdims=True), k, axis=0)
    cp.features = np.concatenate([cp.features, extra.astype(cp.features.dtype)])
    layout = cp.layout
    positions = np.asarray(workspace.positions[-k:], dtype=np.float32)
    cp.layout = dataclasses.replace(
        layout,
        embedding=np.concatenate([layout.embedding, layout.to_raw(positions)]),
        positions=np.concatenate([layout.positions, positions]).astype(np.float32),
        tsne=None,
        neighbours=None,  # recomputed from the padded features at the next local re-layout
        moved=None,
    )


def _warm_up_optimisers() -> None:
    """One tiny optimiser step, so the first fine-tune does not pay torch's lazy imports.

    The first ``Optimizer.step`` imports parts of torch (over a second on a busy 2-core machine,
    holding the GIL, which also stalls the frame loop); doing it while the scene opens hides it.
    """
    import torch

    p = torch.nn.Parameter(torch.zeros(2))
    for opt in (torch.optim.Adam([p], lr=1e-3), torch.optim.SGD([p], lr=1e-3)):
        (p * p).sum().backward()
        opt.step()
        opt.zero_grad()
