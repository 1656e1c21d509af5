"""Guidance in the world, offscreen: suspect markers, N visits the next suspect, L switches layer."""

from __future__ import annotations

import numpy as np
import pytest

from game.core import events as ev


@pytest.fixture(scope="module")
def app(loaded_digits):
    from game.app import LatentReachApp
    from game.controls.guidance_controls import GuidanceControls
    from game.learning.guidance import inject_label_noise
    from game.pipeline import LoadedScene

    src = loaded_digits
    ws = src.workspace.copy()
    noisy, flipped = inject_label_noise(ws.labels, ws.n_classes, 0.15, seed=2, mask=ws.is_train)
    ws.labels = noisy  # the person's dataset has wrong labels; the guidance should find them
    loaded = LoadedScene(src.scene, src.dataset, src.network.clone(), src.projector, src.layout, ws, {})
    a = LatentReachApp(loaded, offscreen=True, size=(480, 300), controls=False, multisamples=0)
    if getattr(a, "guidance", None) is None:
        a.guidance = GuidanceControls(a)
        a.frame_hooks.append(a.guidance)
    a.flipped = flipped
    a.step(0.0)
    yield a
    a.guidance.destroy()
    a.destroy()


def settle(app, frames: int = 2) -> None:
    for _ in range(frames):
        assert app.worker.wait_idle(120)
        app.step()


def test_markers_and_next_suspect(app):
    settle(app)
    g = app.guidance
    assert g.scores is not None and len(g.suspects) == g.top_k
    assert app.flipped[g.suspects].mean() >= 0.8  # the marked cards are mostly wrong labels
    assert len(g._markers) == g.top_k
    marker = np.array(g._markers[0].get_pos(app.render))
    card_pos = app.world.positions[int(g.suspects[0])]
    assert np.allclose(marker[:2], card_pos[:2], atol=1e-4) and marker[2] > card_pos[2]
    first = int(g.suspects[0])
    assert g.next_suspect() == first
    settle(app, 1)
    assert app.workspace.selected == first
    second = g.next_suspect()
    assert second != first and second not in g.visited - {first, second}


def test_scores_refresh_after_a_model_update(app):
    g = app.guidance
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


def test_l_switches_the_layer_through_an_event(app):
    seen = []
    app.workspace.subscribe(lambda e, _ws: seen.append(e) if isinstance(e, ev.LayerChanged) else None)
    before = app.workspace.feature_layer
    app.guidance.cycle_layer()
    settle(app, 3)
    assert len(seen) == 1
    assert app.workspace.feature_layer == seen[0].layer != before
    assert app.workspace.features.shape[1] == seen[0].features.shape[1]
