"""A session follows the model store: the base network whole once, then each fine-tune's trainable
part; restore rebuilds any version exactly."""

import copy

import torch
from sessions_helpers import fine_tune_twice

from game.core import events as ev
from game.core.worker import Worker
from game.learning.controller import FineTuneController
from game.nets.weights import state_from_bytes
from game.sessions.reader import SessionReader
from game.sessions.recorder import SessionRecorder
from game.sessions.restore import restore


def test_session_stores_the_trainable_part_per_version_and_restores_each(fresh_digits, tmp_path):
    loaded = fresh_digits
    loaded.scene = copy.deepcopy(loaded.scene)
    ws = loaded.workspace
    recorder = SessionRecorder.start(
        loaded.scene, ws, folder=tmp_path, store=loaded.models, layout=loaded.layout
    )
    worker = Worker(torch_threads=1)
    ctl = FineTuneController(loaded, worker, job_process=False)
    try:
        fine_tune_twice(loaded, ctl)
        assert ws.model_version == 2
        live = {v: loaded.models.network(v).module.state_dict() for v in (0, 1, 2)}
        ws.post(ev.UndoRequested())  # back to v1: already stored, not stored again
        ws.flush()
        ctl.wait()
        assert ws.model_version == 1 and loaded.models.versions == [0, 1]
    finally:
        ctl.close()
        worker.close(wait=True, timeout=30)
        path = recorder.close()
    with SessionReader(path) as reader:
        assert [v for v, _, _ in reader.model_versions()] == [0, 1, 2]
        whole = set(state_from_bytes(reader.model_weights(0)))
        assert whole == set(live[0])
        trainable = set(state_from_bytes(reader.model_weights(2)))
        assert trainable and trainable < whole  # the head only: the frozen part is stored once
        assert all(name.startswith("classifier") for name in trainable)
        restored = restore(reader)
        for version in (0, 1, 2):
            state = restored.network(version).module.state_dict()
            for name, value in live[version].items():
                assert torch.equal(state[name], value), (version, name)
        assert restored.as_loaded().network is not None
