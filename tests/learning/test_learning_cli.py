"""``latent-reach edit``: a relabel reported end to end, and clear errors with exit code 2."""

import json
from pathlib import Path

import pytest

from game.cli import main


def fast_scene(tmp_path: Path) -> Path:
    scene = tmp_path / "fast.toml"
    scene.write_text("[layout]\nearly_iterations = 30\niterations = 60\n", encoding="utf-8")
    return scene


@pytest.mark.parametrize(
    "move, message",
    [
        ("99999:3", "out of range"),
        ("5:cat", "unknown class 'cat'"),
        ("5", "expected CARD:CLASS"),
        ("x:3", "integer"),
    ],
)
def test_bad_moves_exit_2_with_a_clear_message(tmp_path, capsys, move, message):
    assert main(["edit", "--scene", str(fast_scene(tmp_path)), "--move", move, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_edit_relabels_and_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    rc = main(
        [
            "edit",
            "--scene",
            str(fast_scene(tmp_path)),
            "--move",
            "5:3",
            "--json",
            str(out),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "card 5: relabel 5 -> 3" in text and "held-out accuracy" in text
    (move,) = json.loads(out.read_text())["moves"]
    assert move["predicted_after"] == "3" and move["new_label"] == "3"
    assert move["heldout_after"] >= move["heldout_before"] - 0.02
