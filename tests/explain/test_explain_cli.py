"""``latent-reach explain`` and ``latent-reach whatif`` on the embedded digits scene."""

import numpy as np
from PIL import Image

from game.cli import main


def test_explain_writes_an_enlarged_overlay(tmp_path, loaded_digits, capsys):
    out = tmp_path / "map.png"
    assert main(["explain", "--card", "3", "--method", "gradcam", "--out", str(out), "--threads", "1"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (256, 256, 4)
    assert '"gradcam"' in capsys.readouterr().out
    # Nearest-neighbour enlargement: every 32x32 block is one colour.
    block = img[:32, :32]
    assert (block == block[0, 0]).all()


def test_explain_side_by_side_and_target(tmp_path, loaded_digits):
    out = tmp_path / "all.png"
    assert (
        main(["explain", "--card", "3", "--all", "--target", "1", "--out", str(out), "--threads", "1"]) == 0
    )
    img = np.asarray(Image.open(out))
    assert img.shape[1] > 5 * img.shape[0]  # seven tiles in a row (plus a title strip)
    out2 = tmp_path / "two.png"
    assert (
        main(["explain", "--card", "3", "--methods", "ig,occlusion", "--out", str(out2), "--threads", "1"])
        == 0
    )
    assert np.asarray(Image.open(out2)).shape[1] < img.shape[1]


def test_whatif_prints_top5_before_and_after(tmp_path, loaded_digits, capsys):
    out = tmp_path / "edited.png"
    code = main(
        ["whatif", "--card", "3", "--mask", "0,0,8,4", "--method", "ns", "--out", str(out), "--threads", "1"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "before" in text and "after" in text and text.count("\n") >= 7
    edited = np.asarray(Image.open(out))
    original = loaded_digits.workspace.images[3][:, :, 0]
    assert edited.shape == (8, 8)
    np.testing.assert_array_equal(edited[4:], original[4:])  # outside the mask: untouched


def test_bad_card_mask_method_or_target_exit_2(tmp_path, loaded_digits, capsys):
    out = str(tmp_path / "x.png")
    assert main(["explain", "--card", "99999", "--out", out]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["explain", "--card", "1", "--method", "lime", "--out", out]) == 2
    assert main(["explain", "--card", "1", "--target", "12", "--out", out]) == 2
    assert main(["whatif", "--card", "1", "--mask", "0,0,9,4"]) == 2
    assert "bad --mask" in capsys.readouterr().err
    assert main(["whatif", "--card", "1", "--mask", "a,b"]) == 2
    assert main(["whatif", "--card", "-1", "--mask", "0,0,4,4"]) == 2
