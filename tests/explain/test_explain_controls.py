"""The explanation keys on the info panel, driven offscreen: heat map, what-if painting, keep, class model."""

from __future__ import annotations

import numpy as np
import pytest

from game.controls.modes import Mode
from game.core import events as ev
from game.world.panel import percent

SIZE = (640, 400)


@pytest.fixture(scope="module")
def game(loaded_digits):
    from game.assembly import open_game
    from game.controls.explain_controls import ExplainControls
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    # The assembly wires the explain keys next to the desktop controls.
    g = open_game(loaded, offscreen=True, size=SIZE, controls=True, multisamples=0)
    assert isinstance(g.explain, ExplainControls) and g.explain in g.app.frame_hooks
    g.app.step(0.0)
    yield g
    g.destroy()
    g.app.destroy()


def settle(app, frames: int = 3) -> None:
    """Let requests made by this frame's events reach the worker, finish, and come back.

    An event applied in a frame's flush may submit a job only then, so waiting once before
    stepping raced with the worker (the result could still be running on the last frame).
    """
    for _ in range(frames):
        app.step()
        assert app.worker.wait_idle(60)
    app.step()


def _screen_box(app, node) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1; top-left origin) of a panel quad as drawn."""
    lo, hi = node.get_tight_bounds(app.render2d)
    w, h = app.size
    x0, x1 = (lo[0] + 1) / 2 * w, (hi[0] + 1) / 2 * w
    y0, y1 = (1 - hi[2]) / 2 * h, (1 - lo[2]) / 2 * h
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def _cells(pixels: np.ndarray, box, n: int) -> np.ndarray:
    """The colour at the centre of each of ``n x n`` cells of a box: (n, n, 3)."""
    x0, y0, x1, y1 = box
    xs = (x0 + (np.arange(n) + 0.5) * (x1 - x0) / n).astype(int)
    ys = (y0 + (np.arange(n) + 0.5) * (y1 - y0) / n).astype(int)
    return pixels[np.ix_(ys, xs)].astype(int)


def test_x_draws_the_map_beside_the_original_with_a_legend(game):
    app = game.app
    from game.explain.attribution import METHOD_TITLES

    app.workspace.post(ev.CardSelected(card=7))
    settle(app)
    panel = app.world.panel
    assert not panel.aside_shown and panel.aside.is_hidden()
    game.explain.cycle_method()
    settle(app)
    assert game.explain.method == "gradcam"
    target = int(app.workspace.top5_classes[7, 0])
    assert game.explain.last_map is not None and game.explain.last_map.explanation.target == target
    assert panel.aside_shown and not panel.aside.is_hidden() and not panel.aside_layer.is_hidden()
    caption = panel.caption.get_text()
    assert METHOD_TITLES["gradcam"] in caption and f"'{app.workspace.class_names[target]}'" in caption
    assert (panel.bar_low.get_text(), panel.bar_high.get_text()) == ("low", "high")
    assert not panel.colour_bar.is_hidden()
    px = app.pixels()
    image = app.workspace.images[7]
    side = image.shape[0]
    # The card's own pixels are still drawn, unchanged, in its own frame ...
    grey = image[..., 0].astype(int) if image.ndim == 3 else image.astype(int)
    original = _cells(px, _screen_box(app, panel.image), side)
    assert np.abs(original - grey[..., None]).max() <= 3
    # ... and beside it the same picture under a translucent colour layer: not grey, not opaque.
    beside = _cells(px, _screen_box(app, panel.aside), side)
    chroma = beside.max(axis=2) - beside.min(axis=2)
    assert chroma.mean() > 25  # coloured by the map
    brightness = beside.mean(axis=2)
    assert np.corrcoef(brightness.ravel(), grey.ravel())[0, 1] > 0.3  # the digit shows through
    # The colour bar runs from blue (low) to red (high).
    x0, y0, x1, y1 = _screen_box(app, panel.colour_bar)
    row = px[(y0 + y1) // 2]
    low, high = row[x0 + 2].astype(int), row[x1 - 3].astype(int)
    assert low[2] > low[0] + 60 and high[0] > high[2] + 60
    game.explain.next_target()
    settle(app)
    assert game.explain.last_map.explanation.target == int(app.workspace.top5_classes[7, 1])
    assert "top-2" in panel.caption.get_text()
    # The method follows the selection.
    app.workspace.post(ev.CardSelected(card=8))
    settle(app)
    assert game.explain.last_map.explanation.target == int(app.workspace.top5_classes[8, 0])
    for _ in range(len(game.explain.service._channels) + 6):
        if game.explain.method is None:
            break
        game.explain.cycle_method()
    assert game.explain.method is None and not panel.aside_shown and panel.aside.is_hidden()


def test_screen_position_maps_to_image_uv(game):
    app = game.app
    from panda3d.core import Point3

    panel = app.world.panel
    lo, hi = panel.image.get_tight_bounds(panel.root)
    for u, v in ((0.5, 0.5), (0.1, 0.8)):
        local = Point3(lo[0] + u * (hi[0] - lo[0]), 0, hi[2] - v * (hi[2] - lo[2]))
        p = app.render2d.get_relative_point(panel.root, local)
        got = game.explain.screen_to_uv(p[0], p[2])
        assert got == pytest.approx((u, v), abs=1e-4)
    assert game.explain.screen_to_uv(-0.99, -0.99) is None


def _flipping_card(app) -> int:
    """A card whose prediction a stroke across its middle row changes (found with the engine-free
    what-if, so the test drives the game with a mask known to matter)."""
    from game.explain.whatif import WhatIfEditor, whatif

    ws = app.workspace
    for card in range(200):
        ed = WhatIfEditor(ws.images[card])
        h, w = ed.image.shape[:2]
        ed.begin(0.05 * w, 0.5 * h)
        ed.drag(0.95 * w, 0.5 * h)
        ed.end()
        res = whatif(app.loaded.models.network(), ws.images[card], ed.mask)
        if int(res.after_classes[0]) != int(res.before_classes[0]):
            return card
    raise AssertionError("no card in the first 200 changes its prediction under a middle stroke")


def test_paint_shows_the_edit_and_top5_before_and_after_side_by_side(game):
    app = game.app
    card = _flipping_card(app)
    app.workspace.post(ev.CardSelected(card=card))
    settle(app)
    ex, panel = game.explain, app.world.panel
    ex.toggle_paint()
    assert ex.painting and game.modes.top is Mode.PAINT  # clicks paint instead of grabbing cards
    ex.paint_uv(0.05, 0.5, True)
    ex.paint_uv(0.95, 0.5, True)
    ex.paint_uv(0.95, 0.5, False)
    settle(app)
    res = ex.last_whatif
    assert res is not None and res.mask[h_mid := res.mask.shape[0] // 2].all() and not res.mask[0].any()
    np.testing.assert_array_equal(res.before_classes, app.workspace.top5_classes[card])
    # The edited image beside the card, the painted mask over the card, two top-5 columns.
    assert panel.aside_shown and not panel.aside.is_hidden() and not panel.overlay.is_hidden()
    assert "edited" in panel.caption.get_text()
    names = app.workspace.class_names
    before = [row[0].get_text() for row in panel.rows]
    after = [row[0].get_text() for row in panel.after_rows]
    assert before == [names[int(c)] for c in res.before_classes]
    assert after == [names[int(c)] for c in res.after_classes]
    assert after[0] != before[0]  # this stroke changes the prediction, and the panel says so
    assert panel.header.get_text() == "before" and panel.header_after.get_text() == "after"
    after_bar = panel.after_rows[0][1]
    assert not after_bar.is_hidden()
    assert after_bar.get_sx() == pytest.approx(max(0.004, 0.17 * float(res.after_scores[0])), rel=1e-4)
    assert panel.after_rows[0][2].get_text() == percent(float(res.after_scores[0]))
    assert f"{before[0]} -> {after[0]}" in panel.status.get_text()
    # The edited picture on screen is the inpainted image, the card's own is unchanged but painted.
    px = app.pixels()
    side = res.edited.shape[0]
    edited = _cells(px, _screen_box(app, panel.aside), side)
    want = res.edited[..., 0].astype(int) if res.edited.ndim == 3 else res.edited.astype(int)
    assert np.abs(edited - want[..., None]).max() <= 3
    own = _cells(px, _screen_box(app, panel.image), side)
    grey = app.workspace.images[card][..., 0].astype(int)
    assert np.abs(own[0] - grey[0][:, None]).max() <= 3  # unpainted row: the card itself
    assert (own[h_mid, :, 0] - own[h_mid, :, 2]).mean() > 40  # painted row: orange mask
    ex.undo_stroke()
    settle(app)
    assert not ex.editor.mask.any() and not panel.aside_shown
    ex.paint_uv(0.1, 0.9, True)
    ex.paint_uv(0.9, 0.9, False)
    settle(app)
    n = app.workspace.n_cards
    ex.keep_edit()
    settle(app, 3)
    assert app.workspace.n_cards == n + 1
    assert not ex.painting and game.modes.top is Mode.WORLD and not panel.aside_shown
    assert app.workspace.sources[-1] == f"what-if of card #{card}"


def test_class_model_has_its_own_titled_view_beside_the_card(game):
    app = game.app
    app.workspace.post(ev.CardSelected(card=3))
    settle(app)
    panel = app.world.panel
    assert not panel.aside_shown
    title, frame = panel.title.get_text(), panel.image_frame.get_color()
    card_tex = panel.image.get_texture()
    game.explain.request_class_model()
    settle(app)
    text = panel.status.get_text()
    start, end = (float(t) for t in text.split("score ")[1].split(" -> "))
    assert end > start
    k = int(app.workspace.top5_classes[3, 0])
    name = app.workspace.class_names[k]
    assert panel.aside_shown and panel.caption.get_text() == f"class model of {name}, the predicted class"
    # The card keeps its own title, frame and image: the class model is beside it, in its class's colour.
    assert panel.title.get_text() == title and panel.image_frame.get_color() == frame
    assert panel.image.get_texture() == card_tex
    assert tuple(panel.aside_frame.get_color()) == pytest.approx(tuple(panel.colours[k]), abs=2e-3)
    card = game.explain._centroid_cards[k]
    assert card.get_parent() == app.world.centroid_markers.spheres[k] and card.has_texture()
