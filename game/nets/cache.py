"""Where trained models and layouts are cached: ``$LATENT_REACH_CACHE`` or the user cache dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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
            h.update(np.ascontiguousarray(item).tobytes())
        else:
            h.update(repr(item).encode())
        h.update(b"|")
    return h.hexdigest()[:24]
