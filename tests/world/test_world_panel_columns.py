"""The before / after top-5 columns of the info panel keep names, bars and scores apart.

Seen in a real window on the colour scene (what-if on a "disc" card): the columns' bars started
0.08 units after the name, a width made for digits' one-character names, so "triangle" and
"arrow" ran under their bars. Folder datasets bring long class names too.
"""

from __future__ import annotations

import numpy as np
import pytest
from panda3d.core import NodePath

from game.world.panel import NAME_SCALE, WIDTH, InfoPanel


def _row_boxes(panel: InfoPanel, rows) -> list[tuple[float, float, float, float]]:
    """(name right edge, bar left, bar right at 100 %, score left) of each shown row, panel units."""
    out = []
    for name, bar, score in rows:
        if not name.get_text():
            continue
        name_path = panel.root.find(name.get_name())
        score_path = panel.root.find(score.get_name())
        name_right = name_path.get_x() + name.calc_width(name.get_text()) * NAME_SCALE
        out.append(
            (name_right, bar.get_x(), score_path.get_x(), score_path.get_x() + score.get_width() * 0.045)
        )
    return out


@pytest.mark.parametrize(
    "names",
    [
        [str(d) for d in range(10)],
        ["disc", "ring", "cross", "triangle", "arrow", "bar"],
        ["golden_retriever_puppies_outdoor", "tabby_cat", "x", "a_very_long_folder_name_indeed", "owl"],
    ],
)
def test_names_bars_and_scores_do_not_overlap_in_either_layout(names):
    panel = InfoPanel(NodePath("overlay"), names)
    k = len(names)
    panel._top5 = (np.arange(5) % k, np.array([0.952, 0.046, 0.001, 0.0005, 0.0], np.float32))
    panel.card = 0
    panel.root.show()
    panel._layout()
    column = (WIDTH - 2 * 0.05) / 2
    left = -WIDTH / 2 + 0.05
    for name_right, bar_left, _score_left, score_right in _row_boxes(panel, panel.rows):
        assert name_right < bar_left  # the one-column layout
        assert score_right <= -left + 1e-6
    panel.show_compare(np.arange(1, 6) % k, np.array([1.0, 0.0, 0.0, 0.0, 0.0], np.float32))
    for rows, x0 in ((panel.rows, left), (panel.after_rows, left + column)):
        boxes = _row_boxes(panel, rows)
        assert len(boxes) == min(5, k)
        for name_right, bar_left, score_left, score_right in boxes:
            assert name_right < bar_left, (names, name_right, bar_left)
            bar_right = bar_left + max(b.get_sx() for _, b, _ in rows if b.get_sx() > 0.0041)
            assert bar_right < score_left
            assert score_right <= x0 + column + 1e-6  # "100%" stays in its own column
    if names[0] == "0":  # digits keep the layout they had
        assert panel.after_rows[0][1].get_x() == pytest.approx(left + column + 0.08)


def test_a_long_truth_line_wraps_inside_the_panel_and_the_rows_move_below_it():
    """Seen in a real window on a folder whose class is "chinese temple roof tiles (Beijing)": the
    "truth: ..." line ran off the panel's right edge."""
    names = ["chinese temple roof tiles (Beijing)", "flower_petals_closeup", "noise"]
    panel = InfoPanel(NodePath("overlay"), names)
    panel._top5 = (np.arange(3), np.array([0.9, 0.08, 0.02], np.float32))
    panel.root.show()
    panel.truth.set_text(f"truth: {names[0]}  -> relabelled {names[1]}")
    panel._layout()
    truth = panel.root.find("truth")
    header = panel.root.find("top5-header")
    assert panel.truth.get_num_rows() >= 2
    assert panel.truth.get_width() * truth.get_sz() <= WIDTH - 2 * 0.05 + 1e-6
    last_line = (
        truth.get_z() - (panel.truth.get_num_rows() - 1) * panel.truth.get_line_height() * truth.get_sz()
    )
    assert header.get_z() < last_line - 0.05  # the header sits below the truth's last line
    first_row = panel.root.find(panel.rows[0][0].get_name())
    assert first_row.get_z() < header.get_z()
    assert panel.bottom < first_row.get_z()  # the background still holds everything
