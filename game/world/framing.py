"""Camera framing maths (pure numpy): where to stand to see a set of points."""

from __future__ import annotations

import math

import numpy as np

# Room kept above the cards for the class markers and labels (``centroids``: they float just
# above the highest card, staggered in levels).
MARKER_HEADROOM = 0.55
DEFAULT_PITCH = 22.0  # degrees the first view looks down (the app's ``frame_points`` default)


def frame_points(
    points: np.ndarray,
    fov_deg: tuple[float, float] = (60.0, 45.0),
    pitch_deg: float = 22.0,
    margin: float = 0.85,
    min_radius: float = 0.25,
    headroom: float = MARKER_HEADROOM,
    shift: float = 0.2,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A camera position and look-at target that frame ``points`` from the -y side, looking down.

    The camera looks at the centre of the robust box of the points (2nd-98th percentile, so a
    stray card does not push the camera away; ``headroom`` metres added on top for the class
    markers) and stands just far enough back that all but the outermost 2 % of the points, and
    the same points raised to the markers' height, lie within ``margin`` of the picture's
    half-width and half-height. (A bounding sphere, as before issue 12, left the cloud in the
    middle ~40 % of the window, its cards ~10 px wide.) ``shift``: how far (in half-widths) the
    lens moves the picture's centre sideways (the app's film offset leaves room for the docked
    panel: 0.2), so the nearer edge of the window limits the width.

    ``extra``: points that must all be in the picture (the class labels' corners, where the world
    knows them): they replace the guessed ``headroom``. The guess was too small where the labels
    stand in several staggered rows (six classes over one mass of cards at 1280x800 had their top
    row cut off: issue 17's outside try).
    """
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return np.array([0.0, -3.0, 1.6]), np.array([0.0, 0.0, 1.0])
    if len(pts) > 20:
        lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
        keep = 98.0
    else:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        keep = 100.0
    more = np.zeros((0, 3)) if extra is None else np.asarray(extra, dtype=np.float64).reshape(-1, 3)
    more = more[np.isfinite(more).all(axis=1)]
    if len(more):
        headroom = 0.0
        lo, hi = np.minimum(lo, more.min(axis=0)), np.maximum(hi, more.max(axis=0))
    headroom = max(headroom, 0.0)
    centre = (lo + hi + np.array([0.0, 0.0, headroom])) / 2
    pitch = math.radians(pitch_deg)
    forward = np.array([0.0, math.cos(pitch), -math.sin(pitch)])
    up = np.array([0.0, math.sin(pitch), math.cos(pitch)])
    tan_x = math.tan(math.radians(fov_deg[0] / 2)) * max(margin - abs(shift), 0.1)
    tan_z = math.tan(math.radians(fov_deg[1] / 2)) * margin
    raised = pts.copy()
    raised[:, 2] = hi[2] + headroom
    need = []
    groups = [(pts, keep), (raised, keep)] if not len(more) else [(pts, keep), (more, 100.0)]
    for group, share in groups:
        rel = group - centre
        depth_offset = rel @ forward  # how much farther (or nearer, negative) than the centre
        need_x = np.abs(rel[:, 0]) / tan_x - depth_offset
        need_z = np.abs(rel @ up) / tan_z - depth_offset
        need.append(float(np.percentile(np.maximum(need_x, need_z), share)))
    distance = max(max(need), min_radius / math.sin(math.radians(min(fov_deg) / 2)))
    eye = centre - distance * forward
    return eye, centre
