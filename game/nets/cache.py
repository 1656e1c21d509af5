"""Where trained models, decoded image folders, features and layouts are cached:
``$LATENT_REACH_CACHE`` or the user cache dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("LATENT_REACH_CACHE")
    if root:
        base = Path(root)
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("latent-reach"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_hash(*items: object) -> str:
    """A stable hash of arrays, strings and numbers (the cache key of a trained model)."""
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


FEATURE_ARRAYS = ("features", "top5_classes", "top5_scores", "logits")


def inference_key(network: Any, images: np.ndarray) -> str:
    """What a network's pass over ``images`` depends on: the network's fingerprint (every weight,
    the tapped layer, input size, channels, pixel scaling) and the images' bytes."""
    from game.data.feature_store import network_fingerprint

    return content_hash("features-v1", network_fingerprint(network), images)


def cached_inference(
    network: Any, images: np.ndarray, batch_size: int = 256, progress: bool = False, use_cache: bool = True
) -> tuple[Any, str]:
    """``network.infer(images)``, or the stored result of that very pass; and the pass's key.

    Stored as one ``.npy`` per array under ``cache_dir("features", key)``, loaded memory-mapped
    (copy-on-write): the 4,096-d features of 50,000 cards are 800 MB that AlexNet takes an hour
    to compute on two cores and the page cache a moment to map. The key also keys the layout
    cache, so the features are hashed once per launch, not their 800 MB again.
    """
    from game.nets.network import Inference

    key = inference_key(network, images) if use_cache else ""
    if key:
        folder = cache_dir("features", key)
        try:
            # Plain ndarray views over the mappings (np.asarray drops the memmap subclass): they
            # pickle and compute as any array, and pages are read only when used.
            arrays = [
                np.asarray(np.load(folder / f"{n}.npy", mmap_mode="c", allow_pickle=False))
                for n in FEATURE_ARRAYS
            ]
            if all(len(a) == len(images) for a in arrays):
                return Inference(*arrays), key
        except (OSError, ValueError, EOFError):  # absent, half-written or emptied: compute again
            pass
    inference = network.infer(images, batch_size=batch_size, progress=progress)
    if key:
        try:
            # features.npy last: its presence with the right length is what a later load checks.
            for name in reversed(FEATURE_ARRAYS):
                tmp = folder / f"{name}.tmp.npy"
                np.save(tmp, np.asarray(getattr(inference, name)))
                tmp.replace(folder / f"{name}.npy")
        except OSError:  # a full or read-only cache disk: the pass itself succeeded
            pass
    return inference, key
