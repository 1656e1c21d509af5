"""The drop -> full tween path at scale without changing a number (issue 17 item 2): the head's
re-inference on two threads, the result's shared-memory segment made and faulted in while the job
trains, the new version's weights taken over without copies, the finiteness check in blocks."""

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save

from game.learning import head_update
from game.learning import stem as stem_module
from game.learning.finetune import FineTuneDiverged, Runner, _check_finite, compute_stem_cache
from game.learning.jobprocess import SHARED_BYTES, Segments, shared_name, state_views
from game.learning.stem import in_threads, prime_pre_activations
from game.nets.weights import state_from_bytes


def _infer(loaded, threads, monkeypatch, low_rank=True, rows_out=None):
    """A fresh stem cache, primed; the first head layer changed (low rank, or not); re-inferred in
    batches of 128 on ``threads`` threads. Returns the inference and the kept pre-activations."""
    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(stem_module, "REINFER_THREADS", threads)
    start = loaded.network
    images = loaded.workspace.images
    stem = compute_stem_cache(start, images, 2)
    prime_pre_activations(start, len(images), stem)
    net = start.clone()
    runner = Runner(net, images, stem, full=False)
    fc1 = net.module.classifier.fc1
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        out_dim, in_dim = fc1.weight.shape
        rank = 5 if low_rank else min(out_dim, in_dim)
        fc1.weight += (
            torch.randn(out_dim, rank, generator=gen) @ torch.randn(rank, in_dim, generator=gen) * 0.02
        )
        fc1.bias += 0.01
    assert stem_module.reinfer_threads() == min(threads, os.cpu_count() or 1)
    out = runner.infer_all(batch_size=128, rows_out=rows_out)
    newest = head_update.cache_for(stem).newest()
    assert newest is not None and newest.pre is not None
    return out, newest.pre.clone(), runner.last_infer_low_rank


@pytest.mark.parametrize("low_rank", [True, False])
def test_the_re_inference_on_two_threads_is_bitwise_the_one_thread_pass(
    loaded_digits, monkeypatch, one_torch_thread, low_rank
):
    one, pre_one, rank_one = _infer(loaded_digits, 1, monkeypatch, low_rank)
    two, pre_two, rank_two = _infer(loaded_digits, 2, monkeypatch, low_rank)
    assert rank_one == rank_two and (rank_one is not None) == low_rank
    np.testing.assert_array_equal(one.features, two.features)
    np.testing.assert_array_equal(one.logits, two.logits)
    np.testing.assert_array_equal(one.top5_classes, two.top5_classes)
    assert torch.equal(pre_one, pre_two)


@pytest.mark.parametrize("low_rank", [True, False])
def test_the_re_inference_hands_every_batch_of_features_to_rows_out(
    loaded_digits, monkeypatch, one_torch_thread, low_rank
):
    # The fine-tune's re-layout reduces each batch there (projector.RowProjection).
    handed: dict[int, np.ndarray] = {}

    def rows_out(start: int, features: np.ndarray) -> None:
        assert start not in handed
        handed[start] = features.copy()

    out, _, _ = _infer(loaded_digits, 2, monkeypatch, low_rank, rows_out)
    starts = sorted(handed)
    assert starts == list(range(0, len(out.features), 128))
    np.testing.assert_array_equal(np.concatenate([handed[s] for s in starts]), out.features)


def test_in_threads_runs_every_item_once_and_raises_the_first_error():
    seen: list[int] = []
    in_threads(seen.append, range(50), 2)
    assert sorted(seen) == list(range(50))

    def fail(item: int) -> None:
        if item == 7:
            raise ValueError("seven")

    with pytest.raises(ValueError, match="seven"):
        in_threads(fail, range(20), 2)
    seen.clear()
    in_threads(seen.append, range(5), 1)
    assert seen == list(range(5))  # one thread: here, in order


def _names(prefix: str) -> list[str]:
    if not os.path.isdir("/dev/shm"):
        return []
    return [f for f in os.listdir("/dev/shm") if f.startswith(prefix)]


def test_a_premade_segment_is_the_one_the_features_take_and_its_names_go():
    prefix = f"lrtest{os.getpid():x}p_"
    nbytes = SHARED_BYTES
    shape = (nbytes // 4 // 256, 256)
    segments = Segments(prefix)
    segments.premake(nbytes)
    array = segments.allocate(shape)
    assert array is not None and array.shape == shape and not array.any()  # all zeros, writable
    assert len(segments.made) == 1 and segments.made[0][0].name == shared_name(prefix, 0)
    array[:] = 3.0
    assert segments.place(pickle.PickleBuffer(array)) == (shared_name(prefix, 0), 0)
    segments.after_sending()  # sent: the parent removes its name (here: discard, below)
    segments.discard()
    assert _names(prefix) == []
    del array

    # Not taken (another size): its name and mapping go once the result is sent.
    other = Segments(prefix + "u")
    other.premake(nbytes)
    got = other.allocate((nbytes // 4 // 128 + 1, 128))
    assert got is not None and len(other.made) == 2
    assert other.place(pickle.PickleBuffer(got)) == (shared_name(prefix + "u", 1), 0)
    other.after_sending()
    assert len(other.made) == 1  # only the one the result used
    assert _names(prefix + "u") == ([] if not os.path.isdir("/dev/shm") else [shared_name(prefix + "u", 1)])
    other.discard()
    assert _names(prefix + "u") == []
    del got

    # A failed job: the premade segment is removed, touched or not.
    failed = Segments(prefix + "f")
    failed.premake(nbytes)
    failed.discard()
    assert _names(prefix + "f") == []


def _head_state():
    gen = torch.Generator().manual_seed(0)
    return {
        "classifier.fc1.weight": torch.randn(64, 32, generator=gen),
        "classifier.fc1.bias": torch.randn(64, generator=gen),
        "steps": torch.arange(3),
        "half": torch.randn(2, 3, generator=gen).half(),
    }


def test_state_views_are_the_bytes_values_without_a_copy():
    data = save(_head_state())
    array = np.frombuffer(data, dtype=np.uint8).copy()
    views = state_views(array)
    assert views is not None
    expected = state_from_bytes(data)
    assert views.keys() == expected.keys()
    for name, tensor in expected.items():
        assert views[name].dtype == tensor.dtype and torch.equal(views[name], tensor)
    begin, end = array.ctypes.data, array.ctypes.data + array.nbytes
    assert all(begin <= t.data_ptr() < end for t in views.values())  # views, not copies
    assert state_views(np.frombuffer(data, dtype=np.uint8)) is None  # read-only: not viewed
    assert state_views(np.zeros(16, np.uint8)) is None  # not safetensors


def test_updated_takes_the_state_over_with_the_values_load_state_dict_gives(loaded_digits):
    base = loaded_digits.network
    fc1 = base.module.classifier.fc1
    state = {
        "classifier.fc1.weight": torch.randn_like(fc1.weight),
        "classifier.fc1.bias": torch.randn_like(fc1.bias).double(),  # another dtype: copied in
        "not.a.tensor.of.it": torch.zeros(2),
    }
    new = base.updated(state)
    reference = base.clone()
    reference.module.load_state_dict(state, strict=False)
    for (name, a), (_, b) in zip(
        new.module.state_dict().items(), reference.module.state_dict().items(), strict=True
    ):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    got = new.module.classifier.fc1
    assert got.weight.data_ptr() == state["classifier.fc1.weight"].data_ptr()  # taken over
    assert isinstance(got.weight, torch.nn.Parameter) and got.weight.requires_grad == fc1.weight.requires_grad
    assert got.bias.dtype == fc1.bias.dtype and got.bias.data_ptr() != state["classifier.fc1.bias"].data_ptr()
    assert torch.equal(base.module.classifier.fc1.weight, fc1.weight)  # the base unchanged
    others = [(n, p) for n, p in base.module.named_parameters() if not n.startswith("classifier.fc1.")]
    new_params = dict(new.module.named_parameters())
    assert all(new_params[n] is p for n, p in others)  # every other tensor shared


@pytest.mark.parametrize("where", [(0, 0), (-1, -1), (150, 77)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_in_blocks_finds_any_non_finite_element(where, bad):
    big = np.ones((300, 4096), np.float32)  # over one block of rows
    _check_finite("big", big)
    big[where] = bad
    with pytest.raises(FineTuneDiverged):
        _check_finite("big", big)
    small = np.ones((3, 4), np.float32)
    small[1, 2] = bad
    with pytest.raises(FineTuneDiverged):
        _check_finite("small", small)
    with pytest.raises(FineTuneDiverged):
        _check_finite("scalar", np.float32(bad))
    _check_finite("fine", np.float32(1.0), np.zeros((0, 4)), torch.ones(3))
