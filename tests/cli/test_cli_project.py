"""The command line: help, the project command, and clear errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from game.cli import build_parser, main


def test_help_lists_every_command(capsys):
    import game.cli as cli

    names = [m.NAME for m in cli._command_modules()]
    assert "project" in names
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in names:
        assert name in out
    for module in cli._command_modules():
        assert module.HELP and module.__doc__


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: latent-reach " + name)


def fast_scene(tmp_path: Path, extra: str = "") -> Path:
    scene = tmp_path / "fast.toml"
    scene.write_text(
        "[layout]\nearly_iterations = 30\niterations = 60\n" + extra,
        encoding="utf-8",
    )
    return scene


def test_project_writes_layout(tmp_path: Path, capsys):
    out = tmp_path / "layout.npz"
    assert (
        main(
            ["project", "--scene", str(fast_scene(tmp_path)), "--out", str(out), "--quiet", "--threads", "1"]
        )
        == 0
    )
    with np.load(out) as z:
        assert z["positions"].shape == (1797, 3)
        assert z["top5_classes"].shape == (1797, 5)
        assert z["centroids"].shape == (10, 3)
        assert list(z["class_names"]) == [str(i) for i in range(10)]
    assert '"heldout_accuracy"' in capsys.readouterr().out


def test_bad_inputs_exit_2_without_traceback(tmp_path: Path, capsys, monkeypatch):
    one_class = tmp_path / "one"
    (one_class / "only").mkdir(parents=True)
    Image.new("L", (8, 8)).save(one_class / "only" / "a.png")
    cases = [
        ["project", "--scene", str(tmp_path / "missing.toml"), "--out", "x.npz"],
        [
            "project",
            "--scene",
            str(fast_scene(tmp_path, '[dataset]\nkind = "folder"\npath = "nowhere"\n')),
            "--out",
            "x.npz",
        ],
        [
            "project",
            "--scene",
            str(fast_scene(tmp_path, f'[dataset]\nkind = "folder"\npath = "{one_class}"\n')),
            "--out",
            "x.npz",
        ],
        ["project", "--scene", str(fast_scene(tmp_path, "[world]\nbogus = 1\n")), "--out", "x.npz"],
        ["project", "--out", "x.txt"],
    ]
    # The real entry point once (a fresh interpreter pays for importing torch, seconds on a busy
    # machine); the other cases in-process, where a traceback would raise out of ``main``.
    proc = subprocess.run(
        [sys.executable, "-m", "game", *cases[0]], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2, (cases[0], proc.stderr)
    assert proc.stderr.strip().splitlines()[-1].startswith("latent-reach: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    monkeypatch.chdir(tmp_path)
    for args in cases[1:]:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.strip().splitlines()[-1].startswith("latent-reach: error:"), err
        assert "Traceback" not in err
