"""``latent-reach run`` (also ``latent-reach`` with no command): start the game.

With a display: a desktop window (or ``--fullscreen``) with the in-world start menu. Without one
(no ``$DISPLAY`` and no Wayland) or with ``--offscreen``: render headless through EGL, write a
screenshot and a short text summary into ``--out`` and say so, so the command is useful on a
server or in CI as well.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from game.commands._common import add_scene_argument, scene_from_args

if TYPE_CHECKING:
    from game.pipeline import LoadedScene
    from game.vr.backend import VRBackend

NAME = "run"
HELP = "start the game (desktop window; headless screenshot + summary where there is no display)"
DESCRIPTION = (
    "Starts Latent Reach on a scene (default: the embedded digits). Opens a window with the start "
    "menu where a display exists; otherwise renders offscreen and writes a screenshot and a summary."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scene_argument(parser)
    parser.add_argument("--fullscreen", action="store_true", help="open full screen")
    parser.add_argument("--offscreen", action="store_true", help="render headless even if a display exists")
    parser.add_argument("--size", default="1280x800", metavar="WxH", help="window or image size")
    parser.add_argument(
        "--out",
        default="out",
        metavar="DIR",
        help="folder for the headless screenshot and summary (default out/)",
    )
    parser.add_argument("--no-menu", action="store_true", help="start without the start menu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-demo",
        action="store_true",
        help="headless: only the screenshot and summary, not the scripted demo session",
    )
    parser.add_argument(
        "--sessions", default=None, metavar="DIR", help="sessions folder (default: the user data folder)"
    )
    parser.add_argument("--no-record", action="store_true", help="do not record this session")
    # VR (issue 5): see game/vr/launch.py.
    parser.add_argument(
        "--vr",
        nargs="?",
        const="on",
        default=None,
        metavar="MODE",
        help="render to an OpenVR headset: --vr (desktop if unavailable), --vr=require (exit 2 if "
        "unavailable), --vr=simulate (scripted poses), --vr=off; default: the scene's vr setting",
    )
    parser.add_argument("--vr-script", default=None, metavar="FILE.json", help="poses for --vr=simulate")


def run(args: argparse.Namespace) -> int:
    from game.pipeline import open_scene
    from game.world.engine import display_available
    from game.world.offscreen import parse_size

    size = parse_size(args.size)
    scene = scene_from_args(args)
    headless = args.offscreen or not display_available()
    from game.vr.launch import backend_for_run

    vr_backend = backend_for_run(getattr(args, "vr", None), scene.scene.vr, getattr(args, "vr_script", None))
    if vr_backend is not None or not headless:
        from game.learning.backend import prestart_process

        prestart_process(scene.learning)  # the job process warms up while the scene opens
    loaded = open_scene(scene, progress=not args.quiet)
    if vr_backend is not None:
        return run_app_with_vr(
            loaded,
            vr_backend,
            size=size,
            offscreen=headless,
            fullscreen=args.fullscreen,
            out=Path(args.out),
            record=not args.no_record and not headless,
            sessions=args.sessions,
            menu=not args.no_menu and not headless,
        )
    if headless:
        rc = _run_headless(loaded, Path(args.out), size, forced=args.offscreen)
        if rc or args.no_demo:
            return rc
        return _run_demo(args)
    from game.assembly import open_game
    from game.commands._session_world import session_recording

    game = open_game(
        loaded,
        offscreen=False,
        size=size,
        fullscreen=args.fullscreen,
        controls=True,
        menu=not args.no_menu,
        learning=True,
        recording=None if args.no_record else session_recording(args.sessions),
    )
    game.app.run()
    return 0


def run_app_with_vr(
    loaded: LoadedScene,
    backend: VRBackend,
    *,
    size: tuple[int, int],
    offscreen: bool,
    fullscreen: bool = False,
    out: Path | None = None,
    headless_frames: int = 240,
    record: bool = False,
    sessions: str | Path | None = None,
    menu: bool = False,
) -> int:
    """Open the app for ``backend`` and run it. Headless (no display): play the simulated script
    (or ``headless_frames`` frames), then write the mirrored eye to ``out/vr-mirror.png``.

    Assembled like the desktop game (controls on the mirror window), so a card moved by a
    controller teaches the network exactly as a mouse drop does; ``record`` also records the
    session; ``menu``: the start menu, shown before the eyes at launch and driven by the laser
    (``game.vr.wrist_menu``; headless runs have none, so the mirror shows the world). A backend that refuses to connect leaves the desktop game running.
    """
    from game.assembly import open_game
    from game.commands._session_world import session_recording

    game = open_game(
        loaded,
        offscreen=offscreen,
        size=size,
        fullscreen=fullscreen,
        controls=True,
        learning=True,
        recording=session_recording(sessions) if record else None,
        menu=menu,
        vr_backend=backend,
    )
    app, session = game.app, game.vr
    if not offscreen:
        app.run()
        return 0
    if session is None:  # fell back to the desktop
        return 0
    finite = getattr(backend, "length", 0) if not getattr(backend, "loop", True) else 0
    limit = finite or headless_frames
    frames = 0
    while session.stereo.active and frames < limit:
        app.step()
        frames += 1
    folder = out or Path("out")
    shot = app.screenshot(folder / "vr-mirror.png")
    print(f"latent-reach: VR ({backend.name}) ran {frames} frames headless; mirror: {shot}")
    session.stop("done")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    """Without a display the main job goes on with the scripted demo session (issue 7)."""
    from game.commands import demo

    out = Path(args.out) / "demo"
    print(f"latent-reach: playing the scripted demo session headless into {out} ...")
    demo_args = argparse.Namespace(
        out=str(out),
        scene=args.scene,
        sessions=args.sessions,
        size="960x544",
        renderer="auto",
        video=False,
        quiet=args.quiet,
        threads=0,
    )
    return demo.run(demo_args)


def _run_headless(loaded: LoadedScene, out: Path, size: tuple[int, int], forced: bool) -> int:
    from game.commands._offscreen import render_snapshot

    ws = loaded.workspace
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(loaded.scene.source).stem or "scene"
    shot = out / f"{stem}.png"
    # Show the panel for the first held-out card so the screenshot shows every part of the world.
    held = [i for i in range(ws.n_cards) if not ws.is_train[i]]
    select = held[0] if held else (0 if ws.n_cards else -1)
    result = render_snapshot(loaded, shot, size=size, select=select)
    summary: dict[str, Any] = {
        "scene": loaded.scene.scene.name,
        "scene_file": loaded.scene.source,
        "cards": ws.n_cards,
        "classes": ws.n_classes,
        "class_names": ws.class_names,
        "feature_layer": ws.feature_layer,
        "heldout_accuracy": round(loaded.heldout_accuracy(), 4),
        "card_draw_calls": result.draw_calls,
        "frame_ms_offscreen": round(result.frame_ms, 2),
        "selected_card": select,
        "screenshot": str(result.path),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"Latent Reach - {summary['scene']} (headless)",
        f"{ws.n_cards} cards in {ws.n_classes} classes, feature layer {ws.feature_layer}",
        f"held-out accuracy {100 * summary['heldout_accuracy']:.1f}%",
        f"cards drawn in {result.draw_calls} draw call(s), {result.frame_ms:.1f} ms per offscreen frame",
        f"screenshot: {result.path}",
    ]
    (out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    why = "--offscreen given" if forced else "no display found (no $DISPLAY or $WAYLAND_DISPLAY)"
    print(f"latent-reach: {why}: rendered headless through EGL.")
    print("\n".join(lines))
    print(f"summary: {out / 'summary.txt'} and {out / 'summary.json'}")
    return 0
