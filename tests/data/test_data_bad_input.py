"""Hostile image folders and label files (issue 14): every entry not used is reported with its
true reason, names that are not UTF-8 work everywhere, EXIF orientation is applied."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from game.data.folder import load_image_folder
from game.data.names import display_name

BAD_NAME = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes: not valid UTF-8


def _png(path: Path, colour=(200, 30, 30), size=(16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _reasons(d) -> dict[str, str]:
    return {Path(s.path).name if ":" not in Path(s.path).name else s.path: s.reason for s in d.skipped}


def test_display_name_is_printable_and_encodable():
    shown = display_name(BAD_NAME)
    assert shown == "caf\\xe9-\\xff.png"
    shown.encode("utf-8")  # no surrogates left
    assert display_name("tab\there") == "tab\\u0009here"
    assert display_name("Ünïcode ✓.png") == "Ünïcode ✓.png"
    assert display_name(b"plain.png") == "plain.png"


def test_bad_folder_every_unused_entry_has_its_reason(tmp_path: Path, monkeypatch):
    root = tmp_path / "data"
    _png(root / "cats" / "a.png")
    _png(root / "cats" / BAD_NAME, colour=(10, 200, 10))
    _png(root / "dogs" / "b.png", colour=(0, 0, 200))
    _png(root / "dogs" / ".hidden.png")
    _png(root / ".secret" / "c.png")
    (root / "dogs" / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "dogs" / "loop1").symlink_to(root / "dogs" / "loop2")
    (root / "dogs" / "loop2").symlink_to(root / "dogs" / "loop1")
    (root / "dogs" / "up").symlink_to(root)
    (root / "dogs" / "parent").symlink_to(root / "dogs")
    (root / "dogs" / "link_to_a.png").symlink_to(root / "cats" / "a.png")  # a link to a file: used
    os.mkfifo(root / "dogs" / "pipe.png")
    _png(root / "dogs" / "locked.png")
    # Root reads every file whatever its mode, so the kernel's refusal is simulated at open().
    real_open = Image.open

    def guarded_open(fp, *a, **kw):
        if str(fp).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(Image, "open", guarded_open)
    d = load_image_folder(root, image_size=8, progress=False)
    reasons = _reasons(d)
    assert d.class_names == ["cats", "dogs"]
    assert len(d.images) == 4  # a, the non-UTF-8 one, b, link_to_a
    assert reasons[".hidden.png"].startswith("hidden")
    assert reasons[".secret"].startswith("hidden")
    assert reasons["dangling.png"].startswith("dangling link")
    assert reasons["loop1"] == "symbolic link loop" and reasons["loop2"] == "symbolic link loop"
    assert reasons["up"] == "link to a parent folder (would loop)"
    assert reasons["parent"] == "link to a parent folder (would loop)"
    assert reasons["pipe.png"].startswith("not a regular file")
    assert reasons["locked.png"] == "permission denied"
    shown = [s for s in d.sources if "caf" in s]
    assert shown == [str(root / "cats" / "caf\\xe9-\\xff.png")]
    for text in [*d.sources, d.skip_report(), *d.class_names]:
        text.encode("utf-8")


def test_class_folder_with_a_non_utf8_name(tmp_path: Path):
    _png(tmp_path / os.fsdecode(b"k\xe4tzchen") / "a.png")
    _png(tmp_path / "dogs" / "b.png", colour=(0, 0, 200))
    d = load_image_folder(tmp_path, image_size=8, progress=False)
    assert d.class_names == ["dogs", "k\\xe4tzchen"] or d.class_names == ["k\\xe4tzchen", "dogs"]


def test_exif_orientation_is_applied(tmp_path: Path):
    # Top half white, bottom half black, stored with orientation 3 (rotate 180): shown upside down.
    a = np.zeros((32, 32, 3), dtype=np.uint8)
    a[:16] = 255
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 3
    _png(tmp_path / "b" / "x.png", colour=(0, 0, 0))
    (tmp_path / "a").mkdir()
    img.save(tmp_path / "a" / "photo.jpg", exif=exif.tobytes(), quality=95)
    d = load_image_folder(tmp_path, image_size=16, progress=False)
    i = next(k for k, s in enumerate(d.sources) if s.endswith("photo.jpg"))
    top, bottom = d.images[i, :6].mean(), d.images[i, -6:].mean()
    assert top < 40 and bottom > 215, (top, bottom)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def test_labels_csv_duplicates_conflicts_extra_columns_and_outside(tmp_path: Path):
    root = tmp_path / "imgs"
    for name, colour in (("a.png", (200, 0, 0)), ("b.png", (0, 200, 0)), ("c.png", (0, 0, 200))):
        _png(root / name, colour=colour)
    _png(tmp_path / "outside" / "x.png")
    labels = tmp_path / "labels.csv"
    _write_csv(
        labels,
        [
            ["path", "label"],
            ["a.png", "red"],
            ["a.png", "red"],  # duplicate
            ["./b.png", "green"],
            ["b.png", "blue"],  # conflicting label: first wins
            ["c.png", "blue", "extra"],  # extra column: used, reported
            ["../outside/x.png", "red"],  # outside: refused by default
        ],
    )
    d = load_image_folder(root, labels_csv=labels, image_size=8, progress=False)
    assert sorted(Path(s).name for s in d.sources) == ["a.png", "b.png", "c.png"]
    assert d.class_names == ["red", "green", "blue"]
    assert [d.class_names[c] for c in d.labels] == ["red", "green", "blue"]
    report = d.skip_report()
    assert "line 3 repeats line 2 (first wins)" in report
    assert "conflicting labels, line 4 kept (first wins)" in report
    assert "outside the dataset folder" in report and "labels_outside" in report
    assert "1 row(s) have more than two columns (line 6)" in report
    allowed = load_image_folder(root, labels_csv=labels, image_size=8, progress=False, allow_outside=True)
    assert any(s.endswith("x.png") for s in allowed.sources)


def test_quiet_load_prints_nothing(tmp_path: Path, capsys):
    _png(tmp_path / "a" / "x.png")
    _png(tmp_path / "b" / "y.png", colour=(0, 0, 0))
    from game.core.scene import scene_from_dict
    from game.data import load_dataset

    scene = scene_from_dict({"dataset": {"kind": "folder", "path": str(tmp_path), "image_size": 8}})
    load_dataset(scene, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.parametrize("kind", ["export"])
def test_export_with_a_non_utf8_source(tmp_path: Path, kind: str):
    from game.export.bundle import write_labels_csv

    class FakeWorkspace:
        n_cards = 1
        sources = [str(tmp_path / BAD_NAME)]  # an older session may still hold the raw name
        class_names = ["x"]
        labels = np.array([0])
        original_labels = np.array([0])
        is_train = np.array([True])

    write_labels_csv(tmp_path / "labels.csv", FakeWorkspace())  # type: ignore[arg-type]
    text = (tmp_path / "labels.csv").read_text(encoding="utf-8")
    assert "caf\\xe9-\\xff.png" in text


def test_pickled_weights_are_refused_in_one_line(tmp_path: Path, capsys):
    import pickle

    from game.nets.weights import WeightsError, read_state_dict

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(WeightsError) as info:
        read_state_dict(tmp_path / "evil.pth")
    assert "\n" not in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()
    assert capsys.readouterr().err == ""
