"""The demo end to end: a recorded session with real fine-tunes and an undo; verify passes on it
and fails, naming the event, on a tampered copy."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3

import numpy as np
import pytest
from session_seal import reseal

from game.cli import main

FAST_SCENE = """
[scene]
name = "Digits (fast test layout)"
[dataset]
kind = "digits"
[layout]
early_iterations = 50
iterations = 100
update_iterations = 40
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory, loaded_digits):  # loaded_digits: the small CNN is trained (and cached) once
    root = tmp_path_factory.mktemp("demo")
    scene = root / "fast.toml"
    scene.write_text(FAST_SCENE)
    out = root / "out"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--scene",
            str(scene),
            "--sessions",
            str(root / "sessions"),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    (session,) = (root / "sessions").glob("*.session.sqlite")
    return out, session


def test_demo_writes_screenshots_and_summary(demo):
    out, session = demo
    import imageio.v2 as iio

    before = iio.imread(out / "before.png").astype(int)
    after = iio.imread(out / "after.png").astype(int)
    assert before.shape == after.shape and before.std() > 5
    assert np.abs(before - after).mean() > 0.5  # cards moved, a panel opened
    s = json.loads((out / "summary.json").read_text())
    assert s["demo"]["session"] == str(session)
    actions = [e["action"] for e in s["edits"]]
    assert actions.count("relabel") == 2 and actions.count("reinforce") == 1
    assert s["undos"] == 1
    versions = [m["version"] for m in s["models"]]
    assert versions[0] == 0 and max(versions) >= 2 and versions[-1] == max(versions) - 1  # undo went back one
    assert s["stored_checkpoints"][:2] == [0, 1]
    assert s["pose_frames"] > 50 and s["damage"] is None


def test_verify_reproduces_the_demo(demo, capsys):
    _, session = demo
    assert main(["replay", str(session), "--verify", "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checked_models"] >= 3 and report["checked_edits"] == 3


def test_verify_names_the_first_divergence(demo, tmp_path, capsys):
    _, session = demo
    copy = tmp_path / "tampered.session.sqlite"
    shutil.copy(session, copy)
    conn = sqlite3.connect(copy)
    seq = conn.execute("SELECT seq FROM events WHERE kind = 'model' ORDER BY seq LIMIT 1").fetchone()[0]
    (blob,) = conn.execute(
        "SELECT npy FROM event_arrays WHERE seq = ? AND name = 'positions'", (seq,)
    ).fetchone()
    positions = np.load(io.BytesIO(blob), allow_pickle=False).copy()
    positions[7] += 0.5
    buf = io.BytesIO()
    np.save(buf, positions, allow_pickle=False)
    conn.execute(
        "UPDATE event_arrays SET npy = ? WHERE seq = ? AND name = 'positions'", (buf.getvalue(), seq)
    )
    conn.commit()
    conn.close()
    reseal(copy)  # a consistent file whose recorded positions the network does not reproduce
    assert main(["replay", str(copy), "--verify", "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert f"DIVERGED at event #{seq}" in out and "card 7" in out


def test_missing_checkpoint_is_a_clear_error(demo, tmp_path, capsys):
    _, session = demo
    copy = tmp_path / "nockpt.session.sqlite"
    shutil.copy(session, copy)
    conn = sqlite3.connect(copy)
    conn.execute("DELETE FROM models WHERE version = 0")
    conn.execute("UPDATE models SET id = id - 1")  # record ids stay consecutive
    conn.commit()
    conn.close()
    reseal(copy)  # the checksums would name the hole first; this checks verify's own message
    assert main(["replay", str(copy), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint for model version 0" in err and "Traceback" not in err


def test_export_of_the_demo_in_the_world(demo, tmp_path):
    _, session = demo
    out = tmp_path / "export"
    assert main(["replay", str(session), "--export", str(out), "--max-frames", "6", "--fps", "5"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["export"]["frames"] == 6 and len(list((out / "frames").glob("*.png"))) == 6
