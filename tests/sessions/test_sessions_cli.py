"""``latent-reach replay``: summary, export (matplotlib frames + MP4), exit codes."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from sessions_helpers import tiny_workspace

from game.cli import main
from game.core import events as ev
from game.sessions import schema
from game.sessions.recorder import SessionRecorder


def _tiny_session(path, n_moves: int = 40):
    ws = tiny_workspace()
    clock = [0.0]
    rec = SessionRecorder(path, None, ws, clock=lambda: clock[0])
    rec.attach(ws)
    for i in range(n_moves):
        clock[0] = i * 0.05
        ws.post(ev.CardMoved(i % ws.n_cards, (float(i), 0.0, 1.0)))
        ws.flush()
    clock[0] = 3.0
    ws.post(ev.EditQueued(1, "relabel", 1, 2, 3, (0.0, 0.0, 1.0)))
    ws.flush()
    rec.close()
    return path


def test_summary_text_and_json(tmp_path, capsys):
    path = _tiny_session(tmp_path / "s.session.sqlite")
    assert main(["replay", str(path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "move 40" in out and "relabel" in out and "c1 -> c2" in out
    assert main(["replay", str(path), "--summary", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["events"] == {"edit": 1, "move": 40} and data["damage"] is None


def test_sessions_folder_and_latest(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENT_REACH_SESSIONS", raising=False)
    _tiny_session(tmp_path / "x.session.sqlite")
    assert main(["replay", "latest", "--sessions", str(tmp_path), "--summary"]) == 0
    assert "x.session.sqlite" in capsys.readouterr().out


def test_exit_codes(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "missing.session.sqlite"), "--summary"]) == 2
    assert "not found" in capsys.readouterr().err
    path = _tiny_session(tmp_path / "s.session.sqlite")
    assert main(["replay", str(path), "--speed", "9", "--summary"]) == 2
    assert "--speed" in capsys.readouterr().err
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 3}")
    conn.commit()
    conn.close()
    assert main(["replay", str(path), "--summary"]) == 2
    err = capsys.readouterr().err
    assert "newer Latent Reach" in err and "Traceback" not in err


def test_damaged_file_summarises_what_survived_and_exits_2(tmp_path, capsys):
    path = _tiny_session(tmp_path / "d.session.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET fields = 'garbage' WHERE seq = 21")
    conn.commit()
    conn.close()
    assert main(["replay", str(path), "--summary", "--json"]) == 2
    captured = capsys.readouterr()
    assert "after event #20" in captured.err
    # the summary counts rows by kind (all there) but reads events only up to the damage
    assert json.loads(captured.out)["edits"] == []


def _digits_session(loaded, path, folder_scene=None):
    """A short session on the embedded default: two drags, a drop, an edit, poses."""
    ws = loaded.workspace
    clock = [0.0]
    rec = SessionRecorder(path, loaded.scene, ws, clock=lambda: clock[0])
    rec.attach(ws)
    frames = 0
    for card, target in ((5, 3), (17, 17)):
        start = ws.positions[card].copy()
        goal = ws.centroids()[int(ws.labels[target])]
        ws.post(ev.CardGrabbed(card, tuple(map(float, start))))
        for k in range(20):
            p = start + (goal - start) * (k + 1) / 20
            clock[0] = frames / 30
            ws.post(ev.CardMoved(card, tuple(map(float, p))))
            ws.flush()
            rec.record_pose(
                None, (0.0, -3.0, 1.7, 1.0, 0.0, 0.0, 0.0), None, (tuple(map(float, p)), (1, 0, 0, 0))
            )
            frames += 1
        ws.post(ev.CardDropped(card, tuple(map(float, goal)), int(ws.labels[target]), 0.0))
        ws.flush()
    rec.close()
    return path


def test_export_writes_frames_video_and_summary(loaded_digits, tmp_path, capsys):
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy())
    path = _digits_session(loaded, tmp_path / "digits.session.sqlite")
    out = tmp_path / "export"
    code = main(
        ["replay", str(path), "--export", str(out), "--renderer", "plot", "--fps", "10", "--speed", "2"]
    )
    assert code == 0, capsys.readouterr().err
    frames = sorted((out / "frames").glob("*.png"))
    assert len(frames) >= 7  # 40 frames at 30 Hz = 1.3 s; x2 speed at 10 fps -> 8 frames
    import imageio.v2 as iio

    first, last = iio.imread(frames[0]), iio.imread(frames[-1])
    assert first.shape == (544, 960, 3) and first.std() > 5
    assert np.abs(first.astype(int) - last.astype(int)).sum() > 0  # cards moved between frames
    assert iio.get_reader(out / "replay.mp4").count_frames() == len(frames)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events"]["move"] == 40 and summary["export"]["frames"] == len(frames)
    assert (out / "summary.txt").read_text().startswith("Session ")


def test_export_refuses_a_different_dataset(loaded_digits, tmp_path, capsys):
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy())
    path = _digits_session(loaded, tmp_path / "digits.session.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 'abc' WHERE key = 'dataset_fingerprint'")
    conn.commit()
    conn.close()
    assert main(["replay", str(path), "--export", str(tmp_path / "o"), "--renderer", "plot"]) == 2
    assert "different images" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--export", "--verify"])
def test_export_and_verify_need_a_scene(tmp_path, capsys, flag):
    path = _tiny_session(tmp_path / "s.session.sqlite")
    args = ["replay", str(path), flag] + ([str(tmp_path / "o")] if flag == "--export" else [])
    assert main(args) == 2
    assert "does not record its scene" in capsys.readouterr().err


def test_window_replay_without_a_display_points_to_export(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    path = _tiny_session(tmp_path / "s.session.sqlite")
    assert main(["replay", str(path)]) == 2
    assert "--export" in capsys.readouterr().err
