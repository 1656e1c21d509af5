"""Background workers for slow jobs (fine-tunes, re-layouts, explanations), in two lanes.

The frame loop must never wait for torch: it ``submit``s a function and, once per frame, calls
``poll`` which runs the completion callbacks of finished jobs on the calling (main) thread. So
callbacks may touch the workspace and the scene graph safely. A job that raises is reported to
its ``on_error`` callback with the exception; nothing else is lost.

Lanes: each lane is one thread running its jobs in order. ``"background"`` (the default) takes
long work: fine-tunes, undo, a layer switch, a scene load. ``"interactive"`` takes what a person
waits for with a key held (a heat map, a what-if, guidance scores), so it never queues behind a
fine-tune; its thread starts on first use. Both lanes report through the same ``poll``.
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
from typing import Any, Literal

Lane = Literal["background", "interactive"]
BACKGROUND: Lane = "background"
INTERACTIVE: Lane = "interactive"


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
    args: tuple[Any, ...] = ()
    lane: str = BACKGROUND


class _LaneThread:
    """One lane: a queue and the daemon thread that empties it in order."""

    def __init__(self, worker: Worker, lane: str, name: str) -> None:
        self.lane = lane
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.current: Job | None = None
        self.thread = threading.Thread(target=worker._loop, args=(self,), name=name, daemon=True)
        self.thread.start()


class LaneView:
    """A ``Worker`` seen through one lane: ``submit`` goes there, the rest is the worker's
    (hand it to code that only knows ``submit``/``poll``, e.g. ``ExplainService``)."""

    def __init__(self, worker: Worker, lane: Lane) -> None:
        self.worker = worker
        self.lane = lane

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        kwargs.setdefault("lane", self.lane)
        return self.worker.submit(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.worker, name)


class Worker:
    """Daemon threads running jobs in order, one per lane (see the module docstring).

    One thread per lane (not a pool) because the jobs share the torch thread budget: two
    fine-tunes at once would both be slower and could fight over the same model version.
    """

    def __init__(self, name: str = "latent-reach-worker", torch_threads: int | None = 1) -> None:
        self._done: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._next_id = 1
        self._lock = threading.Lock()
        self._torch_threads = torch_threads
        self._name = name
        self._closed = False
        self._lanes: dict[str, _LaneThread] = {BACKGROUND: _LaneThread(self, BACKGROUND, name)}
        _LIVE_WORKERS.add(self)

    # The background lane under its old names (callers and tests read these).
    @property
    def current(self) -> Job | None:
        return self._lanes[BACKGROUND].current

    @property
    def _thread(self) -> threading.Thread:
        return self._lanes[BACKGROUND].thread

    def _lane(self, lane: str) -> _LaneThread:
        with self._lock:
            found = self._lanes.get(lane)
            if found is None:
                if lane != INTERACTIVE:
                    raise ValueError(f"unknown worker lane {lane!r} (background or interactive)")
                found = _LaneThread(self, lane, f"{self._name}-{lane}")
                if self._closed:
                    found.jobs.put(None)
                self._lanes[lane] = found
            return found

    def lane(self, lane: Lane) -> LaneView:
        """This worker with ``submit`` defaulting to ``lane``."""
        return LaneView(self, lane)

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        name: str = "job",
        on_done: Callable[[Job], None] | None = None,
        on_error: Callable[[Job], None] | None = None,
        lane: Lane = BACKGROUND,
    ) -> Job:
        """Queue ``fn(*args)`` on ``lane``; callbacks run later inside ``poll`` on the polling thread."""
        target = self._lane(lane)
        with self._lock:
            job = Job(self._next_id, name, on_done=on_done, on_error=on_error, fn=fn, args=args, lane=lane)
            self._next_id += 1
        target.jobs.put(job)
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

    def wait_idle(self, timeout: float | None = None, lane: Lane | None = None) -> bool:
        """Block until every job submitted so far (to ``lane``, or to every lane) has finished
        (headless scripts and tests only)."""
        with self._lock:
            lanes = [self._lanes[lane]] if lane in self._lanes else [] if lane else list(self._lanes.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        markers = []
        for one in lanes:
            marker = threading.Event()
            one.jobs.put(Job(0, "__idle__", fn=marker.set))
            markers.append(marker)
        for marker in markers:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not marker.wait(left):
                return False
        return True

    def close(self, wait: bool = False, timeout: float | None = 30.0) -> bool:
        """Stop after the queued jobs; with ``wait``, join the threads (True when they ended).

        Join before the interpreter exits when a job may still be running: torch aborts the
        process if its threads are torn down under a running op.
        """
        with self._lock:
            self._closed = True
            lanes = list(self._lanes.values())
        for one in lanes:
            one.jobs.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for one in lanes:
                if one.thread is not threading.current_thread():
                    one.thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return not any(one.thread.is_alive() for one in lanes)

    def drop_queued(self) -> int:
        """Cancel every job not started yet (their ``on_error`` runs at the next ``poll``); a close
        request among them is kept, at the end."""
        with self._lock:
            lanes = list(self._lanes.values())
        return sum(self._drop_lane(one) for one in lanes)

    def _drop_lane(self, lane: _LaneThread) -> int:
        dropped, closing = 0, False
        while True:
            try:
                job = lane.jobs.get_nowait()
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
            lane.jobs.put(None)
        return dropped

    @property
    def busy(self) -> bool:
        """A job runs on any lane."""
        return any(one.current is not None for one in list(self._lanes.values()))

    def _loop(self, lane: _LaneThread) -> None:
        if self._torch_threads:
            try:
                import torch

                torch.set_num_threads(self._torch_threads)
            except ImportError:
                pass
        job: Job | None = None
        while True:
            job = None  # not the last job while waiting: it would keep its arguments and result alive
            job = lane.jobs.get()
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
            lane.current = job
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
                lane.current = None
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
