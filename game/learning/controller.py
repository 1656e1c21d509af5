"""The fine-tune controller: drops in, model updates out, all through the workspace's events.

It is the glue between four parts, each with one job:

* the **edit queue** (``edit_queue.EditQueue``): a ``CardDropped`` becomes an ``EditQueued``
  (posted, so the recorder and the world see it); trainable edits wait there and ``update(now)``,
  called once per frame, starts a job ``delay_seconds`` after the last one, taking every pending
  edit, so the person can keep moving cards in the meantime;
* the **training backend** (``backend``): where a job runs, a child process or the worker thread,
  prepared when the scene opens so the first drop waits for nothing but its own training;
* the **model store** (``store.ModelStore``, the scene's ``loaded.models``): every kept version's
  network, layout and checkpoint; a job's result is pushed there and posted as one
  ``ModelUpdated`` naming the version (the world tweens every card to its new place);
* **undo** on top of the store: drop pending edits, else cancel the running job, else go back one
  version (its network is rebuilt on the worker; the checkpoint's arrays are posted as a
  ``ModelUpdated`` so the world tweens back).

A staged update (large scenes, ``preview.wants_preview``): a job first sends a **preview**, the
cards near its edits re-placed, which ``update`` hands to ``preview_listeners`` on the main thread
(the world tweens those cards at once); the full result follows as the one ``ModelUpdated``. A
preview is not a model version and never goes through the workspace (so it is never recorded);
when its job fails or is cancelled the listeners are told ``None``: the previewed cards glide
back to where the current version puts them.

Jobs run on the ``Worker``'s background lane (never on the frame loop); results come back through
``worker.poll()`` inside ``update``. ``JobStatus`` events report queued / running (with progress)
/ done / failed / cancelled. A failure (an exception, a NaN loss) rolls back for free: the job
trained a copy and the store was never touched; the job's edits go back into the queue and a
``Message`` says so.

Headless use (CLI, tests, benchmarks): post drops, ``workspace.flush()``, ``apply_edits_now()``,
``wait()``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from game.core import events as ev
from game.core.worker import Job, Worker
from game.learning.backend import (
    FallbackBackend,
    ThreadBackend,
    TrainFn,
    make_backend,
    warm_up_optimisers,
)
from game.learning.edit_queue import EditQueue
from game.learning.edits import DropJudge, is_trainable
from game.learning.finetune import (
    FineTuneCancelled,
    FineTuneRequest,
    FineTuneResult,
    StemCache,
    run_finetune,
)
from game.learning.history import Checkpoint, write_checkpoint_file
from game.learning.preview import Preview, reduces_ahead
from game.learning.store import ModelStore, pad_checkpoint

if TYPE_CHECKING:
    from game.core.workspace import Workspace
    from game.pipeline import LoadedScene

__all__ = ["FineTuneController", "pad_checkpoint"]

_warm_up_optimisers = warm_up_optimisers  # the old name (the job process warms up with it)


@dataclass
class _Running:
    """A job in flight (a fine-tune or an undo)."""

    job_id: int
    kind: str  # "finetune" or "undo"
    edits: list[ev.EditQueued] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


def _nothing() -> None:
    """A worker job whose only use is its ``on_done``, which runs on the frame loop."""


class FineTuneController:
    """Owns the fine-tune loop of one loaded scene; see the module docstring.

    ``train_fn`` is ``run_finetune`` unless a test injects a failing one (it then runs on the
    worker thread). ``on_checkpoint(version, trainable_bytes)`` is called on the main thread for
    every new model version with the bytes the job already made (nothing is serialised for it);
    the session recorder instead follows ``ModelUpdated`` and asks the store on its own thread.
    """

    def __init__(
        self,
        loaded: LoadedScene,
        worker: Worker,
        clock: Callable[[], float] = time.monotonic,
        train_fn: TrainFn = run_finetune,
        on_checkpoint: Callable[[int, bytes], None] | None = None,
        stem: StemCache | None = None,
        job_process: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.workspace: Workspace = loaded.workspace
        self.store: ModelStore = loaded.models
        self.worker = worker
        self.clock = clock
        self.on_checkpoint = on_checkpoint
        self.config = loaded.scene.learning
        self.judge = DropJudge(self.config)  # what a drop means; the drop preview asks the same
        self.queue = EditQueue(self.config.delay_seconds)
        self.last_result: FineTuneResult | None = None  # the last applied job's (benchmarks read it)
        self.failures: list[str] = []
        self._running: _Running | None = None
        self._job_ids = itertools.count(1)
        # Positions of another feature layer the person switched to (None: the model's own layout).
        self._display_positions: np.ndarray | None = None
        self._ready = threading.Event()  # the backend finished its first prepare
        # Told, on the main thread, each preview of a running job (``Preview``) and ``None`` when
        # the previewed cards go back (the job failed or was cancelled); see the module doc.
        self.preview_listeners: list[Callable[[Preview | None], None]] = []
        self.last_preview: Preview | None = None  # the last preview shown (benchmarks, tests)
        self._preview_lock = threading.Lock()
        self._preview_in: tuple[_Running, Preview] | None = None  # arrived, not yet shown
        self._previewed = False  # the running job's preview is on show
        # ``job_process`` overrides the scene: headless callers have no frame loop to protect
        # and skip the child's start-up and transfers.
        use_process = self.config.job_process if job_process is None else job_process
        self.backend = make_backend(
            self.config,
            use_process,
            train_fn,
            stem,
            self._backend_fell_back,
            thread_first=_small(loaded.network),
        )
        if isinstance(self.backend, FallbackBackend) and self.backend.primary is not None:
            self.backend.primary.on_features_shared = self._features_shared
        if not self.store.started:  # a bare store (tests): its base is what the workspace shows
            ws = self.workspace
            self.store.push(
                Checkpoint(
                    int(ws.model_version),
                    b"",
                    ws.labels.copy(),
                    ws.top5_classes.copy(),
                    ws.top5_scores.copy(),
                    ws.features.copy(),
                    loaded.layout,
                ),
                loaded.network,
            )
        self.workspace.subscribe(self._on_event)
        # First on the worker's background lane (it runs jobs in order): the backend gets ready
        # (the child imports torch, caches the frozen stem and warms up) while the scene opens.
        worker.submit(
            self._prepare,
            self.store.network(),
            self.workspace.images,
            self.workspace.is_train.copy(),
            False,
            self._features_to_keep(),
            name="finetune-prepare",
        )

    # --- compatibility views ---------------------------------------------------------------------

    @property
    def pending(self) -> dict[int, ev.EditQueued]:
        """Trainable edits waiting for the next job, by card."""
        return self.queue.pending

    @property
    def process(self) -> Any:
        """The ``JobProcess`` jobs run in, or None when they run on the worker thread."""
        backend = self.backend
        if isinstance(backend, FallbackBackend) and backend.primary is not None:
            return backend.primary.process
        return None

    @property
    def train_fn(self) -> TrainFn:
        return self._thread_backend.train_fn

    @train_fn.setter
    def train_fn(self, fn: TrainFn) -> None:
        self._thread_backend.train_fn = fn

    @property
    def _thread_backend(self) -> ThreadBackend:
        backend = self.backend
        return backend.fallback if isinstance(backend, FallbackBackend) else backend

    # --- per frame -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every preparation is done (the job process's too): a job waits for nothing but its
        own training, wherever it runs."""
        return self._ready.is_set() and self.backend.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ``ready`` (headless scripts, tests and benchmarks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._ready.wait(timeout):
            return False
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self.backend.wait_ready(left)

    @property
    def busy(self) -> bool:
        """A job (fine-tune or undo) is running or waiting on the worker."""
        return self._running is not None

    def update(self, now: float | None = None) -> None:
        """Call once per frame: collect finished jobs, start a job when the delay has passed.

        Events posted before this frame's result is applied are applied first: the result's
        ``ModelUpdated`` keeps every card whose drop is still pending where it was dropped, and
        it reads them from the edit queue, which a drop reaches only when the workspace applies
        it. A drop posted in the frame the job finished (by a hand between frames, or a hook
        before this one) used to be missed, so the card glided back under its old label while
        its edit waited for the next job; and the recording, whose events are in posting order,
        no longer matched a re-run (``replay --verify`` flagged the card, now and then in CI)."""
        self.workspace.flush()
        self.worker.poll()
        self._show_preview()
        now = self.clock() if now is None else now
        if self._running is None and self.queue.due(now):
            self._start_job()

    def apply_edits_now(self) -> bool:
        """Start a job with every pending edit at once, ignoring the delay (headless use)."""
        if self._running is None and self.queue:
            self._start_job()
            return True
        return False

    def wait(self, timeout: float | None = 600.0) -> None:
        """Block until no job is in flight, applying results (headless scripts and tests only)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running is not None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self.worker.wait_idle(left, lane="background"):
                raise TimeoutError("the fine-tune job did not finish in time")
            self.workspace.flush()  # drops posted meanwhile are pending before the result (``update``)
            self.worker.poll()
            self.workspace.flush()

    def close(self) -> None:
        """Stop listening; the job process (if any) quits after its current job."""
        self.workspace.unsubscribe(self._on_event, missing_ok=True)
        # On the worker, after any queued job: closing from here would cut a job short.
        self.worker.submit(self.backend.close, name="finetune-process-close")

    def _backend_fell_back(self, reason: str) -> None:
        self.workspace.post(ev.Message(reason, level="warning"))

    # --- events ----------------------------------------------------------------------------------

    def _on_event(self, event: ev.Event, workspace: Workspace) -> None:
        if isinstance(event, ev.CardDropped):
            # Judged on the clusters the person sees (the workspace's cluster_positions: the
            # model's layout or the layer switched to) by the same judge the drop preview asks.
            workspace.post(self.judge.judge_drop(event, workspace))
        elif isinstance(event, ev.CardAdded):
            self._follow_added_cards()
        elif isinstance(event, ev.LayerChanged):
            training_layer = self.store.network().feature_layer
            self._display_positions = None if event.layer == training_layer else event.positions.copy()
        elif isinstance(event, ev.EditQueued):
            if is_trainable(event, self.config):
                n = self.queue.add(event, self.clock())
                workspace.post(ev.JobStatus(0, "queued", f"{n} edit{'s' if n != 1 else ''} waiting"))
            else:
                self.queue.discard(event.card)
                workspace.post(ev.Message(f"card {event.card} dropped far from every cluster: marked unsure"))
        elif isinstance(event, ev.UndoRequested):
            self.undo()

    def _follow_added_cards(self) -> None:
        """Cards joined the workspace (a kept what-if image): every checkpoint gets their rows, and
        the backend is prepared again with the new images, so drops, jobs and undo all see the
        same cards as the world."""
        ws = self.workspace
        self.store.pad(ws)
        if self._display_positions is not None:
            k = ws.n_cards - len(self._display_positions)
            self._display_positions = np.concatenate([self._display_positions, ws.positions[-k:]])
        # Queued behind any job already waiting (the lane runs jobs in order): that job keeps
        # the stem of the cards its request was made with; every later one gets the new stem.
        self.worker.submit(
            self._prepare,
            self.store.network(),
            ws.images,
            ws.is_train.copy(),
            True,
            self._features_to_keep(),
            name="finetune-prepare",
        )

    def _features_shared(self, old: np.ndarray, shared: np.ndarray) -> None:
        """Init thread: the features sent to the job process went through shared memory; the
        workspace, the store and the backends hold that array from now on (the same values), so
        the app's own copy can go: the two processes hold them once (0.8 GB at 50k).

        The swap runs on the frame loop (``Worker.poll``), where events replace the workspace's
        features too; each holder takes the shared array only if it still holds ``old``, so a
        newer array (a layer change, a card added while the child started) is never undone."""
        self.worker.submit(
            _nothing,
            name="features-shared",
            lane="interactive",
            on_done=lambda _job: self._hold_shared_features(old, shared),
        )

    def _hold_shared_features(self, old: np.ndarray, shared: np.ndarray) -> None:
        """Frame loop: every holder of ``old`` holds ``shared`` instead (see ``_features_shared``)."""
        ws = self.workspace
        if ws.__dict__.get("features") is old:
            ws.features = shared
        self.store.replace_features(old, shared)
        self.backend.replace_features(old, shared)

    def _features_to_keep(self) -> tuple[np.ndarray, Any] | None:
        """The features of the version on show when the scene is large (previews, or a local
        re-layout in their PCA), with the PCA its layout carries (``LayoutState.basis``: None
        when not known): the backend prepares their spread and reduction for the first job
        (``preview.prepare_features``)."""
        current = self.store.current
        if not reduces_ahead(self.workspace.n_cards, self.config.preview_above):
            return None
        if len(current.features) != self.workspace.n_cards:
            return None
        return current.features, current.layout.basis

    def _prepare(
        self,
        network: Any,
        images: np.ndarray,
        is_train: np.ndarray,
        cards_changed: bool = False,
        features: tuple[np.ndarray, Any] | None = None,
    ) -> None:
        """Worker: get the backend ready for these cards (the fallback to a thread is the backend's)."""
        try:
            kept, basis = (None, None) if features is None else features
            self.backend.keep_features(kept, self.loaded.projector, basis)
            self.backend.prepare(network, images, is_train, cards_changed)
        finally:
            self._ready.set()

    # --- jobs ----------------------------------------------------------------------------------

    def _start_job(self) -> None:
        edits = self.queue.take()
        current = self.store.current
        ws = self.workspace
        job = _Running(next(self._job_ids), "finetune", edits, started=self.clock())
        version = self.store.next_version()
        request = FineTuneRequest(
            version=version,
            network=self.store.network(),
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
            seed=self.config.seed + version,
            on_preview=lambda preview: self._preview_arrived(job, preview),
        )
        self._running = job
        ws.post(ev.JobStatus(job.job_id, "queued", f"fine-tune with {len(edits)} edit(s)", task="finetune"))
        self.worker.submit(
            self._run_job,
            job,
            request,
            name="finetune",
            on_done=lambda j: self._job_done(job, j),
            on_error=lambda j: self._job_failed(job, j),
        )

    def _run_job(self, job: _Running, request: FineTuneRequest) -> tuple[FineTuneResult, str]:
        """Worker thread: train, re-infer, re-layout (and write the checkpoint file, if asked).
        Posts progress; never touches the workspace or the store."""
        ws = self.workspace
        ws.post(ev.JobStatus(job.job_id, "running", "training", 0.0))
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            if fraction - last[0] >= 0.1 or fraction >= 1.0:
                last[0] = fraction
                ws.post(ev.JobStatus(job.job_id, "running", message, float(fraction)))

        result = self.backend.run(request, progress, job.cancelled.is_set)
        path = ""
        if self.config.checkpoint_dir:
            path = write_checkpoint_file(self.config.checkpoint_dir, result.version, result.weights)
        return result, path

    # --- previews (the staged update's first stage) ---------------------------------------------

    def _preview_arrived(self, job: _Running, preview: Preview) -> None:
        """The job's thread (the worker's, or a re-inference helper thread beside it): keep the
        job's preview for the next ``update`` (the main thread)."""
        if not job.cancelled.is_set():
            with self._preview_lock:
                self._preview_in = (job, preview)

    def _show_preview(self) -> None:
        """Main thread: hand an arrived preview of the running job to the listeners. Cards the
        person dropped since the job started (pending edits) stay where they were dropped."""
        with self._preview_lock:
            arrived, self._preview_in = self._preview_in, None
        if arrived is None:
            return
        job, preview = arrived
        if job is not self._running or job.cancelled.is_set():
            return
        if self._display_positions is not None:
            # Another feature layer is on show: the preview's places are in the trained layer's
            # layout, so among these cards they would land anywhere (the full result switches back).
            return
        pending = np.fromiter(self.queue.pending, dtype=np.int64)
        if len(pending):
            keep = ~np.isin(preview.cards, pending)
            preview = Preview(
                preview.version,
                preview.cards[keep],
                preview.positions[keep],
                preview.seconds,
                preview.candidates,
            )
        self.last_preview = preview
        self._previewed = True
        for listener in list(self.preview_listeners):
            listener(preview)

    def _end_preview(self, glide_back: bool) -> None:
        """Main thread: the running job ended; ``glide_back``: it brought no new version, so a
        preview on show is taken back (listeners get ``None``)."""
        with self._preview_lock:
            self._preview_in = None
        shown, self._previewed = self._previewed, False
        if shown and glide_back:
            for listener in list(self.preview_listeners):
                listener(None)

    def _job_done(self, job: _Running, worker_job: Job) -> None:
        """Main thread (inside ``poll``): push the result into the store, post one ModelUpdated.
        Nothing here serialises or copies the network."""
        self._running = None
        self._end_preview(glide_back=job.cancelled.is_set())
        ws = self.workspace
        if job.cancelled.is_set():
            self._post_cancelled(job)
            return
        result, path = worker_job.result
        summary = result.summary(ws.class_names)
        checkpoint = Checkpoint(
            result.version,
            result.weights,
            result.labels,
            result.inference.top5_classes,
            result.inference.top5_scores,
            result.inference.features,
            result.layout,
            summary,
            path,
        )
        pad_checkpoint(checkpoint, ws)  # cards added while the job ran
        self.store.push(checkpoint, result.network)
        self.last_result = result
        shown = self._post_checkpoint(checkpoint, summary)
        if self._display_positions is not None:
            # Fine-tuning works in the network's own feature layer; the view goes back to it.
            self._display_positions = None
            ws.post(ev.LayerChanged(result.network.feature_layer, checkpoint.features, shown))
            ws.post(ev.Message(f"fine-tuned: showing the trained layer {result.network.feature_layer} again"))
        ws.post(ev.JobStatus(job.job_id, "done", summary.splitlines()[0], 1.0, task="finetune"))
        # Behind the tween, before any next job (the lane runs in order): what it measures first.
        self.worker.submit(
            self.backend.after_result,
            result,
            self.loaded.projector,
            self.config.preview_above,
            name="finetune-after",
        )
        if self.on_checkpoint is not None:
            self.on_checkpoint(checkpoint.version, checkpoint.weights)

    def _job_failed(self, job: _Running, worker_job: Job) -> None:
        """Main thread: the store is untouched; put the edits back and tell the person."""
        self._running = None
        self._end_preview(glide_back=True)
        ws = self.workspace
        if isinstance(worker_job.error, FineTuneCancelled) or job.cancelled.is_set():
            self._post_cancelled(job)
            return
        self.queue.put_back(job.edits)  # newer drops of the same card win
        error = worker_job.error
        reason = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
        self.failures.append(reason)
        version = self.store.version
        ws.post(ev.JobStatus(job.job_id, "failed", reason, task="finetune"))
        ws.post(
            ev.Message(
                f"Fine-tune failed ({reason}); kept model v{version}. "
                f"Your {len(job.edits)} edit(s) are kept and will be retried with the next drop.",
                level="error",
            )
        )

    def _post_cancelled(self, job: _Running) -> None:
        self.workspace.post(ev.JobStatus(job.job_id, "cancelled", "fine-tune cancelled", task="finetune"))
        self._post_checkpoint(self.store.current, "fine-tune cancelled")

    def _post_checkpoint(self, cp: Checkpoint, summary: str) -> np.ndarray:
        """Post a checkpoint's state as a ModelUpdated (cards with pending edits stay where dropped);
        returns the positions posted."""
        positions = np.asarray(cp.layout.positions, dtype=np.float32).copy()
        for card, edit in self.queue.items():
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
        if self.queue:
            n = self.queue.clear()
            if self._running is None:
                self._post_checkpoint(self.store.current, f"undid {n} pending edit(s)")
            ws.post(ev.Message(f"Undid {n} edit(s) not yet trained"))
            return
        if self._running is not None:
            if self._running.kind == "finetune":
                self._running.cancelled.set()
                self.backend.cancel()
                self._end_preview(glide_back=True)  # now, not when the job next checks
                ws.post(ev.Message("Cancelling the running fine-tune"))
            return
        previous = self.store.previous
        if previous is None:
            ws.post(ev.Message("Nothing to undo"))
            return
        job = _Running(next(self._job_ids), "undo", started=self.clock())
        self._running = job
        ws.post(ev.JobStatus(job.job_id, "running", f"restoring model v{previous.version}", task="undo"))
        self.worker.submit(
            self.store.network,
            previous.version,
            name="undo",
            on_done=lambda j: self._undo_done(job, j),
            on_error=lambda j: self._undo_failed(job, j),
        )

    def _undo_done(self, job: _Running, worker_job: Job) -> None:
        self._running = None
        dropped = self.store.pop(worker_job.result)
        cp = self.store.current
        self._post_checkpoint(cp, f"undo: back from v{dropped.version} to v{cp.version}")
        self.workspace.post(
            ev.JobStatus(job.job_id, "done", f"back to model v{cp.version}", 1.0, task="undo")
        )

    def _undo_failed(self, job: _Running, worker_job: Job) -> None:
        self._running = None
        self.workspace.post(
            ev.JobStatus(job.job_id, "failed", f"undo failed: {worker_job.error}", task="undo")
        )
        self.workspace.post(ev.Message(f"Undo failed: {worker_job.error}", level="error"))


# Networks up to this size train the jobs made while the child starts on a thread (the parent
# prepares them in a moment; larger ones wait for the child). Results are bitwise those of the
# process. (A replay --verify divergence seen with it once came from the job process's pipe
# moving tensors into shared memory in place while this thread read them: jobprocess now
# pickles plainly.)
THREAD_FIRST_MAX_PARAMETERS = 5_000_000


def _small(network: Any) -> bool:
    """Whether the parent can prepare a thread for the first jobs in a moment (the digits CNN:
    yes; AlexNet, whose frozen stem takes a minute on a CPU: no, it waits for the child)."""
    try:
        return bool(sum(p.numel() for p in network.module.parameters()) <= THREAD_FIRST_MAX_PARAMETERS)
    except AttributeError:
        return False
