"""Class models: an input optimised to maximise one class's score (Simonyan et al., 2014).

    x* = argmax_x  S_k(x) - lambda_l2 ||x||^2 - lambda_tv TV(x)

Without a regulariser the optimum is high-frequency noise that no person reads as the class, so
we follow the usual recipe for natural-looking results: L2 decay, total variation, random jitter
(rolling the image a few pixels each step) and a light Gaussian blur every few steps. The
optimisation runs in the network's input space (normalised, ``input_size`` square), clamped to
what real pixels can produce, and the result comes back as a uint8 image shaped like the
dataset's images, so the world can show it like any card (on a centroid sphere).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from game.explain.pixels import explainable_copy
from game.nets.network import IMAGENET_MEAN, IMAGENET_STD, Network


@dataclass(frozen=True)
class ClassModelOptions:
    steps: int = 150
    lr: float = 0.05
    l2: float = 20.0  # on the mean squared distance from the prior (normalised input units)
    tv: float = 2.0  # on the mean absolute neighbour difference
    jitter: int = 0  # pixels; 0: input_size / 16 (at least 1)
    blur_every: int = 10
    blur_sigma: float = 0.5  # network-input pixels; decays to a third by the last step
    init_noise: float = 0.05  # std of the start's noise in normalised units
    seed: int = 0


@dataclass
class ClassModel:
    target: int
    image: np.ndarray  # uint8 (H, W, C) like the dataset's images
    start: np.ndarray = field(repr=False)  # the start image, uint8, same shape
    score_start: float = 0.0  # the class's logit for the start image (through Network.infer)
    score_end: float = 0.0  # ... and for the result
    seconds: float = 0.0


def class_model(
    network: Network,
    target: int,
    image_shape: tuple[int, int, int],
    options: ClassModelOptions | None = None,
    copy: bool = True,
    prior: np.ndarray | None = None,
) -> ClassModel:
    """Optimise an input for class ``target``; ``image_shape`` is the dataset's ``(H, W, C)``.

    ``prior`` (uint8, ``image_shape``) is where the search starts and what the L2 term pulls
    towards; pass the dataset's mean image so that "natural" means "like the data" (black
    background for digits) rather than mid grey. Without it the prior is the network's zero input.

    Runs on a private copy of the network (``copy=False`` when the caller already has one, e.g.
    an ``Explainer``'s), so it is safe on the worker thread.
    """
    t0 = time.perf_counter()
    opts = options or ClassModelOptions()
    if not 0 <= int(target) < network.n_classes:
        raise ValueError(f"target class {target} is out of range 0..{network.n_classes - 1}")
    net = explainable_copy(network) if copy else network
    module = net.module
    c, s = net.channels, net.input_size
    lo, hi = _input_range(net)
    gen = torch.Generator().manual_seed(opts.seed)
    centre = torch.zeros((1, c, s, s)) if prior is None else net.preprocess(np.asarray(prior, np.uint8)[None])
    start = torch.maximum(
        torch.minimum(centre + torch.randn((1, c, s, s), generator=gen) * opts.init_noise, hi), lo
    )
    x = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=opts.lr)
    jitter = opts.jitter or max(1, s // 16)
    for step in range(opts.steps):
        dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
        shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        score = module(shifted)[0, int(target)]
        loss = -score + opts.l2 * (x - centre).pow(2).mean() + opts.tv * _total_variation(x)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            if opts.blur_every and (step + 1) % opts.blur_every == 0 and step + 1 < opts.steps:
                sigma = opts.blur_sigma * (1.0 - 2.0 / 3.0 * step / max(1, opts.steps - 1))
                x.copy_(_gaussian_blur(x, sigma))
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    image = _to_image(net, x.detach(), image_shape)
    start_img = _to_image(net, start, image_shape)
    logits = net.infer(np.stack([start_img, image])).logits[:, int(target)]
    return ClassModel(
        int(target), image, start_img, float(logits[0]), float(logits[1]), time.perf_counter() - t0
    )


def mean_image(images: np.ndarray, max_images: int = 512) -> np.ndarray:
    """The mean of (an even sample of) the dataset's images, uint8: the natural prior."""
    imgs = np.asarray(images)
    step = max(1, len(imgs) // max_images)
    return np.round(imgs[::step].mean(axis=0)).astype(np.uint8)


def _input_range(net: Network) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds of the normalised input that real pixels (0..1) can produce."""
    if net.normalise == "imagenet" and net.channels == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (0 - mean) / std, (1 - mean) / std
    shape = (1, net.channels, 1, 1)
    return torch.full(shape, -1.0), torch.full(shape, 1.0)


def _to_pixels(net: Network, x: torch.Tensor) -> torch.Tensor:
    """Normalised input -> pixel intensities in [0, 1] (inverse of the network's normalisation)."""
    if net.normalise == "imagenet" and net.channels == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x * std + mean).clamp(0, 1)
    return ((x + 1.0) / 2.0).clamp(0, 1)


def _to_image(net: Network, x: torch.Tensor, image_shape: tuple[int, int, int]) -> np.ndarray:
    h, w, c = image_shape
    p = _to_pixels(net, x)
    if p.shape[-2:] != (h, w):
        mode = "area" if h <= p.shape[-2] and w <= p.shape[-1] else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        p = F.interpolate(p, size=(h, w), mode=mode, **kwargs)
    if p.shape[1] != c:
        if c == 1:
            lum = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            p = (p * lum).sum(1, keepdim=True)
        else:
            p = p.expand(-1, c, -1, -1)
    arr = (p[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.05:
        return x
    radius = max(1, int(np.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kx, groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), ky, groups=c)
