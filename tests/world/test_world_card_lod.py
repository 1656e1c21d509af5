"""Card level of detail (issue 17) and card orientation (issue 16), offscreen through EGL.

Every card is drawn from a 32 px thumbnail; the cards nearest the viewer (and the selected one)
from a fixed pool of full-resolution tiles. The images here are 1-texel checkerboards: at full
resolution a card shows the checks, its thumbnail (2x2 box average) is one flat colour, so a
screenshot says which one a card was drawn from.
"""

from __future__ import annotations

import numpy as np
import pytest

from game.world.card_lod import NearPool

SIZE = (320, 240)


def checkerboards(n: int, side: int = 64) -> np.ndarray:
    """Card i: red/blue 1-texel checks (thumbnail: flat purple)."""
    yy, xx = np.mgrid[0:side, 0:side]
    check = ((yy + xx) % 2).astype(bool)
    img = np.zeros((side, side, 3), np.uint8)
    img[check] = (255, 0, 0)
    img[~check] = (0, 0, 255)
    return np.repeat(img[None], n, axis=0)


# --- the pool's bookkeeping (no GPU) -----------------------------------------------------------


def test_pool_holds_the_nearest_cards_and_never_more_than_its_slots():
    rng = np.random.default_rng(0)
    pos = rng.uniform(-5, 5, size=(5000, 3)).astype(np.float32)
    pool = NearPool(len(pos), 64, budget=1000)
    eye, fwd = np.zeros(3, np.float32), np.array([0, 1, 0], np.float32)
    frames = 0
    while pool.scans_done == 0:
        pool.step(pos, eye, fwd)
        frames += 1
    assert frames == 5  # 5000 cards, 1000 per frame: the scan is spread over frames
    want = np.argsort(NearPool.scores(pos, eye, fwd))[:64]
    assert set(pool.full_res_cards.tolist()) == set(want.tolist())
    assert len(pool.full_res_cards) == 64
    # Slots and cards agree both ways.
    held = pool.slot_card >= 0
    assert (pool.card_slot[pool.slot_card[held]] == np.flatnonzero(held)).all()
    assert (pool.card_slot >= 0).sum() == 64


def test_pool_rescans_only_when_the_viewer_moves_or_cards_move():
    pos = np.random.default_rng(1).uniform(-3, 3, size=(300, 3)).astype(np.float32)
    pool = NearPool(len(pos), 16, min_frames=2)
    eye, fwd = np.zeros(3, np.float32), np.array([0, 1, 0], np.float32)
    assert pool.step(pos, eye, fwd)  # first scan: 16 loads
    for _ in range(10):
        assert not pool.step(pos, eye, fwd)  # standing still: nothing
    assert pool.scans_done == 1
    far = np.array([2.5, 2.5, 2.5], np.float32)
    changes = pool.step(pos, far, fwd)
    assert pool.scans_done == 2 and changes.loads  # moved: other cards come in ...
    assert len(changes.cleared) == len(changes.loads)  # ... in the slots of those left behind
    pool.step(pos, far, fwd)
    pool.cards_moved()
    pool.step(pos, far, fwd)
    assert pool.scans_done == 3


def test_pinned_card_is_loaded_at_once_and_kept():
    pos = np.random.default_rng(2).uniform(-3, 3, size=(200, 3)).astype(np.float32)
    pool = NearPool(len(pos), 8, min_frames=1)
    eye, fwd = np.zeros(3, np.float32), np.array([0, 1, 0], np.float32)
    pool.step(pos, eye, fwd)
    far_card = int(np.argmax(NearPool.scores(pos, eye, fwd)))
    changes = pool.pin([far_card])
    assert [c for _, c in changes.loads] == [far_card]
    assert pool.card_slot[far_card] >= 0
    pool.cards_moved()
    pool.step(pos, eye, fwd)  # a new scan keeps the pinned card
    assert pool.card_slot[far_card] >= 0 and len(pool.full_res_cards) == 8


# --- rendering -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base():
    from game.world import engine

    engine.configure(offscreen=True, size=SIZE, multisamples=0)
    from direct.showbase.ShowBase import ShowBase

    b = ShowBase(windowType="offscreen")
    b.disable_mouse()
    b.camLens.set_fov(60)
    b.camLens.set_near_far(0.01, 100)
    yield b
    b.destroy()


def frame(base) -> np.ndarray:
    base.graphicsEngine.render_frame()
    tex = base.win.get_screenshot()
    data = np.frombuffer(bytes(tex.get_ram_image_as("RGB")), dtype=np.uint8)
    return data.reshape(tex.get_y_size(), tex.get_x_size(), 3)[::-1].astype(np.int16)


def screen(base, point) -> tuple[int, int]:
    from panda3d.core import Point2, Point3

    p2 = Point2()
    assert base.camLens.project(base.cam.get_relative_point(base.render, Point3(*point)), p2)
    return int((p2[0] + 1) / 2 * SIZE[0]), int((1 - p2[1]) / 2 * SIZE[1])


def patch(img: np.ndarray, xy: tuple[int, int], r: int = 12) -> np.ndarray:
    x, y = xy
    return img[y - r : y + r, x - r : x + r].reshape(-1, 3)


def test_near_card_full_resolution_far_card_thumbnail(base):
    from game.world.cards import CardField

    base.camera.set_pos(0, 0, 0)
    base.camera.set_hpr(0, 0, 0)
    base.camLens.set_fov(30)  # about 3 screen pixels per texel: the checks resolve
    positions = np.array([[-0.07, 0.35, 0.0], [0.07, 0.40, 0.0]], np.float32)
    field = CardField(
        base.render, checkerboards(2), positions, np.ones((2, 4), np.float32), 0.12, pool_slots=1
    )
    try:
        assert field.lod and field.full_tile == 64 and field.layout.tile == 32
        field.set_viewer(base.camera)
        field.update_lod()
        img = frame(base)
        near, far = patch(img, screen(base, positions[0])), patch(img, screen(base, positions[1]))
        # Near: the checks (red and blue texels side by side); far: the thumbnail's flat purple.
        assert near.std(axis=0).max() > 30, near.std(axis=0)
        assert far.std(axis=0).max() < 8, far.std(axis=0)
        assert np.abs(far.mean(axis=0) - (128, 0, 128)).max() < 20, far.mean(axis=0)
        assert field.full_res_cards.tolist() == [0]
        # The viewer steps right: the other card is now the nearer one and takes the slot.
        base.camera.set_pos(0.14, 0.1, 0)
        base.camera.look_at(*map(float, positions[1]))
        for _ in range(8):
            field.update_lod()
        assert field.full_res_cards.tolist() == [1]
        img = frame(base)
        assert patch(img, screen(base, positions[1])).std(axis=0).max() > 30
        # Selecting the far card loads it at once, without a scan.
        field.set_highlight(selected=0)
        assert 0 in field.full_res_cards.tolist()
    finally:
        base.camLens.set_fov(60)
        field.destroy()


def test_small_images_keep_one_texture_and_no_pool(base):
    """8 px digits and 32 px shapes fit the thumbnail: drawn as before, nothing pooled."""
    from game.world.cards import CardField

    for side in (8, 32):
        imgs = np.random.default_rng(side).integers(0, 255, (50, side, side, 1), dtype=np.uint8)
        field = CardField(base.render, imgs, np.zeros((50, 3), np.float32), np.ones((50, 4), np.float32))
        assert not field.lod and field.layout.tile == side
        assert field.texture_bytes()["pool"] == 0 and len(field.full_res_cards) == 50
        field.destroy()


def test_texture_memory_bounded_at_20k_cards(base):
    from game.world.cards import LOADS_PER_FRAME, POOL_SLOTS, CardField

    n = 20000
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    pos = rng.uniform(-2, 2, (n, 3)).astype(np.float32)
    field = CardField(base.render, imgs, pos, np.ones((n, 4), np.float32))
    try:
        base.camera.set_pos(0, -3, 0)
        base.camera.look_at(0, 0, 0)
        field.set_viewer(base.camera)
        frames = 0
        while (field.near.scans_done == 0 or field.tiles_waiting) and frames < 100:
            field.update_lod()
            frames += 1
        # A 3-frame scan, then the 512 tiles 64 a frame: no frame converts them all.
        assert field.near.scans_done >= 1 and frames >= 2 + 512 // LOADS_PER_FRAME
        assert len(field.full_res_cards) == POOL_SLOTS  # full-res layers: a fixed count
        mem = field.texture_bytes()
        assert mem["pool"] == 2 * 1024 * 1024 * 4 * 4 // 3  # 512 tiles of 64 px: two layers
        full = n * 64 * 64 * 4 * 4 // 3  # every card at 64 px, as before the level of detail
        assert mem["total"] < full / 3, mem
        frame(base)  # renders with the thumbnails and the pool bound
        assert field.pool_texture.get_z_size() == 2
    finally:
        field.destroy()


def card_pixels(img: np.ndarray, colour) -> np.ndarray:
    return np.argwhere(np.abs(img - np.asarray(colour)).max(axis=2) <= 10)


def test_cards_face_the_viewer_position_with_world_up_in_vr_mode(base):
    """A rolled head: a view-plane card rolls with it (upright on screen); a card that faces the
    head's position keeps world up, so on screen it is turned by the roll."""
    from game.world.cards import CardField

    base.camera.set_pos(0, 0, 0)
    base.camera.set_hpr(0, 0, 30)  # head tilted 30 degrees
    imgs = np.full((1, 8, 8, 3), (0, 255, 0), np.uint8)
    field = CardField(
        base.render, imgs, np.array([[0, 0.6, 0]], np.float32), np.full((1, 4), (0, 1, 0, 1), np.float32), 0.2
    )
    try:
        extents = {}
        for face in (False, True):
            field.set_viewer(base.camera, face=face)
            px = card_pixels(frame(base), (0, 255, 0))
            assert len(px) > 500
            box = (px.max(axis=0) - px.min(axis=0) + 1).prod()
            extents[face] = box / len(px)
        assert extents[False] < 1.1  # axis-aligned on screen
        assert extents[True] > 1.4  # a square turned by 30 degrees fills ~1.6x its bounding box
    finally:
        base.camera.set_hpr(0, 0, 0)
        field.destroy()


def test_selected_card_at_true_depth_in_vr_mode(base):
    """Desktop: the selected card is drawn over its cluster; VR: at its own depth, so a card in
    front of it hides it in both eyes alike."""
    from game.world.cards import CardField
    from game.world.palette import SELECTED

    base.camera.set_pos(0, 0, 0)
    base.camera.set_hpr(0, 0, 0)
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    positions = np.array([[0, 0.8, 0], [0, 0.5, 0]], np.float32)  # card 1 right in front of card 0
    field = CardField(base.render, imgs, positions, np.full((2, 4), 0.4, np.float32), 0.2)
    ring = (np.asarray(SELECTED[:3]) * 255).round()
    try:
        field._data()[1, 0, 3] = 3.0  # the front card is large: it covers the selected one
        field.set_highlight(selected=0)
        counts = {}
        for face in (False, True):
            field.set_viewer(base.camera, face=face)
            counts[face] = len(card_pixels(frame(base), ring))
        assert counts[False] > 300  # drawn at the front of the depth range
        assert counts[True] < counts[False] / 4  # mostly behind the card in front
    finally:
        field.destroy()


@pytest.mark.parametrize("shape", [(64, 64, 3), (100, 80, 1)])
def test_pool_tile_is_the_full_image_in_panda_order(shape):
    """Both ways a tile reaches the pool (RGB at the tile size: one copy; anything else through
    ``to_rgba_tiles``) write what the atlas packing would."""
    from panda3d.core import NodePath

    from game.world import atlas
    from game.world.cards import CardField

    imgs = np.random.default_rng(4).integers(0, 255, (6, *shape), dtype=np.uint8)
    field = CardField(NodePath("root"), imgs, np.zeros((6, 3), np.float32), np.ones((6, 4), np.float32))
    field.set_highlight(selected=4)
    slot = int(field.near.card_slot[4])
    lay = field.pool_layout
    ram = np.frombuffer(bytes(field.pool_texture.get_ram_image()), np.uint8)
    ram = ram.reshape(lay.layers, lay.side, lay.side, 4)
    layer, j = divmod(slot, lay.per_layer)
    ty, tx = divmod(j, lay.grid)
    t = lay.tile
    got = ram[layer, ty * t : (ty + 1) * t, tx * t : (tx + 1) * t]
    want = atlas.to_panda_tiles(atlas.to_rgba_tiles(imgs[4:5], t))[0]
    np.testing.assert_array_equal(got, want)
    assert 4 in field.full_res_cards.tolist()


def test_selecting_a_card_whose_tile_still_waits_loads_it_at_once():
    from panda3d.core import NodePath

    from game.world.cards import LOADS_PER_FRAME, CardField

    n = 400
    imgs = checkerboards(n)
    pos = np.random.default_rng(5).uniform(-1, 1, (n, 3)).astype(np.float32)
    render = NodePath("render")
    field = CardField(render, imgs, pos, np.ones((n, 4), np.float32))
    field.set_viewer(render.attach_new_node("camera"))
    field.update_lod()  # one scan (400 cards): 400 chosen, LOADS_PER_FRAME loaded
    assert field.tiles_waiting == n - LOADS_PER_FRAME
    waiting = field._pending[-1][1]
    assert waiting not in field.full_res_cards.tolist()
    field.set_highlight(selected=waiting)
    assert waiting in field.full_res_cards.tolist()
    assert field.tiles_waiting == n - LOADS_PER_FRAME - 1
