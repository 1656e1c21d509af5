"""Rendering benchmark: per-frame CPU time and draw calls of the instanced card field.

Measures, on this machine's software OpenGL (offscreen EGL), for 1k, 10k and 50k synthetic 8x8
cards: the frame time idle and during a tween of every card, the card draw calls, and the tween's
per-frame CPU update (numpy tween + buffer write) alone. Compares with a naive one-node-per-card
scene at 1k cards measured in the same run (ratio), so the figures stay comparable on a busy
machine.

Run: .venv/bin/python benchmarks/bench_render.py [--size 960x600] [--frames 20]

``--texture-memory`` (issue 17) measures instead the card textures for N cards of 64x64 colour
images at fake positions (a 4 x 4 x 1.8 m box, as the scale benchmark's world): before (every card
a full 64 px tile) and after (32 px thumbnails + a fixed pool of full-resolution tiles): bytes
(our count and what Panda3D's GL back end reports for the prepared textures), build time, the
per-frame level-of-detail work (idle and while the viewer walks), the frame that uploads a pool
refresh, and how much a screenshot differs between the two (overview and close-up).

Run: .venv/bin/python benchmarks/bench_render.py --texture-memory [--counts 2000,20000,50000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, size=(n, 8, 8, 1), dtype=np.uint8)
    positions = (rng.random((n, 3)) * [4.0, 4.0, 1.8] + [-2.0, -2.0, 0.5]).astype(np.float32)
    labels = rng.integers(0, 10, n)
    return images, positions, labels


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def colour_images(n: int, side: int = 64, seed: int = 0) -> np.ndarray:
    """Structured colour images (a coloured disc with stripes on a tinted ground): like photos,
    detail at every scale, so a thumbnail is visibly softer than the full image up close."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = np.empty((n, side, side, 3), np.uint8)
    for first in range(0, n, 4096):
        k = min(4096, n - first)
        ground = rng.uniform(20, 120, (k, 1, 1, 3)).astype(np.float32)
        ink = rng.uniform(120, 255, (k, 1, 1, 3)).astype(np.float32)
        cx, cy, r = (rng.uniform(0.3, 0.7, (k, 1, 1)) for _ in range(3))
        freq = rng.uniform(6, 16, (k, 1, 1))
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < (r * 0.5) ** 2)[..., None]
        stripes = (np.sin((xx + yy) * freq * np.pi) > 0)[..., None]
        img = np.where(disc & stripes, ink, ground)
        out[first : first + k] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def texture_memory(args, w: int, h: int) -> int:
    """Issue 17: texture memory before/after the level of detail, at fake positions."""
    from game.world import engine

    engine.configure(offscreen=True, size=(w, h), multisamples=0)
    from direct.showbase.ShowBase import ShowBase

    from game.world.cards import CardField
    from game.world.palette import class_colours

    base = ShowBase(windowType="offscreen")
    base.disable_mouse()
    base.camLens.set_fov(70)
    base.camLens.set_near_far(0.03, 200)
    gsg = base.win.get_gsg()
    engine_frame = base.graphicsEngine.render_frame
    palette = class_colours(10)
    counts = [int(c) for c in args.counts.split(",")]
    all_images = colour_images(max(counts))
    results: dict = {"size": [w, h], "cards": {}}

    def frame() -> np.ndarray:
        engine_frame()
        tex = base.win.get_screenshot()
        data = np.frombuffer(bytes(tex.get_ram_image_as("RGB")), dtype=np.uint8)
        return data.reshape(tex.get_y_size(), tex.get_x_size(), 3)[::-1].astype(np.int16)

    def gl_bytes(field) -> int:
        textures = [*field._textures, field.data_texture, field.lod_texture]
        if field.lod:
            textures.append(field.pool_texture)
        total = 0
        for tex in textures:
            ctx = tex.prepare_now(0, gsg.get_prepared_objects(), gsg)
            total += int(ctx.get_data_size_bytes()) if ctx is not None else 0
        return total

    views = {
        "overview": ((0.0, -7.5, 3.0), (0.0, 0.0, 1.2)),  # the whole box in view
        "close-up": ((0.3, -1.2, 1.3), (0.3, 0.0, 1.2)),  # walking into the cloud's edge
    }
    for n in counts:
        images = all_images[:n]
        rng = np.random.default_rng(n)
        positions = (rng.random((n, 3)) * [4.0, 4.0, 1.8] + [-2.0, -2.0, 0.5]).astype(np.float32)
        colours = palette[rng.integers(0, 10, n)]
        row: dict = {}
        shots: dict[str, dict[str, np.ndarray]] = {}
        after = ("after", args.thumb)
        modes = [after] if n > args.before_max else [("before", None), after]
        for mode, thumb in modes:
            t0 = time.perf_counter()
            field = CardField(base.render, images, positions, colours, 0.08, thumb_side=thumb)
            build_s = time.perf_counter() - t0
            field.set_viewer(base.camera)
            entry: dict = {"build_s": round(build_s, 2)}
            shots[mode] = {}
            for name, (eye, target) in views.items():
                base.camera.set_pos(*eye)
                base.camera.look_at(*target)
                scans = field.near.scans_done
                for _ in range(1000):  # until a scan from here ended and its tiles are loaded
                    field.update_lod()
                    if not field.lod or (field.near.scans_done > scans and not field.tiles_waiting):
                        break
                frame()
                shots[mode][name] = frame()
            mem = field.texture_bytes()
            entry["bytes"] = mem
            entry["gl_bytes"] = gl_bytes(field)
            entry["full_res_cards"] = int(len(field.full_res_cards))
            if field.lod:
                # Idle: the viewer stands still (one comparison per frame).
                entry["lod_idle_ms"] = round(median_ms(field.update_lod, 200), 4)
                # Walking: the viewer moves 2 cm a frame; slices of the scan every frame.
                # Timed in CPU seconds of this thread (update_lod draws nothing; llvmpipe renders on others),
                # which a busy machine inflates far less than wall time.
                step_times, upload_frames, idle_frames = [], [], []
                for i in range(120):
                    base.camera.set_pos(0.3 + 0.02 * i, -1.2 + 0.01 * i, 1.3)
                    t0 = time.thread_time()
                    uploaded = field.update_lod()
                    step_times.append(time.thread_time() - t0)
                    t0 = time.perf_counter()
                    engine_frame()
                    base.win.get_screenshot()
                    (upload_frames if uploaded else idle_frames).append(time.perf_counter() - t0)
                entry["lod_walk_cpu_ms_median"] = round(1000 * statistics.median(step_times), 4)
                entry["lod_walk_cpu_ms_p90"] = round(1000 * float(np.percentile(step_times, 90)), 3)
                entry["lod_walk_cpu_ms_max"] = round(1000 * max(step_times), 3)
                entry["frames_with_pool_upload"] = len(upload_frames)
                if upload_frames and idle_frames:
                    entry["frame_ms_pool_upload"] = round(1000 * statistics.median(upload_frames), 2)
                    entry["frame_ms_no_upload"] = round(1000 * statistics.median(idle_frames), 2)
            field.destroy()
            base.graphicsEngine.render_frame()  # releases the destroyed field's textures
            row[mode] = entry
            print(f"{n:>6} cards {mode:>6}: {json.dumps(entry)}", flush=True)
        if "before" in shots:
            row["screenshot_difference"] = {}
            for name in views:
                diff = np.abs(shots["before"][name] - shots["after"][name]).max(axis=2)
                row["screenshot_difference"][name] = {
                    "mean_abs": round(float(diff.mean()), 3),
                    "pixels_over_24_levels_pct": round(100 * float((diff > 24).mean()), 3),
                }
                if args.shots:
                    from PIL import Image

                    for mode in shots:
                        im = Image.fromarray(shots[mode][name].astype(np.uint8))
                        im.save(Path(args.shots) / f"lod-{n}-{name}-{mode}-{args.thumb}.png")
            print(f"{n:>6} cards screenshot difference: {row['screenshot_difference']}", flush=True)
        results["cards"][n] = row
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    base.destroy()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="960x600")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--counts", default=None, help="card counts (default 1000,10000,50000)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--texture-memory", action="store_true", help="issue 17: LOD texture memory")
    parser.add_argument("--before-max", type=int, default=50000, help="largest N for the 'before' field")
    parser.add_argument("--shots", default="", help="--texture-memory: write screenshots to this folder")
    parser.add_argument("--thumb", type=int, default=32, help="--texture-memory: thumbnail side (px)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    if args.texture_memory:
        args.counts = args.counts or "2000,20000,50000"
        return texture_memory(args, w, h)
    args.counts = args.counts or "1000,10000,50000"

    from game.world import engine

    engine.configure(offscreen=True, size=(w, h), multisamples=0)
    from direct.showbase.ShowBase import ShowBase
    from panda3d.core import CardMaker, SamplerState

    from game.world.cards import CardField
    from game.world.palette import class_colours
    from game.world.panel import image_texture
    from game.world.tween import Tween

    base = ShowBase(windowType="offscreen")
    base.disable_mouse()
    base.camera.set_pos(0, -7.5, 3.0)
    base.camera.look_at(0, 0, 1.2)
    engine_frame = base.graphicsEngine.render_frame

    def render_frame():
        # llvmpipe rasterises on its own threads after the draw calls return; reading the frame
        # back waits for it, so each figure is a complete frame (readback cost printed below).
        engine_frame()
        base.win.get_screenshot()

    for _ in range(3):
        render_frame()
    readback = median_ms(render_frame, args.frames)
    print(f"empty frame with readback ({w}x{h}): {readback:.2f} ms", flush=True)
    palette = class_colours(10)
    results: dict = {"size": [w, h], "frames": args.frames, "empty_frame_ms": round(readback, 2), "cards": {}}

    for n in (int(c) for c in args.counts.split(",")):
        images, positions, labels = synthetic(n)
        t0 = time.perf_counter()
        field = CardField(base.render, images, positions, palette[labels], 0.08)
        build_ms = 1000 * (time.perf_counter() - t0)
        for _ in range(3):
            render_frame()
        idle = median_ms(render_frame, args.frames)
        idle_submit = median_ms(engine_frame, args.frames)
        render_frame()
        tween = Tween(positions, duration=1e9)  # never finishes during the measurement
        target = positions[::-1].copy()
        tween.retarget(target, now=0.0)
        clock = {"t": 0.0}

        def tween_step(tween=tween, field=field, clock=clock):
            clock["t"] += 1e6 / args.frames
            tween.update(clock["t"])
            field.set_positions(tween.current)

        def tween_frame(tween_step=tween_step):
            tween_step()
            render_frame()

        tween_frame_ms = median_ms(tween_frame, args.frames)

        def tween_submit(tween_step=tween_step):
            tween_step()
            engine_frame()

        tween_submit_ms = median_ms(tween_submit, args.frames)
        render_frame()
        update_ms = median_ms(tween_step, max(50, args.frames))
        results["cards"][n] = {
            "draw_calls": field.draw_calls,
            "build_ms": round(build_ms, 1),
            "idle_frame_ms": round(idle, 2),
            "idle_submit_ms": round(idle_submit, 2),
            "tween_submit_ms": round(tween_submit_ms, 2),
            "tween_frame_ms": round(tween_frame_ms, 2),
            "tween_update_ms": round(update_ms, 3),
        }
        print(
            f"{n:>6} cards: {field.draw_calls} draw call(s) | complete frame idle {idle:7.2f} ms, "
            f"tween {tween_frame_ms:7.2f} ms | main-thread submit idle {idle_submit:6.2f} ms, "
            f"tween {tween_submit_ms:6.2f} ms | tween update {update_ms:6.3f} ms "
            f"(build {build_ms:.0f} ms)",
            flush=True,
        )
        field.destroy()

    # Naive peer at 1k: one billboarded textured node per card, own texture each.
    n = 1000
    images, positions, labels = synthetic(n, seed=1)
    root = base.render.attach_new_node("naive")
    cm = CardMaker("card")
    cm.set_frame(-0.04, 0.04, -0.04, 0.04)
    nodes = []
    for i in range(n):
        node = root.attach_new_node(cm.generate())
        node.set_pos(*map(float, positions[i]))
        tex = image_texture(images[i])
        tex.set_magfilter(SamplerState.FT_nearest)
        node.set_texture(tex)
        node.set_billboard_point_eye()
        nodes.append(node)
    for _ in range(5):
        render_frame()
    naive_idle = median_ms(render_frame, args.frames)
    naive_submit = median_ms(engine_frame, args.frames)
    render_frame()
    target = positions[::-1]

    def naive_tween_frame():
        s = np.float32(0.5)
        new = positions + (target - positions) * s
        for node, p in zip(nodes, new):
            node.set_pos(float(p[0]), float(p[1]), float(p[2]))
        render_frame()

    naive_tween = median_ms(naive_tween_frame, args.frames)

    def naive_tween_submit():
        s = np.float32(0.5)
        new = positions + (target - positions) * s
        for node, p in zip(nodes, new):
            node.set_pos(float(p[0]), float(p[1]), float(p[2]))
        engine_frame()

    naive_tween_sub = median_ms(naive_tween_submit, args.frames)
    render_frame()
    root.remove_node()
    inst = results["cards"].get(1000)
    results["naive_1k"] = {
        "idle_frame_ms": round(naive_idle, 2),
        "tween_frame_ms": round(naive_tween, 2),
        "idle_submit_ms": round(naive_submit, 2),
        "tween_submit_ms": round(naive_tween_sub, 2),
        "draw_calls": n,
    }
    print(
        f"naive one-node-per-card, 1000 cards: complete frame idle {naive_idle:.2f} ms, tween "
        f"{naive_tween:.2f} ms | submit idle {naive_submit:.2f} ms, tween {naive_tween_sub:.2f} ms"
    )
    if inst:
        ratios = {
            "complete_idle": naive_idle / inst["idle_frame_ms"],
            "complete_tween": naive_tween / inst["tween_frame_ms"],
            "submit_idle": naive_submit / inst["idle_submit_ms"],
            "submit_tween": naive_tween_sub / inst["tween_submit_ms"],
        }
        results["ratio_naive_over_instanced_1k"] = {k: round(v, 2) for k, v in ratios.items()}
        print("ratio naive / instanced at 1k: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    big = results["cards"].get(50000)
    if big:
        verdict = "meets" if big["tween_update_ms"] < 2.0 else "misses"
        print(f"50k tween update {big['tween_update_ms']:.3f} ms: {verdict} the < 2 ms target")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    base.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
