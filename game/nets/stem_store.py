"""The stem's outputs for every image, stored once by content so the trunk runs once (issue 17).

The features pass (fc7) and the head-only fine-tune (whose inputs are fc6's outputs) both need
the convolutions and fc6 of every image: at 50,000 images that is 15-30 minutes of AlexNet on two
cores, paid twice before. Now whichever pass runs first stores the stem's outputs here, and the
other reads them: the features pass keeps them while it runs (``tap``), the fine-tune's
preparation (``game.learning.stem.compute_stem_cache``, in the app or the job process, this
launch or the next) loads them, and features missing from their cache are the head run over
them (``game.nets.split.infer_head``).

Entry: ``<cache>/stems/<key>.npy``, float32 ``(N, D)``, written row block by row block under a
temporary name and renamed when complete (``ArrayWriter``). The key is the stem's fingerprint
(every weight outside the head, the split point, the preprocessing: not the head's weights, which
a fine-tune changes) and the images' bytes. Read in full when small; memory-mapped (copy-on-write)
above ``MMAP_BYTES``: the same float32 values, with the pages in the page cache, which the
kernel can drop and read again, instead of 800 MB of the process's own memory at 50k.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from game.data.cache_files import ArrayWriter, cache_dir, content_hash, load_array, stored, touch
from game.nets.network import Network
from game.nets.split import classifier, stem_fingerprint

KIND = "stems"
MMAP_BYTES = 256 * 1024 * 1024  # above this the stored outputs are memory-mapped, not read


def stem_key(network: Network, images: np.ndarray, start: int) -> str:
    """What the stem's outputs over ``images`` depend on (see the module doc)."""
    return content_hash("stem-outputs-v1", stem_fingerprint(network, start), images)


def stem_path(key: str) -> Path:
    return cache_dir(KIND) / f"{key}.npy"


def load_stem(path: Path, n: int) -> np.ndarray | None:
    """The stored outputs of ``n`` images at ``path`` (None: absent, damaged or another size)."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    array = load_array(path, mmap=size > MMAP_BYTES)
    if array is None or array.ndim != 2 or len(array) != n or array.dtype != np.float32:
        return None
    touch(path)
    return array


def store_stem(path: Path, outputs: np.ndarray) -> None:
    """Store computed outputs (the fine-tune's own pass: the next launch reads them)."""
    writer = ArrayWriter(path, len(outputs))
    writer.put(outputs)
    if writer.commit():
        stored(path)


class StemTap:
    """Writes the stem's outputs to the cache while ``Network.infer`` runs the whole network.

    Give ``tap()`` to ``Network.infer``; then ``commit()``. The outputs are the input of
    ``classifier[start]``, captured by a forward pre-hook on it: the same tensor the fine-tune's
    own stem pass catches, so the stored values are those it would compute.
    """

    def __init__(self, network: Network, start: int, path: Path, n: int) -> None:
        head = classifier(network.module)
        assert head is not None
        self.module: nn.Module = head[start]
        self.path = path
        self.writer = ArrayWriter(path, n)

    def tap(self) -> tuple[nn.Module, Callable[[torch.Tensor], None]]:
        return self.module, self._put

    def _put(self, x: torch.Tensor) -> None:
        self.writer.put(x.detach().float().numpy())

    def abort(self) -> None:
        """The pass failed: drop the rows written so far (open file and temporary name)."""
        self.writer.abort()

    def commit(self) -> bool:
        done = self.writer.commit()
        if done:
            stored(self.path)
        return done
