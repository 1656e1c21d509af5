"""The features key of an image folder comes from the folder's content key (no re-hash of every
image's bytes at launch), and still changes when any image changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from game.data.folder import load_image_folder
from game.nets.architectures import build_module
from game.nets.cache import cached_inference, inference_key
from game.nets.network import Network


def _write(path: Path, value: int) -> None:
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATENT_REACH_CACHE", str(tmp_path / "cache"))
    for c in ("a", "b"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(4):
            _write(tmp_path / "images" / c / f"{i}.png", 10 * ord(c) + i)
    return tmp_path / "images"


@pytest.fixture
def network() -> Network:
    torch.manual_seed(0)
    return Network(build_module("small_cnn", 2, 3), "small_cnn", 2, 3, 12)


def test_a_folders_key_names_its_images_for_the_features_cache(folder, network, monkeypatch):
    data = load_image_folder(folder, image_size=12, progress=False, cache=True)
    assert data.content_key
    again = load_image_folder(folder, image_size=12, progress=False, cache=True)  # from the cache
    assert again.content_key == data.content_key
    import game.data.cache_files as cf

    hashed: list[int] = []
    real = cf.content_hash

    def spy(*items):
        hashed.extend(i.nbytes for i in items if isinstance(i, np.ndarray) and i.dtype == np.uint8)
        return real(*items)

    monkeypatch.setattr("game.nets.cache.content_hash", spy)
    key = inference_key(network, again.images, again.content_key)
    assert hashed == []  # the images' bytes were not hashed
    assert key != inference_key(network, again.images)  # (that key hashes them)
    assert hashed == [again.images.nbytes]
    assert load_image_folder(folder, image_size=12, progress=False).content_key == ""  # no cache, no key


def test_the_features_key_changes_when_any_image_changes(folder, network):
    first = load_image_folder(folder, image_size=12, progress=False, cache=True)
    inference, key = cached_inference(network, first.images, images_key=first.content_key)
    changed = folder / "b" / "2.png"
    _write(changed, 999)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = load_image_folder(folder, image_size=12, progress=False, cache=True)
    assert second.content_key != first.content_key
    calls = []
    real = network.infer
    network.infer = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[method-assign]
    again, key2 = cached_inference(network, second.images, images_key=second.content_key)
    assert key2 != key and calls == [1]  # computed again, not the old entry
    row = second.sources.index(str(changed))
    assert not np.array_equal(again.features[row], inference.features[row])
    same, key3 = cached_inference(network, second.images, images_key=second.content_key)
    assert key3 == key2 and calls == [1]  # and stored: the next launch maps it
    np.testing.assert_array_equal(same.features, again.features)
