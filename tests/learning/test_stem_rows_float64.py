"""The fine-tune preparation gathers the training rows into float64 a block at a time (issue 17):
the preconditioner and the derived damping must be exactly what the one-line gather gives."""

import numpy as np
import torch

from game.learning.stem import StemCache, derive_damping, rows_float64


def _inputs() -> tuple[torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(4)
    # A shared component plus noise, like a stem's ReLU outputs: a moment that needs damping.
    x = torch.relu(torch.randn(300, 48, generator=gen) + torch.randn(1, 48, generator=gen))
    is_train = np.random.default_rng(5).random(300) < 0.7
    return x.float().contiguous(), is_train


def test_rows_float64_is_the_gather_converted_bit_for_bit():
    x, is_train = _inputs()
    want = x[torch.from_numpy(np.flatnonzero(is_train))].double()
    got = rows_float64(x, is_train, block=37)  # blocks that do not divide the rows
    assert got.dtype == torch.float64 and torch.equal(got, want)
    assert rows_float64(x, np.zeros(300, bool)).shape == (0, 48)


def test_preconditioner_and_damping_equal_the_one_line_gather():
    x, is_train = _inputs()
    rows = x[torch.from_numpy(np.flatnonzero(is_train))]
    damping = derive_damping(rows)
    plain = rows.double()
    moment = plain.T @ plain / len(plain)
    moment += damping * float(moment.diagonal().mean()) * torch.eye(len(moment), dtype=moment.dtype)
    want = torch.linalg.inv(moment).float()

    stem = StemCache(0, x)
    got = stem.preconditioner(is_train)
    assert stem.derived_damping == damping and 0.005 <= damping <= 0.64
    assert torch.equal(got, want)
    assert torch.equal(stem.preconditioned_inputs(is_train), x @ want)
