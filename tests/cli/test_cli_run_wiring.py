"""The playable game's wiring: fine-tuning and recording attached the same way for every launch."""

from pathlib import Path

import numpy as np

from game.core import events as ev


def test_live_game_records_events_poses_and_models(fresh_digits, tmp_path: Path):
    from game.app import LatentReachApp
    from game.commands._wiring import attach_game_systems
    from game.sessions.reader import SessionReader

    app = LatentReachApp(fresh_digits, offscreen=True, size=(160, 100), controls=False, multisamples=0)
    try:
        attached = attach_game_systems(app, controls=False, record=True, sessions=tmp_path)
        assert attached == ["FineTuneController"]
        controller = app.finetune["controller"]
        recorder = app.finetune["recorder"]
        assert controller in app.frame_hooks
        app.workspace.post(ev.CardSelected(card=4))
        for _ in range(5):
            app.step(1 / 30)
        recorder.close()
    finally:
        app.destroy()
    files = sorted(tmp_path.glob("*.sqlite"))
    assert len(files) == 1
    with SessionReader(files[0]) as reader:
        kinds = [r.event.kind for r in reader.events()]
        assert "select" in kinds
        poses = reader.poses()
        assert len(poses.times) >= 5
        assert np.isfinite(poses.device("head")).all()
        assert [v for v, *_ in reader.model_versions()] == [0]
