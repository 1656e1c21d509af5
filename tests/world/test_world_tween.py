"""Tween maths, palette and atlas packing (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from game.world import atlas
from game.world.palette import class_colours
from game.world.tween import Tween, ease_in_out


def test_ease_endpoints_and_symmetry():
    assert ease_in_out(0.0) == 0.0 and ease_in_out(1.0) == 1.0
    assert ease_in_out(0.5) == pytest.approx(0.5)
    assert ease_in_out(0.25) == pytest.approx(1 - ease_in_out(0.75))
    assert ease_in_out(-1.0) == 0.0 and ease_in_out(2.0) == 1.0


def test_tween_moves_every_card_and_ends_on_target():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1000, 3)).astype(np.float32)
    b = rng.normal(size=(1000, 3)).astype(np.float32)
    tw = Tween(a, duration=2.0)
    tw.retarget(b, now=10.0)
    assert tw.update(11.0)
    np.testing.assert_allclose(tw.current, (a + b) / 2, atol=1e-5)  # smoothstep(0.5) = 0.5
    tw.update(10.5)
    np.testing.assert_allclose(tw.current, a + (b - a) * ease_in_out(0.25), atol=1e-5)
    assert tw.update(12.5)
    np.testing.assert_array_equal(tw.current, b)
    assert not tw.active and not tw.update(13.0)


def test_retarget_mid_tween_starts_from_current_and_pin_holds():
    a = np.zeros((3, 3), np.float32)
    b = np.ones((3, 3), np.float32)
    tw = Tween(a, duration=1.0)
    tw.retarget(b, now=0.0)
    tw.update(0.5)
    mid = tw.current.copy()
    tw.retarget(a, now=0.5)
    tw.update(0.5)
    np.testing.assert_allclose(tw.current, mid)  # no jump
    tw.pin(1, (5, 5, 5))
    tw.update(1.0)
    np.testing.assert_allclose(tw.current[1], (5, 5, 5))
    tw.update(2.0)
    np.testing.assert_allclose(tw.current[0], 0)
    np.testing.assert_allclose(tw.current[1], (5, 5, 5))


def test_zero_duration_jumps_and_resize_adds_cards():
    tw = Tween(np.zeros((2, 3), np.float32), duration=0.0)
    tw.retarget(np.ones((3, 3), np.float32), now=0.0)
    np.testing.assert_array_equal(tw.current, np.ones((3, 3)))


def test_palette_distinct_for_many_classes():
    c = class_colours(24)
    assert c.shape == (24, 4)
    d = np.linalg.norm(c[:, None, :3] - c[None, :, :3], axis=2) + np.eye(24)
    assert d.min() > 0.05
    # The first ten are the fixed colour-blind-safe list, far apart.
    assert d[:10, :10].min() > 0.15


def test_atlas_places_each_image_in_its_tile():
    imgs = np.arange(20 * 4 * 4, dtype=np.uint8).reshape(20, 4, 4, 1)
    tile = atlas.tile_side(4, 4)
    layout = atlas.plan(20, tile, layer_side=8)  # 2x2 tiles per layer -> 5 layers
    assert (layout.grid, layout.layers) == (2, 5)
    layers = atlas.pack_layers(atlas.to_rgba_tiles(imgs, tile), layout)
    slots = layout.slots()
    for i in (0, 3, 7, 19):
        layer, tx, ty = (int(v) for v in slots[i])
        block = layers[layer, ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile, 0]
        # Stored bottom-up (Panda3D row order), BGRA: channel 0 is blue = the grey value.
        np.testing.assert_array_equal(block[::-1], imgs[i, :, :, 0])


def test_large_images_shrink_to_tile_cap():
    imgs = np.zeros((2, 200, 100, 3), np.uint8)
    tile = atlas.tile_side(200, 100, cap=64)
    assert tile == 64
    tiles = atlas.to_rgba_tiles(imgs, tile)
    assert tiles.shape == (2, 64, 64, 4)


def test_moved_since_bounds_every_card_through_a_glide_and_names_pinned_cards():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 3)).astype(np.float32)
    b = (a + rng.normal(scale=2.0, size=a.shape)).astype(np.float32)
    tw = Tween(a, duration=1.0)
    mark = tw.mark()
    assert tw.moved_since(mark) == (0.0, pytest.approx(np.zeros(0)))  # still: nothing moved
    tw.retarget(b, now=0.0)
    assert tw.moved_since(mark)[0] == 0.0  # a retarget alone moves nothing
    frame_mark, frame_pos = tw.mark(), tw.current.copy()
    for now in (0.1, 0.3, 0.2, 0.6, 0.95, 1.2):  # time may go back (a replay)
        tw.update(now)
        for since, pos in ((mark, a), (frame_mark, frame_pos)):
            bound, cards = tw.moved_since(since)
            moved = np.linalg.norm(tw.current - pos, axis=1).max()
            assert len(cards) == 0 and moved <= bound
        # The bound is tight enough to be useful: within 2x of the true largest step.
        step = np.linalg.norm(tw.current - frame_pos, axis=1).max()
        assert tw.moved_since(frame_mark)[0] <= 2 * step + 1e-5
        frame_mark, frame_pos = tw.mark(), tw.current.copy()
    # A carried card: named, not counted in the bound.
    before = tw.mark()
    tw.pin(7, (50.0, 50.0, 50.0))
    tw.pin(7, (51.0, 50.0, 50.0))
    bound, cards = tw.moved_since(before)
    assert bound == 0.0 and cards.tolist() == [7]


def test_moved_since_is_unknown_after_cards_are_added_and_for_a_very_old_mark():
    tw = Tween(np.zeros((4, 3), np.float32))
    mark = tw.mark()
    tw.retarget(np.ones((5, 3), np.float32), now=0.0)  # a card joined
    assert tw.moved_since(mark) is None
    mark = tw.mark()
    for k in range(10_000):  # a long carry: the pin log forgets its oldest half
        tw.pin(k % 5, (k, 0.0, 0.0))
    assert tw.moved_since(mark) is None
    recent = tw.mark()
    tw.pin(2, (0.0, 1.0, 0.0))
    assert tw.moved_since(recent)[1].tolist() == [2]


def test_a_hidden_card_appearing_at_the_end_of_a_glide_is_named():
    a = np.zeros((3, 3), np.float32)
    a[1] = np.nan  # hidden
    b = np.ones((3, 3), np.float32)
    tw = Tween(a, duration=1.0)
    mark = tw.mark()
    tw.retarget(b, now=0.0)
    tw.update(0.5)
    assert tw.moved_since(mark)[1].tolist() == []
    tw.update(1.5)
    bound, cards = tw.moved_since(mark)
    assert cards.tolist() == [1] and bound >= np.sqrt(3) - 1e-6
