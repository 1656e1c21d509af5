"""CPU time per stereo VR frame vs a mono frame in the same run (software OpenGL, no headset).

Run: ``.venv/bin/python benchmarks/bench_vr.py [--frames 8] [--rounds 5] [--cards 20000] [--eye 640x720]``

For each scene (the default digits scene, then ``--cards`` synthetic cards) one offscreen app is
opened with a window the size of one eye and a ``SimulatedBackend`` attached — the same stereo
renderer, controls and submit path a headset uses, with scripted poses. Rounds alternate mono
frames (the desktop camera; eye buffers off) and stereo frames (two eye buffers, submit, mirror;
desktop camera off); the VR task and controls run in both, so the ratio isolates rendering. Printed: CPU
seconds (process time, which includes llvmpipe's render threads) and wall seconds per frame, and
the stereo/mono ratios, so a busy machine still gives a fair comparison.

No GPU here: the 1344x1600-per-eye, 50k-card, >= 90 fps target needs a headset's GPU and is not
measured by this script on software OpenGL.

``--python-work 2000,20000,50000`` (issue 16) measures instead the Python work of a VR frame at
each card count, on the game as ``latent-reach run --vr`` assembles it (``assemble_game`` with
the desktop controls, explanations, guidance, the start menu (closed) and the wrist menu, whose
ray targets and frame listener run every frame): the pose task (``wait_poses``, events, the
nodes, both hands' controls with their picking and the ray targets, the in-world UI, the wrist
menu's drawing) plus the submit buffer's draw callback (texture names, two submits, the handoff;
the GL flush, where llvmpipe rasterises, is timed apart and left out), the only Python the draw
calls of a frame run (the eye buffers have no draw callback unless a test traces them). Timed
with plain float clocks around those calls while both controllers hold their triggers and sweep
their lasers and tips through the cloud (a touch and a ray pick per hand per frame). Each count
runs with the ``PickIndex`` and with the brute-force pick it replaced (``--index-only``: not the
latter); the eye buffers are tiny, as rendering is not what is measured. "pick cpu" is the
picking inside that (both hands' touch and ray, and the index's once-a-frame refresh). Still
frames first; then gliding frames (``--glides N``, default 2): the cards glide to another layout
and back (what a re-layout after a fine-tune does), where the world's update (the tween, the
position upload, the class markers) is added to the frame's Python work, since during a glide it
is O(N) by nature. ``--parts`` also times the parts of a still frame (each wrapper adds its
clock reads to the total, so the headline figures come from runs without it). ``--hide-cards``
does not draw the cards (llvmpipe then does little between frames: how much of the figure is the
software renderer evicting the caches). ``--profile`` prints cProfile tables (wall-clock based:
on a loaded machine read them as proportions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LATENT_REACH_MODEL_CACHE", tempfile.mkdtemp(prefix="lr-bench-vr-"))


def synthetic(n: int, seed: int = 0) -> SimpleNamespace:
    from game.core.scene import Scene
    from game.core.workspace import Workspace

    rng = np.random.default_rng(seed)
    classes = 10
    labels = np.arange(n) % classes
    centres = rng.uniform([-1.8, -1.8, 0.6], [1.8, 1.8, 2.2], size=(classes, 3))
    positions = (centres[labels] + rng.normal(scale=0.25, size=(n, 3))).astype(np.float32)
    top5 = np.stack([(labels + k) % classes for k in range(5)], axis=1)
    ws = Workspace(
        images=rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
        labels=labels,
        class_names=[f"c{i}" for i in range(classes)],
        top5_classes=top5,
        top5_scores=np.full((n, 5), 0.2, dtype=np.float32),
        features=rng.normal(size=(n, 8)).astype(np.float32),
        positions=positions,
        is_train=np.ones(n, dtype=bool),
        sources=[""] * n,
    )
    return SimpleNamespace(scene=Scene(), workspace=ws)


def default_scene() -> SimpleNamespace:
    from game.pipeline import open_scene

    loaded = open_scene(None, progress=False)
    return SimpleNamespace(scene=loaded.scene, workspace=loaded.workspace)


def _time(app, frames: int) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(frames):
        app.step()
    return (time.process_time() - cpu0) / frames, (time.perf_counter() - wall0) / frames


def _render_mode(app, stereo, mode: str) -> None:
    """mono: the desktop camera only; stereo: two eye buffers + submit + mirror; eyes: no mirror."""
    on = mode != "mono"
    for buf in stereo.buffers.values():
        buf.set_active(on)
    stereo._mirror.set_active(mode == "stereo")
    app.camNode.set_active(not on)


def measure(loaded, eye: tuple[int, int], frames: int, rounds: int) -> dict[str, float]:
    """Interleaved rounds of mono and stereo frames on one app; medians of the per-round means.

    Interleaving makes the ratio robust to other work on the machine changing speed mid-run.
    """
    from game.app import LatentReachApp
    from game.controls.vr_controls import Rig
    from game.vr.launch import attach
    from game.vr.simulated import SimulatedBackend

    app = LatentReachApp(loaded, offscreen=True, size=eye, controls=False, multisamples=0)
    try:
        for _ in range(3):
            app.step()
        # The head sees what the desktop camera saw (the rig stands at the camera, facing its way),
        # so both paths draw the same cards; a slow +-5 degree look around keeps culling honest.
        z, pitch = float(app.camera.get_z()), float(app.camera.get_p())
        steps = [
            {"head": {"pos": [0.0, 0.0, z], "hpr": [-5, pitch, 0]}},
            {"frames": 60, "lerp": True, "head": {"hpr": [5, pitch, 0]}},
            {"frames": 60, "lerp": True, "head": {"hpr": [-5, pitch, 0]}},
        ]
        backend = SimulatedBackend(steps, size=eye, loop=True)
        backend.start()
        session = attach(app, backend)
        # VR starts inside the cloud at room scale; here the rig stands where the desktop camera
        # was framed, at 1:1, so mono and stereo draw the same cards.
        cam = app.camera.get_pos(app.render)
        session.controls.rig = Rig(
            np.array([float(cam[0]), float(cam[1]), 0.0]), float(app.camera.get_h(app.render))
        )
        session.stereo.set_rig(session.controls.rig.matrix())
        samples: dict[str, list[tuple[float, float]]] = {"mono": [], "stereo": [], "eyes": []}
        for _ in range(rounds):
            for mode in samples:
                _render_mode(app, session.stereo, mode)
                app.step()  # settle after the switch
                samples[mode].append(_time(app, frames))
        submitted = len(backend.submitted)
        session.stop()
    finally:
        app.task_mgr.remove("latent-reach-frame")
        app.destroy()
    med = {m: np.median(np.array(v), axis=0) for m, v in samples.items()}
    ratios = np.array([s[0] / m[0] for s, m in zip(samples["stereo"], samples["mono"])])
    wall_ratios = np.array([s[1] / m[1] for s, m in zip(samples["stereo"], samples["mono"])])
    return {
        "cards": int(loaded.workspace.n_cards),
        "mono_cpu_ms": 1000 * float(med["mono"][0]),
        "stereo_cpu_ms": 1000 * float(med["stereo"][0]),
        "cpu_ratio": float(np.median(ratios)),
        "mono_wall_ms": 1000 * float(med["mono"][1]),
        "stereo_wall_ms": 1000 * float(med["stereo"][1]),
        "wall_ratio": float(np.median(wall_ratios)),
        "stereo_fps_wall": 1.0 / float(med["stereo"][1]),
        "eyes_no_mirror_wall_ms": 1000 * float(med["eyes"][1]),
        "eyes_no_mirror_wall_ratio": float(
            np.median([e[1] / m[1] for e, m in zip(samples["eyes"], samples["mono"])])
        ),
        "eye_submits": submitted,
    }


PARTS = (
    # (name, object path from the session, attribute): timed apart (nested in the frame's sum)
    ("wait_poses", "backend", "wait_poses"),
    ("events", "backend", "poll_events"),
    ("nodes+models", "stereo", "_poll_models"),
    ("on_frame", "session", "_on_frame"),
    ("controls", "controls", "update"),
    ("refresh", "index", "refresh"),
    ("hand", "controls", "_hand"),
    ("touch+ray", "index", "touch_or_ray"),
    ("targets", "controls", "_target_ray"),
    ("buttons", "controls", "_buttons"),
    ("locomotion", "controls", "_locomotion"),
    ("highlight", "cards", "set_highlight"),
    ("in-world ui", "ui", "update"),
    ("texture ids", "stereo", "texture_id"),
    ("submits", "backend", "submit"),
)


def python_work(
    n: int,
    frames: int,
    index: bool = True,
    profile: bool = False,
    glides: int = 2,
    parts: bool = False,
    hide_cards: bool = False,
) -> dict[str, float]:
    """Per-frame Python work of the VR path at ``n`` cards (see the module docstring)."""
    from panda3d.core import PythonCallbackObject

    from game.app import LatentReachApp
    from game.assembly import assemble_game
    from game.controls.vr_controls import Rig
    from game.vr.simulated import SimulatedBackend

    loaded = synthetic(n)
    app = LatentReachApp(loaded, offscreen=True, size=(64, 64), controls=False, multisamples=0)
    systems = None
    try:
        for _ in range(2):
            app.step()
        # Stand 3 m from the cloud's centre; both hands sweep through it with triggers held.
        left = {"pos": [-0.3, 0.4, 1.3], "hpr": [25, 0, 0], "trigger": True}
        right = {"pos": [0.3, 0.4, 1.3], "hpr": [-25, 0, 0], "trigger": True}
        steps = [
            {"head": {"pos": [0.0, -3.0, 1.6]}, "left": left, "right": right},
            {"frames": 90, "lerp": True, "left": {"hpr": [-25, -10, 0]}, "right": {"hpr": [25, 10, 0]}},
            {"frames": 90, "lerp": True, "left": {"hpr": [25, 0, 0]}, "right": {"hpr": [-25, 0, 0]}},
        ]
        backend = SimulatedBackend(steps, size=(64, 64), loop=True)
        # The game as ``latent-reach run --vr`` assembles it (desktop controls, explanations,
        # guidance, the start menu, the wrist menu and the panel painter as ray targets), the
        # start menu closed: every listener and ray target of a real VR frame runs.
        systems = assemble_game(app, controls=True, menu=True, vr_backend=backend)
        if systems.menu is not None:
            systems.menu.hide()
        session = systems.vr
        assert session is not None
        session.controls.rig = Rig(np.array([0.0, -3.0, 0.0]))  # 3 m from the centre, 1:1
        session.stereo.set_rig(session.controls.rig.matrix())
        if not index:
            for hand in session.controls.hands.values():
                hand.index = None
        stereo = session.stereo
        spent = {k: np.zeros(2) for k in ("poses", "submit", "flush", "pick", "world")}
        spent.update({name: np.zeros(2) for name, _, _ in PARTS})
        per_frame: list[float] = []

        def timed(name, fn):
            # Plain float clocks, the CPU clock read innermost: the wrappers of the picks sit inside
            # the pose task's, so whatever they cost is counted as the frame's Python work.
            wall, cpu = time.perf_counter, time.thread_time
            acc = spent[name]

            def run(*args, **kwargs):
                w0 = wall()
                c0 = cpu()
                try:
                    return fn(*args, **kwargs)
                finally:
                    c1 = cpu()
                    acc[0] += wall() - w0
                    acc[1] += c1 - c0

            return run

        flush = stereo._gl_flush
        if flush is not None:
            # glFlush hands the queued draw calls to the driver; on llvmpipe that is where the eye
            # is rasterised (GPU work done by the CPU here), so it is timed apart from Python:
            # plain float clocks, read innermost, so the submit's sum keeps only the clock reads.
            def timed_flush() -> None:
                wall, cpu = time.perf_counter, time.thread_time
                w0 = wall()
                c0 = cpu()
                flush()
                c1 = cpu()
                w1 = wall()
                took = (w1 - w0, c1 - c0)
                for i in (0, 1):
                    spent["submit"][i] -= took[i]
                    spent["flush"][i] += took[i]

            stereo._gl_flush = timed_flush
        assert stereo.trace is None  # no draw callbacks on the eyes: the app's frame, not a test's
        for hand in session.controls.hands.values():  # picking, timed inside the pose task
            hand.point = timed("pick", hand.point)
            hand.touch = timed("pick", hand.touch)
        session.controls.index.refresh = timed("pick", session.controls.index.refresh)
        owners = {
            "backend": backend,
            "stereo": stereo,
            "controls": session.controls,
            "index": session.controls.index,
            "ui": session.ui,
            "session": session,
            "cards": app.world.cards,
        }
        # Where the frame's time goes (--parts): each wrapper adds its clock reads to the total.
        for name, owner, attr in PARTS if parts else ():
            setattr(owners[owner], attr, timed(name, getattr(owners[owner], attr)))
        if parts:  # the renderer holds the session's frame listener as a bound method: the timed one
            stereo.listeners[:] = [
                session._on_frame if getattr(f, "__self__", None) is session else f for f in stereo.listeners
            ]
        app.world.update = timed("world", app.world.update)  # the tween and the position upload
        stereo.step_poses = timed("poses", stereo.step_poses)
        # The submit runs in its own buffer's draw callback, after both eyes (texture names, two
        # submits, the GL flush, the handoff): the only Python the draw calls of a frame run.
        stereo.regions["submit"].set_draw_callback(PythonCallbackObject(timed("submit", stereo._submit)))
        if hide_cards:  # llvmpipe draws no card: what the frame costs when rendering leaves the caches
            app.world.cards.root.hide()
        for _ in range(10):
            app.step()
        # A card selected, its info panel floating beside it (the usual state, and the same at
        # every N: the triggers are held from the first frame, whose press selects whatever the
        # lasers hit then, at 2k often nothing): the card nearest the cloud's centre.
        from game.core import events as ev

        p = app.world.positions
        app.workspace.post(ev.CardSelected(card=int(np.argmin(((p - p.mean(axis=0)) ** 2).sum(axis=1)))))
        for _ in range(5):
            app.step()
        hovered = 0
        poses_only: list[float] = []
        picks: list[float] = []
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        worlds: list[float] = []
        split: dict[str, list[float]] = {name: [] for name in ("poses", "submit", *(p[0] for p in PARTS))}

        def frame() -> None:
            before = {k: v.copy() for k, v in spent.items()}
            app.step()
            for name in split:
                split[name].append(float(spent[name][1] - before[name][1]))
            per_frame.append(spent["poses"] + spent["submit"] - before["poses"] - before["submit"])
            poses_only.append(spent["poses"] - before["poses"])
            picks.append(spent["pick"] - before["pick"])
            worlds.append(spent["world"] - before["world"])

        for _ in range(frames):
            frame()
            hovered += sum(h.hovered >= 0 for h in session.controls.hands.values())
        steady = len(per_frame)
        if profiler is not None:
            import pstats

            profiler.disable()
            print(f"--- cProfile, {n} cards, {frames} frames ({'PickIndex' if index else 'brute force'})")
            pstats.Stats(profiler).sort_stats("cumtime").print_stats("game/|numpy|stereo|vr", 40)
        builds = session.controls.index.builds
        # Gliding frames: the cards glide to another layout and back (a re-layout after a
        # fine-tune), while both hands keep picking.
        other = synthetic(n, seed=1).workspace.positions
        for layout in (other, loaded.workspace.positions) * glides:
            app.world.retarget(layout)
            frame()
            while app.world.tween.active:
                frame()
        glide_builds = session.controls.index.builds - builds
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            app.world.retarget(other)
            frame()
            while app.world.tween.active:
                frame()
            profiler.disable()
            print(f"--- cProfile, {n} cards, one glide")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        session.stop()
    finally:
        if systems is not None:
            systems.destroy()
        app.task_mgr.remove("latent-reach-frame")
        app.destroy()
    all_ms = 1000 * np.array(per_frame)  # (frames, 2): wall, main-thread CPU
    ms = all_ms[:steady]
    glide = all_ms[steady:, 1] + 1000 * np.array(worlds)[steady:, 1]
    world_ms = 1000 * np.array(worlds)[:, 1]
    return {
        "cards": n,
        "index": index,
        "parts_cpu_median_ms": {k: 1000 * float(np.median(v[:steady])) for k, v in split.items()},
        "cpu_median_ms": float(np.median(ms[:, 1])),
        "cpu_p95_ms": float(np.percentile(ms[:, 1], 95)),
        "cpu_max_ms": float(ms[:, 1].max()),
        "median_ms": float(np.median(ms[:, 0])),
        "pose_task_cpu_median_ms": float(np.median(1000 * np.array(poses_only)[:steady, 1])),
        "pick_cpu_median_ms": float(np.median(1000 * np.array(picks)[:steady, 1])),
        "glide_pick_cpu_median_ms": float(np.median(1000 * np.array(picks)[steady:, 1]))
        if len(glide)
        else 0.0,
        "flush_ms_per_frame": float(1000 * spent["flush"][0] / max(frames + 10, 1)),
        "p95_ms": float(np.percentile(ms[:, 0], 95)),
        "max_ms": float(ms[:, 0].max()),
        "hovered_hand_frames": int(hovered),
        "index_builds": int(builds),
        "world_update_cpu_median_ms": float(np.median(world_ms[:steady])),
        "glide_frames": int(len(glide)),
        "glide_cpu_median_ms": float(np.median(glide)) if len(glide) else float("nan"),
        "glide_cpu_p95_ms": float(np.percentile(glide, 95)) if len(glide) else float("nan"),
        "glide_cpu_max_ms": float(glide.max()) if len(glide) else float("nan"),
        "glide_world_update_cpu_median_ms": float(np.median(world_ms[steady:]))
        if len(glide)
        else float("nan"),
        "glide_index_builds": int(glide_builds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved mono/stereo rounds")
    parser.add_argument("--cards", type=int, default=20000)
    parser.add_argument("--eye", default="640x720", help="per-eye size WxH (a Vive Pro eye is 1344x1600)")
    parser.add_argument("--skip-default", action="store_true", help="only the synthetic scene")
    parser.add_argument(
        "--python-work", default=None, metavar="N,N,...", help="per-frame Python work at these card counts"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the timed frames (PickIndex only)")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="with --python-work: time the parts of a frame too (adds clock reads)",
    )
    parser.add_argument("--index-only", action="store_true", help="with --python-work: skip the brute force")
    parser.add_argument("--glides", type=int, default=2, help="with --python-work: glides there and back")
    parser.add_argument(
        "--hide-cards",
        action="store_true",
        help="with --python-work: the cards are not drawn (llvmpipe then evicts little between frames)",
    )
    args = parser.parse_args()
    w, h = (int(v) for v in args.eye.lower().split("x"))
    import torch  # noqa: F401 - imported here so the app's worker thread does not import it mid-timing

    from game.world import engine

    if args.python_work:
        engine.configure(offscreen=True, size=(64, 64), multisamples=0)
        frames = max(args.frames, 60)
        rows = []
        for n in (int(v) for v in args.python_work.split(",")):
            for use_index in (True,) if args.profile or args.index_only else (True, False):
                rows.append(
                    python_work(
                        n,
                        frames,
                        index=use_index,
                        profile=args.profile,
                        glides=args.glides,
                        parts=args.parts,
                        hide_cards=args.hide_cards,
                    )
                )
        print(f"Python work per VR frame (pose task + submit callback), {frames} frames, both hands picking")
        print(
            f"{'cards':>7}{'picking':>14}{'cpu median':>12}{'cpu p95':>9}{'cpu max':>9}"
            f"{'wall median':>13}{'wall p95':>10}{'hover frames':>14}{'pick cpu':>10}"
        )
        for r in rows:
            kind = "PickIndex" if r["index"] else "brute force"
            print(
                f"{r['cards']:>7}{kind:>14}{r['cpu_median_ms']:>12.3f}{r['cpu_p95_ms']:>9.3f}"
                f"{r['cpu_max_ms']:>9.3f}{r['median_ms']:>13.3f}{r['p95_ms']:>10.3f}{r['hovered_hand_frames']:>14}{r['pick_cpu_median_ms']:>10.3f}"
            )
        if args.parts:
            print("\nWhere a still frame's CPU goes (medians, ms; nested: the picks are inside controls)")
            heads = [f"{r['cards']} {'index' if r['index'] else 'brute'}" for r in rows]
            print(f"{'part':>14}" + "".join(f"{h:>14}" for h in heads))
            for name in rows[0]["parts_cpu_median_ms"]:
                print(f"{name:>14}" + "".join(f"{r['parts_cpu_median_ms'][name]:>14.3f}" for r in rows))
        print(
            "\nGliding frames (a re-layout: every card moves for the tween's duration), CPU ms of the"
            " pose task + submit + the world's update (tween and position upload)"
        )
        print(
            f"{'cards':>7}{'picking':>14}{'frames':>8}{'median':>9}{'p95':>9}{'max':>9}"
            f"{'world upd':>11}{'steady world upd':>18}{'rebuilds':>10}"
        )
        for r in rows:
            kind = "PickIndex" if r["index"] else "brute force"
            print(
                f"{r['cards']:>7}{kind:>14}{r['glide_frames']:>8}{r['glide_cpu_median_ms']:>9.3f}"
                f"{r['glide_cpu_p95_ms']:>9.3f}{r['glide_cpu_max_ms']:>9.3f}"
                f"{r['glide_world_update_cpu_median_ms']:>11.3f}{r['world_update_cpu_median_ms']:>18.3f}"
                f"{r['glide_index_builds']:>10}"
            )
        print(json.dumps(rows, indent=1))
        return 0

    engine.configure(offscreen=True, size=(w, h), multisamples=0)  # EGL offscreen, before ShowBase
    results = {}
    if not args.skip_default:
        results["default scene"] = measure(default_scene(), (w, h), args.frames, args.rounds)
    results[f"{args.cards} synthetic cards"] = measure(
        synthetic(args.cards), (w, h), args.frames, args.rounds
    )
    print(f"eye {w}x{h}, {args.rounds} interleaved rounds of {args.frames} frames per mode, llvmpipe, no GPU")
    print(
        f"{'scene':<24}{'cards':>7}{'mono cpu ms':>13}{'stereo cpu ms':>15}{'ratio':>7}"
        f"{'mono wall ms':>14}{'stereo wall ms':>16}{'ratio':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:<24}{r['cards']:>7}{r['mono_cpu_ms']:>13.1f}{r['stereo_cpu_ms']:>15.1f}{r['cpu_ratio']:>7.2f}"
            f"{r['mono_wall_ms']:>14.1f}{r['stereo_wall_ms']:>16.1f}{r['wall_ratio']:>7.2f}{r['eyes_no_mirror_wall_ratio']:>17.2f}"
        )
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
