"""The model store: versions in, networks and layouts out; undo; bytes made off the frame loop."""

import threading

import numpy as np
import torch

from game.core import events as ev
from game.learning.edit_queue import EditQueue
from game.learning.history import Checkpoint
from game.learning.store import ModelStore
from game.nets.weights import state_from_bytes, state_to_bytes


def _head_names(network) -> list[str]:
    return [n for n, _ in network.module.named_parameters() if n.startswith("classifier")]


def _version(store: ModelStore, network, version: int, shift: float):
    """A new version whose head is the base's plus ``shift`` (what a head-only job makes)."""
    names = _head_names(network)
    base = network.module.state_dict()
    state = {n: base[n] + shift for n in names}
    new = network.updated(state)
    cp = store.current
    layout = cp.layout.successor(cp.layout.embedding + shift, cp.layout.pca_dims)
    weights = state_to_bytes_of(state)
    store.push(
        Checkpoint(version, weights, cp.labels, cp.top5_classes, cp.top5_scores, cp.features, layout), new
    )
    return new, state


def state_to_bytes_of(state) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def test_versions_undo_and_rebuilt_networks(fresh_digits):
    loaded = fresh_digits
    store = loaded.models
    assert store.version == 0 and store.network() is loaded.network
    assert store.layout() is loaded.layout
    net1, state1 = _version(store, loaded.network, 1, 0.5)
    net2, _ = _version(store, loaded.network, 2, 1.0)
    assert store.versions == [0, 1, 2] and store.network() is net2
    assert not np.allclose(store.layout(2).positions, store.layout(1).positions)
    # An older version is rebuilt from the base and its bytes: the same tensors as when it was made.
    rebuilt = store.network(1)
    assert rebuilt is not net1
    for name, value in net1.module.state_dict().items():
        assert torch.equal(rebuilt.module.state_dict()[name], value), name
    # The frozen stem is shared with the base, not copied.
    stem = [n for n, _ in loaded.network.module.named_parameters() if not n.startswith("classifier")][0]
    assert rebuilt.module.get_parameter(stem) is loaded.network.module.get_parameter(stem)
    # Undo: the previous version is live again, its layout too; numbers are never reused.
    dropped = store.pop()
    assert dropped.version == 2 and store.version == 1
    assert store.layout() is store.checkpoint(1).layout
    assert store.next_version() == 3


def test_base_bytes_are_made_on_request_not_kept_and_survive_undo(fresh_digits):
    store = fresh_digits.models
    assert store.current.weights == b""  # nothing serialised when the scene opened
    source = store.weights_source(0)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(source()))
    thread.start()
    thread.join(60)
    whole = seen[0]
    assert set(state_from_bytes(whole)) == set(fresh_digits.network.module.state_dict())
    # Not kept (the whole network: 230 MB for AlexNet, held in the app for good); the next
    # caller gets the same bytes made again.
    assert store.current.weights == b""
    assert store.weights(0) == whole
    _, state1 = _version(store, fresh_digits.network, 1, 0.25)
    later = store.weights_source(1)
    store.pop()  # undone before the recorder's thread got to it: the bytes are still there
    assert set(state_from_bytes(later())) == set(state1)
    assert state_to_bytes(fresh_digits.network.module) == whole


def test_edit_queue_delay_newest_edit_and_put_back():
    queue = EditQueue(delay_seconds=0.5)
    a1 = ev.EditQueued(3, "relabel", 1, 2, 1, (0.0, 0.0, 0.0))
    a2 = ev.EditQueued(3, "relabel", 1, 4, 1, (0.1, 0.0, 0.0))
    b = ev.EditQueued(7, "reinforce", 5, 5, 6, (0.0, 1.0, 0.0))
    assert not queue.due(10.0)
    queue.add(a1, 1.0)
    assert queue.add(b, 1.2) == 2
    assert queue.add(a2, 1.3) == 2  # the card's newer drop replaces its older one
    assert not queue.due(1.7) and queue.due(1.8)
    edits = queue.take()
    assert {e.card: e.new_label for e in edits} == {3: 4, 7: 5} and not queue
    queue.add(ev.EditQueued(3, "relabel", 1, 9, 1, (0.0, 0.0, 0.0)), 2.0)
    queue.put_back(edits)  # a failed job's edits wait again; the newer drop of card 3 wins
    assert queue.pending[3].new_label == 9 and queue.pending[7] is b
    assert queue.clear() == 2 and not queue.due(100.0)


def test_old_checkpoints_features_leave_memory_and_undo_brings_them_back(fresh_digits, monkeypatch):
    """At scale each version's features are the scene's size (0.8 GB at 50k x 4,096) and undo has
    no depth limit: versions older than the previous one keep their features in a file, mapped;
    an undo that makes one the previous again reads it back. Values never change."""
    import gc

    import game.learning.store as store_module

    monkeypatch.setattr(store_module, "SPILL_AT_BYTES", 1)  # digits' features count as large here
    loaded = fresh_digits
    store = loaded.models
    originals = {}
    for version in (1, 2, 3, 4):
        cp = store.current
        features = cp.features + version  # each version's own values
        layout = cp.layout.successor(cp.layout.embedding, cp.layout.pca_dims)
        store.push(
            Checkpoint(version, b"w", cp.labels, cp.top5_classes, cp.top5_scores, features, layout),
            loaded.network,
        )
        originals[version] = features.copy()
    originals[0] = np.asarray(store.checkpoint(0).features).copy()
    store.wait_for_spills()
    mapped = {cp.version: isinstance(cp.features, np.memmap) for cp in store.checkpoints}
    assert mapped == {0: True, 1: True, 2: True, 3: False, 4: False}
    folder = store._spill_dir
    assert folder is not None and len(list(folder.glob("*.npy"))) == 3
    for cp in store.checkpoints:
        np.testing.assert_array_equal(cp.features, originals[cp.version])
    store.pop(loaded.network)  # v4 undone: v2 becomes the previous one, in memory again
    mapped = {cp.version: isinstance(cp.features, np.memmap) for cp in store.checkpoints}
    assert mapped == {0: True, 1: True, 2: False, 3: False}
    np.testing.assert_array_equal(store.checkpoint(2).features, originals[2])
    assert store.checkpoint(2).features.flags.writeable  # a plain array again, not a read-only map
    del store, loaded.models, mapped, cp
    gc.collect()
    assert not folder.exists()  # the temporary files go with the store


def test_old_checkpoints_weights_leave_memory_and_are_read_back_when_asked(fresh_digits, monkeypatch):
    """Each version's weights' bytes (64 MB at AlexNet's head) stayed in memory for ever: the
    app grew by that much per drop at 50k. Versions older than the previous one keep them in a
    file beside their features; ``weights`` and ``network`` read them back, the same bytes."""
    import game.learning.store as store_module

    monkeypatch.setattr(store_module, "SPILL_WEIGHTS_AT_BYTES", 1)  # digits' head counts as large
    loaded = fresh_digits
    store = loaded.models
    made = {}
    for version, shift in ((1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0)):
        net, _ = _version(store, loaded.network, version, shift)
        made[version] = (store.current.weights, net)
    store.wait_for_spills()
    in_memory = {cp.version: bool(cp.weights) for cp in store.checkpoints}
    assert in_memory == {0: False, 1: False, 2: False, 3: True, 4: True}
    assert len(list(store._spill_dir.glob("weights-*.safetensors"))) == 2  # v1, v2 (v0's are lazy)
    for version, (data, net) in made.items():
        assert store.weights(version) == data
        rebuilt = store.network(version) if version != 4 else store.network()
        for name, value in net.module.state_dict().items():
            assert torch.equal(rebuilt.module.state_dict()[name], value), name
    assert store.weights_source(1)() == made[1][0]
    store.pop()
    store.pop()  # v2 is live again, its network rebuilt from the file
    for name, value in made[2][1].module.state_dict().items():
        assert torch.equal(store.network().module.state_dict()[name], value), name


def test_the_base_checkpoint_shares_the_workspaces_features_and_keeps_them_past_an_update(fresh_digits):
    """The base version's features are the workspace's array, not a copy (0.8 GB at 50k); the
    workspace replaces its array when a version is applied, so the base checkpoint's values stay."""
    loaded = fresh_digits
    ws, store = loaded.workspace, loaded.models
    assert store.checkpoint(0).features is ws.features
    before = ws.features.copy()
    ws._set_features(ws.features + 1.0, 1, ws.feature_layer)
    np.testing.assert_array_equal(store.checkpoint(0).features, before)
