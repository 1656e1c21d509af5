"""The drop preview and depth that follows the cursor.

Engine-free: ``DropJudge.cluster_on_ray`` puts a carried card inside the cluster under the ray even
when that cluster lies far behind the card's old depth, and ``describe_edit`` says what a release
does. Offscreen: the desktop controls carry a real card of the default scene onto another cluster
as drawn on screen; the preview text and ring show before release, and the release is judged a
relabel to that cluster by the fine-tune controller (the same judge).
"""

from __future__ import annotations

import numpy as np
import pytest

from game.core import events as ev
from game.core.scene import LearningConfig
from game.core.workspace import Workspace
from game.learning.edits import DropJudge, describe_edit


def two_clusters_at_different_depths() -> Workspace:
    # Class "a" near the viewer (y = 1), class "b" far behind it (y = 4); card 0 is an "a".
    rng = np.random.default_rng(0)
    a = rng.normal((0.0, 1.0, 1.0), 0.05, size=(20, 3))
    b = rng.normal((0.6, 4.0, 1.0), 0.05, size=(20, 3))
    return cards_at(np.concatenate([a, b]), [0] * 20 + [1] * 20, ["a", "b"])


def cards_at(positions: np.ndarray, labels: list[int], class_names: list[str]) -> Workspace:
    """A workspace of blank cards at ``positions`` (only geometry and labels matter here)."""
    n, k = len(positions), len(class_names)
    return Workspace(
        images=np.zeros((n, 8, 8, 1), np.uint8),
        labels=np.array(labels),
        class_names=class_names,
        top5_classes=np.zeros((n, k), np.int64),
        top5_scores=np.zeros((n, k), np.float32),
        features=np.zeros((n, 4), np.float32),
        positions=positions.astype(np.float32),
        is_train=np.ones(n, bool),
        sources=[f"s{i}" for i in range(n)],
    )


def test_cluster_on_ray_places_the_card_inside_the_cluster_under_the_cursor():
    ws = two_clusters_at_different_depths()
    judge = DropJudge(LearningConfig())
    eye = np.array([0.0, 0.0, 1.0])
    centre_b = ws.positions[20:].mean(axis=0)
    hit = judge.cluster_on_ray(ws, 0, eye, centre_b - eye)
    assert hit is not None
    k, point = hit
    assert k == 1
    # On screen the card stays under the cursor (on the ray); in depth it is inside cluster b.
    assert np.linalg.norm(point - centre_b) < 0.05
    edit = judge.judge(ws, 0, point)
    assert (edit.action, edit.new_label) == ("relabel", 1)
    assert describe_edit(edit, ws.class_names).startswith("release: relabel a -> b")
    # A ray into empty space meets no cluster: the caller keeps the card on its plane.
    assert judge.cluster_on_ray(ws, 0, eye, np.array([-1.0, 0.2, 0.0])) is None
    far = judge.judge(ws, 0, (5.0, 5.0, 5.0))
    assert far.action == "unsure"
    assert describe_edit(far, ws.class_names) == "release: unsure (far from every cluster)"


def test_judge_follows_the_cluster_positions_not_the_dragged_cards():
    ws = two_clusters_at_different_depths()
    judge = DropJudge(LearningConfig())
    # Cards dragged into "b" but not yet trained do not bend the clusters drops are judged against.
    for card in range(1, 10):
        ws.apply(ev.CardMoved(card=card, position=(0.6, 4.0, 1.0)))
    before = judge.geometry(ws, 0)[0].copy()
    assert np.allclose(before[0], ws.cluster_positions[1:20].mean(axis=0), atol=1e-5)
    # A new layout (a model update) is what moves them.
    ws.apply(ev.PositionsChanged(positions=ws.positions.copy()))
    after = judge.geometry(ws, 0)[0]
    assert not np.allclose(before[0], after[0])


@pytest.mark.usefixtures("loaded_digits")
def test_desktop_drag_onto_a_cluster_as_drawn_previews_and_relabels(fresh_digits):
    from game.assembly import open_game
    from game.controls.modes import Mode
    from game.learning.controller import FineTuneController

    game = open_game(fresh_digits, offscreen=True, size=(640, 400), controls=True, learning=True)
    app = game.app
    controller = game.controller
    assert isinstance(controller, FineTuneController)
    # One judge: the preview, the desktop carry and the controller's edits.
    assert app.drop_preview.judge is controller.judge and game.controls.judge is controller.judge
    try:
        ws = app.workspace
        seen: list[ev.Event] = []
        ws.subscribe(lambda e, w: seen.append(e))
        app.step()
        w, h = app.size

        def to_mouse(px: tuple[float, float]) -> tuple[float, float]:
            return (2 * px[0] / w - 1, 1 - 2 * px[1] / h)

        centroids = ws.centroids()
        # Target: the class whose centroid is drawn farthest (in depth) from a card of class 0,
        # the case where a drag on a plane at the card's old depth ended "far from every cluster".
        source_class = 0
        members = np.flatnonzero(ws.labels == source_class)
        cam = np.array(app.camera.get_pos(app.render))
        depth = np.linalg.norm(centroids - cam, axis=1)
        target = int(np.argmax(np.where(np.arange(ws.n_classes) == source_class, -np.inf, depth)))
        # A card of the source class that is in front (pickable) under the mouse.
        card, start = -1, None
        for c in members[np.argsort(np.linalg.norm(ws.positions[members] - cam, axis=1))]:
            px = app.project(ws.positions[c])
            if px is None:
                continue
            m = to_mouse(px)
            origin, direction = app.mouse_ray(*m)
            if game.controls.hand.point(origin, direction) == c:
                card, start = int(c), m
                break
        assert card >= 0
        end = to_mouse(app.project(centroids[target]))

        controls = game.controls
        controls.pointer(start)
        controls._press, controls._press_card = start, card  # the mouse button went down here
        for f in np.linspace(0.0, 1.0, 12)[1:]:
            controls.pointer((start[0] + f * (end[0] - start[0]), start[1] + f * (end[1] - start[1])))
            app.step()
        assert game.modes.top is Mode.DRAG  # the carried card has the mouse (Esc would cancel it)
        preview = app.drop_preview
        assert preview.visible
        assert preview.edit is not None and preview.edit.action == "relabel"
        assert preview.edit.new_label == target
        name = ws.class_names
        assert preview.text.startswith(f"release: relabel {name[source_class]} -> {name[target]}")
        # The ring (target colour) and the text are drawn: compare with the same frame without them.
        with_preview = app.pixels().astype(int)
        preview.root.hide()
        preview.label.root.hide()
        app.step(0.0)
        without = app.pixels().astype(int)
        preview.root.show()
        preview.label.root.show()
        changed = np.abs(with_preview - without).sum(axis=2) > 30
        colour = (np.asarray(app.world.colours[target, :3]) * 255).astype(int)
        in_colour = np.abs(with_preview - colour[None, None, :]).sum(axis=2) < 60
        assert (changed & in_colour).sum() > 50
        bottom = changed[int(0.85 * h) :, :]  # the text line at the bottom of the window
        assert bottom.sum() > 100

        controls._on_release()
        app.step()
        edits = [e for e in seen if isinstance(e, ev.EditQueued)]
        assert edits and edits[-1].card == card
        assert (edits[-1].action, edits[-1].new_label) == ("relabel", target)
        assert not preview.visible
        assert game.modes.top is Mode.WORLD  # the drag's mode ended with the release
    finally:
        app.destroy()


def test_the_carry_never_places_a_card_where_the_judge_says_unsure():
    # A big cluster and a tiny one beside it: a point inside the tiny one is nearer the big one's
    # centroid yet outside its reach; the carry must not put the card there.
    rng = np.random.default_rng(1)
    big = rng.normal((0.0, 5.0, 0.0), 0.6, size=(60, 3))
    tiny = rng.normal((0.9, 5.0, 0.0), 0.02, size=(10, 3))
    other = np.array([[-3.0, 1.0, 0.0]] * 5) + rng.normal(0, 0.02, size=(5, 3))
    ws = cards_at(np.concatenate([big, tiny, other]), [0] * 60 + [1] * 10 + [2] * 5, ["big", "tiny", "far"])
    n = ws.n_cards
    judge = DropJudge(LearningConfig())
    card = n - 1  # a "far" card
    for x in np.linspace(-1.5, 1.5, 31):
        for z in np.linspace(-1.0, 1.0, 11):
            origin = np.array([x * 0.4, 0.0, z * 0.3])
            direction = np.array([x, 5.0, z]) - origin
            hit = judge.cluster_on_ray(ws, card, origin, direction)
            if hit is not None:
                edit = judge.judge(ws, card, hit[1])
                assert edit.action != "unsure" and edit.new_label == hit[0]


def test_cards_dropped_but_not_trained_keep_their_place_in_the_clusters():
    from game.core.workspace import CARD_PENDING

    ws = two_clusters_at_different_depths()
    judge = DropJudge(LearningConfig())
    layout = ws.positions.copy()
    before = judge.geometry(ws, 39)[0].copy()
    # Card 0 (class a) is dropped into b; a model update arrives before it is trained and posts
    # it where it was dropped (the controller keeps queued cards at their drop spots).
    drop_at = (0.6, 4.0, 1.0)
    ws.apply(ev.CardDropped(card=0, position=drop_at, nearest_class=1, distance=0.0))
    assert ws.card_state[0] == CARD_PENDING
    shown = layout.copy()
    shown[0] = drop_at
    n = ws.n_cards
    ws.apply(
        ev.ModelUpdated(
            version=1,
            labels=ws.labels.copy(),
            top5_classes=np.zeros((n, 2), np.int64),
            top5_scores=np.zeros((n, 2), np.float32),
            features=np.zeros((n, 4), np.float32),
            positions=shown,
        )
    )
    assert np.allclose(ws.positions[0], drop_at)  # drawn where it was dropped
    assert np.allclose(ws.cluster_positions[0], layout[0])  # but still counted at home
    assert np.allclose(judge.geometry(ws, 39)[0], before)


def test_two_hands_each_get_their_own_preview_and_ticks():
    from panda3d.core import NodePath

    from game.world.drop_preview import DropPreview

    ws = two_clusters_at_different_depths()
    preview = DropPreview(
        ws, DropJudge(LearningConfig()), NodePath("render"), NodePath("overlay"), np.ones((2, 4))
    )
    ticks: list[tuple[str, str]] = []
    preview.on_target_change.append(lambda hand, edit: ticks.append((hand, edit.action)))
    in_b = ws.positions[20:].mean(axis=0)
    in_a = ws.positions[:20].mean(axis=0)
    ws.apply(ev.CardGrabbed(card=0, position=tuple(map(float, in_a)), hand="vr-left"))
    ws.apply(ev.CardGrabbed(card=21, position=tuple(map(float, in_b)), hand="vr-right"))
    for k in range(4):  # both hands move inside their own clusters, frame after frame
        ws.apply(ev.CardMoved(card=0, position=tuple(map(float, in_a + 0.001 * k)), hand="vr-left"))
        ws.apply(ev.CardMoved(card=21, position=tuple(map(float, in_b + 0.001 * k)), hand="vr-right"))
    assert ticks == [("vr-left", "reinforce"), ("vr-right", "reinforce")]  # no cross-ticking
    ws.apply(ev.CardMoved(card=0, position=tuple(map(float, in_b)), hand="vr-left"))
    assert ticks[-1] == ("vr-left", "relabel") and preview.text.startswith("release: relabel a -> b")
    # The right hand lets go: the left hand's card is still carried and still previewed.
    ws.apply(
        ev.CardDropped(
            card=21, position=tuple(map(float, in_b)), nearest_class=1, distance=0.0, hand="vr-right"
        )
    )
    assert preview.visible and preview.edit is not None and preview.edit.card == 0
    ws.apply(ev.GrabCancelled(card=0, position=tuple(map(float, in_a)), hand="vr-left"))
    assert not preview.visible
    preview.destroy()
