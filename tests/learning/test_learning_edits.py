"""What a drop means: relabel, reinforce with repeats, unsure."""

import numpy as np

from game.core.events import CardDropped
from game.core.scene import LearningConfig
from game.core.workspace import Workspace
from game.learning.edits import REINFORCE, RELABEL, UNSURE, interpret_drop, repeats_for


def two_clusters() -> Workspace:
    """Class 0 around x = -1, class 1 around x = +1, 20 cards each on a ring of radius 0.1..0.2."""
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([0, 1], 20)
    angles = rng.uniform(0, 2 * np.pi, n)
    radii = rng.uniform(0.1, 0.2, n)
    pos = np.stack(
        [np.where(labels == 0, -1.0, 1.0) + radii * np.cos(angles), radii * np.sin(angles), np.ones(n)], 1
    )
    top5 = np.stack([labels, 1 - labels], 1)
    return Workspace(
        images=np.zeros((n, 8, 8, 1), np.uint8),
        labels=labels,
        class_names=["a", "b"],
        top5_classes=top5,
        top5_scores=np.ones((n, 2), np.float32),
        features=np.zeros((n, 4), np.float32),
        positions=pos.astype(np.float32),
        is_train=np.ones(n, bool),
        sources=[f"s{i}" for i in range(n)],
    )


def drop(ws: Workspace, card: int, position) -> CardDropped:
    return ws.drop_event(card, position)


def test_drop_in_other_cluster_relabels():
    ws = two_clusters()
    e = interpret_drop(drop(ws, 3, (1.0, 0.0, 1.0)), ws, LearningConfig())
    assert (e.action, e.old_label, e.new_label) == (RELABEL, 0, 1)
    assert e.repeats >= 7  # dropped right at the centroid


def test_drop_in_own_cluster_reinforces_with_repeats():
    ws = two_clusters()
    cfg = LearningConfig(r_max=8)
    at_centre = interpret_drop(drop(ws, 3, (-1.0, 0.0, 1.0)), ws, cfg)
    near_rim = interpret_drop(drop(ws, 3, (-1.0, 0.19, 1.0)), ws, cfg)
    assert at_centre.action == near_rim.action == REINFORCE
    assert at_centre.new_label == 0
    assert at_centre.repeats > near_rim.repeats >= 1


def test_drop_far_from_everything_is_unsure():
    ws = two_clusters()
    e = interpret_drop(drop(ws, 3, (0.0, 3.0, 1.0)), ws, LearningConfig())
    assert e.action == UNSURE and e.new_label == e.old_label == 0 and e.repeats == 0


def test_repeats_fall_linearly_from_r_max_to_one():
    assert repeats_for(0.0, 1.0, 8) == 8
    assert repeats_for(0.5, 1.0, 8) == round(1 + 7 * 0.5)
    assert repeats_for(1.0, 1.0, 8) == 1
    assert repeats_for(5.0, 1.0, 8) == 1
    assert repeats_for(0.0, 1.0, 1) == 1
    values = [repeats_for(d, 1.0, 8) for d in np.linspace(0, 1, 11)]
    assert values == sorted(values, reverse=True)


def test_dropped_card_does_not_bend_its_own_cluster():
    ws = two_clusters()
    before = interpret_drop(drop(ws, 3, (-1.0, 0.05, 1.0)), ws, LearningConfig())
    ws.positions[3] = (0.0, 5.0, 1.0)  # where it is being carried must not count
    after = interpret_drop(drop(ws, 3, (-1.0, 0.05, 1.0)), ws, LearningConfig())
    assert after == before and after.action == REINFORCE
