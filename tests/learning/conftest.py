"""Fixtures shared by the learning tests."""

import pytest
import torch

from game.core.worker import Worker


@pytest.fixture
def worker():
    """A one-thread worker, closed after the test."""
    w = Worker(torch_threads=1)
    yield w
    w.close(wait=True, timeout=10)


@pytest.fixture
def served_child(loaded_digits):
    """The job child's loop (``jobprocess._serve``) on a thread, initialised with the digits
    network: the same code as in the child process, where a test can patch what it calls and
    where the size thresholds it sets apply. Yields the parent's end of the pipe."""
    import multiprocessing
    import threading

    from game.learning import jobprocess

    here, there = multiprocessing.Pipe(duplex=True)
    child = threading.Thread(target=jobprocess._serve, args=(there, 1), daemon=True)
    child.start()
    try:
        ws = loaded_digits.workspace
        net = loaded_digits.network
        init = jobprocess.InitMessage("net0", net, ws.images, ws.images.strides, ws.is_train.copy(), False, 2)
        jobprocess._put(here, init)
        assert isinstance(jobprocess._get(here), jobprocess.OkMessage)
        yield here
    finally:
        jobprocess._put(here, jobprocess.QuitMessage())
        child.join(60)
        here.close()
        there.close()


@pytest.fixture
def one_torch_thread():
    """Torch on one intra-op thread for the test (the threads a test compares are its own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
