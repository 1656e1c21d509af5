"""``Network.infer`` writes its batches into preallocated arrays (issue 17): the result must be
the very floats the plain join of per-batch passes gives."""

import numpy as np
import torch

from game.nets.architectures import AlexNet
from game.nets.network import Network, top_k


def test_infer_equals_the_joined_batches_bit_for_bit():
    torch.manual_seed(0)
    network = Network(AlexNet(n_classes=7), "alexnet", 7, 3, 64, "fc7", "imagenet")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(11, 64, 64, 3), dtype=np.uint8)
    out = network.infer(images, batch_size=4)  # 4 + 4 + 3: the last batch is short
    feats, logits = [], []
    with torch.no_grad():
        for s in range(0, len(images), 4):
            lg, f = network.forward_with_features(network.preprocess(images[s : s + 4]))
            feats.append(f.float().numpy())
            logits.append(lg.float().numpy())
    want_feats = np.concatenate(feats).astype(np.float32)
    want_logits = np.concatenate(logits).astype(np.float32)
    assert out.features.dtype == np.float32 and out.features.shape == (11, 4096)
    assert out.features.tobytes() == want_feats.tobytes()
    assert out.logits.dtype == np.float32 and out.logits.tobytes() == want_logits.tobytes()
    classes, scores = top_k(want_logits)
    assert np.array_equal(out.top5_classes, classes) and out.top5_scores.tobytes() == scores.tobytes()
    assert np.abs(want_feats).sum() > 0  # a real pass, not zeros on both sides
