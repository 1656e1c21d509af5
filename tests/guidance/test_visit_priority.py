"""Orders in which to show suspects (``visit_priority``, issue 13's tenth session A/B): a
probably-wrong label whose look-alikes the network predicts as that label comes before a more
suspicious one alone among look-alikes the network predicts right; cards not probably wrong
follow by suspicion. ``"auto"`` and ``"auto_partial"`` (issue 13's eleventh session; the latter the
app's order) choose between ``"disputed"`` and ``"suspicion"`` from the network and the labels."""

from __future__ import annotations

import numpy as np
import pytest

from game.learning.guidance import (
    APP_ORDER,
    AUTO_CONFUSED,
    AUTO_TAKEN_ON,
    Suspicion,
    auto_rule,
    decided_rule,
    top_suspects,
    visit_priority,
    within_top,
)

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
    # By suspicion the lone one comes first.
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


def test_auto_takes_disputed_where_the_network_took_on_suspect_labels_and_tells_trusted_apart():
    # Suspects above one half: 3, 8 and 9; the network predicts the labels of 3 and 9 (two of
    # three taken on) and every trusted card's label. The held-out view disputes 4 and 5, two of
    # 9's look-alikes, so 9 comes before the more suspicious 8.
    held_class = LABELS.copy()
    held_class[[4, 5]] = 0
    d = details(held_class)
    assert auto_rule(d, LABELS, PREDICTIONS, IS_TRAIN) == "disputed"
    auto = visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "auto")
    assert np.array_equal(auto, visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "disputed"))
    assert top_suspects(auto, 3).tolist() == [9, 8, 3]


def test_auto_keeps_the_suspicion_where_the_network_took_on_none_of_them():
    # A network trained on clean labels (the guidance test's fixture): it predicts another class
    # for each suspect, and the lone wrong label, the most suspicious, stays first.
    predictions = PREDICTIONS.copy()
    predictions[3], predictions[9] = 1, 0
    d = details(LABELS)
    assert auto_rule(d, LABELS, predictions, IS_TRAIN) == "suspicion"
    auto = visit_priority(d, LABELS, predictions, IS_TRAIN, "auto")
    assert np.array_equal(auto, SCORES)
    assert top_suspects(auto, 3).tolist() == [8, 9, 3]


def test_auto_keeps_the_suspicion_where_the_network_confuses_trusted_labels():
    # The suspects as in the first auto test, but the network predicts class 1 for one of the
    # seven trusted cards (card 2, label 0): one in seven confused, above AUTO_CONFUSED.
    predictions = PREDICTIONS.copy()
    predictions[2] = 1
    d = details(LABELS)
    assert AUTO_CONFUSED < 1 / 7
    assert auto_rule(d, LABELS, predictions, IS_TRAIN) == "suspicion"
    # Held-out cards do not count: with card 2 held out, nothing trusted is confused.
    held_out_2 = IS_TRAIN.copy()
    held_out_2[2] = False
    assert auto_rule(d, LABELS, predictions, held_out_2) == "disputed"


def test_auto_without_suspects_is_the_suspicion():
    d = Suspicion(np.full(10, 0.2, dtype=np.float32), details(LABELS).held_out, NEIGHBOURS)
    assert auto_rule(d, LABELS, PREDICTIONS, IS_TRAIN) == "suspicion"
    assert AUTO_TAKEN_ON > 0.0


def test_auto_partial_keeps_the_suspicion_where_the_network_memorised_its_suspects():
    # Two of the three suspects' labels taken on: half or more, a memorised network.
    held_class = LABELS.copy()
    held_class[[4, 5]] = 0
    d = details(held_class)
    assert auto_rule(d, LABELS, PREDICTIONS, IS_TRAIN, partial=True) == "suspicion"
    assert np.array_equal(visit_priority(d, LABELS, PREDICTIONS, IS_TRAIN, "auto_partial"), SCORES)
    # One of three (card 9 only): some taken on, fewer than half, so the disputed order, 9 first.
    predictions = PREDICTIONS.copy()
    predictions[3] = 1
    assert auto_rule(d, LABELS, predictions, IS_TRAIN, partial=True) == "disputed"
    partial = visit_priority(d, LABELS, predictions, IS_TRAIN, "auto_partial")
    assert np.array_equal(partial, visit_priority(d, LABELS, predictions, IS_TRAIN, "disputed"))
    assert top_suspects(partial, 2).tolist() == [9, 8]


def test_decided_rule_resolves_the_auto_names_and_leaves_the_others():
    d = details(LABELS)
    assert APP_ORDER == "auto_partial"
    assert decided_rule("auto", d, LABELS, PREDICTIONS, IS_TRAIN) == "disputed"
    assert decided_rule("auto_partial", d, LABELS, PREDICTIONS, IS_TRAIN) == "suspicion"
    assert decided_rule("spread", d, LABELS, PREDICTIONS, IS_TRAIN) == "spread"
