"""The explanation keys on the info panel, driven offscreen: heat map, what-if painting, keep, class model."""

from __future__ import annotations

import numpy as np
import pytest

from game.core import events as ev

SIZE = (640, 400)


@pytest.fixture(scope="module")
def app(loaded_digits):
    from game.app import LatentReachApp
    from game.controls.explain_controls import ExplainControls
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    # The app wires the explain keys itself next to the desktop controls.
    a = LatentReachApp(loaded, offscreen=True, size=SIZE, controls=True, multisamples=0)
    assert isinstance(a.explain, ExplainControls) and a.explain in a.frame_hooks
    a.step(0.0)
    yield a
    a.destroy()


def settle(app, frames: int = 3) -> None:
    """Let requests made by this frame's events reach the worker, finish, and come back.

    An event applied in a frame's flush may submit a job only then, so waiting once before
    stepping raced with the worker (the result could still be running on the last frame).
    """
    for _ in range(frames):
        app.step()
        assert app.worker.wait_idle(60)
    app.step()


def test_x_cycles_methods_and_draws_the_map_on_the_panel(app):
    app.workspace.post(ev.CardSelected(card=7))
    settle(app)
    before = app.pixels().copy()
    assert app.world.panel.overlay.is_hidden()
    app.explain.cycle_method()
    settle(app)
    assert app.explain.method == "gradcam"
    assert app.explain.last_map is not None and app.explain.last_map.explanation.target == int(
        app.workspace.top5_classes[7, 0]
    )
    assert not app.world.panel.overlay.is_hidden()
    after = app.pixels()
    assert (np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 30).sum() > 200  # the map shows
    app.explain.next_target()
    settle(app)
    assert app.explain.last_map.explanation.target == int(app.workspace.top5_classes[7, 1])
    # The method follows the selection.
    app.workspace.post(ev.CardSelected(card=8))
    settle(app)
    assert app.explain.last_map.explanation.target == int(app.workspace.top5_classes[8, 0])
    for _ in range(len(app.explain.service._channels) + 6):
        if app.explain.method is None:
            break
        app.explain.cycle_method()
    assert app.explain.method is None and app.world.panel.overlay.is_hidden()


def test_screen_position_maps_to_image_uv(app):
    from panda3d.core import Point3

    panel = app.world.panel
    lo, hi = panel.image.get_tight_bounds(panel.root)
    for u, v in ((0.5, 0.5), (0.1, 0.8)):
        local = Point3(lo[0] + u * (hi[0] - lo[0]), 0, hi[2] - v * (hi[2] - lo[2]))
        p = app.render2d.get_relative_point(panel.root, local)
        got = app.explain.screen_to_uv(p[0], p[2])
        assert got == pytest.approx((u, v), abs=1e-4)
    assert app.explain.screen_to_uv(-0.99, -0.99) is None


def test_paint_inpaints_live_and_keep_adds_a_card(app):
    app.workspace.post(ev.CardSelected(card=12))
    settle(app)
    ex = app.explain
    ex.toggle_paint()
    assert ex.painting and not app.controls.enabled  # clicks paint instead of grabbing cards
    ex.paint_uv(0.05, 0.1, True)
    ex.paint_uv(0.95, 0.1, True)
    ex.paint_uv(0.95, 0.1, False)
    settle(app)
    res = ex.last_whatif
    assert res is not None and res.mask[1].all() and not res.mask[6:].any()
    np.testing.assert_array_equal(res.before_classes, app.workspace.top5_classes[12])
    assert not app.world.panel.overlay.is_hidden()
    ex.undo_stroke()
    settle(app)
    assert not ex.editor.mask.any()
    ex.paint_uv(0.1, 0.9, True)
    ex.paint_uv(0.9, 0.9, False)
    settle(app)
    n = app.workspace.n_cards
    ex.keep_edit()
    settle(app, 3)
    assert app.workspace.n_cards == n + 1
    assert not ex.painting and app.controls.enabled
    assert app.workspace.sources[-1] == "what-if of card #12"


def test_class_model_shows_on_the_panel(app):
    app.workspace.post(ev.CardSelected(card=3))
    settle(app)
    assert app.world.panel.overlay.is_hidden()
    app.explain.request_class_model()
    settle(app)
    text = app.explain._text.get_text()
    assert text.startswith("class model of") and "->" in text
    start, end = (float(t) for t in text.split("score ")[1].split(" -> "))
    assert end > start
    assert not app.world.panel.overlay.is_hidden()
    k = int(app.workspace.top5_classes[3, 0])
    card = app.explain._centroid_cards[k]
    assert card.get_parent() == app.world.centroid_markers.spheres[k] and card.has_texture()
