"""The cache folder's files (``game.data.cache_files``): atomic writes that two processes can race
on, damaged files said and recomputed, and the size cap's least-recently-used eviction."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from game.data import cache_files as cf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(cf.ROOT_ENV, str(root))
    monkeypatch.delenv(cf.LIMIT_ENV, raising=False)
    return root


def _entry(root: Path, kind: str, name: str, size: int, age_s: float, folder: bool = False) -> Path:
    """A cache entry of ``size`` bytes last used ``age_s`` seconds ago."""
    path = root / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "a.npy").write_bytes(b"x" * (size // 2))
        (path / "b.npy").write_bytes(b"x" * (size - size // 2))
    else:
        path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


WRITER = """
import sys
import numpy as np
from pathlib import Path
from game.data.cache_files import save_array
value, path = int(sys.argv[1]), Path(sys.argv[2])
for _ in range(40):
    assert save_array(path, np.full(200_000, value, np.int32))
"""


def test_two_processes_writing_one_key_never_mix_their_bytes(cache: Path):
    """Two writers of the same entry (two launches of one scene), a reader meanwhile: every read
    is one writer's whole array, and no temporary file is left."""
    folder = cf.cache_dir("features", "samekey")
    path = folder / "features.npy"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(v), str(path)], env=env) for v in (1, 2)]
    seen: set[int] = set()
    while any(w.poll() is None for w in writers):
        array = cf.load_array(path, mmap=False)
        if array is not None:
            assert array.shape == (200_000,)
            values = np.unique(array)
            assert len(values) == 1 and int(values[0]) in (1, 2)  # never a mix, never short
            seen.add(int(values[0]))
    assert [w.returncode for w in writers] == [0, 0]
    final = cf.load_array(path, mmap=False)
    assert final is not None and len(np.unique(final)) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy"]  # no temporary left
    assert seen  # the reader did see whole files while the writers ran


def test_a_refused_write_leaves_nothing(cache: Path, tmp_path: Path):
    folder = cf.cache_dir("layouts")

    def fail(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    assert not cf.write_atomic(folder / "k.npz", fail)
    assert list(folder.iterdir()) == []
    assert not cf.write_atomic(tmp_path / "missing" / "k.npz", lambda f: f.write(b"x"))


@pytest.mark.parametrize("damage", [b"", b"\x93NUMPY garbage", b"not a numpy file at all"])
def test_a_damaged_array_is_said_and_removed_not_a_crash(cache: Path, capsys, damage: bytes):
    path = cf.cache_dir("features", "k") / "features.npy"
    path.write_bytes(damage)
    assert cf.load_array(path) is None
    err = capsys.readouterr().err
    assert "cache file" in err and str(path) in err and "computing it again" in err
    assert not path.exists()
    assert cf.load_array(path) is None  # absent: no message
    assert capsys.readouterr().err == ""


def test_a_truncated_npz_is_said_and_removed(cache: Path, capsys):
    path = cf.cache_dir("layouts") / "k.npz"
    assert cf.save_arrays(path, {"a": np.arange(1000), "b": np.ones(5)})
    loaded = cf.load_arrays(path)
    assert loaded is not None and loaded["a"].sum() == 499500
    path.write_bytes(path.read_bytes()[:300])
    assert cf.load_arrays(path) is None
    assert "damaged" in capsys.readouterr().err and not path.exists()


def test_eviction_removes_the_least_recently_used_first(cache: Path):
    old = _entry(cache, "features", "old", 400, age_s=300, folder=True)
    mid = _entry(cache, "layouts", "mid.npz", 400, age_s=200)
    new = _entry(cache, "images", "new", 400, age_s=100, folder=True)
    assert [e.path for e in cf.entries()] == [old, mid, new]
    assert sum(e.size for e in cf.entries()) == 1200
    removed = cf.evict(limit=800)
    assert [e.path for e in removed] == [old]
    assert not old.exists() and mid.exists() and new.exists()
    cf.touch(mid / "nothing-inside")  # a use of the entry (any path inside names it)
    cf.touch(mid)
    removed = cf.evict(limit=400)
    assert [e.path for e in removed] == [new]  # mid was used since: new is now the oldest
    assert mid.exists()


def test_the_entry_just_stored_is_kept_even_alone_over_the_cap(cache: Path, monkeypatch):
    a = _entry(cache, "layouts", "a.npz", 300, age_s=50)
    big = _entry(cache, "features", "big", 1000, age_s=500, folder=True)
    monkeypatch.setenv(cf.LIMIT_ENV, "900")
    cf.stored(big / "a.npy")  # big was just written (its oldest time is from before the write)
    assert big.exists() and not a.exists()


def test_stored_keeps_the_cache_under_the_cap_from_the_environment(cache: Path, monkeypatch):
    monkeypatch.setenv(cf.LIMIT_ENV, "1K")
    folder = cf.cache_dir("layouts")
    for i in range(5):
        path = folder / f"{i}.npz"
        assert cf.write_atomic(path, lambda f: f.write(b"x" * 400))
        os.utime(path, (1000.0 + i, 1000.0 + i))  # distinct, ordered last uses
        cf.stored(path)
        os.utime(path, (1000.0 + i, 1000.0 + i))
    assert sorted(p.name for p in folder.iterdir()) == ["3.npz", "4.npz"]  # 800 B <= 1 KiB


def test_no_cap_evicts_nothing(cache: Path, monkeypatch):
    _entry(cache, "layouts", "a.npz", 5000, age_s=10)
    monkeypatch.setenv(cf.LIMIT_ENV, "0")
    assert cf.size_limit() is None and cf.evict() == []


def test_parse_size():
    assert cf.parse_size("500M") == 500 * 1024**2
    assert cf.parse_size("20G") == 20 * 1024**3
    assert cf.parse_size("1.5gib") == int(1.5 * 1024**3)
    assert cf.parse_size("123456") == 123456
    assert cf.parse_size("0") is None and cf.parse_size("none") is None
    assert cf.parse_size("0.0G") is None
    for bad in ("lots", "-5G", "0.5", "nan", "inf"):  # a negative cap would evict everything
        with pytest.raises(ValueError, match="LATENT_REACH_CACHE_MAX"):
            cf.parse_size(bad)


def test_a_writers_temporary_file_is_not_an_entry_until_it_is_stale(cache: Path):
    folder = cf.cache_dir("layouts")
    young = folder / ".k.npz.abc123.tmp"
    young.write_bytes(b"x" * 10)
    stale = folder / ".j.npz.def456.tmp"
    stale.write_bytes(b"x" * 10)
    when = time.time() - 2 * cf.STALE_TMP_SECONDS
    os.utime(stale, (when, when))
    assert [e.path for e in cf.entries()] == [stale]
    assert cf.clear() == (1, 10)
    assert young.exists() and not stale.exists()


def test_an_entry_that_cannot_be_removed_is_skipped_not_a_crash(cache: Path, monkeypatch):
    """On Windows a file a running game has memory-mapped refuses its unlink: eviction removes the
    next entry instead, and a store that evicts does not fail."""
    busy = _entry(cache, "layouts", "busy.npz", 400, age_s=300)
    old = _entry(cache, "layouts", "old.npz", 400, age_s=200)
    new = _entry(cache, "layouts", "new.npz", 400, age_s=100)
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == busy:
            raise PermissionError(13, "in use by another process", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    removed = cf.evict(limit=800)
    assert [e.path for e in removed] == [old]
    assert busy.exists() and new.exists() and not old.exists()
    assert cf.clear() == (1, 400)  # new went; busy stays and is not counted
    assert busy.exists() and not new.exists()
