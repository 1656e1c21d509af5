"""``open_card`` (the ``explain`` and ``whatif`` commands' loader) shows no progress bar when asked not to."""

import numpy as np
import pytest
from PIL import Image

from game.core.errors import UserError
from game.core.scene import load_scene
from game.explain.cli_support import open_card


def _folder_scene(tmp_path):
    for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((12, 12, 3), colour, np.uint8)).save(tmp_path / "images" / c / f"{i}.png")
    scene = tmp_path / "folder.toml"
    scene.write_text('[dataset]\nkind = "folder"\npath = "images"\nimage_size = 16\n')
    return load_scene(str(scene))


def test_open_card_without_progress_reads_the_folder_silently(tmp_path, capfd):
    scene = _folder_scene(tmp_path)
    # An out-of-range card fails right after the dataset is read (no network is trained).
    with pytest.raises(UserError, match="out of range: the scene has 6 cards"):
        open_card(scene, 99, progress=False)
    assert "Reading images" not in capfd.readouterr().err


def test_open_card_with_progress_shows_the_reading_bar(tmp_path, capfd):
    """The same read with progress on does print the bar (what explain/whatif printed before)."""
    scene = _folder_scene(tmp_path)
    with pytest.raises(UserError):
        open_card(scene, 99, progress=True)
    assert "Reading images" in capfd.readouterr().err
