"""A network ready for the workspace: preprocessing, a tapped feature layer, batched inference.

``Network`` hides the difference between the small CNN and AlexNet-shaped models: give it uint8
images as the dataset stores them and it returns features of the chosen layer and top-5
predictions for every image.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from game.nets.architectures import default_feature_layer, resolve_layer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Inference:
    """Per-image outputs of one pass over a dataset."""

    features: np.ndarray  # (N, D) float32, the feature layer flattened
    top5_classes: np.ndarray  # (N, k) int64, k = min(5, classes)
    top5_scores: np.ndarray  # (N, k) float32 softmax probabilities
    logits: np.ndarray  # (N, classes) float32


class Network:
    """A torch module plus everything needed to feed it dataset images.

    ``input_size`` is the side of the square input; ``channels`` what the module expects (grey
    images are repeated to 3 channels for RGB networks). ``normalise`` picks the pixel scaling:
    ``"centred"`` maps 0..255 to -1..1, ``"imagenet"`` uses ImageNet's mean and std.
    """

    def __init__(
        self,
        module: nn.Module,
        arch: str,
        n_classes: int,
        channels: int,
        input_size: int,
        feature_layer: str = "",
        normalise: str = "centred",
    ) -> None:
        self.module = module.eval()
        self.arch = arch
        self.n_classes = n_classes
        self.channels = channels
        self.input_size = input_size
        self.normalise = normalise
        self.feature_layer, _ = resolve_layer(module, feature_layer or default_feature_layer(module))

    def clone(self, share: Collection[str] = ()) -> Network:
        """An independent copy (the fine-tune worker trains a copy, never the live network).

        ``share``: names of parameters and buffers the copy uses as they are instead of copying,
        for tensors that nobody will change in place (a head-only fine-tune's frozen stem): an
        AlexNet's 230 MB then costs nothing per model version.
        """
        memo: dict[int, Any] = {}
        if share:
            names = set(share)
            for name, t in (*self.module.named_parameters(), *self.module.named_buffers()):
                if name in names:
                    memo[id(t)] = t
        other = copy.copy(self)
        other.module = copy.deepcopy(self.module, memo).eval()
        return other

    def release(self, names: Collection[str]) -> int:
        """Let go of the memory of the parameters ``names``: each becomes a meta tensor of its
        shape and dtype (no storage). For a copy that will never read them: the job process's
        networks of a head-only scene, whose frozen stem's outputs are cached (AlexNet's
        convolutions and fc6: 160 MB). Their clones and ``updated`` versions share the meta
        tensors. Returns the bytes let go."""
        wanted = set(names)
        freed = 0
        for name, p in list(self.module.named_parameters()):
            if name not in wanted or p.device.type == "meta":
                continue
            owner, _, attr = name.rpartition(".")
            module = self.module.get_submodule(owner)
            meta = torch.empty(p.shape, dtype=p.dtype, device="meta")
            setattr(module, attr, nn.Parameter(meta, requires_grad=p.requires_grad))
            freed += p.numel() * p.element_size()
        return freed

    def updated(self, state: dict[str, torch.Tensor]) -> Network:
        """A new model version: this network with the tensors in ``state`` replaced and every other
        tensor shared (model versions are never changed in place once made).

        The new version takes ``state``'s tensors over as they are where their dtype, shape and
        device match (no copy: a fine-tune's result is 64 MB at AlexNet's fc7 and fc8, copied
        twice before, into the deep copy and by ``load_state_dict``), so the caller hands over
        tensors nobody else changes (``state_from_bytes``'s are new). Others are copied in by
        ``load_state_dict`` as before. The values are the same either way."""
        memo: dict[int, Any] = {}
        rest: dict[str, torch.Tensor] = {}
        tensors = (*self.module.named_parameters(), *self.module.named_buffers())
        for name, t in tensors:
            new = state.get(name)
            if new is None:
                memo[id(t)] = t  # shared with this version
            elif new.dtype == t.dtype and new.shape == t.shape and new.device == t.device:
                new = new.detach()
                memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
            else:
                rest[name] = new
        rest.update((k, v) for k, v in state.items() if k not in {n for n, _ in tensors})
        other = copy.copy(self)
        other.module = copy.deepcopy(self.module, memo).eval()
        if rest:
            other.module.load_state_dict(rest, strict=False)
        return other

    def with_layer(self, layer: str) -> Network:
        """The same weights tapped at another layer."""
        other = copy.copy(self)
        other.feature_layer, _ = resolve_layer(self.module, layer)
        return other

    # --- preprocessing -------------------------------------------------------------------------

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, C)`` -> the float tensor ``(N, channels, S, S)`` the module eats."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:  # RGB into a grey network: luminance
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        if self.normalise == "imagenet" and self.channels == 3:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            x = (x - mean) / std
        else:
            x = x * 2.0 - 1.0
        return x.contiguous()

    # --- inference -----------------------------------------------------------------------------

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the feature layer's output (flattened) for a preprocessed batch."""
        _, layer = resolve_layer(self.module, self.feature_layer)
        captured: list[torch.Tensor] = []
        me = threading.get_ident()

        def capture(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
            # Only this thread's pass: the interactive lane, a worker or a Dask thread may run the
            # same module at the same moment, and its output must not stand in for ours.
            if threading.get_ident() == me:
                captured.append(out)

        handle = layer.register_forward_hook(capture)
        try:
            logits = self.module(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"the feature layer {self.feature_layer!r} produced no output on this pass")
        return logits, captured[-1].flatten(1)

    @torch.no_grad()
    def infer(
        self,
        images: np.ndarray,
        batch_size: int = 256,
        progress: bool = False,
        tap: tuple[nn.Module, Callable[[torch.Tensor], None]] | None = None,
    ) -> Inference:
        """Features and top-5 for every image, in batches.

        ``tap``: ``(layer, put)``: ``put`` gets the input of ``layer`` of every batch, in order
        (the stem's outputs at the head's first layer, stored so the fine-tune does not run the
        trunk again: ``game.nets.stem_store``). Only this thread's passes are tapped.
        """
        self.module.eval()
        n = len(images)
        if n == 0:
            raise ValueError("no images to infer")
        handle = None
        if tap is not None:
            layer, put = tap
            me = threading.get_ident()

            def before(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                if threading.get_ident() == me:
                    put(args[0])

            handle = layer.register_forward_pre_hook(before)
        out = BatchOutputs(n)
        starts = range(0, n, batch_size)
        try:
            for s in tqdm(starts, desc="Features", unit="batch", disable=not progress, leave=False):
                out.put(s, *self.forward_with_features(self.preprocess(images[s : s + batch_size])))
        finally:
            if handle is not None:
                handle.remove()
        return out.inference()

    @torch.no_grad()
    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-5 classes and scores (a quick pass without features, e.g. for what-if images)."""
        self.module.eval()
        logits = self.module(self.preprocess(images)).float().numpy()
        return top_k(logits)


class BatchOutputs:
    """Every card's logits and features, written batch by batch into arrays allocated when the
    first batch gives their widths.

    Why: joining a list of batches (and casting the join) held two or three copies of the
    features at once, 2.2 GB more at 50k cards x 4,096 (issue 17). The values are the same floats.
    Used by every pass over all cards (``Network.infer`` and the fine-tune's re-inference).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.features: np.ndarray | None = None
        self.logits: np.ndarray | None = None

    def put(self, start: int, logits: torch.Tensor, features: torch.Tensor) -> None:
        if self.features is None or self.logits is None:
            self.features = np.empty((self.n, *features.shape[1:]), np.float32)
            self.logits = np.empty((self.n, *logits.shape[1:]), np.float32)
        self.features[start : start + len(features)] = features.float().numpy()
        self.logits[start : start + len(logits)] = logits.float().numpy()

    def inference(self) -> Inference:
        if self.features is None or self.logits is None:
            raise ValueError("no batch was written")
        return Inference(self.features, *top_k(self.logits), self.logits)


def top_k(logits: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of the ``k`` best classes, best first."""
    k = min(k, logits.shape[1])
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(p, idx, axis=1).astype(np.float32)
