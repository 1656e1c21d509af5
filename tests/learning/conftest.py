"""Fixtures shared by the learning tests."""

import pytest

from game.core.worker import Worker


@pytest.fixture
def worker():
    """A one-thread worker, closed after the test."""
    w = Worker(torch_threads=1)
    yield w
    w.close(wait=True, timeout=10)
