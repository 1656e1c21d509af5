"""Class markers above the cloud (issue 12): the row layout that keeps labels apart (pure numpy)."""

from __future__ import annotations

import numpy as np

from game.world.centroids import _row_layout, _spread


def test_spread_keeps_order_and_clears_every_overlap():
    xs = np.array([0.0, 0.05, 0.1, 1.0, np.nan, 1.02])
    widths = np.full(6, 0.3)
    out = _spread(xs, widths)
    assert np.isnan(out[4])
    valid = out[[0, 1, 2, 3, 5]]
    assert np.all(np.diff(valid) >= 0.3 - 1e-6)  # same order, at least one width apart
    # Pushed apart around where they were, not shifted off as a block.
    assert abs(np.mean(valid) - np.nanmean(xs)) < 1e-6


def test_row_layout_puts_markers_above_the_cloud_in_one_row():
    rng = np.random.default_rng(0)
    centroids = rng.uniform([-1.5, -1.5, 0.8], [1.5, 1.5, 2.0], size=(10, 3))
    centroids[3] = np.nan  # a class without cards
    widths = np.full(10, 0.2)
    offsets = _row_layout(centroids, widths, top=2.6)
    markers = centroids + offsets
    valid = np.flatnonzero(~np.isnan(centroids).any(axis=1))
    np.testing.assert_allclose(markers[valid, 2], 2.6)  # all at the top
    assert np.ptp(markers[valid, 1]) < 1e-9  # one depth: seen from the front, one row
    x = np.sort(markers[valid, 0])
    assert np.all(np.diff(x) >= 0.2 - 1e-6)  # no two labels overlap
    np.testing.assert_array_equal(offsets[3], 0.0)


def test_many_classes_wrap_into_rows_farther_and_higher():
    centroids = np.c_[np.linspace(-1, 1, 60), np.zeros(60), np.full(60, 1.0)]
    offsets = _row_layout(centroids, np.full(60, 0.25), top=2.0)
    markers = centroids + offsets
    heights = np.unique(np.round(markers[:, 2], 6))
    depths = np.unique(np.round(markers[:, 1], 6))
    assert len(heights) > 1 and len(heights) == len(depths)
    for h in heights:
        row = np.sort(markers[np.isclose(markers[:, 2], h), 0])
        assert np.all(np.diff(row) >= 0.25 - 1e-6)
    order = np.argsort(heights)
    assert np.all(np.diff(depths[order]) > 0)  # higher rows are farther back
