"""Drops after a layer switch are judged on the clusters the person sees.

After pressing L the spheres are drawn at the new layer's centroids; the controller used to read
a drop against its checkpoint's (old layer's) clusters, so 0 of 40 drops on a sphere were read as
that sphere's class in a manual run.
"""

import copy

import numpy as np

from game.core import events as ev
from game.core.worker import Worker
from game.learning.controller import FineTuneController
from game.learning.layers import layer_choices, switch_loaded_layer


def test_drop_on_a_sphere_after_a_layer_switch_relabels_to_that_class(fresh_digits):
    loaded = fresh_digits
    loaded.scene = copy.deepcopy(loaded.scene)
    loaded.scene.learning.job_process = False  # the bug is in the event handling, not the job
    ws = loaded.workspace
    worker = Worker(torch_threads=1)
    controller = FineTuneController(loaded, worker)
    seen: list[ev.Event] = []
    ws.subscribe(lambda e, _ws: seen.append(e))
    try:
        # The prepare job runs the same module on the worker; forward hooks are not thread-safe.
        assert worker.wait_idle(120)
        switch = switch_loaded_layer(loaded, layer_choices(loaded.network.module)[0])
        ws.post(switch.event)
        ws.flush()
        rng = np.random.default_rng(0)
        cards = rng.choice(np.flatnonzero(ws.is_train), 10, replace=False)
        for card in cards:
            target = (int(ws.labels[card]) + 1) % ws.n_classes
            ws.post(ws.drop_event(card, ws.centroids()[target]))  # where the target's sphere is drawn now
            ws.flush()
            edit = [e for e in seen if isinstance(e, ev.EditQueued)][-1]
            assert (edit.card, edit.action, edit.new_label) == (card, "relabel", target)
    finally:
        controller.close()
        worker.close()
        worker._thread.join(10)


def test_a_finetune_after_a_layer_switch_shows_the_trained_layer_again(fresh_digits):
    loaded = fresh_digits
    loaded.scene = copy.deepcopy(loaded.scene)
    loaded.scene.learning.job_process = False
    ws = loaded.workspace
    trained_layer = loaded.network.feature_layer
    worker = Worker(torch_threads=1)
    controller = FineTuneController(loaded, worker)
    messages: list[str] = []
    ws.subscribe(lambda e, _ws: messages.append(e.text) if isinstance(e, ev.Message) else None)
    try:
        assert worker.wait_idle(120)
        early = layer_choices(loaded.network.module)[0]
        ws.post(switch_loaded_layer(loaded, early).event)
        ws.flush()
        assert ws.feature_layer == early and ws.features.shape[1] != 128
        card = int(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))[0])
        target = (int(ws.labels[card]) + 1) % ws.n_classes
        ws.post(ws.drop_event(card, ws.centroids()[target]))
        ws.flush()
        assert controller.apply_edits_now()
        controller.wait(300)
        assert controller.failures == []
        assert ws.feature_layer == trained_layer and ws.features.shape == (ws.n_cards, 128)
        assert ws.labels[card] == target
        assert any("trained layer" in m for m in messages)
    finally:
        controller.close()
        worker.close(wait=True)
