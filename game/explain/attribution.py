"""Heat maps for one image: saliency, SmoothGrad, Integrated Gradients, Guided Backprop, Grad-CAM,
occlusion - one interface over captum's methods.

``Explainer(network).attribute(image, "gradcam", target=3)`` returns an ``Explanation`` whose
``heat`` is an ``(H, W)`` float32 map in [0, 1] at the *image's* resolution, ready for
``game.explain.render.overlay``. Attribution happens in pixel space (see ``pixels.PixelModel``), so
the maps line up with the image whatever size the network is fed.

Everything here is plain computation on a private copy of the network: no global state, safe to
run on the worker thread while the frame loop keeps using the live network.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from game.explain.pixels import PixelModel, explainable_copy, image_to_tensor, neutral_pixel
from game.nets.architectures import last_conv_layer, resolve_layer
from game.nets.network import Network

METHODS: tuple[str, ...] = ("saliency", "smoothgrad", "ig", "guided", "gradcam", "occlusion")
METHOD_TITLES = {
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "ig": "Integrated Gradients",
    "guided": "Guided Backprop",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
}
# captum warns on every guided-backprop call that it hooks ReLUs (and removes the hooks after):
# expected here, and the explainer works on its own copy of the network anyway.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)

ALIASES = {
    "integrated_gradients": "ig",
    "integratedgradients": "ig",
    "guided_backprop": "guided",
    "guidedbackprop": "guided",
    "grad-cam": "gradcam",
    "grad_cam": "gradcam",
    "gradient": "saliency",
    "smooth": "smoothgrad",
}


@dataclass(frozen=True)
class AttributionOptions:
    """Per-method settings. Defaults are what the panel uses; the CLI exposes the main ones.

    ``smoothgrad_noise`` is a fraction of the image's value range (Smilkov et al. suggest
    10-20 %): captum's ``stdevs`` is in input units, so it is scaled here. Baselines are
    ``"black"`` (all zeros: "no ink", what IG is usually run against) or ``"neutral"`` (the pixel
    the network reads as zero input, i.e. mid grey or the ImageNet mean: occluding with it
    removes information without adding a dark blob).
    """

    smoothgrad_samples: int = 25
    smoothgrad_noise: float = 0.15
    smoothgrad_batch: int = 25
    ig_steps: int = 32
    ig_baseline: str = "black"
    occlusion_window: int = 0  # 0: about 1/8 of the image's shorter side (at least 2 px)
    occlusion_stride: int = 0  # 0: half the window
    occlusion_baseline: str = "neutral"
    occlusion_batch: int = 64
    gradcam_layer: str = ""  # "": the last convolution
    clip_percentile: float = 99.5  # gradient maps: the top 0.5 % saturate instead of dominating
    seed: int = 0
    # SmoothGrad and IG run many passes; bfloat16 autocast makes them ~1.5x faster on CPUs with
    # AVX-512 BF16 (measured in benchmarks/bench_explain.py) and a heat map does not need fp32.
    bf16: bool = False


@dataclass
class Explanation:
    """One heat map and how it was made."""

    method: str
    target: int
    heat: np.ndarray  # (H, W) float32 in [0, 1]
    attribution: np.ndarray = field(repr=False)  # captum's raw output, squeezed: (C, H, W) or (h, w)
    seconds: float = 0.0


def canonical_method(name: str) -> str:
    """Accept the CLI spellings (``gradcam``, ``grad-cam``, ``ig`` ...) and return the key."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown explanation method {name!r}; choose one of: {', '.join(METHODS)}")
    return key


class Explainer:
    """All methods over one private copy of a network.

    Build it once per model version (copying AlexNet takes a while) and call ``attribute`` per
    request. Not thread-safe by itself: use one ``Explainer`` per thread (the worker has one).
    """

    def __init__(
        self, network: Network, options: AttributionOptions | None = None, copy: bool = True
    ) -> None:
        self.network = explainable_copy(network) if copy else network
        self.options = options or AttributionOptions()
        self.model = PixelModel(self.network).eval()
        layer_name = self.options.gradcam_layer or last_conv_layer(self.network.module)
        self.gradcam_layer_name, self.gradcam_layer = resolve_layer(self.network.module, layer_name)

    # --- prediction ----------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, image: np.ndarray) -> np.ndarray:
        return self.model(image_to_tensor(image))[0].numpy()

    def _target(self, x: torch.Tensor, target: int | None) -> int:
        n = self.network.n_classes
        if target is None:
            with torch.no_grad():
                return int(self.model(x)[0].argmax())
        target = int(target)
        if not 0 <= target < n:
            raise ValueError(f"target class {target} is out of range 0..{n - 1}")
        return target

    # --- attribution ---------------------------------------------------------------------------

    def attribute(
        self, image: np.ndarray, method: str = "gradcam", target: int | None = None, **overrides: Any
    ) -> Explanation:
        """The ``method``'s heat map for ``image`` (uint8 H, W, C) and class ``target``
        (default: the predicted class). ``overrides`` replace fields of the options for this call."""
        t0 = time.perf_counter()
        method = canonical_method(method)
        opts = replace(self.options, **overrides) if overrides else self.options
        x = image_to_tensor(image)
        target = self._target(x, target)
        fast = opts.bf16 and method in ("smoothgrad", "ig")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            raw = getattr(self, f"_{method}")(x, target, opts)
        raw = raw.float()
        heat = _to_heat(method, raw, x.shape[-2:], opts.clip_percentile)
        return Explanation(method, target, heat, raw, time.perf_counter() - t0)

    def attribute_many(
        self, image: np.ndarray, methods: list[str] | tuple[str, ...], target: int | None = None
    ) -> list[Explanation]:
        """Several methods for the same image and class (the side-by-side view)."""
        x = image_to_tensor(image)
        target = self._target(x, target)
        return [self.attribute(image, m, target) for m in methods]

    def _saliency(self, x: torch.Tensor, target: int, opts: AttributionOptions) -> torch.Tensor:
        return Saliency(self.model).attribute(x.requires_grad_(), target=target, abs=True)

    def _smoothgrad(self, x: torch.Tensor, target: int, opts: AttributionOptions) -> torch.Tensor:
        span = float(x.max() - x.min()) or 1.0  # captum's stdevs is in input units: scale to range
        torch.manual_seed(opts.seed)  # the worker has its own thread but the RNG is global: seed per call
        tunnel = NoiseTunnel(Saliency(self.model))
        return tunnel.attribute(
            x.requires_grad_(),
            nt_type="smoothgrad",
            nt_samples=opts.smoothgrad_samples,
            nt_samples_batch_size=opts.smoothgrad_batch,
            stdevs=opts.smoothgrad_noise * span,
            target=target,
            abs=False,
        )

    def _ig(self, x: torch.Tensor, target: int, opts: AttributionOptions) -> torch.Tensor:
        baseline = self._baseline(x, opts.ig_baseline)
        return IntegratedGradients(self.model).attribute(
            x, baselines=baseline, target=target, n_steps=opts.ig_steps, internal_batch_size=opts.ig_steps
        )

    def _guided(self, x: torch.Tensor, target: int, opts: AttributionOptions) -> torch.Tensor:
        return GuidedBackprop(self.model).attribute(x.requires_grad_(), target=target)

    def _gradcam(self, x: torch.Tensor, target: int, opts: AttributionOptions) -> torch.Tensor:
        cam = LayerGradCam(self.model, self.gradcam_layer)
        return cam.attribute(x, target=target, relu_attributions=True)

    def _occlusion(self, x: torch.Tensor, target: int, opts: AttributionOptions) -> torch.Tensor:
        c, h, w = x.shape[1:]
        window = opts.occlusion_window or max(2, round(min(h, w) / 8))
        window = min(window, h, w)
        stride = opts.occlusion_stride or max(1, window // 2)
        return Occlusion(self.model).attribute(
            x,
            sliding_window_shapes=(c, window, window),
            strides=(c, stride, stride),
            baselines=self._baseline(x, opts.occlusion_baseline),
            target=target,
            perturbations_per_eval=opts.occlusion_batch,
        )

    def _baseline(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "black":
            return torch.zeros_like(x)
        if kind == "neutral":
            return neutral_pixel(self.network, x.shape[1]).expand_as(x).contiguous()
        raise ValueError(f"unknown baseline {kind!r}; use 'black' or 'neutral'")


def explain(
    network: Network, image: np.ndarray, method: str = "gradcam", target: int | None = None, **options: object
) -> Explanation:
    """One-off convenience: copy the network, attribute, return. Use ``Explainer`` for repeats."""
    return Explainer(network, AttributionOptions(**options)).attribute(image, method, target)  # type: ignore[arg-type]


def _to_heat(method: str, raw: torch.Tensor, size: torch.Size, clip_percentile: float) -> np.ndarray:
    """Reduce captum's attribution to one non-negative map at the image's size, scaled to [0, 1].

    Gradient maps take the largest absolute value over colour channels (Simonyan et al.); IG sums
    absolute values (its attributions add up to the score change); Grad-CAM keeps the positive
    part and is resized from the layer's grid; occlusion keeps the evidence *for* the class (a
    drop in score when the patch is hidden).
    """
    a = raw.detach().float()
    if method == "gradcam":
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
        clip_percentile = 100.0
    elif method == "occlusion":
        a = a[0].mean(0).clamp_min(0)
        clip_percentile = 100.0
    elif method == "ig":
        a = a[0].abs().sum(0)
    else:
        a = a[0].abs().amax(0)
    heat = a.numpy().astype(np.float32)
    return normalise(heat, clip_percentile)


def normalise(heat: np.ndarray, clip_percentile: float = 100.0) -> np.ndarray:
    """Scale a non-negative map to [0, 1]; values above the percentile saturate. All-zero stays 0."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    heat = np.maximum(heat, 0.0)
    top = float(np.percentile(heat, clip_percentile)) if clip_percentile < 100 else float(heat.max())
    if top <= 0:
        top = float(heat.max())
    if top <= 0:
        return np.zeros_like(heat)
    return np.clip(heat / top, 0.0, 1.0).astype(np.float32)
