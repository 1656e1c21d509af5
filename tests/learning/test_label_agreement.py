"""``skip_disputed``'s rule, derived per card from the network's own fit of its training labels.

A network that has memorised its label noise predicts every given label, so nothing is skipped
(the fine-tune is the same as without the option); one that has not disputes the wrong labels,
and exactly those leave the cross-entropy. Both networks are really trained here (a small MLP head
on blobs with 20 % of the training labels flipped), short of memorising vs long enough to.
"""

import numpy as np
import pytest
import torch
from torch import nn

from game.learning.finetune import EditBatch, Runner, StemCache, label_agreement
from game.nets.network import Network

N, CLASSES, DIM = 300, 3, 32


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(DIM, 128), nn.ReLU(), nn.Linear(128, CLASSES))


def _blobs() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Inputs (two informative dimensions, the rest noise), true labels, and noisy labels."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, CLASSES, N)
    centres = np.array([[0.0, 4.0], [3.5, -2.0], [-3.5, -2.0]])
    x = rng.normal(0.0, 1.0, (N, DIM))
    x[:, :2] += centres[truth]
    noisy = truth.copy()
    flip = rng.random(N) < 0.2
    noisy[flip] = (truth[flip] + rng.integers(1, CLASSES, flip.sum())) % CLASSES
    return torch.tensor(x, dtype=torch.float32), truth, noisy


def _trained(x: torch.Tensor, labels: np.ndarray, steps: int) -> Network:
    torch.manual_seed(0)
    module = _Head()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    y = torch.from_numpy(labels)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(module.classifier(x), y).backward()
        opt.step()
    return Network(module, "test_mlp", CLASSES, 1, 8, "classifier.1")


def _batch(labels: np.ndarray, x: torch.Tensor) -> EditBatch:
    """Card 0 is the edit; cards 1-10 its neighbours; every other card is in the replay pool."""
    return EditBatch(
        edits=[],
        cards=np.array([0]),
        targets=np.array([labels[0]]),
        repeats=np.ones(1, dtype=np.float32),
        is_relabel=torch.tensor([True]),
        neighbour_cards=np.arange(1, 11),
        drop_rows=torch.zeros((1, 1), dtype=torch.int64),
        old_rows=torch.zeros((1, 1), dtype=torch.int64),
        replay_pool=np.arange(11, N),
        replay_batch=64,
        labels=torch.from_numpy(labels),
        features=torch.zeros((N, 128)),
    )


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    return _blobs()


def _agreement(network: Network, x: torch.Tensor, noisy: np.ndarray) -> torch.Tensor:
    runner = Runner(network, np.zeros((N, 1, 1, 1), dtype=np.uint8), StemCache(0, x), full=False)
    return label_agreement(runner, _batch(noisy, x))


def test_memorised_network_disputes_nothing(blobs):
    x, truth, noisy = blobs
    trusted = _agreement(_trained(x, noisy, 500), x, noisy)
    assert (truth != noisy).sum() > 40  # there is noise to memorise
    assert trusted.sum() == N  # every given label predicted: the option changes nothing


def test_unmemorised_network_disputes_the_wrong_labels(blobs):
    x, truth, noisy = blobs
    trusted = _agreement(_trained(x, noisy, 20), x, noisy).numpy()
    wrong = truth != noisy
    assert trusted[0] == 1.0  # the edited card is never judged
    assert trusted[1:][wrong[1:]].mean() <= 0.2, "most wrong labels should be disputed"
    assert trusted[1:][~wrong[1:]].mean() >= 0.9, "most right labels should be kept"


def test_the_first_networks_judgement_is_kept(blobs):
    """Later jobs start from edited networks: a label they dispute is damage that replay must
    repair, so the stem cache keeps the first network's predictions and judges by those."""
    x, truth, noisy = blobs
    stem = StemCache(0, x)
    images = np.zeros((N, 1, 1, 1), dtype=np.uint8)
    first = label_agreement(Runner(_trained(x, noisy, 500), images, stem, full=False), _batch(noisy, x))
    later = label_agreement(Runner(_trained(x, noisy, 20), images, stem, full=False), _batch(noisy, x))
    assert first.sum() == N and later.sum() == N
    fresh = _agreement(_trained(x, noisy, 20), x, noisy)  # a fresh cache: judged anew
    assert fresh.sum() < N - 20


def test_a_label_the_person_changed_is_never_disputed(blobs):
    """A card the person relabelled is later a neighbour or replayed like any other: the first
    network predicted its old label, not the new one, but the person's label is trained."""
    x, truth, noisy = blobs
    stem = StemCache(0, x)
    runner = Runner(_trained(x, noisy, 20), np.zeros((N, 1, 1, 1), dtype=np.uint8), stem, full=False)
    before = label_agreement(runner, _batch(noisy, x)).numpy()
    moved = np.flatnonzero(before == 1.0)[1:21]  # agreed at first (card 0, the edit, left out)
    relabelled = noisy.copy()
    relabelled[moved] = (noisy[moved] + 1) % CLASSES
    after = label_agreement(runner, _batch(relabelled, x)).numpy()
    assert (after[moved] == 1.0).all()  # the first network disputes these labels, yet they count
    np.testing.assert_array_equal(np.delete(after, moved), np.delete(before, moved))
