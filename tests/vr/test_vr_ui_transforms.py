"""The in-world UI's one-call transforms are the ones ``look_at`` (and the old calls) gave."""

from __future__ import annotations

import numpy as np
from panda3d.core import NodePath

from game.vr.ui import look_at_hp


def _mat(node: NodePath) -> np.ndarray:
    m = node.get_mat()
    return np.array([[m.get_cell(r, c) for c in range(4)] for r in range(4)])


def test_look_at_hp_turns_plus_y_as_look_at_does():
    rng = np.random.default_rng(3)
    points = [rng.normal(size=3) * 2.0 for _ in range(60)] + [
        np.array(v, dtype=float) for v in ((0, 1, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0), (0.3, 0.0, -2.0))
    ]
    for origin, target in zip(points, points[1:]):
        old = NodePath("old")  # the calls the beam and the wrist display used to make
        old.set_pos(*origin.tolist())
        old.look_at(*target.tolist())
        old.set_scale(5.0)
        new = NodePath("new")
        h, p = look_at_hp(*(target - origin).tolist())
        new.set_pos_hpr_scale(*origin.tolist(), h, p, 0.0, 5.0, 5.0, 5.0)
        assert np.allclose(_mat(new), _mat(old), atol=1e-4)
        # The wrist display: facing the head, then turned half a turn (its text reads from there).
        hud = NodePath("hud")
        hud.set_scale(0.18)
        hud.set_pos(*origin.tolist())
        hud.look_at(*target.tolist())
        hud.set_h(hud.get_h() + 180)
        one = NodePath("one")
        one.set_pos_hpr_scale(*origin.tolist(), h + 180.0, p, 0.0, 0.18, 0.18, 0.18)
        assert np.allclose(_mat(one), _mat(hud), atol=1e-4)
