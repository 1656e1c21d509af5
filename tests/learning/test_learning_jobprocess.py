"""Fine-tune jobs in the child process: bitwise the same as on a thread, networks cached, clean exit.

The child is started with multiprocessing's spawn method, as on Windows and macOS, so these tests
run on Linux exactly what those platforms run.
"""

import copy
import os
import threading

import numpy as np
import pytest
import torch
from test_learning_finetune import pick_relabel, request
from test_learning_shared_result import answer_after_progress

from game.core import events as ev
from game.core.worker import Worker
from game.learning.controller import FineTuneController
from game.learning.finetune import FineTuneRequest, compute_stem_cache, run_finetune
from game.learning.headless import apply_moves
from game.learning.jobprocess import JobProcess


@pytest.fixture(scope="module")
def process(loaded_digits):
    proc = JobProcess(torch_threads=1)
    ws = loaded_digits.workspace
    proc.init(loaded_digits.network, ws.images, ws.is_train.copy(), False, 2)
    assert proc.start_method == "spawn" and proc._proc._start_method == "spawn"
    yield proc
    proc.close()
    assert not proc.alive


def _same(a, b) -> None:
    assert a.weights == b.weights and a.weight_names == b.weight_names
    np.testing.assert_array_equal(a.inference.features, b.inference.features)
    np.testing.assert_array_equal(a.inference.top5_scores, b.inference.top5_scores)
    np.testing.assert_array_equal(a.layout.positions, b.layout.positions)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_process_job_is_bitwise_the_thread_job(loaded_digits, process):
    stem = compute_stem_cache(loaded_digits.network, loaded_digits.workspace.images, 2)
    _, new, edit = pick_relabel(loaded_digits, seed=5)
    here = run_finetune(request(loaded_digits, [edit], stem))
    there = process.run(request(loaded_digits, [edit], None))
    _same(here, there)
    assert there.inference.top5_classes[edit.card, 0] == new
    assert there.layout.tsne is None  # the openTSNE object does not travel
    # The rebuilt network carries the job's weights.
    state = there.network.module.state_dict()
    for name in there.weight_names:
        assert torch.equal(state[name], here.network.module.state_dict()[name])

    # A second job on top of the first: the child uses the network it kept (no weights sent) ...
    _, _, edit2 = pick_relabel(loaded_digits, seed=9)

    def on_top(result, network):
        req = request(loaded_digits, [edit2], None, version=2)
        req.network, req.labels, req.layout = network, result.labels, result.layout
        req.features = result.inference.features
        return req

    here2 = run_finetune(dataclass_with_stem(on_top(here, here.network), stem))
    sent: list = []
    send = process._send
    process._send = lambda message: (sent.append(message), send(message))[1]
    try:
        there2 = process.run(on_top(there, there.network))
        # ... and a network it never saw (e.g. restored by undo) travels as weights.
        there3 = process.run(on_top(there, there.network.clone()))
    finally:
        del process._send
    _same(here2, there2)
    _same(here2, there3)
    # The second job's base is the child's last result: its features stayed there (0.8 GB at 50k
    # cards); the third's base is a network the child never made, so its features travel.
    assert [m.features_kept for m in sent] == [True, False]
    assert sent[0].request.features is None and sent[1].request.features is not None


def dataclass_with_stem(req: FineTuneRequest, stem) -> FineTuneRequest:
    req.stem = stem
    return req


def test_controller_runs_jobs_in_the_process_and_closes_it(fresh_digits):
    loaded = fresh_digits
    loaded.scene = copy.deepcopy(loaded.scene)
    loaded.scene.learning.job_process = True
    worker = Worker(torch_threads=1)
    ctl = FineTuneController(loaded, worker)
    assert ctl.process is not None
    proc = ctl.process
    seen: list[ev.Event] = []
    loaded.workspace.subscribe(lambda e, _ws: seen.append(e))
    ws = loaded.workspace
    card = int(np.flatnonzero(ws.is_train & (ws.predictions == ws.labels))[0])
    target = (int(ws.labels[card]) + 2) % ws.n_classes
    report = apply_moves(loaded, [(card, target)], controller=ctl)
    assert report.moves[0].predicted_after == ws.class_names[target]
    assert ws.model_version == 1 and ws.labels[card] == target
    progress = [e for e in seen if isinstance(e, ev.JobStatus) and e.state == "running" and e.progress > 0]
    assert progress, "progress from the child reaches the workspace"
    ctl.close()
    # It closes (the time it takes is not the point: the after-result job and the child's close
    # queue behind each other, and took over 30 s once at load 16 on two cores).
    assert worker.close(wait=True, timeout=180)
    assert not proc.alive


def test_a_crashed_child_is_restarted_for_the_next_job(loaded_digits, process):
    _, new, edit = pick_relabel(loaded_digits, seed=5)
    process.kill()
    process.join(10)
    assert not process.alive
    result = process.run(request(loaded_digits, [edit], None))  # restarts and re-initialises
    assert process.alive and result.inference.top5_classes[edit.card, 0] == new


def test_cancel_stops_a_job_inside_the_child_and_spares_the_next(loaded_digits, process):
    """An undo while the child trains: the child stops between steps (a job set to train a million
    steps would otherwise hold the process for many minutes); the next job is not cancelled."""
    import dataclasses
    import threading

    from game.learning.finetune import FineTuneCancelled

    _, _, edit = pick_relabel(loaded_digits, seed=5)
    endless = request(loaded_digits, [edit], None)
    endless.config = dataclasses.replace(endless.config, max_steps=1_000_000, min_steps=1_000_000)
    asked = threading.Event()
    training = threading.Event()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            process.run(endless, progress=lambda *_: training.set(), cancelled=asked.is_set)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert training.wait(120), "the child never started training"
    asked.set()
    process.cancel()
    thread.join(120)
    assert not thread.is_alive(), "the child did not stop the job"
    assert isinstance(outcome[0], FineTuneCancelled)
    # The process is still usable, and the stale cancel does not touch the next job.
    process.cancel()  # nothing running: a no-op
    result = process.run(request(loaded_digits, [edit], None))
    assert result.learned


def test_priority_is_lowered_through_a_portable_call(monkeypatch):
    """os.nice where it exists; on Windows (no os.nice) the call says False instead of raising."""
    import os

    from game.learning import jobprocess

    asked: list[int] = []
    monkeypatch.setattr(os, "nice", asked.append, raising=False)
    assert jobprocess.lower_priority(5) and asked == [5]
    assert not jobprocess.lower_priority(0)
    monkeypatch.delattr(os, "nice")
    monkeypatch.setattr(jobprocess.sys, "platform", "linux")
    assert jobprocess.lower_priority(5) is False  # no AttributeError where os.nice is missing


def test_a_message_pickles_without_another_threads_passing_hooks():
    """A pass elsewhere hangs a local-function hook on the shared module for its duration; the
    job process's message leaves such hooks out at once (no wait, no fallback to a thread), the
    weights travel unchanged, and the live module keeps its hook."""
    import pickle

    import torch

    from game.learning.jobprocess import _pickled

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    seen: list[int] = []
    module[2].register_forward_pre_hook(lambda _m, _a: seen.append(1))
    module.register_forward_hook(lambda _m, _i, _o: seen.append(2))
    data = _pickled({"network": module}, tries=1, wait_s=0.0)
    copy = pickle.loads(data)["network"]
    assert len(copy._forward_hooks) == 0 and len(copy[2]._forward_pre_hooks) == 0
    assert len(module._forward_hooks) == 1 and len(module[2]._forward_pre_hooks) == 1
    x = torch.randn(5, 3)
    assert torch.equal(copy(x), module(x))
    assert seen == [1, 2]  # only the live module's pass ran the hooks
    lock = threading.Lock()  # never picklable: refused at the first try, not after the retries
    with pytest.raises(TypeError):
        _pickled(lock, tries=10_000, wait_s=1.0)


def test_large_arrays_travel_out_of_band_and_arrive_unchanged():
    """Arrays of OUT_OF_BAND_BYTES or more leave the pickle (issue 17: the 0.8 GB features of a
    50,000-card result were copied four times on the way) and arrive equal, writable, in order."""
    import multiprocessing

    from game.learning import jobprocess

    rng = np.random.default_rng(0)
    big = rng.normal(size=(600, 512)).astype(np.float32)  # 1.2 MB
    fortran = np.asfortranarray(rng.normal(size=(700, 300)))  # 1.7 MB, another layout
    small = np.arange(10)
    message = jobprocess.OkMessage({"big": big, "fortran": fortran, "small": small, "text": "x"})
    data, buffers = jobprocess._pickled_parts(message)
    assert len(buffers) == 2 and len(data) < 10_000
    here, there = multiprocessing.Pipe(duplex=True)
    sender = threading.Thread(target=jobprocess._put, args=(here, message))
    sender.start()
    got = jobprocess._get(there).value
    sender.join()
    np.testing.assert_array_equal(got["big"], big)
    np.testing.assert_array_equal(got["fortran"], fortran)
    np.testing.assert_array_equal(got["small"], small)
    assert got["big"].dtype == np.float32 and got["big"].flags.writeable and got["text"] == "x"
    here.close()
    there.close()


def test_large_tensors_and_a_networks_weights_travel_out_of_band_and_arrive_unchanged():
    """A network's large tensors leave the pickle like arrays (before, torch put each storage's
    bytes inside it and the message held AlexNet's 230 MB four times over: +1.1 GB in the app at
    start-up); they arrive equal, Parameters with their ``requires_grad``, writable. A view into a
    larger storage or a dtype numpy lacks pickles as torch does."""
    import multiprocessing

    from torch import nn

    from game.learning import jobprocess

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(600, 512), nn.ReLU(), nn.Linear(512, 3))
    module[0].bias.requires_grad_(False)
    base = torch.randn(700, 512)
    view = base[100:]  # shares ``base``'s storage
    half = torch.randn(700, 512).to(torch.bfloat16)
    message = jobprocess.OkMessage({"module": module, "base": base, "view": view, "half": half})
    data, buffers = jobprocess._pickled_parts(message)
    # The first layer's weight and ``base`` out of band; the view and bfloat16 tensor in the pickle.
    assert len(buffers) == 2
    assert len(data) < base.numel() * 4 + half.numel() * 2 + 100_000  # the view pickles its storage
    here, there = multiprocessing.Pipe(duplex=True)
    sender = threading.Thread(target=jobprocess._put, args=(here, message))
    sender.start()
    got = jobprocess._get(there).value
    sender.join()
    for name, value in module.state_dict().items():
        assert torch.equal(got["module"].state_dict()[name], value), name
    for (name, p), (_, q) in zip(module.named_parameters(), got["module"].named_parameters(), strict=True):
        assert isinstance(q, nn.Parameter) and q.requires_grad == p.requires_grad, name
    assert torch.equal(got["base"], base) and torch.equal(got["view"], view)
    assert torch.equal(got["half"], half) and got["half"].dtype == torch.bfloat16
    got["base"] += 1  # writable, its own memory
    assert not torch.equal(got["base"], base)
    here.close()
    there.close()


def test_a_failed_preparation_after_an_answer_sends_nothing_more(loaded_digits, monkeypatch, served_child):
    """The child prepares the next job's spread and PCA after answering (``prepare_features``).
    When that fails (a MemoryError at 50k), nothing is sent: an ``ErrorMessage`` then would be
    read as the answer to the parent's next request. ``_serve`` runs on a thread here (the
    same code as in the child) so that the preparation can be made to fail."""
    import dataclasses

    from game.learning import jobprocess, preview

    def fails(*args, **kwargs):
        raise MemoryError("no room for the PCA (test)")

    monkeypatch.setattr(preview, "prepare_features", fails)
    here = served_child
    ws = loaded_digits.workspace
    jobprocess._put(here, jobprocess.FeaturesMessage("net0", ws.features, loaded_digits.projector))
    assert jobprocess._get(here) == jobprocess.OkMessage(None)  # the backend is not failed
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    req = request(loaded_digits, [edit], None)
    plain = dataclasses.replace(req, network=None, images=None, stem=None, features=None)
    jobprocess._put(here, jobprocess.JobMessage(plain, "net0", None, "net1", 1, True))
    answer = answer_after_progress(here)
    assert isinstance(answer, jobprocess.OkMessage) and answer.value.version == req.version
    # The next request's answer is its own, not the failed preparation's.
    jobprocess._put(here, jobprocess.FeaturesMessage("net0", ws.features, loaded_digits.projector))
    assert jobprocess._get(here) == jobprocess.OkMessage(None)


def test_a_head_only_child_keeps_the_count_of_the_images_not_their_pixels(
    loaded_digits, monkeypatch, served_child
):
    """Once it has the frozen stem's outputs, a head-only job reads only how many images there
    are; the child drops the pixels it was sent (0.6 GB at 50,000 images of 64 x 64, beside the
    app's copy) and its job is the thread job's, bit for bit. A full fine-tune asked of such a child
    fails with a clear error instead of training on no pixels."""
    import dataclasses

    from game.learning import finetune, jobprocess

    seen = []

    class Seeing(finetune.Runner):
        def __init__(self, network, images, *args, **kwargs):
            seen.append(images)
            super().__init__(network, images, *args, **kwargs)

    monkeypatch.setattr(finetune, "Runner", Seeing)
    here = served_child
    ws = loaded_digits.workspace
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    req = request(loaded_digits, [edit], None)
    plain = dataclasses.replace(req, network=None, images=None, stem=None)
    jobprocess._put(here, jobprocess.JobMessage(plain, "net0", None, "net1", 1, False))
    answer = answer_after_progress(here)
    assert isinstance(answer, jobprocess.OkMessage), answer
    (images,) = seen
    assert images.shape == ws.images.shape and images.strides == (0,) * ws.images.ndim
    assert not images.flags.writeable
    stem = compute_stem_cache(loaded_digits.network, ws.images, 2)
    there = dataclasses.replace(answer.value, weights=np.asarray(answer.value.weights).tobytes())
    _same(there, run_finetune(request(loaded_digits, [edit], stem)))

    full = dataclasses.replace(plain, config=dataclasses.replace(plain.config, full_finetune=True), version=2)
    jobprocess._put(here, jobprocess.JobMessage(full, "net0", None, "net2", 2, False))
    answer = answer_after_progress(here)
    assert isinstance(answer, jobprocess.ErrorMessage) and "head only" in str(answer.error)


def test_count_only_keeps_the_shape_and_dtype_in_one_element():
    from game.learning.jobprocess import count_only

    images = np.arange(4 * 5 * 5 * 3, dtype=np.uint8).reshape(4, 5, 5, 3)
    stand_in = count_only(images)
    assert stand_in.shape == images.shape and stand_in.dtype == images.dtype and len(stand_in) == 4
    assert stand_in.base is not None and stand_in.base.size == 1 and not stand_in.flags.writeable


def test_the_child_keeps_a_bounded_number_of_networks_without_gradients(loaded_digits, process):
    """Over a chain of jobs the child holds the first network and the last result, never more,
    and none keeps the last training step's gradients (before: the last four results, each with gradients as large as its trained weights: 128 MB a job at AlexNet's head,
    kept per drop at 50k). A job on a network it let go (an undo several versions back) gets the
    weights sent and is the thread job, bit for bit."""
    stem = compute_stem_cache(loaded_digits.network, loaded_digits.workspace.images, 2)
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    first = process.run(request(loaded_digits, [edit], None))
    results = [first]
    for i, seed in enumerate((9, 11, 13, 17, 19, 23)):
        _, _, e = pick_relabel(loaded_digits, seed=seed)
        req = request(loaded_digits, [e], None, version=i + 2)
        last = results[-1]
        req.network, req.labels, req.layout = last.network, last.labels, last.layout
        req.features = last.inference.features
        results.append(process.run(req))
        held = process.held()
        assert len(held["networks"]) <= 2, held  # the first and the result
        assert held["gradient_bytes"] == 0
        # Nor the frozen stem's parameters: no head-only job reads them (AlexNet: 160 MB).
        assert held["stem_bytes"] == 0
        assert set(process._known) <= set(held["networks"])
    # Back to the first result (dropped by the child long ago) and a new edit on it.
    _, _, e = pick_relabel(loaded_digits, seed=29)

    def on_first(network):
        req = request(loaded_digits, [e], None, version=20)
        req.network, req.labels, req.layout = network, first.labels, first.layout
        req.features = first.inference.features
        return req

    sent: list = []
    send = process._send
    process._send = lambda message: (sent.append(message), send(message))[1]
    try:
        there = process.run(on_first(first.network))
    finally:
        del process._send
    assert sent[0].weights is not None  # the child no longer had it
    # ... and only the head's tensors travel: the stem is the first network's, shared (before:
    # the whole network, 230 MB at AlexNet, of which the child kept the head).
    from game.nets.weights import state_from_bytes

    assert set(state_from_bytes(sent[0].weights)) == set(first.weight_names)
    here = run_finetune(dataclass_with_stem(on_first(first.network), stem))
    _same(here, there)


def _mapped_from_shared_memory(array: np.ndarray) -> bool:
    """Whether ``array``'s memory lies in a /dev/shm mapping of this process (Linux)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps", encoding="ascii") as maps:
        for line in maps:
            span, *rest = line.split()
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return any(part.startswith("/dev/shm/") for part in rest)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc/self/maps")
def test_features_kept_by_the_child_are_shared_memory_and_its_job_is_the_thread_job(
    loaded_digits, process, monkeypatch
):
    """The features of the version on show go to the child through a shared-memory segment
    that both processes map (before: a copy through the pipe, 0.8 GB more in the child at 50k
    until its first result); the array returned is on it, no name is left behind, and the job
    on those kept features is the thread job, bit for bit."""
    from game.learning import jobprocess

    monkeypatch.setattr(jobprocess, "SHARED_BYTES", 1)  # the digits' features count as large here
    ws = loaded_digits.workspace
    features = np.ascontiguousarray(ws.features, dtype=np.float32)
    shared = process.keep_features(loaded_digits.network, features, loaded_digits.projector)
    assert shared is not None and shared is not features
    np.testing.assert_array_equal(shared, features)
    assert _mapped_from_shared_memory(shared) and not _mapped_from_shared_memory(features)
    if os.path.isdir("/dev/shm"):
        assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"lr{os.getpid():x}")]
    stem = compute_stem_cache(loaded_digits.network, ws.images, 2)
    _, _, edit = pick_relabel(loaded_digits, seed=5)
    req = request(loaded_digits, [edit], None)
    req.features = shared
    there = process.run(req)
    here_req = request(loaded_digits, [edit], stem)
    here_req.features = features
    _same(run_finetune(here_req), there)


def test_the_app_holds_the_shared_features_once_the_child_has_them(fresh_digits, monkeypatch):
    """With the job process, the workspace, the base checkpoint and the backends hold the
    shared array the child maps, not their own copy (the two processes hold them once)."""
    from game.learning import jobprocess

    monkeypatch.setattr(jobprocess, "SHARED_BYTES", 1)
    loaded = fresh_digits
    loaded.scene = copy.deepcopy(loaded.scene)
    loaded.scene.learning.job_process = True
    loaded.scene.learning.preview_above = 1  # a "large" scene: the features go to the child
    ws = loaded.workspace
    before = ws.features.copy()
    worker = Worker(torch_threads=1)
    ctl = FineTuneController(loaded, worker)
    try:
        assert ctl.wait_ready(120)
        ctl.backend.primary._init_thread.join(60)
        assert worker.wait_idle(30, lane="interactive")
        worker.poll()  # the swap runs on the frame loop
        assert _mapped_from_shared_memory(ws.features)
        assert loaded.models.checkpoint(0).features is ws.features
        assert ctl.backend.primary._features[0] is ws.features
        np.testing.assert_array_equal(ws.features, before)
    finally:
        ctl.close()
        assert worker.close(wait=True, timeout=30)
