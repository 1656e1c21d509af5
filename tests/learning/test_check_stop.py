"""``check_samples``: a job holds some trusted training cards out of its training and, once its edits
are learned, goes on while their cross-entropy falls (issue 13: the networks that never fitted their
noise wanted more steps on trusted labels than the edits-learned stop gave them, the memorised ones
did not).

The batch: the check cards are training cards, none of them edited, a neighbour or replayed, and
none distrusted. The job: with the check it trains past the step its edits were first learned for
as long as the check cards' loss falls, ends with the edit learned and that loss lower than where
the old stop left it; without it (``check_samples = 0``) it stops at the first learned step.
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_learning_finetune import pick_relabel, request
from test_replay_trust import request_with_wrong_labels

import game.learning.finetune as finetune
from game.learning.finetune import compute_stem_cache, prepare_batch, run_finetune


def test_the_check_cards_are_trusted_training_cards_kept_out_of_training(loaded_digits):
    req, edit, wrong = request_with_wrong_labels(loaded_digits, seed=1)
    req.config = dataclasses.replace(loaded_digits.scene.learning, label_trust="drop", check_samples=0)
    assert prepare_batch(req, np.random.default_rng(0)).check_pool is None
    req.config = dataclasses.replace(req.config, check_samples=128)
    batch = prepare_batch(req, np.random.default_rng(0))
    check = batch.check_pool
    assert check is not None and 100 <= len(check) <= 128
    assert req.is_train[check].all() and edit.card not in check
    assert not np.intersect1d(check, batch.replay_pool).size
    assert not np.intersect1d(check, batch.neighbour_cards).size
    assert batch.trust is not None and (batch.trust[check] == 1).all()
    assert np.isin(check, wrong).mean() < 0.05  # the distrusted wrong labels are not the yardstick


def _request(loaded, check_samples: int, unsure: bool):
    """A relabel job with label trust on.

    ``unsure``: as the suite's shapes and photo crops, whose networks never fitted their noise: 60
    training labels set wrong (the network predicts their true class, so the guidance's distrusted
    cards are mostly labels it did not memorise) and, on a copy of the network, the last layer
    scaled down to a tenth and perturbed, so that the trusted cards still have something to teach.
    Else: the digits network as trained, which fits every training label (as the suite's digits).
    """
    if unsure:
        req, _, _ = request_with_wrong_labels(loaded, seed=2)
        network = copy.deepcopy(loaded.network)
        last = [m for m in network.module.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.mul_(0.1)
            g = torch.Generator().manual_seed(0)
            last.weight.add_(0.3 * last.weight.std() * torch.randn(last.weight.shape, generator=g))
        req.network = network
    else:
        _, _, edit = pick_relabel(loaded)
        req = request(loaded, [edit], None)
    req.stem = compute_stem_cache(req.network, loaded.workspace.images, 2)
    req.config = dataclasses.replace(
        loaded.scene.learning, label_trust="drop", check_samples=check_samples, min_steps=1, max_steps=20
    )
    return req


@pytest.fixture
def checks(monkeypatch):
    """Every loss the jobs' check measured."""
    seen: list[float] = []
    measure = finetune.check_loss

    def spy(runner, batch):
        seen.append(measure(runner, batch))
        return seen[-1]

    monkeypatch.setattr(finetune, "check_loss", spy)
    return seen


def test_a_job_trains_on_while_the_check_cards_loss_falls(loaded_digits, checks):
    plain = run_finetune(_request(loaded_digits, 0, unsure=True))
    assert plain.learned and plain.steps <= 3 and checks == []  # the old stop: as soon as learned
    checked = run_finetune(_request(loaded_digits, 256, unsure=True))
    # it went on past the old stop, checking at every learned step while the loss fell
    assert checked.steps > plain.steps + 5 and len(checks) >= 5
    falling = checks[:-1] if checked.learned and checked.steps < 20 else checks
    assert all(b < a for a, b in zip(falling, falling[1:], strict=False))
    assert checks[-1] < 0.5 * checks[0]  # the trusted cards it did not train on: better predicted
    assert checked.outcomes[0].predicted == checked.outcomes[0].new_label  # the edit stays learned


def test_a_network_that_memorised_its_labels_stops_as_soon_as_its_edits_are_learned(loaded_digits, checks):
    plain = run_finetune(_request(loaded_digits, 0, unsure=False))
    checked = run_finetune(_request(loaded_digits, 256, unsure=False))
    assert checks == []  # nothing for the check to find: it is not even measured
    assert checked.learned and checked.steps == plain.steps
    assert checked.weights == plain.weights  # the same job, bit for bit
