"""Networks: architectures, safe weight loading with clear mismatch errors, features and top-5."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from game.core.errors import UserError
from game.nets.architectures import (
    ALEXNET_ALIASES,
    AlexNet,
    SmallCNN,
    build_module,
    default_feature_layer,
    last_conv_layer,
    resolve_layer,
    torchvision_available,
)
from game.nets.network import Network, top_k
from game.nets.weights import WeightsError, load_weights, read_state_dict, save_weights

# torchvision's AlexNet parameter names, written out so the test does not need torchvision.
TORCHVISION_ALEXNET_KEYS = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")] + [
    f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")
]


def test_alexnet_parameter_names_match_torchvision():
    assert sorted(AlexNet().state_dict()) == sorted(TORCHVISION_ALEXNET_KEYS)


def test_alexnet_fc7_is_the_default_feature_layer_and_aliases_resolve():
    net = AlexNet(n_classes=10)
    assert default_feature_layer(net) == "classifier.5" == ALEXNET_ALIASES["fc7"]
    assert resolve_layer(net, "conv5")[0] == "features.11"
    assert last_conv_layer(net) == "features.10"
    x = torch.zeros(1, 3, 224, 224)
    network = Network(net, "alexnet", 10, 3, 224, "fc7", "imagenet")
    logits, feats = network.forward_with_features(x)
    assert logits.shape == (1, 10) and feats.shape == (1, 4096)


def test_small_cnn_penultimate_layer_and_any_input_size():
    net = SmallCNN(10, 1)
    assert default_feature_layer(net) == "classifier.relu4"
    for size in (8, 28, 64):
        assert net(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_unknown_layer_lists_choices():
    with pytest.raises(UserError, match="choose one of:.*classifier.fc1"):
        resolve_layer(SmallCNN(3), "fc9")


def test_torchvision_arch_without_torchvision_is_a_clear_error():
    if torchvision_available():
        pytest.skip("torchvision imports here")
    with pytest.raises(UserError, match="needs torchvision"):
        build_module("torchvision:resnet18", 10, 3)


def test_weights_round_trip_safetensors_and_torch(tmp_path: Path):
    a, b = SmallCNN(4, 1), SmallCNN(4, 1)
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert [f.name for f in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left
    with pytest.raises(AttributeError):  # a write that fails leaves nothing behind either
        save_weights({"x": "not a tensor"}, tmp_path / "bad.safetensors")
    assert [f.name for f in tmp_path.iterdir()] == ["w.safetensors"]
    torch.save({"state_dict": a.state_dict()}, tmp_path / "w.pt")
    c = SmallCNN(4, 1)
    load_weights(c, tmp_path / "w.pt")
    assert torch.equal(c.classifier.fc2.weight, a.classifier.fc2.weight)


def test_torchvision_style_alexnet_file_loads_as_is(tmp_path: Path):
    src = AlexNet(n_classes=1000)
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "alexnet.pth")
    dst = AlexNet(n_classes=1000)
    load_weights(dst, tmp_path / "alexnet.pth")
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    # ImageNet weights on a 10-class dataset: the head is re-initialised, the rest is kept.
    ten = AlexNet(n_classes=10)
    skipped = load_weights(ten, tmp_path / "alexnet.pth", allow_new_head=True)
    assert skipped == ["classifier.6.bias", "classifier.6.weight"]
    assert torch.equal(ten.classifier[4].weight, src.classifier[4].weight)


def test_mismatched_weights_name_missing_and_unexpected_keys(tmp_path: Path):
    state = SmallCNN(4, 1).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.fc2.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as info:
        load_weights(SmallCNN(4, 1), tmp_path / "bad.pt")
    msg = str(info.value)
    assert "missing keys: classifier.fc2.bias" in msg and "unexpected keys: extra.weight" in msg
    save_weights(SmallCNN(5, 1), tmp_path / "five.safetensors")
    with pytest.raises(
        WeightsError, match=r"shape mismatches.*classifier.fc2.weight \(5, 128\) vs \(4, 128\)"
    ):
        load_weights(SmallCNN(4, 1), tmp_path / "five.safetensors")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path: Path):
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(tmp_path / "evil.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "garbage.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "missing.pt")


def test_updated_network_shares_what_did_not_change_and_leaves_the_original_alone():
    torch.manual_seed(0)
    net = Network(SmallCNN(4, 1), "small_cnn", 4, 1, 8)
    new_head = torch.full_like(net.module.classifier.fc2.weight, 0.5)
    version = net.updated({"classifier.fc2.weight": new_head})
    assert torch.equal(version.module.classifier.fc2.weight, new_head)
    assert not torch.equal(net.module.classifier.fc2.weight, new_head)
    shared = [n for n, p in version.module.named_parameters() if p is dict(net.module.named_parameters())[n]]
    assert "classifier.fc2.weight" not in shared
    assert len(shared) == len(list(net.module.parameters())) - 1
    copy = net.clone()
    assert all(a is not b for a, b in zip(copy.module.parameters(), net.module.parameters()))


def test_top_k_is_sorted_softmax():
    idx, p = top_k(np.array([[0.0, 3.0, 1.0, 2.0, -1.0, 0.5]]))
    assert idx.tolist() == [[1, 3, 2, 5, 0]]
    assert np.all(np.diff(p[0]) <= 0) and 0.5 < p[0, 0] < 1
    idx3, _ = top_k(np.zeros((2, 3)))
    assert idx3.shape == (2, 3)


def test_preprocess_grey_into_rgb_network_and_resizing():
    net = Network(AlexNet(3), "alexnet", 3, 3, 224, normalise="imagenet")
    x = net.preprocess(np.full((2, 8, 8, 1), 255, np.uint8))
    assert x.shape == (2, 3, 224, 224)
    torch.testing.assert_close(
        x[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    )


def test_trained_default_is_accurate_and_cached(loaded_digits):
    ws = loaded_digits.workspace
    assert loaded_digits.heldout_accuracy() > 0.93
    assert ws.features.shape == (1797, 128) and ws.top5_classes.shape == (1797, 5)
    assert np.allclose(ws.top5_scores.sum(1) <= 1.0001, True)
    from game.nets.build import build_network
    from game.nets.cache import cache_dir

    # Second build hits the cache: same weights, no training; the hit is a use of the entry
    # (least-recently-used eviction reads its time).
    models = list(cache_dir("models").glob("small_cnn-*.safetensors"))
    for path in models:
        os.utime(path, (1000.0, 1000.0))
    again = build_network(loaded_digits.scene, loaded_digits.dataset, ws.is_train, progress=False)
    assert any(path.stat().st_mtime > 1000.0 for path in models)
    for k, v in loaded_digits.network.module.state_dict().items():
        assert torch.equal(v, again.module.state_dict()[k])


def test_training_is_deterministic(loaded_digits):
    from game.nets.build import train_classifier

    data = loaded_digits.dataset
    mask = loaded_digits.workspace.is_train
    a, b = SmallCNN(10, 1), SmallCNN(10, 1)
    torch.manual_seed(0)
    a.load_state_dict(SmallCNN(10, 1).state_dict())
    b.load_state_dict(a.state_dict())
    train_classifier(a, data, mask, epochs=1, seed=3, progress=False)
    train_classifier(b, data, mask, epochs=1, seed=3, progress=False)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_first_use_training_starts_from_the_scenes_seed(loaded_digits, tmp_path, monkeypatch):
    """Two first launches of one scene train the same network, whatever the process's random
    state: the initial weights were drawn from it before the training seeded anything."""
    import copy

    from game.nets.build import build_network

    scene = copy.deepcopy(loaded_digits.scene)
    scene.network.train_epochs = 1
    nets = []
    for i in range(2):
        monkeypatch.setenv("LATENT_REACH_CACHE", str(tmp_path / f"cache{i}"))  # trains, no cache hit
        torch.manual_seed(100 + i)  # a different process state each time
        nets.append(
            build_network(scene, loaded_digits.dataset, loaded_digits.workspace.is_train, progress=False)
        )
    a, b = nets[0].module.state_dict(), nets[1].module.state_dict()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    assert list((tmp_path / "cache0" / "models").glob("*.safetensors"))  # it did train and store
    before = torch.random.get_rng_state()
    build_network(scene, loaded_digits.dataset, loaded_digits.workspace.is_train, progress=False)
    assert torch.equal(before, torch.random.get_rng_state())  # a cache hit leaves the process's RNG alone
