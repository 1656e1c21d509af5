"""Guidance in the world, offscreen: suspect markers, N visits the next suspect and says why, L
switches layer and re-frames the view.

The markers are recoloured pure magenta here (no card, frame or label is) so the pixels a marker
covers can be counted in a rendered frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from game.core import events as ev

SIZE = (480, 300)
MAGENTA = (1.0, 0.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def game(loaded_digits):
    from game.assembly import open_game
    from game.controls.guidance_controls import GuidanceControls
    from game.learning.guidance import inject_label_noise
    from game.pipeline import LoadedScene

    src = loaded_digits
    ws = src.workspace.copy()
    noisy, flipped = inject_label_noise(ws.labels, ws.n_classes, 0.15, seed=2, mask=ws.is_train)
    ws.labels = noisy  # the person's dataset has wrong labels; the guidance should find them
    loaded = LoadedScene(src.scene, src.dataset, src.network.clone(), src.projector, src.layout, ws, {})
    g = open_game(loaded, offscreen=True, size=SIZE, controls=True, menu=True, multisamples=0)
    assert isinstance(g.guidance, GuidanceControls)
    g.menu.hide()
    g.guidance._marker_set.colour = MAGENTA
    g.flipped = flipped
    g.app.step(0.0)
    yield g
    g.destroy()
    g.app.destroy()


def settle(app, frames: int = 2) -> None:
    for _ in range(frames):
        assert app.worker.wait_idle(120)
        app.step()


def magenta(pixels: np.ndarray) -> np.ndarray:
    p = pixels.astype(int)
    return (p[..., 0] > 200) & (p[..., 1] < 60) & (p[..., 2] > 200)


def test_markers_legend_and_next_suspect_with_its_reason(game):
    app, g = game.app, game.guidance
    settle(app)
    assert g.scores is not None and len(g.suspects) == g.top_k
    # The network was trained on the clean labels and predicts another class for nearly every
    # injected wrong one: it took none on, so the order is the suspicion's (guidance.auto_rule) ...
    assert g.rule == "suspicion" and np.array_equal(g.order, g.scores)
    assert game.flipped[g.suspects].mean() >= 0.8  # ... and the marked cards are mostly wrong labels
    assert len(g._markers) == g.top_k
    # The legend says what the "?" means and what to do about it.
    hud = app.world.hud
    assert not hud.legend_path.is_hidden()
    assert hud.legend_text == f"? = label probably wrong: {g.top_k} suspects, press N (next, and why)"
    first = int(g.suspects[0])
    assert g.next_suspect() == first
    settle(app, 1)
    assert app.workspace.selected == first
    note = app.world.panel.note.get_text()
    assert note.startswith(f"? suspect: labelled {app.workspace.class_names[app.workspace.labels[first]]}")
    assert "look-alikes" in note and "the network says" in note
    assert not app.world.panel._np(app.world.panel.note).is_hidden()
    second = g.next_suspect()
    assert second != first and second not in g.visited - {first, second}
    settle(app, 1)
    assert app.world.panel.note.get_text() != note  # the new card's own reason


def _marker_height(app, g, distance: float) -> tuple[int, float]:
    """Frame the first marked card from ``distance`` and measure its marker's height in pixels."""
    card = int(g.suspects[0])
    for other in g._markers[1:]:
        other.hide()  # measure one marker alone
    app.frame_card(card, distance=distance)
    app.step(0.0)
    app.step(0.0)
    px = magenta(app.pixels())
    node = g._markers[0]
    centre = app.project(np.array(node.get_pos(app.render)))
    assert centre is not None
    x, y = int(centre[0]), int(centre[1])
    win = px[max(0, y - 60) : y + 30, max(0, x - 40) : x + 40]
    rows = np.flatnonzero(win.any(axis=1))
    assert len(rows), "the marker is not drawn"
    card_px = app.project(app.world.positions[card] + np.array([0, 0, app.world.config.card_size / 2]))
    card_centre = app.project(app.world.positions[card])
    return int(rows[-1] - rows[0] + 1), abs(card_px[1] - card_centre[1])


def test_markers_keep_a_constant_size_on_screen(game):
    app, g = game.app, game.guidance
    settle(app)
    g._rebuild_markers()  # magenta
    near, card_near = _marker_height(app, g, 0.5)
    far, card_far = _marker_height(app, g, 2.0)
    assert card_near > 3 * card_far  # the card itself shrinks four times ...
    assert 0.75 <= near / far <= 1.33  # ... its marker keeps its size
    assert 10 <= near <= 40  # small: a glyph, not a wall
    app.frame_all()
    app.step(0.0)


def test_markers_are_never_over_labels_or_the_menu(game):
    from game.world.suspect_markers import MARKER_BIN, label_rects

    app, g = game.app, game.guidance
    settle(app)
    g._rebuild_markers()
    # Drawn before the labels' and the menu's bins (both drawn over a marker wherever they meet).
    assert g._root.get_bin_name() == MARKER_BIN[0] == "fixed"
    labels = app.world.centroid_markers.labels
    label_sorts = [n.get_bin_draw_order() for lab in labels for n in lab.find_all_matches("**")]
    assert MARKER_BIN[1] < min(s for s in label_sorts if s > 0)
    assert MARKER_BIN[1] < game.menu.root.get_bin_draw_order()
    # From the default view no marker pixel lands on a class label.
    app.frame_all()
    app.step(0.0)
    app.step(0.0)
    px = magenta(app.pixels())
    assert px.sum() > 20  # markers are drawn
    for x0, y0, x1, y1 in label_rects(labels, app.camera, app.render, app.project):
        assert not px[max(0, int(y0)) : int(y1) + 1, max(0, int(x0)) : int(x1) + 1].any()
    # A suspect behind the open menu: the menu hides its marker.
    card = int(g.suspects[0])
    app.frame_card(card, distance=2.5)
    app.step(0.0)
    app.step(0.0)
    shot = app.pixels()
    before = magenta(shot)
    assert before.any()
    game.menu.show()
    app.step(0.0)
    with_menu = app.pixels()
    covered = magenta(with_menu)
    game.menu.hide()
    # The menu's rectangle on screen: the bounding box of what opening it changed.
    changed = np.abs(with_menu.astype(int) - shot.astype(int)).max(axis=2) > 30
    ys, xs = np.nonzero(changed)
    inside = np.zeros_like(before)
    inside[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    assert inside.mean() > 0.1  # the menu is a large panel
    assert (before & inside).any()  # there was a marker where the menu opens ...
    assert not (covered & inside).any()  # ... and the menu is drawn over it
    app.frame_all()
    app.step(0.0)


def test_scores_refresh_after_a_model_update(game):
    app, g = game.app, game.guidance
    settle(app)
    ws = app.workspace
    card = int(g.suspects[0])
    labels = ws.labels.copy()
    labels[card] = int(ws.original_labels[card])  # the person fixed it
    ws.post(
        ev.ModelUpdated(
            ws.model_version + 1, labels, ws.top5_classes, ws.top5_scores, ws.features, ws.positions
        )
    )
    settle(app, 3)
    assert card not in set(g.suspects.tolist())


def test_l_switches_the_layer_and_frames_the_new_cloud(game):
    app = game.app
    seen = []
    app.workspace.subscribe(lambda e, _ws: seen.append(e) if isinstance(e, ev.LayerChanged) else None)
    before = app.workspace.feature_layer
    app.camera.set_pos(0, -30, 1)  # the person flew far away
    app.camera.look_at(0, -40, 1)
    game.guidance.cycle_layer()
    settle(app, 3)
    assert len(seen) == 1
    assert app.workspace.feature_layer == seen[0].layer != before
    assert app.workspace.features.shape[1] == seen[0].features.shape[1]
    for _ in range(4):  # the tween ends, then the view is framed
        app.step(0.5)
    shown = [app.project(p) for p in app.world.positions]
    w, h = SIZE
    visible = [p is not None and 0 <= p[0] < w and 0 <= p[1] < h for p in shown]
    assert np.mean(visible) > 0.9


def test_a_marker_moves_to_another_corner_when_a_label_is_in_the_way(game):
    app, g = game.app, game.guidance
    settle(app)
    ms = g._marker_set
    place = (app.world.positions, app.camera, app.render, app.world.config.card_size, app.project)
    ms.place(*place, avoid=())
    assert ms.corners[0] == 0  # upper right by default
    x, y = app.project(np.array(ms.nodes[0].get_pos(app.render)))  # the glyph's baseline centre
    label = (x - 3.0, y - 8.0, x + 3.0, y - 2.0)  # a label box just over that glyph
    ms.place(*place, avoid=[label])
    assert ms.corners[0] != 0
    x2, y2 = app.project(np.array(ms.nodes[0].get_pos(app.render)))
    assert abs(x2 - x) + abs(y2 - y) > 5  # it really moved
    # Every corner blocked: it stays on the first one rather than vanishing.
    ms.place(*place, avoid=[(-1e4, -1e4, 1e4, 1e4)])
    assert ms.corners[0] == 0


def test_markers_follow_the_order_of_the_rule_kept(game):
    from game.learning.guidance import top_suspects, visit_priority

    app, g = game.app, game.guidance
    settle(app)
    ws = app.workspace
    try:
        g.rule, g._stale = "disputed", True  # as if auto_rule had found a network that took them on
        settle(app, 3)
        assert g.rule == "disputed"  # kept, not decided again
        exclude = ~ws.is_train.copy()
        exclude[list(g.visited)] = True
        disputed = visit_priority(g.details, ws.labels, ws.predictions, ws.is_train, "disputed")
        assert np.array_equal(g.order, disputed)
        assert g.suspects.tolist() == top_suspects(disputed, g.top_k, exclude=exclude).tolist()
        by_suspicion = top_suspects(g.scores, g.top_k, exclude=exclude).tolist()
        assert g.suspects.tolist() != by_suspicion  # another order on this fixture
    finally:
        g.rule, g._stale = "suspicion", True
        settle(app, 3)


def test_the_order_is_decided_once_and_kept_through_new_scores(game, monkeypatch):
    """The rule is decided on the first scores after a scene is bound and not again when the
    scores are made anew (after every fine-tune, layer switch or added card)."""
    import game.controls.guidance_controls as controls

    app, g = game.app, game.guidance
    settle(app)
    calls: list[str] = []
    real = controls.decided_rule
    monkeypatch.setattr(controls, "decided_rule", lambda *a, **k: calls.append("decided") or real(*a, **k))
    before = g.rule
    try:
        g.rule, g._stale = None, True  # as right after a scene is bound
        settle(app, 3)
        assert calls == ["decided"] and g.rule in ("suspicion", "disputed")
        decided = g.rule
        for _ in range(2):  # what a ModelUpdated or a LayerChanged does: new scores
            g._stale = True
            settle(app, 3)
        assert calls == ["decided"] and g.rule == decided
    finally:
        g.rule, g._stale = before, True
        settle(app, 3)
