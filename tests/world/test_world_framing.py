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


def test_extra_points_are_all_in_view_and_replace_the_headroom_guess():
    """Labels standing in staggered rows well above the cards (issue 17's outside try: the top
    row of six labels was cut off at 1280x800 with the guessed headroom)."""
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(3000, 3)) * [1.0, 1.0, 0.5] + [0.0, 0.0, 1.4]
    top = np.percentile(pts[:, 2], 98)
    labels = np.array([[x, 0.3 * row, top + 0.6 + 0.5 * row] for row in range(3) for x in (-0.4, 0.4)])
    margin = 0.85
    eye, target = frame_points(pts, FOV, margin=margin, shift=0.0, extra=labels)
    tan = angles(eye, target, labels)
    assert np.all(np.abs(tan[:, 1]) <= math.tan(math.radians(FOV[1] / 2)) * margin + 1e-9)
    assert np.all(np.abs(tan[:, 0]) <= math.tan(math.radians(FOV[0] / 2)) * margin + 1e-9)
    eye_guess, target_guess = frame_points(pts, FOV, margin=margin, shift=0.0)  # the 0.55 m guess
    tan_guess = angles(eye_guess, target_guess, labels)
    assert np.abs(tan_guess[:, 1]).max() > math.tan(math.radians(FOV[1] / 2))  # the top row was out
    inside = angles(eye, target, pts)
    assert (np.abs(inside[:, 1]) <= math.tan(math.radians(FOV[1] / 2)) * margin + 1e-9).mean() >= 0.97


def test_the_first_view_shows_every_class_label_whole(loaded_digits):
    """The app frames the cards and the labels' corners (as the world places them): each label's
    corners project inside the window."""
    from game.app import LatentReachApp
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    app = LatentReachApp(loaded, offscreen=True, size=(1280, 800), multisamples=0)
    try:
        app.step(0.0)
        corners = app.world.centroid_markers.label_corners()
        assert len(corners) == 2 * src.workspace.n_classes
        for corner in corners:
            px = app.project(corner)
            assert px is not None and 0 <= px[0] <= 1280 and 0 <= px[1] <= 800, (corner, px)
    finally:
        app.destroy()
