"""One trunk pass per launch (issue 17): the features pass stores the stem's outputs, the
fine-tune's stem cache reads them, and features computed from stored stem outputs by the head
alone are the whole network's. Everything here must be the same floats as the two-pass path."""

import numpy as np
import pytest
import torch

from game.data.cache_files import ArrayWriter, cache_dir
from game.learning.stem import compute_stem_cache
from game.nets import stem_store
from game.nets.architectures import AlexNet, SmallCNN
from game.nets.cache import cached_inference
from game.nets.network import Network
from game.nets.split import infer_head, split_point, stem_fingerprint


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_REACH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _alexnet(seed: int = 0) -> Network:
    torch.manual_seed(seed)
    return Network(AlexNet(n_classes=6), "alexnet", 6, 3, 64, "", "imagenet")


def _images(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


def _same(a, b) -> None:
    for name in ("features", "logits", "top5_classes", "top5_scores"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_features_pass_stores_the_stem_the_fine_tune_would_compute(cache):
    net, images = _alexnet(), _images(9)
    plain = net.infer(images, batch_size=4)
    inference, _ = cached_inference(net, images, batch_size=4, stem_layers=2)
    _same(inference, plain)  # the tap changes nothing in the features pass
    stored = list((cache / "stems").glob("*.npy"))
    assert len(stored) == 1
    own = compute_stem_cache(net, images, 2, batch_size=4, use_cache=False)
    assert own is not None
    loaded = compute_stem_cache(net, images, 2, batch_size=4)
    assert loaded is not None and loaded.start == own.start
    assert loaded.inputs.dtype == torch.float32 and torch.equal(loaded.inputs, own.inputs)
    assert float(own.inputs.abs().sum()) > 0
    # No stem pass ran for ``loaded``: it is the stored file's contents.
    assert np.array_equal(np.load(stored[0]), own.inputs.numpy())


def test_features_from_stored_stem_outputs_are_the_whole_networks(cache):
    net, images = _alexnet(), _images(9)
    stem = compute_stem_cache(net, images, 2, batch_size=4)  # stores them
    assert stem is not None
    _same(infer_head(net, stem.inputs, stem.start, 4), net.infer(images, batch_size=4))
    # The features cache misses (another head) but the stem is stored: the head alone runs.
    with torch.no_grad():
        net.module.classifier[4].weight.mul_(1.5)
    calls = []
    trunk = net.module.features.register_forward_hook(lambda *_: calls.append(1))
    try:
        inference, _ = cached_inference(net, images, batch_size=4, stem_layers=2)
    finally:
        trunk.remove()
    assert not calls
    _same(inference, net.infer(images, batch_size=4))


def test_small_cnn_splits_and_round_trips(cache):
    torch.manual_seed(1)
    net = Network(SmallCNN(4, in_channels=1), "small", 4, 1, 8)
    images = np.random.default_rng(3).integers(0, 256, size=(300, 8, 8, 1), dtype=np.uint8)
    assert split_point(net, 2) == 0
    plain = net.infer(images)
    inference, _ = cached_inference(net, images, stem_layers=2)
    _same(inference, plain)
    own = compute_stem_cache(net, images, 2, use_cache=False)
    loaded = compute_stem_cache(net, images, 2)
    assert own is not None and loaded is not None and torch.equal(own.inputs, loaded.inputs)


def test_key_follows_the_stem_not_the_head(cache):
    net, images = _alexnet(), _images(3)
    start = split_point(net, 2)
    assert start is not None
    key = stem_store.stem_key(net, images, start)
    with torch.no_grad():
        net.module.classifier[6].bias.add_(1.0)  # the head: stored outputs stay valid
    assert stem_store.stem_key(net, images, start) == key
    with torch.no_grad():
        net.module.classifier[1].bias.add_(1.0)  # fc6: part of the stem
    assert stem_store.stem_key(net, images, start) != key
    assert stem_store.stem_key(net, images[:2], start) != stem_store.stem_key(net, images[1:], start)
    assert stem_fingerprint(net, start) != stem_fingerprint(_alexnet(seed=1), start)


def test_no_cache_stores_nothing(cache):
    net, images = _alexnet(), _images(3)
    cached_inference(net, images, use_cache=False, stem_layers=2)
    compute_stem_cache(net, images, 2, use_cache=False)
    assert not list(cache.glob("stems/*"))


def test_unfinished_or_wrong_entries_are_not_read(cache):
    net, images = _alexnet(), _images(5)
    start = split_point(net, 2)
    assert start is not None
    path = stem_store.stem_path(stem_store.stem_key(net, images, start))
    writer = ArrayWriter(path, 5)
    writer.put(np.zeros((4, 4096), np.float32))
    assert not writer.commit()  # 4 rows of 5: nothing stored, nothing left behind
    assert not list(cache_dir("stems").iterdir())
    np.save(path, np.zeros((4, 4096), np.float32))  # another size: ignored, computed again
    stem = compute_stem_cache(net, images, 2)
    assert stem is not None and stem.inputs.shape == (5, 4096) and float(stem.inputs.abs().sum()) > 0
    path.write_bytes(b"")  # damaged: said, recomputed
    again = compute_stem_cache(net, images, 2)
    assert again is not None and torch.equal(again.inputs, stem.inputs)


def test_large_entries_are_memory_mapped(cache, monkeypatch):
    monkeypatch.setattr(stem_store, "MMAP_BYTES", 1)
    net, images = _alexnet(), _images(5)
    own = compute_stem_cache(net, images, 2)
    loaded = compute_stem_cache(net, images, 2)
    assert own is not None and loaded is not None and torch.equal(own.inputs, loaded.inputs)
    start = split_point(net, 2)
    assert start is not None
    path = stem_store.stem_path(stem_store.stem_key(net, images, start))
    mapped = stem_store.load_stem(path, 5)
    assert mapped is not None and isinstance(mapped.base, np.memmap)
    monkeypatch.setattr(stem_store, "MMAP_BYTES", 1 << 40)
    read = stem_store.load_stem(path, 5)
    assert read is not None and not isinstance(read.base, np.memmap) and np.array_equal(read, mapped)


def test_an_interrupted_features_pass_leaves_no_temporary_file(cache, monkeypatch):
    """The pass writes the stem's outputs as it goes; when it fails (Ctrl+C in a 50k pass) the
    half-written temporary file is removed at once, not left to the cache's stale-file sweep."""
    net, images = _alexnet(), _images(5)
    calls = []
    forward = net.forward_with_features

    def fails_second_batch(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(x)

    monkeypatch.setattr(net, "forward_with_features", fails_second_batch)
    with pytest.raises(KeyboardInterrupt):
        cached_inference(net, images, batch_size=2, stem_layers=2)
    assert len(calls) == 2  # the first batch's rows were written
    assert not [p for p in cache.rglob("*") if p.is_file() and "stems" in p.parts]
