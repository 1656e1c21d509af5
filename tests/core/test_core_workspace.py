import numpy as np
import pytest

from game.core import events as ev
from game.core.workspace import CARD_PENDING, CARD_UNSURE, Workspace, class_centroids, cluster_radii


def make_ws(n=6):
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 1])[:n]
    positions = np.array(
        [[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [5, 5, 5], [5.1, 5, 5], [5, 5.1, 5]], np.float32
    )
    return Workspace(
        images=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
        labels=labels,
        class_names=["a", "b"],
        top5_classes=np.tile([[0, 1]], (n, 1)),
        top5_scores=np.tile([[0.9, 0.1]], (n, 1)).astype(np.float32),
        features=rng.normal(size=(n, 4)).astype(np.float32),
        positions=positions,
        is_train=np.ones(n, bool),
        sources=[f"s{i}" for i in range(n)],
    )


def test_events_apply_only_at_flush_and_reach_listeners():
    ws = make_ws()
    seen = []
    ws.subscribe(lambda e, w: seen.append(e.kind))
    ws.post(ev.CardMoved(card=0, position=(1.0, 2.0, 3.0)))
    assert ws.positions[0].tolist() == [0, 0, 0]
    applied = ws.flush()
    assert [e.kind for e in applied] == ["move"] and seen == ["move"]
    assert ws.positions[0].tolist() == [1, 2, 3]


def test_drop_and_edit_mark_cards():
    ws = make_ws()
    ws.apply(ev.CardDropped(card=1, position=(5.0, 5.0, 5.0), nearest_class=1, distance=0.05))
    assert ws.card_state[1] == CARD_PENDING
    ws.apply(ev.EditQueued(card=2, action="unsure", old_label=0, new_label=0, repeats=0, position=(9, 9, 9)))
    assert ws.card_state[2] == CARD_UNSURE


def test_model_update_replaces_state_and_marks_relabels():
    ws = make_ws()
    labels = ws.labels.copy()
    labels[0] = 1
    new_pos = ws.positions + 1
    ws.apply(
        ev.ModelUpdated(
            version=3,
            labels=labels,
            top5_classes=ws.top5_classes[:, ::-1],
            top5_scores=ws.top5_scores,
            features=ws.features,
            positions=new_pos,
        )
    )
    assert ws.model_version == 3
    assert ws.labels[0] == 1 and ws.original_labels[0] == 0
    assert ws.card_state[0] != 0 and ws.card_state[1] == 0
    np.testing.assert_allclose(ws.positions, new_pos)
    assert ws.predictions[0] == 1


def test_centroids_radii_and_nearest():
    ws = make_ws()
    c = ws.centroids()
    np.testing.assert_allclose(c[0], [0.1 / 3, 0.1 / 3, 0], atol=1e-6)
    assert ws.nearest_centroid(np.array([4.9, 5, 5]))[0] == 1
    r = ws.cluster_radii(100)
    assert r[0] > 0 and r[1] > 0
    empty = class_centroids(ws.positions, np.zeros(6, int), 3)
    assert np.isnan(empty[2]).all()
    assert cluster_radii(ws.positions, np.zeros(6, int), 3, 90)[2] == 0


def test_add_card_grows_every_array():
    ws = make_ws()
    ws.apply(
        ev.CardAdded(
            image=np.zeros((8, 8, 1), np.uint8),
            label=1,
            top5_classes=(1, 0),
            top5_scores=(0.7, 0.3),
            feature=np.zeros(4, np.float32),
            position=(1.0, 1.0, 1.0),
        )
    )
    assert ws.n_cards == 7 and len(ws.sources) == 7 and ws.labels[-1] == 1 and not ws.is_train[-1]
    with pytest.raises(ValueError, match="shape"):
        ws.apply(
            ev.CardAdded(np.zeros((4, 4, 1), np.uint8), 0, (0, 1), (1.0, 0.0), np.zeros(4), (0.0, 0.0, 0.0))
        )


def test_copy_is_independent():
    ws = make_ws()
    other = ws.copy()
    other.apply(ev.CardMoved(card=0, position=(9.0, 9.0, 9.0)))
    assert ws.positions[0].tolist() == [0, 0, 0]


def test_event_round_trip_through_fields():
    e = ev.CardDropped(card=3, position=(1.0, 2.0, 3.0), nearest_class=2, distance=0.5, hand="right")
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in e.to_fields().items()}
    assert ev.event_from_fields("drop", fields) == e
    with pytest.raises(ValueError, match="unknown event kind"):
        ev.event_from_fields("nope", {})
    with pytest.raises(ValueError, match="unknown fields"):
        ev.event_from_fields("drop", {"card": 1, "bogus": 2})


def test_mismatched_lengths_rejected():
    ws = make_ws()
    with pytest.raises(ValueError, match="positions"):
        Workspace(
            ws.images,
            ws.labels,
            ws.class_names,
            ws.top5_classes,
            ws.top5_scores,
            ws.features,
            ws.positions[:3],
            ws.is_train,
            ws.sources,
        )


def test_drop_event_names_the_nearest_centroid():
    ws = make_ws()
    e = ws.drop_event(2, np.array([5.0, 5.0, 4.0]), hand="right")
    assert (e.card, e.nearest_class, e.hand) == (2, 1, "right")
    assert e.position == (5.0, 5.0, 4.0)
    assert abs(e.distance - float(np.linalg.norm(ws.centroids()[1] - [5.0, 5.0, 4.0]))) < 1e-6
