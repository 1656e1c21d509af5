"""One background worker for slow jobs (fine-tunes, re-layouts, explanations).

The frame loop must never wait for torch: it ``submit``s a function and, once per frame, calls
``poll`` which runs the completion callbacks of finished jobs on the calling (main) thread. So
callbacks may touch the workspace and the scene graph safely. A job that raises is reported to
its ``on_error`` callback with the exception; nothing else is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    job_id: int
    name: str
    state: str = "queued"  # queued, running, done, failed, cancelled
    result: Any = None
    error: BaseException | None = None
    traceback: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    on_done: Callable[[Job], None] | None = None
    on_error: Callable[[Job], None] | None = None
    fn: Callable[..., Any] | None = None
    args: tuple = ()


class Worker:
    """A single daemon thread running jobs in order.

    One thread (not a pool) because the jobs share the torch thread budget: two fine-tunes at
    once would both be slower and could fight over the same model version.
    """

    def __init__(self, name: str = "latent-reach-worker", torch_threads: int | None = 1) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._next_id = 1
        self._lock = threading.Lock()
        self._torch_threads = torch_threads
        self.current: Job | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        _LIVE_WORKERS.add(self)

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str = "job",
        on_done: Callable[[Job], None] | None = None,
        on_error: Callable[[Job], None] | None = None,
    ) -> Job:
        """Queue ``fn(*args)``; callbacks run later inside ``poll`` on the polling thread."""
        with self._lock:
            job = Job(self._next_id, name, on_done=on_done, on_error=on_error, fn=fn, args=args)
            self._next_id += 1
        self._jobs.put(job)
        return job

    def poll(self) -> list[Job]:
        """Run callbacks of jobs finished since the last call (call once per frame)."""
        finished = []
        while True:
            try:
                job = self._done.get_nowait()
            except queue.Empty:
                break
            callback = job.on_done if job.state == "done" else job.on_error
            if callback is not None:
                callback(job)
            finished.append(job)
        return finished

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has finished (headless scripts and tests only)."""
        marker = threading.Event()
        self._jobs.put(Job(0, "__idle__", fn=marker.set))
        return marker.wait(timeout)

    def close(self, wait: bool = False, timeout: float | None = 30.0) -> bool:
        """Stop after the queued jobs; with ``wait``, join the thread (True when it ended).

        Join before the interpreter exits when a job may still be running: torch aborts the
        process if its threads are torn down under a running op.
        """
        self._jobs.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def drop_queued(self) -> int:
        """Cancel every job not started yet (their ``on_error`` runs at the next ``poll``); a close
        request among them is kept, at the end."""
        dropped, closing = 0, False
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                closing = True
                continue
            job.cancelled.set()
            job.state = "cancelled"
            if job.name == "__idle__" and job.fn is not None:
                job.fn()  # nobody waits on an idle marker forever
            else:
                self._done.put(job)
            dropped += 1
        if closing:
            self._jobs.put(None)
        return dropped

    @property
    def busy(self) -> bool:
        return self.current is not None

    def _loop(self) -> None:
        if self._torch_threads:
            try:
                import torch

                torch.set_num_threads(self._torch_threads)
            except ImportError:
                pass
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.name == "__idle__":
                assert job.fn is not None
                job.fn()
                continue
            if job.cancelled.is_set():
                job.state = "cancelled"
                self._done.put(job)
                continue
            self.current = job
            job.state = "running"
            try:
                assert job.fn is not None
                job.result = job.fn(*job.args)
                job.state = "done"
            except BaseException as exc:  # a crashing job must not kill the worker
                job.error = exc
                job.traceback = traceback.format_exc()
                job.state = "failed"
            finally:
                self.current = None
            self._done.put(job)


_LIVE_WORKERS: weakref.WeakSet[Worker] = weakref.WeakSet()
_EXIT_STOPS: list[Callable[[], Callable[[], None] | None]] = []  # each gives the stop, or None once gone
EXIT_JOIN_SECONDS = 10.0


def stop_at_exit(stop: Callable[[], None]) -> None:
    """Call ``stop`` at interpreter exit before the workers are joined: something a running job
    waits on (a job process) ends it, so exiting does not wait for the job. A bound method is
    held weakly."""
    _EXIT_STOPS.append(weakref.WeakMethod(stop) if hasattr(stop, "__self__") else lambda: stop)


@atexit.register
def _stop_workers_at_exit() -> None:
    """Let each worker's running job end before the interpreter tears down.

    A daemon thread still inside torch when Python finalises is stopped while it waits for the
    GIL, and pybind11 turns that into ``std::terminate`` (exit code 134 after all work is done).
    Exit handlers run before that point: queued jobs are dropped, what running jobs wait on is
    stopped, and every worker is joined against one deadline (a thread job longer than that can
    still end the process that way; the frame loop's jobs are far shorter).
    """
    for ref in _EXIT_STOPS:
        stop = ref()
        if stop is not None:
            with contextlib.suppress(Exception):
                stop()
    workers = list(_LIVE_WORKERS)
    for worker in workers:
        worker.drop_queued()
        worker.close()
    deadline = time.monotonic() + EXIT_JOIN_SECONDS
    for worker in workers:
        worker.close(wait=True, timeout=max(deadline - time.monotonic(), 0.0))
