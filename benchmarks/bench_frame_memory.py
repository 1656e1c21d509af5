"""Does the app's memory stay flat while it draws? RSS per block of frames, offscreen.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_frame_memory.py [--blocks 6] [--frames 300]
[--drops-every 0] [--subtree NAME]``

Opens the embedded default (digits) as the desktop game does (``game.assembly.open_game``,
offscreen), draws ``--warm`` frames (first uploads, shader compiles: not counted), then
``--blocks`` blocks of ``--frames`` frames each, printing how far the resident set (RSS) rose in
each block, and, beside it, the Python heap's growth (``tracemalloc``) and the number of live
Python objects: RSS growing while those stay flat points below Python (the renderer, the driver,
the C allocator). ``--drops-every S`` drops a card into another class's cluster every S seconds
of frame time (a fine-tune runs, the cards tween), as a person editing would. ``--subtree NAME``
draws only that child of the world's node (``cards``, ``centroids``...), to see which part grows.
``--no-render`` keeps every per-frame task but removes Panda3D's draw task: the peer that says
whether the growth comes from drawing.

Why: with the world drawn by llvmpipe, a 600-card AlexNet scene's app process grew by about 2.3 GB
during one 90-second fine-tune (``bench_scale --cards 600``), and by 0.2 GB without the world.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
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
    args = parser.parse_args()

    from game.assembly import open_game
    from game.core.scene import load_scene
    from game.learning.headless import drop_position
    from game.pipeline import open_scene

    width, height = (int(v) for v in args.size.lower().split("x"))
    loaded = open_scene(load_scene())
    game = open_game(loaded, offscreen=True, size=(width, height))
    app = game.app
    ws = loaded.workspace
    rng = np.random.default_rng(0)
    dt = 1.0 / 30.0
    since_drop = [0.0]

    def frame() -> None:
        if args.drops_every > 0:
            since_drop[0] += dt
            if since_drop[0] >= args.drops_every:
                since_drop[0] = 0.0
                card = int(rng.choice(np.flatnonzero(ws.is_train)))
                target = int((ws.labels[card] + 1) % ws.n_classes)
                ws.post(ws.drop_event(card, drop_position(loaded, card, target, rng)))
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
        f"bench_frame_memory: digits, {args.size}, {args.blocks} blocks of {args.frames} frames after "
        f"{args.warm} warm-up frames; drops every {args.drops_every or '-'} s; subtree "
        f"{args.subtree or 'all'}; {'draw task removed' if args.no_render else 'drawn'}; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tracemalloc.start()
    start = rss_mb()
    for block in range(args.blocks):
        before, heap_before = rss_mb(), tracemalloc.get_traced_memory()[0]
        for _ in range(args.frames):
            frame()
        gc.collect()
        print(
            f"block {block}: RSS {before:7.0f} -> {rss_mb():7.0f} MB ({rss_mb() - before:+5.0f}); Python heap "
            f"{(tracemalloc.get_traced_memory()[0] - heap_before) / MB:+6.1f} MB; objects {len(gc.get_objects())}",
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
