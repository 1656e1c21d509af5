"""The learning defaults chosen on issue 13's suite (``label_trust = "drop"``, ``feature_terms =
"landing"``), and the old values for sessions recorded before them.

A recorded session stores its whole scene; one from before a setting existed lacks its key, and
``replay --verify`` must re-run its fine-tunes with the value they ran under, not today's default.
A digits job: with the new defaults the replay pool loses the cards the guidance distrusts; with
the old values (what an old session resolves to) it keeps every training card.
"""

import dataclasses

import numpy as np
from test_replay_trust import request_with_wrong_labels

from game.core.scene import Scene, scene_from_dict
from game.learning.finetune import prepare_batch
from game.sessions.reader import _recorded_defaults


def test_defaults_are_drop_and_landing():
    learning = Scene().learning
    assert learning.label_trust == "drop"
    assert learning.feature_terms == "landing"


def test_a_session_from_before_them_resolves_to_none_and_always():
    old = Scene().to_dict()
    del old["learning"]["label_trust"], old["learning"]["feature_terms"]
    learning = scene_from_dict(_recorded_defaults(old)).learning
    assert (learning.label_trust, learning.feature_terms) == ("none", "always")
    recorded = Scene().to_dict()  # a session that recorded them keeps what it recorded
    recorded["learning"]["label_trust"] = "soft"
    assert scene_from_dict(_recorded_defaults(recorded)).learning.label_trust == "soft"
    assert scene_from_dict(_recorded_defaults(Scene().to_dict())).learning.feature_terms == "landing"


def test_the_default_job_drops_distrusted_replay_and_the_old_one_does_not(loaded_digits):
    req, _, wrong = request_with_wrong_labels(loaded_digits, seed=2)
    req.config = Scene().learning  # today's defaults
    new = prepare_batch(req, np.random.default_rng(0))
    req.config = dataclasses.replace(req.config, label_trust="none", feature_terms="always")
    old = prepare_batch(req, np.random.default_rng(0))
    assert old.trust is None and new.trust is not None
    assert set(new.replay_pool.tolist()) < set(old.replay_pool.tolist())
    in_old = np.intersect1d(old.replay_pool, wrong)
    assert len(in_old) > 0
    assert np.isin(in_old, new.replay_pool).mean() < 0.2  # most wrong labels left the pool
