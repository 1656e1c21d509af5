"""The fine-tune step: edited images + replay + a feature-space term, then re-inference and re-layout.

Why each piece is here (measured on digits):

* **Replay.** Cross-entropy on the edited images alone wrecks the network (one relabel with plain
  SGD dropped held-out accuracy from 94.6% to 12.8%). Every step therefore also trains on a
  seeded sample of unedited training images with their current labels, and on the cards around
  the edit (they anchor both the cluster the card leaves and the one it joins). Held-out cards
  among those neighbours are not trained with their labels (``train_heldout``): they were, and
  the suite's held-out accuracy then partly measured trained cards (issue 13).
* **Feature-space term.** A flipped prediction is not enough: the re-layout puts the card back
  into its old cluster because its look-alike neighbours move with it. So each edited image's
  features are pulled towards the mean features of the ``neighbours`` cards nearest its *drop
  position* and, for relabels, pushed away from the mean of its *old* neighbours (a triplet loss
  with margin ``feature_margin``; distances in units of the features' spread). Targets are the
  neighbours' live features, detached: the edited card moves, its neighbours are held by replay.
* **Early stopping.** Training stops once every edit is learned (predicted as its target and,
  for relabels, nearer the new neighbours than the old) after ``min_steps``; ``max_steps`` caps it.
  With ``check_samples`` (256 since issue 13) the job sets aside that many training cards that it
  never trains (drawn from their own generator, so replay is as without them), and once the edits
  are learned it goes on while their cross-entropy, weighted by label trust, falls
  (``check_loss``), as long as the starting network did not memorise the labels the guidance
  distrusts (``memorised_share`` below one half). Why (issue 13's suite): the networks that never
  fitted their noise (shapes, photo crops) gained from more steps on trusted labels (cross-entropy
  with label trust ran 50-60 steps per edit and was ahead by up to 2.9 points), the memorised
  digits lost from them (their check loss keeps falling a little at every step: confidence only).
  Where the check runs, such a job replays every trusted training card at every step instead of a
  ``replay_batch`` sample, up to ``replay_all_up_to`` of them (``replay_rest``; 4096 since issue 13:
  it met shapes' loss p95 and kept photo crops' gain; above the cap it samples, at the old cost).
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

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from game.core.events import EditQueued
from game.core.scene import LearningConfig
from game.layout.projector import LayoutState, Projector, Reduction, RowProjection, available_cores
from game.learning.edits import RELABEL, UNSURE, cluster_geometry, target_label
from game.learning.loss import LossFn, LossWeights, StepTargets, edits_learned, finetune_loss
from game.learning.preview import Preview, place_preview, preview_rows, rows_features, wants_preview
from game.learning.replay_trust import DROP_ABOVE, label_trust, memorised, pull_share
from game.learning.stem import (  # re-exported: the controller, the job process and tests use them
    DEFAULT_DAMPING,
    LARGE_JOB_CARDS,
    Runner,
    StemCache,
    compute_stem_cache,
    feature_layer_in_head,
    frozen_stem_names,
    head_parameter_names,
    head_start,
    protect_lookalikes,
)
from game.nets.network import Inference, Network
from game.nets.split import head_multiply_adds
from game.nets.weights import state_to_bytes

if TYPE_CHECKING:
    from game.learning.head_update import PreActivations

_Runner = Runner  # the name tests and benchmarks knew
__all__ = [  # with the stem's names, re-exported for the controller, the job process and tests
    "DEFAULT_DAMPING",
    "EditBatch",
    "FineTuneCancelled",
    "FineTuneDiverged",
    "FineTuneRequest",
    "FineTuneResult",
    "HeadOptimiser",
    "Runner",
    "StemCache",
    "compute_stem_cache",
    "feature_layer_in_head",
    "finetune_loss",
    "frozen_stem_names",
    "head_parameter_names",
    "head_start",
    "make_optimiser",
    "prepare_batch",
    "protect_lookalikes",
    "relayout",
    "run_finetune",
    "train",
]

Progress = Callable[[float, str], None]


class FineTuneDiverged(RuntimeError):
    """The loss, the weights or the outputs became NaN or infinite."""


class FineTuneCancelled(RuntimeError):
    """The job was cancelled (e.g. by an undo) before it finished."""


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
    # Called (on the job's thread) with the preview of the cards near the edits, before the full
    # result, when the job is large enough (``preview.wants_preview``). Never pickled: the job
    # process sends its own. None: no preview.
    on_preview: Callable[[Preview], None] | None = field(default=None, repr=False, compare=False)


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


_FINITE_BLOCK = 1 << 20  # elements per block of ``_check_finite``'s test on a numpy array


def _check_finite(what: str, *arrays: np.ndarray | torch.Tensor) -> None:
    for a in arrays:
        if isinstance(a, torch.Tensor):
            ok = bool(torch.isfinite(a).all().item())
        else:
            # In blocks of rows: one boolean array of every element is 200 MB at 50k x 4,096.
            a = np.asarray(a)
            if a.ndim == 0 or a.size <= _FINITE_BLOCK:
                ok = bool(np.isfinite(a).all())
            else:
                rows = max(1, _FINITE_BLOCK // max(1, a[0].size))
                ok = all(bool(np.isfinite(a[s : s + rows]).all()) for s in range(0, len(a), rows))
        if not ok:
            raise FineTuneDiverged(f"{what} became NaN or infinite")


def _stop_if_cancelled(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise FineTuneCancelled("the fine-tune was cancelled")


# --- step 1: the batch --------------------------------------------------------------------------


@dataclass
class EditBatch:
    """The edits of a job and the rows every training step shares (fixed for the whole job).

    Rows ``0..n_edits`` are the edited cards (target label, weight = repeats), then the cards
    around each drop and around each edited card's old place (current label, weight 1);
    ``replay_pool`` is where each step samples ``replay_batch`` more (current labels).
    """

    edits: list[EditQueued]
    cards: np.ndarray  # (E,) int64
    targets: np.ndarray  # (E,) int64
    repeats: np.ndarray  # (E,) float32
    is_relabel: torch.Tensor  # (E,) bool
    neighbour_cards: np.ndarray  # cards around the drops and the old places (no edited card)
    drop_rows: torch.Tensor  # (E, k): rows of the step (into fixed_rows) around each drop
    old_rows: torch.Tensor  # (E, k): rows around each edited card's old place
    replay_pool: np.ndarray
    replay_batch: int
    labels: torch.Tensor  # (N,) current labels
    features: torch.Tensor  # (N, F) features before the job
    # Per neighbour card: 1.0 when its label is trained (a training card), 0.0 for a held-out card
    # (its features still set the pull's target and are held by the drift). None: all trained.
    neighbour_trained: np.ndarray | None = None
    # (N,) cross-entropy weight of each card's label from the guidance's suspicion
    # (``label_trust``, ``game.learning.replay_trust``); None: every label trusted.
    trust: np.ndarray | None = None
    # Training cards held out of this job's training (``check_samples``): their cross-entropy
    # decides when the job stops once its edits are learned. None: stop as soon as they are.
    check_pool: np.ndarray | None = None
    # Makes ``replay_rest`` and its trust (``finetune.replay_rest``) when first asked: only a job
    # whose check runs reads them, and a memorised network's job (the check never runs) would pay
    # for a ``label_trust`` call it never uses (35 ms on digits). None: there are none.
    rest_source: Callable[[], tuple[np.ndarray | None, np.ndarray | None]] | None = field(
        default=None, repr=False
    )
    _rest: tuple[np.ndarray | None, np.ndarray | None] | None = field(default=None, init=False, repr=False)

    def _replay_rest(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._rest is None:
            self._rest = self.rest_source() if self.rest_source is not None else (None, None)
        return self._rest

    @property
    def replay_rest(self) -> np.ndarray | None:
        """Every other trusted training card (outside the edits, neighbours, replay pool and check
        cards), from a ``label_trust`` call of its own (so ``trust``, and the memorised share it
        gives, are as without it): a job whose check runs replays these and the whole pool at every
        step (``replay_all_up_to``). None: it samples ``replay_batch``."""
        return self._replay_rest()[0]

    @property
    def replay_rest_trust(self) -> np.ndarray | None:
        """The cross-entropy weight of each card of ``replay_rest``."""
        return self._replay_rest()[1]

    @property
    def n_edits(self) -> int:
        return len(self.cards)

    @property
    def fixed_rows(self) -> np.ndarray:
        return np.concatenate([self.cards, self.neighbour_cards])

    @property
    def fixed_labels(self) -> torch.Tensor:
        return torch.cat(
            [torch.from_numpy(self.targets), self.labels[torch.from_numpy(self.neighbour_cards)]]
        )

    @property
    def fixed_weights(self) -> torch.Tensor:
        trained = (
            torch.ones(len(self.neighbour_cards))
            if self.neighbour_trained is None
            else torch.from_numpy(self.neighbour_trained)
        )
        return torch.cat([torch.from_numpy(self.repeats), trained])


def trainable_edits(edits: list[EditQueued], cfg: LearningConfig) -> list[EditQueued]:
    """The latest edit per card, unsure ones only when ``train_unsure``."""
    return [e for e in latest_edits(edits) if e.action != UNSURE or cfg.train_unsure]


def neighbourhoods(
    positions: np.ndarray, edits: list[EditQueued], cards: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` cards nearest each drop and each edited card's old place, in the current layout
    (before any drag). Edited cards are never anyone's neighbour.

    Returns the neighbour cards (sorted, unique) and, per edit, the rows (into edited cards then
    neighbour cards) of its drop neighbours and of its old neighbours.
    """
    others = np.setdiff1d(np.arange(len(positions)), cards)
    k = min(k, len(others))
    drop_nb = np.stack([_nearest(positions, others, np.asarray(e.position), k) for e in edits])
    old_nb = np.stack([_nearest(positions, others, positions[e.card], k) for e in edits])
    nb_cards, nb_inverse = np.unique(np.concatenate([drop_nb.ravel(), old_nb.ravel()]), return_inverse=True)
    drop_rows = len(cards) + nb_inverse[: drop_nb.size].reshape(drop_nb.shape)
    old_rows = len(cards) + nb_inverse[drop_nb.size :].reshape(old_nb.shape)
    return nb_cards, drop_rows, old_rows


def replay_pool(is_train: np.ndarray, cards: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded sample of ``size`` unedited training images (all of them when fewer)."""
    n = len(is_train)
    pool = np.flatnonzero(is_train & ~np.isin(np.arange(n), cards))
    if len(pool) > size:
        pool = np.sort(rng.choice(pool, size, replace=False))
    return pool


def prepare_batch(req: FineTuneRequest, rng: np.random.Generator) -> EditBatch:
    """Edit selection, neighbourhoods and the replay pool of a job."""
    cfg = req.config
    edits = trainable_edits(req.edits, cfg)
    if not edits:
        raise ValueError("a fine-tune job needs at least one trainable edit")
    cards = np.array([e.card for e in edits], dtype=np.int64)
    positions = np.asarray(req.layout.positions, dtype=np.float64)
    nb_cards, drop_rows, old_rows = neighbourhoods(positions, edits, cards, cfg.neighbours)
    pool = replay_pool(req.is_train, cards, cfg.replay_samples, rng)
    check = None
    if cfg.check_samples:  # its own generator: the replay and its steps are as without the check
        spare = np.asarray(req.is_train, dtype=bool).copy()
        spare[np.concatenate([pool, nb_cards])] = False
        check = replay_pool(spare, cards, cfg.check_samples, np.random.default_rng([req.seed, CHECK_STREAM]))
    rest_source = functools.partial(
        replay_rest, req, edits, nb_cards, pool, check
    )  # this pool: before "drop"
    trust = None
    if cfg.label_trust != "none":
        trust = label_trust(
            req.features,
            relabelled(req.labels, edits),
            req.n_classes,
            np.concatenate([nb_cards, pool] + ([] if check is None else [check])),
            cfg.label_trust,
        )
        if cfg.label_trust == "drop":
            pool = pool[trust[pool] > 0]
            if check is not None:
                check = check[trust[check] > 0]
    return EditBatch(
        edits=edits,
        cards=cards,
        targets=np.array([target_label(e) for e in edits], dtype=np.int64),
        repeats=np.array([max(e.repeats, 1) for e in edits], dtype=np.float32),
        is_relabel=torch.tensor([e.action == RELABEL for e in edits]),
        neighbour_cards=nb_cards,
        drop_rows=torch.from_numpy(drop_rows),
        old_rows=torch.from_numpy(old_rows),
        replay_pool=pool,
        replay_batch=min(cfg.replay_batch, len(pool)),
        labels=torch.from_numpy(np.asarray(req.labels, dtype=np.int64)),
        features=torch.from_numpy(np.asarray(req.features, dtype=np.float32)),
        neighbour_trained=None
        if cfg.train_heldout
        else np.asarray(req.is_train, dtype=bool)[nb_cards].astype(np.float32),
        trust=trust,
        check_pool=check if check is not None and len(check) else None,
        rest_source=rest_source,
    )


def replay_rest(
    req: FineTuneRequest,
    edits: list[EditQueued],
    nb_cards: np.ndarray,
    pool: np.ndarray,
    check: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The trusted training cards a job replays at every step, besides its replay pool, should its
    check run (``EditBatch.replay_rest``), and their weights; (None, None) where it never would
    (no check cards or no label trust: ``memorised_share`` is then 1) or where the training cards
    outside the edits, neighbours and check cards outnumber ``replay_all_up_to``, or would cost a
    step more than ``replay_all_max_cost`` multiply-adds through the head (an AlexNet-sized one;
    their trust is then not even judged: a large dataset's job costs what it did).

    Why (issue 13's suite, docs/benchmarks.md): on networks that never fitted their noise, a random
    ``replay_batch`` per step left shapes' worst edits' held-out loss above its goal; every trusted
    card at every step met it and kept photo crops' gain."""
    cfg = req.config
    if check is None or cfg.label_trust == "none" or not cfg.replay_all_up_to:
        return None, None
    free = np.asarray(req.is_train, dtype=bool).copy()
    free[np.concatenate([[e.card for e in edits], nb_cards, check]).astype(np.int64)] = False
    if int(free.sum()) > cfg.replay_all_up_to:
        return None, None
    if cfg.replay_all_max_cost:
        per_card = head_multiply_adds(req.network.module, cfg.head_layers)
        if int(free.sum()) * per_card > cfg.replay_all_max_cost:
            return None, None  # a real-size head: every card at every step costs minutes a drop
    free[pool] = False  # the pool keeps the batch's own trust
    rest = np.flatnonzero(free)
    trust = label_trust(
        req.features,
        relabelled(req.labels, edits),
        req.n_classes,
        rest,
        cfg.label_trust,
    )
    if cfg.label_trust == "drop":
        rest = rest[trust[rest] > 0]
    return rest, trust[rest].astype(np.float32)


CHECK_STREAM = 1  # the check cards' generator is seeded with (the job's seed, this)


@dataclass(frozen=True)
class Scales:
    """Units of the loss's distances: the features' spread (drift) and that of the space the
    pull acts in (the first head layer's pre-activation when the stem is cached)."""

    spread: float
    pull_spread: float


SPREAD_CHUNK_ROWS = 4096  # rows per float64 block when the features are large (see _spread)
SPREAD_WHOLE_BELOW = 1 << 22  # elements: below this the spread is computed in one float64 block


def _spread(x: np.ndarray | torch.Tensor) -> float:
    """Root mean squared distance to the mean (NaN for no rows).

    Small arrays (the embedded scenes) take one float64 block, as they always did, so their
    fine-tunes stay bitwise what recorded sessions hold. Large ones (50k cards x 4,096) are
    summed in float64 blocks of rows: one float64 copy of every card's features is 1.6 GB, and
    the expression's temporaries tripled it in the job process.
    """
    if isinstance(x, torch.Tensor):
        return float(((x - x.mean(0)) ** 2).sum(1).mean().sqrt())
    if x.size < SPREAD_WHOLE_BELOW or len(x) == 0:
        x64 = np.asarray(x, dtype=np.float64)
        return float(np.sqrt(((x64 - x64.mean(0)) ** 2).sum(1).mean()))
    n = len(x)
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, n, SPREAD_CHUNK_ROWS):
        total += x[start : start + SPREAD_CHUNK_ROWS].sum(0, dtype=np.float64)
    mean = total / n
    squares = 0.0
    for start in range(0, n, SPREAD_CHUNK_ROWS):
        block = x[start : start + SPREAD_CHUNK_ROWS].astype(np.float64) - mean
        squares += float(np.einsum("ij,ij->", block, block))
    return float(np.sqrt(squares / n))


_SPREADS: list[tuple[weakref.ref[np.ndarray], float]] = []
_SPREADS_LOCK = threading.Lock()


def features_spread(features: np.ndarray) -> float:
    """``_spread`` of ``features``, remembered for this very array (by identity, dropped with it).

    Why: a job measures the spread of every card's features before it trains (1.5 s at 50,000 x
    4,096 on one core), and those are the previous job's result. ``remember_spread`` computes it
    while the job process (or the worker) waits for the next drop, so the next job, whose
    preview is what the person waits for, finds it. The same function on the same array: the
    same number."""
    if isinstance(features, np.ndarray):
        with _SPREADS_LOCK:
            for ref, value in _SPREADS:
                if ref() is features:
                    return value
    value = _spread(np.asarray(features))
    remember_spread(features, value)
    return value


def remember_spread(features: np.ndarray, value: float | None = None) -> None:
    """Compute (unless given) and keep ``features``' spread for ``features_spread`` (two kept)."""
    if not isinstance(features, np.ndarray):
        return
    if value is None:
        value = features_spread(features)
        return
    with _SPREADS_LOCK:
        kept = [(r, v) for r, v in _SPREADS if r() is not None and r() is not features]
        _SPREADS[:] = [(weakref.ref(features), value), *kept][:2]


def measure_scales(runner: Runner, batch: EditBatch, features: np.ndarray) -> Scales:
    """The spread of every card's features, and of the pull's space over (up to 512) replayed
    images, or the edits and their neighbours when nothing is replayed (``replay_samples = 0``)."""
    spread = features_spread(features) or 1.0
    pull_spread = spread
    if runner.stem is not None:
        sample = batch.replay_pool[: min(len(batch.replay_pool), 512)]
        if not len(sample):
            sample = batch.fixed_rows
        with torch.no_grad():
            z = runner.kept_pre_activations(sample)  # large scenes: no (512 x in x out) product
            if z is None:
                runner.forward(sample)
                z = runner.last_pre_activation
            assert z is not None
            pull_spread = _spread(z.double()) if len(z) > 1 else float("nan")
        if not np.isfinite(pull_spread) or pull_spread <= 0:
            pull_spread = 1.0
    return Scales(spread, pull_spread)


# --- step 2: the optimiser ---------------------------------------------------------------------


class HeadOptimiser:
    """Adam on the trainable parameters, except, when the stem is cached, the first head layer's
    weight: it takes a preconditioned SGD step (``StemCache.preconditioner``) sized so that one
    step moves the edited images' pre-activations about ``edit_step`` of the way."""

    def __init__(
        self,
        adam: torch.optim.Optimizer | None,
        edit: torch.optim.Optimizer | None = None,
        first: nn.Parameter | None = None,
        inputs: torch.Tensor | None = None,
        precond: torch.Tensor | None = None,
        preconditioned: torch.Tensor | None = None,
    ) -> None:
        self.adam = adam
        self.edit = edit
        self.first = first
        self.inputs = inputs
        self.precond = precond
        self.preconditioned = preconditioned  # inputs @ precond for every image, when cached
        self._grad: torch.Tensor | None = None  # the first layer's gradient, reused by every step
        # The first layer's change as the steps make it, when ``record`` is set (``change``).
        self.record = False
        self._record: StepRecord | None = None
        # Training the first layer's weight as factors (``factor``): the kept pre-activations of
        # the starting weights and bias, the change so far being the record's ``A^T B``.
        self._factored: tuple[PreActivations, torch.Tensor | None] | None = None

    @property
    def owns_first_gradient(self) -> bool:
        return self.edit is not None

    def release(self) -> None:
        """Let go of the step's gradient buffer and the optimisers' moments once training is
        over (64 MB each at AlexNet's fc7): the optimiser lives until the job returns, through the
        re-inference and re-layout, the peak of a large scene's job."""
        self._grad = None
        self._record = None
        self._factored = None
        self.zero_grad()
        for opt in (self.adam, self.edit):
            if opt is not None:
                opt.state.clear()

    def zero_grad(self) -> None:
        for opt in (self.adam, self.edit):
            if opt is not None:
                opt.zero_grad(set_to_none=True)

    def before_backward(self, runner: Runner) -> None:
        z = runner.last_pre_activation
        if self.edit is not None and z is not None:
            z.retain_grad()

    def factor(self, runner: Runner, most_cards: int) -> bool:
        """Train the first head layer's weight as the record's factors from here on (large scenes,
        where ``record`` is set and the starting weights' pre-activations are kept): a step adds
        its rows' gradients to the record instead of a (out x in) gradient and update, and the
        layer's output for a step's rows is their kept pre-activations plus ``(x B^T) A``. The
        weight itself changes once, in ``materialise``. False (nothing changes) where that does
        not hold, or where the job could train more than ``head_update.MAX_RECORDED_CARDS``
        distinct cards (``most_cards``; the record would give up).

        Why: at AlexNet's fc7 a step's (out x in) gradient product, its rows' preconditioning and
        its forward through the layer cost about 0.2 CPU s, five or more times per 50k drop, on
        the job's one thread before the re-inference can start (1.1 CPU s of training); the
        factors' products cost milliseconds, each card is preconditioned once, and the weight's
        one update costs about one step (training 0.3-0.5 CPU s; docs/benchmarks.md). The same
        SGD steps (``change``'s sum is exact): the numbers differ from the dense steps' by float
        rounding and by the kept pre-activations' tolerance (within 1e-5 of the largest weight,
        tested), so only from ``LARGE_JOB_CARDS`` cards (the caller's gate)."""
        from game.learning import head_update

        base = runner.base_pre_activations
        layer = runner.first_linear()
        if (
            not self.record
            or self.edit is None
            or self.first is None
            or self.inputs is None
            or base is None
            or layer is None
            or most_cards > head_update.MAX_RECORDED_CARDS
            or base.cards() != len(self.inputs)
            or layer is runner.feature_module()  # its output is captured as the features: left alone
            or not torch.equal(self.first.detach(), base.weight)
        ):
            return False
        bias = None if layer.bias is None else layer.bias.detach().clone()
        if bias is None or base.bias is None:
            if bias is not None or base.bias is not None:
                return False
        elif not torch.equal(bias, base.bias):
            return False
        self._factored = (base, bias)
        out_dim, in_dim = self.first.shape
        self._record = StepRecord(out_dim, in_dim, most=max(most_cards, 1), reserve=most_cards)
        runner.first_layer = self._factored_output
        return True

    def _factored_output(self, idx: np.ndarray, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """The first layer's output for rows ``idx`` (inputs ``x``) under the starting weights
        plus the change recorded so far; autograd reaches the bias, not the weight."""
        assert self._factored is not None and self._record is not None and self.inputs is not None
        base, bias0 = self._factored
        record, count = self._record, len(self._record.slot)
        with torch.no_grad():
            z = base.rows_at(self.inputs, torch.from_numpy(np.asarray(idx, dtype=np.int64)))
            if count and self.edit is not None:
                a = (record.grads[:count] * -float(self.edit.param_groups[0]["lr"])).to(x.dtype)
                z.addmm_(x @ record.inputs[:count].T.to(x.dtype), a)
        z.requires_grad_(True)  # the step reads its gradient, whether or not a bias follows
        if layer.bias is not None and bias0 is not None:
            return z + (layer.bias - bias0)
        return z

    @torch.no_grad()
    def materialise(self, runner: Runner, change: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """After ``factor``ed training: the weight takes the recorded ``change`` (``A^T B``, what
        ``change()`` answers after the last step) and the layer computes its own output again.
        Nothing where the training was not factored."""
        if self._factored is None or self.first is None:
            return
        self.unfactor(runner)
        if change is None or not len(change[0]):
            return
        a, b = change
        threads = torch.get_num_threads()
        try:  # one (out x R x in) product, on two threads where the job has one (as the re-inference)
            torch.set_num_threads(max(threads, min(2, available_cores())))
            self.first.addmm_(a.to(self.first.dtype).T, b.to(self.first.dtype))
        finally:
            torch.set_num_threads(threads)

    def unfactor(self, runner: Runner) -> None:
        """The layer computes its own output again (after training, or when it failed)."""
        runner.first_layer = None
        self._factored = None

    def step(self, runner: Runner, rows: np.ndarray) -> None:
        z = runner.last_pre_activation
        if self._factored is not None and self._record is not None and z is not None and z.grad is not None:
            # The steps' record is the weight's change; no (out x in) gradient, no update here.
            self._record.add_rows(rows, z.grad.detach(), self._preconditioned_rows)
        elif self.edit is not None and self.first is not None and z is not None and z.grad is not None:
            # The Linear layer's weight gradient is G^T X; preconditioned: G^T (X P).
            rows_t = torch.from_numpy(rows)
            if self.preconditioned is not None:
                xp = self.preconditioned[rows_t]
            else:
                assert self.inputs is not None and self.precond is not None
                xp = self.inputs[rows_t] @ self.precond
            # Into one buffer kept for the job (what ``z.grad.T @ xp`` computes, the same BLAS
            # call): a new 64 MB gradient per step (AlexNet's fc7) cost its page faults each time.
            if self._grad is None or self._grad.shape != self.first.shape:
                self._grad = torch.empty_like(self.first, memory_format=torch.contiguous_format)
            self.first.grad = torch.mm(z.grad.T, xp, out=self._grad)
            if self.record:
                if self._record is None:
                    self._record = StepRecord(*self.first.shape)
                self._record.add(rows, z.grad.detach(), xp)
            self.edit.step()
        if self.adam is not None:
            self.adam.step()

    def _preconditioned_rows(self, rows: np.ndarray) -> torch.Tensor:
        """``inputs[rows] @ precond`` (from the kept product where there is one)."""
        rows_t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if self.preconditioned is not None:
            return self.preconditioned[rows_t]
        assert self.inputs is not None and self.precond is not None
        return self.inputs[rows_t] @ self.precond

    def change(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A, B)``, float64, with the first layer's weight change over the job's steps
        ``A^T B`` (``StepRecord``), or None when nothing was recorded (``record`` off, no
        preconditioned step) or the record gave up: the caller searches the difference then.

        Why: the first layer's update is plain SGD on ``G^T (X P)`` (no momentum, no weight
        decay, a constant rate), so its change over a job is exactly this sum, and
        ``head_update.factors_from_steps`` factorises it from these small matrices instead of
        searching the (out x in) difference for its range (about 0.2 CPU s a 50,000-card drop,
        docs/benchmarks.md)."""
        if not self.record or self.edit is None or self.first is None:
            return None
        out_dim, in_dim = self.first.shape
        if self._record is None:  # no step: no change
            return torch.zeros(0, out_dim, dtype=torch.float64), torch.zeros(0, in_dim, dtype=torch.float64)
        return self._record.factors(float(self.edit.param_groups[0]["lr"]))


class StepRecord:
    """A job's first-layer updates as they are made: per distinct card trained, its summed
    pre-activation gradients (float64) and its preconditioned inputs (taken once).

    Why accumulate instead of keeping each step: a job whose check runs replays every trusted card
    at every step (``replay_all_up_to``), thousands of rows a step for up to ``max_steps`` steps
    (32 KB a row at AlexNet's fc7: gigabytes). Past ``head_update.MAX_RECORDED_CARDS`` distinct
    cards the factorisation would not use the record anyway, so it gives up and lets go."""

    def __init__(self, out_dim: int, in_dim: int, most: int | None = None, reserve: int = 0) -> None:
        from game.learning import head_update

        self.most = head_update.MAX_RECORDED_CARDS if most is None else most
        self.slot: dict[int, int] = {}
        # ``reserve`` rows at once (a factored job knows how many cards it can train): no growth.
        self.grads = torch.zeros(reserve, out_dim, dtype=torch.float64)
        self.inputs = torch.zeros(reserve, in_dim)
        self.gave_up = False

    def add_rows(
        self, rows: np.ndarray, grads: torch.Tensor, preconditioned: Callable[[np.ndarray], torch.Tensor]
    ) -> None:
        """``add``, with the preconditioned inputs made (``preconditioned(cards)``) only for the
        cards not recorded yet: a card's never change, and most of a step's were seen before."""
        seen = len(self.slot)
        fresh = np.unique(np.asarray([r for r in rows if int(r) not in self.slot], dtype=np.int64))
        if self.gave_up or seen + len(fresh) > self.most:
            # The record is the only copy of a factored job's change: never give it up silently.
            raise RuntimeError(f"a record sized for {self.most} cards was given {seen + len(fresh)}")
        for r in fresh:
            self.slot[int(r)] = len(self.slot)
        self._grow(len(self.slot))
        if len(fresh):
            self.inputs[seen : len(self.slot)] = preconditioned(fresh).to(self.inputs.dtype)
        index = torch.from_numpy(np.fromiter((self.slot[int(r)] for r in rows), np.int64, len(rows)))
        self.grads.index_add_(0, index, grads.double())

    def _grow(self, count: int) -> None:
        """Room for ``count`` cards (by doubling: a few copies per job, none per step)."""
        if count <= len(self.grads):
            return
        size = min(max(count, 2 * len(self.grads), 64), self.most)
        self.grads = torch.cat(
            [self.grads, self.grads.new_zeros(size - len(self.grads), self.grads.shape[1])]
        )
        self.inputs = torch.cat(
            [self.inputs, self.inputs.new_zeros(size - len(self.inputs), self.inputs.shape[1])]
        )

    def add(self, rows: np.ndarray, grads: torch.Tensor, inputs: torch.Tensor) -> None:
        """One step: ``grads`` (rows x out) and ``inputs`` (rows x in, preconditioned) of ``rows``."""
        if self.gave_up:
            return
        slots = np.fromiter((self.slot.setdefault(int(r), len(self.slot)) for r in rows), np.int64, len(rows))
        count = len(self.slot)
        if count > self.most:
            self.gave_up, self.slot = True, {}
            # New empty tensors: a ``[:0]`` view would keep the buffers' memory alive.
            self.grads = self.grads.new_zeros(0, self.grads.shape[1])
            self.inputs = self.inputs.new_zeros(0, self.inputs.shape[1])
            return
        self._grow(count)
        index = torch.from_numpy(slots)
        self.inputs[index] = inputs.to(self.inputs.dtype)  # a card's preconditioned inputs never change
        self.grads.index_add_(0, index, grads.double())

    def factors(self, rate: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A, B)`` for a constant learning rate ``rate``; None when it gave up."""
        if self.gave_up:
            return None
        count = len(self.slot)
        return self.grads[:count] * -rate, self.inputs[:count].double()


def make_optimiser(
    runner: Runner,
    stem: StemCache | None,
    is_train: np.ndarray,
    batch: EditBatch,
    scales: Scales,
    cfg: LearningConfig,
) -> HeadOptimiser:
    """The job's optimiser; sets ``runner.own_first_gradient`` when it sets that gradient itself."""
    first, rest = runner.split_first_layer()
    if stem is None or first is None:
        return HeadOptimiser(torch.optim.Adam(runner.params, lr=cfg.learning_rate))
    damping = cfg.head_damping or None  # 0: derived from the data
    precond = stem.preconditioner(is_train, damping)
    xp_all: torch.Tensor | None = stem.preconditioned_inputs(is_train, damping)
    if cfg.protect_neighbours > 0:
        xp_all = None
        precond = protect_lookalikes(
            precond, stem.inputs, batch.cards, cfg.protect_neighbours, cfg.protect_weight
        )
    runner.own_first_gradient = True
    x_e = stem.inputs[torch.from_numpy(batch.cards)]
    q = float(((x_e @ precond) * x_e).sum(1).mean())
    edit_lr = (
        cfg.edit_step * scales.pull_spread**2 / (2.0 * max(q, 1e-12)) * float(w_edit_sum_ratio(batch.repeats))
    )
    return HeadOptimiser(
        torch.optim.Adam(rest, lr=cfg.learning_rate) if rest else None,
        torch.optim.SGD([first], lr=edit_lr),
        first,
        stem.inputs,
        precond,
        xp_all,
    )


# --- step 3: the training loop -----------------------------------------------------------------


@dataclass
class Training:
    steps: int
    learned: bool
    losses: list[float]


@torch.no_grad()
def label_agreement(runner: Runner, batch: EditBatch) -> torch.Tensor:
    """(N,) 1.0 where a card's current label is the class the scene's *first* network predicted
    for it, else 0.0 (``skip_disputed``); only neighbours and the replay pool are judged (the
    rest stay 1.0). With a cached stem the first job's network is that network (its predictions
    and the labels then are kept on the ``StemCache``; a card relabelled since, by the person, is
    never disputed); without one, the job's starting network stands in.

    Why the first network and not the job's: a network that memorised its training labels
    disputes none of them at first, so nothing is skipped (its fine-tunes are as without the
    option); a card it disputes later is one an earlier edit damaged, and replay is what repairs
    that (skipping those cost digits 1-5 points at K = 30, issue 13). A network that never fitted
    its noise disputes mostly the wrong labels from the start: those are what it is not taught.
    """
    rows = np.unique(np.concatenate([batch.neighbour_cards, batch.replay_pool]))
    out = torch.ones(len(batch.labels))
    if not len(rows):
        return out
    idx = torch.from_numpy(rows)
    stem = runner.stem
    if stem is not None:
        if stem.start_predictions is None or stem.start_labels is None:
            every = np.arange(len(stem.inputs))
            stem.start_predictions = torch.cat(
                [runner.forward(every[i : i + 4096])[0].argmax(1) for i in range(0, len(every), 4096)]
            )
            stem.start_labels = batch.labels.clone()
        labels = batch.labels[idx]
        agree = (stem.start_predictions[idx] == labels) | (labels != stem.start_labels[idx])
    else:
        agree = runner.forward(rows)[0].argmax(1) == batch.labels[idx]
    out[idx] = agree.float()
    return out


def pull_weight(batch: EditBatch, cfg: LearningConfig, share: float) -> float:
    """``feature_weight``, times the pull share of ``share`` (``memorised_share`` of the job's
    starting network) when ``pull_scale = "memorised"`` (and label trust is on)."""
    if cfg.pull_scale != "memorised" or batch.trust is None:
        return cfg.feature_weight
    return cfg.feature_weight * pull_share(share)


@torch.no_grad()
def memorised_share(runner: Runner, batch: EditBatch) -> float:
    """``memorised`` of the job's starting network on the cards the guidance distrusts (1.0 when
    none is, or without label trust: nothing to judge by)."""
    if batch.trust is None:
        return 1.0
    rows = np.flatnonzero(batch.trust < 1.0 - DROP_ABOVE)
    if not len(rows):
        return 1.0
    idx = torch.from_numpy(rows)
    predicted = torch.cat(
        [runner.forward(rows[i : i + 4096])[0].argmax(1) for i in range(0, len(rows), 4096)]
    )
    return memorised(predicted.numpy(), batch.labels[idx].numpy(), batch.trust[rows])


@torch.no_grad()
def check_loss(runner: Runner, batch: EditBatch) -> float:
    """Mean cross-entropy (weighted by label trust) of the job's check cards, training cards it
    does not train, with their current labels: the stand-in for held-out accuracy that tells a job
    when more steps stop helping."""
    assert batch.check_pool is not None
    rows = batch.check_pool
    kept = runner.last_pre_activation  # the step's, which the optimiser's first-layer update reads
    try:
        logits = runner.forward(rows)[0]
    finally:
        runner.last_pre_activation = kept
    idx = torch.from_numpy(rows)
    w = torch.ones(len(rows)) if batch.trust is None else torch.from_numpy(batch.trust)[idx].float()
    ce = F.cross_entropy(logits, batch.labels[idx], reduction="none")
    return float((ce * w).sum() / w.sum().clamp_min(1e-12))


def train(
    runner: Runner,
    batch: EditBatch,
    optimiser: HeadOptimiser,
    scales: Scales,
    cfg: LearningConfig,
    rng: np.random.Generator,
    loss_fn: LossFn = finetune_loss,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Training:
    """Steps of edits + neighbours + a fresh replay sample until every edit is learned
    (``edits_learned``) after ``min_steps``, or ``max_steps``."""
    # ``memorised_share`` of the starting network, once (a pass over the distrusted cards): the
    # pull's scale and the check's gate both read it.
    wanted = cfg.pull_scale == "memorised" or batch.check_pool is not None
    share = memorised_share(runner, batch) if wanted else 1.0
    weights = LossWeights(
        pull_weight(batch, cfg, share),
        cfg.feature_margin,
        cfg.preserve_weight,
        landing=cfg.feature_terms == "landing",
    )
    fixed_rows, fixed_y, fixed_w = batch.fixed_rows, batch.fixed_labels, batch.fixed_weights
    edit_labels, edit_weights = torch.from_numpy(batch.targets), torch.from_numpy(batch.repeats)
    pool, size = batch.replay_pool, batch.replay_batch
    runner.network.module.eval()  # no dropout: deterministic, and the features match inference
    trusted = label_agreement(runner, batch) if cfg.skip_disputed else None
    if batch.trust is not None:
        trust = torch.from_numpy(batch.trust)
        trusted = trust if trusted is None else trusted * trust
    if trusted is not None:
        fixed_w = fixed_w * trusted[torch.from_numpy(fixed_rows)]
    losses: list[float] = []
    steps = 0
    best_check = float("inf")
    # A network that memorised the labels the guidance distrusts fits its training cards: nothing
    # for the check to find (and its loss falls a little at every step, confidence only).
    checking = batch.check_pool is not None and share < DROP_ABOVE
    # Where the check runs, every trusted training card at every step, not a sample
    # (``replay_all_up_to``): the whole pool, then the rest with their own trust.
    every: tuple[np.ndarray, torch.Tensor] | None = None
    if checking and batch.replay_rest is not None and batch.replay_rest_trust is not None:
        every_rows = np.concatenate([pool, batch.replay_rest])
        pool_w = torch.ones(len(pool)) if trusted is None else trusted[torch.from_numpy(pool)]
        every = (every_rows, torch.cat([pool_w, torch.from_numpy(batch.replay_rest_trust)]))
    if optimiser.record:
        # The cards the steps can train at most: the fixed ones and every replayed one.
        replayed = len(every[0]) if every is not None else (len(pool) if size else 0)
        optimiser.factor(runner, len(np.unique(fixed_rows)) + replayed)
    for step in range(cfg.max_steps):
        _stop_if_cancelled(cancelled)
        if every is not None:
            replay, replay_w = every
        else:
            replay = np.sort(rng.choice(pool, size, replace=False)) if size else np.empty(0, np.int64)
            replay_w = torch.ones(len(replay)) if trusted is None else trusted[torch.from_numpy(replay)]
        rows = np.concatenate([fixed_rows, replay])
        targets = StepTargets(
            labels=torch.cat([fixed_y, batch.labels[torch.from_numpy(replay)]]),
            weights=torch.cat([fixed_w, replay_w]),
            n_edits=batch.n_edits,
            edit_labels=edit_labels,
            edit_weights=edit_weights,
            is_relabel=batch.is_relabel,
            drop_rows=batch.drop_rows,
            old_rows=batch.old_rows,
            reference=batch.features[torch.from_numpy(rows[batch.n_edits :])],
            pull_spread=scales.pull_spread,
            spread=scales.spread,
        )
        logits, feats = runner.forward(rows)
        space = runner.last_pre_activation if runner.last_pre_activation is not None else feats
        terms = loss_fn(logits, feats, space, targets, weights)
        if not torch.isfinite(terms.total):
            raise FineTuneDiverged(
                f"the loss at step {step} became NaN or infinite (cross-entropy {float(terms.cross_entropy.detach()):.4g}, "
                f"feature {float(terms.feature.detach()):.4g}, drift {float(terms.drift.detach()):.4g}, spreads "
                f"{scales.spread:.4g}/{scales.pull_spread:.4g}, logits finite {bool(torch.isfinite(logits).all())})"
            )
        losses.append(float(terms.total.item()))
        if edits_learned(logits, terms, targets) and step >= cfg.min_steps:
            if not checking:
                return Training(steps, True, losses)
            checked = check_loss(runner, batch)
            if checked >= best_check:
                return Training(steps, True, losses)
            best_check = checked
        optimiser.zero_grad()
        optimiser.before_backward(runner)
        torch.autograd.backward(terms.total)  # what Tensor.backward() does; that one is untyped
        optimiser.step(runner, rows)
        steps = step + 1
        if progress is not None:
            progress(0.8 * steps / cfg.max_steps, f"training step {steps}")
    return Training(steps, False, losses)


def finish_training(runner: Runner) -> None:
    """Check the trained weights, give the parameters back their ``requires_grad`` and let go of
    the last step's gradients: nothing reads them after training, and the trained network lives
    on (the app's live model with the thread backend, the job process's kept network), where they
    would be as large as the trained weights (64 MB at AlexNet's head) for as long as it does."""
    trained = set(runner.trainable_names)
    for name, p in runner.network.module.named_parameters():
        if name in trained:
            _check_finite(f"weight {name}", p.detach())
            p.grad = None
        if runner.stem is None or name in trained:  # as ``Runner`` found them (shared ones untouched)
            p.requires_grad_(True)


# --- step 4: re-inference, relabel, re-layout, outcomes -----------------------------------------


def reinfer(
    runner: Runner, rows_out: RowProjection | None = None, beside: Callable[[], None] | None = None
) -> Inference:
    """Features and top-5 of every image under the trained weights (checked finite); each batch's
    features handed to ``rows_out`` as they are made (``relayout_projection``); ``beside`` run on
    one of the pass's threads before it takes batches (``Runner.infer_all``)."""
    inference = runner.infer_all(rows_out=rows_out, beside=beside)
    _check_finite("the network's outputs", inference.logits, inference.features)
    return inference


def relabelled(labels: np.ndarray, edits: list[EditQueued]) -> np.ndarray:
    """The labels with every edit's target applied (a copy)."""
    out = np.asarray(labels, dtype=np.int64).copy()
    for e in edits:
        out[e.card] = target_label(e)
    return out


def edit_anchors(n: int, edits: list[EditQueued], cfg: LearningConfig) -> np.ndarray | None:
    """Where the re-layout starts the edited cards (their drop positions), NaN elsewhere."""
    if not cfg.anchor_edits:
        return None
    anchors = np.full((n, 3), np.nan)
    for e in edits:
        anchors[e.card] = e.position
    return anchors


def edit_outcomes(
    edits: list[EditQueued], layout: LayoutState, labels: np.ndarray, n_classes: int, inference: Inference
) -> list[EditOutcome]:
    return [
        _outcome(e, layout.positions, labels, n_classes, int(inference.top5_classes[e.card, 0]))
        for e in edits
    ]


# --- the job -----------------------------------------------------------------------------------


def run_finetune(
    req: FineTuneRequest,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    loss_fn: LossFn = finetune_loss,
) -> FineTuneResult:
    """Train a clone of ``req.network`` on the edits, re-infer every image, and re-lay them out."""
    cfg = req.config
    times: dict[str, float] = {}
    parts = _Parts(times)
    t0 = time.perf_counter()
    torch.manual_seed(req.seed)
    rng = np.random.default_rng(req.seed)
    network = req.network.clone(share=frozen_stem_names(req.network, req.stem, cfg.full_finetune))
    runner = Runner(network, req.images, req.stem, cfg.full_finetune)
    batch = prepare_batch(req, rng)
    scales = measure_scales(runner, batch, req.features)
    parts.done("prepare")

    optimiser = make_optimiser(runner, runner.stem, req.is_train, batch, scales, cfg)
    # From LARGE_JOB_CARDS on, the re-inference's factorisation comes from the steps
    # (``HeadOptimiser.change``); smaller scenes search the difference, bit for bit as before.
    optimiser.record = len(req.images) >= LARGE_JOB_CARDS and runner.base_pre_activations is not None
    try:
        training = train(runner, batch, optimiser, scales, cfg, rng, loss_fn, progress, cancelled)
        change = optimiser.change()  # once: the factored weight's update and the re-inference's
        optimiser.materialise(runner, change)
    finally:
        optimiser.unfactor(runner)  # a failed or cancelled job's runner computes plainly again
    finish_training(runner)
    runner.steps_change = change
    optimiser.release()
    parts.done("train")
    # The trained weights' bytes, on a thread beside the preview and the re-inference (nothing
    # changes the weights from here): the same bytes, off the path's end.
    weights = _Background(functools.partial(state_to_bytes, network.module, runner.trainable_names))
    try:
        return _finish_job(
            req, runner, network, batch, training, weights, parts, times, t0, progress, cancelled
        )
    except BaseException:
        weights.wait()  # never left running inside torch after a failed job (a CLI exits right after)
        raise


def _finish_job(
    req: FineTuneRequest,
    runner: Runner,
    network: Any,
    batch: EditBatch,
    training: Any,
    weights: _Background,
    parts: _Parts,
    times: dict[str, float],
    t0: float,
    progress: Progress | None,
    cancelled: Callable[[], bool] | None,
) -> FineTuneResult:
    """``run_finetune`` after training: preview, re-inference, re-layout, the result."""
    cfg = req.config
    _stop_if_cancelled(cancelled)
    # The preview's cards re-inferred here; their placement runs beside the re-inference (on one
    # of its threads, before it takes batches; first, where the pass has one thread).
    place_preview = start_preview(req, runner, batch, times)
    parts.done("preview", count=False)
    _stop_if_cancelled(cancelled)
    projection = relayout_projection(req)
    inference = reinfer(runner, projection, place_preview)
    parts.done("infer")
    if progress is not None:
        progress(0.85, "re-laying out")

    _stop_if_cancelled(cancelled)
    labels = relabelled(req.labels, batch.edits)
    anchors = edit_anchors(len(req.images), batch.edits, cfg)
    projected = projection.reduction() if projection is not None else None
    layout = relayout(
        req.projector, inference.features, req.layout, cfg, anchors, req.features, batch.cards, projected
    )
    parts.done("layout")

    outcomes = edit_outcomes(batch.edits, layout, labels, req.n_classes, inference)
    result_weights = weights.result()
    times["total"] = time.perf_counter() - t0
    times["total cpu"] = time.process_time() - parts.cpu0
    if progress is not None:
        progress(1.0, "done")
    return FineTuneResult(
        req.version,
        network,
        result_weights,
        runner.trainable_names,
        labels,
        inference,
        layout,
        outcomes,
        training.steps,
        training.learned,
        training.losses,
        times,
    )


class _Parts:
    """Wall and CPU seconds (this process, every thread) of a job's parts, into ``times``:
    ``times[part]`` wall (as before) and ``times[part + " cpu"]``."""

    def __init__(self, times: dict[str, float]) -> None:
        self.times = times
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.cpu0 = self.cpu

    def done(self, part: str, count: bool = True) -> None:
        """``part`` ended now (``count`` False: only its CPU seconds, its wall time set elsewhere,
        and only when it ran)."""
        wall, cpu = time.perf_counter(), time.process_time()
        if count:
            self.times[part] = wall - self.wall
        if count or part in self.times:
            self.times[part + " cpu"] = cpu - self.cpu
        self.wall, self.cpu = wall, cpu


class _Background:
    """``work()`` on a daemon thread; ``result()`` waits for it (and raises what it raised)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="finetune-weights", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._value = work()
        except BaseException as exc:  # noqa: BLE001 - raised again by ``result``
            self._error = exc

    def wait(self) -> None:
        """Join the thread whatever it did (the error path, which raises its own error)."""
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def start_preview(
    req: FineTuneRequest, runner: Runner, batch: EditBatch, times: dict[str, float]
) -> Callable[[], None] | None:
    """The staged update's first stage (``game.learning.preview``), when the job is large enough:
    the cards near the edits re-inferred now (the factors of the weight change found on the way,
    which the re-inference reuses); returned, what places them and hands the preview to
    ``req.on_preview`` (``run_finetune`` runs it beside the re-inference). It reads the trained
    network and draws no random numbers, so the full result is unchanged; a preview that fails is
    skipped (the full result still comes). ``times["preview"]``: its seconds in all, and
    ``times["preview beside"]`` those that ran beside the re-inference."""
    cfg = req.config
    if req.on_preview is None or not wants_preview(len(req.images), cfg.preview_above):
        return None
    on_preview = req.on_preview
    t = time.perf_counter()
    try:
        rows = preview_rows(req.layout.positions, batch.edits, cfg.preview_cards)
        new = rows_features(runner, rows)
    except Exception:  # noqa: BLE001 - a preview is a courtesy; the full result is what counts
        return None
    times["preview"] = time.perf_counter() - t

    def place() -> None:
        t_place = time.perf_counter()
        try:
            preview = place_preview(
                req.version,
                req.projector,
                req.layout,
                req.features,
                batch.edits,
                rows,
                new,
                cfg.relayout_keep,
                cfg.layout_iterations,
                t,
            )
            on_preview(preview)  # inside: on a helper thread an error here would go unseen
        except Exception:  # noqa: BLE001 - as above
            return
        times["preview beside"] = time.perf_counter() - t_place
        times["preview"] += times["preview beside"]

    return place


# Set to "1": the re-inference reduces each batch's new features itself (``relayout_projection``).
# Off by default: at 50,000 cards on two cores it cost about 0.9 CPU s and 0.3 s of re-inference a
# drop, more than the 0.2 s it saved in the re-layout (docs/benchmarks.md, issue 17, 2026-12-03
# 06:44-06:50 UTC); kept for that A/B (it reaches the job process through the environment).
FUSED_PROJECTION_VARIABLE = "LATENT_REACH_FUSED_PROJECTION"


def relayout_projection(req: FineTuneRequest) -> RowProjection | None:
    """Where the re-layout will reduce the new features in its base layout's PCA (a local update
    of a large scene: ``Projector.local_basis``) and ``FUSED_PROJECTION_VARIABLE`` asks for it, the
    projection the re-inference fills batch by batch on its own threads (``RowProjection``); else
    None (the re-layout reduces them after the pass)."""
    if os.environ.get(FUSED_PROJECTION_VARIABLE) != "1":
        return None
    if req.config.relayout != "local" or len(req.features) != len(req.images):
        return None
    basis = req.projector.local_basis(req.layout, req.features)
    if basis is None or getattr(basis.pca, "whiten", False):
        return None  # a whitened PCA is reduced after the pass, as before (``RowProjection``)
    return RowProjection(basis, len(req.images))


def relayout(
    projector: Projector,
    features: np.ndarray,
    previous: LayoutState,
    cfg: LearningConfig,
    anchors: np.ndarray | None = None,
    previous_features: np.ndarray | None = None,
    edited: np.ndarray | None = None,
    projected: Reduction | None = None,
) -> LayoutState:
    """The re-layout after a job, with the learning settings (``cfg.relayout``).

    "local" (needs ``previous_features``): ``Projector.update_local`` moves the ``edited`` cards
    and those whose feature neighbourhood changed. "full": ``Projector.update`` with few
    iterations and exact affinities when small (openTSNE's exact affinities are several times
    faster than its approximate ones below a few thousand points; the first layout is unaffected).
    """
    if len(features) < cfg.exact_affinities_below:  # also for a local update's full fallback
        projector = Projector(projector.config, projector.n_jobs, exact_below=cfg.exact_affinities_below)
    if cfg.relayout == "local" and previous_features is not None:
        return projector.update_local(
            features,
            previous,
            previous_features,
            keep=cfg.relayout_keep,
            move=edited,
            iterations=cfg.layout_iterations,
            anchors=anchors,
            projected=projected,
        )
    return projector.update(features, previous, iterations=cfg.layout_iterations, anchors=anchors)


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
