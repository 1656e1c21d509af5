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


def test_features_are_prepared_in_the_pca_their_layout_carries_not_a_refit(monkeypatch):
    """A layout from the cache or a fit carries its PCA: the job's first reduction is that PCA's
    projection (what ``base_reduction`` would reduce in), without the refit (1.4 CPU s at 50k)."""
    from game.core.scene import LayoutConfig
    from game.layout import projector as projector_module
    from game.learning.preview import prepare_features

    rng = np.random.default_rng(4)
    features = np.maximum(rng.normal(size=(300, 40)), 0).astype(np.float32)
    proj = projector_module.Projector(LayoutConfig(pca_dims=8), n_jobs=1)
    basis = proj.reduction(features).basis()
    fits: list[int] = []
    real = projector_module.Projector.reduction
    monkeypatch.setattr(
        projector_module.Projector, "reduction", lambda self, x: fits.append(len(x)) or real(self, x)
    )
    backend = ThreadBackend(full_finetune=False, head_layers=2)
    backend.keep_features(features, proj, basis)
    backend.replace_features(np.zeros(1), features)  # another array: nothing changes
    assert backend._features is not None and backend._features[2] is basis
    prepare_features(*backend._features[:2], basis=backend._features[2])
    known = projector_module.known_reduction(features)
    assert known is not None and not fits
    assert np.array_equal(known.reduced, basis.transform(features)) and known.same_basis(basis)
    layout = projector_module.LayoutState(
        np.zeros((300, 3)), np.zeros(3), 1.0, np.zeros(3), np.zeros((300, 3))
    )
    layout.basis = basis
    assert proj.base_reduction(layout, features) is known
    other = features + 1.0
    prepare_features(other, proj)  # no layout PCA known: fitted, as before
    assert fits == [300]
