"""Draw calls constant in N, texture-array splitting, and the headless run/snapshot path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from game.core.errors import UserError


def synthetic(n: int, side: int = 8):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 255, size=(n, side, side, 1), dtype=np.uint8)
    positions = rng.normal(size=(n, 3)).astype(np.float32)
    colours = np.ones((n, 4), np.float32)
    return images, positions, colours


def geom_nodes(root) -> int:
    return root.find_all_matches("**/+GeomNode").get_num_paths()


@pytest.mark.parametrize("n", [10, 1000, 20000])
def test_card_draw_calls_do_not_grow_with_n(n):
    from panda3d.core import NodePath

    from game.world.cards import CardField

    root = NodePath("root")
    field = CardField(root, *synthetic(n))
    assert field.draw_calls == 1
    assert geom_nodes(field.root) == 1
    assert field.root.find("**/+GeomNode").get_instance_count() == n
    # Moving every card rewrites the buffer; the scene graph stays as it was.
    before = [p.node() for p in field.root.find_all_matches("**/+GeomNode")]
    field.set_positions(np.zeros((n, 3), np.float32))
    after = [p.node() for p in field.root.find_all_matches("**/+GeomNode")]
    assert before == after
    np.testing.assert_array_equal(field._data()[:, 0, :3], 0.0)


def test_beyond_the_layer_limit_cards_split_into_several_arrays():
    from panda3d.core import NodePath

    from game.world.cards import CardField

    root = NodePath("root")
    # 64 px tiles (no thumbnails), 128 px layers: 4 cards per layer; at most 2 layers per array
    # -> 8 per array.
    field = CardField(root, *synthetic(20, side=64), max_layers=2, layer_side=128, thumb_side=None)
    chunks = field.root.find_all_matches("**/+GeomNode")
    assert chunks.get_num_paths() == 3
    assert sum(chunks[i].get_instance_count() for i in range(3)) == 20
    assert max(field._textures[i].get_z_size() for i in range(3)) <= 2


def test_parse_size():
    from game.world.offscreen import parse_size

    assert parse_size("800x600") == (800, 600)
    with pytest.raises(UserError):
        parse_size("big")
    with pytest.raises(UserError):
        parse_size("2x2")


def test_headless_run_writes_screenshot_and_summary(loaded_digits, tmp_path, capsys):
    from PIL import Image

    from game.commands.run import _run_headless
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    assert _run_headless(loaded, tmp_path, (320, 200), forced=True) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cards"] == src.workspace.n_cards and summary["card_draw_calls"] == 1
    with Image.open(tmp_path / "digits.png") as im:
        assert im.size == (320, 200)
        assert np.asarray(im).std() > 5  # not a blank frame
    assert "rendered headless" in capsys.readouterr().out
    assert (tmp_path / "summary.txt").read_text().startswith("Latent Reach")


def test_offscreen_frames_finish_before_the_next_and_windows_leave_it_to_the_swap():
    """Nothing waits for an offscreen frame: without ``gl-finish`` the app queued frames ahead of
    llvmpipe's rasterizer threads and its memory grew by about 1 MB a frame (issue 17,
    docs/benchmarks.md "Memory while drawing during a job"). A window's buffer swap paces it."""
    from panda3d.core import ConfigVariableBool

    from game.world import engine

    try:
        engine.configure(offscreen=False)
        assert not ConfigVariableBool("gl-finish").get_value()
        engine.configure(offscreen=True)
        assert ConfigVariableBool("gl-finish").get_value()
    finally:
        engine.configure(offscreen=True)  # later tests in this process open offscreen apps
