"""The large-N memory paths of ``StemCache`` (issue 17): the second moment and the derived damping
summed a block of rows at a time, and no (N x D) preconditioned array kept. They must give what
the one-product path gives, up to float64 rounding (the sums come in another order)."""

import numpy as np
import pytest
import torch

from game.learning import stem as stem_mod
from game.learning.stem import (
    StemCache,
    derive_damping,
    derive_damping_blocked,
    moment_blocked,
    rows_float64,
)


def _inputs(n: int = 900, d: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # ReLU'd, correlated, with a common component: like a stem's outputs.
    base = torch.randn(n, 8, generator=g) @ torch.randn(8, d, generator=g)
    return torch.relu(base + 0.3 * torch.randn(n, d, generator=g) + 0.5).float()


def test_blocked_moment_is_the_float64_product():
    x = _inputs()
    is_train = np.random.default_rng(1).random(len(x)) < 0.8
    rows = rows_float64(x, is_train)
    want = rows.T @ rows / len(rows)
    got = moment_blocked(x, np.flatnonzero(is_train), block=97)  # blocks that do not divide the rows
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))


@pytest.mark.parametrize("n", [900, 120, 3])
def test_blocked_damping_is_derive_damping(n: int):
    x = _inputs(n)
    is_train = np.ones(n, bool)
    is_train[::5] = False
    want = derive_damping(rows_float64(x, is_train))
    got = derive_damping_blocked(x, np.flatnonzero(is_train), block=50)
    assert got == pytest.approx(want, rel=1e-9)


def test_large_stem_caches_take_the_blocked_paths_and_keep_no_preconditioned_array(monkeypatch):
    x = _inputs()
    is_train = np.random.default_rng(2).random(len(x)) < 0.8
    small = StemCache(0, x)
    want_inverse = small.preconditioner(is_train)
    want_xp = small.preconditioned_inputs(is_train)
    assert want_xp is not None and torch.equal(want_xp, x @ want_inverse)

    monkeypatch.setattr(stem_mod, "BLOCKED_NUMBERS", 10)
    monkeypatch.setattr(stem_mod, "KEEP_PRECONDITIONED_NUMBERS", 10)
    blocked = []
    real = stem_mod.moment_blocked
    monkeypatch.setattr(stem_mod, "moment_blocked", lambda *a, **k: blocked.append(1) or real(*a, **k))
    large = StemCache(0, x)
    inverse = large.preconditioner(is_train)
    assert blocked  # the damping's half and the moment: both summed in blocks
    assert large.damping == pytest.approx(small.damping, rel=1e-9)
    torch.testing.assert_close(inverse, want_inverse, rtol=1e-4, atol=1e-5 * float(want_inverse.abs().max()))
    assert large.preconditioned_inputs(is_train) is None and large.preconditioned is None
    # What a training step multiplies then (``HeadOptimiser.step``): its own rows.
    rows = torch.tensor([3, 17, 400])
    torch.testing.assert_close(x[rows] @ inverse, want_xp[rows], rtol=1e-4, atol=1e-4)
