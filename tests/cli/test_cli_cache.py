"""``latent-reach cache``: --list shows each kind's entries and sizes, --clear empties the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from game.cli import main
from game.data import cache_files as cf


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(cf.ROOT_ENV, str(root))
    monkeypatch.setenv(cf.LIMIT_ENV, "2G")
    assert cf.save_array(cf.cache_dir("features", "k1") / "features.npy", np.zeros((256, 1024), np.float32))
    assert cf.save_arrays(cf.cache_dir("layouts") / "k2.npz", {"embedding": np.zeros((100, 3))})
    (cf.cache_dir("models") / "small_cnn-k3.safetensors").write_bytes(b"w" * 5000)
    return root


def test_list_shows_each_kind_and_the_total(filled: Path, capsys):
    assert main(["cache", "--list", "--entries"]) == 0
    out = capsys.readouterr().out
    assert f"cache {filled}: 3 entries" in out and "cap 2.0 GB" in out
    features = next(line for line in out.splitlines() if line.strip().startswith("features"))
    assert "1 entry" in features and "1.0 MB" in features  # 256 x 1024 float32 (+ the .npy header)
    assert "layouts/k2.npz" in out and "models/small_cnn-k3.safetensors" in out
    assert main(["cache"]) == 0  # --list is the default
    assert "3 entries" in capsys.readouterr().out


def test_clear_removes_every_entry(filled: Path, capsys):
    assert main(["cache", "--clear"]) == 0
    assert "removed 3 cache entries" in capsys.readouterr().out
    assert cf.entries() == []
    assert main(["cache", "--list"]) == 0
    assert "0 entries" in capsys.readouterr().out


def test_a_malformed_cap_is_a_clear_error(filled: Path, monkeypatch, capsys):
    monkeypatch.setenv(cf.LIMIT_ENV, "lots")
    assert main(["cache", "--list"]) == 2
    assert "LATENT_REACH_CACHE_MAX" in capsys.readouterr().err
