"""Re-inference after a head-only fine-tune as a low-rank update of the kept pre-activations.

Why: after a fine-tune every card's features change, and passing every card's stem output through
the first head layer again costs ``N x in x out`` multiply-adds (AlexNet's fc7 at 50,000 cards:
0.84 T, 10-30 s on two cores). But the job changes that layer's weight by a matrix of low rank:
its update is preconditioned SGD (``finetune.HeadOptimiser``: no momentum, no weight decay), so
``W_new - W_old = sum over steps of G^T (X_rows P)``, whose rank is at most the number of distinct
rows the job trained on (a few hundred: edits, their neighbours, the replay pool). With the old
pre-activations ``Z_old = X W_old^T + b_old`` kept, the new ones are

    Z_new = Z_old + (X V) U^T + (b_new - b_old),    W_new - W_old = U V^T (rank r),

which costs ``N x r x (in + out)``: at r = 250 about an eighth of the full pass.

The factorisation is found numerically, so it holds whatever the training did: a randomised range
finder (Halko, Martinsson and Tropp 2011) grows an orthonormal basis of ``W_new - W_old``'s
columns in blocks until an a-posteriori estimate of what it misses is below ``RELATIVE_TOLERANCE``
of ``|W_new|``, so the result equals the full pass within float noise (asserted in
tests/learning/test_head_update.py against the full pass and a float64 truth). Above
``paying_rank`` it gives up and the caller makes the full pass. From ``stem.LARGE_JOB_CARDS``
cards the factors come from the training's own record of the change instead, checked against the
real difference by the same estimate (``factors_from_steps``), and the tolerance is
``LARGE_RELATIVE_TOLERANCE`` (``tolerance_for``): features within about 1e-4 of the tight one's.

Which ``Z_old``: the state computed with exactly the weights the job started from (``Runner``
looks it up by comparing them before training), else none and the full pass. So a job's result
depends on the model versions it descends from, not on what else ran: a replay re-running the
same jobs takes the same paths and gets the same numbers (one exception: a job cancelled at
another moment can leave another older state kept, so an undo to it may take the other path;
the two differ by float noise, within ``replay --verify``'s tolerance). The job process (or the
thread backend) primes the start network's state when it prepares.

Memory per stem cache: one ``(N, out)`` float32 array (50,000 x 4,096: 0.8 GB) plus a copy of
the layer's weight (64 MB) per kept state. A low-rank re-inference from the newest state writes
the new pre-activations over its base's array, block by block (the same floats as into a new
array), and the base keeps only the factors that lead back (``PreActivations.derived``:
``Z_old = Z_new - (X V) U^T - (b_new - b_old)``); before, both states held an array, and the
job briefly a third (2.4 GB at 50k; issue 17). A base rebuilt that way differs from the array it
had by float noise (one more rounding; a job from it, an undo or a cancel, counts it in
``chain``).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from dataclasses import dataclass

import torch

# Of |W_new|_F: what the factorisation may leave out. At 2e-7 an AlexNet-shaped job's features
# are within 6e-6 of a float64 truth where the full float32 pass is within 2e-6 (features up to
# 7.5; 1e-6 gave 2e-5 at rank 185 instead of 203).
RELATIVE_TOLERANCE = 2e-7
# ... and from ``stem.LARGE_JOB_CARDS`` cards (``tolerance_for``): there a job's change of
# AlexNet's fc7 needs rank ~117 instead of ~211 (10,000 cards), so the re-inference's two products,
# nearly all of a 50,000-card job's re-inference, cost about half. Per job the features stay
# within ~9e-5 of the tight tolerance's and top-5 scores within ~3e-5 (docs/benchmarks.md, issue
# 17): nothing a person sees. A replay re-runs the same chain and compares like with like; a
# session recorded before this tolerance existed replays with it, and its chained jobs drift from
# the recording by up to that much per job (MAX_CHAIN = 50 of them: 1.6e-3 in scores if every
# error added up, against ``replay --verify``'s 1e-3; about a seventh of that if they add like
# independent ones) before a full pass starts afresh.
LARGE_RELATIVE_TOLERANCE = 1e-5
MAX_RANK = 768  # beyond this the full pass is not much slower: give up and make it
# Cards (rows) of a training record ``factors_from_steps`` takes at most: their QR would cost more
# than the search saves (``finetune.StepRecord`` stops recording beyond it).
MAX_RECORDED_CARDS = 2 * MAX_RANK
# ... and never beyond this fraction of the rank at which the update costs what the full pass
# does (``in x out / (in + out)``; AlexNet's fc7: 2,048).
PAYING_RANK_FRACTION = 0.5
BLOCK = 128  # columns added to the range finder's basis at a time
FLOAT32_CHANGE = 0.25  # |W_new - W_old| / |W_new| up to which the products are float32
PROBES = 10  # Gaussian probes of the a-posteriori error estimate
MAX_CHAIN = 50  # updates in a row before a full pass starts the chain afresh (rounding adds up)
SEED = 1729  # the sketches' seed: the same job gives the same factorisation
# Heads smaller than this (cards x in x out multiply-adds) always make the full pass: it takes
# well under a second there, and their results stay bitwise what they were (the digits scenes
# and their recorded sessions). AlexNet's fc7 passes it from 120 cards on.
MIN_MULTIPLY_ADDS = 2_000_000_000
KEEP = 2  # states kept: the latest job's and its base's (a cancelled job or an undo finds the base)


@dataclass
class PreActivations:
    """The first head layer's outputs for every card under one weight and bias: an array, or
    derived from a newer state (``derived``, see the module doc)."""

    weight: torch.Tensor  # (out, in) a copy of the weight these were computed with
    bias: torch.Tensor | None  # (out,) a copy, or None
    pre: torch.Tensor | None  # (N, out) float32: X W^T + b; None: ``derived``
    chain: int = 0  # low-rank updates since the last full pass
    # (newer state, U, V, b_new - b_old or None): this state's rows are the newer one's less
    # (X V) U^T and the bias change.
    derived: tuple[PreActivations, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def cards(self) -> int:
        """N (the rows of the array this state has or is derived from)."""
        if self.pre is not None:
            return len(self.pre)
        assert self.derived is not None
        return self.derived[0].cards()

    def rows(self, x: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Rows ``s:e`` of the pre-activations, a new tensor (``x``: every card's stem outputs)."""
        if self.pre is not None:
            return self.pre[s:e].clone()
        assert self.derived is not None
        newer, u, v, bias_change = self.derived
        z = newer.rows(x, s, e)
        if u.shape[1]:
            z.addmm_(x[s:e] @ v, u.T, alpha=-1.0)
        if bias_change is not None:
            z -= bias_change
        return z

    def rows_at(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The pre-activations of the cards ``index`` (int64), a new tensor (``rows`` for
        scattered cards: the preview's)."""
        if self.pre is not None:
            return self.pre[index]
        assert self.derived is not None
        newer, u, v, bias_change = self.derived
        z = newer.rows_at(x, index)
        if u.shape[1]:
            z.addmm_(x[index] @ v, u.T, alpha=-1.0)
        if bias_change is not None:
            z -= bias_change
        return z

    def derive_from(
        self, newer: PreActivations, u: torch.Tensor, v: torch.Tensor, bias_change: torch.Tensor | None
    ) -> None:
        """Give up this state's array (``newer`` has taken it over) and keep the way back."""
        self.derived = (newer, u, v, bias_change)
        self.pre = None
        self.chain += 1


def low_rank_difference(
    new: torch.Tensor, old: torch.Tensor, tolerance: float = RELATIVE_TOLERANCE, max_rank: int = MAX_RANK
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(U, V)`` with ``new - old = U V^T`` up to ``tolerance * |new|_F``, or None when the rank
    needed exceeds ``max_rank``. U is ``(out, r)``, V is ``(in, r)``, both float32.

    The products with the (out x in) difference are float32 (a float64 copy of AlexNet's fc7 is
    134 MB, and float64 products run at half the speed); the basis, its orthogonalisation and the
    small SVD are float64. The float32 difference of two float32 weights is within half a unit
    in the last place of the difference itself, far below the tolerance.
    """
    delta = (new.detach() - old.detach()).float()
    out_dim, in_dim = delta.shape
    scale = float(torch.linalg.vector_norm(new.detach().float()))
    if scale == 0.0:
        return None
    limit = tolerance * scale
    # float32 products are accurate to about 4e-6 of |delta|: enough while the change is small
    # beside the weight (a job's usually is); a larger one is worked in float64.
    if float(torch.linalg.vector_norm(delta)) > FLOAT32_CHANGE * scale:
        delta = delta.double()
    gen = torch.Generator().manual_seed(SEED)
    probes = torch.randn(in_dim, PROBES, generator=gen).to(delta.dtype)
    probed = (delta @ probes).double()  # (out, PROBES): the difference applied to the probes
    if float(torch.linalg.vector_norm(probed)) / PROBES**0.5 <= limit:
        return delta.new_zeros(out_dim, 0).float(), delta.new_zeros(in_dim, 0).float()
    basis = torch.zeros(out_dim, 0, dtype=torch.float64)
    most = min(max_rank, out_dim, in_dim)
    while basis.shape[1] < most:
        omega = torch.randn(in_dim, min(BLOCK, most - basis.shape[1]), generator=gen).to(delta.dtype)
        y = (delta @ omega).double()
        for _ in range(2):  # block Gram-Schmidt, twice (one pass loses orthogonality)
            y -= basis @ (basis.T @ y)
        q, _ = torch.linalg.qr(y)
        basis = torch.cat([basis, q], dim=1)
        missed = probed - basis @ (basis.T @ probed)
        # E|M w|^2 = |M|_F^2 for a Gaussian w: the mean over the probes estimates |missed|_F.
        if float(torch.linalg.vector_norm(missed)) / PROBES**0.5 <= limit:
            coefficients = (basis.to(delta.dtype).T @ delta).double()  # (k, in): delta = basis @ coefficients
            # Compress to the rank the tolerance needs (the basis was grown in whole blocks):
            # coefficients^T = Q R, so delta = basis R^T Q^T, a (k x k) SVD only.
            q_c, r_c = torch.linalg.qr(coefficients.T)
            return _compressed(basis, r_c.T, q_c, limit)
    return None


def _compressed(
    left: torch.Tensor, core: torch.Tensor, right: torch.Tensor, limit: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, V)``, float32, of ``left @ core @ right^T`` (``left`` and ``right`` with orthonormal
    columns, ``core`` small and square-ish) truncated where the singular values left out come
    to at most ``limit / 2`` (the rule both factorisations share)."""
    u_c, s, vt = torch.linalg.svd(core)
    tail = torch.sqrt(torch.flip(torch.cumsum(torch.flip(s**2, [0]), 0), [0]))  # |s[i:]|
    keep = int((tail > limit * 0.5).sum())
    u = (left @ u_c[:, :keep]) * s[:keep]
    v = right @ vt[:keep].T
    return u.float().contiguous(), v.float().contiguous()


def factors_from_steps(
    new: torch.Tensor,
    old: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    tolerance: float = RELATIVE_TOLERANCE,
    max_rank: int = MAX_RANK,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``low_rank_difference(new, old)``'s factors from the training's own record of the change,
    ``new - old = A^T B`` (``HeadOptimiser.change``: A is ``(R, out)``, B ``(R, in)``, one row per
    card trained), or None where that record cannot stand in for the search.

    Why: the search multiplies the (out x in) difference by a few hundred random vectors and
    orthogonalises in float64; with the record, two thin QR factorisations and an (R x R) SVD
    give the same factorisation truncated by the same rule (``_compressed``; a 50,000-card
    drop's preview took 0.2 CPU s less, docs/benchmarks.md). The record leaves out only how
    float32 rounded each step's update of the weight, so the factors are checked against the real
    difference with the search's own a-posteriori estimate (Gaussian probes): beyond
    ``tolerance * |new|_F`` (a change the record does not explain), too many cards to be worth it
    (R above ``MAX_RECORDED_CARDS``) or a rank above ``max_rank``: None, and the caller searches
    as before."""
    out_dim, in_dim = new.shape
    if a.dim() != 2 or b.dim() != 2 or a.shape != (len(b), out_dim) or b.shape[1] != in_dim:
        return None
    if len(a) > MAX_RECORDED_CARDS:  # their QR would cost more than the search saves
        return None
    scale = float(torch.linalg.vector_norm(new.detach().float()))
    if scale == 0.0:
        return None
    limit = tolerance * scale
    # The record must explain the real difference as closely as the search's basis must
    # (``low_rank_difference``'s estimate, the same probes); the truncation below then drops at
    # most what the search's does.
    gen = torch.Generator().manual_seed(SEED)
    probes = torch.randn(in_dim, PROBES, generator=gen, dtype=torch.float64)
    delta = new.detach().float() - old.detach().float()
    if float(torch.linalg.vector_norm(delta)) > FLOAT32_CHANGE * scale:  # as the search does
        delta = delta.double()
    missed = (delta @ probes.to(delta.dtype)).double() - a.double().T @ (b.double() @ probes)
    if float(torch.linalg.vector_norm(missed)) / PROBES**0.5 > limit:
        return None
    if not len(a):
        return new.new_zeros(out_dim, 0).float(), new.new_zeros(in_dim, 0).float()
    q_a, r_a = torch.linalg.qr(a.double().T)  # A^T = Q_a R_a (out x R)
    q_b, r_b = torch.linalg.qr(b.double().T)  # B^T = Q_b R_b (in x R)
    u, v = _compressed(q_a, r_a @ r_b.T, q_b, limit)  # new - old = Q_a (R_a R_b^T) Q_b^T
    return (u, v) if u.shape[1] <= max_rank else None


def enabled() -> bool:
    """False when ``LATENT_REACH_HEAD_UPDATE=off``: always the full pass (benchmarks compare the
    two; a job process inherits the variable). ``log``: on, and ``report`` writes a line."""
    return os.environ.get("LATENT_REACH_HEAD_UPDATE", "on").lower() != "off"


def report(rank: int | None, cards: int, seconds: float, from_steps: bool = False) -> None:
    """One line on stderr per re-inference when ``LATENT_REACH_HEAD_UPDATE=log`` (benchmarks:
    the job process's re-inference is otherwise invisible to them); ``from_steps``: the factors
    came from the training's record (``factors_from_steps``), not the search."""
    if os.environ.get("LATENT_REACH_HEAD_UPDATE", "").lower() == "log":
        how = "full pass" if rank is None else f"low-rank update, rank {rank}"
        how += ", factors from the steps" if from_steps else ""
        print(f"head re-inference of {cards} cards: {how}, {seconds:.2f} s", file=sys.stderr, flush=True)


def tolerance_for(cards: int, large_from: int) -> float:
    """The factorisation's relative tolerance for a scene of ``cards`` cards:
    ``LARGE_RELATIVE_TOLERANCE`` from ``large_from`` (``stem.LARGE_JOB_CARDS``) on, else
    ``RELATIVE_TOLERANCE`` (smaller scenes, every embedded one and their recorded sessions, keep
    their numbers bit for bit)."""
    return LARGE_RELATIVE_TOLERANCE if cards >= large_from else RELATIVE_TOLERANCE


def paying_rank(out_dim: int, in_dim: int) -> int:
    """The largest rank worth factorising for a layer of this shape (``MAX_RANK`` at most)."""
    return min(MAX_RANK, int(PAYING_RANK_FRACTION * out_dim * in_dim / max(out_dim + in_dim, 1)))


class PreActivationCache:
    """The pre-activations of the last ``KEEP`` networks a job started from or produced, for one
    stem cache; see the module docstring. Thread-safe; never pickled with its contents."""

    def __init__(self) -> None:
        self._states: list[PreActivations] = []
        self._lock = threading.Lock()
        # Held by a re-inference for its whole pass: one may write over a kept array that
        # another would read.
        self.pass_lock = threading.Lock()

    def newest(self) -> PreActivations | None:
        with self._lock:
            return self._states[0] if self._states else None

    def find(self, weight: torch.Tensor, bias: torch.Tensor | None) -> PreActivations | None:
        """The state computed with exactly this weight and bias, if kept."""
        with self._lock:
            states = list(self._states)
        for state in states:
            if state.weight.shape != weight.shape or (state.bias is None) != (bias is None):
                continue
            same_bias = bias is None or (state.bias is not None and torch.equal(state.bias, bias))
            if same_bias and torch.equal(state.weight, weight):
                return state
        return None

    def put(self, state: PreActivations, base: PreActivations | None = None) -> None:
        """Keep ``state`` (newest first) and ``base`` after it; older ones go, and so does any
        state derived from one that is not kept (its rows could not be rebuilt)."""
        with self._lock:
            kept = [state] + ([base] if base is not None and base is not state else [])
            kept += [s for s in self._states if all(s is not k for k in kept)]
            kept = kept[:KEEP]
            self._states = [s for s in kept if s.derived is None or any(s.derived[0] is k for k in kept)]

    def clear(self) -> None:
        with self._lock:
            self._states = []

    def __len__(self) -> int:
        return len(self._states)

    def __getstate__(self) -> dict[str, object]:
        return {}  # 0.8 GB at 50k cards: a copy elsewhere starts empty

    def __setstate__(self, _state: dict[str, object]) -> None:
        self._states = []
        self._lock = threading.Lock()
        self.pass_lock = threading.Lock()


_CACHES: dict[int, PreActivationCache] = {}
_CACHES_LOCK = threading.Lock()


def cache_for(stem: object) -> PreActivationCache:
    """The cache that belongs to ``stem`` (a ``StemCache``), made on first use and dropped with it."""
    key = id(stem)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = PreActivationCache()
            weakref.finalize(stem, _forget, key)
    return cache


def _forget(key: int) -> None:
    with _CACHES_LOCK:
        _CACHES.pop(key, None)
