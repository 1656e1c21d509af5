"""``replay_all_up_to``: a job whose check runs (a network that did not memorise the labels the
guidance distrusts) replays every trusted training card at every step, not a ``replay_batch``
sample (issue 13: that met shapes' loss p95 and kept photo crops' gain); a job on a memorised
network, one above the cap and one with the setting off are the sampled jobs of before, bit for bit.
"""

import dataclasses

import numpy as np
import pytest
from test_check_stop import _request
from test_replay_trust import request_with_wrong_labels

import game.learning.finetune as finetune
from game.learning.finetune import prepare_batch, run_finetune


def test_the_rest_is_every_other_trusted_training_card(loaded_digits):
    req, edit, wrong = request_with_wrong_labels(loaded_digits, seed=1)
    req.config = dataclasses.replace(loaded_digits.scene.learning, label_trust="drop", check_samples=128)
    assert req.config.replay_all_up_to == 4096  # the default
    batch = prepare_batch(req, np.random.default_rng(0))
    rest = batch.replay_rest
    assert rest is not None and batch.replay_rest_trust is not None and batch.check_pool is not None
    assert req.is_train[rest].all() and edit.card not in rest
    for other in (batch.replay_pool, batch.check_pool, batch.neighbour_cards):
        assert not np.intersect1d(rest, other).size
    assert (batch.replay_rest_trust > 0).all()  # "drop": distrusted cards are not replayed
    assert np.isin(rest, wrong).mean() < 0.05
    # with the pool, the check cards and the neighbours: every training card the guidance trusts
    # (a distrusted one may only be missing)
    covered = np.concatenate([rest, batch.replay_pool, batch.check_pool, batch.neighbour_cards, [edit.card]])
    missing = np.setdiff1d(np.flatnonzero(req.is_train), covered)
    assert len(missing) < 0.1 * req.is_train.sum()
    # the rest of the batch is as without it (its trust is a call of its own)
    off = dataclasses.replace(req.config, replay_all_up_to=0)
    old = prepare_batch(dataclasses.replace(req, config=off), np.random.default_rng(0))
    assert old.replay_rest is None
    assert np.array_equal(old.replay_pool, batch.replay_pool) and np.array_equal(old.trust, batch.trust)
    # above the cap: nothing, not even judged
    cap = int(req.is_train.sum()) // 2
    above = dataclasses.replace(req.config, replay_all_up_to=cap)
    assert prepare_batch(dataclasses.replace(req, config=above), np.random.default_rng(0)).replay_rest is None


def test_a_head_whose_every_card_at_every_step_would_cost_too_much_samples(loaded_digits):
    # The digits' SmallCNN head (132 k multiply-adds a card) replays every card under the default
    # cost cap; a head that costs more per card than the cap allows for these cards samples as a
    # large dataset does (an AlexNet head: 16.8 M a card, 206 CPU s a drop at 5,400 cards).
    from game.nets.architectures import AlexNet
    from game.nets.split import head_multiply_adds

    req, _, _ = request_with_wrong_labels(loaded_digits, seed=1)
    req.config = dataclasses.replace(loaded_digits.scene.learning, label_trust="drop", check_samples=128)
    heads = req.config.head_layers
    per_card = head_multiply_adds(req.network.module, heads)
    assert per_card == 1024 * 128 + 128 * 10  # SmallCNN: fc1 and fc2
    assert head_multiply_adds(AlexNet(10), 2) == 4096 * 4096 + 4096 * 10  # fc7 and fc8
    rng = np.random.default_rng(0)
    assert req.config.replay_all_max_cost == 1e9
    rest = prepare_batch(req, rng).replay_rest
    assert rest is not None
    # The cap counts the training cards outside the edits, neighbours and check cards (the pool's
    # and the rest's, before "drop" leaves distrusted ones out): at most all training cards.
    cards = int(req.is_train.sum())
    for cost, sampled in ((per_card * len(rest) - 1, True), (per_card * cards, False), (0.0, False)):
        capped = dataclasses.replace(req, config=dataclasses.replace(req.config, replay_all_max_cost=cost))
        got = prepare_batch(capped, np.random.default_rng(0)).replay_rest
        assert (got is None) == sampled, cost
        if got is not None:
            assert np.array_equal(got, rest)  # under the cap: the same cards as before


@pytest.fixture
def trained_rows(monkeypatch):
    """The rows of every training step of the jobs (what the optimiser stepped on)."""
    seen: list[np.ndarray] = []
    step = finetune.HeadOptimiser.step

    def spy(self, runner, rows):
        seen.append(np.array(rows))
        return step(self, runner, rows)

    monkeypatch.setattr(finetune.HeadOptimiser, "step", spy)
    return seen


def _job(loaded, unsure: bool, **settings):
    req = _request(loaded, 256, unsure=unsure)
    req.config = dataclasses.replace(req.config, **settings)
    return req


def test_a_checked_job_trains_every_trusted_training_card_at_every_step(loaded_digits, trained_rows):
    req = _job(loaded_digits, unsure=True)
    batch = prepare_batch(req, np.random.default_rng(req.seed))
    assert batch.replay_rest is not None
    every = np.union1d(batch.replay_pool, batch.replay_rest)
    run_finetune(req)
    assert len(trained_rows) > 5
    for rows in trained_rows:  # the edit, its neighbours and every trusted training card, each step
        assert np.array_equal(np.sort(rows[len(batch.fixed_rows) :]), every)
    # the same job sampling (off) replays replay_batch cards a step
    trained_rows.clear()
    run_finetune(_job(loaded_digits, unsure=True, replay_all_up_to=0))
    assert {len(r) - len(batch.fixed_rows) for r in trained_rows} == {batch.replay_batch}


@pytest.mark.parametrize("unsure", [False, True], ids=["memorised", "above-the-cap"])
def test_memorised_and_large_jobs_are_the_sampled_jobs_of_before(loaded_digits, unsure):
    """A memorised network's job (the check never runs) with the setting on, and an unsure one above
    the cap, are bit for bit the job with it off."""
    on = {"replay_all_up_to": 4096} if not unsure else {"replay_all_up_to": 10}
    new = run_finetune(_job(loaded_digits, unsure, **on))
    old = run_finetune(_job(loaded_digits, unsure, replay_all_up_to=0))
    assert new.steps == old.steps and new.learned == old.learned
    assert new.weights == old.weights
