"""One array of pre-activations per stem cache (issue 17): a low-rank re-inference from the newest
kept state writes over its array, and the base keeps only the factors back. The new state's
values are what a new array got; the rebuilt base is the old one within float noise, and a job
from it (an undo, a cancel) still matches the full pass."""

import numpy as np
import pytest
import torch

from game.learning import head_update
from game.learning.finetune import Runner, compute_stem_cache
from game.learning.head_update import cache_for
from game.learning.stem import prime_pre_activations


def _low_rank_change(net, seed: int, rank: int = 5) -> None:
    fc1 = net.module.classifier.fc1
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out_dim, in_dim = fc1.weight.shape
        fc1.weight += (
            torch.randn(out_dim, rank, generator=gen) @ torch.randn(rank, in_dim, generator=gen) * 0.02
        )
        fc1.bias += 0.01 * seed


def _full(net, images, stem):
    return Runner(net, images, stem, full=False)._infer_all_full(1024)


def test_update_writes_over_the_base_and_the_base_is_rebuilt(loaded_digits, monkeypatch):
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    start = loaded_digits.network
    images = loaded_digits.workspace.images
    stem = compute_stem_cache(start, images, 2)
    prime_pre_activations(start, len(images), stem)
    cache = cache_for(stem)
    primed = cache.newest()
    assert primed is not None and primed.pre is not None
    array, before = primed.pre, primed.pre.clone()

    net = start.clone()
    runner = Runner(net, images, stem, full=False)
    assert runner.base_pre_activations is primed
    _low_rank_change(net, 2)
    first = runner.infer_all()
    assert runner.last_infer_low_rank == 5
    newest = cache.newest()
    assert newest is not None and newest.pre is array  # the base's array, written over
    assert primed.pre is None and primed.derived is not None and primed.derived[0] is newest
    assert len(cache) == 2
    # The new values are those a new array got (the old code's), the full pass's within noise.
    np.testing.assert_allclose(first.features, _full(net, images, stem).features, rtol=1e-5, atol=1e-5)
    # The base rebuilt from the newest state and the factors: the old array within float noise.
    x = stem.inputs
    rebuilt = torch.cat([primed.rows(x, s, min(s + 500, len(x))) for s in range(0, len(x), 500)])
    torch.testing.assert_close(rebuilt, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))

    # An undo: a job from the start network again finds the (derived) base and matches the full pass.
    again = start.clone()
    undo = Runner(again, images, stem, full=False)
    assert undo.base_pre_activations is primed
    _low_rank_change(again, 3)
    result = undo.infer_all()
    assert undo.last_infer_low_rank is not None
    np.testing.assert_allclose(result.features, _full(again, images, stem).features, rtol=1e-5, atol=1e-5)
    # It made a new array (the base had none to write over); its base, derived from a state no
    # longer kept, went: one array is kept.
    assert cache.newest() is not None and cache.newest().pre is not array
    assert len(cache) == 1


def test_a_chain_of_jobs_keeps_one_array(loaded_digits, monkeypatch):
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    net = loaded_digits.network.clone()
    images = loaded_digits.workspace.images
    stem = compute_stem_cache(net, images, 2)
    prime_pre_activations(net, len(images), stem)
    cache = cache_for(stem)
    for seed in (4, 5, 6):
        runner = Runner(net, images, stem, full=False)
        _low_rank_change(net, seed)
        result = runner.infer_all()
        assert runner.last_infer_low_rank is not None
        np.testing.assert_allclose(result.features, _full(net, images, stem).features, rtol=1e-5, atol=1e-4)
        states = list(cache._states)
        assert len(states) == 2 and sum(s.pre is not None for s in states) == 1


def test_a_pass_that_fails_after_writing_over_the_base_keeps_no_wrong_base(loaded_digits, monkeypatch):
    """Once the new rows are over the base's array, a failure before the base gives it up (here
    keeping the new weights' copy: a MemoryError at 50k) must not leave the base kept under its
    old weights: a later job from them (an undo) would start from the new rows."""
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    start = loaded_digits.network
    images = loaded_digits.workspace.images
    stem = compute_stem_cache(start, images, 2)
    prime_pre_activations(start, len(images), stem)
    cache = cache_for(stem)

    net = start.clone()
    runner = Runner(net, images, stem, full=False)
    _low_rank_change(net, 2)
    kept = head_update.PreActivations

    def no_room(*args, **kwargs):
        raise MemoryError("no room for the weight's copy (test)")

    monkeypatch.setattr(head_update, "PreActivations", no_room)
    with pytest.raises(MemoryError):
        runner.infer_all()
    monkeypatch.setattr(head_update, "PreActivations", kept)
    assert len(cache) == 0  # the overwritten base is not kept under its old weights

    again = start.clone()
    undo = Runner(again, images, stem, full=False)
    assert undo.base_pre_activations is None
    _low_rank_change(again, 3)
    result = undo.infer_all()
    np.testing.assert_allclose(result.features, _full(again, images, stem).features, rtol=1e-5, atol=1e-5)
