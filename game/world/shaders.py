"""Loading the GLSL programs in ``shaders/`` (one place that knows where they live)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from panda3d.core import Shader

SHADER_DIR = Path(__file__).resolve().parents[2] / "shaders"


@cache
def load(name: str) -> Shader:
    """``name.vert`` + ``name.frag`` from ``shaders/``; a compile error names the file."""
    vert = (SHADER_DIR / f"{name}.vert").read_text(encoding="utf-8")
    frag = (SHADER_DIR / f"{name}.frag").read_text(encoding="utf-8")
    shader = Shader.make(Shader.SL_GLSL, vertex=vert, fragment=frag)
    if shader is None:
        raise RuntimeError(f"could not build shader {name} from {SHADER_DIR}")
    return shader
