"""``latent-reach demo --out DIR``: a scripted, recorded session on the embedded default.

A simulated hand (the same ``Hand`` a mouse or a VR controller drives) moves a card across
clusters (a relabel), one inside its own cluster (a reinforce), waits for the fine-tune, moves
another across, waits, then undoes the last fine-tune. The world is drawn offscreen through EGL
(or, where no GL works, plotted with matplotlib). The session is recorded like any other
(``latent-reach replay latest`` plays it back), and ``DIR`` gets ``before.png``, ``after.png`` and
``summary.txt``/``summary.json``. This is what the README runs where there is no display.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from game.commands._common import add_scene_argument, add_threads_argument, apply_threads, scene_from_args

if TYPE_CHECKING:
    from game.app import LatentReachApp

NAME = "demo"
HELP = "run a scripted, recorded session headless: moves, fine-tunes, an undo; screenshots + summary"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP

FPS = 30.0
DRAG_FRAMES = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="where to write screenshots and the summary"
    )
    add_scene_argument(parser)
    parser.add_argument("--sessions", metavar="DIR", default=None, help="sessions folder for the recording")
    parser.add_argument("--size", default="960x544", metavar="WxH", help="screenshot size (default 960x544)")
    parser.add_argument(
        "--renderer",
        choices=("auto", "world", "plot"),
        default="auto",
        help="draw with the Panda3D world offscreen, matplotlib, or whichever works (default)",
    )
    parser.add_argument(
        "--video",
        action="store_true",
        help="also export the recorded session as frames + replay.mp4 into DIR/replay",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(parser)


class _Stage:
    """The demo's frame loop, with the world offscreen or without it (plot screenshots)."""

    def __init__(self, loaded: Any, renderer: str, size: tuple[int, int]) -> None:
        self.loaded = loaded
        self.ws = loaded.workspace
        self.app: LatentReachApp | None = None
        self.now = 0.0
        if renderer in ("auto", "world"):
            try:
                from game.assembly import open_game

                # No controls or learning from the assembly: the demo drives its own hand and
                # controller (it also runs without the world, with plot screenshots).
                self.app = open_game(loaded, offscreen=True, size=size).app
                self.app.step(0.0)
            except Exception as exc:
                if renderer == "world":
                    from game.core.errors import UserError

                    raise UserError(f"cannot draw the world offscreen: {type(exc).__name__}: {exc}") from None
                print(f"latent-reach: world unavailable ({exc}); screenshots are plots", file=sys.stderr)
                self.app = None
        if self.app is not None:
            self.worker = self.app.worker
        else:
            from game.core.worker import Worker

            self.worker = Worker()
        self.hooks: list[Any] = []
        self.size = size

    @property
    def positions(self) -> np.ndarray:
        return self.app.world.positions if self.app is not None else self.ws.positions

    def step(self, dt: float = 1.0 / FPS) -> None:
        if self.app is not None:
            self.app.step(dt)  # hooks (controller, recorder), worker.poll, flush, tweens, draw
            self.now = self.app.now
        else:
            self.now += dt
            for hook in self.hooks:
                hook.update(self.now)
            self.worker.poll()
            self.ws.flush()

    def add_hook(self, hook: Any) -> None:
        if self.app is not None:
            self.app.frame_hooks.append(hook)
        else:
            self.hooks.append(hook)

    def screenshot(self, path: Path) -> Path:
        if self.app is not None:
            return self.app.screenshot(path)
        import imageio.v2 as iio

        from game.commands._session_export import PlotRenderer

        plot = PlotRenderer(self.ws, self.size)
        try:
            iio.imwrite(path, plot.render(self.now, path.stem))
        finally:
            plot.close()
        return path

    def camera_pose(self) -> tuple[float, ...]:
        if self.app is not None:
            from game.commands._session_world import node_pose

            return node_pose(self.app.camera, self.app.render)
        return (0.0, -4.5, 1.9, 0.985, -0.174, 0.0, 0.0)

    def close(self) -> None:
        if self.app is not None:
            self.app.destroy()
        else:
            self.worker.close()


class _HandPoses:
    """Frame hook: records the camera as the head and the simulated hand as the right controller."""

    def __init__(self, stage: _Stage, recorder: Any, hand: Any) -> None:
        self.stage, self.recorder, self.hand = stage, recorder, hand

    def update(self, now: float) -> None:
        p = self.hand.position
        right = None if p is None else (p, (1.0, 0.0, 0.0, 0.0))
        self.recorder.record_pose(None, self.stage.camera_pose(), None, right)


def _pick_moves(ws: Any) -> list[tuple[str, int, np.ndarray]]:
    """(what, card, target) for the scripted moves, chosen from the layout so they make sense.

    Across: the training card of class A lying nearest to class B's centroid, dropped at B's
    centroid (a plausible confusion to correct). Inside: the training card farthest from its own
    centroid, dropped at that centroid (a confident reinforce).
    """
    centroids = ws.centroids()
    train = np.flatnonzero(ws.is_train)
    labels = ws.labels
    k = ws.n_classes
    moves: list[tuple[str, int, np.ndarray]] = []
    used: set[int] = set()

    def across(a: int, b: int) -> None:
        cand = train[(labels[train] == a) & ~np.isin(train, list(used))]
        d = np.linalg.norm(ws.positions[cand] - centroids[b], axis=1)
        card = int(cand[np.argmin(d)])
        used.add(card)
        moves.append((f"across: {ws.class_names[a]} -> {ws.class_names[b]}", card, centroids[b].copy()))

    def inside(a: int) -> None:
        cand = train[(labels[train] == a) & ~np.isin(train, list(used))]
        d = np.linalg.norm(ws.positions[cand] - centroids[a], axis=1)
        card = int(cand[np.argmax(d)])
        used.add(card)
        moves.append((f"inside: {ws.class_names[a]} to its centre", card, centroids[a].copy()))

    across(3 % k, 8 % k)
    inside(5 % k)
    across(1 % k, 7 % k)
    return moves


def run(args: argparse.Namespace) -> int:
    from game.commands._session_export import write_summary
    from game.controls.hand import Hand
    from game.core import events as ev
    from game.learning.controller import FineTuneController
    from game.pipeline import open_scene
    from game.sessions.reader import SessionReader
    from game.sessions.recorder import SessionRecorder
    from game.world.offscreen import parse_size

    started = time.perf_counter()
    apply_threads(args)
    size = parse_size(args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = scene_from_args(args)
    loaded = open_scene(scene, progress=not args.quiet)
    ws = loaded.workspace
    timings = {"open_scene": round(time.perf_counter() - started, 2)}

    stage = _Stage(loaded, args.renderer, size)
    recorder = SessionRecorder.start(
        scene,
        ws,
        folder=args.sessions,
        store=loaded.models,  # every model version, fetched on the recorder's thread
        layout=loaded.layout,
        label="demo",
        meta={"produced_by": "latent-reach demo"},
    )
    controller = FineTuneController(loaded, stage.worker, clock=lambda: stage.now)
    hand = Hand(ws, positions=lambda: stage.positions, card_size=scene.world.card_size, name="right")
    stage.add_hook(controller)
    stage.add_hook(hand)
    stage.add_hook(_HandPoses(stage, recorder, hand))
    log: list[str] = []

    def say(text: str) -> None:
        log.append(text)
        if not args.quiet:
            print(text, file=sys.stderr)

    def settle(frames: int = 40) -> None:
        for _ in range(frames):
            stage.step()

    def wait_for_model(what: str) -> None:
        """Run frames until every drop is learned (or undone) and the cards have tweened."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + 600
        while (controller.busy or controller.pending) and time.monotonic() < deadline:
            if controller.busy:
                stage.worker.wait_idle(5.0)  # the job runs on the worker; no need to draw meanwhile
            stage.step()  # applies a finished job, or lets the delay after the last drop pass
        settle(int(FPS * scene.world.tween_seconds) + 5)  # let the cards tween to their places
        say(f"  {what}: model v{ws.model_version} in {time.perf_counter() - t0:.1f} s")

    try:
        settle(5)
        before = stage.screenshot(out / "before.png")
        moves = _pick_moves(ws)
        plan = [moves[0], moves[1], None, moves[2], None]
        for item in plan:
            if item is None:
                wait_for_model("fine-tune")
                continue
            what, card, target = item
            start = stage.positions[card].copy()
            hand.touch(start)
            if hand.hovered != card:  # another card sits on it: take that one's place exactly
                hand.hovered = card
            hand.select()
            hand.grab()
            for k in range(1, DRAG_FRAMES + 1):
                a = k / DRAG_FRAMES
                lift = np.array([0.0, 0.0, 0.15 * np.sin(np.pi * a)])
                hand.move_to(start + (target - start) * a + lift)
                stage.step()
            drop = hand.release(target)
            assert drop is not None  # the hand was carrying the card
            stage.step()
            say(f"moved card {card} ({what}); dropped near class {ws.class_names[drop.nearest_class]}")
        say("undo (the last fine-tune)")
        ws.post(ev.UndoRequested(hand="keyboard"))
        stage.step()
        for _ in range(int(FPS * 5)):  # the undo restores the previous weights on the worker
            if not controller.busy:
                break
            stage.worker.wait_idle(5.0)
            stage.step()
        wait_for_model("undo")
        after = stage.screenshot(out / "after.png")
    finally:
        controller.close()
        stage.close()
        path = recorder.close()
    timings["total"] = round(time.perf_counter() - started, 2)

    with SessionReader(path) as reader:
        summary = write_summary(
            reader,
            out,
            {
                "demo": {
                    "session": str(path),
                    "before": str(before),
                    "after": str(after),
                    "renderer": "world" if stage.app is not None else "matplotlib",
                    "log": log,
                    "seconds": timings,
                }
            },
        )
    print(f"demo session recorded: {path}")
    print(f"screenshots: {before} and {after}; summary: {out / 'summary.txt'}")
    for m in summary["models"]:
        print(
            f"  model v{m['version']}: held-out accuracy {m['heldout_accuracy']:.4f}  {m['summary'].splitlines()[0] if m['summary'] else ''}"
        )
    print(f"replay it: latent-reach replay {path} --export {out / 'replay'}   (or --verify)")
    if args.video:
        from game.commands._session_export import export_replay
        from game.commands.replay import make_renderer
        from game.sessions.replay import ReplayDriver
        from game.sessions.restore import restore

        with SessionReader(path) as reader:
            restored = restore(reader)
            driver = ReplayDriver(reader, restored.workspace, auto_flush=True, speed=2.0)
            renderer = make_renderer(args.renderer, restored)
            try:
                written = export_replay(driver, renderer, out / "replay", fps=10.0, progress=not args.quiet)
            finally:
                renderer.close()
        print(f"replay video: {written['video']} ({written['frames']} frames)")
    return 0
