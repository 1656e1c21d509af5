"""The suspects and export commands: output and exit codes."""

from __future__ import annotations

import csv
import json

import numpy as np

from game.cli import main
from game.core import events as ev
from game.nets.weights import state_to_bytes


def fast_scene(tmp_path) -> str:
    """The default digits scene with a test-sized layout (a full t-SNE fit costs tens of seconds
    on a busy 2-core VM and none of these tests looks at the layout's quality)."""
    path = tmp_path / "fast.toml"
    path.write_text(
        "[layout]\nearly_iterations = 50\niterations = 100\nupdate_iterations = 40\n", encoding="utf-8"
    )
    return str(path)


def test_suspects_json_with_noise(tmp_path, capsys):
    code = main(
        ["suspects", "--scene", fast_scene(tmp_path), "--top", "10", "--noise", "0.15", "--json", "--quiet"]
        + ["--threads", "1"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["suspects"]) == 10
    assert out["auroc"] >= 0.95
    # Noise flipped after training: the network took none of it on, so the order is the
    # suspicion's (guidance.auto_rule) and its first suspects are mostly the flipped labels.
    assert out["order"] == "suspicion"
    assert out["taken_on"] < 0.15  # why: it predicts few of its suspects' (flipped) labels
    assert 0.0 <= out["confused"] <= 1.0
    assert sum(r["injected"] for r in out["suspects"]) >= 8


def test_suspects_bad_input_is_exit_code_2(capsys):
    assert main(["suspects", "--top", "0"]) == 2
    assert "--top" in capsys.readouterr().err
    assert main(["suspects", "--scene", "/nonexistent.toml"]) == 2


def test_export_bad_input_is_exit_code_2(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path)]) == 2  # neither session nor scene
    assert main(["export", str(tmp_path / "missing.session.sqlite"), "--out", str(tmp_path)]) == 2
    assert main(["export", "x", "--scene", "y", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


def test_export_scene(tmp_path, capsys):
    code = main(
        [
            "export",
            "--scene",
            fast_scene(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "weights.safetensors").is_file()
    assert (tmp_path / "out" / "projector" / "sprite.png").is_file()


def test_export_session_replays_to_the_end(loaded_digits, tmp_path, capsys):
    from game.sessions.recorder import SessionRecorder

    ws = loaded_digits.workspace.copy()
    clock = [0.0]
    path = tmp_path / "s.session.sqlite"
    rec = SessionRecorder(path, loaded_digits.scene, ws, clock=lambda: clock[0])
    rec.record_model(0, state_to_bytes(loaded_digits.network.module), t=0.0)
    rec.attach(ws)
    card, new = 7, (int(ws.labels[7]) + 1) % ws.n_classes
    p = tuple(map(float, ws.centroids()[new]))
    clock[0] = 2.5
    ws.post(ev.CardDropped(card, p, new, 0.0))
    ws.post(ev.EditQueued(card, "relabel", int(ws.labels[card]), new, 8, p))
    ws.flush()
    labels = ws.labels.copy()
    labels[card] = new
    clock[0] = 3.0
    ws.post(ev.ModelUpdated(1, labels, ws.top5_classes, ws.top5_scores, ws.features, ws.positions))
    ws.flush()
    rec.close()

    out = tmp_path / "out"
    code = main(["export", str(path), "--out", str(out), "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    changed = [r for r in rows if r["changed"] == "1"]
    assert [int(r["card"]) for r in changed] == [card]
    assert changed[0]["new_label"] == ws.class_names[new]
    assert changed[0]["edit_time"]  # the wall-clock time of the edit
    assert (out / "weights.safetensors").is_file()
    tensors = np.loadtxt(out / "projector" / "tensors.tsv", delimiter="\t")
    assert tensors.shape == (ws.n_cards, 3)


def test_export_scene_after_a_move(tmp_path, capsys):
    from game.core.scene import load_scene
    from game.data.dataset import load_dataset

    data = load_dataset(load_scene("scenes/digits.toml"))
    new = (int(data.labels[3]) + 1) % data.n_classes
    code = main(
        [
            "export",
            "--scene",
            fast_scene(tmp_path),
            "--move",
            f"3:{new}",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
        + ["--threads", "1"]
    )
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    changed = [r for r in rows if r["changed"] == "1"]
    assert [r["card"] for r in changed] == ["3"]
    assert changed[0]["new_label"] == data.class_names[new] and changed[0]["edit_time"]
    assert main(["export", "--scene", "scenes/digits.toml", "--move", "3:nope", "--out", str(tmp_path)]) == 2


def test_export_session_after_undo_takes_the_final_model(loaded_digits, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from game.sessions.recorder import SessionRecorder

    ws = loaded_digits.workspace.copy()
    base = loaded_digits.network.module.state_dict()
    changed = {k: v + 1.0 if k == "classifier.fc2.bias" else v for k, v in base.items()}
    from safetensors.torch import save

    path = tmp_path / "u.session.sqlite"
    rec = SessionRecorder(path, loaded_digits.scene, ws)
    rec.record_model(0, state_to_bytes(loaded_digits.network.module), t=0.0)
    rec.attach(ws)
    ws.post(ev.ModelUpdated(1, ws.labels, ws.top5_classes, ws.top5_scores, ws.features, ws.positions))
    ws.flush()
    rec.record_model(1, save({k: v.contiguous() for k, v in changed.items()}))
    ws.post(ev.ModelUpdated(0, ws.labels, ws.top5_classes, ws.top5_scores, ws.features, ws.positions))
    ws.flush()  # undo back to the starting model
    rec.close()
    out = tmp_path / "out"
    assert main(["export", str(path), "--out", str(out), "--no-features"]) == 0, capsys.readouterr().err
    exported = load_file(str(out / "weights.safetensors"))
    assert torch.equal(exported["classifier.fc2.bias"], base["classifier.fc2.bias"])
