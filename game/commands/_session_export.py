"""Headless export of a replay: PNG frames, an MP4 video and the summary (text and JSON).

Frames come from the Panda3D world drawn offscreen (``game.app.LatentReachApp``) when it can be
started, else from a plain matplotlib plot of the card positions, so an export always works on
a machine without a display or a GL driver. The video is encoded by the ffmpeg binary that
``imageio-ffmpeg`` ships, so nothing needs to be installed system-wide.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from game.core.workspace import CARD_EDITED, CARD_PENDING, CARD_UNSURE, Workspace
from game.sessions.replay import ReplayDriver
from game.sessions.summary import heldout_accuracy, summarize, summary_text

FRAME_SIZE = (960, 544)  # width, height; multiples of 16 for the H.264 encoder


class FrameRenderer(Protocol):
    """Draws the current workspace (and the head, if any) into an RGB array."""

    name: str

    def set_pose(
        self, head: np.ndarray | None, left: np.ndarray | None, right: np.ndarray | None
    ) -> None: ...

    def render(self, t: float, note: str) -> np.ndarray: ...

    def close(self) -> None: ...


def quat_forward(q: np.ndarray) -> np.ndarray:
    """The +Y axis (Panda3D's forward) rotated by the w-first quaternion ``q``."""
    w, x, y, z = (float(v) for v in q)
    return np.array([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)])


class PlotRenderer:
    """A 3-D scatter of the cards (colour = current label) with the recorded head as a marker."""

    name = "matplotlib"

    def __init__(self, workspace: Workspace, size: tuple[int, int] = FRAME_SIZE) -> None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d import Axes3D

        self.ws = workspace
        self.plt = plt
        self.fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
        self.fig.patch.set_facecolor((0.08, 0.09, 0.11))
        # matplotlib's stub types add_axes as a plain Axes whatever the projection.
        self.ax = cast(Axes3D, self.fig.add_axes((0.0, 0.0, 0.72, 1.0), projection="3d"))
        self.ax.set_facecolor((0.08, 0.09, 0.11))
        self.ax.set_axis_off()
        self.ax.view_init(elev=22, azim=-60)
        self.ax.set_box_aspect(None, zoom=1.35)
        self.cmap = plt.get_cmap("tab10" if workspace.n_classes <= 10 else "tab20")
        self.text = self.fig.text(0.73, 0.95, "", color="white", va="top", family="monospace", fontsize=9)
        self.scatter: Any = None
        self.head_artists: list[Any] = []
        self.head: np.ndarray | None = None
        lo = workspace.positions.min(axis=0) - 0.3
        hi = workspace.positions.max(axis=0) + 0.3
        self.ax.set_xlim(lo[0], hi[0])
        self.ax.set_ylim(lo[1], hi[1])
        self.ax.set_zlim(min(lo[2], 0.0), max(hi[2], 1.9))

    def set_pose(self, head: np.ndarray | None, left: np.ndarray | None, right: np.ndarray | None) -> None:
        self.head = None if head is None else np.asarray(head, dtype=np.float64)

    def render(self, t: float, note: str) -> np.ndarray:
        ws = self.ws
        p = ws.positions
        colours = self.cmap(np.asarray(ws.labels) % self.cmap.N)
        edge = np.zeros((ws.n_cards, 4))
        edge[:, 3] = 0.0
        edge[ws.card_state == CARD_EDITED] = (1, 1, 1, 1)
        edge[ws.card_state == CARD_PENDING] = (1, 0.8, 0, 1)
        edge[ws.card_state == CARD_UNSURE] = (1, 0.2, 0.2, 1)
        if self.scatter is not None:
            self.scatter.remove()
        self.scatter = self.ax.scatter(
            p[:, 0], p[:, 1], p[:, 2], c=colours, s=9, depthshade=False, edgecolors=edge, linewidths=0.8
        )
        for a in self.head_artists:
            a.remove()
        self.head_artists = []
        if self.head is not None:
            pos, fwd = self.head[:3], quat_forward(self.head[3:7]) * 0.5
            self.head_artists.append(self.ax.scatter(*pos, c="white", s=60, marker="^", depthshade=False))
            (line,) = self.ax.plot(*(np.stack([pos, pos + fwd]).T), color="white", linewidth=1.5)
            self.head_artists.append(line)
        held = heldout_accuracy(ws.top5_classes, ws.original_labels, ws.is_train)
        self.text.set_text(
            f"t = {t:7.2f} s\nmodel v{ws.model_version}\nheld-out acc {held:.3f}\n"
            f"edited cards {int(np.sum(ws.card_state == CARD_EDITED))}\n\n{note}"
        )
        self.fig.canvas.draw()
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = self.fig.canvas
        assert isinstance(canvas, FigureCanvasAgg)  # the Agg backend, chosen in __init__
        return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()

    def close(self) -> None:
        self.plt.close(self.fig)


def export_replay(
    driver: ReplayDriver,
    renderer: FrameRenderer,
    out: Path,
    fps: float = 10.0,
    start: float = 0.0,
    max_frames: int = 0,
    video: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Play ``driver`` from ``start`` to the end, writing ``frames/NNNNN.png`` and ``replay.mp4``.

    Playback time advances ``speed / fps`` session seconds per frame. Returns what was written.
    """
    import imageio.v2 as iio

    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for old in frames_dir.glob("*.png"):
        old.unlink()
    if start > 0:
        driver.seek(start)
    driver.on_pose = renderer.set_pose
    driver.play()
    span = max(driver.duration - driver.clock, 0.0)
    total = int(math.ceil(span * fps / driver.speed)) + 1
    if max_frames:
        total = min(total, max_frames)
    writer = None
    if video:
        writer = iio.get_writer(
            str(out / "replay.mp4"),
            fps=fps,
            codec="libx264",
            quality=7,
            macro_block_size=16,
            ffmpeg_log_level="error",
        )
    t0 = time.perf_counter()
    last_note = ""
    try:
        for i in range(total):
            items = driver.update(i / fps)
            if items:
                last_note = _describe(items[-1].event)
            image = renderer.render(driver.clock, last_note)
            iio.imwrite(frames_dir / f"{i:05d}.png", image)
            if writer is not None:
                writer.append_data(image)
            if progress and (i % 50 == 0 or i == total - 1):
                print(f"\rexporting frame {i + 1}/{total}", end="", file=sys.stderr, flush=True)
    finally:
        if writer is not None:
            writer.close()
        if progress:
            print(file=sys.stderr)
    return {
        "frames": total,
        "frames_dir": str(frames_dir),
        "video": str(out / "replay.mp4") if video else None,
        "renderer": renderer.name,
        "fps": fps,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _describe(event: Any) -> str:
    kind = event.kind
    if kind == "edit":
        return f"edit: card {event.card}\n{event.action} {event.old_label} -> {event.new_label}"
    if kind == "model":
        return f"fine-tune -> v{event.version}\n{event.summary[:40]}"
    if kind in ("grab", "move", "drop", "cancel", "select"):
        return f"{kind}: card {event.card}"
    return kind


def write_summary(reader: Any, out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``summary.json`` and ``summary.txt`` in ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(reader)
    if extra:
        summary.update(extra)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    (out / "summary.txt").write_text(summary_text(summary) + "\n", encoding="utf-8")
    return summary
