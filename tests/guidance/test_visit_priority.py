"""Orders in which to show suspects (``visit_priority``, issue 13's tenth session A/B): a
probably-wrong label whose look-alikes the network predicts as that label comes before a more
suspicious one alone among look-alikes the network predicts right; cards not probably wrong
follow by suspicion. The app's order stays the suspicion's (``rule = "suspicion"``)."""

from __future__ import annotations

import numpy as np
import pytest

from game.learning.guidance import Suspicion, top_suspects, visit_priority, within_top

# Cards 0-3 carry class 0, 4-7 class 1. Card 8: a lone wrong label 1 (its look-alikes are
# predicted 0). Card 9: a wrong label 1 whose look-alikes the network predicts as 1. Card 3: a
# probably-wrong 0 among look-alikes predicted 0.
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PREDICTIONS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
SCORES = np.array([0.1, 0.1, 0.2, 0.6, 0.1, 0.1, 0.3, 0.1, 0.95, 0.7], dtype=np.float32)
NEIGHBOURS = np.array(
    [
        [1, 2, 3],
        [0, 2, 3],
        [0, 1, 3],
        [0, 1, 2],
        [5, 6, 7],
        [4, 6, 7],
        [4, 5, 7],
        [4, 5, 6],
        [0, 1, 2],
        [4, 5, 6],
    ]
)
IS_TRAIN = np.ones(10, dtype=bool)


def details(held_out_class: np.ndarray) -> Suspicion:
    held = np.full((10, 2), 0.1)
    held[np.arange(10), held_out_class] = 0.9
    return Suspicion(SCORES, held, NEIGHBOURS)


def test_a_wrong_label_that_spread_comes_before_a_lone_one():
    d = details(LABELS)
    spread = visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "spread")
    # 9 and 3 (every look-alike predicted as their label; 9 the more suspicious) before 8, then
    # the cards at or below one half by suspicion.
    assert top_suspects(spread, 10).tolist() == [9, 3, 8, 6, 2, 0, 1, 4, 5, 7]
    # By suspicion (the app's order) the lone one comes first.
    by_suspicion = visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "suspicion")
    assert np.array_equal(by_suspicion, SCORES)
    assert top_suspects(by_suspicion, 3).tolist() == [8, 9, 3]


def test_disputed_counts_only_look_alikes_the_held_out_view_gives_another_class():
    # The held-out view says 0 for cards 4 and 5: of 9's look-alikes (4, 5, 6) two are disputed.
    held_class = LABELS.copy()
    held_class[[4, 5]] = 0
    d = details(held_class)
    p = visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "disputed")
    assert top_suspects(p, 3).tolist() == [9, 8, 3]  # 3's look-alikes are undisputed: share 0
    assert p[9] == pytest.approx(2.0 + 2.0 / 3.0 + 0.5 / 3.0 * 0.7)


def test_cluster_counts_same_label_training_look_alikes_above_one_half():
    scores = SCORES.copy()
    scores[[4, 5]] = 0.8  # two of 9's look-alikes, label 1 like 9, are suspects too
    d = Suspicion(scores, details(LABELS).held_out, NEIGHBOURS)
    p = visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "cluster")
    assert top_suspects(p, 3).tolist()[0] == 9
    held_out_4 = IS_TRAIN.copy()
    held_out_4[4] = False  # a held-out look-alike does not count
    q = visit_priority(d, LABELS, PREDICTIONS, held_out_4, "cluster")
    assert q[9] < p[9]
    with pytest.raises(ValueError):
        visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "nearest")


def test_no_neighbours_leave_the_suspicion():
    d = Suspicion(SCORES, details(LABELS).held_out, np.zeros((10, 0), dtype=np.int64))
    assert np.array_equal(visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "spread"), SCORES)


def test_within_top_reorders_only_the_first_cards_shown():
    d = details(LABELS)
    spread = visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "spread")
    # By suspicion: 8, 9, 3, 6, 2, ...; the first two reordered by the rule: 9, 8; 3 stays third.
    order = within_top(SCORES, spread, 2)
    assert order.tolist()[:4] == [9, 8, 3, 6]
    assert sorted(order.tolist()) == list(range(10))
    assert within_top(SCORES, spread, 2, exclude=[9]).tolist()[:3] == [3, 8, 6]
    assert np.array_equal(within_top(SCORES, spread, 0), top_suspects(SCORES, 10))
