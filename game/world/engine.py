"""Panda3D start-up settings: window or offscreen (EGL), caches, and display detection.

Must run before the first ``ShowBase`` is created, because Panda3D reads its PRC configuration
when the graphics pipe opens. Offscreen rendering goes through EGL (``p3headlessgl``):
p3tinydisplay, the other headless option, has no shaders and so cannot draw instanced cards.
"""

from __future__ import annotations

import os
import sys

from panda3d.core import load_prc_file_data

#: Offscreen frames end with ``glFinish`` (``gl-finish``); False only for the benchmarks' peer run.
OFFSCREEN_FINISH = True


def display_available() -> bool:
    """True where a desktop window can open (X11 or Wayland on Linux; always on macOS/Windows)."""
    if sys.platform.startswith("linux") or sys.platform.startswith("freebsd"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def configure(
    *,
    offscreen: bool,
    size: tuple[int, int] = (1280, 800),
    fullscreen: bool = False,
    title: str = "Latent Reach",
    multisamples: int = 4,
) -> None:
    """Write the PRC settings for the next ``ShowBase`` (window kind, size, caches, audio off)."""
    w, h = int(size[0]), int(size[1])
    lines = [
        f"win-size {w} {h}",
        f"window-title {title}",
        "audio-library-name null",
        "sync-video false" if offscreen else "sync-video true",
        "textures-power-2 none",
        "gl-coordinate-system default",
        "notify-level-device fatal",
        "print-pipe-types false",
        "notify-level-egldisplay error",
        f"framebuffer-multisample {1 if multisamples > 1 else 0}",
        f"multisamples {multisamples}",
    ]
    cache = os.environ.get("LATENT_REACH_MODEL_CACHE")
    if cache:
        lines.append(f"model-cache-dir {cache}")
    if offscreen:
        lines += ["load-display p3headlessgl", "window-type offscreen", "fullscreen false"]
        # Each frame finishes before the next starts, as a window's buffer swap makes it. Why:
        # nothing waits for an offscreen frame, so with llvmpipe's rasterizer threads behind
        # (2 cores, a fine-tune job on them) the app queued frames ahead, and llvmpipe's memory for
        # frames in flight grew by about 1 MB a frame, to +1.9 GB, while drawing 1,200 64 px
        # cards (docs/benchmarks.md, "Memory while drawing during a job").
        lines.append(f"gl-finish {'true' if OFFSCREEN_FINISH else 'false'}")
    else:
        lines += [
            "window-type onscreen",
            f"fullscreen {'true' if fullscreen else 'false'}",
            "gl-finish false",
        ]
    load_prc_file_data("latent-reach", "\n".join(lines))
