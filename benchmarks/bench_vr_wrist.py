"""Python work per VR frame added by the wrist menu and laser painting (issue 16).

Run: ``.venv/bin/python benchmarks/bench_vr_wrist.py [--cards 2000,50000] [--frames 300]``

For each card count (``bench_vr.synthetic`` cards) an offscreen app gets a ``SimulatedBackend``
session with the wrist menu attached (explanations stubbed: only the VR side is timed). Timed,
median over ``--frames`` calls, with the hands held still:

- ``controls``: ``VRControls.update`` with the menu closed and nothing under the lasers (the
  ray targets only ``place``);
- ``menu``: the menu open on the left hand, the right laser on a button: ``update`` (the menu's
  placement and hit test) plus ``WristMenu.draw``;
- ``paint``: the menu closed, a card selected, the right laser on its panel's image with the
  trigger held: ``update`` with the panel painter's hit test and a ``paint_uv`` call.

Rendering is not measured (tiny eye buffers); ``bench_vr.py --python-work`` measures the rest of
a VR frame's Python work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

HEAD, LEFT, RIGHT = [0.0, 0.0, 1.65], [-0.06, 0.33, 1.3], [0.18, 0.2, 1.25]


class _Explain:
    """Explanation controls that do nothing: the menu and the painter call them."""

    method = None
    painting = True
    last_whatif = None

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _median_ms(fn: Callable[[], object], frames: int) -> float:
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(n: int, frames: int) -> dict[str, float]:
    from bench_vr import synthetic

    from game.app import LatentReachApp
    from game.core import events as ev
    from game.vr import coords
    from game.vr.backend import ControllerState, FrameState, Pose
    from game.vr.launch import attach
    from game.vr.simulated import SimulatedBackend
    from game.vr.wrist_menu import PanelPainter, attach_wrist_menu

    loaded = synthetic(n)
    backend = SimulatedBackend([{}], size=(64, 48))
    backend.start()
    app = LatentReachApp(loaded, offscreen=True, size=(64, 48), controls=False, multisamples=0)
    try:
        session = attach(app, backend)
        menu = attach_wrist_menu(session, explain=_Explain(), guidance=None)  # type: ignore[arg-type]
        c = session.controls

        def state(aim: np.ndarray | None = None, trigger: bool = False) -> FrameState:
            hpr = (0.0, 0.0, 0.0)
            if aim is not None:
                d = (np.linalg.inv(c.rig.matrix()) @ np.append(aim, 1.0))[:3] - RIGHT
                hpr = (
                    np.degrees(np.arctan2(-d[0], d[1])),
                    np.degrees(np.arctan2(d[2], np.hypot(d[0], d[1]))),
                    0.0,
                )
            right = Pose(coords.compose(RIGHT, coords.hpr_to_rotation(*hpr)), True)
            hands = {
                "left": ControllerState(Pose(coords.compose(LEFT), True), connected=True),
                "right": ControllerState(right, connected=True, trigger=trigger),
            }
            return FrameState(1, Pose(coords.compose(HEAD, coords.hpr_to_rotation(0, -14, 0)), True), hands)

        idle = state()
        out = {"controls": _median_ms(lambda: c.update(idle), frames)}
        menu.toggle("left")
        c.update(idle)
        on_button = state(menu.centre_of("help"))
        c.update(on_button)
        assert menu.hovered == "help"

        def menu_frame() -> None:
            c.update(on_button)
            menu.draw()

        out["menu"] = _median_ms(menu_frame, frames)
        menu.close()
        app.workspace.post(ev.CardSelected(3))
        app.workspace.flush()
        app.step()
        app.world.panel.root.show()
        session.ui.update(
            c.head_position(), c.hand_position("left"), app.world.positions[3].astype(float), c.lasers
        )
        lo, hi = app.world.panel.image.get_tight_bounds(app.render)
        painting = state((np.array(lo) + np.array(hi)) / 2, trigger=True)
        c.update(painting)
        painter = next(t for t in c.targets if isinstance(t, PanelPainter))
        assert painter.last_uv is not None
        out["paint"] = _median_ms(lambda: c.update(painting), frames)
        session.stop()
        return out
    finally:
        app.task_mgr.remove("latent-reach-frame")
        app.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cards", default="2000,50000")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    for n in (int(x) for x in args.cards.split(",")):
        r = measure(n, args.frames)
        print(
            f"{n:>6} cards: controls {r['controls']:.3f} ms, menu open + laser on a button + draw "
            f"{r['menu']:.3f} ms, laser painting on the panel {r['paint']:.3f} ms (medians)"
        )


if __name__ == "__main__":
    main()
