"""The features cache: a network's pass over a dataset's images, stored by content key.

Where cache files live, how they are keyed, written and evicted is ``game.data.cache_files``
(shared with the decoded-images and layout caches); ``cache_dir`` and ``content_hash`` are
re-exported here for the callers that keyed trained models through this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from game.core.heap import release_free_heap
from game.data.cache_files import cache_dir, content_hash, load_array, save_array, stored, touch

__all__ = ["FEATURE_ARRAYS", "cache_dir", "cached_inference", "content_hash", "inference_key"]

FEATURE_ARRAYS = ("features", "top5_classes", "top5_scores", "logits")


def inference_key(network: Any, images: np.ndarray, images_key: str = "") -> str:
    """What a network's pass over ``images`` depends on: the network's fingerprint (every weight,
    the tapped layer, input size, channels, pixel scaling) and the images.

    ``images_key``: a key that already names these exact images (an image folder's
    ``Dataset.content_key``: every file's path, size and times and the reading settings, the key
    its decoded images are cached under), so their bytes are not hashed again at every launch
    (600 MB at 50,000 images of 64x64). Empty: the images' bytes are hashed."""
    from game.data.feature_store import network_fingerprint

    if images_key:
        return content_hash("features-v1", network_fingerprint(network), "images", images_key, images.shape)
    return content_hash("features-v1", network_fingerprint(network), images)


def cached_inference(
    network: Any,
    images: np.ndarray,
    batch_size: int = 256,
    progress: bool = False,
    use_cache: bool = True,
    images_key: str = "",
    stem_layers: int | None = None,
) -> tuple[Any, str]:
    """``network.infer(images)``, or the stored result of that very pass; and the pass's key.

    Stored as one ``.npy`` per array under ``cache_dir("features", key)``, loaded memory-mapped
    (copy-on-write): the 4,096-d features of 50,000 cards are 800 MB that AlexNet takes an hour
    to compute on two cores and the page cache a moment to map. The key also keys the layout
    cache, so the features are hashed once per launch, not their 800 MB again. ``images_key``:
    see ``inference_key``.

    ``stem_layers``: the fine-tune's ``head_layers`` (None: a full fine-tune, no stem). When the
    network splits there, the pass stores the stem's outputs for the fine-tune (or, when they are
    stored already, runs only the head over them): one pass of the trunk per launch, not two.
    """
    from game.nets.network import Inference

    key = inference_key(network, images, images_key) if use_cache else ""
    if key:
        folder = cache_dir("features", key)
        # features.npy first: it is written last, so its absence means an unfinished entry.
        arrays = [load_array(folder / f"{n}.npy") for n in FEATURE_ARRAYS]
        found = [a for a in arrays if a is not None and len(a) == len(images)]
        if len(found) == len(FEATURE_ARRAYS):
            touch(folder)
            return Inference(*found), key
    inference = _infer_once(network, images, batch_size, progress, use_cache, stem_layers)
    # The pass's freed batches stay in the heap (glibc keeps their pages): hand them back.
    release_free_heap()
    if key:
        # features.npy last: its presence with the right length is what a later load checks.
        for name in reversed(FEATURE_ARRAYS):
            if not save_array(folder / f"{name}.npy", np.asarray(getattr(inference, name))):
                break  # a full or read-only cache disk: the pass itself succeeded
        stored(folder)
    return inference, key


def _infer_once(
    network: Any,
    images: np.ndarray,
    batch_size: int,
    progress: bool,
    use_cache: bool,
    stem_layers: int | None,
) -> Any:
    """``network.infer(images)``, sharing its trunk pass with the fine-tune's stem (see above)."""
    from game.nets.split import infer_head, split_point
    from game.nets.stem_store import StemTap, load_stem, stem_key, stem_path

    start = split_point(network, stem_layers) if use_cache and stem_layers is not None else None
    if start is None:
        return network.infer(images, batch_size=batch_size, progress=progress)
    path = stem_path(stem_key(network, images, start))
    outputs = load_stem(path, len(images))
    if outputs is not None:
        return infer_head(network, outputs, start, batch_size)
    tap = StemTap(network, start, path, len(images))
    try:
        inference = network.infer(images, batch_size=batch_size, progress=progress, tap=tap.tap())
    except BaseException:
        tap.abort()  # an interrupted pass (Ctrl+C at 50k): no half-written temporary file left
        raise
    tap.commit()
    return inference
