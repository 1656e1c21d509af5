"""A job's large result arrays through shared memory (issue 17: 0.8 GB of features took 3-4 s
through the pipe at 50,000 cards): they arrive unchanged, and no segment outlives its use on any
path (sent, not sent, failed, a child that died before sending)."""

import dataclasses
import gc
import multiprocessing
import threading

import numpy as np
import pytest
import torch
from test_learning_finetune import pick_relabel, request
from torch import nn

from game.learning import jobprocess
from game.learning.finetune import compute_stem_cache, run_finetune
from game.learning.jobprocess import Segments, shared_name, tidy_shared, unlink_shared
from game.learning.stem import _put_rest, _run_rest, result_array, result_arrays_from
from game.nets.network import BatchOutputs


def _named(name: str) -> bool:
    """Whether a segment of that name exists (can be attached)."""
    try:
        segment = jobprocess._Segment(name=name)
    except OSError:
        return False
    segment.close()
    return True


def _round_trip(message, segments):
    here, there = multiprocessing.Pipe(duplex=True)
    sender = threading.Thread(target=jobprocess._put, args=(here, message, segments))
    sender.start()
    got = jobprocess._get(there)
    sender.join()
    here.close()
    there.close()
    return got


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(jobprocess, "SHARED_BYTES", 1 << 10)
    monkeypatch.setattr(jobprocess, "OUT_OF_BAND_BYTES", 1 << 10)


def answer_after_progress(connection):
    """The child's next answer that is not a progress message."""
    answer = jobprocess._get(connection)
    while isinstance(answer, jobprocess.ProgressMessage):
        answer = jobprocess._get(connection)
    return answer


def test_result_arrays_arrive_unchanged_and_their_names_are_removed(small_threshold):
    prefix = "lrtest" + jobprocess.secrets.token_hex(3) + "_"
    segments = Segments(prefix)
    rng = np.random.default_rng(0)
    made = segments.allocate((300, 64))  # where the re-inference writes the features
    assert made is not None
    made[:] = rng.normal(size=made.shape)
    other = rng.normal(size=(200, 50)).astype(np.float32)  # a large array made elsewhere: copied in
    small = np.arange(5)
    got = _round_trip(jobprocess.OkMessage({"features": made, "other": other, "small": small}), segments)
    segments.after_sending()
    value = got.value
    np.testing.assert_array_equal(value["features"], made)
    np.testing.assert_array_equal(value["other"], other)
    np.testing.assert_array_equal(value["small"], small)
    assert value["features"].flags.writeable and value["features"].dtype == np.float32
    # The parent removed both names when it mapped them; the memory is shared, not copied.
    assert not _named(shared_name(prefix, 0)) and not _named(shared_name(prefix, 1))
    made[0, 0] = 12345.0
    assert value["features"][0, 0] == 12345.0
    segments.release_copies()
    unlink_shared(prefix)  # a no-op after a clean answer
    del made, value, got
    gc.collect()
    tidy_shared()
    assert jobprocess._OPEN == []  # every mapping closed once no array used it


def test_a_failed_job_removes_the_segments_it_made(small_threshold):
    prefix = "lrtest" + jobprocess.secrets.token_hex(3) + "_"
    segments = Segments(prefix)
    array = segments.allocate((1 << 20,))  # 4 MB
    assert array is not None and _named(shared_name(prefix, 0))
    segments.discard()
    assert not _named(shared_name(prefix, 0))
    array[:] = 1.0  # still mapped for the child's own use until it lets go
    del array
    gc.collect()
    tidy_shared()
    assert jobprocess._OPEN == []


def test_the_parent_removes_what_a_dead_child_left():
    prefix = "lrtest" + jobprocess.secrets.token_hex(3) + "_"
    left = jobprocess._Segment(name=shared_name(prefix, 0), create=True, size=1 << 16)
    left.close()  # the child died holding it: the name stays until someone removes it
    assert _named(shared_name(prefix, 0))
    unlink_shared(prefix)
    assert not _named(shared_name(prefix, 0))


def test_small_arrays_stay_in_the_pipe():
    segments = Segments("lrtest" + jobprocess.secrets.token_hex(3) + "_")
    assert segments.allocate((10, 10)) is None  # under SHARED_BYTES: np.empty
    got = _round_trip(jobprocess.OkMessage(np.ones((600, 512), np.float32)), segments)
    assert segments.made == [] and got.value.sum() == 600 * 512


def test_result_array_asks_the_allocator_of_its_thread_only():
    taken = np.zeros((4, 3), np.float32)
    with result_arrays_from(lambda shape: taken if shape == (4, 3) else None):
        assert result_array((4, 3)) is taken
        assert result_array((2, 2)).shape == (2, 2)  # None from the allocator: np.empty
        seen = []
        t = threading.Thread(target=lambda: seen.append(result_array((4, 3))))
        t.start()
        t.join()
        assert seen[0] is not taken
    assert result_array((4, 3)) is not taken


def test_features_written_in_place_are_the_head_s_own():
    """The re-inference writes fc7's ReLU straight into the features array (``_put_rest``): the
    same floats as the head's layers give (``_run_rest``), logits included."""
    torch.manual_seed(0)
    first = nn.Linear(64, 48)
    relu, drop, last = nn.ReLU(), nn.Dropout(0.5), nn.Linear(48, 7)
    rest = [relu, drop, last]
    for m in (first, *rest):
        m.eval()
    z = first(torch.randn(100, 64)).detach()
    out = BatchOutputs(100)
    with torch.no_grad():
        for s in range(0, 100, 32):
            _put_rest(out, s, z[s : s + 32], first, rest, relu)
        logits, features = _run_rest(z, first, rest, relu)
    assert out.features is not None and out.logits is not None
    np.testing.assert_array_equal(out.features, features.numpy())
    np.testing.assert_array_equal(out.logits, logits.numpy())


def test_a_job_through_shared_memory_is_bitwise_the_thread_job(loaded_digits, small_threshold, served_child):
    """The child's loop (``_serve``, on a thread here so the thresholds apply) sends the result's
    large arrays through shared memory; the result is the thread job's, bit for bit, and no named
    segment is left once the parent has read it."""
    here = served_child
    ws = loaded_digits.workspace
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    req = request(loaded_digits, [edit], None)
    plain = dataclasses.replace(req, network=None, images=None, stem=None)
    prefix = "lrtest" + jobprocess.secrets.token_hex(3) + "_"
    jobprocess._put(here, jobprocess.JobMessage(plain, "net0", None, "net1", 1, False, prefix))
    answer = answer_after_progress(here)
    assert isinstance(answer, jobprocess.OkMessage), answer
    unlink_shared(prefix)
    assert not any(_named(shared_name(prefix, i)) for i in range(jobprocess.SHARED_SEGMENTS))
    stem = compute_stem_cache(loaded_digits.network, ws.images, 2)
    thread = run_finetune(request(loaded_digits, [edit], stem))
    np.testing.assert_array_equal(answer.value.inference.features, thread.inference.features)
    np.testing.assert_array_equal(answer.value.inference.top5_scores, thread.inference.top5_scores)
    np.testing.assert_array_equal(answer.value.layout.positions, thread.layout.positions)
    assert answer.value.inference.features.nbytes >= jobprocess.SHARED_BYTES


def test_preview_rows_by_the_low_rank_update_match_the_head_pass(loaded_digits, monkeypatch):
    """The preview's cards re-inferred from the kept pre-activations plus the low-rank update
    (``Runner.rows_features_low_rank``) give the head pass's features within float noise; the
    factors are then reused by the re-inference, whose result is what it is without them."""
    from game.learning import head_update
    from game.learning.preview import rows_features
    from game.learning.stem import Runner, prime_pre_activations

    monkeypatch.setattr(head_update, "MIN_MULTIPLY_ADDS", 0)
    base = loaded_digits.network
    images = loaded_digits.workspace.images
    stem = compute_stem_cache(base, images, 2)
    prime_pre_activations(base, len(images), stem)

    def changed_runner():
        net = base.clone()
        runner = Runner(net, images, stem, full=False)  # before training: it finds its base
        fc1 = net.module.classifier.fc1
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            out_dim, in_dim = fc1.weight.shape
            fc1.weight += (
                torch.randn(out_dim, 4, generator=gen) @ torch.randn(4, in_dim, generator=gen) * 0.02
            )
            fc1.bias += 0.01
        return runner

    runner = changed_runner()
    rows = np.array([0, 5, 17, 400, 1200, len(images) - 1])
    quick = rows_features(runner, rows)
    assert runner._factors is not None  # the low-rank way was taken
    with torch.no_grad():
        _, slow = runner.forward(rows)
    np.testing.assert_allclose(quick, slow.numpy(), rtol=0, atol=2e-5 * float(np.abs(slow.numpy()).max()))
    factors = runner._factors[2]
    with_memo = runner.infer_all()
    assert runner._factors[2] is factors and runner.last_infer_low_rank == 4
    # A runner that never previewed (its own factors) gets the same features bit for bit.
    head_update.cache_for(stem).clear()
    prime_pre_activations(base, len(images), stem)
    fresh = changed_runner()
    np.testing.assert_array_equal(fresh.infer_all().features, with_memo.features)


def test_a_segment_gone_before_it_is_read_fails_that_message_only(monkeypatch):
    """The message's other parts are still read from the pipe, so the next message arrives whole."""
    monkeypatch.setattr(jobprocess, "SHARED_BYTES", 1 << 20)
    monkeypatch.setattr(jobprocess, "OUT_OF_BAND_BYTES", 1 << 10)
    prefix = "lrtest" + jobprocess.secrets.token_hex(3) + "_"
    segments = Segments(prefix)
    big = segments.allocate((1 << 19,))  # 2 MB: shared memory
    assert big is not None
    piped = np.arange(30_000, dtype=np.float32)  # 120 KB: out of band through the pipe
    here, there = multiprocessing.Pipe(duplex=True)
    jobprocess._Segment(name=shared_name(prefix, 0)).unlink()  # gone before the parent maps it
    sender = threading.Thread(
        target=jobprocess._put, args=(here, jobprocess.OkMessage((big, piped)), segments)
    )
    sender.start()
    with pytest.raises(jobprocess.pickle.UnpicklingError):
        jobprocess._get(there)
    sender.join()
    jobprocess._put(here, jobprocess.OkMessage(piped))
    np.testing.assert_array_equal(jobprocess._get(there).value, piped)
    here.close()
    there.close()
    segments.discard()
    del big
    gc.collect()
    tidy_shared()
