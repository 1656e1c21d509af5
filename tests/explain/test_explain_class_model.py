"""Class models (Simonyan et al.): the optimised image must score higher for its class."""

import numpy as np

from game.explain.class_model import ClassModelOptions, class_model, mean_image


def test_class_model_raises_the_class_score_on_digits(loaded_digits):
    net = loaded_digits.network
    images = loaded_digits.workspace.images
    shape = images.shape[1:]
    prior = mean_image(images)
    for target in (3, 7):
        cm = class_model(net, target, shape, ClassModelOptions(steps=60), prior=prior)
        np.testing.assert_allclose(cm.start.astype(int), prior.astype(int), atol=32)  # starts near the prior
        assert cm.image.shape == shape and cm.image.dtype == np.uint8
        assert cm.score_end > cm.score_start + 1.0, (target, cm.score_start, cm.score_end)
        logits = net.infer(cm.image[None]).logits[0]
        assert int(np.argmax(logits)) == target
        assert cm.image.std() > 0  # a picture, not a flat field


def test_class_model_on_an_rgb_network_returns_the_dataset_shape():
    from synthetic import quadrant_network

    net = quadrant_network(32, "tl", channels=3, normalise="imagenet")
    # Random weights give tiny logits: a light regulariser, else the prior wins outright.
    cm = class_model(net, 1, (16, 16, 1), ClassModelOptions(steps=20, l2=1e-3, tv=1e-3))
    assert cm.image.shape == (16, 16, 1) and cm.start.shape == (16, 16, 1)
    assert cm.score_end > cm.score_start
