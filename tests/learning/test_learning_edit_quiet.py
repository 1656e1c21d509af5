"""``latent-reach edit --quiet`` shows no progress bar, "Reading images" included (issue 13)."""

import numpy as np
from PIL import Image

from game.cli import main


def folder_scene(tmp_path):
    for c, value in (("dark", 30), ("light", 220)):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), value + i, dtype=np.uint8)).save(
                tmp_path / "imgs" / c / f"{i}.png"
            )
    scene = tmp_path / "folder.toml"
    scene.write_text('[dataset]\nkind = "folder"\npath = "imgs"\nimage_size = 8\n', encoding="utf-8")
    return scene


def test_quiet_edit_reads_images_without_a_bar(tmp_path, capsys):
    scene = str(folder_scene(tmp_path))
    # A move that is out of range fails after the images are read, before any training.
    assert main(["edit", "--scene", scene, "--move", "99:dark"]) == 2
    assert "Reading images" in capsys.readouterr().err  # the bar this test looks for
    assert main(["edit", "--scene", scene, "--move", "99:dark", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Reading images" not in err and "out of range" in err
