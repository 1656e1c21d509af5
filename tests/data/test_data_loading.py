"""Datasets: the embedded default, image folders of every common mode, and bad input."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from game.core.scene import scene_from_dict
from game.data import DatasetError, load_dataset
from game.data.digits import load_digits_dataset
from game.data.folder import load_image_folder


def test_digits_is_the_embedded_default():
    d = load_digits_dataset()
    assert d.images.shape == (1797, 8, 8, 1) and d.images.dtype == np.uint8
    assert d.n_classes == 10 and d.images.max() == 255
    assert d.sources[5] == "digits:#5"


def test_heldout_mask_is_stratified_and_seeded():
    d = load_digits_dataset()
    m1, m2 = d.heldout_mask(0.2, 0), d.heldout_mask(0.2, 0)
    assert (m1 == m2).all()
    assert abs(m1.mean() - 0.2) < 0.01
    for c in range(10):
        assert 0.15 < m1[d.labels == c].mean() < 0.25
    assert not (m1 == d.heldout_mask(0.2, 1)).all()


def _save(img: Image.Image, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def make_folder(root: Path) -> None:
    rgb = Image.new("RGB", (20, 10), (200, 30, 30))
    _save(rgb, root / "cats" / "rgb.png")
    _save(rgb.convert("RGBA"), root / "cats" / "rgba.png")
    _save(rgb.convert("P"), root / "cats" / "palette.png")
    _save(rgb.convert("CMYK"), root / "cats" / "cmyk.jpg")
    _save(Image.new("L", (16, 16), 90), root / "dogs" / "grey.png")
    _save(Image.new("LA", (16, 16), (90, 128)), root / "dogs" / "grey_alpha.png")
    sixteen = Image.fromarray(np.full((16, 16), 60000, dtype=np.uint16))
    _save(sixteen, root / "dogs" / "sixteen.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    _save(Image.fromarray(noise), root / "noise.png")
    good = (root / "noise.png").read_bytes()
    (root / "noise.png").unlink()
    (root / "dogs" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dogs" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")


def test_folder_of_every_mode_with_skip_report(tmp_path: Path):
    make_folder(tmp_path)
    d = load_image_folder(tmp_path, image_size=12, max_pixels=10_000, progress=False)
    assert d.class_names == ["cats", "dogs"]
    assert d.images.shape == (7, 12, 12, 3)
    skipped = {Path(s.path).name: s.reason for s in d.skipped}
    assert set(skipped) == {"notes.txt", "truncated.png", "corrupt.jpg"}
    assert "not an image" in skipped["notes.txt"]
    assert "truncated" in skipped["truncated.png"] or "corrupt" in skipped["truncated.png"]
    report = d.skip_report()
    assert "skipped 3 file(s)" in report and "notes.txt" in report
    by_name = {Path(s).name: i for i, s in enumerate(d.sources)}
    red = d.images[by_name["rgb.png"]]
    assert red[..., 0].mean() > 150 and red[..., 1].mean() < 60
    cmyk = d.images[by_name["cmyk.jpg"]]
    assert cmyk[..., 0].mean() > 150
    sixteen = d.images[by_name["sixteen.png"]]
    assert abs(int(sixteen.mean()) - round(60000 / 257)) <= 2
    grey_alpha = d.images[by_name["grey_alpha.png"]]  # 90 at alpha 0.5 over white
    assert 165 <= grey_alpha.mean() <= 175


def test_all_grey_folder_gives_one_channel(tmp_path: Path):
    for cls, v in (("a", 20), ("b", 220)):
        for i in range(3):
            _save(Image.new("L", (8, 8), v + i), tmp_path / cls / f"{i}.png")
    d = load_image_folder(tmp_path, image_size=8, progress=False)
    assert d.images.shape == (6, 8, 8, 1)


def test_oversized_image_is_skipped(tmp_path: Path):
    _save(Image.new("L", (200, 200)), tmp_path / "a" / "big.png")
    _save(Image.new("L", (8, 8)), tmp_path / "a" / "small.png")
    _save(Image.new("L", (8, 8)), tmp_path / "b" / "small.png")
    d = load_image_folder(tmp_path, image_size=8, max_pixels=1000, progress=False)
    assert len(d.images) == 2
    assert "oversized" in d.skipped[0].reason


def test_csv_labels(tmp_path: Path):
    for i in range(4):
        _save(Image.new("RGB", (8, 8), (i * 60, 0, 0)), tmp_path / "imgs" / f"{i}.png")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label\nimgs/0.png,red\nimgs/1.png,red\nimgs/2.png,blue\nimgs/3.png,blue\nimgs/9.png,blue\nbroken\n"
    )
    d = load_image_folder(tmp_path, labels_csv=csv, image_size=8, progress=False)
    assert d.class_names == ["red", "blue"] and d.labels.tolist() == [0, 0, 1, 1]
    reasons = " ".join(s.reason for s in d.skipped)
    assert "not found" in reasons and "path,label" in reasons


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "not found"),
        (lambda root: root.mkdir(), "no class subfolders"),
        (lambda root: (root / "a").mkdir(parents=True), "no images found"),
        (lambda root: _save(Image.new("L", (8, 8)), root / "only" / "x.png"), "at least 2"),
    ],
)
def test_unusable_folders_are_clear_errors(tmp_path: Path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        load_image_folder(root, progress=False)


def test_folder_with_only_broken_files(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"nope")
    (tmp_path / "b" / "y.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="no usable images"):
        load_image_folder(tmp_path, progress=False)


def test_load_dataset_from_scene_relative_path_and_max_images(tmp_path: Path):
    make_folder(tmp_path / "data")
    scene = scene_from_dict(
        {"dataset": {"kind": "folder", "path": "data", "image_size": 16, "max_images": 5}},
        source=str(tmp_path / "scene.toml"),
    )
    d = load_dataset(scene)
    assert len(d.images) == 5 and d.images.shape[1] == 16


@pytest.mark.parametrize("content", [b"path,label\nimgs/0.png,caf\xe9\n", b"\xff\xfep\x00a\x00"])
def test_unreadable_labels_csv_is_a_dataset_error(tmp_path: Path, content: bytes):
    """A CSV saved in a spreadsheet's own encoding (or a binary file) is bad input, not a crash."""
    _save(Image.new("RGB", (8, 8)), tmp_path / "imgs" / "0.png")
    csv = tmp_path / "labels.csv"
    csv.write_bytes(content)
    with pytest.raises(DatasetError, match="labels CSV"):
        load_image_folder(tmp_path, labels_csv=csv, image_size=8, progress=False)
