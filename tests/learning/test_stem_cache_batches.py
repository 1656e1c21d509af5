"""``compute_stem_cache`` writes its batches into one preallocated tensor (issue 17): the cache
must hold exactly the floats the plain join of the captured batches gives."""

import numpy as np
import pytest
import torch

from game.learning.stem import compute_stem_cache
from game.nets.architectures import AlexNet
from game.nets.network import Network


def _joined_head_inputs(network: Network, images: np.ndarray, start: int, batch: int) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    head = network.module.classifier
    handle = head[start].register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach()))
    try:
        with torch.no_grad():
            for s in range(0, len(images), batch):
                network.module(network.preprocess(images[s : s + batch]))
    finally:
        handle.remove()
    return torch.cat(captured).float().contiguous()


@pytest.mark.parametrize("head_layers", [1, 2])
def test_stem_cache_equals_the_joined_batches_bit_for_bit(head_layers: int):
    torch.manual_seed(0)
    network = Network(AlexNet(n_classes=6), "alexnet", 6, 3, 64, "fc7", "imagenet")
    images = np.random.default_rng(2).integers(0, 256, size=(9, 64, 64, 3), dtype=np.uint8)
    stem = compute_stem_cache(network, images, head_layers, batch_size=4)  # 4 + 4 + 1
    if head_layers == 1:  # fc7 is not made by the last layer alone: no cache
        assert stem is None
        return
    assert stem is not None
    want = _joined_head_inputs(network, images, stem.start, 4)
    assert stem.inputs.dtype == torch.float32 and stem.inputs.is_contiguous()
    assert stem.inputs.shape == (9, 4096)
    assert torch.equal(stem.inputs, want) and float(want.abs().sum()) > 0
