"""The cache folder's files: where they live, their keys, atomic writes, reads that survive
damage, and a size cap with least-recently-used eviction.

One module for what the decoded-images cache (``game.data.folder``), the features cache
(``game.nets.cache``) and the layout cache (``game.pipeline``) each did by hand before.

Layout: ``<root>/<kind>/<entry>``, where the root is ``$LATENT_REACH_CACHE`` or the user cache
folder, and an entry is one file (``layouts/<key>.npz``, ``models/<name>``) or one folder of files
(``images/<key>/``, ``features/<key>/``). An entry's modification time is its last use: a hit
touches it, so eviction removes the entries used longest ago first.

Why the cap: every 50,000-image folder writes about 1.4 GB per network (decoded images and
4,096-d features), and nothing removed them. ``$LATENT_REACH_CACHE_MAX`` sets the cap (``500M``,
``20G``, ``0`` for none); the default is ``DEFAULT_LIMIT``.

Why unique temporary names: two processes storing the same key (two launches of one scene) each
write their own ``.<name>.<random>.tmp`` and rename it over the final name; the rename is atomic,
so a reader sees one whole file or none, never a mix of two writers' bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

ROOT_ENV = "LATENT_REACH_CACHE"
LIMIT_ENV = "LATENT_REACH_CACHE_MAX"
DEFAULT_LIMIT = 10 * 1024**3
# A temporary file older than this is a leftover of a killed writer (no store takes an hour).
STALE_TMP_SECONDS = 3600.0
# What a damaged cache file raises when read: EOFError for an empty .npy, BadZipFile for a
# truncated .npz, ValueError / KeyError for a wrong header or a missing array.
DAMAGED = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile)


def cache_root() -> Path:
    root = os.environ.get(ROOT_ENV)
    if root:
        return Path(root)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("latent-reach"))


def cache_dir(*parts: str) -> Path:
    """``<root>/<parts...>``, created where the disk allows. A read-only or full cache disk
    leaves it absent: reads then find nothing and writes give up (``write_atomic``,
    ``ArrayWriter``), so nothing that was computed fails for a cache that cannot keep it."""
    path = cache_root().joinpath(*parts)
    with contextlib.suppress(OSError):
        path.mkdir(parents=True, exist_ok=True)
    return path


def content_hash(*items: object) -> str:
    """A stable hash of arrays, strings and numbers (the key of a cache entry)."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, np.ndarray):
            h.update(str(item.dtype).encode())
            h.update(str(item.shape).encode())
            # The bytes as they lie (no copy: a memory-mapped 800 MB array is read once, in place).
            h.update(np.ascontiguousarray(item).reshape(-1).view(np.uint8).data)
        else:
            h.update(repr(item).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def parse_size(text: str) -> int | None:
    """``"500M"``, ``"20G"``, ``"1.5T"``, ``"123456"`` -> bytes; ``"0"``, ``"none"`` -> None (no cap)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t in ("", "0", "NONE", "OFF"):
        return None
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}.get(t[-1], 1)
    number = t[:-1] if t[-1] in "KMGT" else t
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    size = value * scale
    if size == 0:
        return None
    # A negative cap would evict everything, and one under a byte would mean no cap: both refused.
    if not math.isfinite(size) or size < 1:
        raise ValueError(f"{LIMIT_ENV}={text!r}: expected a size such as 500M or 20G, or 0 for no cap")
    return int(size)


def size_limit() -> int | None:
    """The cap in bytes (``$LATENT_REACH_CACHE_MAX`` or ``DEFAULT_LIMIT``); None: no cap."""
    text = os.environ.get(LIMIT_ENV)
    return DEFAULT_LIMIT if text is None else parse_size(text)


# -- writing ------------------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> bool:
    """Write ``path`` through ``write(file)`` under a unique temporary name in its folder, then
    rename it over ``path``. False (and nothing left behind) when the disk refuses: a full or
    read-only cache disk must not fail what was computed."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


class ArrayWriter:
    """One ``.npy`` written a block of rows at a time, atomically: rows go to a uniquely named
    temporary file in order, ``commit`` renames it over ``path`` once all ``n`` rows came.

    Why: a pass over 50,000 images makes its outputs a batch at a time, and holding all of them
    to ``save_array`` at the end would keep a second copy in memory (the stem outputs, 800 MB at
    50k). Plain ``write`` calls (not a memory map) leave the bytes in the page cache, outside the
    writer's resident set. A disk that refuses stops the writing silently: the pass goes on and
    nothing is stored (``commit`` returns False), as with ``write_atomic``.
    """

    def __init__(self, path: Path, n: int) -> None:
        self.path = path
        self.n = n
        self.rows = 0
        self._file: IO[bytes] | None = None
        self._tmp: str | None = None
        self._failed = False

    def put(self, block: np.ndarray) -> None:
        """Append the next rows (every block has the first one's dtype and row shape)."""
        if self._failed:
            return
        block = np.ascontiguousarray(block)
        try:
            if self._file is None:
                fd, self._tmp = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
                )
                self._file = os.fdopen(fd, "wb")
                header = {
                    "descr": np.lib.format.dtype_to_descr(block.dtype),
                    "fortran_order": False,
                    "shape": (self.n, *block.shape[1:]),
                }
                np.lib.format.write_array_header_2_0(self._file, header)
            self._file.write(block.data)
            self.rows += len(block)
        except OSError:
            self.abort()
            self._failed = True

    def commit(self) -> bool:
        """Rename the file over ``path`` when every row was written; else remove it. True: stored."""
        if self._failed or self._file is None or self.rows != self.n:
            self.abort()
            return False
        try:
            self._file.close()
            assert self._tmp is not None
            os.replace(self._tmp, self.path)
        except OSError:
            self.abort()
            return False
        self._file = self._tmp = None
        return True

    def abort(self) -> None:
        """Drop what was written (nothing is left behind)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
        self._file = self._tmp = None


def save_array(path: Path, array: np.ndarray) -> bool:
    return write_atomic(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def save_arrays(path: Path, arrays: dict[str, Any]) -> bool:
    """Several named arrays in one ``.npz``."""
    return write_atomic(path, lambda f: np.savez(f, **arrays))


def save_text(path: Path, text: str) -> bool:
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


# -- reading ------------------------------------------------------------------------------------


def report_damaged(path: Path, exc: BaseException) -> None:
    """Say that a cache file could not be read and will be computed again; remove it."""
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    print(f"latent-reach: cache file {path} is damaged ({reason}); computing it again", file=sys.stderr)
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def load_array(path: Path, mmap: bool = True) -> np.ndarray | None:
    """The array stored at ``path``, memory-mapped copy-on-write (pages are read when used and a
    write never reaches the file) as a plain ndarray; None when absent, or damaged (said)."""
    try:
        array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (FileNotFoundError, NotADirectoryError):  # absent (a cache root that is no folder too)
        return None
    except DAMAGED as exc:
        report_damaged(path, exc)
        return None
    return np.asarray(array)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of an ``.npz``, read in full; None when absent, or damaged (said)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: np.asarray(z[name]) for name in z.files}
    except (FileNotFoundError, NotADirectoryError):  # absent (a cache root that is no folder too)
        return None
    except DAMAGED as exc:
        report_damaged(path, exc)
        return None


def load_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # absent (a cache root that is no folder too)
        return None
    except (OSError, UnicodeDecodeError) as exc:
        report_damaged(path, exc)
        return None


# -- use, size and eviction ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One cache entry: ``<root>/<kind>/<name>``, a file or a folder of files."""

    path: Path
    kind: str
    size: int  # bytes of every file in it
    last_used: float  # modification time, seconds since the epoch


def entry_of(path: Path) -> Path:
    """The entry ``path`` belongs to (``<root>/<kind>/<name>``); ``path`` itself if outside."""
    root = cache_root()
    try:
        rel = path.relative_to(root)
    except ValueError:
        return path
    return root.joinpath(*rel.parts[:2]) if len(rel.parts) >= 2 else path


def touch(path: Path) -> None:
    """Mark the entry of ``path`` as used now (what least-recently-used eviction reads)."""
    with contextlib.suppress(OSError):
        os.utime(entry_of(path))


def _size(path: Path) -> int:
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
        total = 0
        for folder, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total
    except OSError:
        return 0


def _is_tmp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry under the cache root, least recently used first. A temporary file another
    process is writing is not an entry; one left by a killed writer (older than an hour) is."""
    base = root if root is not None else cache_root()
    now = time.time()
    found: list[Entry] = []
    try:
        kinds = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return []
    for kind in kinds:
        try:
            children = list(kind.iterdir())
        except OSError:
            continue
        for child in children:
            try:
                mtime = child.lstat().st_mtime
            except OSError:  # removed meanwhile (another process evicting)
                continue
            if _is_tmp(child) and now - mtime < STALE_TMP_SECONDS:
                continue
            found.append(Entry(child, kind.name, _size(child), mtime))
    found.sort(key=lambda e: (e.last_used, str(e.path)))
    return found


def remove(entry: Entry | Path) -> bool:
    """Remove an entry; False when (part of) it stays. On Windows a file that a running game has
    memory-mapped cannot be removed: eviction and ``--clear`` skip it instead of failing the
    store that called them."""
    path = entry.path if isinstance(entry, Entry) else entry
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def evict(limit: int | None = None, keep: Iterable[Path] = ()) -> list[Entry]:
    """Remove least-recently-used entries until the cache holds at most ``limit`` bytes
    (``size_limit()`` when None; nothing when there is no cap). ``keep``: entries never removed
    (the one just stored, even when it alone is over the cap). Returns what was removed.

    Another process may have an evicted file memory-mapped: on Linux and macOS its mapping stays
    valid after the unlink (the data goes when the last mapping does)."""
    cap = size_limit() if limit is None else limit
    if cap is None:
        return []
    kept = {entry_of(p) for p in keep}
    found = entries()
    total = sum(e.size for e in found)
    removed: list[Entry] = []
    for entry in found:
        if total <= cap:
            break
        if entry.path in kept or not remove(entry):
            continue
        total -= entry.size
        removed.append(entry)
    return removed


def stored(path: Path) -> None:
    """After an entry was written: mark it used and keep the cache under its cap."""
    touch(path)
    try:
        evict(keep=[path])
    except ValueError as exc:  # a malformed $LATENT_REACH_CACHE_MAX: say so, keep everything
        print(f"latent-reach: {exc}", file=sys.stderr)


def clear() -> tuple[int, int]:
    """Remove every entry; (entries, bytes) removed (one in use on Windows stays)."""
    removed = [entry for entry in entries() if remove(entry)]
    return len(removed), sum(e.size for e in removed)
