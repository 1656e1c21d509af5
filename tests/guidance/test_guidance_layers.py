"""Layer switch: features of another layer, a fresh layout aligned to the current one, an event."""

from __future__ import annotations

import numpy as np

from game.core.events import LayerChanged
from game.learning.layers import layer_choices, layer_label, next_layer, switch_loaded_layer
from game.nets.architectures import AlexNet, SmallCNN


def test_layer_choices_early_to_penultimate():
    assert layer_choices(SmallCNN(10)) == ["features.pool1", "features.pool2", "classifier.relu4"]
    alex = AlexNet(10)
    choices = layer_choices(alex)
    assert choices == ["features.2", "features.5", "features.12", "classifier.5"]
    assert [layer_label(alex, c) for c in choices] == ["pool1", "pool2", "pool5", "fc7"]
    assert next_layer(SmallCNN(10), "classifier.relu4") == "features.pool1"
    assert next_layer(SmallCNN(10), "features.pool1") == "features.pool2"
    assert next_layer(SmallCNN(10), "features.conv1") == "features.pool1"  # not a choice: start over


def test_switch_to_an_early_layer(fresh_digits):
    loaded = fresh_digits
    ws = loaded.workspace
    before_features = ws.features.copy()
    before_positions = ws.positions.copy()
    switch = switch_loaded_layer(loaded, "features.pool1")
    e = switch.event
    assert isinstance(e, LayerChanged)
    assert e.layer == "features.pool1"
    assert e.features.shape == (ws.n_cards, 64 * 4 * 4)  # conv2 has 64 channels, 8x8 pooled to 4x4
    assert e.positions.shape == (ws.n_cards, 3)
    assert e.features.shape != before_features.shape or not np.allclose(e.features, before_features)
    assert np.isfinite(e.positions).all()
    # the world transform is kept: the new layout sits where the old one was
    assert np.allclose(e.positions.mean(0), before_positions.mean(0), atol=0.3)
    assert switch.layout.scale == loaded.layout.scale
    assert not np.allclose(e.positions, before_positions)
    # the workspace only changed when the event is applied
    assert np.array_equal(ws.positions, before_positions)
    ws.apply(e)
    assert ws.feature_layer == "features.pool1"
    assert ws.features.shape == e.features.shape
    assert np.array_equal(ws.positions, e.positions)
    # and the event is plain data a session file can hold
    assert set(e.to_fields()) == {"layer", "features", "positions"}
