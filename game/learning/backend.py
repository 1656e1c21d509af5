"""Where fine-tune jobs run: a training backend with one interface, on a thread or in a process.

The controller needs four things of whatever trains: ``prepare`` it for a set of cards (the
scene opened, or a card was added), ``run`` a request, ``cancel`` the running job from any thread,
and ``close`` it. ``ThreadBackend`` trains on the calling (worker) thread; ``ProcessBackend``
in the persistent child of ``jobprocess`` (so the frame loop never shares the GIL with a job);
``FallbackBackend`` starts with the process and, if the child cannot start or be prepared, says so
once and trains on a thread from then on. ``prepare`` and ``run`` are the worker's calls
(blocking); ``cancel`` and ``close`` are safe from the frame loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from game.learning.finetune import (
    FineTuneRequest,
    FineTuneResult,
    StemCache,
    compute_stem_cache,
    run_finetune,
)
from game.learning.preview import prepare_features, reduces_ahead
from game.learning.stem import prime_pre_activations

if TYPE_CHECKING:
    from game.nets.network import Network

Progress = Callable[[float, str], None]
Cancelled = Callable[[], bool]
TrainFn = Callable[..., FineTuneResult]


class TrainingBackend(Protocol):
    name: str

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        """Get ready to train on these cards (worker thread; may take seconds). ``cards_changed``:
        a card was added since the last ``prepare``, so what was computed for the old set goes."""

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        """Train, re-infer, re-layout (worker thread); raises ``FineTuneCancelled`` when stopped."""

    def cancel(self) -> None:
        """Stop the running job soon (any thread); a no-op when none runs."""

    def close(self) -> None:
        """Release what the backend holds (a child process)."""

    def after_result(self, result: FineTuneResult, projector: Any, preview_above: int) -> None:
        """Worker, after a result was applied: prepare what the next job on its features
        measures first (``preview.prepare_features``; the job process does this itself, once it
        has answered)."""

    def keep_features(self, features: np.ndarray | None, projector: Any, basis: Any = None) -> None:
        """The features of the version on show, for the next ``prepare`` to get ready (large
        scenes: ``preview.prepare_features``, in ``basis``, the PCA their layout carries, where
        known); None: nothing (small scenes)."""

    def replace_features(self, old: np.ndarray, new: np.ndarray) -> None:
        """Kept features that are the array ``old`` become ``new`` (the same values); features
        kept since then stay."""


class ThreadBackend:
    """Trains on the calling thread with ``train_fn`` (``run_finetune`` unless a test injects one).

    ``prepare`` computes the frozen stem's outputs once per card set (head-only jobs reuse them)
    and warms torch's optimiser imports up, so the first job does not pay them.
    """

    name = "thread"

    def __init__(
        self,
        full_finetune: bool,
        head_layers: int,
        train_fn: TrainFn = run_finetune,
        stem: StemCache | None = None,
    ) -> None:
        self.full_finetune = full_finetune
        self.head_layers = head_layers
        self.train_fn = train_fn
        self.stem = stem  # given: already computed for these cards (e.g. with the first features)
        self._ready = threading.Event()
        self._features: tuple[np.ndarray, Any, Any] | None = None  # ``keep_features``

    @property
    def ready(self) -> bool:
        """Prepared for the current cards: a job starts training at once."""
        return self._ready.is_set()

    def forget_cards(self) -> None:
        """The card set changed: what was computed for the old one is useless until ``prepare``."""
        self._ready.clear()
        self.stem = None

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        try:
            if cards_changed:
                self.stem = None
            _warm_once()
            if not self.full_finetune and self.stem is None:
                self.stem = compute_stem_cache(network, images, self.head_layers)
            if self.stem is not None:
                self.stem.preconditioned_inputs(is_train)
                prime_pre_activations(network, len(images), self.stem)
            if self._features is not None:
                features, projector, basis = self._features
                prepare_features(features, projector, basis=basis)
        finally:
            self._ready.set()

    def keep_features(self, features: np.ndarray | None, projector: Any, basis: Any = None) -> None:
        self._features = None if features is None else (features, projector, basis)

    def replace_features(self, old: np.ndarray, new: np.ndarray) -> None:
        if self._features is not None and self._features[0] is old:
            self._features = (new, *self._features[1:])

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        self._ready.wait()
        request.stem = self.stem
        return self.train_fn(request, progress=progress, cancelled=cancelled)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def cancel(self) -> None:
        pass  # the job polls ``cancelled`` between steps

    def close(self) -> None:
        pass

    def after_result(self, result: FineTuneResult, projector: Any, preview_above: int) -> None:
        features = result.inference.features
        prepare_features(features, projector, reduces_ahead(len(features), preview_above))


class ProcessBackend:
    """Trains in the persistent child process (``jobprocess.JobProcess``), started right away (or
    taken from ``prestart_process``) so that its interpreter and torch import while the scene
    opens. ``prepare`` sends the cards on a thread of its own and returns at once: the worker's
    lane is not held for the child's start-up, and ``ready`` says when it is done."""

    name = "process"

    def __init__(self, torch_threads: int, nice: int, full_finetune: bool, head_layers: int) -> None:
        from game.learning.jobprocess import JobProcess

        self.full_finetune = full_finetune
        self.head_layers = head_layers
        self.process = _take_prestarted(torch_threads, nice) or JobProcess(
            torch_threads=torch_threads, nice=nice
        )
        self.stem: StemCache | None = None  # handed to the child's first init (then it keeps its own)
        self.error: BaseException | None = None  # why the last prepare failed
        self.on_failed: Callable[[BaseException], None] | None = None  # told from the init thread
        # Told (old array, shared array) from the init thread when the features sent to the child
        # went through shared memory: the owner may hold the shared one instead (once, not twice).
        self.on_features_shared: Callable[[np.ndarray, np.ndarray], None] | None = None
        self._ready = threading.Event()
        self._init_thread: threading.Thread | None = None
        self._features: tuple[np.ndarray, Any, Any] | None = None  # ``keep_features``

    @property
    def ready(self) -> bool:
        """The child holds the current cards (and failed nothing): a job starts at once."""
        return self._ready.is_set() and self.error is None

    @property
    def failed(self) -> bool:
        return self._ready.is_set() and self.error is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        stem, self.stem = self.stem, None
        if cards_changed:
            stem = None
        previous = self._init_thread
        self._ready.clear()
        features = self._features

        def init() -> None:
            if previous is not None:
                previous.join()  # in order: the newest card set is the one that stays
            try:
                self.process.init(network, images, is_train, self.full_finetune, self.head_layers, stem)
                if features is not None and len(features[0]) == len(images):
                    shared = self.process.keep_features(network, *features)
                    if shared is not None and self.on_features_shared is not None:
                        self.on_features_shared(features[0], shared)
                self.error = None
            except Exception as exc:
                self.error = exc
                if self.on_failed is not None:
                    self.on_failed(exc)
            finally:
                if self._init_thread is threading.current_thread():
                    self._ready.set()

        self._init_thread = threading.Thread(target=init, name="finetune-process-init", daemon=True)
        self._init_thread.start()

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        self._ready.wait()
        if self.error is not None:
            raise self.error
        return self.process.run(request, progress=progress, cancelled=cancelled)

    def cancel(self) -> None:
        self.process.cancel()  # stops it inside the child, not only when it answers

    def after_result(self, result: FineTuneResult, projector: Any, preview_above: int) -> None:
        pass  # the child did it after answering

    def keep_features(self, features: np.ndarray | None, projector: Any, basis: Any = None) -> None:
        self._features = None if features is None else (features, projector, basis)

    def replace_features(self, old: np.ndarray, new: np.ndarray) -> None:
        if self._features is not None and self._features[0] is old:
            self._features = (new, *self._features[1:])

    def close(self, timeout: float = 10.0) -> None:
        thread = self._init_thread
        self.process.close(timeout=timeout)
        if thread is not None:
            thread.join(timeout)


_PRESTARTED: dict[tuple[int, int], Any] = {}
_PRESTART_LOCK = threading.Lock()


def prestart_process(config: Any) -> None:
    """Start the job process for the next scene now (call before opening it): the child's
    interpreter, torch and the warm-up run while the scene loads, so the first drop after it
    opens waits for nothing but its own training. A no-op when the scene trains on a thread or
    one is waiting already."""
    if not getattr(config, "job_process", False):
        return
    from game.learning.jobprocess import JobProcess

    key = (max(int(config.torch_threads or 1), 1), int(getattr(config, "job_nice", 5)))
    with _PRESTART_LOCK:
        if key not in _PRESTARTED:
            _PRESTARTED[key] = JobProcess(torch_threads=key[0], nice=key[1])
    # This process may train the first job on a thread while the child starts: pay torch's
    # optimiser imports now, beside the scene's loading, not when the person drops a card.
    threading.Thread(target=_warm_once, name="finetune-warm-up", daemon=True).start()


_WARM_LOCK = threading.Lock()
_WARMED = False


def _warm_once() -> None:
    global _WARMED
    with _WARM_LOCK:
        if not _WARMED:
            warm_up_optimisers()
            _WARMED = True


def _take_prestarted(torch_threads: int, nice: int) -> Any:
    with _PRESTART_LOCK:
        process = _PRESTARTED.pop((max(int(torch_threads or 1), 1), int(nice)), None)
    return process if process is not None and process.alive else None


class FallbackBackend:
    """The process backend, with the thread backend beside it: the one place that decides where
    each job runs.

    * While the child is still starting (the first seconds after a scene opens), a job runs on the
      thread if that is prepared (``thread_first``: small networks, whose stem the parent computes
      in a moment), so the first drop reaches its tween like any other; results are bitwise the
      same in both places. Otherwise the job waits for the child.
    * If the child cannot start or be prepared, ``on_fallback(reason)`` is told once and every
      later job trains on the thread.
    """

    def __init__(
        self,
        primary: ProcessBackend,
        fallback: ThreadBackend,
        on_fallback: Callable[[str], None],
        thread_first: bool = False,
    ) -> None:
        self.primary: ProcessBackend | None = primary
        self.fallback = fallback
        self.on_fallback = on_fallback
        self.thread_first = thread_first
        self._last_prepare: tuple[Network, np.ndarray, np.ndarray] | None = None
        self._announced = False
        self._last_ran: TrainingBackend | None = None  # where the last job ran
        primary.on_failed = self._announce

    @property
    def active(self) -> TrainingBackend:
        """Where the next job would run."""
        primary = self.primary
        if primary is not None and (primary.ready or not (self.thread_first and self.fallback.ready)):
            return primary
        return self.fallback

    @property
    def name(self) -> str:
        return self.active.name

    @property
    def ready(self) -> bool:
        """Every preparation finished (the child's too, or it failed and jobs use the thread)."""
        primary = self.primary
        return primary._ready.is_set() if primary is not None else self.fallback.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        primary = self.primary
        return primary.wait_ready(timeout) if primary is not None else self.fallback.wait_ready(timeout)

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        self._last_prepare = (network, images, is_train)
        if self.primary is not None:
            self.primary.prepare(network, images, is_train, cards_changed)  # returns at once
            if not self.thread_first:
                self.fallback.forget_cards()
                return
        self.fallback.prepare(network, images, is_train, cards_changed)

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        primary = self.primary
        if primary is not None and not primary.ready:
            if self.thread_first and self.fallback.ready and not primary.failed:
                self._last_ran = self.fallback
                return self.fallback.run(request, progress, cancelled)  # the child is still starting
            primary.wait_ready()
            if primary.failed:
                self._fall_back(primary)
        if self.primary is not None:
            self._last_ran = self.primary
            return self.primary.run(request, progress, cancelled)
        self._last_ran = self.fallback
        return self.fallback.run(request, progress, cancelled)

    def after_result(self, result: FineTuneResult, projector: Any, preview_above: int) -> None:
        if self._last_ran is not None:
            self._last_ran.after_result(result, projector, preview_above)

    def keep_features(self, features: np.ndarray | None, projector: Any, basis: Any = None) -> None:
        if self.primary is not None:
            self.primary.keep_features(features, projector, basis)
        self.fallback.keep_features(features, projector, basis)

    def replace_features(self, old: np.ndarray, new: np.ndarray) -> None:
        if self.primary is not None:
            self.primary.replace_features(old, new)
        self.fallback.replace_features(old, new)

    def _fall_back(self, primary: ProcessBackend) -> None:
        """Worker: the child failed; close it, say so once, train on this thread from now on."""
        self.primary = None
        primary.close(timeout=1.0)
        if primary.error is not None:
            self._announce(primary.error)
        if not self.fallback.ready and self._last_prepare is not None:
            self.fallback.prepare(*self._last_prepare)

    def _announce(self, error: BaseException) -> None:
        if not self._announced:
            self._announced = True
            self.on_fallback(f"fine-tune process unavailable ({error}); training on a thread")

    def cancel(self) -> None:
        self.fallback.cancel()
        if self.primary is not None:
            self.primary.cancel()

    def close(self) -> None:
        primary, self.primary = self.primary, None
        if primary is not None:
            primary.close()


def make_backend(
    config: Any,
    use_process: bool,
    train_fn: TrainFn = run_finetune,
    stem: StemCache | None = None,
    on_fallback: Callable[[str], None] = lambda _reason: None,
    thread_first: bool = False,
) -> ThreadBackend | FallbackBackend:
    """The backend a scene's learning settings ask for (a test's ``train_fn`` always runs on a
    thread). ``thread_first``: jobs made while the child starts train on a thread (see
    ``FallbackBackend``)."""
    thread = ThreadBackend(config.full_finetune, config.head_layers, train_fn, stem)
    if not (use_process and train_fn is run_finetune):
        return thread
    process = ProcessBackend(
        config.torch_threads, getattr(config, "job_nice", 5), config.full_finetune, config.head_layers
    )
    process.stem = stem
    return FallbackBackend(process, thread, on_fallback, thread_first=thread_first)


def warm_up_optimisers() -> None:
    """One tiny optimiser step, so the first fine-tune does not pay torch's lazy imports.

    The first ``Optimizer.step`` imports parts of torch (over a second on a busy 2-core machine,
    holding the GIL, which also stalls the frame loop); doing it while the scene opens hides it.
    """
    import torch

    p = torch.nn.Parameter(torch.zeros(2))
    for opt in (torch.optim.Adam([p], lr=1e-3), torch.optim.SGD([p], lr=1e-3)):
        torch.autograd.backward((p * p).sum())  # Tensor.backward() is untyped
        opt.step()
        opt.zero_grad()
