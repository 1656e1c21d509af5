"""``feature_terms = "landing"``: an edit's pull and push act only until it is learned.

One step's loss on hand-made outputs: an edit predicted as its target and nearer its new
neighbours than its old contributes no feature term (its gradient is cross-entropy's alone), one
that is not learned gets exactly the ``"always"`` term, and ``"always"`` is the old loss.
"""

import torch

from game.learning.loss import LossWeights, StepTargets, edits_learned, finetune_loss

F = 4


def _targets(n_edits: int = 2) -> StepTargets:
    rows = n_edits + 4  # two edits, then two cards around each drop / old place
    return StepTargets(
        labels=torch.tensor([1, 1, 1, 1, 0, 0])[:rows],
        weights=torch.ones(rows),
        n_edits=n_edits,
        edit_labels=torch.tensor([1, 1]),
        edit_weights=torch.tensor([2.0, 3.0]),
        is_relabel=torch.tensor([True, True]),
        drop_rows=torch.tensor([[2, 3], [2, 3]]),
        old_rows=torch.tensor([[4, 5], [4, 5]]),
        reference=torch.zeros(rows - n_edits, F),
        pull_spread=1.0,
        spread=1.0,
    )


def _outputs() -> tuple[torch.Tensor, torch.Tensor]:
    # edit 0 sits between the clusters, predicted as its target; edit 1 still in its old cluster
    # and predicted as its old class. Drop neighbours at +x, old neighbours at -x.
    space = torch.tensor(
        [
            [0.6, 0.0, 0.0, 0.0],
            [-1.0, 0.1, 0.0, 0.0],
            [1.0, 0.2, 0.0, 0.0],
            [1.0, -0.2, 0.0, 0.0],
            [-1.0, 0.2, 0.0, 0.0],
            [-1.0, -0.2, 0.0, 0.0],
        ],
        requires_grad=True,
    )
    logits = torch.tensor(
        [[0.0, 2.0], [2.0, 0.0], [0, 1.0], [0, 1.0], [1.0, 0], [1.0, 0]], requires_grad=True
    )
    return logits, space


def _grads(landing: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    logits, space = _outputs()
    terms = finetune_loss(logits, space, space, _targets(), LossWeights(landing=landing))
    terms.total.backward()
    assert space.grad is not None
    return space.grad.clone(), terms.feature.detach(), float(terms.cross_entropy.detach())


def test_landing_drops_the_feature_term_of_learned_edits_only():
    g_always, feat_always, ce_always = _grads(False)
    g_landing, feat_landing, ce_landing = _grads(True)
    # edit 0 (learned): its features get no gradient from the feature term under "landing"
    assert g_always[0].abs().sum() > 0
    assert torch.allclose(g_landing[0], torch.zeros(F))
    # edit 1 (not learned): the same pull and push as "always"
    assert torch.allclose(g_landing[1], g_always[1])
    assert 0 < float(feat_landing) < float(feat_always)
    assert ce_landing == ce_always


def test_edits_learned_is_unchanged_by_the_refactor():
    logits, space = _outputs()
    t = _targets()
    terms = finetune_loss(logits, space, space, t, LossWeights())
    assert not edits_learned(logits, terms, t)  # edit 1 is neither predicted nor nearer
    logits2 = logits.detach().clone()
    logits2[1] = torch.tensor([0.0, 2.0])
    space2 = space.detach().clone()
    space2[1, 0] = 0.8
    terms2 = finetune_loss(logits2, space2, space2, t, LossWeights())
    assert edits_learned(logits2, terms2, t)
