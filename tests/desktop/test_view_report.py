"""The view report (``$LATENT_REACH_VIEW_REPORT``) says truly where things are drawn.

The real-window tests press where this report says a card or a cluster is; here, offscreen, it is
checked against the app's own projection and picking, so a wrong report fails here first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from game.core import events as ev

SIZE = (640, 400)


@pytest.fixture
def app_with_report(fresh_digits, tmp_path, monkeypatch):
    from game.app import LatentReachApp
    from game.world import view_report

    path = tmp_path / "view.json"
    monkeypatch.setenv(view_report.ENV_VAR, str(path))
    app = LatentReachApp(fresh_digits, offscreen=True, size=SIZE, multisamples=0)
    try:
        yield app, path
    finally:
        app.destroy()


def test_no_report_without_the_variable(monkeypatch):
    from game.world import view_report

    monkeypatch.delenv(view_report.ENV_VAR, raising=False)
    assert view_report.attach_from_env(object()) is None


def test_report_matches_projection_and_picking(app_with_report):
    from game.controls.hand import pick_ray
    from game.world.view_report import PICK_FACTOR, project_points

    app, path = app_with_report
    app.step(0.0)
    assert not path.exists()  # only once a frame has been drawn
    app.step(0.0)
    report = json.loads(path.read_text())
    assert report["window"]["width"] == SIZE[0] and report["window"]["height"] == SIZE[1]
    ws = app.workspace
    assert [c["class"] for c in report["classes"]] == list(range(ws.n_classes))
    pos = app.world.positions
    # The vectorised projection is app.project's.
    px, ok = project_points(app, pos)
    for i in range(0, ws.n_cards, 97):
        p = app.project(pos[i])
        assert (p is None) == (not ok[i])
        if p is not None:
            assert np.allclose(px[i], p, atol=0.01)
    picked = 0
    for c in report["classes"]:
        members = ws.labels == c["class"]
        assert c["cards"] == int(members.sum())
        assert np.allclose(c["centroid"], pos[members].mean(axis=0), atol=2e-3)
        assert np.allclose(c["centroid_px"], app.project(c["centroid"]), atol=0.2)
        for entry in c["pickable"]:
            card = entry["card"]
            assert ws.labels[card] == c["class"]
            x, y = entry["px"]  # a whole pixel, as a mouse stands on
            assert isinstance(x, int) and isinstance(y, int)
            origin, direction = app.mouse_ray(2 * x / SIZE[0] - 1, 1 - 2 * y / SIZE[1])
            radius = PICK_FACTOR * app.world.config.card_size
            assert pick_ray(pos, origin, direction, radius)[0] == card
            picked += 1
    assert picked >= ws.n_classes  # most classes have a card in front on the default view
    assert report["carried"] is None and report["preview"] is None


def test_report_follows_the_hand_and_the_camera(app_with_report):
    app, path = app_with_report
    app.step(0.0)
    app.step(0.0)
    first = json.loads(path.read_text())
    card = first["classes"][0]["pickable"][0]["card"]
    p = tuple(float(v) for v in app.world.positions[card])
    app.workspace.post(ev.CardGrabbed(card=card, position=p))
    app.step(0.5)
    carrying = json.loads(path.read_text())
    assert carrying["carried"]["card"] == card
    assert np.allclose(carrying["carried"]["px"], app.project(p), atol=0.2)
    app.workspace.post(ev.GrabCancelled(card=card, position=p))
    app.step(0.5)
    assert json.loads(path.read_text())["carried"] is None
    # The camera moves: every pixel position is rewritten.
    app.camera.set_pos(app.camera.get_pos() + (0.3, 0, 0))
    app.step(0.5)
    moved = json.loads(path.read_text())
    assert moved["camera"]["pos"] != first["camera"]["pos"]
    assert moved["classes"][0]["centroid_px"] != first["classes"][0]["centroid_px"]


def test_report_task_ends_with_the_app(fresh_digits, tmp_path, monkeypatch):
    from game.app import LatentReachApp
    from game.world import view_report

    monkeypatch.setenv(view_report.ENV_VAR, str(tmp_path / "view.json"))
    app = LatentReachApp(fresh_digits, offscreen=True, size=SIZE, multisamples=0)
    task_mgr = app.task_mgr
    assert task_mgr.getTasksNamed("latent-reach-view-report")
    app.destroy()
    assert not task_mgr.getTasksNamed("latent-reach-view-report")  # not left for the next app
