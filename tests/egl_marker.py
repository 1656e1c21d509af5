"""The ``egl`` marker: tests that open the app or render offscreen (EGL, Linux only).

``tests/conftest.py`` imports the two hooks below. A test module is marked when its source opens
the Panda3D app or renders (the patterns in ``EGL_PATTERNS``), so a new rendering test is marked
without anyone remembering to; the Windows/macOS workflow runs ``pytest -m "not egl"``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

EGL_PATTERNS = (
    "LatentReachApp",
    "make_app(",
    "render_snapshot",
    "offscreen",
    "ShowBase",
    "engine.configure",
    "p3headlessgl",
    'main(["run"',
    'main(["replay"',
    'main(["demo"',
    "run_app_with_vr",
)


@cache
def needs_egl(path: str) -> bool:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return False
    return any(p in text for p in EGL_PATTERNS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "egl: renders offscreen through EGL (Linux); skipped on Windows/macOS CI"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if needs_egl(str(item.path)):
            item.add_marker(pytest.mark.egl)
