"""From a scene file to a ready workspace: dataset -> network -> features -> 3-D layout.

This is the whole headless half of the loop in one call, used by the game, the command line,
tests and notebooks alike. No window is involved.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from game.core.scene import Scene, load_scene
from game.core.workspace import Workspace
from game.data.cache_files import (
    cache_dir,
    content_hash,
    load_arrays,
    report_damaged,
    save_arrays,
    stored,
    touch,
)
from game.data.dataset import Dataset, load_dataset
from game.layout.projector import LayoutState, Projector
from game.layout.state_io import layout_from_arrays, layout_to_arrays
from game.learning.store import ModelStore
from game.nets.build import build_network
from game.nets.cache import cached_inference
from game.nets.network import Inference, Network


@dataclass
class LoadedScene:
    """Everything a session starts from: the scene, data, network, layout and the workspace.

    ``network`` and ``layout`` are the start-up ones and are never replaced: the versions a
    fine-tune or an undo makes live in ``models`` (ask ``loaded.models.network()`` for the live one).
    """

    scene: Scene
    dataset: Dataset
    network: Network
    projector: Projector
    layout: LayoutState
    workspace: Workspace
    timings: dict[str, float] = field(default_factory=dict)
    models: ModelStore = field(default=None, repr=False)  # type: ignore[assignment]
    # A feature store's cards beyond ``max_cards``, placed but not drawn ([dataset] place_rest):
    # a ``store_scene.RestPlacement``, else None.
    rest: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.models is None:
            self.models = ModelStore.start(self.network, self.layout, self.workspace)

    def heldout_accuracy(self) -> float:
        """Accuracy of the current predictions on held-out cards, against their original labels."""
        ws = self.workspace
        held = ~ws.is_train
        if not held.any():
            return float("nan")
        return float(np.mean(ws.predictions[held] == ws.original_labels[held]))


def open_scene(
    scene: Scene | str | None = None, progress: bool = True, use_cache: bool = True
) -> LoadedScene:
    """Load a scene (a path, a ``Scene``, or None for the embedded default) into a workspace."""
    if not isinstance(scene, Scene):
        scene = load_scene(scene)
    if scene.dataset.features:  # features computed before (e.g. on a cluster): a sample of them
        from game.data.store_scene import open_store_scene

        return open_store_scene(scene, progress=progress, use_cache=use_cache)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_dataset(scene, progress=progress, cache=use_cache)
    if progress and data.skip_report():
        print(data.skip_report(), file=sys.stderr)
    is_train = ~data.heldout_mask(scene.dataset.heldout_fraction, scene.dataset.seed)
    timings["dataset"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    network = build_network(scene, data, is_train, progress=progress)
    timings["network"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    inference, features_key = cached_inference(
        network,
        data.images,
        scene.network.batch_size,
        progress=progress,
        use_cache=use_cache,
        images_key=data.content_key,
        # The pass keeps the stem's outputs for the fine-tune (one trunk pass per launch).
        stem_layers=None if scene.learning.full_finetune else scene.learning.head_layers,
    )
    timings["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    projector = Projector(scene.layout)
    layout = _layout_cached(projector, inference.features, use_cache, features_key)
    timings["layout"] = time.perf_counter() - t0

    workspace = make_workspace(data, inference, layout, is_train, network.feature_layer)
    return LoadedScene(scene, data, network, projector, layout, workspace, timings)


def make_workspace(
    data: Dataset, inference: Inference, layout: LayoutState, is_train: np.ndarray, feature_layer: str
) -> Workspace:
    """The workspace of a dataset under a network's inference and a layout (its labels are the
    dataset's: pass a ``Dataset`` with other labels to start from those)."""
    return Workspace(
        images=data.images,
        labels=data.labels,
        class_names=list(data.class_names),
        top5_classes=inference.top5_classes,
        top5_scores=inference.top5_scores,
        features=inference.features,
        positions=layout.positions,
        is_train=is_train,
        sources=list(data.sources),
        feature_layer=feature_layer,
    )


def _layout_cached(
    projector: Projector, features: np.ndarray, use_cache: bool, features_key: str = ""
) -> LayoutState:
    """Fit the layout, or reuse a cached one for exactly these features and settings.

    ``features_key``: a key that already names these features (``cached_inference``'s), so
    their bytes are not hashed a second time."""
    # v2: coordinates turned to their principal axes, per-axis stretch in the transform (issue 12);
    # v3: the schedule for large sets (issue 17). Every LayoutConfig field is in the key, so a
    # changed setting never reuses an old layout.
    config = sorted(vars(projector.config).items())
    if features_key:
        key = content_hash("layout-v3", "features", features_key, config)
    else:
        key = content_hash("layout-v3", features, config)
    path = cache_dir("layouts") / f"{key}.npz"
    if use_cache:
        # A damaged file (empty or truncated: a crash before the data reached the disk) is said
        # and refitted, not a crash at launch.
        arrays = load_arrays(path)
        if arrays is not None:
            try:
                state = layout_from_arrays(arrays)
                touch(path)
                return state
            except (KeyError, ValueError, TypeError) as exc:
                report_damaged(path, exc)
    state = projector.fit(features)
    # With the feature-space neighbours (what update_local compares to) and, for large scenes, the
    # PCA and neighbour bounds that let the first drop after the next launch skip most of its
    # search. A full or read-only cache disk stores nothing: the fit itself succeeded.
    if use_cache and save_arrays(path, layout_to_arrays(state, search_state=True)):
        stored(path)
    return state
