"""Image folders: one subfolder per class, or a CSV of ``path,label``.

Every entry that is not used ends up in the skip report with its true reason: hidden files,
links that dangle, loop, or point back to a parent folder, files that cannot be read (permission
denied is said as such), sockets and other non-files, CSV rows that are malformed, duplicated,
conflicting or outside the dataset folder. File names are shown in their printable form
(``game.data.names``), so a name that is not UTF-8 works everywhere a card's source is shown.

Labels CSV policy: the first row that names a file wins. A later row naming the same file (by its
real path) is skipped as a duplicate, or as a conflict when its label differs; rows with more
than two columns are used (path, label) and the extra columns reported; a path outside the dataset
folder is refused unless the scene sets ``dataset.labels_outside = true``.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
from tqdm import tqdm

from game.data.cache_files import (
    cache_dir,
    content_hash,
    load_array,
    load_text,
    report_damaged,
    save_array,
    save_text,
    stored,
    touch,
)
from game.data.dataset import Dataset, DatasetError, SkippedFile
from game.data.images import ImageSkipped, read_image
from game.data.names import display_path

Entries = list[tuple[Path, int]]


def load_image_folder(
    root: str | Path,
    labels_csv: str | Path | None = None,
    image_size: int = 64,
    max_pixels: int = 40_000_000,
    progress: bool = True,
    allow_outside: bool = False,
    cache: bool = False,
) -> Dataset:
    """Read every image under ``root``; unusable files go to the skip report, not an exception.

    Classes are the subfolder names in sorted order (or the CSV's labels in order of first use).
    Images are grey (1 channel) when every file is grey, else RGB.

    ``cache``: reuse the decoded images of an earlier read of exactly these files (see
    ``folder_identity``), memory-mapped from ``cache_dir("images")``; decoding 50,000 files takes a
    minute, mapping them a fraction of a second.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {display_path(root)}")
    if not root.is_dir():
        raise DatasetError(f"dataset path is not a folder: {display_path(root)}")
    notes: list[str] = []
    if labels_csv:
        entries, class_names, skipped = _entries_from_csv(root, Path(labels_csv), allow_outside, notes)
    else:
        entries, class_names, skipped = _entries_from_subfolders(root)
    if not entries:
        raise DatasetError(
            f"no images found in {display_path(root)}: expected one subfolder per class "
            f"(e.g. {display_path(root)}/cats/*.png) or a labels CSV"
        )
    key = folder_identity(entries, class_names, image_size, max_pixels) if cache else ""
    if key:
        hit = _cached_folder(key, display_path(root), skipped, notes)
        if hit is not None:
            hit.content_key = key
            return hit
    images, labels, sources = [], [], []
    listed_skips = len(skipped)
    all_grey = True
    for path, label in tqdm(entries, desc="Reading images", unit="img", disable=not progress, leave=False):
        try:
            array, grey = read_image(path, image_size, max_pixels)
        except ImageSkipped as exc:
            skipped.append(SkippedFile(display_path(path), str(exc)))
            continue
        all_grey &= grey
        images.append(array)
        labels.append(label)
        sources.append(display_path(path))
    if not images:
        report = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        raise DatasetError(f"no usable images in {display_path(root)} ({len(skipped)} skipped: {report})")
    stack = np.stack(images)
    if all_grey:
        stack = stack[..., :1].copy()
    labels_arr = np.asarray(labels, dtype=np.int64)
    # Drop classes that ended up with no usable image, keeping names aligned with labels.
    used = np.unique(labels_arr)
    remap = -np.ones(len(class_names), dtype=np.int64)
    remap[used] = np.arange(len(used))
    names = [class_names[i] for i in used]
    data = Dataset(stack, remap[labels_arr], names, sources, skipped, name=display_path(root), notes=notes)
    if key:
        data.content_key = key
        _store_folder(key, data, skipped[listed_skips:])
    return data


def folder_identity(entries: Entries, class_names: list[str], image_size: int, max_pixels: int) -> str:
    """A key for what reading ``entries`` gives: every file's path, label, size, modification and
    status-change times (ns), the class names and the reading settings. A file that is added,
    removed, renamed, relabelled, rewritten or made unreadable (chmod changes the status time)
    changes it; an ``os.stat`` per file is all it costs. Empty when a file
    cannot be stat'ed (then nothing is cached: the read reports it).

    The decoded images are a function of what it covers, so it also names them for the features
    cache (``Dataset.content_key``): their 600 MB at 50,000 images are not hashed at a launch."""

    ids = []
    for path, label in entries:
        try:
            st = path.stat()
        except OSError:
            return ""
        ids.append((str(path), label, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return content_hash("images-v1", image_size, max_pixels, list(class_names), ids)


def _cached_folder(key: str, name: str, listed: list[SkippedFile], notes: list[str]) -> Dataset | None:
    """The ``Dataset`` stored under ``key`` (images memory-mapped), or None (absent, unfinished,
    or damaged: a damaged file is said on stderr and read again)."""
    folder = cache_dir("images", key)
    text = load_text(folder / "meta.json")  # written last: absent while the entry is unfinished
    if text is None:
        return None
    images = load_array(folder / "images.npy")
    try:
        meta = json.loads(text)
        labels = np.asarray(meta["labels"], dtype=np.int64)
        if images is None or len(images) != len(labels) or len(meta["sources"]) != len(labels):
            return None
        skipped = listed + [SkippedFile(p, r) for p, r in meta["read_skipped"]]
        data = Dataset(images, labels, meta["class_names"], meta["sources"], skipped, name=name, notes=notes)
    except (ValueError, KeyError, TypeError) as exc:  # a damaged meta.json (or a mismatch)
        report_damaged(folder / "meta.json", exc)
        return None
    touch(folder)
    return data


def _store_folder(key: str, data: Dataset, read_skipped: list[SkippedFile]) -> None:
    """Write ``data`` under ``key``; meta.json last, so a half-written entry is never used."""
    folder = cache_dir("images", key)
    meta = {
        "labels": data.labels.tolist(),
        "class_names": list(data.class_names),
        "sources": list(data.sources),
        "read_skipped": [[s.path, s.reason] for s in read_skipped],
    }
    # A full or read-only cache disk: the read itself succeeded, nothing is stored.
    if save_array(folder / "images.npy", data.images) and save_text(folder / "meta.json", json.dumps(meta)):
        stored(folder)


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _entry_kind(
    path: Path, ancestors: frozenset[tuple[int, int]], seen: set[tuple[int, int]]
) -> tuple[str, str]:
    """What ``path`` is: ("file", ""), ("dir", ""), or ("skip", the reason it is not used)."""
    if path.name.startswith("."):
        return "skip", "hidden (name starts with '.')"
    is_link = path.is_symlink()
    try:
        st = path.stat()  # follows links
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "skip", "symbolic link loop"
        if exc.errno == errno.ENOENT and is_link:
            return "skip", f"dangling link (target {display_path(os.readlink(path))} does not exist)"
        if exc.errno == errno.ENOENT:
            return "skip", "not found"
        return "skip", f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        if _file_id(st) in ancestors:
            return "skip", "link to a parent folder (would loop)"
        if _file_id(st) in seen:
            return "skip", "link to a folder already read"
        return "dir", ""
    if stat.S_ISREG(st.st_mode):
        return "file", ""
    return "skip", "not a regular file (device, socket or pipe)"


def _walk(
    folder: Path,
    label: int,
    ancestors: frozenset[tuple[int, int]],
    seen: set[tuple[int, int]],
    entries: Entries,
    skipped: list[SkippedFile],
) -> None:
    """Every usable file under ``folder`` (links followed once, never in a loop)."""
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        skipped.append(SkippedFile(display_path(folder), f"folder cannot be read ({exc.strerror or exc})"))
        return
    for child in children:
        kind, why = _entry_kind(child, ancestors, seen)
        if kind == "skip":
            skipped.append(SkippedFile(display_path(child), why))
        elif kind == "dir":
            st = child.stat()
            seen.add(_file_id(st))
            _walk(child, label, ancestors | {_file_id(st)}, seen, entries, skipped)
        else:
            entries.append((child, label))


def _entries_from_subfolders(root: Path) -> tuple[Entries, list[str], list[SkippedFile]]:
    root_id = _file_id(root.stat())
    seen = {root_id}
    class_dirs: list[Path] = []
    skipped: list[SkippedFile] = []
    try:
        top = sorted(root.iterdir())
    except OSError as exc:
        raise DatasetError(
            f"dataset folder {display_path(root)} cannot be read: {exc.strerror or exc}"
        ) from None
    for p in top:
        kind, why = _entry_kind(p, frozenset({root_id}), seen)
        if kind == "dir":
            class_dirs.append(p)
            seen.add(_file_id(p.stat()))
        elif kind == "file":
            skipped.append(
                SkippedFile(
                    display_path(p), "file at the top level (images belong in one subfolder per class)"
                )
            )
        else:
            skipped.append(SkippedFile(display_path(p), why))
    if not class_dirs:
        raise DatasetError(f"{display_path(root)} has no class subfolders: expected one subfolder per class")
    entries: Entries = []
    for label, d in enumerate(class_dirs):
        _walk(d, label, frozenset({root_id, _file_id(d.stat())}), seen, entries, skipped)
    return entries, [display_path(d.name) for d in class_dirs], skipped


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _entries_from_csv(
    root: Path, csv_path: Path, allow_outside: bool, notes: list[str]
) -> tuple[Entries, list[str], list[SkippedFile]]:
    if not csv_path.is_file():
        raise DatasetError(f"labels CSV not found: {display_path(csv_path)}")
    entries: Entries = []
    names: dict[str, int] = {}
    skipped: list[SkippedFile] = []
    first: dict[Path, tuple[int, str]] = {}  # real path -> (line, label) of the row that won
    extra_lines: list[int] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:  # a spreadsheet's own encoding, a binary file
        raise DatasetError(
            f"labels CSV {display_path(csv_path)} cannot be read as UTF-8 CSV: {exc}"
        ) from None
    except OSError as exc:
        raise DatasetError(
            f"labels CSV {display_path(csv_path)} cannot be read: {exc.strerror or exc}"
        ) from None
    where = csv_path.name
    for lineno, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            if len(row) > 2:
                extra_lines.append(lineno)
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            skipped.append(SkippedFile(f"{display_path(csv_path)}:{lineno}", "row is not 'path,label'"))
            continue
        if len(row) > 2 and any(c.strip() for c in row[2:]):
            extra_lines.append(lineno)
        label_name = row[1].strip()
        path = Path(row[0].strip())
        path = path if path.is_absolute() else root / path
        shown = display_path(path)
        if not allow_outside and not _inside(path, root):
            skipped.append(
                SkippedFile(
                    shown,
                    f"{where} line {lineno}: outside the dataset folder "
                    "(set dataset.labels_outside = true to allow)",
                )
            )
            continue
        kind, why = _entry_kind(path, frozenset(), set())
        if kind == "skip" and not why.startswith("hidden"):
            skipped.append(SkippedFile(shown, f"listed in {where} line {lineno}: {why}"))
            continue
        if kind == "dir" or (kind == "skip" and not path.is_file()):
            reason = "a folder, not a file" if kind == "dir" else "not found"
            skipped.append(SkippedFile(shown, f"listed in {where} line {lineno} but {reason}"))
            continue
        real = path.resolve()
        if real in first:
            line0, label0 = first[real]
            if label0 == label_name:
                why = f"{where} line {lineno} repeats line {line0} (first wins)"
            else:
                why = (
                    f"{where} line {lineno} labels it {label_name!r}, line {line0} {label0!r}: "
                    f"conflicting labels, line {line0} kept (first wins)"
                )
            skipped.append(SkippedFile(shown, why))
            continue
        first[real] = (lineno, label_name)
        label = names.setdefault(label_name, len(names))
        entries.append((path, label))
    if extra_lines:
        shown_lines = ", ".join(map(str, extra_lines[:5])) + (" ..." if len(extra_lines) > 5 else "")
        notes.append(
            f"{display_path(csv_path)}: {len(extra_lines)} row(s) have more than two columns "
            f"(line {shown_lines}); only path,label are read"
        )
    return entries, list(names), skipped
