"""The fine-tune step: edited images + replay + a feature-space term, then re-inference and re-layout.

Why each piece is here (measured on digits):

* **Replay.** Cross-entropy on the edited images alone wrecks the network (one relabel with plain
  SGD dropped held-out accuracy from 94.6% to 12.8%). Every step therefore also trains on a
  seeded sample of unedited training images with their current labels, and on the cards around
  the edit (they anchor both the cluster the card leaves and the one it joins).
* **Feature-space term.** A flipped prediction is not enough: the re-layout puts the card back
  into its old cluster because its look-alike neighbours move with it. So each edited image's
  features are pulled towards the mean features of the ``neighbours`` cards nearest its *drop
  position* and, for relabels, pushed away from the mean of its *old* neighbours (a triplet loss
  with margin ``feature_margin``; distances in units of the features' spread). Targets are the
  neighbours' live features, detached: the edited card moves, its neighbours are held by replay.
* **Early stopping.** Training stops as soon as every edit is learned (predicted as its target and,
  for relabels, nearer the new neighbours than the old) after ``min_steps``; ``max_steps`` caps it.
* **NaN guard.** A non-finite loss, weight or output raises ``FineTuneDiverged``; the caller keeps
  the last good model (the job always trains a clone, never the live network).
* **Head-only by default.** Unless ``full_finetune``, only the last ``head_layers`` Linear layers of
  ``module.classifier`` train. Their input never changes, so it is computed once per scene
  (``StemCache``) and a step runs only the head: this is what makes an AlexNet-shaped network with
  2,000 images fit in a few seconds on a CPU.

Determinism: with the same request and seed the result is bitwise identical (no dropout, seeded
numpy sampling, single-threaded torch on the worker), which session verification relies on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from game.core.events import EditQueued
from game.core.scene import LearningConfig
from game.layout.projector import LayoutState, Projector
from game.learning.edits import RELABEL, UNSURE, cluster_geometry, target_label
from game.nets.network import Inference, Network, top_k

Progress = Callable[[float, str], None]


class FineTuneDiverged(RuntimeError):
    """The loss, the weights or the outputs became NaN or infinite."""


class FineTuneCancelled(RuntimeError):
    """The job was cancelled (e.g. by an undo) before it finished."""


# --- the frozen stem and the trainable head ----------------------------------------------------


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

    def preconditioned_inputs(self, is_train: np.ndarray) -> torch.Tensor:
        """``inputs @ preconditioner``, once: a step then costs one more head-sized matmul, not D^3."""
        if self.preconditioned is None:
            self.preconditioned = self.inputs @ self.preconditioner(is_train)
        return self.preconditioned

    def preconditioner(self, is_train: np.ndarray, damping: float = 0.005) -> torch.Tensor:
        """The inverse second moment of the head's inputs (computed once; the inputs never change).

        Multiplying the first head layer's weight gradient by it gives the update that changes the
        edited images' outputs most while changing typical other inputs least (the minimum-change
        edit of model-editing methods): plain gradients move every image alike, because the stem's
        outputs share a large common component.
        """
        if self.inverse_moment is None:
            x = self.inputs[torch.from_numpy(np.flatnonzero(is_train))].double()
            moment = x.T @ x / max(len(x), 1)
            moment += damping * float(moment.diagonal().mean()) * torch.eye(len(moment), dtype=moment.dtype)
            self.inverse_moment = torch.linalg.inv(moment).float()
        return self.inverse_moment


def _has_trainable_bias(module: nn.Module) -> bool:
    bias = getattr(module, "bias", None)
    return isinstance(module, nn.Linear) and bias is not None and bias.requires_grad


def _classifier(module: nn.Module) -> nn.Sequential | None:
    head = getattr(module, "classifier", None)
    return head if isinstance(head, nn.Sequential) else None


def head_start(module: nn.Module, head_layers: int) -> int | None:
    """Index in ``module.classifier`` of the first trainable layer (None: no classifier Sequential)."""
    head = _classifier(module)
    if head is None:
        return None
    linear = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
    if not linear:
        return None
    return linear[-min(head_layers, len(linear))]


def head_parameter_names(module: nn.Module, start: int) -> list[str]:
    """Full names of the parameters of ``classifier[start:]``."""
    head = _classifier(module)
    assert head is not None
    names = list(head._modules)[start:]
    return [
        f"classifier.{n}.{p}"
        for n in names
        for p, _ in head._modules[n].named_parameters()  # type: ignore[union-attr]
    ]


def frozen_stem_names(network: Network, stem: StemCache | None, full: bool) -> list[str]:
    """Parameters a head-only job never reads (the stem's outputs are cached) nor changes: its
    copy of the network shares them instead of copying them."""
    if full or stem is None:
        return []
    head = set(head_parameter_names(network.module, stem.start))
    return [n for n, _ in network.module.named_parameters() if n not in head]


def feature_layer_in_head(network: Network, start: int) -> bool:
    """True when the feature layer is part of ``classifier[start:]`` (so the head makes it)."""
    head = _classifier(network.module)
    if head is None or not network.feature_layer.startswith("classifier."):
        return False
    name = network.feature_layer.split(".", 1)[1]
    keys = list(head._modules)
    return name in keys and keys.index(name) >= start


def compute_stem_cache(
    network: Network, images: np.ndarray, head_layers: int, batch_size: int = 256
) -> StemCache | None:
    """Run the frozen stem once over every image; None when the network cannot be split so."""
    start = head_start(network.module, head_layers)
    if start is None or not feature_layer_in_head(network, start):
        return None
    t0 = time.perf_counter()
    head = _classifier(network.module)
    assert head is not None
    captured: list[torch.Tensor] = []
    handle = head[start].register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            network.module.eval()
            for s in range(0, len(images), batch_size):
                network.module(network.preprocess(images[s : s + batch_size]))
    finally:
        handle.remove()
    return StemCache(start, torch.cat(captured).float().contiguous(), time.perf_counter() - t0)


class _Runner:
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
        if self.stem is None and images[:1].size * len(images) <= 50_000_000:
            self._preprocessed = network.preprocess(images)  # small datasets: preprocess once

    def split_first_layer(self) -> tuple[nn.Parameter | None, list[nn.Parameter]]:
        """The weight of the head's first Linear layer (fed by the stem cache), and the rest."""
        if self.stem is None:
            return None, list(self.params)
        head = _classifier(self.network.module)
        assert head is not None
        first = head[self.stem.start].weight
        return first, [p for p in self.params if p is not first]

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
        layer = dict(self.network.module.named_modules())[self.network.feature_layer]
        captured: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            x = self.stem.inputs[torch.from_numpy(idx)]
            for i, m in enumerate(list(head)[self.stem.start :]):
                if i == 0 and self.own_first_gradient and m is not layer and _has_trainable_bias(m):
                    # The caller sets this layer's weight gradient itself (preconditioned): skip
                    # autograd's, a (D x D) product per step (AlexNet's fc7: 16.8 M numbers).
                    x = F.linear(x, m.weight.detach(), m.bias)
                else:
                    x = m(x)
                if i == 0:
                    self.last_pre_activation = x
        finally:
            handle.remove()
        return x, captured[-1].flatten(1)

    @torch.no_grad()
    def infer_all(self, batch_size: int = 1024) -> Inference:
        """Features and top-5 of every image under the current weights (``Network.infer``'s output)."""
        self.network.module.eval()
        if self.stem is None:
            return self.network.infer(self.images)
        feats, logits_all = [], []
        n = len(self.images)
        for s in range(0, n, batch_size):
            logits, f = self.forward(np.arange(s, min(s + batch_size, n)))
            feats.append(f.float().numpy())
            logits_all.append(logits.float().numpy())
        logits = np.concatenate(logits_all).astype(np.float32)
        return Inference(np.concatenate(feats).astype(np.float32), *top_k(logits), logits)


# --- request and result -----------------------------------------------------------------------


@dataclass
class FineTuneRequest:
    """Everything a job needs, snapshotted on the main thread (the job never reads the workspace).

    ``labels``, ``features`` and ``layout`` are those of the current model version; ``layout``'s
    positions are where cards were before the person dragged them.
    """

    version: int
    network: Network
    images: np.ndarray
    labels: np.ndarray
    is_train: np.ndarray
    features: np.ndarray
    layout: LayoutState
    edits: list[EditQueued]
    config: LearningConfig
    projector: Projector
    n_classes: int
    stem: StemCache | None = None
    seed: int = 0


@dataclass
class EditOutcome:
    """What became of one edit after the job."""

    card: int
    action: str
    old_label: int
    new_label: int
    repeats: int
    drop_position: tuple[float, float, float]
    final_position: tuple[float, float, float]
    nearest_class: int
    ended_nearest_target: bool
    predicted: int


@dataclass
class FineTuneResult:
    version: int
    network: Network
    weights: bytes  # safetensors of the parameters the job could change
    weight_names: list[str]
    labels: np.ndarray
    inference: Inference
    layout: LayoutState
    outcomes: list[EditOutcome]
    steps: int
    learned: bool
    losses: list[float]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, class_names: list[str]) -> str:
        """One line per edit, for the person (and the CLI)."""
        lines = [
            f"model v{self.version}: {self.steps} steps, {'edits learned' if self.learned else 'stopped at max_steps'}"
        ]
        for o in self.outcomes:
            x, y, z = o.final_position
            where = "in" if o.ended_nearest_target else "NOT in"
            lines.append(
                f"card {o.card} {o.action} {class_names[o.old_label]} -> {class_names[o.new_label]}: "
                f"now predicted {class_names[o.predicted]}, at ({x:.2f}, {y:.2f}, {z:.2f}) "
                f"{where} cluster {class_names[o.new_label]} (nearest: {class_names[o.nearest_class]})"
            )
        return "\n".join(lines)


# --- the job -----------------------------------------------------------------------------------


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
    return (p - pu @ middle).float()


def w_edit_sum_ratio(repeats: np.ndarray) -> float:
    """Sum over mean of the edit weights: undoes the loss's weighted averaging per edit."""
    return float(repeats.sum() / repeats.max()) if len(repeats) else 1.0


def latest_edits(edits: list[EditQueued]) -> list[EditQueued]:
    """One edit per card, the latest one winning (a card moved twice means its last drop)."""
    by_card: dict[int, EditQueued] = {}
    for e in edits:
        by_card.pop(e.card, None)
        by_card[e.card] = e
    return list(by_card.values())


def _nearest(positions: np.ndarray, candidates: np.ndarray, point: np.ndarray, k: int) -> np.ndarray:
    d = np.linalg.norm(positions[candidates] - point[None, :], axis=1)
    order = np.argsort(d, kind="stable")[:k]
    return candidates[order]


def _state_bytes(module: nn.Module, names: list[str]) -> bytes:
    from safetensors.torch import save

    state = module.state_dict()
    return save({n: state[n].detach().contiguous().cpu().clone() for n in names})


def _check_finite(what: str, *arrays: np.ndarray | torch.Tensor) -> None:
    for a in arrays:
        ok = torch.isfinite(a).all().item() if isinstance(a, torch.Tensor) else np.isfinite(a).all()
        if not ok:
            raise FineTuneDiverged(f"{what} became NaN or infinite")


def _stop_if_cancelled(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise FineTuneCancelled("the fine-tune was cancelled")


def run_finetune(
    req: FineTuneRequest,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> FineTuneResult:
    """Train a clone of ``req.network`` on the edits, re-infer every image, and re-lay them out."""
    cfg = req.config
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(req.seed)
    rng = np.random.default_rng(req.seed)
    network = req.network.clone(share=frozen_stem_names(req.network, req.stem, cfg.full_finetune))
    runner = _Runner(network, req.images, req.stem, cfg.full_finetune)
    n = len(req.images)

    edits = [e for e in latest_edits(req.edits) if e.action != UNSURE or cfg.train_unsure]
    if not edits:
        raise ValueError("a fine-tune job needs at least one trainable edit")
    cards = np.array([e.card for e in edits], dtype=np.int64)
    targets = np.array([target_label(e) for e in edits], dtype=np.int64)
    repeats = np.array([max(e.repeats, 1) for e in edits], dtype=np.float32)
    is_relabel = torch.tensor([e.action == RELABEL for e in edits])

    # Neighbourhoods in the current model's layout (before any drag): around the drop, and
    # around where the card was. Edited cards are never anyone's neighbour.
    positions = np.asarray(req.layout.positions, dtype=np.float64)
    others = np.setdiff1d(np.arange(n), cards)
    k = min(cfg.neighbours, len(others))
    drop_nb = np.stack([_nearest(positions, others, np.asarray(e.position), k) for e in edits])
    old_nb = np.stack([_nearest(positions, others, positions[e.card], k) for e in edits])
    nb_cards, nb_inverse = np.unique(np.concatenate([drop_nb.ravel(), old_nb.ravel()]), return_inverse=True)
    drop_rows = torch.from_numpy(len(cards) + nb_inverse[: drop_nb.size].reshape(drop_nb.shape))
    old_rows = torch.from_numpy(len(cards) + nb_inverse[drop_nb.size :].reshape(old_nb.shape))

    # The replay pool: unedited training images with their current labels.
    pool = np.flatnonzero(req.is_train & ~np.isin(np.arange(n), cards))
    if len(pool) > cfg.replay_samples:
        pool = np.sort(rng.choice(pool, cfg.replay_samples, replace=False))
    batch = min(cfg.replay_batch, len(pool))

    feats0 = np.asarray(req.features, dtype=np.float64)
    spread = float(np.sqrt(((feats0 - feats0.mean(0)) ** 2).sum(1).mean())) or 1.0
    pull_spread = spread
    if runner.stem is not None:
        with torch.no_grad():
            runner.forward(pool[: min(len(pool), 512)])
            z = runner.last_pre_activation.double()  # type: ignore[union-attr]
            pull_spread = float(((z - z.mean(0)) ** 2).sum(1).mean().sqrt()) or 1.0
    feats0_t = torch.from_numpy(np.asarray(req.features, dtype=np.float32))
    labels_t = torch.from_numpy(np.asarray(req.labels, dtype=np.int64))
    fixed_rows = np.concatenate([cards, nb_cards])
    fixed_y = torch.cat([torch.from_numpy(targets), labels_t[torch.from_numpy(nb_cards)]])
    fixed_w = torch.cat([torch.from_numpy(repeats), torch.ones(len(nb_cards))])
    ne = len(cards)
    times["prepare"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    first, others = runner.split_first_layer()
    precond = req.stem.preconditioner(req.is_train) if req.stem is not None and first is not None else None
    xp_all = req.stem.preconditioned_inputs(req.is_train) if precond is not None else None  # type: ignore[union-attr]
    if precond is not None and cfg.protect_neighbours > 0:
        xp_all = None
        precond = protect_lookalikes(
            precond, req.stem.inputs, cards, cfg.protect_neighbours, cfg.protect_weight
        )  # type: ignore[union-attr]
    if precond is not None:
        assert first is not None
        runner.own_first_gradient = True
        x_e = req.stem.inputs[torch.from_numpy(cards)]  # type: ignore[union-attr]
        q = float(((x_e @ precond) * x_e).sum(1).mean())
        # One step moves the edited images' pre-activations about ``edit_step`` of the way.
        edit_lr = cfg.edit_step * pull_spread**2 / (2.0 * max(q, 1e-12)) * float(w_edit_sum_ratio(repeats))
        edit_opt = torch.optim.SGD([first], lr=edit_lr)
        optimiser = torch.optim.Adam(others, lr=cfg.learning_rate) if others else None
    else:
        edit_opt = None
        optimiser = torch.optim.Adam(runner.params, lr=cfg.learning_rate)
    network.module.eval()  # no dropout: deterministic, and the features match inference
    losses: list[float] = []
    learned = False
    steps = 0
    y_edit = torch.from_numpy(targets)
    w_edit = torch.from_numpy(repeats)
    for step in range(cfg.max_steps):
        _stop_if_cancelled(cancelled)
        replay = np.sort(rng.choice(pool, batch, replace=False)) if batch else np.empty(0, np.int64)
        rows = np.concatenate([fixed_rows, replay])
        y = torch.cat([fixed_y, labels_t[torch.from_numpy(replay)]])
        w = torch.cat([fixed_w, torch.ones(len(replay))])
        logits, feats = runner.forward(rows)
        ce = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
        # Pull and push act on the first head layer's output before its ReLU when there is one:
        # after the ReLU, units the target needs but the edited image has switched off get no
        # gradient, and the pull stalls halfway.
        space = runner.last_pre_activation if runner.last_pre_activation is not None else feats
        f_edit = space[:ne]
        target = space[drop_rows].mean(1).detach()
        old = space[old_rows].mean(1).detach()
        d_t = (f_edit - target).norm(dim=1) / pull_spread
        d_o = (f_edit - old).norm(dim=1) / pull_spread
        push = torch.where(is_relabel, F.relu(cfg.feature_margin + d_t - d_o), torch.zeros_like(d_t))
        feature_term = ((d_t**2 + push) * w_edit).sum() / w_edit.sum()
        # Unconcerned cards keep their features, so the re-layout keeps their neighbourhoods.
        drift = ((feats[ne:] - feats0_t[torch.from_numpy(rows[ne:])]) ** 2).sum(1).mean() / spread**2
        loss = ce + cfg.feature_weight * feature_term + cfg.preserve_weight * drift
        _check_finite(f"the loss at step {step}", loss)
        losses.append(float(loss.item()))
        with torch.no_grad():
            correct = bool((logits[:ne].argmax(1) == y_edit).all())
            nearer = bool(torch.where(is_relabel, d_t < d_o, torch.ones_like(d_t, dtype=torch.bool)).all())
        if correct and nearer and step >= cfg.min_steps:
            learned = True
            break
        for opt in (optimiser, edit_opt):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
        z = runner.last_pre_activation
        if edit_opt is not None and z is not None:
            z.retain_grad()
        loss.backward()
        if edit_opt is not None and first is not None and z is not None and z.grad is not None:
            # The Linear layer's weight gradient is G^T X; preconditioned: G^T (X P).
            rows_t = torch.from_numpy(rows)
            xp = xp_all[rows_t] if xp_all is not None else req.stem.inputs[rows_t] @ precond  # type: ignore[union-attr]
            first.grad = z.grad.T @ xp
            edit_opt.step()
        if optimiser is not None:
            optimiser.step()
        steps = step + 1
        if progress is not None:
            progress(0.8 * steps / cfg.max_steps, f"training step {steps}")
    trained = set(runner.trainable_names)
    for name, p in network.module.named_parameters():
        if name in trained:
            _check_finite(f"weight {name}", p.detach())
        if runner.stem is None or name in trained:  # as ``_Runner`` found them (shared ones untouched)
            p.requires_grad_(True)
    times["train"] = time.perf_counter() - t1

    _stop_if_cancelled(cancelled)
    t2 = time.perf_counter()
    inference = runner.infer_all()
    _check_finite("the network's outputs", inference.logits, inference.features)
    times["infer"] = time.perf_counter() - t2
    if progress is not None:
        progress(0.85, "re-laying out")

    _stop_if_cancelled(cancelled)
    t3 = time.perf_counter()
    labels = np.asarray(req.labels, dtype=np.int64).copy()
    for e in edits:
        labels[e.card] = target_label(e)
    anchors = None
    if cfg.anchor_edits:
        anchors = np.full((n, 3), np.nan)
        for e in edits:
            anchors[e.card] = e.position
    layout = relayout(req.projector, inference.features, req.layout, cfg, anchors, req.features, cards)
    times["layout"] = time.perf_counter() - t3

    outcomes = [
        _outcome(e, layout.positions, labels, req.n_classes, int(inference.top5_classes[e.card, 0]))
        for e in edits
    ]
    weights = _state_bytes(network.module, runner.trainable_names)
    times["total"] = time.perf_counter() - t0
    if progress is not None:
        progress(1.0, "done")
    return FineTuneResult(
        req.version,
        network,
        weights,
        runner.trainable_names,
        labels,
        inference,
        layout,
        outcomes,
        steps,
        learned,
        losses,
        times,
    )


def relayout(
    projector: Projector,
    features: np.ndarray,
    previous: LayoutState,
    cfg: LearningConfig,
    anchors: np.ndarray | None = None,
    previous_features: np.ndarray | None = None,
    edited: np.ndarray | None = None,
) -> LayoutState:
    """The re-layout after a job, with the learning settings (``cfg.relayout``).

    "local" (needs ``previous_features``): ``Projector.update_local`` moves the ``edited`` cards
    and those whose feature neighbourhood changed. "full": ``Projector.update`` with few
    iterations and exact affinities when small (openTSNE's exact affinities are several times
    faster than its approximate ones below a few thousand points; the first layout is unaffected).
    """
    if len(features) < cfg.exact_affinities_below:  # also for a local update's full fallback
        projector = _ExactAffinityProjector(projector.config, projector.n_jobs)
    if cfg.relayout == "local" and previous_features is not None:
        return projector.update_local(
            features,
            previous,
            previous_features,
            keep=cfg.relayout_keep,
            move=edited,
            iterations=cfg.layout_iterations,
            anchors=anchors,
        )
    return projector.update(features, previous, iterations=cfg.layout_iterations, anchors=anchors)


class _ExactAffinityProjector(Projector):
    def affinity_method(self, n_points: int) -> str:
        return "exact"


def _outcome(
    e: EditQueued, positions: np.ndarray, labels: np.ndarray, n_classes: int, predicted: int
) -> EditOutcome:
    centroids, _ = cluster_geometry(positions, labels, n_classes, 90.0, exclude=e.card)
    d = np.linalg.norm(centroids - positions[e.card][None, :], axis=1)
    d = np.where(np.isnan(d), np.inf, d)
    nearest = int(np.argmin(d))
    p = positions[e.card]
    return EditOutcome(
        e.card,
        e.action,
        e.old_label,
        target_label(e),
        e.repeats,
        e.position,
        (float(p[0]), float(p[1]), float(p[2])),
        nearest,
        nearest == target_label(e),
        predicted,
    )
