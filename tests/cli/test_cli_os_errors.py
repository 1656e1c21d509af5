"""An output path that cannot be written is bad input: one line on stderr, exit code 2."""

from pathlib import Path

from game.cli import main


def test_unwritable_out_path_is_exit_2(tmp_path: Path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    out = blocker / "edited.png"  # its parent is a file: mkdir fails with FileExistsError
    code = main(["whatif", "--card", "0", "--mask", "0,0,4,4", "--out", str(out), "--threads", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("latent-reach: error: ") and str(blocker) in err[-1]
    assert not out.exists()
