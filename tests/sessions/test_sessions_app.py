"""Recording a live (offscreen) app: events, camera poses every frame, checkpoints of fine-tunes."""

from __future__ import annotations

import numpy as np
import pytest

from game.core import events as ev
from game.sessions.reader import SessionReader


@pytest.fixture
def app(loaded_digits):
    from game.app import LatentReachApp
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    a = LatentReachApp(loaded, offscreen=True, size=(320, 200), controls=False, multisamples=0)
    yield a
    a.destroy()


def test_start_recording_captures_events_poses_and_models(app, tmp_path):
    from game.commands._session_world import start_recording
    from game.learning.controller import FineTuneController

    controller = FineTuneController(app.loaded, app.worker, clock=lambda: app.now)
    app.frame_hooks.append(controller)
    recorder = start_recording(app, controller, folder=tmp_path, label="live")
    ws = app.workspace
    app.camera.set_pos(0.5, -4.0, 1.6)
    card = int(np.flatnonzero(ws.labels == 3)[0])
    target = ws.centroids()[8]
    ws.post(ev.CardGrabbed(card, tuple(map(float, ws.positions[card]))))
    for _ in range(10):
        app.step(1 / 30)
    ws.post(ev.CardDropped(card, tuple(map(float, target)), 8, 0.0))
    for _ in range(200):
        app.step(1 / 30)
        if ws.model_version == 1:
            break
        if controller.busy:
            app.worker.wait_idle(60)
    assert ws.model_version == 1
    app.step(1 / 30)
    path = recorder.close()
    app.step(1 / 30)  # the pose hook sees the closed recorder and removes itself
    assert not any(type(h).__name__ == "PoseRecorderHook" for h in app.frame_hooks)
    with SessionReader(path) as r:
        kinds = [e.event.kind for e in r.events()]
        assert kinds[:2] == ["grab", "drop"] and "edit" in kinds and kinds.count("model") == 1
        track = r.poses()
        assert len(track) >= 12
        np.testing.assert_allclose(track.device("head")[-1, :3], [0.5, -4.0, 1.6], atol=1e-5)
        assert [v for v, _, _ in r.model_versions()] == [0, 1]
        assert r.meta["scene_name"] == app.loaded.scene.scene.name
    controller.close()


def test_matrix_to_pose_round_trip():
    from game.commands._session_world import matrix_to_pose

    angle = 0.7
    m = np.eye(4)
    m[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    m[:3, :3] *= 2.0  # a scaled rig
    m[:3, 3] = [1, 2, 3]
    pose = matrix_to_pose(m)
    assert pose[:3] == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(pose[3:], [np.cos(angle / 2), 0, 0, np.sin(angle / 2)], atol=1e-9)
