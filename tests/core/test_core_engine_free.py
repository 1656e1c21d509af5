"""The learning core never loads the engine: headless tools, the worker and CI stay Panda3D-free.

A fresh interpreter imports every module of the core packages (and ``game.pipeline``); neither
``panda3d`` nor ``direct`` may end up in ``sys.modules``, directly or through another module.
"""

import subprocess
import sys

CORE_PACKAGES = ("core", "data", "nets", "layout", "learning", "explain", "sessions", "export")

_SCRIPT = """
import importlib, pkgutil, sys
for pkg in {packages!r}:
    package = importlib.import_module("game." + pkg)
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        importlib.import_module(info.name)
importlib.import_module("game.pipeline")
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("panda3d", "direct"))))
"""


def test_core_packages_never_import_panda3d():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(packages=CORE_PACKAGES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"engine modules loaded by the learning core: {proc.stdout}"
