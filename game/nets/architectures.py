"""Network architectures: the small CNN of the embedded default, AlexNet, and torchvision's zoo.

AlexNet's parameter names follow torchvision's (``features.0.weight`` ... ``classifier.6.bias``)
so that a user's torchvision AlexNet weights file loads as is, without torchvision installed.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from game.core.errors import UserError

# Friendly names for AlexNet's layers (the names used in papers) -> torchvision module names.
ALEXNET_ALIASES = {
    "conv1": "features.1",
    "pool1": "features.2",
    "conv2": "features.4",
    "pool2": "features.5",
    "conv3": "features.7",
    "conv4": "features.9",
    "conv5": "features.11",
    "pool5": "features.12",
    "fc6": "classifier.2",
    "fc7": "classifier.5",
    "fc8": "classifier.6",
}


class SmallCNN(nn.Module):
    """Three convolutions and two fully connected layers; trains on digits in seconds.

    Adaptive pooling makes it work for any input size >= 8 pixels, so the same network serves
    the 8x8 digits and small image folders.
    """

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, width, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(width, 2 * width, 3, padding=1),
                relu2=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv3=nn.Conv2d(2 * width, 2 * width, 3, padding=1),
                relu3=nn.ReLU(),
                pool2=nn.AdaptiveAvgPool2d(4),
            )
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(2 * width * 16, hidden),
                relu4=nn.ReLU(),
                dropout=nn.Dropout(0.2),
                fc2=nn.Linear(hidden, n_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class AlexNet(nn.Module):
    """AlexNet with torchvision's module layout and parameter names (ReLUs not in-place, so
    guided backpropagation and feature hooks see clean tensors)."""

    def __init__(self, n_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def torchvision_available() -> bool:
    """True when torchvision imports (it does not with the CPU torch build on these machines)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        return False
    return True


def build_module(arch: str, n_classes: int, in_channels: int) -> nn.Module:
    """A fresh (untrained) network for ``arch``."""
    if arch == "small_cnn":
        return SmallCNN(n_classes, in_channels)
    if arch == "alexnet":
        return AlexNet(n_classes)
    if arch.startswith("torchvision:"):
        name = arch.split(":", 1)[1]
        if not torchvision_available():
            raise UserError(
                f"network.arch = {arch!r} needs torchvision, which cannot be imported here; "
                "use 'alexnet' (torchvision-compatible weights) or 'small_cnn'"
            )
        import torchvision.models as tvm

        try:
            return tvm.get_model(name, weights=None, num_classes=n_classes)
        except (ValueError, KeyError) as exc:
            raise UserError(f"torchvision has no model {name!r}: {exc}") from None
    raise UserError(f"unknown network architecture {arch!r}")


def input_size_for(arch: str, image_size: int) -> int:
    """Side of the square the network is fed: AlexNet and the zoo expect 224 pixels."""
    return image_size if arch == "small_cnn" else 224


def default_feature_layer(module: nn.Module) -> str:
    """The penultimate layer: the last leaf module before the final Linear layer."""
    leaves = [(n, m) for n, m in module.named_modules() if n and not list(m.children())]
    last_linear = max((i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)), default=None)
    if last_linear is None or last_linear == 0:
        raise UserError("cannot find a penultimate layer: name one with network.feature_layer")
    for i in range(last_linear - 1, -1, -1):
        if not isinstance(leaves[i][1], nn.Dropout):
            return leaves[i][0]
    return leaves[last_linear - 1][0]


def last_conv_layer(module: nn.Module) -> str:
    """Name of the last Conv2d (Grad-CAM's default target)."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise UserError("the network has no convolutional layer")
    return names[-1]


def resolve_layer(module: nn.Module, name: str) -> tuple[str, nn.Module]:
    """Look up a module by name or AlexNet alias; a clear error lists the choices."""
    modules = dict(module.named_modules())
    if isinstance(module, AlexNet) and name in ALEXNET_ALIASES:
        name = ALEXNET_ALIASES[name]
    if name not in modules or not name:
        choices = [n for n in modules if n]
        if isinstance(module, AlexNet):
            choices = list(ALEXNET_ALIASES) + choices
        raise UserError(f"no layer named {name!r}; choose one of: {', '.join(choices)}")
    return name, modules[name]
