"""A replay's model store follows the version the replay shows, so its explanations read the
network of that moment (forward play and seeking back), not the session's starting network."""

import copy

import torch
from sessions_helpers import fine_tune_twice

from game.core.worker import Worker
from game.learning.controller import FineTuneController
from game.sessions.reader import SessionReader
from game.sessions.recorder import SessionRecorder
from game.sessions.replay import ReplayDriver
from game.sessions.replay_models import ReplayModelFollower
from game.sessions.restore import restore


def _same_weights(a, b) -> bool:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _record_two_fine_tunes(loaded, folder):
    loaded.scene = copy.deepcopy(loaded.scene)
    recorder = SessionRecorder.start(
        loaded.scene, loaded.workspace, folder=folder, store=loaded.models, layout=loaded.layout
    )
    worker = Worker(torch_threads=1)
    ctl = FineTuneController(loaded, worker, job_process=False)
    try:
        fine_tune_twice(loaded, ctl)
        live = {v: loaded.models.network(v) for v in (0, 1, 2)}
    finally:
        ctl.close()
        worker.close(wait=True, timeout=30)
        path = recorder.close()
    return path, live


def test_replay_store_follows_the_shown_version_forward_and_back(fresh_digits, tmp_path):
    path, live = _record_two_fine_tunes(fresh_digits, tmp_path)
    with SessionReader(path) as reader:
        shown = restore(reader).as_loaded()
        follower = ReplayModelFollower(reader, shown.models, shown.workspace)
        driver = ReplayDriver(reader, shown.workspace, auto_flush=True)
        try:
            assert _same_weights(shown.models.network(), live[0])
            driver.seek(driver.duration)
            assert shown.workspace.model_version == 2
            follower.update()
            follower.wait()
            assert shown.models.version == 2
            assert _same_weights(shown.models.network(), live[2])
            assert not _same_weights(shown.models.network(), live[0])
            driver.seek(0.0)
            follower.update()
            follower.wait()
            assert shown.models.version == 0
            assert _same_weights(shown.models.network(), live[0])
        finally:
            follower.close()


def test_a_version_the_file_lacks_is_said_once_and_the_replay_goes_on(fresh_digits, tmp_path):
    path, _ = _record_two_fine_tunes(fresh_digits, tmp_path)
    with SessionReader(path) as reader:
        shown = restore(reader).as_loaded()
        follower = ReplayModelFollower(reader, shown.models, shown.workspace, background=False)
        shown.workspace.model_version = 7  # no such checkpoint in the file
        follower.update()
        follower.update()
        said = [e for e in shown.workspace.flush() if "model version 7" in getattr(e, "text", "")]
        assert len(said) == 1
        assert shown.models.version == 0


def test_weights_are_read_off_the_frame_loop_through_their_own_connection(fresh_digits, tmp_path):
    """Seeking must not stall the frame loop on a read of the whole checkpoint: the follower's
    worker fetches it, and the reader answers that thread on a connection of its own."""
    import threading

    path, live = _record_two_fine_tunes(fresh_digits, tmp_path)
    with SessionReader(path) as reader:
        shown = restore(reader).as_loaded()
        follower = ReplayModelFollower(reader, shown.models, shown.workspace)
        readers: list[int] = []
        real = reader.model_weights

        def spying(version: int) -> bytes:
            readers.append(threading.get_ident())
            return real(version)

        reader.model_weights = spying  # type: ignore[method-assign]
        try:
            shown.workspace.model_version = 2
            follower.update()
            follower.wait()
            assert shown.models.version == 2 and _same_weights(shown.models.network(), live[2])
            assert readers and threading.get_ident() not in readers
            assert len(reader._other_threads) == 1  # the worker's own connection
            assert reader._connection() is reader._conn  # the frame loop keeps its own
        finally:
            follower.close()
    assert not reader._other_threads  # closed with the reader


def test_a_missing_version_on_the_worker_is_said_once_too(fresh_digits, tmp_path):
    path, _ = _record_two_fine_tunes(fresh_digits, tmp_path)
    with SessionReader(path) as reader:
        shown = restore(reader).as_loaded()
        follower = ReplayModelFollower(reader, shown.models, shown.workspace)
        try:
            shown.workspace.model_version = 7
            follower.update()
            follower.wait()
            follower.update()
            said = [e for e in shown.workspace.flush() if "model version 7" in getattr(e, "text", "")]
            assert len(said) == 1
            assert shown.models.version == 0
        finally:
            follower.close()


def test_a_fetch_after_close_opens_no_connection(fresh_digits, tmp_path):
    """The follower's pool is shut down without waiting: a fetch still running when the reader
    closes must fail cleanly instead of opening a connection nobody closes (on Windows that
    would keep a truncated copy's temporary file from being deleted)."""
    import threading

    from game.sessions.paths import SessionError

    path, _ = _record_two_fine_tunes(fresh_digits, tmp_path)
    reader = SessionReader(path)
    reader.close()
    failures: list[BaseException] = []

    def fetch() -> None:
        try:
            reader.model_weights(1)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            failures.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    worker.join()
    assert len(failures) == 1 and isinstance(failures[0], SessionError)
    assert not reader._other_threads
