"""A session recorded before a setting existed re-runs with the value it was recorded under,
not today's default (``replay --verify`` re-runs its fine-tunes; a resumed session goes on)."""

from __future__ import annotations

import types

from sessions_helpers import tiny_workspace

from game.core.scene import Scene
from game.sessions.reader import SessionReader
from game.sessions.recorder import SessionRecorder


def _record(path, scene_dict: dict) -> SessionReader:
    scene = types.SimpleNamespace(to_dict=lambda: scene_dict, source="", scene=Scene().scene)
    SessionRecorder(path, scene, tiny_workspace(), clock=lambda: 0.0).close()
    return SessionReader(path)


def test_a_session_from_before_train_heldout_keeps_training_heldout_neighbours(tmp_path):
    old = Scene().to_dict()
    del old["learning"]["train_heldout"]
    reader = _record(tmp_path / "old.session.sqlite", old)
    try:
        assert reader.scene().learning.train_heldout is True
    finally:
        reader.close()


def test_a_new_session_keeps_what_it_recorded(tmp_path):
    for value in (False, True):
        new = Scene().to_dict()
        new["learning"]["train_heldout"] = value
        reader = _record(tmp_path / f"new{value}.session.sqlite", new)
        try:
            assert reader.scene().learning.train_heldout is value
        finally:
            reader.close()


def test_a_session_from_before_reuse_above_re_lays_out_as_it_did(tmp_path):
    """Large scenes' local re-layout now reuses the previous PCA and neighbour record; a session
    recorded before refitted both, and its replay must too."""
    old = Scene().to_dict()
    del old["layout"]["reuse_above"]
    reader = _record(tmp_path / "old-layout.session.sqlite", old)
    try:
        assert reader.scene().layout.reuse_above == 10**9
    finally:
        reader.close()
    new = Scene().to_dict()
    reader = _record(tmp_path / "new-layout.session.sqlite", new)
    try:
        assert reader.scene().layout.reuse_above == 5_000
    finally:
        reader.close()
