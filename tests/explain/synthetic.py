"""A tiny network whose decision provably depends on one quadrant of the image only.

conv1 -> ReLU -> multiply by a fixed quadrant mask -> conv2 (no bias) -> ReLU -> mean -> linear.
Everything outside the quadrant is zeroed before the last convolution, so the class scores are a
function of the quadrant's pixels alone (plus a one-pixel rim that conv1's 3x3 window reads).
A correct attribution method must put (nearly) all of its mass there, whatever the image shows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from game.nets.network import Network


class QuadrantNet(nn.Module):
    def __init__(
        self, size: int, quadrant: str, channels: int = 1, n_classes: int = 3, seed: int = 0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        mask = torch.zeros(1, 1, size, size)
        h = size // 2
        rows = slice(0, h) if quadrant[0] == "t" else slice(h, size)
        cols = slice(0, h) if quadrant[1] == "l" else slice(h, size)
        mask[..., rows, cols] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.conv1(x)) * self.mask
        a = self.relu2(self.conv2(a))
        return self.fc(a.mean((2, 3)))


def quadrant_network(
    size: int = 32,
    quadrant: str = "tl",
    channels: int = 1,
    image_size: int | None = None,
    normalise: str = "centred",
) -> Network:
    """``size`` is the network's input side; images may be another size (resized inside)."""
    module = QuadrantNet(size, quadrant, channels)
    return Network(module, "small_cnn", 3, channels, size, feature_layer="relu2", normalise=normalise)


def quadrant_fraction(heat: np.ndarray, quadrant: str) -> float:
    h, w = heat.shape
    rows = slice(0, h // 2) if quadrant[0] == "t" else slice(h // 2, h)
    cols = slice(0, w // 2) if quadrant[1] == "l" else slice(w // 2, w)
    total = float(heat.sum())
    return float(heat[rows, cols].sum()) / total if total > 0 else 0.0


def busy_image(size: int, channels: int = 1, seed: int = 1) -> np.ndarray:
    """Content everywhere (random blobs on noise), so a map that follows the image, not the
    model, would spread over all four quadrants."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, channels)).astype(np.float32)
    img = (
        0.5 * img + 0.5 * rng.integers(0, 2, (size // 4, size // 4, channels)).repeat(4, 0).repeat(4, 1) * 255
    )
    return np.clip(img, 0, 255).astype(np.uint8)
