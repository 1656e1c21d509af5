"""Per-card features a session file did not store, recomputed from its stored weights.

Why: a fine-tune's ``ModelUpdated`` carries the features of every card (4,096 floats each for
AlexNet fc7: 33 MB at 2,000 cards, half again the trainable weights the file stores anyway).
Everything that shows a replay (positions, labels, top-5) is stored; features are only read by
what asks about them (guidance, explanations, a layer switch, an export that includes them). So
the recorder leaves them out whenever the file holds that version's weights, and a restored
workspace gets a ``SessionFeatures`` as its ``feature_source``: the first read after such an event
rebuilds that version's network (the base weights with the version's trainable part laid over)
and runs the cards through it. Nothing is computed for a replay that never reads features.

The base version's own layer gives back the starting features the file stored (or restore
computed), so a session whose features came from a feature store rather than the network keeps
them. Recomputed features equal the recorded ones up to float rounding (the live job may have
read a cached stem output; torch's thread count changes summation order).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class SessionFeatures:
    """``(version, layer, images) -> features`` for a restored session (see the module docstring).

    Keeps the last rebuilt network and the last result, so reading the features of the same
    version twice (a seek, a copy of the workspace) costs one pass. Safe from any thread: one
    lock, as a worker (explanations) and the frame loop (guidance) may both ask.
    """

    def __init__(self, restored: Any, initial: np.ndarray, base_version: int, base_layer: str) -> None:
        self._restored = restored
        self._initial = initial
        self._base_version = int(base_version)
        self._base_layer = base_layer
        self._lock = threading.Lock()
        self._network: tuple[int, Any] | None = None
        self._last: tuple[tuple[int, str, int], np.ndarray] | None = None
        self.passes = 0  # how many times cards went through a network (tests, benchmarks)

    def __call__(self, version: int, layer: str, images: np.ndarray) -> np.ndarray:
        key = (int(version), layer, len(images))
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            features = self._compute(int(version), layer, images)
            self._last = (key, features)
            return features

    def _own_layer(self, layer: str, network: Any | None = None) -> bool:
        own = network.feature_layer if network is not None else self._base_layer
        return not layer or layer == own

    def _compute(self, version: int, layer: str, images: np.ndarray) -> np.ndarray:
        n0 = len(self._initial)
        if version == self._base_version and self._own_layer(layer) and len(images) >= n0:
            if len(images) == n0:
                return self._initial
            extra = self._infer(version, layer, images[n0:])  # cards added since the start
            return np.concatenate([self._initial, extra.astype(self._initial.dtype)])
        return self._infer(version, layer, images)

    def _infer(self, version: int, layer: str, images: np.ndarray) -> np.ndarray:
        if self._network is None or self._network[0] != version:
            self._network = (version, self._restored.network(version))
        network = self._network[1]
        if not self._own_layer(layer, network):
            network = network.with_layer(layer)
        batch = int(getattr(getattr(self._restored.scene, "network", None), "batch_size", 256) or 256)
        self.passes += 1
        features: np.ndarray = network.infer(images, batch_size=batch, progress=False).features
        return features
