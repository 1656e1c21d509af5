"""Long menu lines are cut with an ellipsis where they would leave the panel."""

from __future__ import annotations

from panda3d.core import TextNode

from game.world.text_fit import ELLIPSIS, fit_text


def test_short_lines_stay_and_long_ones_end_in_an_ellipsis_that_fits():
    node = TextNode("t")
    assert fit_text(node, "Resume", 20.0) == "Resume"
    name = "Session: 2026-12-02T08-01-33_digits_with_a_really_long_scene_name.sqlite"
    width = node.calc_width("Session: 2026-12-02T08")
    cut = fit_text(node, name, width)
    assert cut.endswith(ELLIPSIS) and name.startswith(cut[: -len(ELLIPSIS)])
    assert node.calc_width(cut) <= width
    # The longest such prefix: one more character would not fit.
    longer = name[: len(cut) - len(ELLIPSIS) + 1] + ELLIPSIS
    assert node.calc_width(longer) > width
    assert fit_text(node, name, 0.0) == ELLIPSIS
