import threading

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
