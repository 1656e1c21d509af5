"""Frame pacing on a software renderer: the frame loop leaves a running job its share of the CPU."""

from __future__ import annotations

import time

import pytest

from game.world.frame_pacing import FramePacer, is_software_renderer, pacing_wanted


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("renderer", "software"),
    [
        ("llvmpipe (LLVM 15.0.6, 256 bits)", True),
        ("Mesa OffScreen softpipe", True),
        ("Google SwiftShader", True),
        ("GDI Generic", True),
        ("Apple Software Renderer", True),
        ("Software Rasterizer", True),
        ("NVIDIA GeForce RTX 3080/PCIe/SSE2", False),
        ("AMD Radeon RX 6800 XT (radeonsi, navi21, LLVM 15.0.7, DRM 3.49)", False),
        ("Mesa Intel(R) UHD Graphics 620 (KBL GT2)", False),
    ],
)
def test_software_renderers_are_recognised(renderer: str, software: bool) -> None:
    assert is_software_renderer(renderer) is software


def test_a_paced_loop_keeps_its_share_and_the_job_gets_the_rest() -> None:
    t = FakeTime()
    pacer = FramePacer(share=0.5, max_pause=1.0, clock=t.clock, sleep=t.sleep)
    pacer.pace(True)  # the first frame: nothing to measure yet
    work = 0.0
    for frame in range(100):
        spent = 0.02 + 0.01 * (frame % 3)  # a frame's own drawing and hooks
        t.now += spent
        work += spent
        pacer.pace(True)
    assert work / t.now == pytest.approx(0.5, abs=1e-9)
    assert pacer.paused_s == pytest.approx(work)


def test_no_pause_without_a_job_and_pauses_are_bounded() -> None:
    t = FakeTime()
    pacer = FramePacer(share=0.25, max_pause=0.1, clock=t.clock, sleep=t.sleep)
    for _ in range(10):
        t.now += 0.05
        assert pacer.pace(False) == 0.0
    assert t.sleeps == []
    t.now += 0.5  # a slow frame (a texture upload): its pause is cut to max_pause
    assert pacer.pace(True) == pytest.approx(0.1)
    t.now += 0.01  # share 0.25: three times the frame's work
    assert pacer.pace(True) == pytest.approx(0.03)
    t.now += 0.0002  # below a millisecond: not worth a sleep
    assert pacer.pace(True) == 0.0
    assert t.sleeps == [pytest.approx(0.1), pytest.approx(0.03)]


def test_the_time_before_a_job_starts_is_not_counted_as_frame_work() -> None:
    t = FakeTime()
    pacer = FramePacer(share=0.5, max_pause=1.0, clock=t.clock, sleep=t.sleep)
    pacer.pace(False)
    t.now += 0.02
    pacer.pace(False)
    t.now += 0.02
    assert pacer.pace(True) == pytest.approx(0.02)  # only the last frame's work


def test_share_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        FramePacer(share=0.0)


def test_pacing_can_be_switched_off_for_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENT_REACH_FRAME_PACING", raising=False)
    assert pacing_wanted()
    monkeypatch.setenv("LATENT_REACH_FRAME_PACING", "0")
    assert not pacing_wanted()


def test_the_app_names_its_renderer_and_paces_real_time_frames_only_during_a_job(loaded_digits) -> None:
    """Offscreen through EGL: the renderer is named after the first frame; frames run by the
    task manager in real time pause while the worker has a job, and not otherwise; frames run by
    ``step`` (tests, the demo) never pause."""
    import threading

    from game.app import LatentReachApp
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    app = LatentReachApp(loaded, offscreen=True, size=(320, 200), multisamples=0)
    release = threading.Event()
    t = FakeTime()

    def tick() -> float:  # every reading 10 ms on: each frame's work is 10 ms whatever the machine
        t.now += 0.01
        return t.now

    try:
        app.step(0.0)
        app.step(0.0)
        renderer = app.win.get_gsg().get_driver_renderer()
        assert renderer and app.software_renderer is is_software_renderer(renderer)
        app.software_renderer = True  # the same on a machine with a GPU
        app._pacing = True
        app._pacer = FramePacer(clock=tick, sleep=t.sleep)
        for _ in range(5):
            app.task_mgr.step()
        assert app._pacer.paused_s == 0.0  # no job: frames run at once
        app.worker.submit(release.wait, 30.0, name="a job")
        deadline = time.monotonic() + 30
        while not app.worker.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.worker.busy
        for _ in range(5):
            app.step(1 / 60)
        assert app._pacer.paused_s == 0.0  # stepped frames are never paced
        for _ in range(5):
            app.task_mgr.step()
        assert app._pacer.paused_s > 0.0
    finally:
        release.set()
        app.destroy()
