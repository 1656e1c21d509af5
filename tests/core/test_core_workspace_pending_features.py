"""Features an event did not carry are pending: computed once, on first read, by the feature source."""

import numpy as np
import pytest

from game.core import events as ev
from game.core.workspace import Workspace


def _workspace(n: int = 6) -> Workspace:
    rng = np.random.default_rng(0)
    return Workspace(
        images=rng.integers(0, 255, (n, 4, 4, 1), dtype=np.uint8),
        labels=np.arange(n) % 2,
        class_names=["a", "b"],
        top5_classes=np.stack([np.arange(n) % 2, 1 - np.arange(n) % 2], axis=1),
        top5_scores=np.full((n, 2), 0.5, np.float32),
        features=np.zeros((n, 3), np.float32),
        positions=rng.normal(size=(n, 3)).astype(np.float32),
        is_train=np.ones(n, bool),
        sources=[f"s{i}" for i in range(n)],
        feature_layer="fc",
    )


class Source:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []

    def __call__(self, version: int, layer: str, images: np.ndarray) -> np.ndarray:
        self.calls.append((version, layer, len(images)))
        return np.full((len(images), 2), float(version), np.float32) + (layer == "conv")


def _model(ws: Workspace, version: int, features=None) -> ev.ModelUpdated:
    return ev.ModelUpdated(version, ws.labels, ws.top5_classes, ws.top5_scores, features, ws.positions + 1)


def test_pending_features_are_computed_once_on_first_read():
    ws = _workspace()
    source = Source()
    ws.feature_source = source
    ws.apply(_model(ws, 3))
    assert ws.features_pending == (3, "fc") and source.calls == []
    np.testing.assert_array_equal(ws.positions, _workspace().positions + 1)  # the rest applies now
    assert ws.features.shape == (6, 2) and float(ws.features[0, 0]) == 3.0
    assert ws.features is ws.features and source.calls == [(3, "fc", 6)]
    assert ws.features_pending is None

    ws.apply(ev.LayerChanged("conv", None, ws.positions))  # of the version shown: 3
    assert ws.features_pending == (3, "conv")
    ws.apply(_model(ws, 4, features=np.ones((6, 5), np.float32)))  # carried ones win, nothing computed
    assert ws.features_pending is None and ws.features.shape == (6, 5) and len(source.calls) == 1


def test_copy_keeps_them_pending_and_an_added_card_joins_the_pass():
    ws = _workspace()
    source = Source()
    ws.feature_source = source
    ws.apply(_model(ws, 2))
    ws.apply(ev.CardAdded(ws.images[0], 1, (1, 0), (0.6, 0.4), np.zeros(7, np.float32), (0.0, 0.0, 0.0)))
    copied = ws.copy()
    assert copied.features_pending == (2, "fc") and copied.feature_source is source and not source.calls
    assert copied.features.shape == (7, 2) and source.calls == [(2, "fc", 7)]
    assert ws.features_pending == (2, "fc")  # the original still waits for its own read


def test_without_a_source_a_read_says_why():
    ws = _workspace()
    ws.apply(_model(ws, 1))
    with pytest.raises(RuntimeError, match="v1 were not recorded"):
        _ = ws.features
    with pytest.raises(AttributeError):
        _ = ws.no_such_field  # type: ignore[attr-defined]
