"""Where jobs run: the fallback decides in one place (thread while the child starts, thread after
it fails), without a real child process."""

import threading

import numpy as np

from game.learning.backend import FallbackBackend, ThreadBackend


class FakeProcess:
    name = "process"

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.error = None
        self.on_failed = None
        self._ready = threading.Event()
        self.runs = 0
        self.closed = False

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None

    @property
    def failed(self) -> bool:
        return self._ready.is_set() and self.error is not None

    def wait_ready(self, timeout=None) -> bool:
        return self._ready.wait(timeout)

    def prepare(self, network, images, is_train, cards_changed=False) -> None:
        pass  # the test finishes the start-up by hand

    def finish_start(self) -> None:
        if self.fail:
            self.error = RuntimeError("no child")
            self.on_failed(self.error)
        self._ready.set()

    def run(self, request, progress, cancelled):
        self.runs += 1
        return "process result"

    def cancel(self) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


class FakeThread:
    name = "thread"

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.prepared = 0

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout=None) -> bool:
        return self._ready.wait(timeout)

    def forget_cards(self) -> None:
        self._ready.clear()

    def prepare(self, network, images, is_train, cards_changed=False) -> None:
        self.prepared += 1
        self._ready.set()

    def run(self, request, progress, cancelled):
        return "thread result"

    def cancel(self) -> None:
        pass


def test_jobs_train_on_the_thread_while_the_child_starts_then_in_the_child():
    process, thread, said = FakeProcess(fail=False), FakeThread(), []
    backend = FallbackBackend(process, thread, said.append, thread_first=True)
    backend.prepare(None, None, None)
    assert thread.ready and not backend.ready
    assert backend.run(None, None, lambda: False) == "thread result"
    process.finish_start()
    assert backend.ready and backend.run(None, None, lambda: False) == "process result"
    assert said == []


def test_without_thread_first_a_job_waits_for_the_child():
    process, thread = FakeProcess(fail=False), FakeThread()
    backend = FallbackBackend(process, thread, lambda _m: None, thread_first=False)
    backend.prepare(None, None, None)
    assert not thread.ready
    threading.Timer(0.05, process.finish_start).start()
    assert backend.run(None, None, lambda: False) == "process result"


def test_a_child_that_fails_to_start_is_reported_once_and_jobs_use_the_thread():
    process, thread, said = FakeProcess(fail=True), FakeThread(), []
    backend = FallbackBackend(process, thread, said.append, thread_first=False)
    backend.prepare("net", "images", "is_train")
    process.finish_start()
    assert len(said) == 1 and "no child" in said[0]  # told when it failed, not at the first job
    assert backend.run(None, None, lambda: False) == "thread result"
    assert backend.run(None, None, lambda: False) == "thread result"
    assert process.closed and process.runs == 0 and len(said) == 1 and thread.prepared == 1


def test_replacing_kept_features_leaves_newer_ones_alone():
    """The shared features replace only the array they were made from: features kept since (a
    layer change, an added card) are not undone by a late swap."""
    backend = ThreadBackend(full_finetune=False, head_layers=2)
    old, shared, newer = (
        np.zeros((3, 2), np.float32),
        np.zeros((3, 2), np.float32),
        np.ones((4, 2), np.float32),
    )
    backend.keep_features(old, "projector")
    backend.replace_features(old, shared)
    assert backend._features[0] is shared and backend._features[1] == "projector"
    backend.keep_features(newer, "projector")
    backend.replace_features(shared, old)
    assert backend._features[0] is newer
