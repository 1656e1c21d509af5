"""The training step: a relabel flips the prediction, keeps held-out accuracy, is deterministic."""

import numpy as np
import pytest
import torch

from game.learning.edits import cluster_geometry, interpret
from game.learning.finetune import (
    FineTuneDiverged,
    FineTuneRequest,
    compute_stem_cache,
    run_finetune,
)


def pick_relabel(loaded, seed=3):
    """A correctly predicted training card and another class, dropped at that class's centroid."""
    ws = loaded.workspace
    rng = np.random.default_rng(seed)
    card = int(rng.choice(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))))
    new = (int(ws.labels[card]) + 3) % ws.n_classes
    cfg = loaded.scene.learning
    centroids, radii = cluster_geometry(
        loaded.layout.positions, ws.labels, ws.n_classes, cfg.cluster_percentile, card
    )
    return card, new, interpret(card, centroids[new], int(ws.labels[card]), centroids, radii, cfg)


def request(loaded, edits, stem, version=1):
    ws = loaded.workspace
    return FineTuneRequest(
        version=version,
        network=loaded.network,
        images=ws.images,
        labels=ws.labels,
        is_train=ws.is_train,
        features=ws.features,
        layout=loaded.layout,
        edits=edits,
        config=loaded.scene.learning,
        projector=loaded.projector,
        n_classes=ws.n_classes,
        stem=stem,
        seed=7,
    )


@pytest.fixture(scope="module")
def stem(loaded_digits):
    return compute_stem_cache(loaded_digits.network, loaded_digits.workspace.images, 2)


def test_stem_cache_matches_network_infer(loaded_digits, stem):
    from game.learning.finetune import _Runner

    net = loaded_digits.network.clone()
    images = loaded_digits.workspace.images[:300]
    cached = _Runner(net, images, compute_stem_cache(net, images, 2), full=False).infer_all()
    direct = net.infer(images)
    np.testing.assert_allclose(cached.features, direct.features, atol=1e-4)
    np.testing.assert_array_equal(cached.top5_classes[:, 0], direct.top5_classes[:, 0])


def test_relabel_flips_prediction_and_keeps_heldout_accuracy(loaded_digits, stem):
    card, new, edit = pick_relabel(loaded_digits)
    assert edit.action == "relabel" and edit.new_label == new
    ws = loaded_digits.workspace
    before = loaded_digits.network.module.state_dict()["classifier.fc1.weight"].clone()
    result = run_finetune(request(loaded_digits, [edit], stem))
    held = ~ws.is_train
    acc0 = np.mean(ws.predictions[held] == ws.original_labels[held])
    acc1 = np.mean(result.inference.top5_classes[held, 0] == ws.original_labels[held])
    assert result.inference.top5_classes[card, 0] == new
    assert result.labels[card] == new and (np.delete(result.labels, card) == np.delete(ws.labels, card)).all()
    assert acc1 >= acc0 - 0.02, (acc0, acc1)
    assert result.learned and result.steps < loaded_digits.scene.learning.max_steps
    assert result.layout.positions.shape == ws.positions.shape
    (outcome,) = result.outcomes
    assert outcome.card == card and outcome.new_label == new
    # The live network is never trained in place.
    assert torch.equal(loaded_digits.network.module.state_dict()["classifier.fc1.weight"], before)
    # The new version shares the frozen stem's tensors with the old one; the head is its own.
    live = dict(loaded_digits.network.module.named_parameters())
    for name, p in result.network.module.named_parameters():
        assert (p is live[name]) == (name not in result.weight_names), name
    assert set(result.weight_names) == {n for n in live if n.startswith("classifier.")}


def test_finetune_is_deterministic(loaded_digits, stem):
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    a = run_finetune(request(loaded_digits, [edit], stem))
    b = run_finetune(request(loaded_digits, [edit], stem))
    assert a.weights == b.weights
    np.testing.assert_array_equal(a.inference.features, b.inference.features)
    np.testing.assert_array_equal(a.layout.positions, b.layout.positions)


def test_nan_loss_raises_diverged(loaded_digits, stem):
    _, _, edit = pick_relabel(loaded_digits)
    broken = loaded_digits.network.clone()
    with torch.no_grad():
        broken.module.classifier.fc2.weight.fill_(float("nan"))
    req = request(loaded_digits, [edit], stem)
    req.network = broken
    with pytest.raises(FineTuneDiverged):
        run_finetune(req)


def test_full_finetune_option_trains_without_stem(loaded_digits):
    import dataclasses

    _, new, edit = pick_relabel(loaded_digits, seed=11)
    req = request(loaded_digits, [edit], None)
    req.config = dataclasses.replace(loaded_digits.scene.learning, full_finetune=True, learning_rate=3e-3)
    result = run_finetune(req)
    assert "features.conv1.weight" in result.weight_names
    assert result.inference.top5_classes[edit.card, 0] == new
