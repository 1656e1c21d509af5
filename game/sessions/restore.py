"""Rebuilding what a session started from: scene, dataset, workspace, network, layout.

A session file stores card indices, not images, so replay reloads the dataset the scene names
and checks its fingerprint first: replaying edits onto different images would be nonsense that
looks plausible. Networks come from the stored weights (never retrained), so a replay sees
exactly the model the person had. Per-card features the file did not store are recomputed from
those weights when read (``features.SessionFeatures``, the restored workspace's feature source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from game.sessions.features import SessionFeatures
from game.sessions.paths import SessionError
from game.sessions.reader import SessionReader
from game.sessions.recorder import dataset_fingerprint


@dataclass
class RestoredSession:
    """The starting point of a recorded session, rebuilt."""

    reader: SessionReader
    scene: Any  # game.core.scene.Scene
    dataset: Any  # game.data.dataset.Dataset
    workspace: Any  # game.core.workspace.Workspace, in the recorded starting state

    def network(self, version: int | None = None) -> Any:
        """The network of model ``version`` (default: the starting one) from its stored weights.

        A fine-tune that trains only the head stores only the head's tensors; they are laid
        over the starting version's full weights (stored whole, once; the stem never changes in
        such a session).
        """
        base_version = int(self.reader.meta.get("model_version", 0))
        v = base_version if version is None else version
        net = network_from_bytes(
            self.scene, self.dataset, self.reader.model_weights(base_version), self.workspace.feature_layer
        )
        if v != base_version:
            overlay_weights(net, self.reader.model_weights(v))
        return net

    def layout(self) -> Any:
        """The starting ``LayoutState`` if the session stored it (needed to re-run fine-tunes)."""
        from game.layout.state_io import layout_from_arrays

        try:
            return layout_from_arrays(
                self.reader.initial_arrays(), prefix="layout_", positions=self.workspace.positions.copy()
            )
        except KeyError:
            raise SessionError(
                f"{self.reader.path} does not store its starting layout; cannot re-run fine-tunes"
            ) from None
        except ValueError as exc:  # a stored PCA that cannot be the layout's
            raise SessionError(f"{self.reader.path}: its starting layout is damaged ({exc})") from None

    def as_loaded(self, with_network: bool = True) -> Any:
        """A ``LoadedScene`` over the restored workspace, for code that expects one (the world,
        the fine-tune controller). The network and layout are the recorded starting ones; its
        ``network(version)`` rebuilds any recorded version.

        A session that stored no weights (a test's, or one whose recording began without a
        network) gets a network of the scene's shape with fresh weights, so the bundle is never
        half empty; nothing that shows a replay runs it. ``with_network`` is kept for callers
        that passed it and changes nothing.
        """
        from game.layout.projector import LayoutState, Projector
        from game.pipeline import LoadedScene

        del with_network
        network = self.network() if self.reader.model_versions() else self._untrained_network()
        try:
            layout = self.layout()
        except SessionError:
            layout = LayoutState(
                self.workspace.positions.astype(np.float64),
                np.zeros(3),
                1.0,
                np.zeros(3),
                self.workspace.positions.copy(),
            )
        return LoadedScene(
            self.scene, self.dataset, network, Projector(self.scene.layout), layout, self.workspace
        )

    def _untrained_network(self) -> Any:
        from game.nets.architectures import build_module
        from game.nets.build import input_channels, wrap_module

        module = build_module(
            self.scene.network.arch, self.dataset.n_classes, input_channels(self.scene, self.dataset)
        )
        return wrap_module(self.scene, self.dataset, module, self.workspace.feature_layer)


def network_from_bytes(scene: Any, dataset: Any, weights: bytes, feature_layer: str = "") -> Any:
    """A ``Network`` shaped like ``build_network`` would build it, with these weights loaded."""
    from game.nets.architectures import build_module
    from game.nets.build import input_channels, wrap_module
    from game.nets.weights import state_from_bytes

    module = build_module(scene.network.arch, dataset.n_classes, input_channels(scene, dataset))
    try:
        state = state_from_bytes(weights)
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # corrupt bytes or a different architecture
        raise SessionError(
            f"stored weights do not fit the scene's network: {type(exc).__name__}: {exc}"
        ) from None
    return wrap_module(scene, dataset, module, feature_layer)


def overlay_weights(network: Any, weights: bytes) -> None:
    """Load a full or partial state dict (safetensors bytes) into ``network.module``."""
    from game.nets.weights import state_from_bytes

    try:
        state = state_from_bytes(weights)
    except Exception as exc:
        raise SessionError(f"stored weights cannot be read: {type(exc).__name__}: {exc}") from None
    own = network.module.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise SessionError(f"stored weights do not fit the scene's network: {', '.join(bad[:6])}")
    network.module.load_state_dict(state, strict=False)


def restore(reader: SessionReader, check_fingerprint: bool = True) -> RestoredSession:
    """Load the recorded scene's dataset and build the starting workspace."""
    from game.data.dataset import load_dataset

    scene = reader.scene()
    sample = None
    if scene.dataset.features:  # a feature store's scene: the sample of cards it showed
        from game.data.store_scene import sample_store

        sample = sample_store(scene, progress=False)
        dataset = sample.data
    else:
        # With the decoded-image cache, as the app opens it: an image folder then carries the
        # ``content_key`` that keyed the launch's features (without it nothing below is found).
        dataset = load_dataset(scene, progress=False, cache=True)
    features = None
    if reader.meta.get("features_omitted") == "1":
        features = np.zeros((len(dataset.images), 1), dtype=np.float32)  # replaced below
    probe = _FingerprintView(dataset.images, dataset.labels, list(dataset.class_names))
    recorded = reader.meta.get("dataset_fingerprint")
    if check_fingerprint and recorded and dataset_fingerprint(probe) != recorded:
        raise SessionError(
            f"{reader.path} was recorded on different images than the scene's dataset now holds "
            f"({scene.dataset.kind} {scene.dataset.path or ''}); replaying its edits would be wrong"
        )
    workspace = reader.initial_workspace(dataset.images, features=features)
    session = RestoredSession(reader, scene, dataset, workspace)
    if features is not None:
        workspace.features = _starting_features(session, sample)
    # Features the file left out of its events (schema 3) are recomputed when something reads them.
    workspace.feature_source = SessionFeatures(
        session, workspace.features, int(workspace.model_version), workspace.feature_layer
    )
    return session


def _starting_features(session: RestoredSession, sample: Any) -> np.ndarray:
    """The starting features a large scene's session left out, got as the recorded launch got
    them: a feature store's rows (the store's network is the session's starting one), else
    through the app's content-keyed feature cache, where the same network over the same images
    is read back, not passed again (at 50,000 photos the trunk pass takes most of an hour on two
    cores); a pass made here is kept for the next replay and for the app."""
    from game.data.feature_store import FeatureStoreError
    from game.nets.cache import cached_inference

    scene, dataset, network = session.scene, session.dataset, session.network()
    if sample is not None:
        try:
            sample.store.check_network(network)
            return np.ascontiguousarray(sample.store.features[sample.rows], dtype=np.float32)
        except FeatureStoreError:
            pass  # the store was recomputed by another network since: pass this one (below)
    inference, _ = cached_inference(
        network,
        dataset.images,
        scene.network.batch_size,
        images_key=dataset.content_key,
        stem_layers=None if scene.learning.full_finetune else scene.learning.head_layers,
    )
    return np.asarray(inference.features)


@dataclass
class _FingerprintView:
    """What ``dataset_fingerprint`` reads from a workspace, taken from a freshly loaded dataset."""

    images: np.ndarray
    original_labels: np.ndarray
    class_names: list[str]
