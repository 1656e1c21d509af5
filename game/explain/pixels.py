"""A differentiable view of a ``Network`` that eats image pixels instead of network inputs.

Explanations should be drawn over the image the person sees, at its own resolution. Rather than
attributing at the network's input (224 px for AlexNet, whatever the image size) and resizing the
map back, the network's preprocessing (channel conversion, resize, normalisation) is put *inside*
the model: captum then differentiates through it and every pixel of the image gets its own
attribution. It also makes noise and baselines live in one intuitive unit: pixel intensity 0..1.

This mirrors ``Network.preprocess`` step by step (after its ``/ 255``); a test checks the two
agree so they cannot drift apart silently.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from game.nets.network import IMAGENET_MEAN, IMAGENET_STD, Network


class PixelModel(nn.Module):
    """``forward(x)`` with ``x`` float ``(N, C_img, H, W)`` in [0, 1] -> the network's logits."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.net = network.module
        self.channels = network.channels
        self.input_size = network.input_size
        self.normalise = network.normalise

    def to_network_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:
                lum = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
                x = (x * lum).sum(1, keepdim=True)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        if self.normalise == "imagenet" and self.channels == 3:
            mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
            return (x - mean) / std
        return x * 2.0 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_network_input(x))


def neutral_pixel(network: Network, channels: int) -> torch.Tensor:
    """The pixel value (per image channel) that the network sees as zero input: a neutral fill."""
    if network.normalise == "imagenet" and network.channels == 3 and channels == 3:
        return torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return torch.full((1, channels, 1, 1), 0.5)


def explainable_copy(network: Network) -> Network:
    """A private copy fit for attribution on a worker thread.

    Why a copy: captum attaches hooks to modules (guided backprop, Grad-CAM) and gradients flow
    through them; doing that on the live network while the frame loop classifies with it would be
    a race. The copy also has gradients switched off for parameters (we only want gradients with
    respect to the input: cheaper, and no ``.grad`` left on weights), dropout off (eval mode) and
    every in-place ReLU made out-of-place (guided backprop overrides ReLU's backward, which an
    in-place ReLU breaks).
    """
    other = copy.copy(network)
    other.module = copy.deepcopy(network.module).eval()
    for p in other.module.parameters():
        p.requires_grad_(False)
    for m in other.module.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.Hardtanh)) and getattr(
            m, "inplace", False
        ):
            m.inplace = False
    return other


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, C)`` (or ``(H, W)``) -> float ``(1, C, H, W)`` in [0, 1]."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (H, W, C), got {img.dtype} {img.shape}")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)
