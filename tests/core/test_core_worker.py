import threading
import time

from game.core.worker import Worker


def test_callbacks_run_on_the_polling_thread_and_errors_are_caught():
    worker = Worker(torch_threads=None)
    results, errors, threads = [], [], []

    def boom():
        raise RuntimeError("kaput")

    worker.submit(
        lambda: 21 * 2,
        name="ok",
        on_done=lambda j: (results.append(j.result), threads.append(threading.get_ident())),
    )
    worker.submit(boom, name="bad", on_error=lambda j: errors.append(str(j.error)))
    worker.submit(lambda: 1, name="after")
    assert worker.wait_idle(10)
    finished = worker.poll()
    assert [j.name for j in finished] == ["ok", "bad", "after"]
    assert results == [42] and errors == ["kaput"]
    assert threads == [threading.get_ident()]
    assert finished[1].state == "failed" and "RuntimeError" in finished[1].traceback
    assert finished[2].state == "done"
    worker.close()


def test_cancelled_job_does_not_run():
    worker = Worker(torch_threads=None)
    gate = threading.Event()
    ran = []
    worker.submit(gate.wait, 5)
    job = worker.submit(lambda: ran.append(1))
    job.cancelled.set()
    gate.set()
    worker.wait_idle(10)
    worker.poll()
    assert job.state == "cancelled" and ran == []
    worker.close()


def test_interpreter_exit_waits_for_a_running_torch_job_instead_of_aborting():
    """A job still inside torch when the main thread ends used to abort the process (exit 134,
    'terminate called without an active exception') after all the work was done."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(
        """
        import sys, time
        import torch
        from game.core.worker import Worker
        sys.setswitchinterval(0.001)
        torch.set_num_threads(1)
        def busy():
            x, w = torch.randn(8, 3, 64, 64), torch.randn(16, 3, 3, 3)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                torch.nn.functional.conv2d(x, w)
        worker = Worker()
        worker.submit(busy)
        worker.submit(busy)  # queued: dropped at exit
        time.sleep(0.2)
        print("main thread done")
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "main thread done" in done.stdout


def test_drop_queued_cancels_jobs_not_started():
    import threading

    gate, started = threading.Event(), threading.Event()
    worker = Worker()
    first = worker.submit(lambda: (started.set(), gate.wait()))
    later = [worker.submit(lambda: None) for _ in range(3)]
    assert started.wait(10)
    assert worker.drop_queued() == 3
    gate.set()
    assert worker.wait_idle(10)
    finished = worker.poll()
    assert first.state == "done" and all(j.state == "cancelled" for j in later)
    assert {j.job_id for j in finished} == {first.job_id, *(j.job_id for j in later)}
    worker.close(wait=True)


def test_drop_queued_keeps_a_close_request_last():
    import threading

    gate, started = threading.Event(), threading.Event()
    ran: list[str] = []
    worker = Worker()
    worker.submit(lambda: (started.set(), gate.wait()))
    assert started.wait(10)
    worker.submit(lambda: ran.append("before close"))
    worker.close()
    worker.submit(lambda: ran.append("after close"))
    assert worker.drop_queued() == 2
    gate.set()
    worker._thread.join(10)
    assert not worker._thread.is_alive() and ran == []


def test_a_finished_job_keeps_nothing_alive_once_polled():
    """A lane waiting for its next job must not hold the last one: its arguments (and what its
    callback closes over) could be large, e.g. the app's 0.8 GB features at 50,000 cards."""
    import gc
    import weakref

    class Big:
        pass

    worker = Worker(torch_threads=None)
    try:
        big = Big()
        gone = weakref.ref(big)
        worker.submit(lambda b: None, big, on_done=lambda _job, b=big: None)
        del big
        deadline = time.monotonic() + 10  # not ``wait_idle``: its marker job would hide a leak
        while not worker.poll() and time.monotonic() < deadline:
            time.sleep(0.01)
        gc.collect()
        assert gone() is None
    finally:
        worker.close(wait=True, timeout=10)
