"""A feature store on disk: every card's features, top-5, label and source, and the network they
came from, so features computed once (on a cluster, see ``game.nets.distributed``) can be opened
by the app on one machine without recomputing them.

Format (a folder; ``FORMAT``/``VERSION`` in ``meta.json``):

* ``features.npy``: ``(N, D)`` float32, C order, an ordinary ``.npy`` file, so
  ``np.load(path, mmap_mode="r")`` maps it without reading it.
* ``top5_classes.npy`` ``(N, k)`` int64 and ``top5_scores.npy`` ``(N, k)`` float32: the network's
  predictions (softmax, best first), ``labels.npy`` ``(N,)`` int64: indices into ``class_names``.
* ``cards.csv``: ``path,label`` per card in row order (label = class name, so it is also a valid
  labels CSV for ``[dataset] labels_csv``); paths as the dataset names them (an image path, or
  ``digits:#i`` for the embedded digits).
* ``skipped.csv``: ``path,reason`` for every listed image that could not be used (not in the rows).
* ``meta.json``: ``format``, ``version``, ``fingerprint`` (``network_fingerprint``: weights, layer
  and preprocessing), ``arch``, ``layer``, ``input_size``, ``image_size`` (the side images were
  resized to before the network), ``channels``, ``normalise``, ``class_names``, ``n_cards``,
  ``dim``, ``k``, ``dataset`` (kind and path) and ``created`` (UTC). It is written last: a folder
  without it is an unfinished store and is refused.

Rows are written by card index into a pre-sized memory map (blocks may finish in any order); rows
of images that turned out unreadable are squeezed out at the end, so row ``i`` is line ``i`` of
``cards.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from game.core.errors import UserError

FORMAT = "latent-reach-features"
VERSION = 1
ARRAYS = ("features", "top5_classes", "top5_scores", "labels")


class FeatureStoreError(UserError):
    """A feature store that is missing, unfinished, damaged, or made by another network."""


def network_fingerprint(network: Any) -> str:
    """What the stored features depend on: every weight, the tapped layer and the preprocessing.

    Two networks with the same fingerprint give the same features for the same images, so a store
    is only opened with the network that made it.
    """
    from game.nets.cache import content_hash

    state = network.module.state_dict()
    tensors = [state[k].detach().cpu().contiguous().numpy() for k in sorted(state)]
    return content_hash(
        "feature-store-v1",
        network.arch,
        network.feature_layer,
        network.input_size,
        network.channels,
        network.normalise,
        sorted(state),
        *tensors,
    )


def network_meta(network: Any) -> dict[str, Any]:
    """The network part of ``meta.json`` (what a person reads when the fingerprint differs)."""
    return {
        "fingerprint": network_fingerprint(network),
        "arch": network.arch,
        "layer": network.feature_layer,
        "input_size": int(network.input_size),
        "channels": int(network.channels),
        "normalise": network.normalise,
    }


@dataclass
class FeatureStore:
    """An opened store; ``features`` is a read-only memory map (nothing is read until used)."""

    path: Path
    meta: dict[str, Any]
    features: np.ndarray
    top5_classes: np.ndarray
    top5_scores: np.ndarray
    labels: np.ndarray
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_cards(self) -> int:
        return int(self.features.shape[0])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def check_network(self, network: Any) -> None:
        """Refuse a network other than the one that made the features (they would be meaningless
        next to its predictions and fine-tunes)."""
        mine = network_meta(network)
        if mine["fingerprint"] != self.meta.get("fingerprint"):
            stored = self.meta
            raise FeatureStoreError(
                f"feature store {self.path} was computed by another network: stored "
                f"{stored.get('arch')} layer {stored.get('layer')!r} input {stored.get('input_size')} "
                f"fingerprint {str(stored.get('fingerprint'))[:12]}, this scene's network is "
                f"{mine['arch']} layer {mine['layer']!r} input {mine['input_size']} fingerprint "
                f"{mine['fingerprint'][:12]}; recompute it with `latent-reach features --scene ... "
                f"--out {self.path}`"
            )


def open_store(path: str | Path) -> FeatureStore:
    """Open a store written by ``StoreWriter``; any inconsistency is a ``FeatureStoreError``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FeatureStoreError(f"feature store not found: {root} (expected a folder)")
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise FeatureStoreError(f"{root} is not a finished feature store (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureStoreError(f"{meta_path} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FeatureStoreError(f"{root} is not a Latent Reach feature store ({meta_path} format)")
    if meta.get("version") != VERSION:
        raise FeatureStoreError(
            f"{root} is feature store version {meta.get('version')}; this Latent Reach reads {VERSION}"
        )
    arrays = {}
    for name in ARRAYS:
        try:
            arrays[name] = np.load(root / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FeatureStoreError(f"{root / (name + '.npy')} cannot be read: {exc}") from None
    sources = [row[0] for row in _read_csv(root / "cards.csv")]
    skipped = [(row[0], row[1]) for row in _read_csv(root / "skipped.csv", missing_ok=True)]
    n, names = meta.get("n_cards"), meta.get("class_names")
    f = arrays["features"]
    problems = []
    if f.ndim != 2 or f.dtype != np.float32:
        problems.append(f"features are {f.dtype} {f.shape}, expected float32 (N, D)")
    for name in ARRAYS:
        if len(arrays[name]) != n:
            problems.append(f"{name} has {len(arrays[name])} rows, meta.json says {n}")
    if len(sources) != n:
        problems.append(f"cards.csv has {len(sources)} rows, meta.json says {n}")
    if not isinstance(names, list) or len(names) < 2:
        problems.append("class_names must list at least 2 classes")
    elif len(arrays["labels"]) and (arrays["labels"].min() < 0 or arrays["labels"].max() >= len(names)):
        problems.append("labels out of the range of class_names")
    if f.ndim == 2 and meta.get("dim") != f.shape[1]:
        problems.append(f"features have {f.shape[1]} dimensions, meta.json says {meta.get('dim')}")
    if problems:
        raise FeatureStoreError(f"feature store {root} is damaged: " + "; ".join(problems))
    return FeatureStore(
        root,
        meta,
        f,
        np.asarray(arrays["top5_classes"]),
        np.asarray(arrays["top5_scores"]),
        np.asarray(arrays["labels"]),
        sources,
        skipped,
    )


def _read_csv(path: Path, missing_ok: bool = False) -> list[list[str]]:
    if missing_ok and not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FeatureStoreError(f"{path} cannot be read: {exc}") from None
    return rows[1:]  # the header


class StoreWriter:
    """Writes a store into ``path`` (replaced only when ``finish`` succeeds).

    ``n`` cards are announced up front; ``write`` puts a block of rows at their card indices (any
    order, any thread of the caller's choosing, one at a time); ``skip`` marks a card unusable.
    Memory stays bounded by one block: rows go straight into the memory-mapped file.
    """

    def __init__(self, path: str | Path, n: int, dim: int, k: int) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not (self.path / "meta.json").is_file() and any(self.path.iterdir()):
            raise FeatureStoreError(f"{self.path} exists and is not a feature store; not overwriting it")
        self.tmp = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.n, self.dim, self.k = n, dim, k
        fmt = np.lib.format
        self.features = fmt.open_memmap(self.tmp / "features.npy", "w+", np.float32, (n, dim))
        self.top5_classes = np.zeros((n, k), np.int64)
        self.top5_scores = np.zeros((n, k), np.float32)
        self.done = np.zeros(n, bool)
        self.skipped: dict[int, str] = {}

    def write(self, index: np.ndarray, features: np.ndarray, top5_classes: np.ndarray, top5_scores) -> None:
        """Rows ``index`` (card indices) of every array."""
        index = np.asarray(index, dtype=np.int64)
        if features.shape != (len(index), self.dim):
            raise ValueError(f"block of features {features.shape}, expected ({len(index)}, {self.dim})")
        self.features[index] = features
        self.top5_classes[index] = top5_classes
        self.top5_scores[index] = top5_scores
        self.done[index] = True

    def skip(self, index: int, reason: str) -> None:
        self.skipped[int(index)] = reason
        self.done[index] = True

    def finish(
        self,
        sources: list[str],
        labels: np.ndarray,
        class_names: list[str],
        meta: dict[str, Any],
        listed_skipped: Sequence[tuple[str, str]] = (),
    ) -> FeatureStore:
        """Squeeze out skipped rows, write the small files and ``meta.json``, and move in place.

        ``listed_skipped``: (path, reason) of entries left out before any card was made (the
        dataset's skip report), written to ``skipped.csv`` first."""
        if not self.done.all():
            missing = np.flatnonzero(~self.done)
            raise RuntimeError(f"{len(missing)} card(s) never written (e.g. {missing[:5].tolist()})")
        keep = np.array([i not in self.skipped for i in range(self.n)], dtype=bool)
        m = int(keep.sum())
        if m < self.n:
            _compact_rows(self.features, keep)
        self.features.flush()
        del self.features
        if m < self.n:
            _shrink_npy(self.tmp / "features.npy", m, self.dim)
        labels = np.asarray(labels, dtype=np.int64)
        np.save(self.tmp / "top5_classes.npy", self.top5_classes[keep])
        np.save(self.tmp / "top5_scores.npy", self.top5_scores[keep])
        np.save(self.tmp / "labels.npy", labels[keep])
        with (self.tmp / "cards.csv").open("w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            for i in np.flatnonzero(keep):
                w.writerow([sources[i], class_names[labels[i]]])
        with (self.tmp / "skipped.csv").open(
            "w", newline="", encoding="utf-8", errors="surrogateescape"
        ) as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            w.writerows(listed_skipped)
            for card in sorted(self.skipped):
                w.writerow([sources[card], self.skipped[card]])
        full = {
            "format": FORMAT,
            "version": VERSION,
            **meta,
            "class_names": list(class_names),
            "n_cards": m,
            "dim": self.dim,
            "k": self.k,
            "n_skipped": len(self.skipped) + len(listed_skipped),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.tmp / "meta.json").write_text(json.dumps(full, indent=2), encoding="utf-8")
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return open_store(self.path)

    def abort(self) -> None:
        """Forget the unfinished store (the previous one at ``path``, if any, is untouched)."""
        features = getattr(self, "features", None)
        if features is not None:
            del self.features
        shutil.rmtree(self.tmp, ignore_errors=True)


def _compact_rows(features: np.ndarray, keep: np.ndarray, chunk: int = 4096) -> None:
    """Move the kept rows to the front, in order, a chunk at a time (rows only move down)."""
    rows = np.flatnonzero(keep)
    for s in range(0, len(rows), chunk):
        src = rows[s : s + chunk]
        features[s : s + len(src)] = features[src]


def _shrink_npy(path: Path, m: int, dim: int) -> None:
    """Rewrite the header of a ``(N, dim)`` float32 ``.npy`` for its first ``m`` rows and cut the rest."""
    fmt = np.lib.format
    with path.open("rb") as fh:
        version = fmt.read_magic(fh)
        fmt.read_array_header_1_0(fh) if version == (1, 0) else fmt.read_array_header_2_0(fh)
        old_offset = fh.tell()
    header = io.BytesIO()
    d = {"descr": fmt.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (m, dim)}
    fmt.write_array_header_1_0(header, d) if version == (1, 0) else fmt.write_array_header_2_0(header, d)
    new_header = header.getvalue()
    size = m * dim * 4
    if len(new_header) == old_offset:
        with path.open("r+b") as fh:
            fh.write(new_header)
            fh.truncate(old_offset + size)
        return
    tmp = path.with_suffix(".tmp")  # a header of another length: copy the rows after a new one
    with path.open("rb") as src, tmp.open("wb") as dst:
        dst.write(new_header)
        src.seek(old_offset)
        left = size
        while left:
            block = src.read(min(left, 1 << 24))
            dst.write(block)
            left -= len(block)
    os.replace(tmp, path)
