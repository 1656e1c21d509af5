"""The first view's framing (pure numpy): the cards fill the picture, markers' headroom included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from game.world.framing import frame_points

FOV = (70.0, 47.0)


def angles(eye: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) tangents of each point off the view axis: horizontal, vertical."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = points - eye
    depth = rel @ forward
    assert np.all(depth > 0)
    return np.c_[rel @ right / depth, rel @ up / depth]


@pytest.mark.parametrize("pitch", [22.0, 45.0])
def test_points_fill_the_picture_within_the_margin(pitch):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2000, 3)) * [1.2, 1.0, 0.5] + [0.0, 0.0, 1.4]
    margin, shift = 0.85, 0.2
    eye, target = frame_points(pts, FOV, pitch_deg=pitch, margin=margin, headroom=0.0, shift=shift)
    look = (target - eye) / np.linalg.norm(target - eye)
    assert math.degrees(math.asin(-look[2])) == pytest.approx(pitch, abs=1e-6)
    tan = angles(eye, target, pts)
    limit_x = math.tan(math.radians(FOV[0] / 2)) * (margin - shift)
    limit_z = math.tan(math.radians(FOV[1] / 2)) * margin
    inside = (np.abs(tan[:, 0]) <= limit_x + 1e-9) & (np.abs(tan[:, 1]) <= limit_z + 1e-9)
    assert inside.mean() >= 0.97  # all but the outermost ~2 %
    # Tight: the extreme points reach the margin on one axis (not a loose bounding sphere).
    reach = max(
        np.percentile(np.abs(tan[:, 0]), 98) / limit_x, np.percentile(np.abs(tan[:, 1]), 98) / limit_z
    )
    assert reach > 0.9


def test_headroom_keeps_the_markers_in_view():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(500, 3)) * [1.0, 1.0, 0.4] + [0.0, 0.0, 1.4]
    eye0, _ = frame_points(pts, FOV, headroom=0.0)
    eye1, target1 = frame_points(pts, FOV, headroom=0.6)
    top = np.percentile(pts[:, 2], 98) + 0.6
    markers = np.c_[np.linspace(-1.0, 1.0, 9), np.zeros(9), np.full(9, top)]
    tan = angles(eye1, target1, markers)
    assert np.all(np.abs(tan[:, 1]) <= math.tan(math.radians(FOV[1] / 2)))
    assert np.linalg.norm(eye1 - target1) >= np.linalg.norm(eye0 - pts.mean(0)) * 0.9


def test_degenerate_sets_get_a_view():
    eye, target = frame_points(np.zeros((1, 3)), FOV)
    assert np.all(np.isfinite(eye)) and np.linalg.norm(eye - target) > 0.3
    eye, target = frame_points(np.full((3, 3), np.nan), FOV)
    assert np.all(np.isfinite(eye)) and np.all(np.isfinite(target))
