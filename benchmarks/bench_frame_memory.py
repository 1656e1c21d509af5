"""Does the app's memory stay flat while it draws? RSS per block of frames, offscreen.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_frame_memory.py [--blocks 6] [--frames 300]
[--drops-every 0] [--subtree NAME] [--scene PATH] [--card-size S] [--job-sim]``

Opens the embedded default (digits), or ``--scene PATH``, as the desktop game does (``game.assembly.open_game``,
offscreen), draws ``--warm`` frames (first uploads, shader compiles: not counted), then
``--blocks`` blocks of ``--frames`` frames each, printing how far the resident set (RSS) rose in
each block, and, beside it, the Python heap's growth (``tracemalloc``) and the number of live
Python objects: RSS growing while those stay flat points below Python (the renderer, the driver,
the C allocator). ``--drops-every S`` drops a card into another class's cluster every S seconds
of frame time (a fine-tune runs, the cards tween), as a person editing would. ``--subtree NAME``
draws only that child of the world's node (``cards``, ``centroids``...), to see which part grows.
``--no-render`` keeps every per-frame task but removes Panda3D's draw task: the peer that says
whether the growth comes from drawing. ``--card-size S`` draws the cards at another size (how
much of the screen they cover), ``--job-sim`` does each frame what the world does while a long
job runs (a progress ``JobStatus``, the card states, a preview retarget every 10 frames), without
a job. ``--hide NAME`` hides that child of the world's node.

Finding (issue 17, 2026-12-03): the growth is llvmpipe's (Mesa 22.3), inside the draw call of the
cards, in proportion to the screen area they cover; none with ``LP_NUM_THREADS=0`` (see
docs/benchmarks.md, "Memory while drawing during a job").

Why: with the world drawn by llvmpipe, a 600-card AlexNet scene's app process grew by about 2.3 GB
during one 90-second fine-tune (``bench_scale --cards 600``), and by 0.2 GB without the world.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 1024 * 1024


def rss_mb() -> float:
    """Resident set size in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--frames", type=int, default=300, help="frames per block (1/30 s each)")
    parser.add_argument("--warm", type=int, default=600, help="frames drawn before the first block")
    parser.add_argument("--size", default="640x400")
    parser.add_argument("--drops-every", type=float, default=0.0, help="seconds of frame time between drops")
    parser.add_argument("--subtree", default="", help="draw only this child of the world node")
    parser.add_argument("--no-render", action="store_true", help="remove Panda3D's draw task (the peer)")
    parser.add_argument("--scene", default="", help="a scene file (default: the embedded digits)")
    parser.add_argument("--card-size", type=float, default=0.0, help="draw the cards at this size")
    parser.add_argument("--hide", default="", help="hide this child of the world node")
    parser.add_argument("--image-size", type=int, default=0, help="the scene's dataset.image_size instead")
    parser.add_argument("--epochs", type=int, default=0, help="the scene's network.train_epochs instead")
    parser.add_argument(
        "--no-gl-finish", action="store_true", help="the peer: offscreen frames not finished (as before)"
    )
    parser.add_argument(
        "--job-sim", action="store_true", help="per frame: job progress, card states, retargets"
    )
    args = parser.parse_args()

    from game.assembly import open_game
    from game.core.scene import load_scene
    from game.learning.headless import drop_position
    from game.pipeline import open_scene

    width, height = (int(v) for v in args.size.lower().split("x"))
    from game.core import events as ev
    from game.world import engine

    engine.OFFSCREEN_FINISH = not args.no_gl_finish
    scene = load_scene(args.scene or None)
    if args.image_size:
        scene.dataset.image_size = args.image_size
    if args.epochs:
        scene.network.train_epochs = args.epochs
    loaded = open_scene(scene, progress=False)
    game = open_game(loaded, offscreen=True, size=(width, height))
    app = game.app
    ws = loaded.workspace
    rng = np.random.default_rng(0)
    dt = 1.0 / 30.0
    since_drop = [0.0]
    frames = [0]
    if args.card_size > 0:
        app.world.set_card_size(args.card_size)
    if args.hide:
        app.render.find("world").find(args.hide).hide()

    def frame() -> None:
        if args.drops_every > 0:
            since_drop[0] += dt
            if since_drop[0] >= args.drops_every:
                since_drop[0] = 0.0
                card = int(rng.choice(np.flatnonzero(ws.is_train)))
                target = int((ws.labels[card] + 1) % ws.n_classes)
                ws.post(ws.drop_event(card, drop_position(loaded, card, target, rng)))
        if args.job_sim:
            frames[0] += 1
            ws.post(ev.JobStatus(1, "running", "", (frames[0] % 300) / 300, "finetune"))
            app.world.cards.set_states(ws.card_state)
            if frames[0] % 10 == 0:
                jitter = rng.normal(0.0, 0.05, ws.positions.shape).astype(np.float32)
                app.world.retarget(ws.positions + jitter)
        app.step(dt)

    for _ in range(args.warm):
        frame()
    if args.subtree:
        world = app.render.find("world")
        for child in world.get_children():
            if child.get_name() != args.subtree:
                child.hide()
    if args.no_render:
        for task in list(app.task_mgr.getAllTasks()):
            if task.name == "igLoop":
                app.task_mgr.remove(task)
    print(
        f"bench_frame_memory: {loaded.scene.scene.name}, {ws.n_cards} cards of {ws.images.shape[1]} px, card size "
        f"{app.world.config.card_size}, {'job simulated' if args.job_sim else 'no job'}, LP_NUM_THREADS="
        f"{os.environ.get('LP_NUM_THREADS', '-')}, gl-finish {engine.OFFSCREEN_FINISH}, {args.size}, {args.blocks} blocks of {args.frames} frames after "
        f"{args.warm} warm-up frames; drops every {args.drops_every or '-'} s; subtree "
        f"{args.subtree or 'all'}; {'draw task removed' if args.no_render else 'drawn'}; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tracemalloc.start()
    start = rss_mb()
    for block in range(args.blocks):
        before, heap_before = rss_mb(), tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        for _ in range(args.frames):
            frame()
        ms = 1000 * (time.perf_counter() - t0) / args.frames
        gc.collect()
        print(
            f"block {block}: RSS {before:7.0f} -> {rss_mb():7.0f} MB ({rss_mb() - before:+5.0f}); Python heap "
            f"{(tracemalloc.get_traced_memory()[0] - heap_before) / MB:+6.1f} MB; objects {len(gc.get_objects())}; {ms:.1f} ms/frame",
            flush=True,
        )
    total = rss_mb() - start
    print(
        f"RSS rose {total:+.0f} MB over {args.blocks * args.frames} frames ({total / args.blocks:+.0f} per block)"
    )
    game.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
