"""The interactive lane does not wait behind the background lane; events say what they change."""

import threading

from game.core import events as ev
from game.core.worker import Worker
from game.core.workspace import Workspace


def test_interactive_job_finishes_while_a_background_job_blocks():
    worker = Worker(torch_threads=None)
    release = threading.Event()
    order: list[str] = []
    try:
        worker.submit(release.wait, 30, name="long fine-tune", on_done=lambda j: order.append("background"))
        view = worker.lane("interactive")
        view.submit(lambda: 42, name="heat map", on_done=lambda j: order.append(f"interactive {j.result}"))
        assert worker.wait_idle(10, lane="interactive")
        worker.poll()
        assert order == ["interactive 42"] and worker.busy  # the background job still runs
        release.set()
        assert worker.wait_idle(10)
        worker.poll()
        assert order == ["interactive 42", "background"]
    finally:
        release.set()
        assert worker.close(wait=True, timeout=10)


def test_drop_queued_and_close_reach_every_lane():
    worker = Worker(torch_threads=None)
    release = threading.Event()
    cancelled: list[str] = []
    started = threading.Event()

    def long_job() -> None:
        started.set()
        release.wait(30)

    worker.submit(long_job, lane="interactive")
    assert started.wait(10)
    worker.submit(
        lambda: None, name="queued", lane="interactive", on_error=lambda j: cancelled.append(j.state)
    )
    assert worker.drop_queued() == 1
    release.set()
    assert worker.close(wait=True, timeout=10)
    worker.poll()
    assert cancelled == ["cancelled"]


def test_state_flags_match_the_workspace_handlers():
    """``changes_state`` is what the session reader trusts; it must agree with what applies."""
    for kind, cls in ev.EVENT_TYPES.items():
        assert cls.changes_state == hasattr(Workspace, "_on_" + kind), kind
        if cls.superseded_by_model:
            assert cls.changes_state, kind
    derived = {k for k, cls in ev.EVENT_TYPES.items() if cls.derived}
    assert derived == {"edit", "job", "model", "message"}
