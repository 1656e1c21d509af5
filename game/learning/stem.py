"""The frozen stem and the trainable head of a head-only fine-tune.

Unless ``full_finetune``, only the last ``head_layers`` Linear layers of ``module.classifier``
train. Their input never changes, so it is computed once per scene (``StemCache``) and a step runs
only the head: this is what makes an AlexNet-shaped network with 2,000 images fit in a few seconds
on a CPU. ``Runner`` does the forward passes either way (cached head or whole network).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from game.nets.network import BatchOutputs, Inference, Network
from game.nets.split import classifier, run_capturing, split_point

# The split helpers lived here: callers import them from here too (explicit re-exports).
from game.nets.split import feature_layer_in_head as feature_layer_in_head
from game.nets.split import head_parameter_names as head_parameter_names
from game.nets.split import head_start as head_start
from game.nets.stem_store import load_stem, stem_key, stem_path, store_stem

if TYPE_CHECKING:
    from game.learning.head_update import PreActivationCache, PreActivations

DEFAULT_DAMPING = 0.005  # the damping digits was tuned with (the derived damping's smallest value)
DAMPING_GRID = tuple(DEFAULT_DAMPING * 2**k for k in range(8))  # 0.005 ... 0.64 (the derived range)
# How much more unseen images may be amplified than seen ones. 2.0, not 2.5: with the continuous
# rule 2.5 gave about half the damping the grid had rounded up to, and that was measured worse
# (digits 1,4,7,9 subset, K = 30: 95.8 at 0.097 against 98.6 at 0.16; the 3,5,8,9 subset was
# best at 0.16 of 0.005/0.16/0.64). 2.0 gives 0.16-0.18 on the subsets, 0.06 on digits with
# 15 % noise, 0.008 on the shapes and 0.005 on the photo crops.
LEVERAGE_RATIO = 2.0

RowsOut = Callable[[int, np.ndarray], None]  # ``infer_all``'s batch listener: (first row, features)


def derive_damping(x: torch.Tensor, seed: int = 0) -> float:
    """The smallest damping (between ``DAMPING_GRID``'s ends) at which the preconditioner amplifies
    images it was not estimated from at most ``LEVERAGE_RATIO`` times as much as those it was.

    Why: the preconditioner inverts the second moment of the head's inputs. Estimated from fewer
    images than (active) dimensions it is nearly singular, and an edit's update then moves images
    with energy in the poorly seen directions (held-out ones) by far more than it moves the
    training images: one correct edit can cost several held-out points. Splitting the training
    inputs in halves, estimating the moment on one and measuring the mean leverage x^T P x on both
    shows how much more unseen images are amplified; damping shrinks that. Digits (1,438 training
    images, 1,024 dimensions) keep about 0.005; fewer images or more dimensions get more damping.

    The answer is continuous in the data: the ratio falls monotonically with the damping, and the
    damping where it crosses ``LEVERAGE_RATIO`` is found by bisection in log-damping, not rounded
    to a grid step (rounding up to the grid made digits flip between 0.005 and 0.01 when a
    retrained network moved the ratio a hair across the boundary).
    """
    x = x.double()
    n = len(x)
    lo, hi = DAMPING_GRID[0], DAMPING_GRID[-1]
    if n < 4:
        return float(hi)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = x[order[: n // 2]], x[order[n // 2 :]]
    moment = a.T @ a / len(a)
    mu = float(moment.diagonal().mean())
    if mu <= 0:
        return float(lo)
    s, u = torch.linalg.eigh(moment)
    seen, unseen = ((a @ u) ** 2).mean(0), ((b @ u) ** 2).mean(0)

    def excess(damping: float) -> float:
        """log(unseen leverage / seen leverage) - log(LEVERAGE_RATIO): falls as damping grows."""
        w = 1.0 / (s.clamp(min=0.0) + damping * mu)
        return float(torch.log(unseen @ w) - torch.log(seen @ w)) - float(np.log(LEVERAGE_RATIO))

    return _bisect_damping(excess)


def _bisect_damping(excess: Callable[[float], float]) -> float:
    """The damping in ``DAMPING_GRID``'s range where ``excess`` (falling) crosses 0."""
    lo, hi = DAMPING_GRID[0], DAMPING_GRID[-1]
    if excess(lo) <= 0:
        return float(lo)
    if excess(hi) > 0:
        return float(hi)
    log_lo, log_hi = np.log(lo), np.log(hi)
    for _ in range(40):  # the bracket shrinks to 2^-40 of a factor 128: far below any effect
        mid = 0.5 * (log_lo + log_hi)
        if excess(float(np.exp(mid))) > 0:
            log_lo = mid
        else:
            log_hi = mid
    return float(np.exp(log_hi))


# Above this many training numbers (training rows x D) the second moment and the leverage split
# are summed a block of rows at a time from the float32 inputs (``moment_blocked``,
# ``derive_damping_blocked``) instead of from one float64 copy of every training row: at 50,000
# cards (40,000 training rows x 4,096) that copy was 1.3 GB, and ``derive_damping``'s halves and
# projections 2.6 GB more, all at once (issue 17). The sums come in another order, so the results
# differ by float64 rounding (tests/learning/test_stem_blocked.py); below it, the embedded scenes
# keep the one-product path and their bits.
BLOCKED_NUMBERS = 64_000_000
# Above this many numbers (N x D) the preconditioned inputs of every card are not kept: a training
# step multiplies its own rows (``HeadOptimiser``), a few hundred, instead of reading them from an
# (N x D) array (0.8 GB at 50,000 cards).
KEEP_PRECONDITIONED_NUMBERS = 64_000_000
ROW_BLOCK = 4096


def moment_blocked(inputs: torch.Tensor, index: np.ndarray, block: int = ROW_BLOCK) -> torch.Tensor:
    """``x.T @ x / len(x)`` in float64 for ``x = inputs[index]``, a block of rows at a time."""
    d = int(np.prod(inputs.shape[1:]))
    moment = torch.zeros((d, d), dtype=torch.float64)
    rows = torch.from_numpy(np.asarray(index, np.int64))
    for s in range(0, len(rows), block):
        x = inputs[rows[s : s + block]].reshape(-1, d).double()
        moment.addmm_(x.T, x)
    return moment / max(len(rows), 1)


def _mean_square_projection(
    inputs: torch.Tensor, index: torch.Tensor, u: torch.Tensor, block: int = ROW_BLOCK
) -> torch.Tensor:
    """``((inputs[index] @ u) ** 2).mean(0)`` in float64, a block of rows at a time."""
    total = torch.zeros(u.shape[1], dtype=torch.float64)
    for s in range(0, len(index), block):
        total += ((inputs[index[s : s + block]].double() @ u) ** 2).sum(0)
    return total / max(len(index), 1)


def derive_damping_blocked(
    inputs: torch.Tensor, index: np.ndarray, seed: int = 0, block: int = ROW_BLOCK
) -> float:
    """``derive_damping(inputs[index].double(), seed)`` without the float64 copy of the rows (the
    same halves, moments and leverage, summed in blocks)."""
    n = len(index)
    lo, hi = DAMPING_GRID[0], DAMPING_GRID[-1]
    if n < 4:
        return float(hi)
    rows = torch.from_numpy(np.asarray(index, np.int64))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = rows[order[: n // 2]], rows[order[n // 2 :]]
    moment = moment_blocked(inputs, a.numpy(), block)
    mu = float(moment.diagonal().mean())
    if mu <= 0:
        return float(lo)
    s, u = torch.linalg.eigh(moment)
    del moment
    seen = _mean_square_projection(inputs, a, u, block)
    unseen = _mean_square_projection(inputs, b, u, block)
    del u

    def excess(damping: float) -> float:
        w = 1.0 / (s.clamp(min=0.0) + damping * mu)
        return float(torch.log(unseen @ w) - torch.log(seen @ w)) - float(np.log(LEVERAGE_RATIO))

    return _bisect_damping(excess)


def rows_float64(inputs: torch.Tensor, is_train: np.ndarray, block: int = 4096) -> torch.Tensor:
    """``inputs[is_train].double()``, gathered into the float64 array a block of rows at a time.

    Why: the one-line form first gathers a float32 copy of every training row and then converts
    it, so both live at once (+655 MB at 50k cards, 40,000 training rows x 4,096). float32 to
    float64 is exact, so the values are the same bits either way.
    """
    index = torch.from_numpy(np.flatnonzero(is_train))
    out = torch.empty((len(index), *inputs.shape[1:]), dtype=torch.float64)
    for s in range(0, len(index), block):
        out[s : s + block] = inputs[index[s : s + block]]
    return out


@dataclass
class StemCache:
    """The input of the trainable head for every image, computed once with the frozen stem.

    ``start`` is the index in ``module.classifier`` where the head begins.
    """

    start: int
    inputs: torch.Tensor  # (N, D) float32
    seconds: float = 0.0
    inverse_moment: torch.Tensor | None = None  # (D, D): (E[x x^T] + damping)^-1 over training inputs
    preconditioned: torch.Tensor | None = None  # (N, D): inputs @ inverse_moment
    damping: float | None = None  # the damping ``inverse_moment`` was computed with
    derived_damping: float | None = None  # ``derive_damping`` of the training inputs, once
    # Every card's top-1 class under the network of the scene's first job, and the labels then
    # (``skip_disputed``: a label changed since is the person's, never disputed).
    start_predictions: torch.Tensor | None = None
    start_labels: torch.Tensor | None = None

    def resolve_damping(self, is_train: np.ndarray, damping: float | None = None) -> float:
        """``damping`` when given (positive), else the one derived from the training inputs."""
        if damping:
            return float(damping)
        if self.derived_damping is None:
            if self._blocked(is_train):
                self.derived_damping = derive_damping_blocked(self.inputs, np.flatnonzero(is_train))
            else:
                self.derived_damping = derive_damping(rows_float64(self.inputs, is_train))
        return self.derived_damping

    def _blocked(self, is_train: np.ndarray) -> bool:
        return int(np.count_nonzero(is_train)) * int(np.prod(self.inputs.shape[1:])) > BLOCKED_NUMBERS

    def preconditioned_inputs(
        self, is_train: np.ndarray, damping: float | None = None
    ) -> torch.Tensor | None:
        """``inputs @ preconditioner``, once: a step then costs one more head-sized matmul, not D^3.
        None above ``KEEP_PRECONDITIONED_NUMBERS`` (the preconditioner is still made): a step
        then multiplies its own rows."""
        inverse = self.preconditioner(is_train, damping)
        if self.inputs.numel() > KEEP_PRECONDITIONED_NUMBERS:
            return None
        if self.preconditioned is None:
            self.preconditioned = self.inputs @ inverse
        return self.preconditioned

    def preconditioner(self, is_train: np.ndarray, damping: float | None = None) -> torch.Tensor:
        """The inverse second moment of the head's inputs (computed once per damping; the inputs
        never change). ``damping`` None or 0: derived from the data (``derive_damping``).

        Multiplying the first head layer's weight gradient by it gives the update that changes the
        edited images' outputs most while changing typical other inputs least (the minimum-change
        edit of model-editing methods): plain gradients move every image alike, because the stem's
        outputs share a large common component. ``damping`` (relative to the mean eigenvalue)
        keeps the inverse sane when the moment is estimated from few images.
        """
        damping = self.resolve_damping(is_train, damping)
        if self.inverse_moment is None or self.damping != damping:
            if self._blocked(is_train):
                moment = moment_blocked(self.inputs, np.flatnonzero(is_train))
            else:
                x = rows_float64(self.inputs, is_train)
                moment = x.T @ x / max(len(x), 1)
                del x
            moment += damping * float(moment.diagonal().mean()) * torch.eye(len(moment), dtype=moment.dtype)
            self.inverse_moment = torch.linalg.inv(moment).float()
            self.preconditioned = None
            self.damping = damping
        return self.inverse_moment


def _has_trainable_bias(module: nn.Module) -> bool:
    bias = getattr(module, "bias", None)
    return isinstance(module, nn.Linear) and bias is not None and bias.requires_grad


_classifier = classifier  # the old private name, used by benchmarks


def frozen_stem_names(network: Network, stem: StemCache | None, full: bool) -> list[str]:
    """Parameters a head-only job never reads (the stem's outputs are cached) nor changes: its
    copy of the network shares them instead of copying them."""
    if full or stem is None:
        return []
    head = set(head_parameter_names(network.module, stem.start))
    return [n for n, _ in network.module.named_parameters() if n not in head]


def compute_stem_cache(
    network: Network, images: np.ndarray, head_layers: int, batch_size: int = 256, use_cache: bool = True
) -> StemCache | None:
    """The frozen stem's outputs for every image; None when the network cannot be split so.

    ``use_cache``: read them from the cache when the features pass (or an earlier launch) stored
    them (``game.nets.stem_store``: the same float32 values), else run the stem and store them.
    """
    start = split_point(network, head_layers)
    if start is None:
        return None
    t0 = time.perf_counter()
    path = stem_path(stem_key(network, images, start)) if use_cache else None
    if path is not None:
        stored_outputs = load_stem(path, len(images))
        if stored_outputs is not None:
            return StemCache(start, torch.from_numpy(stored_outputs), time.perf_counter() - t0)
    head = _classifier(network.module)
    assert head is not None
    # Each batch is written into one tensor allocated at the first batch (its width is known
    # then): a list of batches joined by torch.cat held the outputs twice, +1.5 GB at 50k cards
    # (issue 17). Copying into float32 rounds as ``.float()`` on the join did: same values.
    n = len(images)
    out: list[torch.Tensor] = []  # the preallocated tensor, once the first batch has come
    rows = [0]
    me = threading.get_ident()

    def capture(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # Only this thread's passes: another thread may run the same module meanwhile (a fallback
        # from the job process prepares while the first attempt still holds the network).
        if threading.get_ident() != me:
            return
        x = args[0].detach()
        if not out:
            out.append(torch.empty((n, *x.shape[1:]), dtype=torch.float32))
        at = rows[0]
        rows[0] += len(x)
        if rows[0] <= n:
            out[0][at : rows[0]].copy_(x)

    handle = head[start].register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            network.module.eval()
            for s in range(0, len(images), batch_size):
                network.module(network.preprocess(images[s : s + batch_size]))
    finally:
        handle.remove()
    if rows[0] != n or not out:
        raise RuntimeError(f"the stem cache caught {rows[0]} rows for {n} images")
    if path is not None:
        store_stem(path, out[0].numpy())
    return StemCache(start, out[0], time.perf_counter() - t0)


class Runner:
    """Forward passes for training and inference, through the cached head or the whole network."""

    def __init__(self, network: Network, images: np.ndarray, stem: StemCache | None, full: bool) -> None:
        self.network = network
        self.images = images
        self.stem = stem if not full else None
        module = network.module
        if full:
            trainable = {n for n, _ in module.named_parameters()}
        elif stem is not None:
            trainable = set(head_parameter_names(module, stem.start))
        else:
            s = head_start(module, 1)
            trainable = (
                set(head_parameter_names(module, s))
                if s is not None
                else {n for n, _ in module.named_parameters()}
            )
        for name, p in module.named_parameters():
            if self.stem is None or name in trainable:  # the stem's tensors may be shared: untouched
                p.requires_grad_(name in trainable)
        self.trainable_names = sorted(trainable)
        self.params = [p for n, p in module.named_parameters() if n in trainable]
        self._preprocessed: torch.Tensor | None = None
        self.last_pre_activation: torch.Tensor | None = None  # first head layer's output, last forward
        self.own_first_gradient = False  # True: autograd leaves the first head layer's weight alone
        # Set while a job trains the first head layer's weight as factors (``HeadOptimiser.factor``):
        # its output for the rows ``idx`` (inputs ``x``), in place of the layer's product.
        self.first_layer: Callable[[np.ndarray, torch.Tensor, nn.Linear], torch.Tensor] | None = None
        self.last_infer_low_rank: int | None = None  # rank of the last infer_all's update (None: full)
        # The kept pre-activations of the weights this job starts from (``head_update``), if any.
        self.base_pre_activations = _find_base(network, self.stem)
        # ``low_rank_difference`` of the last weights asked for (the preview asks before the
        # re-inference, with the same trained weights): (base, weight copy, factors).
        self._factors: (
            tuple[PreActivations, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None] | None
        ) = None
        # The first layer's weight change since ``base_pre_activations``' weights as the training
        # recorded it (``HeadOptimiser.change``: A^T B), set after training; None: not recorded.
        self.steps_change: tuple[torch.Tensor, torch.Tensor] | None = None
        self.factors_from_steps = False  # the last factors came from ``steps_change``
        if self.stem is None and images[:1].size * len(images) <= 50_000_000:
            self._preprocessed = network.preprocess(images)  # small datasets: preprocess once

    def split_first_layer(self) -> tuple[nn.Parameter | None, list[nn.Parameter]]:
        """The weight of the head's first Linear layer (fed by the stem cache), and the rest."""
        if self.stem is None:
            return None, list(self.params)
        head = _classifier(self.network.module)
        assert head is not None
        first = head[self.stem.start].weight
        assert isinstance(first, nn.Parameter)  # a Linear layer's weight
        return first, [p for p in self.params if p is not first]

    def feature_module(self) -> nn.Module:
        """The module whose output is the network's features (``Network.feature_layer``)."""
        module: nn.Module = dict(self.network.module.named_modules())[self.network.feature_layer]
        return module

    def first_linear(self) -> nn.Linear | None:
        """The head's first layer (fed by the stem cache) where it is a Linear one, else None."""
        if self.stem is None:
            return None
        head = _classifier(self.network.module)
        first = head[self.stem.start] if head is not None else None
        return first if isinstance(first, nn.Linear) else None

    def _inputs(self, idx: np.ndarray) -> torch.Tensor:
        if self._preprocessed is not None:
            return self._preprocessed[torch.from_numpy(idx)]
        return self.network.preprocess(self.images[idx])

    def forward(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and flattened features of the images ``idx`` (with gradients)."""
        if self.stem is None:
            return self.network.forward_with_features(self._inputs(idx))
        head = _classifier(self.network.module)
        assert head is not None
        layer = self.feature_module()
        captured: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            x = self.stem.inputs[torch.from_numpy(idx)]
            for i, m in enumerate(list(head)[self.stem.start :]):
                if i == 0 and self.first_layer is not None and isinstance(m, nn.Linear) and m is not layer:
                    x = self.first_layer(idx, x, m)
                elif i == 0 and self.own_first_gradient and m is not layer and _has_trainable_bias(m):
                    # The caller sets this layer's weight gradient itself (preconditioned): skip
                    # autograd's, a (D x D) product per step (AlexNet's fc7: 16.8 M numbers).
                    assert isinstance(m, nn.Linear)  # _has_trainable_bias holds only for Linear
                    x = F.linear(x, m.weight.detach(), m.bias)
                else:
                    x = m(x)
                if i == 0:
                    self.last_pre_activation = x
        finally:
            handle.remove()
        return x, captured[-1].flatten(1)

    @torch.no_grad()
    def infer_all(
        self,
        batch_size: int = 1024,
        rows_out: RowsOut | None = None,
        beside: Callable[[], None] | None = None,
    ) -> Inference:
        """Features and top-5 of every image under the current weights (``Network.infer``'s output).

        ``beside()`` (work that reads nothing this pass writes: the fine-tune's preview placement)
        runs once, on one of the pass's threads before that thread takes batches, where the pass
        has more than one (``reinfer_threads``), else here first; it must not raise. The pass's
        numbers are the same either way.

        ``rows_out(start, features)`` is called with each batch's features once they are written
        (on the thread that made them, while they are in cache: the fine-tune's re-layout reduces
        them there, ``projector.RowProjection``), except where the whole network runs
        (no stem cached: ``Network.infer``), which calls it for no row.

        With the stem cached, the first head layer's outputs come from the pre-activations kept
        for the network the job started from plus a low-rank update (``head_update``: the same
        within float noise at a fraction of the cost), when they are kept and the weight change
        is of low rank; otherwise from the full pass. Either way the new pre-activations are kept
        for the next job.
        """
        self.network.module.eval()
        if self.stem is None:
            if beside is not None:
                beside()
            return self.network.infer(self.images)
        from game.learning import head_update

        head = _classifier(self.network.module)
        assert head is not None
        first = head[self.stem.start]
        if not isinstance(first, nn.Linear):
            if beside is not None:
                beside()
            return self._infer_all_full(batch_size, rows_out)
        n = len(self.images)
        weight = first.weight.detach()
        bias = first.bias.detach() if first.bias is not None else None
        if not head_update.enabled() or n * weight.numel() < head_update.MIN_MULTIPLY_ADDS:
            if beside is not None:
                beside()
            return self._infer_all_full(batch_size, rows_out)
        started = time.perf_counter()
        cache = head_update.cache_for(self.stem)
        with cache.pass_lock:
            out, factors = self._update_pre_activations(
                cache, weight, bias, first, head, batch_size, rows_out, beside
            )
        self.last_infer_low_rank = None if factors is None else int(factors[0].shape[1])
        head_update.report(
            self.last_infer_low_rank, n, time.perf_counter() - started, self.factors_from_steps
        )
        return out.inference()

    def _update_pre_activations(
        self,
        cache: PreActivationCache,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        first: nn.Module,
        head: nn.Sequential,
        batch_size: int,
        rows_out: RowsOut | None = None,
        beside: Callable[[], None] | None = None,
    ) -> tuple[BatchOutputs, tuple[torch.Tensor, torch.Tensor] | None]:
        """``infer_all``'s pass: every card's outputs, and the new pre-activations kept."""
        from game.learning import head_update

        assert self.stem is not None
        n = len(self.images)
        base = self.base_pre_activations
        factors = None
        if base is not None and base.cards() == n and base.chain < head_update.MAX_CHAIN:
            if base.pre is not None and base.pre.shape[1] != weight.shape[0]:
                base = None
            else:
                factors = self._low_rank(weight, base)
        layer = self.feature_module()
        rest = list(head)[self.stem.start + 1 :]
        x_all = self.stem.inputs
        bias_change = (
            bias - base.bias if bias is not None and base is not None and base.bias is not None else None
        )
        # The new rows go over the base's array when the base is the newest kept state with an
        # array (see head_update's module doc): one (N x out) array, not two or three.
        in_place = (
            factors is not None and base is not None and base.pre is not None and cache.newest() is base
        )
        pre = base.pre if in_place and base is not None else torch.empty(n, weight.shape[0])
        assert pre is not None
        out = BatchOutputs(n)
        # The rows may be worked on where they lie in ``pre`` (no copy out and back) unless a later
        # layer writes into its input (an in-place ReLU would overwrite the kept rows).
        in_rows = in_place and not any(getattr(m, "inplace", False) for m in rest)

        def one_batch(s: int) -> None:
            e = min(s + batch_size, n)
            if factors is not None and base is not None:
                u, v = factors
                z = pre[s:e] if in_rows else base.rows(x_all, s, e)
                if u.shape[1]:
                    z.addmm_(x_all[s:e] @ v, u.T)
                if bias_change is not None:
                    z += bias_change
            else:
                z = F.linear(x_all[s:e], weight, bias)
            if not in_rows:
                pre[s:e] = z
            _put_rest(out, s, z, first, rest, layer)
            if rows_out is not None and out.features is not None:
                rows_out(s, out.features[s:e])

        try:
            # The first batch here (it allocates the result arrays, on this thread's allocator),
            # the others over ``reinfer_threads()`` threads when that is more than torch's.
            one_batch(0)
            in_threads(one_batch, range(batch_size, n, batch_size), reinfer_threads(), first=beside)
            chain = base.chain + 1 if factors is not None and base is not None else 0
            # The copies of the weight and bias too: until ``derive_from`` the base would claim
            # its old weights over an array that holds the new rows.
            state = head_update.PreActivations(
                weight.clone(), None if bias is None else bias.clone(), pre, chain
            )
            if in_place and base is not None and factors is not None:
                base.derive_from(state, factors[0], factors[1], bias_change)
        except BaseException:
            if in_place:
                cache.clear()  # the base's array is (half) overwritten: keep nothing
            raise
        cache.put(state, base)
        return out, factors

    @torch.no_grad()
    def kept_pre_activations(self, rows: np.ndarray) -> torch.Tensor | None:
        """The first head layer's outputs of ``rows`` from the pre-activations kept for the
        network as it is (the job's base, before training changes it): what ``forward`` puts in
        ``last_pre_activation``, within float noise, without the (rows x in x out) product. None
        below ``LARGE_JOB_CARDS`` cards (bit for bit as before: the caller runs ``forward``), or
        where none are kept for these weights."""
        from game.learning import head_update

        base = self.base_pre_activations
        if self.stem is None or base is None or len(self.images) < LARGE_JOB_CARDS:
            return None
        head = _classifier(self.network.module)
        first = head[self.stem.start] if head is not None else None
        if not isinstance(first, nn.Linear) or base.cards() != len(self.images):
            return None
        bias = first.bias.detach() if first.bias is not None else None
        same_bias = (bias is None and base.bias is None) or (
            bias is not None and base.bias is not None and torch.equal(bias, base.bias)
        )
        if not same_bias or not torch.equal(first.weight.detach(), base.weight):
            return None  # trained since: no longer the kept state's weights
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        with head_update.cache_for(self.stem).pass_lock:
            return base.rows_at(self.stem.inputs, index)

    def _low_rank(
        self, weight: torch.Tensor, base: PreActivations
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``head_update.low_rank_difference(weight, base.weight)``, computed once for these very
        weights (deterministic: a second computation gives the same factors bit for bit). From
        the training's record of the change (``steps_change``) when it holds one from this base
        and that record explains the difference (``head_update.factors_from_steps``)."""
        from game.learning import head_update

        memo = self._factors
        if memo is not None and memo[0] is base and torch.equal(memo[1], weight):
            return memo[2]
        most = head_update.paying_rank(*weight.shape)
        tolerance = head_update.tolerance_for(len(self.images), LARGE_JOB_CARDS)
        factors = None
        if self.steps_change is not None and base is self.base_pre_activations:
            factors = head_update.factors_from_steps(
                weight, base.weight, *self.steps_change, tolerance=tolerance, max_rank=most
            )
            self.steps_change = None  # asked once (the memo answers again): up to 75 MB let go
        self.factors_from_steps = factors is not None
        if factors is None:
            factors = head_update.low_rank_difference(weight, base.weight, tolerance=tolerance, max_rank=most)
        self._factors = (base, weight.clone(), factors)
        return factors

    @torch.no_grad()
    def rows_features_low_rank(self, rows: np.ndarray) -> np.ndarray | None:
        """The feature layer's output of ``rows`` under the current weights, from the kept base
        pre-activations plus the low-rank update (``infer_all``'s way, for a few rows: the
        preview's 2,000 cards cost ``rows x r x (in + out)`` instead of ``rows x in x out``, and
        the factors are then ready for the re-inference). None where ``infer_all`` would make the
        full pass (the caller runs ``forward``)."""
        from game.learning import head_update

        if self.stem is None or not head_update.enabled():
            return None
        head = _classifier(self.network.module)
        assert head is not None
        first = head[self.stem.start]
        n, base = len(self.images), self.base_pre_activations
        if not isinstance(first, nn.Linear) or base is None:
            return None
        weight = first.weight.detach()
        bias = first.bias.detach() if first.bias is not None else None
        if (
            n * weight.numel() < head_update.MIN_MULTIPLY_ADDS
            or base.cards() != n
            or base.chain >= head_update.MAX_CHAIN
            or (base.pre is not None and base.pre.shape[1] != weight.shape[0])
        ):
            return None
        self.network.module.eval()
        with head_update.cache_for(self.stem).pass_lock:
            factors = self._low_rank(weight, base)
            if factors is None:
                return None
            index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
            x = self.stem.inputs
            z = base.rows_at(x, index)
        u, v = factors
        if u.shape[1]:
            z.addmm_(x[index] @ v, u.T)
        if bias is not None and base.bias is not None:
            z += bias - base.bias
        layer = self.feature_module()
        _, features = _run_rest(z, first, list(head)[self.stem.start + 1 :], layer)
        return np.ascontiguousarray(features.float().numpy())

    @torch.no_grad()
    def _infer_all_full(self, batch_size: int, rows_out: RowsOut | None = None) -> Inference:
        """Every card through the whole head, in batches (the pass before ``head_update``)."""
        n = len(self.images)
        if n == 0:
            raise ValueError("no cards to re-infer")
        out = BatchOutputs(n)
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            out.put(s, *self.forward(np.arange(s, e)))
            if rows_out is not None and out.features is not None:
                rows_out(s, out.features[s:e])
        return out.inference()


REINFER_THREADS = 2  # threads of the head's re-inference when torch itself runs on one


# From this many cards a job takes a quicker way that rounds differently (float noise): the pull's
# spread from the kept pre-activations (``Runner.kept_pre_activations``: no 512-row pass through
# the first head layer, 0.1-0.15 s of a 50k drop's preparation). Smaller scenes, the embedded ones
# and every recorded session among them, keep the pass and their numbers bit for bit (issue 17,
# docs/benchmarks.md; the factorisation on two torch threads was tried at this size too and
# dropped: under load its threads' waits cost more CPU than the second core saved).
LARGE_JOB_CARDS = 4096


def reinfer_threads() -> int:
    """Python threads for the re-inference's batches: ``REINFER_THREADS`` (at most the cores)
    when torch runs on one thread (the job process's and the scene's default), else 1 (torch's
    own threads share each batch then). ``LATENT_REACH_REINFER_THREADS`` overrides it
    (benchmarks compare).

    The threads change no number: each batch is the same single-threaded torch calls on the same
    rows, written to its own rows; only which core runs it differs (tested bitwise)."""
    wanted = os.environ.get("LATENT_REACH_REINFER_THREADS", "")
    count = int(wanted) if wanted.strip().isdigit() else REINFER_THREADS
    if torch.get_num_threads() != 1:
        return 1
    return max(1, min(count, os.cpu_count() or 1))


def in_threads(
    work: Callable[[int], None], items: Iterable[int], threads: int, first: Callable[[], None] | None = None
) -> None:
    """``work(item)`` for every item, on ``threads`` threads (1: here, in order), each under
    ``torch.no_grad`` with torch's thread count; the first error is raised once all stop.
    ``first()``, when given, runs once before any item (on one thread: the others take items
    meanwhile; it runs to its end even when an item fails, and an error in it is raised as an
    item's would be, as it is on one thread)."""
    todo = list(items)
    if threads <= 1 or (len(todo) <= 1 and first is None):
        if first is not None:
            first()
        for item in todo:
            work(item)
        return
    lock = threading.Lock()
    errors: list[BaseException] = []
    grad = torch.is_grad_enabled()
    torch_threads = torch.get_num_threads()

    def run() -> None:
        torch.set_num_threads(torch_threads)  # a new thread's intra-op count: the caller's
        with torch.set_grad_enabled(grad):
            while True:
                with lock:
                    if errors or not todo:
                        return
                    item = todo.pop(0)
                try:
                    work(item)
                except BaseException as exc:  # noqa: BLE001 - raised again on the caller's thread
                    with lock:
                        errors.append(exc)
                    return

    def first_then_run() -> None:
        torch.set_num_threads(torch_threads)
        try:
            with torch.set_grad_enabled(grad):
                assert first is not None
                first()
        except BaseException as exc:  # noqa: BLE001 - as on one thread: raised on the caller's
            with lock:
                errors.append(exc)
        run()

    helpers = min(threads, len(todo)) - 1 if first is None else max(min(threads, len(todo)) - 1, 1)
    workers = [threading.Thread(target=run, daemon=True) for _ in range(helpers)]
    if first is not None:
        workers[0] = threading.Thread(target=first_then_run, daemon=True)
    for w in workers:
        w.start()
    run()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def _find_base(network: Network, stem: StemCache | None) -> PreActivations | None:
    """The kept pre-activations computed with the network's current first head layer, if any
    (the job's base: its training changes the weight in place, so this is looked up first)."""
    if stem is None:
        return None
    from game.learning import head_update

    head = _classifier(network.module)
    first = head[stem.start] if head is not None else None
    if not isinstance(first, nn.Linear):
        return None
    bias = first.bias.detach() if first.bias is not None else None
    return head_update.cache_for(stem).find(first.weight.detach(), bias)


def _run_rest(
    z: torch.Tensor, first: nn.Module, rest: list[nn.Module], layer: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's layers after the first on its outputs ``z``: logits and the feature layer's
    output (flattened), as ``Runner.forward`` gives them."""
    return run_capturing(z, rest, layer, z if layer is first else None)


def _put_rest(
    out: BatchOutputs, start: int, z: torch.Tensor, first: nn.Module, rest: list[nn.Module], layer: nn.Module
) -> None:
    """``out.put(start, *_run_rest(z, ...))``, with the feature layer's output written straight
    into ``out.features`` when it is a plain ReLU right after the first layer (AlexNet's fc7): no
    (batch x 4,096) ReLU tensor, no copy of it. Bitwise the same values (``clamp_min(z, 0)`` is
    ``relu(z)``); the first batch, and every other head, take ``_run_rest``. The features array
    is ``result_array``'s (the job process puts it in shared memory)."""
    features, logits = out.features, out.logits
    if (
        features is None
        or logits is None
        or not rest
        or rest[0] is not layer
        or type(layer) is not nn.ReLU
        or z.dim() != 2
        or features.shape[1:] != z.shape[1:]
    ):
        got_logits, got_features = _run_rest(z, first, rest, layer)
        if out.features is None:
            out.features = result_array((out.n, *got_features.shape[1:]))
            out.logits = np.empty((out.n, *got_logits.shape[1:]), np.float32)
        out.put(start, got_logits, got_features)
        return
    f = torch.from_numpy(features[start : start + len(z)])
    torch.clamp_min(z, 0.0, out=f)
    x = f
    for m in rest[1:]:
        x = m(x)
    logits[start : start + len(z)] = x.float().numpy()


_ALLOCATOR = threading.local()


def result_array(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array for the re-inference's features of every card: ``np.empty`` unless this
    thread runs under ``result_arrays_from`` (the job process: a shared-memory segment, so the
    result goes to the app without a copy through the pipe)."""
    allocate = getattr(_ALLOCATOR, "allocate", None)
    if allocate is not None:
        got = allocate(shape)
        if got is not None:
            return cast(np.ndarray, got)
    return np.empty(shape, np.float32)


@contextlib.contextmanager
def result_arrays_from(allocate: Callable[[tuple[int, ...]], np.ndarray | None]) -> Iterator[None]:
    """``result_array`` on this thread asks ``allocate`` (None from it: ``np.empty``)."""
    before = getattr(_ALLOCATOR, "allocate", None)
    _ALLOCATOR.allocate = allocate
    try:
        yield
    finally:
        _ALLOCATOR.allocate = before


def prime_pre_activations(network: Network, n_images: int, stem: StemCache) -> None:
    """Keep the first head layer's outputs of ``network`` for every card (a full pass), so the
    first job's re-inference is a low-rank update too (``Runner.infer_all``). Backends call it
    when they prepare, after the stem cache."""
    from game.learning import head_update

    head = _classifier(network.module)
    first = head[stem.start] if head is not None else None
    if not isinstance(first, nn.Linear) or n_images * first.weight.numel() < head_update.MIN_MULTIPLY_ADDS:
        return  # the full pass is what every job makes then: nothing to keep
    if not head_update.enabled():
        return
    runner = Runner(network, np.empty((n_images, 0), np.uint8), stem, False)
    runner.infer_all()


def protect_lookalikes(
    inverse_moment: torch.Tensor, inputs: torch.Tensor, cards: np.ndarray, m: int, weight: float
) -> torch.Tensor:
    """The preconditioner with the edited images' look-alikes weighted up (Woodbury update).

    The images whose head inputs are nearest an edited image's are the ones that would "move with
    it" (and drag it back in the re-layout). Adding them to the second moment with ``weight`` times
    the whole dataset's mass makes the update nearly orthogonal to them, so they stay put.
    """
    x = inputs
    others = np.setdiff1d(np.arange(len(x)), cards)
    rows = []
    for c in cards:
        d = ((x[torch.from_numpy(others)] - x[int(c)]) ** 2).sum(1)
        k = min(m, len(others))
        rows.append(torch.from_numpy(others)[torch.topk(d, k, largest=False).indices])
    u = x[torch.unique(torch.cat(rows))].double()  # (r, D)
    p = inverse_moment.double()
    b_inv = torch.eye(len(u), dtype=p.dtype) * (len(u) / max(weight, 1e-12))
    pu = p @ u.T  # (D, r)
    middle = torch.linalg.solve(b_inv + u @ pu, pu.T)  # (r, D)
    inverse: torch.Tensor = (p - pu @ middle).float()
    return inverse
