"""Content-keyed caches of a folder scene (issue 17): a second launch maps the decoded images,
the features and the layout from the cache instead of decoding, running the network and fitting;
a changed file makes it read, compute and fit again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCENE = """
[dataset]
kind = "folder"
path = "images"
image_size = 16

[network]
train_epochs = 2

[layout]
early_iterations = 30
iterations = 60
"""


def _write(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder_scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATENT_REACH_CACHE", str(tmp_path / "cache"))  # this test's own cache
    for c, (name, colour) in enumerate((("red", (200, 40, 40)), ("blue", (40, 40, 200)))):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(12):
            _write(tmp_path / "images" / name / f"{i:02d}.png", colour, 100 * c + i)
    (tmp_path / "scene.toml").write_text(SCENE)
    return tmp_path


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count image decodes and network passes from here on."""
    import game.data.folder as folder
    from game.nets.network import Network

    calls = {"read": 0, "infer": 0}
    read, infer = folder.read_image, Network.infer

    def counted_read(*a, **k):
        calls["read"] += 1
        return read(*a, **k)

    def counted_infer(self, *a, **k):
        calls["infer"] += 1
        return infer(self, *a, **k)

    monkeypatch.setattr(folder, "read_image", counted_read)
    monkeypatch.setattr(Network, "infer", counted_infer)
    return calls


def test_second_launch_reads_images_features_and_layout_from_the_cache(folder_scene, monkeypatch):
    from game.pipeline import open_scene

    scene = str(folder_scene / "scene.toml")
    first = open_scene(scene, progress=False)
    calls = _counting(monkeypatch)
    second = open_scene(scene, progress=False)
    assert calls == {"read": 0, "infer": 0}  # nothing decoded, no network pass
    a, b = first.workspace, second.workspace
    np.testing.assert_array_equal(b.images, a.images)
    np.testing.assert_array_equal(b.features, a.features)
    np.testing.assert_array_equal(b.top5_classes, a.top5_classes)
    np.testing.assert_array_equal(b.positions, a.positions)  # the very layout, not a refit
    assert b.sources == a.sources and list(b.labels) == list(a.labels)
    assert len(b.images) == 24


def test_a_changed_file_invalidates_the_caches(folder_scene, monkeypatch):
    from game.pipeline import open_scene

    scene = str(folder_scene / "scene.toml")
    first = open_scene(scene, progress=False)
    changed = folder_scene / "images" / "red" / "03.png"
    _write(changed, (40, 200, 40), 999)  # other content (a green card among the reds)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    calls = _counting(monkeypatch)
    again = open_scene(scene, progress=False)
    assert calls["read"] == 24 and calls["infer"] >= 1  # decoded and computed again
    row = again.workspace.sources.index(str(changed))
    assert not np.array_equal(again.workspace.images[row], first.workspace.images[row])
    assert not np.array_equal(again.workspace.features, first.workspace.features)


def test_use_cache_false_neither_reads_nor_writes_the_caches(folder_scene, monkeypatch):
    from game.pipeline import open_scene

    open_scene(str(folder_scene / "scene.toml"), progress=False, use_cache=False)
    cache = folder_scene / "cache"
    assert not list(cache.glob("images/*/meta.json")) and not list(cache.glob("features/*/features.npy"))
    calls = _counting(monkeypatch)
    open_scene(str(folder_scene / "scene.toml"), progress=False, use_cache=False)
    assert calls["read"] == 24 and calls["infer"] >= 1


@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_damaged_cache_files_are_recomputed_not_a_crash(folder_scene, monkeypatch, capsys, kind):
    """A crash before a cache file's data reached the disk can leave it empty (the rename was
    journalled, the data was not) or cut short: the next launch says so, reads, computes and fits
    again, and stores whole files (the launch after maps them)."""
    from game.pipeline import open_scene

    scene = str(folder_scene / "scene.toml")
    first = open_scene(scene, progress=False)
    cache = folder_scene / "cache"
    damaged = [
        *cache.glob("images/*/images.npy"),
        *cache.glob("features/*/features.npy"),
        *cache.glob("layouts/*.npz"),
        *cache.glob("stems/*.npy"),  # the stem's outputs the features pass kept for the fine-tune
    ]
    assert len(damaged) == 4
    for path in damaged:
        data = path.read_bytes()
        path.write_bytes(b"" if kind == "empty" else data[: len(data) // 2])
    capsys.readouterr()
    calls = _counting(monkeypatch)
    again = open_scene(scene, progress=False)
    assert calls["read"] == 24 and calls["infer"] >= 1
    err = capsys.readouterr().err
    for path in damaged:
        assert f"cache file {path} is damaged" in err
    np.testing.assert_array_equal(again.workspace.images, first.workspace.images)
    np.testing.assert_array_equal(again.workspace.features, first.workspace.features)
    assert again.workspace.positions.shape == first.workspace.positions.shape
    calls["read"] = calls["infer"] = 0
    third = open_scene(scene, progress=False)  # rebuilt entries: nothing decoded or computed
    assert calls == {"read": 0, "infer": 0} and "damaged" not in capsys.readouterr().err
    np.testing.assert_array_equal(third.workspace.positions, again.workspace.positions)
