"""``update_local``'s neighbour step skips the cards it can show would stay (``graph_step``'s
gaps, issue 17): the same re-layout bit for bit, with most of the search left out."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from game.core.scene import LayoutConfig
from game.layout.projector import Projector, graph_step, neighbour_overlap


def clusters(seed: int, n: int, dims: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dims)) * 6
    return (centres[rng.integers(0, 10, n)] + rng.normal(size=(n, dims))).astype(np.float32)


def test_settled_rows_stay_as_a_full_search_says_and_their_gaps_are_lower_bounds():
    rng = np.random.default_rng(0)
    first = clusters(0, 2500, 10)
    graph = NearestNeighbors(n_neighbors=11).fit(first).kneighbors(first, return_distance=False)[:, 1:]
    second = first + 0.02 * rng.normal(size=first.shape).astype(np.float32)
    one = graph_step(second, first, graph, 10, keep=0.5)  # no gaps yet: every row searched
    assert not one.settled.any() and one.gaps.known.all()
    free = neighbour_overlap(graph, one.neighbours) < 0.5
    gaps = one.gaps_after(free)
    held = graph.copy()
    held[free] = one.neighbours[free]
    third = second + 0.02 * rng.normal(size=first.shape).astype(np.float32)
    third[[7, 900]] = second[[1200, 30]]  # two edited cards jump to other clusters
    full = graph_step(third, second, held, 10)
    fast = graph_step(third, second, held, 10, gaps=gaps, keep=0.5, search=np.array([7]))
    assert fast.settled.mean() > 0.8  # most of the search left out
    assert not fast.settled[[7, 900]].any()  # edited (named) and far rows are searched
    stays_full = neighbour_overlap(held, full.neighbours) >= 0.5
    stays_fast = neighbour_overlap(held, fast.neighbours) >= 0.5
    assert np.array_equal(stays_full, stays_fast)  # every card's fate is the full search's
    assert stays_full[fast.settled].all()
    searched = ~fast.settled
    assert np.array_equal(fast.neighbours[searched], full.neighbours[searched])
    # The bounds are true lower bounds, measured or carried over from the last step.
    bounds = fast.gaps
    assert bounds.known.all()  # no card took new neighbours before this step
    for row in range(0, len(third), 25):
        cand = np.setdiff1d(np.union1d(held[row], held[held[row]].ravel()), [*held[row], row])
        near = bounds.near[row][bounds.near[row] >= 0]
        assert np.isin(near, cand).all()
        true = np.linalg.norm(third[cand] - third[row], axis=1)
        each = dict(zip(near.tolist(), bounds.bound[row][bounds.near[row] >= 0].tolist(), strict=True))
        for j, dist in zip(cand.tolist(), true.tolist(), strict=True):
            assert dist >= each.get(j, bounds.rest[row]) - 1e-5


def _settled_shares(monkeypatch) -> list[float]:
    """The share of cards each later ``graph_step`` settles, in call order."""
    from game.layout import projector as projector_module

    settled: list[float] = []
    real_step = projector_module.graph_step

    def counting_step(*args, **kwargs):
        step = real_step(*args, **kwargs)
        settled.append(float(step.settled.mean()))
        return step

    monkeypatch.setattr(projector_module, "graph_step", counting_step)
    return settled


def test_local_updates_with_and_without_the_gaps_are_the_same(monkeypatch):
    from game.layout import projector as projector_module

    monkeypatch.setattr(projector_module, "EXACT_KNN_BELOW", 100)  # the large scenes' path at 900
    rng = np.random.default_rng(1)
    x = np.maximum(clusters(1, 900, 40), 0)
    config = LayoutConfig(pca_dims=10, reuse_above=0, early_iterations=20, iterations=20, perplexity=10.0)
    proj = Projector(config, n_jobs=1)
    fast = slow = proj.fit(x)
    assert fast.neighbour_gaps is not None and fast.neighbour_gaps.known.all()
    settled = _settled_shares(monkeypatch)
    features = x
    for edit in range(3):
        changed = features + 0.01 * rng.normal(size=x.shape).astype(np.float32)
        changed[edit * 50] = features[400 + edit]  # an edited card joins another cluster
        move = np.array([edit * 50])
        fast = proj.update_local(changed, fast, features, move=move)
        slow.neighbour_gaps = None
        slow = proj.update_local(changed, slow, features, move=move)
        assert np.array_equal(fast.embedding, slow.embedding)
        assert np.array_equal(fast.neighbours, slow.neighbours)
        assert np.array_equal(fast.moved, slow.moved) and fast.moved[edit * 50]
        assert fast.neighbour_gaps is not None
        features = changed
    # The fit measured the bounds (the first drop's update skips too); ``slow`` never has any.
    assert not any(settled[1::2])
    assert min(settled[0::2]) > 0.5, settled


def test_only_the_live_version_keeps_its_bounds():
    from game.layout.projector import LayoutState, NeighbourGaps
    from game.learning.history import Checkpoint, ModelHistory

    def checkpoint(version: int) -> Checkpoint:
        layout = LayoutState(np.zeros((4, 3)), np.zeros(3), 1.0, np.zeros(3), np.zeros((4, 3)))
        layout.neighbour_gaps = NeighbourGaps.unknown(4)
        empty = np.zeros(4)
        return Checkpoint(version, b"", empty, empty, empty, empty, layout)

    history = ModelHistory()
    first, second = history.push(checkpoint(0)), history.push(checkpoint(1))
    assert first.layout.neighbour_gaps is None  # 8 MB at 50k for a version that is not on show
    assert second.layout.neighbour_gaps is not None


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_row_that_lists_itself_is_not_settled_by_its_own_distance(keep):
    # Annoy (and openTSNE's affinities) drop a query's first result as itself: with exact
    # duplicates the twin may be dropped instead, and the row keeps itself in its neighbours.
    rng = np.random.default_rng(3)
    first = clusters(3, 1500, 8)
    first[1000:1100] = first[900:1000]  # 100 exact duplicates
    graph = NearestNeighbors(n_neighbors=11).fit(first).kneighbors(first, return_distance=False)[:, 1:]
    graph[1000:1100, 0] = np.arange(1000, 1100)  # these rows list themselves
    second = first + 0.01 * rng.normal(size=first.shape).astype(np.float32)
    third = second + 0.01 * rng.normal(size=first.shape).astype(np.float32)
    one = graph_step(second, first, graph, 10, keep=keep)
    free = neighbour_overlap(graph, one.neighbours) < keep
    held = graph.copy()
    held[free] = one.neighbours[free]
    full = graph_step(third, second, held, 10)
    fast = graph_step(third, second, held, 10, gaps=one.gaps_after(free), keep=keep)
    stays_full = neighbour_overlap(held, full.neighbours) >= keep
    stays_fast = neighbour_overlap(held, fast.neighbours) >= keep
    assert np.array_equal(stays_full, stays_fast)
    assert fast.settled.any()


def _fitted_large(monkeypatch, seed: int = 1):
    """A fit on the large scenes' path (900 cards with the threshold lowered), with its bounds."""
    from game.layout import projector as projector_module

    monkeypatch.setattr(projector_module, "EXACT_KNN_BELOW", 100)
    x = np.maximum(clusters(seed, 900, 40), 0)
    config = LayoutConfig(pca_dims=10, reuse_above=0, early_iterations=20, iterations=20, perplexity=10.0)
    proj = Projector(config, n_jobs=1)
    return proj, x, proj.fit(x)


def test_a_cached_layout_keeps_its_pca_and_bounds_and_its_first_update_skips_as_the_live_one(
    monkeypatch, tmp_path
):
    # The layout cache stores the PCA and the bounds (issue 17): the first drop after a launch
    # skips most of its search, with the same re-layout as the fit's own layout makes.
    from game.data.cache_files import load_arrays, save_arrays
    from game.layout.state_io import layout_from_arrays, layout_to_arrays

    proj, x, live = _fitted_large(monkeypatch)
    path = tmp_path / "layout.npz"
    assert save_arrays(path, layout_to_arrays(live, search_state=True))
    arrays = load_arrays(path)
    assert arrays is not None
    loaded = layout_from_arrays(arrays)
    assert loaded.basis is not None and loaded.basis.pca is not None and live.basis is not None
    assert np.array_equal(loaded.basis.transform(x), live.basis.transform(x))  # bit for bit
    assert loaded.neighbour_gaps is not None and live.neighbour_gaps is not None
    assert np.array_equal(loaded.neighbour_gaps.bound, live.neighbour_gaps.bound)
    # The default leaves them out (sessions store the PCA alone: below).
    assert not any(key.startswith(("gaps_", "basis_")) for key in layout_to_arrays(live))

    settled = _settled_shares(monkeypatch)
    rng = np.random.default_rng(5)
    changed = x + 0.01 * rng.normal(size=x.shape).astype(np.float32)
    changed[10] = x[500]
    move = np.array([10])
    from_live = proj.update_local(changed, live, x, move=move)
    # A new launch: the features are another array (nothing remembered for it).
    from_cache = proj.update_local(changed, loaded, x.copy(), move=move)
    assert np.array_equal(from_live.embedding, from_cache.embedding)
    assert np.array_equal(from_live.neighbours, from_cache.neighbours)
    assert np.array_equal(from_live.moved, from_cache.moved)
    assert settled[1] > 0.5, settled  # the cached layout's first update skipped too
    # A layout read without its search state searches every card, as before.
    plain = layout_from_arrays(layout_to_arrays(live))
    assert plain.neighbour_gaps is None and plain.basis is None
    from_plain = proj.update_local(changed, plain, x.copy(), move=move)
    assert settled[2] == 0.0
    assert np.array_equal(from_plain.neighbours, from_live.neighbours)


def test_a_stored_search_state_that_cannot_be_the_layouts_is_refused(monkeypatch):
    # Every change a damaged or foreign file could bring: refused with ValueError (the layout
    # cache then says so and refits), never a crash and never bounds taken on trust.
    from game.layout.state_io import layout_from_arrays, layout_to_arrays

    _, _, live = _fitted_large(monkeypatch)
    good = layout_to_arrays(live, search_state=True)
    assert layout_from_arrays(good).neighbour_gaps is not None
    rng = np.random.default_rng(11)
    keys = [k for k in good if k.startswith(("gaps_", "basis_"))]
    assert len(keys) == 7
    refused = 0
    for trial in range(60):
        arrays = dict(good)
        key = keys[trial % len(keys)]
        value = np.array(arrays[key])
        kind = trial // len(keys) % 6
        if kind == 0:
            value = value[:-1]  # a row short
        elif kind == 1:
            value = value.astype(np.float64)  # another type
        elif kind == 2 and value.dtype.kind == "f":
            value.flat[int(rng.integers(value.size))] = np.nan
        elif kind == 3 and value.dtype.kind in "fi":
            value.flat[int(rng.integers(value.size))] = -5
        elif kind == 4:
            value = value.reshape(-1)[: max(value.size // 2, 1)]
        else:
            value = np.zeros((0,), value.dtype)
        arrays[key] = value
        try:
            state = layout_from_arrays(arrays)
        except ValueError:
            refused += 1
            continue
        # Accepted only where the change is a value the array may hold: a negative component or
        # mean (a NaN cannot be written into an integer or boolean array: those trials refuse
        # for their other change or hold valid values).
        assert kind == 3 and key in ("basis_components", "basis_mean"), (key, kind)
        assert state.neighbour_gaps is not None and state.basis is not None
    assert refused >= 55, refused


def test_the_layout_cache_hands_a_second_launch_the_fits_pca_and_bounds(monkeypatch, tmp_path, capsys):
    from game.pipeline import _layout_cached

    monkeypatch.setenv("LATENT_REACH_CACHE", str(tmp_path / "cache"))
    proj, x, _ = _fitted_large(monkeypatch, seed=2)
    first = _layout_cached(proj, x, use_cache=True)  # fitted and stored
    second = _layout_cached(proj, x.copy(), use_cache=True)  # read back
    assert second.tsne is None and first.neighbour_gaps is not None and second.neighbour_gaps is not None
    assert np.array_equal(first.neighbour_gaps.near, second.neighbour_gaps.near)
    assert second.basis is not None and first.basis is not None and second.basis.same_basis(first.basis)
    # A file whose bounds were damaged is said and refitted, not used.
    (path,) = (tmp_path / "cache" / "layouts").glob("*.npz")
    arrays = dict(np.load(path))
    arrays["gaps_rest"] = arrays["gaps_rest"][:-1]
    np.savez(path, **arrays)
    third = _layout_cached(proj, x.copy(), use_cache=True)
    assert "is damaged" in capsys.readouterr().err
    assert np.array_equal(third.embedding, first.embedding) and third.neighbour_gaps is not None


def test_bounds_of_a_fit_below_the_pca_sample_hold_in_the_rows_later_updates_reduce_to(monkeypatch):
    # Below PCA_FIT_ROWS the fit's rows are scikit-learn's randomized fit_transform, which is not
    # transform(x) to rounding but to the solver's approximation (review, issue 17): the bounds
    # must hold in the rows a cached layout and the job process reduce to, so the first update's
    # fate of every card is the full search's whichever way the layout came (keep 0.9: a tight test).
    from game.layout import projector as projector_module
    from game.layout.state_io import layout_from_arrays, layout_to_arrays

    monkeypatch.setattr(projector_module, "EXACT_KNN_BELOW", 100)
    rng = np.random.default_rng(8)
    x = np.maximum(clusters(8, 900, 400) + 2.0 * rng.normal(size=(900, 400)), 0).astype(np.float32)
    config = LayoutConfig(pca_dims=10, reuse_above=0, early_iterations=20, iterations=20, perplexity=10.0)
    proj = Projector(config, n_jobs=1)
    live = proj.fit(x)
    assert live.basis is not None and live.basis.pca is not None
    fitted_rows = proj.reduction(x).reduced
    assert np.abs(fitted_rows - live.basis.transform(x)).max() > 1e-3  # the solver's error, not rounding
    cached = layout_from_arrays(layout_to_arrays(live, search_state=True))
    searched = layout_from_arrays(layout_to_arrays(live, search_state=True))
    searched.neighbour_gaps = None  # the same basis, every card searched
    # A session stores the PCA alone (its replay reduces as the live jobs did), small scenes none.
    from game.sessions.recorder import layout_arrays

    stored = layout_arrays(live)
    assert "layout_basis_components" in stored and not any("gaps_" in key for key in stored)
    replayed = layout_from_arrays(stored, prefix="layout_", positions=live.positions)
    assert replayed.neighbour_gaps is None and replayed.basis is not None
    assert replayed.basis.same_basis(live.basis)
    small = layout_from_arrays(layout_to_arrays(live))
    assert not any("basis_" in key for key in layout_arrays(small))
    changed = x + 0.005 * rng.normal(size=x.shape).astype(np.float32)
    updates = [
        proj.update_local(changed, live, x, keep=0.9),
        proj.update_local(changed, cached, x.copy(), keep=0.9),
        proj.update_local(changed, replayed, x.copy(), keep=0.9),
        proj.update_local(changed, searched, x.copy(), keep=0.9),
    ]
    assert updates[-1].moved.any()
    for other in updates[:-1]:
        assert np.array_equal(other.moved, updates[2].moved)
        assert np.array_equal(other.neighbours, updates[2].neighbours)
