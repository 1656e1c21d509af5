"""Crops of real photographs shipped inside scikit-learn's wheel, labelled by region: no download.

scikit-learn ships two photographs (``load_sample_images``: a pagoda by a lake, ``china.jpg``, and
a dahlia, ``flower.jpg``). Square crops of random size and place inside hand-drawn regions of
them make a small natural-image dataset whose classes are the regions. Several are confusable on
purpose: sky and lake (hazy, pale blue), the pagoda's orange roofs and the dahlia's petals, trees
and the dahlia's blurred leaves, petals and the flower's centre.

Deterministic for a seed (each crop draws from its own generator seeded by seed, class, index).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from game.data.dataset import Dataset

# class -> (photo, regions as (x0, y0, x1, y1) in the 640x427 photographs): a crop's centre lies in
# one of the regions, its side is 32-72 px and it is clipped to the photograph.
REGIONS: dict[str, tuple[str, list[tuple[int, int, int, int]]]] = {
    "pagoda": ("china.jpg", [(130, 100, 290, 350)]),
    "trees": ("china.jpg", [(0, 160, 50, 320), (400, 300, 640, 427), (560, 150, 640, 300)]),
    "lake": ("china.jpg", [(350, 240, 540, 290)]),
    "sky": ("china.jpg", [(360, 20, 530, 160)]),
    "petals": ("flower.jpg", [(200, 110, 260, 320), (350, 110, 420, 320), (260, 260, 350, 330)]),
    "flower centre": ("flower.jpg", [(285, 180, 335, 230)]),
    "leaves": ("flower.jpg", [(20, 20, 150, 400), (480, 20, 620, 400)]),
}


def _photos() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {
        name.replace("\\", "/").rsplit("/", 1)[-1]: img for name, img in zip(bunch.filenames, bunch.images)
    }


def crop(
    photo: np.ndarray, regions: list[tuple[int, int, int, int]], rng: np.random.Generator, size: int
) -> np.ndarray:
    """One seeded square crop centred in one of ``regions``, resized to ``size``, maybe mirrored."""
    h, w = photo.shape[:2]
    areas = np.array([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions], dtype=np.float64)
    x0, y0, x1, y1 = regions[int(rng.choice(len(regions), p=areas / areas.sum()))]
    side = int(rng.integers(32, 73))
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    left = int(np.clip(round(cx - side / 2), 0, w - side))
    top = int(np.clip(round(cy - side / 2), 0, h - side))
    patch = Image.fromarray(photo[top : top + side, left : left + side])
    if rng.random() < 0.5:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_photo_crops_dataset(per_class: int = 200, size: int = 32, seed: int = 0) -> Dataset:
    """``per_class`` crops of every region, ``size`` pixels square, RGB."""
    photos = _photos()
    images, labels, sources = [], [], []
    for c, (name, (photo, regions)) in enumerate(REGIONS.items()):
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            images.append(crop(photos[photo], regions, rng, size))
            labels.append(c)
            sources.append(f"sklearn:{photo}:{name}#{i}")
    return Dataset(
        np.stack(images), np.array(labels, dtype=np.int64), list(REGIONS), sources, name="photo crops"
    )
