"""Attribution maps must point at the evidence: the quadrant the network actually reads."""

import numpy as np
import pytest
import torch
from synthetic import busy_image, quadrant_fraction, quadrant_network
from torch import nn

from game.explain.attribution import METHODS, Explainer, canonical_method, explain
from game.explain.pixels import PixelModel, image_to_tensor
from game.nets.network import Network


@pytest.mark.parametrize("quadrant", ["tl", "br"])
@pytest.mark.parametrize("method", METHODS)
def test_mass_concentrates_in_the_quadrant_the_network_reads(method, quadrant):
    net = quadrant_network(32, quadrant)
    image = busy_image(32)
    ex = Explainer(net).attribute(image, method)
    assert ex.heat.shape == (32, 32) and ex.heat.dtype == np.float32
    assert ex.heat.min() >= 0.0 and ex.heat.max() == pytest.approx(1.0)
    frac = quadrant_fraction(ex.heat, quadrant)
    # A map that ignored the model would hold ~25 % here.
    assert frac > 0.8, f"{method}: only {frac:.0%} of the mass in {quadrant}"


@pytest.mark.parametrize("method", METHODS)
def test_rgb_imagenet_network_with_resize_maps_at_image_resolution(method):
    # The network eats 32x32 but the image is 48x48 RGB: the map must be 48x48, still on the quadrant.
    net = quadrant_network(32, "tr", channels=3, normalise="imagenet")
    image = busy_image(48, channels=3)
    ex = Explainer(net).attribute(image, method)
    assert ex.heat.shape == (48, 48)
    # Occlusion's 6-px window straddling the quadrant's edge credits a rim outside it: looser bound.
    assert quadrant_fraction(ex.heat, "tr") > (0.7 if method == "occlusion" else 0.8)


def test_pixel_model_matches_network_preprocess():
    net = quadrant_network(32, "tl", channels=3, normalise="imagenet")
    image = busy_image(40, channels=3)
    with torch.no_grad():
        via_network = net.module(net.preprocess(image[None]))
        via_pixels = PixelModel(net)(image_to_tensor(image))
    torch.testing.assert_close(via_network, via_pixels, atol=1e-5, rtol=1e-5)
    grey = quadrant_network(32, "tl")
    img1 = busy_image(32)
    with torch.no_grad():
        torch.testing.assert_close(
            grey.module(grey.preprocess(img1[None])), PixelModel(grey)(image_to_tensor(img1))
        )


def test_target_defaults_to_prediction_and_can_be_chosen():
    net = quadrant_network(32, "tl")
    image = busy_image(32)
    predicted = int(net.classify(image[None])[0][0, 0])
    exp = Explainer(net)
    assert exp.attribute(image, "saliency").target == predicted
    other = (predicted + 1) % 3
    assert exp.attribute(image, "gradcam", target=other).target == other
    with pytest.raises(ValueError, match="out of range"):
        exp.attribute(image, "saliency", target=7)


def test_explaining_leaves_the_live_network_untouched():
    net = quadrant_network(32, "tl")
    before = {k: v.clone() for k, v in net.module.state_dict().items()}
    explain(net, busy_image(32), "guided")
    explain(net, busy_image(32), "gradcam")
    for k, v in net.module.state_dict().items():
        assert torch.equal(v, before[k])
    for m in net.module.modules():
        assert not m._forward_hooks and not m._backward_hooks
    assert all(p.requires_grad for p in net.module.parameters())
    assert all(p.grad is None for p in net.module.parameters())


def test_guided_backprop_survives_inplace_relus():
    net = quadrant_network(32, "tl")
    net.module.relu1 = nn.ReLU(inplace=True)
    net.module.relu2 = nn.ReLU(inplace=True)
    ex = Explainer(net).attribute(busy_image(32), "guided")
    assert quadrant_fraction(ex.heat, "tl") > 0.8
    assert net.module.relu1.inplace  # the copy was patched, not the original


def test_method_names():
    assert canonical_method("Grad-CAM") == "gradcam"
    assert canonical_method("integrated_gradients") == "ig"
    with pytest.raises(ValueError, match="unknown explanation method"):
        canonical_method("lime")


def test_smoothgrad_noise_is_scaled_to_the_image_range():
    # Same map shape whether pixels span 0..255 or only 0..64: noise follows the range.
    net = quadrant_network(32, "tl")
    image = busy_image(32)
    dim = (image // 4).astype(np.uint8)
    for img in (image, dim):
        ex = Explainer(net).attribute(img, "smoothgrad")
        assert quadrant_fraction(ex.heat, "tl") > 0.8


def test_digits_network_explains_every_method(loaded_digits):
    net: Network = loaded_digits.network
    image = loaded_digits.workspace.images[0]
    exps = Explainer(net).attribute_many(image, METHODS)
    assert [e.method for e in exps] == list(METHODS)
    pred = int(loaded_digits.workspace.top5_classes[0, 0])
    for e in exps:
        assert e.heat.shape == (8, 8) and e.target == pred
        assert np.isfinite(e.heat).all() and e.heat.max() > 0


@pytest.mark.parametrize("method", ["smoothgrad", "ig"])
def test_bf16_option_gives_nearly_the_same_map(method):
    net = quadrant_network(32, "tl")
    image = busy_image(32)
    ex = Explainer(net)
    a = ex.attribute(image, method).heat
    b = ex.attribute(image, method, bf16=True).heat
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert quadrant_fraction(b, "tl") > 0.8
