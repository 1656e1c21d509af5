"""Camera framing maths (pure numpy): where to stand to see a set of points."""

from __future__ import annotations

import math

import numpy as np


def frame_points(
    points: np.ndarray,
    fov_deg: tuple[float, float] = (60.0, 45.0),
    pitch_deg: float = 22.0,
    margin: float = 0.85,
    min_radius: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """A camera position and look-at target that frame ``points`` from the -y side, looking down.

    Uses the bounding sphere of the points (robust 2nd-98th percentile box, so a stray card does
    not push the camera away) and the narrower of the two fields of view.
    """
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return np.array([0.0, -3.0, 1.6]), np.array([0.0, 0.0, 1.0])
    if len(pts) > 20:
        lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
    else:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    radius = max(min_radius, float(np.linalg.norm(hi - lo)) / 2)
    half = math.radians(min(fov_deg) / 2)
    distance = margin * radius / math.sin(half)
    pitch = math.radians(pitch_deg)
    eye = centre + distance * np.array([0.0, -math.cos(pitch), math.sin(pitch)])
    return eye, centre
