"""Image folders: one subfolder per class, or a CSV of ``path,label``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from game.data.dataset import Dataset, DatasetError, SkippedFile
from game.data.images import ImageSkipped, read_image


def load_image_folder(
    root: str | Path,
    labels_csv: str | Path | None = None,
    image_size: int = 64,
    max_pixels: int = 40_000_000,
    progress: bool = True,
) -> Dataset:
    """Read every image under ``root``; unusable files go to the skip report, not an exception.

    Classes are the subfolder names in sorted order (or the CSV's labels in order of first use).
    Images are grey (1 channel) when every file is grey, else RGB.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset path is not a folder: {root}")
    if labels_csv:
        entries, class_names, skipped = _entries_from_csv(root, Path(labels_csv))
    else:
        entries, class_names, skipped = _entries_from_subfolders(root)
    if not entries:
        raise DatasetError(
            f"no images found in {root}: expected one subfolder per class (e.g. {root}/cats/*.png) or a labels CSV"
        )
    images, labels, sources = [], [], []
    all_grey = True
    for path, label in tqdm(entries, desc="Reading images", unit="img", disable=not progress, leave=False):
        try:
            array, grey = read_image(path, image_size, max_pixels)
        except ImageSkipped as exc:
            skipped.append(SkippedFile(str(path), str(exc)))
            continue
        all_grey &= grey
        images.append(array)
        labels.append(label)
        sources.append(str(path))
    if not images:
        report = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        raise DatasetError(f"no usable images in {root} ({len(skipped)} skipped: {report})")
    stack = np.stack(images)
    if all_grey:
        stack = stack[..., :1].copy()
    labels_arr = np.asarray(labels, dtype=np.int64)
    # Drop classes that ended up with no usable image, keeping names aligned with labels.
    used = np.unique(labels_arr)
    remap = -np.ones(len(class_names), dtype=np.int64)
    remap[used] = np.arange(len(used))
    names = [class_names[i] for i in used]
    return Dataset(stack, remap[labels_arr], names, sources, skipped, name=str(root))


def _entries_from_subfolders(root: Path) -> tuple[list[tuple[Path, int]], list[str], list[SkippedFile]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    skipped = [
        SkippedFile(str(p), "file at the top level (images belong in one subfolder per class)")
        for p in sorted(root.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]
    if not class_dirs:
        raise DatasetError(f"{root} has no class subfolders: expected one subfolder per class")
    entries = []
    for label, d in enumerate(class_dirs):
        for f in sorted(d.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                entries.append((f, label))
    return entries, [d.name for d in class_dirs], skipped


def _entries_from_csv(
    root: Path, csv_path: Path
) -> tuple[list[tuple[Path, int]], list[str], list[SkippedFile]]:
    if not csv_path.is_file():
        raise DatasetError(f"labels CSV not found: {csv_path}")
    entries: list[tuple[Path, int]] = []
    names: dict[str, int] = {}
    skipped: list[SkippedFile] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:  # a spreadsheet's own encoding, a binary file
        raise DatasetError(f"labels CSV {csv_path} cannot be read as UTF-8 CSV: {exc}") from None
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            skipped.append(SkippedFile(f"{csv_path}:{lineno}", "row is not 'path,label'"))
            continue
        path = Path(row[0].strip())
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            skipped.append(SkippedFile(str(path), f"listed in {csv_path.name} line {lineno} but not found"))
            continue
        label = names.setdefault(row[1].strip(), len(names))
        entries.append((path, label))
    return entries, list(names), skipped
