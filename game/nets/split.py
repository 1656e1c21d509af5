"""Where a network splits into a frozen stem and a trainable head, and the head run on its own.

A head-only fine-tune trains ``module.classifier[start:]`` (the last ``head_layers`` Linear
layers); everything before is the stem, whose outputs never change. The same split lets the
features pass and the fine-tune share one pass of the trunk (issue 17): the features pass keeps
the stem's outputs (``game.nets.stem_store``), or the features are the head run over stored
stem outputs (``infer_head``), instead of running the convolutions over every image twice.

Lives in ``game.nets`` (not ``game.learning``) because the features pass, the features cache and
the fine-tune's stem cache all need it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from game.data.cache_files import content_hash
from game.nets.network import BatchOutputs, Inference, Network


def classifier(module: nn.Module) -> nn.Sequential | None:
    """``module.classifier`` when it is a Sequential (the networks that split), else None."""
    head = getattr(module, "classifier", None)
    return head if isinstance(head, nn.Sequential) else None


def head_start(module: nn.Module, head_layers: int) -> int | None:
    """Index in ``module.classifier`` of the first trainable layer (None: no classifier Sequential)."""
    head = classifier(module)
    if head is None:
        return None
    linear = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
    if not linear:
        return None
    return linear[-min(head_layers, len(linear))]


def head_multiply_adds(module: nn.Module, head_layers: int) -> int:
    """Multiply-adds per image of the head's linear layers (``head_start`` on): what one more
    card in a training step costs forward (about a third of its step with the backward pass).
    SmallCNN's head: 132 k; AlexNet's fc7 + fc8: 16.8 M. 0 without a classifier Sequential."""
    start = head_start(module, head_layers)
    head = classifier(module)
    if start is None or head is None:
        return 0
    return sum(m.in_features * m.out_features for m in list(head)[start:] if isinstance(m, nn.Linear))


def feature_layer_in_head(network: Network, start: int) -> bool:
    """True when the feature layer is part of ``classifier[start:]`` (so the head makes it)."""
    head = classifier(network.module)
    if head is None or not network.feature_layer.startswith("classifier."):
        return False
    name = network.feature_layer.split(".", 1)[1]
    keys = list(head._modules)
    return name in keys and keys.index(name) >= start


def split_point(network: Network, head_layers: int) -> int | None:
    """The head's start when the network splits there with the feature layer in the head (what a
    stem cache needs); None otherwise."""
    start = head_start(network.module, head_layers)
    if start is None or not feature_layer_in_head(network, start):
        return None
    return start


def head_parameter_names(module: nn.Module, start: int) -> list[str]:
    """Full names of the parameters of ``classifier[start:]``."""
    head = classifier(module)
    assert head is not None
    names = list(head._modules)[start:]
    return [f"classifier.{n}.{p}" for n in names for p, _ in head._modules[n].named_parameters()]


def stem_fingerprint(network: Network, start: int) -> str:
    """What the stem's outputs depend on: every tensor outside ``classifier[start:]``, the split
    point and the preprocessing. The head's weights are not in it, so a head-only fine-tune (or
    a head trained after the stem pass) leaves the stored stem outputs valid."""
    head = classifier(network.module)
    assert head is not None
    names = list(head._modules)[start:]
    head_prefixes = tuple(f"classifier.{n}." for n in names)
    state = network.module.state_dict()
    keys = sorted(k for k in state if not k.startswith(head_prefixes))
    tensors = [state[k].detach().cpu().contiguous().numpy() for k in keys]
    return content_hash(
        "stem-v1",
        network.arch,
        network.input_size,
        network.channels,
        network.normalise,
        start,
        [type(m).__name__ for m in head],
        keys,
        *tensors,
    )


@torch.no_grad()
def infer_head(
    network: Network, stem_outputs: np.ndarray | torch.Tensor, start: int, batch_size: int = 256
) -> Inference:
    """``network.infer`` computed from the stem's outputs: only ``classifier[start:]`` runs.

    The head's layers see the same input rows in the same batches as inside the whole network's
    pass, so the features and logits are the same floats (tested against ``Network.infer``).
    """
    head = classifier(network.module)
    assert head is not None
    network.module.eval()
    layers = list(head)[start:]
    _, feature = next((n, m) for n, m in network.module.named_modules() if n == network.feature_layer)
    n = len(stem_outputs)
    if n == 0:
        raise ValueError("no stem outputs to run the head on")
    out = BatchOutputs(n)
    for s in range(0, n, batch_size):
        x = torch.as_tensor(np.asarray(stem_outputs[s : s + batch_size]), dtype=torch.float32)
        out.put(s, *run_capturing(x, layers, feature))
    return out.inference()


def run_capturing(
    x: torch.Tensor, layers: list[nn.Module], feature_layer: nn.Module, captured: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``layers`` run on ``x``: the output and the feature layer's output, flattened (the head's
    pass here and in the fine-tune's re-inference). ``captured``: the feature layer's output when
    that layer ran before these."""
    for m in layers:
        x = m(x)
        if m is feature_layer:
            captured = x
    assert captured is not None, "the feature layer is not in the head"
    return x, captured.flatten(1)
