"""Layout: PCA -> openTSNE 3-D -> walkable volume, and stable warm-started updates."""

import numpy as np
import pytest

from game.core.scene import LayoutConfig
from game.layout.projector import Projector, align, neighbour_agreement, per_point_agreement


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8, size=(4, 20))
    labels = np.repeat(np.arange(4), 60)
    return (centres[labels] + rng.normal(size=(240, 20))).astype(np.float32), labels


def fast_config(**kw):
    settings = {"early_iterations": 50, "iterations": 100, "update_iterations": 40, **kw}
    return LayoutConfig(**settings)


def test_positions_fill_the_walkable_volume(blobs):
    x, labels = blobs
    state = Projector(fast_config(volume=[4.0, 3.0, 2.0], floor_clearance=0.5)).fit(x)
    p = state.positions
    assert p.shape == (240, 3) and p.dtype == np.float32
    lo, hi = np.percentile(p, 1, axis=0), np.percentile(p, 99, axis=0)
    extent = hi - lo
    # Uniform scale: the tightest axis fills its side of the volume, none exceeds its side.
    assert np.all(extent <= np.array([4.0, 3.0, 2.0]) + 1e-3)
    assert np.isclose(np.max(extent / np.array([4.0, 3.0, 2.0])), 1.0, atol=1e-3)
    assert abs((lo[2] + hi[2]) / 2 - 1.5) < 1e-3  # centred 0.5 m + 2.0/2 above the floor
    # Clusters stay clusters: every point's nearest neighbour shares its label.
    d = np.linalg.norm(p[:, None] - p[None], axis=2) + np.eye(240) * 1e9
    assert np.mean(labels[d.argmin(1)] == labels) > 0.97


def test_pca_uses_fewer_dims_when_features_are_small():
    x = np.random.default_rng(1).normal(size=(30, 6)).astype(np.float32)
    proj = Projector(fast_config(pca_dims=50))
    assert proj.reduce(x).shape == (30, 6)
    assert proj.fit(x).positions.shape == (30, 3)


def test_update_with_same_features_keeps_neighbourhoods_and_places(blobs):
    x, _ = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    again = proj.update(x, first)
    assert neighbour_agreement(first.positions, again.positions) > 0.9
    assert np.median(np.linalg.norm(first.positions - again.positions, axis=1)) < 0.15
    assert again.scale == first.scale and np.allclose(again.offset, first.offset)


def test_update_moves_only_what_changed(blobs):
    x, labels = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    changed = x.copy()
    mover = 0  # a card of class 0 whose features now look like class 3
    changed[mover] = x[labels == 3].mean(0)
    after = proj.update(changed, first)
    centre3 = after.positions[labels == 3].mean(0)
    centre0 = after.positions[labels == 0].mean(0)
    assert np.linalg.norm(after.positions[mover] - centre3) < np.linalg.norm(after.positions[mover] - centre0)
    others = np.arange(240) != mover
    keep = per_point_agreement(first.positions, after.positions)[others]
    assert keep.mean() > 0.85


def test_anchors_set_the_starting_point():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    proj = Projector(fast_config(update_iterations=0))
    first = proj.fit(x)
    anchors = np.full((60, 3), np.nan, np.float32)
    anchors[3] = [1.0, 1.0, 1.0]
    after = proj.update(x, first, anchors=anchors)
    assert np.allclose(after.positions[3], [1.0, 1.0, 1.0], atol=0.1)  # alignment shifts it a little


def test_align_recovers_rotation_scale_and_shift():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(50, 3))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    moving = (target @ rot) * 2.5 + [3, -1, 2]
    np.testing.assert_allclose(align(moving, target), target, atol=1e-8)


def test_digits_layout_separates_classes(loaded_digits):
    ws = loaded_digits.workspace
    c = ws.centroids()
    assert c.shape == (10, 3) and not np.isnan(c).any()
    nearest = np.linalg.norm(ws.positions[:, None] - c[None], axis=2).argmin(1)
    assert np.mean(nearest == ws.labels) > 0.85
