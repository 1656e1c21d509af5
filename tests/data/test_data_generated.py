"""Generated datasets (colour shapes, photo crops): deterministic, the right form, no download."""

import numpy as np
import pytest

from game.data.photo_crops import REGIONS, load_photo_crops_dataset
from game.data.shapes import CLASSES, load_shapes_dataset, render_shape


def test_shapes_are_deterministic_colour_images_of_every_class():
    a = load_shapes_dataset(per_class=3, size=32, seed=1)
    b = load_shapes_dataset(per_class=3, size=32, seed=1)
    c = load_shapes_dataset(per_class=3, size=32, seed=2)
    assert a.images.shape == (3 * len(CLASSES), 32, 32, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.class_names == CLASSES and np.bincount(a.labels).tolist() == [3] * len(CLASSES)
    # An image depends on (seed, class, index) only: more images per class keep the first ones.
    more = load_shapes_dataset(per_class=4, size=32, seed=1)
    np.testing.assert_array_equal(more.images[more.labels == 0][:3], a.images[a.labels == 0])


def test_shapes_past_the_scene_are_new_images_of_the_same_generator():
    """``first``: the learning suite's extra evaluation images (bench_suite ``--eval-extra``) are
    the indices after the scene's, never the scene's own."""
    whole = load_shapes_dataset(per_class=5, size=32, seed=1)
    later = load_shapes_dataset(per_class=2, size=32, seed=1, first=3)
    for c in range(len(CLASSES)):
        np.testing.assert_array_equal(later.images[later.labels == c], whole.images[whole.labels == c][3:])
    assert later.sources[0] == "shapes:disc#3"


def test_a_ring_is_a_disc_with_a_hole():
    """Same seed, same nuisances: ring and disc differ only inside the hole (the part that matters)."""
    disc = render_shape("disc", np.random.default_rng(5), 48).astype(int)
    ring = render_shape("ring", np.random.default_rng(5), 48).astype(int)
    differs = np.abs(disc - ring).sum(-1) > 60
    assert 10 < differs.sum() < 0.2 * 48 * 48
    ys, xs = np.nonzero(differs)
    assert xs.max() - xs.min() < 24 and ys.max() - ys.min() < 24  # one compact region


def test_shapes_size_is_checked():
    with pytest.raises(ValueError):
        load_shapes_dataset(per_class=1, size=8)


def test_photo_crops_from_the_wheel():
    d = load_photo_crops_dataset(per_class=4, size=32, seed=0)
    assert d.images.shape == (4 * len(REGIONS), 32, 32, 3)
    np.testing.assert_array_equal(d.images, load_photo_crops_dataset(per_class=4, size=32, seed=0).images)
    # Classes differ in what they show: sky crops are brighter than leaf crops.
    sky, leaves = list(REGIONS).index("sky"), list(REGIONS).index("leaves")
    assert d.images[d.labels == sky].mean() > d.images[d.labels == leaves].mean() + 50


def test_shapes_scene_is_in_the_start_menu_list_and_loads():
    from game.core.scene import SCENES_DIR, list_scenes, load_scene
    from game.data.dataset import load_dataset

    path = SCENES_DIR / "shapes.toml"
    assert path in list_scenes()
    scene = load_scene(path)
    assert scene.dataset.kind == "shapes" and scene.network.arch == "small_cnn"
    scene.dataset.max_images = 60  # keep the test fast: a seeded sample of the generated images
    data = load_dataset(scene)
    assert data.images.shape[1:] == (32, 32, 3) and data.n_classes == len(CLASSES)
