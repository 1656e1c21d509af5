"""``latent-reach replay SESSION``: play a recorded session back, export it, or verify it.

Exit codes: 0 played/exported/verified; 1 ``--verify`` found a divergence; 2 bad input (a
missing, newer or damaged file, a missing checkpoint). A damaged file is still played up to its
last valid event before the command says where it stopped and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from game.core.errors import UserError
from game.sessions.replay import MAX_SPEED, MIN_SPEED

NAME = "replay"
HELP = "play back, export (--export DIR) or verify (--verify) a recorded session"
DESCRIPTION = (
    "Plays a recorded session back: cards move as they moved, fine-tunes apply their recorded "
    "results, the camera follows the recorded head (or a free camera). SESSION is a session file, "
    "a name in the sessions folder, or 'latest'. With --export DIR, renders headless to PNG frames, "
    "replay.mp4 and summary.txt/json. With --verify, re-runs every fine-tune from the recorded edits "
    "and compares predictions and layout with the recorded ones. With --summary, prints what happened."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "session", metavar="SESSION", help="session file, name in the sessions folder, or 'latest'"
    )
    parser.add_argument(
        "--sessions",
        metavar="DIR",
        default=None,
        help="sessions folder (default: $LATENT_REACH_SESSIONS or the user data folder)",
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        default=None,
        help="render headless to DIR: frames/*.png, replay.mp4, summary",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help=f"playback speed, x{MIN_SPEED} to x{MAX_SPEED} (default 1)",
    )
    parser.add_argument(
        "--start", type=float, default=0.0, metavar="SECONDS", help="start playback at this session time"
    )
    parser.add_argument("--free-camera", action="store_true", help="do not follow the recorded head")
    parser.add_argument(
        "--verify", action="store_true", help="re-run every fine-tune and compare with the recording"
    )
    parser.add_argument("--summary", action="store_true", help="print the session summary and exit")
    parser.add_argument("--json", action="store_true", help="with --summary or --verify: print JSON")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second of an export (default 10)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop an export after this many frames")
    parser.add_argument(
        "--renderer",
        choices=("auto", "world", "plot"),
        default="auto",
        help="export frames from the Panda3D world, a matplotlib plot, or whichever works (default)",
    )
    parser.add_argument("--no-video", action="store_true", help="export frames and summary only")
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N", help="torch threads for --verify (default: all cores)"
    )


def run(args: argparse.Namespace) -> int:
    from game.sessions.paths import resolve_session
    from game.sessions.reader import SessionReader

    if not MIN_SPEED <= args.speed <= MAX_SPEED:
        raise UserError(f"--speed must be between {MIN_SPEED} and {MAX_SPEED}, got {args.speed}")
    if args.fps <= 0:
        raise UserError(f"--fps must be positive, got {args.fps}")
    path = resolve_session(args.session, args.sessions)
    with SessionReader(path) as reader:
        if args.summary:
            code = _summary(reader, args)
        elif args.verify:
            code = _verify(reader, args)
        elif args.export:
            code = _export(reader, args)
        else:
            code = _interactive(reader, args)
        for note in reader.notes:
            print(f"latent-reach: note: {path.name}: {note}", file=sys.stderr)
        if reader.ended_early:
            print(f"latent-reach: warning: {path.name}: {reader.ended_early}", file=sys.stderr)
        if reader.damage:
            print(f"latent-reach: error: damaged session: {reader.damage}", file=sys.stderr)
            return 2
    return code


def _summary(reader, args: argparse.Namespace) -> int:
    from game.sessions.summary import summarize, summary_text

    s = summarize(reader)
    print(json.dumps(s, indent=2) if args.json else summary_text(s))
    return 0


def _export(reader, args: argparse.Namespace) -> int:
    from game.commands._session_export import export_replay, write_summary
    from game.sessions.replay import ReplayDriver
    from game.sessions.restore import restore

    out = Path(args.export)
    out.mkdir(parents=True, exist_ok=True)
    restored = restore(reader)
    driver = ReplayDriver(reader, restored.workspace, speed=args.speed, auto_flush=True)
    renderer = make_renderer(args.renderer, restored, free_camera=args.free_camera)
    try:
        written = export_replay(
            driver,
            renderer,
            out,
            fps=args.fps,
            start=args.start,
            max_frames=args.max_frames,
            video=not args.no_video,
        )
    finally:
        renderer.close()
    summary = write_summary(reader, out, {"export": written})
    print(
        f"exported {written['frames']} frames ({written['renderer']}) to {out}"
        + (f", video {written['video']}" if written["video"] else "")
        + f"; {len(summary['edits'])} edits, {len(summary['models'])} model versions"
    )
    return 0


def make_renderer(kind: str, restored, free_camera: bool = False):
    """The world drawn offscreen when asked for (or available with ``auto``), else the plot."""
    from game.commands._session_export import PlotRenderer

    if kind in ("world", "auto"):
        try:
            from game.commands._session_world import WorldRenderer

            return WorldRenderer(restored, free_camera=free_camera)
        except Exception as exc:  # no world yet, no GL: fall back unless the world was demanded
            if kind == "world":
                raise UserError(f"cannot draw the world offscreen: {type(exc).__name__}: {exc}") from None
            print(f"latent-reach: drawing frames with matplotlib (world unavailable: {exc})", file=sys.stderr)
    return PlotRenderer(restored.workspace)


def _interactive(reader, args: argparse.Namespace) -> int:
    try:
        from game.commands._session_world import play_in_window
    except ImportError as exc:
        raise UserError(
            f"the 3-D world is not available here ({exc}); use --export DIR for a headless replay "
            "or --summary"
        ) from None
    return play_in_window(reader, speed=args.speed, start=args.start, free_camera=args.free_camera)


def _verify(reader, args: argparse.Namespace) -> int:
    from game.commands._common import apply_threads
    from game.sessions.restore import restore
    from game.sessions.verify import verify_session

    apply_threads(args)
    restored = restore(reader)
    report = verify_session(restored, progress=not args.json)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1
