"""From a scene to a ready ``Network``: build, load weights or train at first use, cache."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from game.core.scene import Scene
from game.data.cache_files import stored, touch
from game.data.dataset import Dataset
from game.nets.architectures import build_module, input_size_for
from game.nets.cache import cache_dir, content_hash
from game.nets.network import Network
from game.nets.weights import load_weights, save_weights

# Bump when the training recipe changes so cached models are retrained.
TRAINING_RECIPE = "small-cnn-v1"


def build_network(scene: Scene, data: Dataset, is_train: np.ndarray, progress: bool = True) -> Network:
    """The network a scene names, with weights: from the scene's file, from the cache, or trained."""
    cfg = scene.network
    channels = input_channels(scene, data)

    def fresh() -> nn.Module:
        # The initial weights come from the scene's seed, not from whatever the process's random
        # state is: two first launches on one scene train the same network (they did not).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return build_module(cfg.arch, data.n_classes, channels)

    module = fresh()
    if cfg.weights:
        load_weights(module, scene.resolve_path(cfg.weights), allow_new_head=cfg.arch != "small_cnn")
    elif cfg.arch == "small_cnn":
        key = content_hash(
            TRAINING_RECIPE, data.images, data.labels, is_train, data.n_classes, cfg.train_epochs, cfg.seed
        )
        path = cache_dir("models") / f"small_cnn-{key}.safetensors"
        if path.is_file():
            try:
                load_weights(module, path)
                touch(path)  # a use: least-recently-used eviction keeps it
            except Exception:
                path.unlink(missing_ok=True)  # damaged cache entry: retrain
                module = fresh()
        if not path.is_file():
            train_classifier(
                module, data, is_train, epochs=cfg.train_epochs, seed=cfg.seed, progress=progress
            )
            try:
                save_weights(module, path)
                stored(path)  # counted against the cache's cap like the other entries
            except OSError:
                pass  # a full or read-only cache disk: the network trained, it is not kept
    return wrap_module(scene, data, module)


def input_channels(scene: Scene, data: Dataset) -> int:
    """Channels the network reads: the small CNN takes the images as they are, AlexNet RGB."""
    return data.images.shape[-1] if scene.network.arch == "small_cnn" else 3


def wrap_module(scene: Scene, data: Dataset, module: nn.Module, feature_layer: str = "") -> Network:
    """A ``Network`` around ``module`` (built by ``build_module`` for this scene and data), with the
    scene's input size and normalisation; ``feature_layer`` overrides the scene's."""
    cfg = scene.network
    normalise = "centred" if cfg.arch == "small_cnn" else "imagenet"
    return Network(
        module,
        cfg.arch,
        data.n_classes,
        input_channels(scene, data),
        input_size_for(cfg.arch, data.images.shape[1]),
        feature_layer or cfg.feature_layer,
        normalise,
    )


def train_classifier(
    module: nn.Module,
    data: Dataset,
    is_train: np.ndarray,
    epochs: int = 12,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    progress: bool = True,
) -> float:
    """Plain supervised training on the training split; deterministic for a given seed.

    Returns the seconds it took. Used for the small CNN at first use.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    channels = 1
    if hasattr(module, "features"):
        conv1 = module.get_submodule("features.conv1")
        assert isinstance(conv1, nn.Conv2d)
        channels = conv1.in_channels
    net = Network(module, "small_cnn", data.n_classes, channels, data.images.shape[1])
    x = net.preprocess(data.images[is_train])
    y = torch.from_numpy(data.labels[is_train])
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    module.train()
    bar = tqdm(range(epochs), desc="Training the small CNN", unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(module(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        bar.set_postfix(loss=f"{total / len(x):.3f}")
    opt.zero_grad(set_to_none=True)  # the trained network lives on: no gradients as large as it
    module.eval()
    return time.perf_counter() - start
