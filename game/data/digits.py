"""The embedded default: scikit-learn's digits (1,797 8x8 images, 10 classes, no download)."""

from __future__ import annotations

import numpy as np

from game.data.dataset import Dataset


def load_digits_dataset() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16 ink intensity; scale to 0..255 so every dataset shares one pixel range.
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    names = [str(c) for c in digits.target_names]
    sources = [f"digits:#{i}" for i in range(len(images))]
    return Dataset(images, labels, names, sources, name="digits")
