"""Leave the CPU to a fine-tune job while the frames are drawn in software.

Why: with a GPU the frame loop costs little CPU and waits on the buffer swap (vsync). With a
software OpenGL (Mesa's llvmpipe on a machine or VM without a GPU driver, or Windows' GDI
fallback) there is no vsync to wait on, and drawing thousands of cards takes every core it is
given, frame after frame. The job process runs at a lower priority (``learning.job_nice``) so
that the frames win the CPU, which is what a person wants from a GPU machine; on a software
renderer it meant the job got a small share of one core: a first fine-tune of an AlexNet-shaped
network over 5,200 photos took 263 s in a real window on two cores (issue 17's outside try).

``FramePacer`` pauses the frame loop, while a job runs, for as long as the last frame took, so
the loop keeps at most ``share`` of the time and the job the rest; the world keeps moving, at a
lower frame rate, only while the job runs. Nothing changes with a hardware renderer, or when the
frames are stepped by hand (``LatentReachApp.step``: tests, benchmarks, the demo).

No panda3d here: the renderer's name comes from the caller.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

# Substrings (lower case) of OpenGL renderer strings that mean drawing on the CPU.
SOFTWARE_RENDERERS = (
    "llvmpipe",  # Mesa (Linux, and Windows through the Mesa3D builds)
    "softpipe",  # Mesa's reference rasteriser
    "swrast",  # Mesa's classic software rasteriser
    "swiftshader",  # Google's CPU renderer (some VMs, remote desktops)
    "gdi generic",  # Windows' OpenGL 1.1 fallback without a GPU driver
    "software rasterizer",  # others' CPU fallbacks
    "software renderer",  # Apple's
)

FRAME_SHARE = 0.5  # while a job runs on a software renderer: the frame loop's share of the time
MAX_PAUSE_S = 0.2  # never pause one frame longer than this (the world stays responsive)
SOFTWARE_FPS_CAP = 60.0  # frames per second at most on a software renderer (no vsync to wait on)


def is_software_renderer(renderer: str) -> bool:
    """Whether an OpenGL renderer string (``GL_RENDERER``) names a CPU rasteriser."""
    name = renderer.lower()
    return any(marker in name for marker in SOFTWARE_RENDERERS)


def pacing_wanted() -> bool:
    """False when ``LATENT_REACH_FRAME_PACING=0`` (to measure the difference it makes)."""
    return os.environ.get("LATENT_REACH_FRAME_PACING", "1").strip() not in ("0", "false", "no", "off")


class FramePacer:
    """Per frame, ``pace(yielding)``: when ``yielding``, sleep so that the frame's own work (the
    time since the last pace returned) is at most ``share`` of the wall time; else nothing.

    ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        share: float = FRAME_SHARE,
        max_pause: float = MAX_PAUSE_S,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the frame loop's share must be in (0, 1], not {share}")
        self.share = share
        self.max_pause = max_pause
        self._clock = clock
        self._sleep = sleep
        self._resumed: float | None = None
        self.paused_s = 0.0  # total pause so far (reported by benchmarks)

    def pace(self, yielding: bool) -> float:
        """Pause if ``yielding``; returns the pause in seconds."""
        now = self._clock()
        pause = 0.0
        if yielding and self._resumed is not None:
            worked = max(now - self._resumed, 0.0)
            pause = min(worked * (1.0 - self.share) / self.share, self.max_pause)
            if pause >= 0.001:
                self._sleep(pause)
                self.paused_s += pause
                now = self._clock()
            else:
                pause = 0.0
        self._resumed = now
        return pause
