"""A card kept from the what-if editor (``CardAdded``) and the fine-tune loop afterwards.

The controller's checkpoints (labels, features, layout) and its stem cache must follow the
workspace's card count: before they did, the first drop after a ``CardAdded`` raised inside
``interpret_drop`` during ``workspace.flush()``, which in the app is the frame loop.
"""

import numpy as np

from game.core.worker import Worker
from game.explain.keep import new_card_event
from game.learning.controller import FineTuneController


def test_drop_and_finetune_after_a_kept_card(fresh_digits):
    loaded = fresh_digits
    ws = loaded.workspace
    worker = Worker(torch_threads=1)
    controller = FineTuneController(loaded, worker)
    try:
        n = ws.n_cards
        ws.post(
            new_card_event(loaded.network, ws.images[0], ws.features, ws.positions, int(ws.labels[0]), "kept")
        )
        ws.flush()
        assert ws.n_cards == n + 1
        card = int(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))[0])
        target = (int(ws.labels[card]) + 1) % ws.n_classes
        ws.post(ws.drop_event(card, ws.centroids()[target]))
        ws.flush()
        assert controller.apply_edits_now()
        controller.wait(300)
        assert controller.failures == []
        assert ws.n_cards == n + 1
        assert len(ws.labels) == len(ws.positions) == len(ws.features) == n + 1
        assert ws.labels[card] == target
    finally:
        controller.close()
        worker.close()
        worker._thread.join(10)


def test_a_card_kept_while_a_fine_tune_waits_on_the_worker_does_not_stall_it(fresh_digits):
    """The re-prepare after a CardAdded is queued behind the waiting job; the job used to wait
    for it (a cleared 'stem ready' flag) and the worker hung for good."""
    import threading

    loaded = fresh_digits
    ws = loaded.workspace
    worker = Worker(torch_threads=1)
    controller = FineTuneController(loaded, worker)
    gate = threading.Event()
    try:
        worker.wait_idle(120)
        worker.submit(gate.wait, name="busy")  # e.g. an explanation still running
        card = int(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))[0])
        target = (int(ws.labels[card]) + 1) % ws.n_classes
        ws.post(ws.drop_event(card, ws.centroids()[target]))
        ws.flush()
        assert controller.apply_edits_now()  # queued behind "busy"
        n = ws.n_cards
        ws.post(
            new_card_event(loaded.network, ws.images[0], ws.features, ws.positions, int(ws.labels[0]), "kept")
        )
        ws.flush()
        gate.set()
        controller.wait(120)
        assert controller.failures == []
        assert ws.n_cards == n + 1 and ws.labels[card] == target
        # The next job runs on the new card set.
        other = int(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))[1])
        ws.post(ws.drop_event(other, ws.centroids()[(int(ws.labels[other]) + 1) % ws.n_classes]))
        ws.flush()
        assert controller.apply_edits_now()
        controller.wait(120)
        assert controller.failures == [] and len(ws.features) == n + 1
    finally:
        gate.set()
        controller.close()
        worker.close()
        worker._thread.join(10)
