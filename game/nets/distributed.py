"""Features for many images on a Dask cluster, written into a feature store (``game.data.feature_store``).

Feature extraction is what outgrows one machine first, so only that is distributed: the network
is sent once to every worker, the cards are cut into blocks, and each block is a task that reads
its own images (folder datasets: the paths must be readable on the workers, e.g. a shared file
system) or gets them from the client (datasets made in memory: digits, shapes), runs the network
and returns features and top-5. The client writes each block into the store's memory map as it
arrives and keeps at most ``window`` blocks in flight, so its memory stays bounded by a few blocks
whatever the number of images.

Dask is an optional extra (``pip install 'latent-reach[cluster]'``); nothing else imports this.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from game.core.errors import UserError
from game.data.feature_store import FeatureStore, StoreWriter, network_meta


def require_dask() -> Any:
    """``distributed``, or a clear error naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise UserError(
            "computing features on a cluster needs Dask: pip install 'latent-reach[cluster]' "
            "(or: pip install 'dask[distributed]')"
        ) from None
    return distributed


@dataclass
class Cards:
    """What to compute features for: image paths (read on the workers) or images in memory."""

    sources: list[str]
    labels: np.ndarray
    class_names: list[str]
    paths: list[str] | None = None  # folder datasets: one readable path per card
    images: np.ndarray | None = None  # (N, H, W, C) uint8 when there are no paths
    image_size: int = 64  # the side images are resized to when read from paths
    max_pixels: int = 40_000_000
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) left out when listing

    def __len__(self) -> int:
        return len(self.sources)


def features_of_block(
    network: Any, block: Any, image_size: int, max_pixels: int, threads: int = 1
) -> dict[str, Any]:
    """One task on a worker: ``block`` is a list of paths or a uint8 image array.

    Returns the rows that could be used (``ok``: their positions in the block), their features and
    top-5, and a reason for every image that could not be read.
    """
    import torch

    from game.data.images import ImageSkipped, read_image

    torch.set_num_threads(threads)
    skipped: dict[int, str] = {}
    if isinstance(block, np.ndarray):
        images, ok = block, np.arange(len(block))
    else:
        arrays, ok_list = [], []
        for i, path in enumerate(block):
            try:
                arrays.append(read_image(path, image_size, max_pixels)[0])
                ok_list.append(i)
            except ImageSkipped as exc:
                skipped[i] = str(exc)
            except OSError as exc:  # not there on this worker
                skipped[i] = f"cannot be read on the worker ({exc.strerror or exc})"
        ok = np.asarray(ok_list, dtype=np.int64)
        images = np.stack(arrays) if arrays else np.zeros((0, image_size, image_size, 3), np.uint8)
    if len(ok):
        inference = network.infer(images, batch_size=max(len(images), 1))
        feats, top5c, top5s = inference.features, inference.top5_classes, inference.top5_scores
    else:
        feats = top5c = top5s = None
    return {"ok": ok, "features": feats, "top5_classes": top5c, "top5_scores": top5s, "skipped": skipped}


def compute_feature_store(
    network: Any,
    cards: Cards,
    out: str,
    client: Any,
    block_size: int = 256,
    window: int = 0,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads_per_task: int = 1,
) -> FeatureStore:
    """Features of every card on ``client``'s cluster, written to the store ``out``.

    ``window``: blocks in flight at once (0: two per worker thread), which bounds the client's
    memory. ``progress(done, total)`` is called after each block.
    """
    distributed = require_dask()
    n = len(cards)
    if n == 0:
        raise UserError("no cards to compute features for")
    probe = np.zeros((1, cards.image_size, cards.image_size, 3), np.uint8)
    if cards.images is not None:
        probe = cards.images[:1]
    first = network.infer(probe)
    writer = StoreWriter(out, n, first.features.shape[1], first.top5_classes.shape[1])
    try:
        [net_future] = client.scatter([network], broadcast=True)
        starts = list(range(0, n, block_size))
        if not window:
            window = 2 * max(sum(client.nthreads().values()), 1)

        def submit(start: int) -> Any:
            stop = min(start + block_size, n)
            if cards.paths is not None:
                block: Any = cards.paths[start:stop]
            else:
                assert cards.images is not None
                block = cards.images[start:stop]
            fut = client.submit(
                features_of_block,
                net_future,
                block,
                cards.image_size,
                cards.max_pixels,
                threads_per_task,
                pure=False,
            )
            return fut, start

        pending = [submit(s) for s in starts[:window]]
        started = len(pending)
        by_future = dict(pending)
        queue = distributed.as_completed([f for f, _ in pending])
        for done, fut in enumerate(queue, 1):
            start = by_future.pop(fut)
            result = fut.result()
            fut.release()
            ok = np.asarray(result["ok"], dtype=np.int64)
            if len(ok):
                writer.write(start + ok, result["features"], result["top5_classes"], result["top5_scores"])
            for i, reason in result["skipped"].items():
                writer.skip(start + int(i), reason)
            if progress:
                progress(done, len(starts))
            if started < len(starts):
                nxt, s = submit(starts[started])
                started += 1
                by_future[nxt] = s
                queue.add(nxt)
        store_meta = {**network_meta(network), "image_size": int(cards.image_size), **(meta or {})}
        return writer.finish(cards.sources, cards.labels, cards.class_names, store_meta, cards.skipped)
    except BaseException:
        writer.abort()
        raise


def print_progress(done: int, total: int) -> None:
    """A one-line progress report on stderr (the command's default)."""
    end = "\n" if done == total else ""
    print(f"\rfeatures: {done}/{total} blocks", end=end, file=sys.stderr, flush=True)


def local_client(workers: int, threads: int = 1, processes: bool = True) -> Any:
    """A local cluster of ``workers`` (the command's ``--workers``; tests use ``processes=False``)."""
    distributed = require_dask()
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,  # not its start/stop chatter (a slow stop is warned about)
    )
    return distributed.Client(cluster)


def connect(scheduler: str) -> Any:
    """A client of a running cluster (``tcp://host:8786``)."""
    distributed = require_dask()
    try:
        return distributed.Client(scheduler, timeout="20s")
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def close_client(client: Any) -> None:
    """Close the client and, for a local cluster, the cluster it started."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
