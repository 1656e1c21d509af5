"""Test settings shared by the whole suite.

Keeps the suite fast and hermetic on 2 cores: torch limited to one thread, every cache (trained
models, layouts, Panda3D's model cache, Mesa's shader cache) in a temporary folder for the run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="latent-reach-tests-"))
os.environ.setdefault("LATENT_REACH_CACHE", str(_TMP / "cache"))
os.environ.setdefault("MESA_SHADER_CACHE_DIR", str(_TMP / "mesa"))
os.environ.setdefault("MESA_GLSL_CACHE_DIR", str(_TMP / "mesa"))
os.environ.setdefault("LATENT_REACH_MODEL_CACHE", str(_TMP / "panda3d-models"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from egl_marker import pytest_collection_modifyitems, pytest_configure  # noqa: E402, F401 - the `egl` marker

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts with one torch thread: the thread count is process-wide, commands run
    in-process (``--threads N``) and Dask's in-process workers set it, and float sums differ
    with it (a bitwise thread-vs-process comparison failed after such a test)."""
    torch.set_num_threads(1)
    yield


# A fast layout for tests: few t-SNE iterations (the real defaults live in scenes/digits.toml).
FAST_LAYOUT = {"early_iterations": 50, "iterations": 100, "update_iterations": 40}


@pytest.fixture(scope="session")
def digits_scene():
    """The embedded default scene with a fast layout."""
    from game.core.scene import load_scene

    scene = load_scene()
    for k, v in FAST_LAYOUT.items():
        setattr(scene.layout, k, v)
    # Fine-tunes on the worker thread: each job process costs seconds to start and ~400 MB, and
    # its results are bitwise those of the thread (tests/learning/test_learning_jobprocess.py).
    scene.learning.job_process = False
    return scene


@pytest.fixture(scope="session")
def loaded_digits(digits_scene):
    """The embedded default opened once for the whole session (train, features, layout).

    Tests must not mutate it; use ``fresh_digits`` for a private copy.
    """
    from game.pipeline import open_scene

    return open_scene(digits_scene, progress=False)


def _private_copy(src):
    """A copy of a loaded scene whose network, layout and workspace may be changed."""
    import copy

    from game.pipeline import LoadedScene

    return LoadedScene(
        src.scene,
        src.dataset,
        src.network.clone(),
        src.projector,
        copy.deepcopy(src.layout),
        src.workspace.copy(),
        dict(src.timings),
    )


@pytest.fixture
def fresh_digits(loaded_digits):
    """A private copy of the loaded default that a test may change."""
    return _private_copy(loaded_digits)


@pytest.fixture(scope="module")
def module_digits(loaded_digits):
    """A private copy of the loaded default shared by one module's tests (e.g. one VR game)."""
    return _private_copy(loaded_digits)
