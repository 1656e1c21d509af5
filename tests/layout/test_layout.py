"""Layout: PCA -> openTSNE 3-D -> walkable volume, and stable warm-started updates."""

import numpy as np
import pytest

from game.core.scene import LayoutConfig
from game.layout.projector import (
    Projector,
    align,
    conditional_affinities,
    neighbour_agreement,
    per_point_agreement,
)


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
    state = Projector(fast_config(volume=[4.0, 3.0, 2.0], floor_clearance=0.5, stretch=0.0)).fit(x)
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


def test_stretch_fills_each_side_and_axes_follow_the_volume(blobs):
    """stretch = 1: every axis fills its side; the longest principal axis runs along x, the
    shortest up; the per-axis transform round-trips and survives an update."""
    x, _ = blobs
    volume = np.array([4.0, 3.0, 1.5])
    proj = Projector(fast_config(volume=list(volume), stretch=1.0))
    state = proj.fit(x)
    p = state.positions.astype(np.float64)
    extent = np.percentile(p, 99, axis=0) - np.percentile(p, 1, axis=0)
    np.testing.assert_allclose(extent, volume, rtol=1e-3)
    spread = np.sort(np.linalg.svd(state.embedding - state.embedding.mean(0), compute_uv=False))[::-1]
    np.testing.assert_allclose(state.embedding.std(0) * np.sqrt(len(x)), spread, rtol=1e-6)
    assert state.stretch.min() == pytest.approx(1.0)  # the tightest axis needs no stretch
    np.testing.assert_allclose(state.to_raw(state.positions), state.embedding, atol=1e-4)
    half = Projector(fast_config(volume=list(volume), stretch=0.5)).fit(x)
    assert np.all(half.stretch >= 1.0) and np.all(half.stretch <= state.stretch + 1e-9)
    later = proj.update(x, state, iterations=5)
    np.testing.assert_allclose(later.stretch, state.stretch)
    np.testing.assert_allclose(later.to_world(later.embedding), later.positions, atol=1e-5)


def test_principal_axes_is_a_rotation():
    from game.layout.projector import principal_axes

    rng = np.random.default_rng(3)
    raw = rng.normal(size=(200, 3)) * [1.0, 5.0, 2.0]
    turned = principal_axes(raw)
    d_before = np.linalg.norm(raw[:, None] - raw[None], axis=2)
    d_after = np.linalg.norm(turned[:, None] - turned[None], axis=2)
    np.testing.assert_allclose(d_after, d_before, atol=1e-9)  # distances (and so t-SNE) unchanged
    sd = turned.std(0)
    assert sd[0] > sd[1] > sd[2] and sd[0] == pytest.approx(5.0, rel=0.15)
    # No mirror: the turn is proper (the triple product of the mapped axes keeps its sign).
    a = np.linalg.lstsq(raw - raw.mean(0), turned, rcond=None)[0]
    assert np.linalg.det(a) > 0


def test_pca_uses_fewer_dims_when_features_are_small():
    x = np.random.default_rng(1).normal(size=(30, 6)).astype(np.float32)
    proj = Projector(fast_config(pca_dims=50))
    assert proj.reduce(x).shape == (30, 6)
    assert proj.fit(x).positions.shape == (30, 3)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_tiny_sets_get_a_layout(n):
    """Fewer cards than three PCA components (3 cards used to fail with a broadcast error)."""
    x = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)
    state = Projector(fast_config()).fit(x)
    assert state.positions.shape == (n, 3) and np.isfinite(state.positions).all()


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


# --- local updates: only what changed moves ---------------------------------------------------


def test_local_update_moves_a_changed_card_into_its_new_cluster_and_holds_the_rest(blobs):
    x, labels = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    changed = x.copy()
    mover = 0  # a card of class 0 whose features now look like class 3's
    changed[mover] = x[labels == 3].mean(0) + 0.1
    after = proj.update_local(changed, first, x, keep=0.5)
    assert after.moved is not None and after.moved[mover]
    centre3 = after.positions[labels == 3].mean(0)
    centre0 = after.positions[labels == 0].mean(0)
    assert np.linalg.norm(after.positions[mover] - centre3) < np.linalg.norm(after.positions[mover] - centre0)
    held = ~after.moved
    assert held.sum() > 200  # one card's change moves only a few others (those it left or joined)
    np.testing.assert_array_equal(after.positions[held], first.positions[held])
    others = np.arange(240) != mover
    assert per_point_agreement(first.positions, after.positions)[others].mean() > 0.97


def test_local_update_sends_an_edited_card_back_when_its_features_did_not_change(blobs):
    """An edit the network did not learn: the card goes back where its features say, not where
    it was dropped (the drop position is not an input of the local update)."""
    x, labels = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    card = 5
    after = proj.update_local(x, first, x, move=np.array([card]))
    assert after.moved is not None and np.flatnonzero(after.moved).tolist() == [card]
    own = first.positions[labels == labels[card]].mean(0)
    nearest_centre = np.argmin(
        [np.linalg.norm(after.positions[card] - first.positions[labels == c].mean(0)) for c in range(4)]
    )
    assert nearest_centre == labels[card]
    assert (
        np.linalg.norm(after.positions[card] - own) < 1.5 * np.linalg.norm(first.positions[card] - own) + 0.2
    )


def test_local_update_remembers_where_each_card_was_placed_so_drift_adds_up(blobs):
    x, labels = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    rng = np.random.default_rng(4)
    mover = 7
    target = x[labels == 2].mean(0)
    step1 = x.copy()
    step1[mover] = 0.7 * x[mover] + 0.3 * target  # small steps: each alone may keep the card
    one = proj.update_local(step1, first, x, keep=0.5)
    step2 = step1.copy()
    step2[mover] = target + rng.normal(scale=0.1, size=x.shape[1])
    two = proj.update_local(step2, one, step1, keep=0.5)
    assert two.neighbours is not None and two.moved is not None
    assert one.moved is not None and (one.moved[mover] or two.moved[mover])
    # The record of a card held still is the one it was placed with, not the latest features'.
    held = ~(one.moved | two.moved)
    assert held.any()
    np.testing.assert_array_equal(two.neighbours[held], one.neighbours[held])


def test_local_update_falls_back_to_a_full_update_when_most_cards_change(blobs):
    x, _ = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    shuffled = x[np.random.default_rng(5).permutation(len(x))]
    after = proj.update_local(shuffled, first, x, keep=0.5)
    assert after.moved is not None and after.moved.all()
    assert after.positions.shape == first.positions.shape and np.isfinite(after.positions).all()


def test_conditional_affinities_rows_have_the_asked_perplexity():
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(300, 8))
    points = rng.normal(size=(12, 8))
    matrix, near = conditional_affinities(points, reference, perplexity=20.0)
    assert matrix.shape == (12, 300) and near.shape == (12, 60)
    dense = matrix.toarray()
    np.testing.assert_allclose(dense.sum(1), 1.0, rtol=1e-9)
    p = np.where(dense > 0, dense, 1.0)
    perplexity = np.exp(-(dense * np.log(p)).sum(1))
    np.testing.assert_allclose(perplexity, 20.0, rtol=1e-3)
    # The nearest reference row gets the most mass.
    assert (dense.argmax(1) == near[:, 0]).all()


def test_local_update_lets_a_group_that_moves_together_form_its_own_cluster(blobs):
    """Cards whose new neighbours are mostly each other would be strewn along the held cards'
    edges by a placement against the held cards alone: that case takes the full update."""
    x, labels = blobs
    proj = Projector(fast_config())
    first = proj.fit(x)
    rng = np.random.default_rng(7)
    group = np.flatnonzero(labels == 0)[:40]
    changed = x.copy()
    changed[group] = rng.normal(scale=8, size=x.shape[1]) + rng.normal(scale=0.5, size=(40, x.shape[1]))
    after = proj.update_local(changed, first, x)
    assert after.moved is not None and after.moved[group].all()

    def spread(points: np.ndarray) -> float:
        return float(np.linalg.norm(points - points.mean(0), axis=1).mean())

    untouched = after.positions[labels == 2]
    assert spread(after.positions[group]) < 2.0 * spread(untouched)


def test_place_puts_new_cards_in_their_class_clusters_and_moves_no_laid_out_card(blobs):
    """openTSNE's transform (``Projector.place``): cards left out of the layout land beside the
    laid-out cards of their class; the laid-out cards' layout is untouched."""
    x, labels = blobs
    shown = np.arange(len(x)) % 4 != 0  # three in four laid out, the rest placed
    proj = Projector(fast_config())
    state = proj.fit(x[shown])
    before = state.positions.copy()
    placed = proj.place(x[~shown], state, x[shown])
    assert placed.shape == (int((~shown).sum()), 3) and placed.dtype == np.float32
    np.testing.assert_array_equal(state.positions, before)
    d = np.linalg.norm(placed[:, None] - state.positions[None], axis=2)
    nearest = labels[shown][d.argmin(1)]
    assert np.mean(nearest == labels[~shown]) > 0.95
    # Within the laid-out cloud (not flung to its edge): inside the shown cards' bounding box.
    lo, hi = state.positions.min(0), state.positions.max(0)
    assert np.all((placed >= lo - 0.1) & (placed <= hi + 0.1))


def test_neighbour_overlap_counts_shared_indices_per_row():
    from game.layout.projector import neighbour_overlap

    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 9, 4, 2]])
    b = np.array([[4, 3, 9, 10], [1, 2, 3, 0], [2, 4, 9, 0]])
    np.testing.assert_allclose(neighbour_overlap(a, b), [0.5, 0.0, 1.0])
    assert neighbour_overlap(a[:0], b[:0]).shape == (0,)


def test_approximate_neighbours_at_scale_agree_with_exact_ones():
    """Above ``EXACT_KNN_BELOW`` rows the neighbour search is annoy's; its 10 nearest are the
    exact ones for nearly every row, and the fit keeps openTSNE's own neighbours (no second
    search) as each card's record for update_local."""
    from game.layout.projector import EXACT_KNN_BELOW, _knn, neighbour_overlap

    rng = np.random.default_rng(1)
    n = EXACT_KNN_BELOW + 500
    centres = rng.normal(scale=3, size=(30, 20))
    x = (centres[rng.integers(0, 30, n)] + rng.normal(size=(n, 20))).astype(np.float32)
    exact = _knn(x, 10, exact=True)
    approx = _knn(x, 10, n_jobs=2)
    overlap = neighbour_overlap(exact, approx)
    assert overlap.mean() > 0.95 and overlap.min() >= 0.5


def test_fit_records_the_affinity_neighbours_and_exact_below_is_an_option(blobs):
    from game.layout.projector import _knn, neighbour_overlap

    x, _ = blobs
    state = Projector(fast_config()).fit(x)
    reduced = Projector(fast_config()).reduce(x)
    assert state.neighbours is not None and state.neighbours.shape == (len(x), 10)
    assert neighbour_overlap(state.neighbours, _knn(reduced, 10, exact=True)).mean() > 0.95
    assert Projector(fast_config()).affinity_method(len(x)) == "annoy"
    assert Projector(fast_config(), exact_below=1000).affinity_method(len(x)) == "exact"


def test_large_sets_get_the_coarser_schedule():
    from game.layout.projector import LARGE_ITERATIONS, LARGE_LAYOUT, LARGE_THETA, Schedule

    config = fast_config(iterations=400, theta=0.5)
    small = Schedule.for_points(config, LARGE_LAYOUT)
    assert (small.theta, small.early_iterations, small.iterations) == (0.5, 50, 400)
    large = Schedule.for_points(config, LARGE_LAYOUT + 1)
    assert (large.theta, large.early_iterations, large.iterations) == (LARGE_THETA, 50, LARGE_ITERATIONS)
    assert small.knn_trees == 50 and large.knn_trees < small.knn_trees
