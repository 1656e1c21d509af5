"""Readability of the first view (issue 12), measured by ``benchmarks/bench_readability.py``'s ID
render: the measure itself (card quads as drawn) and what it says about the default scene."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SIZE = (640, 400)
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_readability.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_readability", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def private_copy(loaded):
    from game.pipeline import LoadedScene

    return LoadedScene(
        loaded.scene,
        loaded.dataset,
        loaded.network,
        loaded.projector,
        loaded.layout,
        loaded.workspace.copy(),
        {},
    )


def test_card_quads_are_the_pixels_each_card_draws(bench, loaded_digits):
    """The analytic per-card pixel count (what 'its face alone' means) equals what the card
    shader rasterises for cards drawn with nothing in front of them."""
    from game.app import LatentReachApp

    app = LatentReachApp(
        private_copy(loaded_digits), offscreen=True, size=SIZE, controls=False, multisamples=0
    )
    ids = None
    try:
        app.step(0.0)
        quads, alone = bench.card_quads(app)
        # Ten on-screen cards whose quads overlap no other of the ten; the rest hidden.
        chosen: list[int] = []
        for i in np.flatnonzero(alone > 20):
            x0, y0, x1, y1 = quads[i]
            if all(
                x1 < quads[j][0] or quads[j][2] < x0 or y1 < quads[j][1] or quads[j][3] < y0 for j in chosen
            ):
                chosen.append(int(i))
            if len(chosen) == 10:
                break
        visible = np.zeros(app.world.cards.n, dtype=np.float32)
        visible[chosen] = 1.0
        app.world.cards.set_visible(visible)
        ids = bench.IdRenderer(app)
        for marker in ids.labels + ids.markers:
            marker.hide()
        image = ids.render()
        drawn = np.bincount(image.ravel(), minlength=app.world.cards.n + 1)[1 : app.world.cards.n + 1]
        _, alone_now = bench.card_quads(app)
        assert len(chosen) == 10
        np.testing.assert_array_equal(alone_now[chosen], alone[chosen])
        # Exact up to ties on the quad's edges: at most one row and one column of pixels.
        side = np.sqrt(alone[chosen])
        assert np.all(np.abs(drawn[chosen] - alone[chosen]) <= 2 * side + 1), (drawn[chosen], alone[chosen])
        assert drawn.sum() == drawn[chosen].sum()  # hidden cards draw nothing
    finally:
        if ids is not None:
            ids.restore()
        app.destroy()


def test_default_view_shows_cards_labels_and_markers(bench, loaded_digits):
    """The default scene's first view: every class label readable and clear of cards, every
    centroid marker visible, and most cards showing at least half of their face."""
    result = bench.measure(private_copy(loaded_digits), SIZE)
    assert result["quad_check"], result["quad_excess_px"]
    assert result["classes"] == loaded_digits.workspace.n_classes
    assert result["labels_readable"] == result["classes"], result["labels"]
    assert result["markers_visible"] == result["classes"], result["markers"]
    assert result["cards_on_screen"] > 0.99
    # 0.65 at 1280x800 with the scene's full layout; the tests' fast layout and half size differ.
    assert result["card_half_face"] >= 0.55, result["card_half_face"]
    assert result["overdraw"] < 2.0
