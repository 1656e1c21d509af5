"""Held-out cards near an edit are not trained with their labels (issue 13).

The cards around a drop and around an edited card's old place anchor the fine-tune with their
labels; they are drawn from every card in the layout, so held-out ones were trained too and the
held-out accuracy partly measured trained cards. They still set the pull's target (features only).
"""

import dataclasses

import numpy as np
from test_learning_finetune import pick_relabel, request

from game.learning.finetune import prepare_batch


def _batch(loaded, train_heldout: bool):
    _, _, edit = pick_relabel(loaded)
    req = request(loaded, [edit], None)
    req.config = dataclasses.replace(loaded.scene.learning, train_heldout=train_heldout)
    return req, prepare_batch(req, np.random.default_rng(0))


def test_heldout_neighbours_get_no_cross_entropy(loaded_digits):
    req, batch = _batch(loaded_digits, train_heldout=False)
    held = ~req.is_train[batch.neighbour_cards]
    assert held.any() and (~held).any()  # the edit's neighbourhoods mix both
    weights = batch.fixed_weights.numpy()[batch.n_edits :]
    np.testing.assert_array_equal(weights, (~held).astype(np.float32))
    assert (batch.fixed_weights.numpy()[: batch.n_edits] >= 1).all()  # the edit itself is trained


def test_train_heldout_keeps_the_old_behaviour(loaded_digits):
    _, batch = _batch(loaded_digits, train_heldout=True)
    assert (batch.fixed_weights.numpy() >= 1).all()
