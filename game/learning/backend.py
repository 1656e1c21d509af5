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

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        try:
            if cards_changed:
                self.stem = None
            else:
                warm_up_optimisers()
            if not self.full_finetune and self.stem is None:
                self.stem = compute_stem_cache(network, images, self.head_layers)
            if self.stem is not None:
                self.stem.preconditioned_inputs(is_train)
        finally:
            self._ready.set()

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        self._ready.wait()
        request.stem = self.stem
        return self.train_fn(request, progress=progress, cancelled=cancelled)

    def cancel(self) -> None:
        pass  # the job polls ``cancelled`` between steps

    def close(self) -> None:
        pass


class ProcessBackend:
    """Trains in the persistent child process (``jobprocess.JobProcess``), started right away so
    that its interpreter and torch import while the scene opens."""

    name = "process"

    def __init__(self, torch_threads: int, nice: int, full_finetune: bool, head_layers: int) -> None:
        from game.learning.jobprocess import JobProcess

        self.full_finetune = full_finetune
        self.head_layers = head_layers
        self.process = JobProcess(torch_threads=torch_threads, nice=nice)
        self.stem: StemCache | None = None  # handed to the child's first init (then it keeps its own)

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        stem, self.stem = self.stem, None
        if cards_changed:
            stem = None
        self.process.init(network, images, is_train, self.full_finetune, self.head_layers, stem)

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        return self.process.run(request, progress=progress, cancelled=cancelled)

    def cancel(self) -> None:
        self.process.cancel()  # stops it inside the child, not only when it answers

    def close(self, timeout: float = 10.0) -> None:
        self.process.close(timeout=timeout)


class FallbackBackend:
    """The process backend, and the thread backend once the process fails to start or prepare
    (``on_fallback(reason)`` is told once). The one place that decides where jobs run."""

    def __init__(
        self, primary: ProcessBackend, fallback: ThreadBackend, on_fallback: Callable[[str], None]
    ) -> None:
        self.active: TrainingBackend = primary
        self.primary: ProcessBackend | None = primary
        self.fallback = fallback
        self.on_fallback = on_fallback

    @property
    def name(self) -> str:
        return self.active.name

    def prepare(
        self, network: Network, images: np.ndarray, is_train: np.ndarray, cards_changed: bool = False
    ) -> None:
        if self.primary is not None:
            try:
                self.primary.prepare(network, images, is_train, cards_changed)
                return
            except Exception as exc:  # no child process: jobs run on this thread instead
                primary, self.primary = self.primary, None
                primary.close(timeout=1.0)
                self.active = self.fallback
                self.on_fallback(f"fine-tune process unavailable ({exc}); training on a thread")
        self.fallback.prepare(network, images, is_train, cards_changed)

    def run(self, request: FineTuneRequest, progress: Progress, cancelled: Cancelled) -> FineTuneResult:
        return self.active.run(request, progress, cancelled)

    def cancel(self) -> None:
        self.active.cancel()

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
) -> ThreadBackend | FallbackBackend:
    """The backend a scene's learning settings ask for (a test's ``train_fn`` always runs on a thread)."""
    thread = ThreadBackend(config.full_finetune, config.head_layers, train_fn, stem)
    if not (use_process and train_fn is run_finetune):
        return thread
    process = ProcessBackend(
        config.torch_threads, getattr(config, "job_nice", 5), config.full_finetune, config.head_layers
    )
    process.stem = stem
    return FallbackBackend(process, thread, on_fallback)


def warm_up_optimisers() -> None:
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
