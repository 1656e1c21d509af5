"""Layer switch: lay the same cards out by the features of another layer (the DeCAF figure).

An early convolution groups cards by strokes and textures, the penultimate layer by class; seeing
the same cards rearrange between the two is the point. The new layout is fitted afresh (the
neighbourhoods of another layer are genuinely different; warm-starting from the old layout would
hide that) and then rotated, scaled and shifted onto the current positions (orthogonal
Procrustes, no mirroring) inside the *same* world transform, so the tween is a readable
rearrangement rather than a spin of the whole world.

The result is a ``LayerChanged`` event: the workspace applies it, the world tweens, the recorder
writes it like any other event. Runs on the worker (inference plus a t-SNE fit: seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from game.core.events import LayerChanged
from game.core.workspace import Workspace
from game.layout.projector import LayoutState, Projector, align
from game.nets.architectures import ALEXNET_ALIASES, AlexNet, default_feature_layer, resolve_layer
from game.nets.network import Network

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def layer_choices(module: nn.Module) -> list[str]:
    """The layers worth switching between, early to late: each convolution block's output
    (its pooling layer, or the convolutions when there is no pooling) and the penultimate layer.

    Module names (as ``Network.with_layer`` takes them); ``layer_label`` gives friendlier ones.
    """
    leaves = [(n, m) for n, m in module.named_modules() if n and not list(m.children())]
    # A pool right after another pool (AlexNet's avgpool after pool5) shows the same grouping.
    pools = [
        n
        for i, (n, m) in enumerate(leaves)
        if isinstance(m, _POOLS) and not (i and isinstance(leaves[i - 1][1], _POOLS))
    ]
    if not pools:
        pools = [n for n, m in leaves if isinstance(m, nn.Conv2d)]
    choices = list(pools)
    try:
        penultimate = default_feature_layer(module)
    except Exception:  # no Linear layer: conv blocks only
        penultimate = ""
    if penultimate and penultimate not in choices:
        choices.append(penultimate)
    return choices


def layer_label(module: nn.Module, name: str) -> str:
    """A name for people: AlexNet's paper names (pool1, fc7) where they exist."""
    if isinstance(module, AlexNet):
        for alias, target in ALEXNET_ALIASES.items():
            if target == name:
                return alias
    return name


def next_layer(module: nn.Module, current: str) -> str:
    """The choice after ``current`` (wrapping round), for a key that cycles layers."""
    choices = layer_choices(module)
    if not choices:
        return current
    name, _ = resolve_layer(module, current) if current else ("", None)
    if name not in choices:
        return choices[0]
    return choices[(choices.index(name) + 1) % len(choices)]


@dataclass
class LayerSwitch:
    """What a layer switch produced: the event to post, plus the state its owner keeps.

    ``layout`` uses the previous layout's world transform, so ``Projector.update`` (fine-tunes
    after the switch) can warm-start from it; ``network`` shares the weights of the old one.
    """

    event: LayerChanged
    network: Network
    layout: LayoutState
    seconds: float = 0.0


def switch_layer(
    network: Network,
    workspace: Workspace,
    projector: Projector,
    layer: str,
    previous: LayoutState | None = None,
    batch_size: int = 256,
) -> LayerSwitch:
    """Features of ``layer`` for every card, a fresh layout aligned to where the cards are now.

    ``workspace`` is only read (images and current positions): call this on a copy or snapshot
    when running on the worker. Without ``previous`` the new layout keeps its own world
    transform (still aligned to the current positions).
    """
    import time

    start = time.perf_counter()
    tapped = network.with_layer(layer)
    features = tapped.infer(workspace.images, batch_size=batch_size).features
    fresh = projector.fit(features)
    current = np.asarray(workspace.positions, dtype=np.float64)
    frame = previous if previous is not None else fresh
    layout = frame.successor(align(fresh.embedding, frame.to_raw(current)), fresh.pca_dims)
    layout.seconds = time.perf_counter() - start
    event = LayerChanged(tapped.feature_layer, features, layout.positions.astype(np.float32))
    return LayerSwitch(event, tapped, layout, layout.seconds)


def switch_loaded_layer(loaded, layer: str) -> LayerSwitch:  # type: ignore[no-untyped-def]
    """``switch_layer`` for a ``LoadedScene`` (read-only: apply ``.event`` and keep the rest)."""
    return switch_layer(
        loaded.models.network(),
        loaded.workspace,
        loaded.projector,
        layer,
        previous=loaded.models.layout(),
        batch_size=loaded.scene.network.batch_size,
    )
