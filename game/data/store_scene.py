"""Scenes whose features come from a feature store (``[dataset] features = "STORE"``).

Two halves that must agree card for card and network for network:

* ``cards_for_scene``: what ``latent-reach features`` computes features for, and with which
  network (the scene's, built as ``open_scene`` builds it);
* ``open_store_scene``: what the app shows: a seeded sample of at most ``[dataset] max_cards``
  cards from the store (one machine lays out and draws that many well; the rest are left out
  and a line says so), with the scene's network checked against the store's fingerprint.

Only the small CNN (trained on the dataset at first use; its input channels follow the images) or
a dataset made in memory (digits, shapes) needs the whole dataset on this machine; a folder
dataset with an RGB network (AlexNet-shaped, weights from a file) reads only the images of the
cards it shows.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from game.core.errors import UserError
from game.core.scene import Scene
from game.data.dataset import Dataset, load_dataset
from game.data.feature_store import FeatureStore, FeatureStoreError, open_store
from game.nets.distributed import Cards


def needs_full_dataset(scene: Scene) -> bool:
    """Whether the scene's network or images need the whole dataset in memory here."""
    return scene.dataset.kind != "folder" or scene.network.arch == "small_cnn"  # its channels follow the data


def folder_size(scene: Scene) -> int:
    """The side a folder dataset's images are resized to (as ``load_dataset`` does)."""
    return scene.dataset.image_size or 64


def build_scene_network(scene: Scene, data: Any, progress: bool = True) -> Any:
    """The scene's network as ``open_scene`` builds it (``data``: the full dataset, or a stand-in
    with ``images`` of the right shape and ``n_classes`` when the network has a weights file)."""
    from game.nets.build import build_network

    is_train = ~data.heldout_mask(scene.dataset.heldout_fraction, scene.dataset.seed)
    return build_network(scene, data, is_train, progress=progress)


def _stand_in(scene: Scene, class_names: list[str]) -> Any:
    """Enough of a ``Dataset`` for ``build_network`` with a weights file: image shape and classes."""
    size = folder_size(scene)
    return SimpleNamespace(
        images=np.zeros((1, size, size, 3), np.uint8),
        n_classes=len(class_names),
        class_names=class_names,
        heldout_mask=lambda fraction, seed: np.zeros(1, bool),
    )


def _folder_entries(scene: Scene) -> tuple[list[Any], list[str], list[Any]]:
    """(path, label) of every image the folder dataset lists, its class names and skipped entries."""
    from game.data import folder

    cfg = scene.dataset
    root = scene.resolve_path(cfg.path)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if cfg.labels_csv:
        return folder._entries_from_csv(root, scene.resolve_path(cfg.labels_csv), cfg.labels_outside, [])
    return folder._entries_from_subfolders(root)


def cards_for_scene(scene: Scene, progress: bool = True) -> tuple[Cards, Any]:
    """The cards of the scene's dataset (paths where workers can read them) and its network."""
    cfg = scene.dataset
    if needs_full_dataset(scene):
        data = load_dataset(scene, progress=progress)
        network = build_scene_network(scene, data, progress=progress)
        cards = Cards(
            list(data.sources),
            data.labels,
            list(data.class_names),
            images=data.images,
            image_size=data.images.shape[1],
            skipped=[(f.path, f.reason) for f in data.skipped],
        )
        return cards, network
    entries, class_names, listed_skipped = _folder_entries(scene)
    if cfg.max_images and len(entries) > cfg.max_images:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(entries))[: cfg.max_images])
        entries = [entries[i] for i in keep]
    network = build_scene_network(scene, _stand_in(scene, class_names), progress=progress)
    cards = Cards(
        [str(p) for p, _ in entries],  # real paths: the app reads the images it shows from them
        np.array([label for _, label in entries], dtype=np.int64),
        list(class_names),
        paths=[str(p) for p, _ in entries],
        image_size=folder_size(scene),
        max_pixels=cfg.max_pixels,
        skipped=[(f.path, f.reason) for f in listed_skipped],
    )
    return cards, network


@dataclass
class StoreSample:
    """The cards a store scene shows: store rows ``rows`` as a ``Dataset`` (and its held-out mask).

    ``full`` is the whole dataset when ``needs_full_dataset`` (the small CNN is built from it)."""

    store: FeatureStore
    rows: np.ndarray
    data: Dataset
    heldout: np.ndarray
    full: Dataset | None


def sample_store(scene: Scene, progress: bool = True) -> StoreSample:
    """Open the scene's store and load the images of a seeded sample of at most ``max_cards``
    cards (what the app shows, and what a replay of a session on this scene restores)."""
    from game.data.images import ImageSkipped, read_image
    from game.data.names import display_path

    cfg = scene.dataset
    store = open_store(scene.resolve_path(cfg.features))
    n_all = store.n_cards
    order = np.random.default_rng(cfg.seed).permutation(n_all)
    idx = np.sort(order[: min(cfg.max_cards, n_all)])
    if needs_full_dataset(scene):
        full = load_dataset(scene, progress=progress)
        if len(full.sources) != n_all or any(full.sources[i] != store.sources[i] for i in idx):
            raise FeatureStoreError(
                f"feature store {store.path} lists other cards than this scene's dataset "
                f"({n_all} cards in the store, {len(full.sources)} in the dataset)"
            )
        held = full.heldout_mask(cfg.heldout_fraction, cfg.seed)[idx]
        sources = [full.sources[i] for i in idx]
        data = Dataset(full.images[idx], full.labels[idx], full.class_names, sources, name=full.name)
        return StoreSample(store, idx, data, held, full)
    images, kept, skipped = [], [], []
    size = int(store.meta.get("image_size") or folder_size(scene))
    for i in idx:
        source = store.sources[i]
        try:
            images.append(read_image(source, size, cfg.max_pixels)[0])
        except (ImageSkipped, OSError) as exc:
            skipped.append(f"{display_path(source)}: {exc}")
            continue
        kept.append(i)
    if not kept:
        raise FeatureStoreError(f"none of the sampled images of {store.path} can be read ({skipped[:3]})")
    if skipped:
        print(
            f"latent-reach: {len(skipped)} sampled image(s) could not be read: {skipped[0]}",
            file=sys.stderr,
        )
    idx = np.asarray(kept, dtype=np.int64)
    shown = [display_path(store.sources[i]) for i in idx]
    data = Dataset(np.stack(images), store.labels[idx], store.class_names, shown, name=str(store.path))
    return StoreSample(store, idx, data, data.heldout_mask(cfg.heldout_fraction, cfg.seed), None)


def open_store_scene(scene: Scene, progress: bool = True, use_cache: bool = True) -> Any:
    """A ``LoadedScene`` from the scene's feature store; see the module docstring."""
    from game.nets.network import Inference
    from game.pipeline import LoadedScene, Projector, _layout_cached, make_workspace

    cfg = scene.dataset
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sample = sample_store(scene, progress=progress)
    store, idx, data = sample.store, sample.rows, sample.data
    timings["dataset"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if sample.full is not None:
        network = build_scene_network(scene, sample.full, progress=progress)
    else:
        network = build_scene_network(scene, _stand_in(scene, store.class_names), progress=progress)
    store.check_network(network)
    timings["network"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    features = np.ascontiguousarray(store.features[idx], dtype=np.float32)
    inference = Inference(
        features, store.top5_classes[idx], store.top5_scores[idx], np.zeros((len(idx), 0), np.float32)
    )
    timings["features"] = time.perf_counter() - t0
    n_all = store.n_cards
    t0 = time.perf_counter()
    projector = Projector(scene.layout)
    layout = _layout_cached(projector, features, use_cache)
    timings["layout"] = time.perf_counter() - t0
    rest = None
    if len(idx) < n_all:
        shown = (
            f"latent-reach: feature store {store.path}: showing {len(idx)} of {n_all} cards "
            f"(a seeded sample, [dataset] max_cards = {cfg.max_cards}); the other {n_all - len(idx)}"
        )
        if cfg.place_rest:
            t0 = time.perf_counter()
            rest = place_rest(projector, store, idx, features, layout)
            timings["place_rest"] = time.perf_counter() - t0
            print(
                f"{shown} are placed by openTSNE's transform against the shown layout in "
                f"{timings['place_rest']:.0f} s (kept with the scene, not drawn)",
                file=sys.stderr,
            )
        else:
            print(f"{shown} are left out ([dataset] place_rest = true places them)", file=sys.stderr)
    workspace = make_workspace(data, inference, layout, ~sample.heldout, network.feature_layer)
    loaded = LoadedScene(scene, data, network, projector, layout, workspace, timings)
    loaded.rest = rest
    return loaded


@dataclass
class RestPlacement:
    """The store's cards that are not shown, placed in the shown layout's world.

    ``rows``: their store rows; ``positions``: (len(rows), 3) float32 world metres;
    ``sources`` and ``labels``: the store's, for those rows."""

    rows: np.ndarray
    positions: np.ndarray
    sources: list[str]
    labels: np.ndarray


def place_rest(
    projector: Any, store: FeatureStore, shown: np.ndarray, shown_features: np.ndarray, layout: Any
) -> RestPlacement:
    """Place every store row not in ``shown`` by openTSNE's transform (``Projector.place``),
    in blocks so only one block of the rest's features is in memory beside the shown ones."""
    rows = np.setdiff1d(np.arange(store.n_cards), shown)
    positions = np.empty((len(rows), 3), np.float32)
    place = projector.placer(layout, shown_features)
    block = 20_000
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        feats = np.ascontiguousarray(store.features[part], dtype=np.float32)
        positions[start : start + block] = place(feats)
    return RestPlacement(rows, positions, [store.sources[i] for i in rows], np.asarray(store.labels[rows]))
