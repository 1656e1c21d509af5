"""Fine-tune jobs in one persistent child process, so the frame loop never shares the GIL with them.

Why a process: on a worker *thread* the job holds the GIL for most of its run (the re-layout's
numpy and openTSNE glue, torch's Python-level training loop, pickling and copies), and every
time the frame loop wants the GIL back it waits up to the interpreter's switch interval, or for
as long as a C call that keeps the GIL lasts. Frames then stall for tens of milliseconds. In a
child process the job only competes for a CPU core, and it runs at a lower priority (``nice``
on Unix, the below-normal priority class on Windows).

How: ``JobProcess`` starts one child with ``multiprocessing``'s *spawn* start method (the only
one Windows has, the default on macOS, and used on Linux too so the tests run what a Windows
player runs) when the controller is created, and talks to it over a ``multiprocessing`` pipe
with pickled plain data (numpy arrays, tensors, safetensors bytes, dataclasses of those). No
Unix-only call: no fork, no inherited file descriptors, no non-blocking pipe ends, no ``select``
(tests/test_portability.py fails if one appears unguarded). The child keeps what is expensive to
send or rebuild:
the images, the frozen stem's outputs (``StemCache``) and the networks it trained, keyed by a
token the parent gives each network object; only a network the child has never seen (e.g. one
restored by undo) travels as safetensors bytes. Results come back without the network (the
parent rebuilds it from the job's changed weights, which it needs anyway for checkpoints).

The parent side is blocking and is meant to be called from the ``Worker`` thread: waiting on the
pipe releases the GIL. ``cancel`` (any thread, e.g. an undo on the frame loop) writes the running
job's number into a shared 32-bit value that the child reads between training steps and phases,
so an undo stops a job inside the child too instead of waiting for its answer (a later job has
another number, so a late cancel never stops it). The child runs the same
``run_finetune`` with the same torch thread count, so results are bitwise identical to the thread
path.

This module must stay free of panda3d (the child imports it). Spawn re-imports the parent's
``__main__`` module in the child, so a script that creates a ``JobProcess`` must keep its work
under ``if __name__ == "__main__":`` (the CLI and every benchmark do).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import io
import itertools
import multiprocessing
import os
import pickle
import secrets
import shutil
import struct
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import numpy as np
import torch
from torch import nn

from game.core.worker import stop_at_exit
from game.learning.finetune import FineTuneCancelled, FineTuneRequest, FineTuneResult

if TYPE_CHECKING:
    from game.nets.network import Network

Progress = Any  # Callable[[float, str], None]

START_METHOD: Final = "spawn"  # Windows' only start method; the same everywhere so tests run it
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_ENV_LOCK = threading.Lock()


class JobProcessError(RuntimeError):
    """The child process ended or answered something unexpected."""


# --- the messages (pickled both ways; always this module's classes, never ``__main__``'s) ------


@dataclasses.dataclass(frozen=True)
class InitMessage:
    """Parent -> child: the scene's constant data; the child answers ``OkMessage(info)``."""

    key: str  # the token of ``network`` (jobs name their base network by it)
    network: Any
    images: np.ndarray
    strides: tuple[int, ...]  # the parent's strides of ``images`` (see ``same_strides``)
    is_train: np.ndarray
    full_finetune: bool
    head_layers: int
    stem: Any = None  # a StemCache the parent already computed, or None (the child computes it)


@dataclasses.dataclass(frozen=True)
class JobMessage:
    """Parent -> child: one fine-tune; answered by ``ProgressMessage``s, then ``OkMessage(result)``."""

    request: FineTuneRequest  # without network, images and stem (the child has them)
    key: str  # the base network's token
    weights: bytes | None  # the base network's weights when the child has never seen it
    new_key: str  # the token the trained network gets
    number: int  # the job's number on the cancel pipe
    # True: ``request.features`` was left out; they are those of the child's last result (``key``'s),
    # which it kept (at 50,000 cards x 4,096 they are 0.8 GB: seconds through the pipe).
    features_kept: bool = False
    # The names of the shared-memory segments the child may make for this job's result
    # (``shared_name(prefix, i)``); "": none, every array through the pipe.
    shared: str = ""
    # The trained networks (tokens) the child may keep past this job besides the first and the new
    # one; it drops every other (see ``JobProcess._keep``). Each is 64 MB at AlexNet's head.
    keep: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FeaturesMessage:
    """Parent -> child, after ``InitMessage`` (large scenes): the features of the version on show
    (the first network's, ``key``), kept like a result's so that the first job does not send them,
    with their spread and the layout's PCA prepared (``preview``); answered ``OkMessage(None)``."""

    key: str
    features: np.ndarray
    projector: Any
    basis: Any = None  # the PCA the layout on show carries (``LayoutState.basis``), None: refit


@dataclasses.dataclass(frozen=True)
class HeldMessage:
    """Parent -> child: what do you hold? Answered ``OkMessage(dict)``: the networks' tokens and
    the bytes of gradients left on their parameters (tests: the child's memory stays bounded)."""


@dataclasses.dataclass(frozen=True)
class QuitMessage:
    """Parent -> child: finish and exit."""


@dataclasses.dataclass(frozen=True)
class ProgressMessage:
    fraction: float
    text: str


@dataclasses.dataclass(frozen=True)
class PreviewMessage:
    """Child -> parent, mid-job: the job's ``preview.Preview`` (the cards near its edits, placed
    before the full result); handed to the request's ``on_preview`` in the parent."""

    preview: Any


@dataclasses.dataclass(frozen=True)
class OkMessage:
    value: Any


@dataclasses.dataclass(frozen=True)
class ErrorMessage:
    error: BaseException


def _put(conn: Connection, message: Any, segments: Segments | None = None) -> None:
    """Send ``message`` pickled by plain ``pickle``, never ``Connection.send``: that pickles with
    multiprocessing's ForkingPickler, for which torch moves every tensor's storage into shared
    memory *in place*; another thread reading the same tensor then (the recorder serialising the
    base network, an explanation copying it) reads freed memory and the process segfaults.
    ``segments``: large arrays go through shared memory (``Segments``), not the pipe."""
    _send_parts(conn, *_pickled_parts(message), segments=segments)


def _rebuild_module(cls: type[nn.Module], state: dict[str, Any]) -> nn.Module:
    module = cls.__new__(cls)
    # nn.Module.__setstate__ takes the state dict and returns None, but torch leaves it unannotated.
    setstate = cast(Callable[[dict[str, Any]], None], module.__setstate__)
    setstate(state)
    return module


class _HooklessPickler(pickle.Pickler):
    """Pickles torch modules without their forward/backward hooks.

    A pass elsewhere (explanations, guidance, a stem cache, a feature capture) registers a hook
    on the shared module for its duration. Those hooks are local functions, which pickle refuses,
    and they belong to that pass, not to the network: the child must not get them. Before this,
    the message waited up to 2 s for such a pass to end and then fell back to a thread (seen on
    the suite's 2,000-image stem caches).
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return _tensor_reduction(obj) if self._out_of_band else NotImplemented
        if not isinstance(obj, nn.Module):
            return NotImplemented
        state = obj.__dict__.copy()
        for key, value in state.items():
            if key.startswith(("_forward", "_backward")) and "hooks" in key:
                state[key] = type(value)()
        return _rebuild_module, (type(obj), state)

    _out_of_band = False  # set by ``_dumps_parts`` when large buffers leave the pickle


_NUMPY_DTYPES: Final = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
}


def _tensor_reduction(t: torch.Tensor) -> Any:
    """A large plain CPU tensor as the numpy array on its memory, so that it travels out of band
    (``OUT_OF_BAND_BYTES``) like an array: no copy in the sender, one read in the receiver.

    Why: torch pickles a tensor's storage as bytes made by ``torch.save``, inside the pickle; the
    message then held the network (230 MB for AlexNet) four times over (the storage's bytes, the
    pickle, its ``getvalue``, the message's head joined to it): +1.1 GB in the app while it sent the
    child its first network (``bench_scale --cards 600``, stage "fine-tune controller ready").
    Anything else (a view into a larger storage, a dtype numpy lacks, a subclass, a tensor with
    a graph or attributes) pickles as torch does: the same values either way."""
    if (
        type(t) not in (torch.Tensor, nn.Parameter)
        or t.device.type != "cpu"
        or t.layout != torch.strided
        or t.dtype not in _NUMPY_DTYPES
        or t.grad_fn is not None
        or t.is_conj()
        or t.is_neg()
        or t.__dict__
        or not t.is_contiguous()
        or t.storage_offset() != 0
        or t.untyped_storage().nbytes() != t.numel() * t.element_size()
        or t.numel() * t.element_size() < OUT_OF_BAND_BYTES
    ):
        return NotImplemented
    return _rebuild_tensor, (t.detach().numpy(), t.requires_grad, isinstance(t, nn.Parameter))


def _rebuild_tensor(array: np.ndarray, requires_grad: bool, parameter: bool) -> torch.Tensor:
    """The receiver's tensor on the array that came out of band (no copy)."""
    tensor = torch.from_numpy(array)
    if parameter:
        return nn.Parameter(tensor, requires_grad)
    return tensor.requires_grad_(requires_grad)


# Arrays of at least this many bytes travel out of band (pickle protocol 5): written to the pipe
# straight from their memory and read into the memory the receiver's array keeps, through one
# transient copy (``Connection.recv_bytes_into`` reads into a ``BytesIO`` first, so the receiver
# briefly holds the array twice: 0.8 GB extra at 50,000 x 4,096). The in-band pickle was copied
# four times on the way (into the pickle, out of ``BytesIO``, out of the received bytes, into the
# array): seconds.
OUT_OF_BAND_BYTES = 1 << 20
_HEAD = struct.Struct("<I")  # how many out-of-band buffers follow a message; then their sizes


def _dumps_parts(message: Any, out_of_band: bool = True) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffer = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []

    def keep_in_band(view: pickle.PickleBuffer) -> bool:
        if view.raw().nbytes < OUT_OF_BAND_BYTES:
            return True
        buffers.append(view)
        return False

    pickler = _HooklessPickler(
        buffer, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=keep_in_band if out_of_band else None
    )
    pickler._out_of_band = out_of_band
    pickler.dump(message)
    return buffer.getvalue(), buffers


def _dumps(message: Any) -> bytes:
    return _dumps_parts(message, out_of_band=False)[0]


def _pickled(message: Any, tries: int = 40, wait_s: float = 0.05) -> bytes:
    """``message`` pickled in one piece (see ``_pickled_parts``)."""
    return _retrying(lambda: _dumps(message), tries, wait_s)


def _pickled_parts(
    message: Any, tries: int = 40, wait_s: float = 0.05
) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """``message`` pickled without the passing hooks of other threads (``_HooklessPickler``), its
    large arrays left out of band (``OUT_OF_BAND_BYTES``).

    A hook registered or removed by another thread mid-pickle can still make a dict change size;
    that lasts an instant, so a few short retries get a clean copy; a message that never pickles
    still raises.
    """
    return _retrying(lambda: _dumps_parts(message), tries, wait_s)


_T = TypeVar("_T")


def _retrying(dump: Callable[[], _T], tries: int, wait_s: float) -> _T:
    for attempt in range(tries):
        try:
            return dump()
        except (AttributeError, RuntimeError, pickle.PicklingError, TypeError) as exc:
            passing = "local object" in str(exc) or "changed size" in str(exc)
            if not passing or attempt == tries - 1:
                raise  # a message that can never pickle fails at once
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def _send_parts(
    conn: Connection, data: bytes, buffers: list[pickle.PickleBuffer], segments: Segments | None = None
) -> None:
    """One message: a head (the out-of-band buffers' count, sizes, and for those in shared memory
    their segment's name and offset) with the pickle, then each other buffer as it lies in memory
    (the caller holds the pipe for the whole message)."""
    sizes = [b.raw().nbytes for b in buffers]
    places = [segments.place(b) if segments is not None else None for b in buffers]
    names = [p[0].encode("ascii") if p is not None else b"" for p in places]
    offsets = [p[1] if p is not None else 0 for p in places]
    count = len(sizes)
    conn.send_bytes(
        _HEAD.pack(count)
        + struct.pack(f"<{count}Q{count}Q{count}H", *sizes, *offsets, *(len(n) for n in names))
        + b"".join(names)
        + data
    )
    for b, place in zip(buffers, places, strict=True):
        if place is None:
            conn.send_bytes(b.raw())


def _get(conn: Connection) -> Any:
    """A message sent by ``_send_parts``: each out-of-band buffer is read into a fresh array that
    the unpickled array then uses (the pickle makes no copy of it; the pipe's read makes one
    transient one, see ``OUT_OF_BAND_BYTES``), or mapped from its shared-memory segment (no copy
    at all; the segment's name is removed at once, see ``Segments``)."""
    head = memoryview(conn.recv_bytes())
    if _OPEN:
        tidy_shared()  # mappings whose arrays went since the last message
    (count,) = _HEAD.unpack_from(head)
    fields = struct.unpack_from(f"<{count}Q{count}Q{count}H", head, _HEAD.size)
    sizes, offsets, lengths = fields[:count], fields[count : 2 * count], fields[2 * count :]
    at = _HEAD.size + 18 * count
    buffers = []
    missing: pickle.UnpicklingError | None = None
    for size, offset, length in zip(sizes, offsets, lengths, strict=True):
        if length:
            name = bytes(head[at : at + length]).decode("ascii")
            at += length
            try:
                buffers.append(attach_shared(name, offset, size))
            except pickle.UnpicklingError as exc:
                missing = exc  # read the message's other parts first: the pipe stays in step
            continue
        out = np.empty(size, dtype=np.uint8)
        got = conn.recv_bytes_into(out)
        if got != size:
            raise pickle.UnpicklingError(f"an out-of-band buffer of {got} bytes, {size} announced")
        buffers.append(out)
    if missing is not None:
        raise missing
    return pickle.loads(head[at:], buffers=buffers)


# --- shared memory for large results ------------------------------------------------------------
#
# Why: a 50,000-card result's features (0.8 GB) took 3-4 s through the pipe (written in chunks by
# the child, read by the app into a transient buffer and copied out of it: the app briefly held
# them twice). In shared memory the child's re-inference writes them where the app then maps them:
# no copy, no transient, and the two processes share the pages (the child keeps them as the next
# job's starting features, the app as the new version's).
#
# Lifetime (no segment outlives its use, on every path): the parent names a job's segments
# (``JobMessage.shared``, unique per process and job). The child makes them while it re-infers
# (``Segments.allocate``) or, for another large array, copies it into one (``Segments.place``).
# Sent: the parent maps each and removes its name at once (``attach_shared``; POSIX: the memory
# lives on while mapped; Windows: a segment lives while a handle is open, and the child holds one
# until the parent's next message). Not sent (the job failed, was cancelled, or the array did not
# go): the child removes the names itself. The child died first: the parent removes every name the
# job could have made (``unlink_shared``), after each job whatever its end. A mapping is closed once
# no array uses it (``tidy_shared``); closing it earlier would unmap memory an array still reads.

SHARED_BYTES = 16 << 20  # arrays of at least this many bytes in a result go through shared memory
SHARED_SEGMENTS = 4  # segments one job may make (the features, and a few other large arrays)
_DEV_SHM = "/dev/shm"  # Linux's POSIX shared memory (a tmpfs that may be small, e.g. in a container)


class _Segment(shared_memory.SharedMemory):
    """A segment whose finaliser never raises: its mapping may still be in use by an array (then
    it stays mapped; ``tidy_shared`` closes it later)."""

    def view(self) -> memoryview:
        """The mapping (arrays on it must come from ``np.frombuffer``, which holds the mapping
        while they live; ``np.ndarray(buffer=...)`` does not, and a close would unmap it)."""
        buf = self.buf
        if buf is None:
            raise ValueError(f"shared memory {self.name} is closed")
        return buf

    def __del__(self) -> None:
        with contextlib.suppress(BufferError, OSError):
            self.close()


_OPEN: list[_Segment] = []  # segments mapped by this process, closed once nothing uses them
_OPEN_LOCK = threading.Lock()


def tidy_shared() -> None:
    """Close the mappings no array uses any more (``close`` refuses those in use: BufferError)."""
    with _OPEN_LOCK:
        still = []
        for segment in _OPEN:
            try:
                segment.close()
            except BufferError:
                still.append(segment)
        _OPEN[:] = still


def _tidy_soon() -> None:
    """``tidy_shared`` on a thread of its own: a finaliser runs while the dying array still holds
    its mapping, so a close from there would be refused; the thread runs once it is gone."""
    with contextlib.suppress(RuntimeError):  # no new threads at interpreter exit: nothing to tidy
        threading.Thread(target=tidy_shared, name="shared-memory-tidy", daemon=True).start()


def _keep_open(segment: _Segment, array: np.ndarray) -> np.ndarray:
    """``array`` (made by ``np.frombuffer`` on ``segment``, which holds the mapping while any array
    uses it) with its segment closed after it (``tidy_shared``; also at every message read)."""
    with _OPEN_LOCK:
        _OPEN.append(segment)
    weakref.finalize(array, _tidy_soon)
    return array


def shared_name(prefix: str, index: int) -> str:
    return f"{prefix}{index}"


def _room_for(nbytes: int) -> bool:
    """Whether shared memory can take ``nbytes`` more: a tmpfs that is too small would let the
    segment be made and then kill the process writing it (SIGBUS)."""
    if not os.path.isdir(_DEV_SHM):
        return True  # Windows (the paging file), macOS (no file system)
    try:
        return shutil.disk_usage(_DEV_SHM).free > nbytes + (64 << 20)
    except OSError:
        return False


def attach_shared(name: str, offset: int, size: int) -> np.ndarray:
    """Parent: the ``size`` bytes at ``offset`` of segment ``name``, mapped (no copy); the name
    is removed at once (the memory lives while mapped)."""
    try:
        segment = _Segment(name=name)
    except OSError as exc:
        raise pickle.UnpicklingError(f"shared memory {name} is gone ({exc})") from None
    try:
        array = np.frombuffer(segment.view(), dtype=np.uint8, count=size, offset=offset)
    except BaseException:
        segment.unlink()
        segment.close()
        raise
    segment.unlink()  # POSIX: the name goes, the mapping stays; Windows: nothing to do
    return _keep_open(segment, array)


def unlink_shared(prefix: str) -> None:
    """Parent, after every job: remove any segment of the job that is still named (a child that
    died between making and sending it). A no-op for segments already mapped and removed."""
    if not prefix:
        return
    for i in range(SHARED_SEGMENTS):
        try:
            segment = _Segment(name=shared_name(prefix, i))
        except OSError:  # FileNotFoundError: not made, or already removed
            continue
        with contextlib.suppress(OSError):
            segment.unlink()
        segment.close()


class Segments:
    """Child: the shared-memory segments of one job's result (see the section's comment)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[tuple[_Segment, int, int, bool]] = []  # (segment, address, size, copy)
        self.sent: set[str] = set()
        # ``premake``'s segment and its size until ``allocate`` takes it; the thread touching its pages.
        self._spare: tuple[_Segment, int] | None = None
        self._touch: threading.Thread | None = None

    def premake(self, nbytes: int) -> None:
        """Make the segment the job's features will need (``nbytes``, as its base's) now, and
        touch its pages on a thread of its own while the job trains.

        Why: the first write to each 4 KB page of a new segment faults it in, and the kernel
        zeroes it: 0.7 s of the re-inference at 50,000 x 4,096 (0.8 GB), on its path. Here it
        runs beside the training, on the core the job's one torch thread leaves. The values are
        the re-inference's either way (it writes every element)."""
        if self._spare is not None or self._touch is not None or nbytes < SHARED_BYTES:
            return
        segment = self._new(nbytes)
        if segment is None:
            return
        address = np.frombuffer(segment.view(), dtype=np.uint8, count=1).ctypes.data
        self.made.append((segment, address, nbytes, False))
        self._spare = (segment, nbytes)
        self._touch = threading.Thread(
            target=_touch_pages, args=(segment, nbytes), name="shared-memory-touch", daemon=True
        )
        self._touch.start()

    def _wait_touched(self) -> None:
        """Wait for the touching thread (nothing may unmap what it writes)."""
        if self._touch is not None:
            self._touch.join()
            self._touch = None

    def _take_spare(self, nbytes: int) -> _Segment | None:
        """``premake``'s segment once its pages are in, if it is ``nbytes`` long."""
        if self._spare is None or self._spare[1] != nbytes:
            return None
        self._wait_touched()
        segment, self._spare = self._spare[0], None
        return segment

    def _close_spare(self) -> None:
        """A premade segment the job did not take: its name and mapping go now."""
        self._wait_touched()
        if self._spare is None:
            return
        segment, self._spare = self._spare[0], None
        self.made = [m for m in self.made if m[0] is not segment]
        with contextlib.suppress(OSError):
            segment.unlink()
        with contextlib.suppress(BufferError, OSError):
            segment.close()

    def _new(self, nbytes: int) -> _Segment | None:
        if len(self.made) >= SHARED_SEGMENTS or not _room_for(nbytes):
            return None
        try:
            return _Segment(name=shared_name(self.prefix, len(self.made)), create=True, size=max(nbytes, 1))
        except OSError:  # no shared memory here: the pipe
            return None

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """A float32 array of ``shape`` in a new segment (``stem.result_arrays_from``), or None."""
        nbytes = int(np.prod(shape)) * 4
        if nbytes < SHARED_BYTES:
            return None
        segment = self._take_spare(nbytes)
        if segment is None:
            segment = self._new(nbytes)
            if segment is None:
                return None
            array = np.frombuffer(segment.view(), dtype=np.float32, count=nbytes // 4).reshape(shape)
            self.made.append((segment, array.ctypes.data, nbytes, False))
        else:
            array = np.frombuffer(segment.view(), dtype=np.float32, count=nbytes // 4).reshape(shape)
        return _keep_open(segment, array)

    def place(self, buffer: pickle.PickleBuffer) -> tuple[str, int] | None:
        """Where an out-of-band buffer goes: (segment name, offset) when it lies in one of this
        job's segments or was copied into a new one (large ones), None: the pipe."""
        raw = buffer.raw()
        if raw.nbytes < SHARED_BYTES:
            return None
        address = np.frombuffer(raw, dtype=np.uint8).ctypes.data
        for segment, start, size, _ in self.made:
            if start <= address and address + raw.nbytes <= start + size:
                self.sent.add(segment.name)
                return segment.name, address - start
        copy = self._new(raw.nbytes)
        if copy is None:
            return None
        segment = copy
        np.frombuffer(segment.view(), dtype=np.uint8, count=raw.nbytes)[:] = np.frombuffer(
            raw, dtype=np.uint8
        )
        self.made.append((segment, 0, raw.nbytes, True))
        self.sent.add(segment.name)
        return segment.name, 0

    def after_sending(self) -> None:
        """The result went: remove the names of segments it did not use (the parent removes the
        others' once it maps them); the copies' mappings go after the parent's next message."""
        self._close_spare()
        for segment, _, _, _ in self.made:
            if segment.name not in self.sent:
                with contextlib.suppress(OSError):
                    segment.unlink()

    def release_copies(self) -> None:
        """The parent has mapped the result (it sent another message): close the copies."""
        copies = [m for m in self.made if m[3]]
        self.made = [m for m in self.made if not m[3]]
        for segment, _, _, _ in copies:
            with _OPEN_LOCK:
                _OPEN.append(segment)
        tidy_shared()

    def discard(self) -> None:
        """The job failed or was cancelled: no segment is sent; remove every name."""
        self._close_spare()
        for segment, _, _, _ in self.made:
            with contextlib.suppress(OSError):
                segment.unlink()
        self.made = []
        tidy_shared()


_SAFETENSORS_DTYPES: Final = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def state_views(data: np.ndarray) -> dict[str, Any] | None:
    """The tensors of the safetensors bytes in ``data`` (a writable uint8 array) as views of it,
    not copies (``state_from_bytes`` copies each out of the bytes); the same values. None where
    this does not apply (a big-endian machine, a dtype numpy lacks, a misaligned tensor, bytes
    that do not parse): the caller reads the bytes as before."""
    import json

    import torch

    try:
        if sys.byteorder != "little" or data.dtype != np.uint8 or data.ndim != 1 or not data.flags.writeable:
            return None
        size = int.from_bytes(data[:8].tobytes(), "little")
        header = json.loads(data[8 : 8 + size].tobytes())
        base = 8 + size
        out: dict[str, Any] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                return None
            begin, end = (base + int(o) for o in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
            if end > len(data) or (end - begin) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                return None
            view: np.ndarray = data[begin:end].view(dtype).reshape(shape)
            if not view.flags.aligned:
                return None
            out[name] = torch.from_numpy(view)
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


_PAGE = 4096


def _touch_pages(segment: _Segment, nbytes: int) -> None:
    """Write one zero into every page of ``segment``'s first ``nbytes`` (a new segment is all
    zeros: nothing changes but that its pages are in memory). numpy's strided fill runs without
    the GIL."""
    with contextlib.suppress(ValueError, BufferError):  # closed meanwhile: nothing to touch
        pages = np.frombuffer(segment.view(), dtype=np.uint8, count=nbytes)
        pages[::_PAGE] = 0
        del pages


def count_only(images: np.ndarray) -> np.ndarray:
    """``images``' shape without their pixels (a read-only view of one zero, every stride 0).

    Why: once the child has the frozen stem's outputs, a head-only job reads only how many images
    there are (the stem's outputs stand in for them); the pixels it was sent (0.6 GB at 50,000
    images of 64 x 64) would sit in the child beside the app's own copy for nothing."""
    return np.broadcast_to(np.zeros((1,) * images.ndim, dtype=images.dtype), images.shape)


def _strip_layout(layout: Any) -> Any:
    """The layout without its openTSNE object (large, and nothing downstream needs it)."""
    if getattr(layout, "tsne", None) is None:
        return layout
    return dataclasses.replace(layout, tsne=None)


def same_strides(array: np.ndarray, strides: tuple[int, ...]) -> np.ndarray:
    """``array`` viewed with the parent's strides along its size-1 axes (the values are the same).

    Pickling makes an array C-contiguous, which changes the stride of size-1 axes (e.g. the
    channel axis of grey images: 0 in the dataset, 1 after the round trip). torch reads those
    strides to pick a convolution kernel (channels-last or not), and the two kernels round
    differently: without this the child's frozen-stem outputs differ in the last bits.
    """
    if array.strides == tuple(strides):
        return array
    new = tuple(s if n == 1 else a for a, s, n in zip(array.strides, strides, array.shape, strict=True))
    array = np.array(array)  # writable (an unpickled array may sit on read-only bytes)
    return np.lib.stride_tricks.as_strided(array, shape=array.shape, strides=new)


class JobProcess:
    """Parent side: start the child, ``init`` it once, then ``run`` fine-tune requests."""

    def __init__(self, torch_threads: int = 1, nice: int = 5) -> None:
        self.torch_threads = max(int(torch_threads or 1), 1)
        self.nice = nice
        self._keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        # The networks the child holds (tokens): the first, and what ``_keep`` let it keep. A job on
        # any other sends its weights. Never more than the child has (see ``run``).
        self._known: set[str] = set()
        self._first_key: str | None = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._init_args: tuple[Any, np.ndarray, np.ndarray, bool, int, Any] | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._cancel: Any = None  # shared c_uint32: the job number the parent asked to stop
        self._job_numbers = itertools.count(1)
        self._current_job = 0
        self._kept_key: str | None = None  # the network whose features the child keeps
        self._start()
        stop_at_exit(self.kill)  # before the worker waiting on it is joined

    # --- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        ctx = multiprocessing.get_context(START_METHOD)
        self._close_connection()
        parent, child = ctx.Pipe(duplex=True)
        cancel = ctx.RawValue(ctypes.c_uint32, 0)
        proc = ctx.Process(
            target=_child_main,
            args=(child, cancel, self.torch_threads, self.nice),
            name="latent-reach-finetune",
            daemon=True,  # multiprocessing ends it if the parent exits without closing it
        )
        with _child_environment(self.torch_threads):
            proc.start()
        child.close()  # the child has its own copy: EOF here once it is gone
        self._proc, self._conn, self._cancel = proc, parent, cancel
        self._known.clear()

    @property
    def start_method(self) -> str:
        return START_METHOD

    def _close_connection(self) -> None:
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            try:  # noqa: SIM105 - not contextlib: from __del__ at exit module globals may be None
                conn.close()
            except Exception:
                pass

    def cancel(self) -> None:
        """Ask the child to stop the job it is running (a no-op when it already answered)."""
        shared, job = self._cancel, self._current_job
        if shared is not None and job:
            shared.value = job

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to quit; kill it if it does not within ``timeout``."""
        proc, self._proc = self._proc, None
        conn = self._conn
        if proc is None:
            self._close_connection()
            return
        try:
            if proc.is_alive() and conn is not None:
                with self._send_lock:  # never interleaved with a job's message on the pipe
                    _put(conn, QuitMessage())
            proc.join(timeout)
        except (OSError, ValueError, EOFError):
            pass
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        self._close_connection()

    def kill(self) -> None:
        """End the child now, mid-job (the interpreter is exiting): a waiting ``run`` then fails."""
        proc = getattr(self, "_proc", None)
        try:  # also called from __del__ at interpreter exit, when module globals may be gone
            if proc is not None and proc.is_alive():
                proc.kill()
        except Exception:
            pass

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to end (after ``kill`` or a crash)."""
        if self._proc is not None:
            self._proc.join(timeout)

    def __del__(self) -> None:  # last resort: never leave an orphan behind
        self.kill()
        self._close_connection()

    # --- talking -----------------------------------------------------------------------------

    def _send(
        self,
        message: InitMessage | FeaturesMessage | JobMessage | HeldMessage | QuitMessage,
        segments: Segments | None = None,
    ) -> None:
        assert self._conn is not None
        parts = _pickled_parts(message)  # before the lock: a retry never holds up a quit message
        try:
            with self._send_lock:
                _send_parts(self._conn, *parts, segments=segments)
        except (OSError, EOFError, ValueError) as exc:  # BrokenPipeError is an OSError
            raise JobProcessError(f"the fine-tune process is gone ({exc})") from None

    def _receive(self, progress: Progress | None = None, on_preview: Any = None) -> Any:
        """Read messages until an answer; progress messages go to ``progress`` and a preview to
        ``on_preview`` on the way."""
        assert self._proc is not None and self._conn is not None
        while True:
            try:
                message = _get(self._conn)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                self._proc.join(1.0)
                code = self._proc.exitcode
                raise JobProcessError(f"the fine-tune process ended (exit code {code}): {exc!r}") from None
            if isinstance(message, ProgressMessage):
                if progress is not None:
                    progress(message.fraction, message.text)
            elif isinstance(message, PreviewMessage):
                if on_preview is not None:
                    on_preview(message.preview)
            elif isinstance(message, OkMessage):
                return message.value
            elif isinstance(message, ErrorMessage):
                raise message.error
            else:
                raise JobProcessError(
                    f"unexpected message from the fine-tune process: {type(message).__name__}"
                )

    def _keep(self, key: str) -> tuple[str, ...]:
        """The trained networks the child keeps past a successful job on ``key`` besides the first
        and the result: none. The next drop starts from the result; an undo rebuilds the version
        it goes back to as a new network (``ModelStore.network``), whose weights are sent anyway,
        so a kept base would only be 64 MB (AlexNet's head) held for nothing. A job that fails or
        is cancelled drops nothing. Before, the child kept the last four, and the parent did not
        know which, so a job on an older one failed ("unknown network")."""
        del key  # the same answer for every base; kept in the signature for the message's sake
        return ()

    def _weights_to_send(self, network: Any) -> bytes:
        """The safetensors bytes of ``network``'s tensors that are not the very tensors of the
        network ``init`` sent, which the child copies and loads these over.

        Why: every model version is made from the first by ``Network.updated`` (an undo's too,
        ``ModelStore.network``), sharing its frozen stem, so a head-only version sends its head:
        64 MB at AlexNet instead of the whole network's 230 MB, which the app made and the child
        mostly threw away (it has released the stem). A network that shares nothing with the
        first (a full fine-tune's versions) sends everything, as before."""
        from game.nets.weights import state_to_bytes

        first = self._init_args[0] if self._init_args is not None else None
        if first is None:
            return state_to_bytes(network.module)
        first_state = first.module.state_dict()

        def shared(name: str, tensor: torch.Tensor) -> bool:
            mine = first_state.get(name)
            return (
                mine is not None
                and mine.data_ptr() == tensor.data_ptr()
                and mine.shape == tensor.shape
                and mine.dtype == tensor.dtype
                and mine.stride() == tensor.stride()
            )

        names = [n for n, t in network.module.state_dict().items() if not shared(n, t)]
        return state_to_bytes(network.module, names)

    def _key(self, network: Any) -> str:
        key = self._keys.get(network)
        if key is None:
            key = f"net{next(self._counter)}"
            self._keys[network] = key
        return key

    # --- jobs ----------------------------------------------------------------------------------

    def init(
        self,
        network: Any,
        images: np.ndarray,
        is_train: np.ndarray,
        full_finetune: bool,
        head_layers: int,
        stem: Any = None,
    ) -> dict[str, float]:
        """Send the scene's constant data once; the child computes the frozen stem's outputs."""
        with self._lock:
            return self._init_locked(network, images, is_train, full_finetune, head_layers, stem)

    def _init_locked(
        self, network: Any, images: np.ndarray, is_train: np.ndarray, full: bool, head_layers: int, stem: Any
    ) -> dict[str, float]:
        if not self.alive:
            self._start()
        key = self._key(network)
        self._kept_key = None  # the child drops what it kept for the old cards
        self._init_args = (network, images, is_train, full, head_layers, stem)
        self._send(InitMessage(key, network, images, images.strides, is_train, full, head_layers, stem))
        info: dict[str, float] = self._receive()
        self._known, self._first_key = {key}, key
        return info

    def keep_features(
        self, network: Any, features: np.ndarray, projector: Any, basis: Any = None
    ) -> np.ndarray | None:
        """Send the features of ``network`` (the one ``init`` sent) for the child to keep and
        prepare (``FeaturesMessage``, in ``basis`` where the layout carries one): the first job
        then starts like every later one.

        Large features go through a shared-memory segment that both processes then map: the
        returned array (the same values) is on it, and a caller that uses it instead of its own
        array holds them once between the two processes (0.8 GB at 50,000 x 4,096; through the pipe
        the child kept a copy until its first result replaced it). None: sent through the pipe."""
        with self._lock:
            if not self.alive:
                return None
            key = self._key(network)
            prefix = f"lr{os.getpid():x}{secrets.token_hex(3)}f_"
            segments = Segments(prefix)
            shared = segments.allocate(features.shape) if features.dtype == np.float32 else None
            if shared is not None:
                shared[...] = features
            try:
                message = FeaturesMessage(key, features if shared is None else shared, projector, basis)
                self._send(message, segments if shared is not None else None)
                self._receive()
            finally:
                unlink_shared(prefix)  # mapped by the child (which removed the name) or not at all
            self._kept_key = key
            return shared

    def held(self) -> dict[str, Any]:
        """What the child holds (``HeldMessage``): {"networks": tokens, "gradient_bytes": n,
        "stem_bytes": the bytes of parameters outside the head (0 in a head-only child once the
        stem's outputs are cached; every parameter's in a child that fine-tunes everything)}."""
        with self._lock:
            self._send(HeldMessage())
            answer: dict[str, Any] = self._receive()
            return answer

    def run(
        self, request: FineTuneRequest, progress: Progress | None = None, cancelled: Any = None
    ) -> FineTuneResult:
        """Run ``run_finetune(request)`` in the child; the result carries a rebuilt network."""
        from game.nets.weights import state_from_bytes

        with self._lock:
            if not self.alive:
                if self._init_args is None:
                    raise JobProcessError("the fine-tune process was never initialised")
                self._init_locked(*self._init_args)  # restarts it: a crash loses no later job
            # The number first, then the check: an undo sets its flag before ``cancel``, so one
            # of the two always sees the other (serialising an unseen network can take seconds).
            number = next(self._job_numbers)
            self._current_job = number
            shared = ""
            try:
                if cancelled is not None and cancelled():
                    raise FineTuneCancelled("the fine-tune was cancelled")
                base = request.network
                key = self._key(base)
                weights = None if key in self._known else self._weights_to_send(base)
                new_key = f"net{next(self._counter)}"
                # The base's features are the child's last result's when the base is that result.
                kept = key == self._kept_key
                plain = dataclasses.replace(
                    request,
                    # Left out of the pickle: the child puts back its own network and images.
                    network=cast("Network", None),
                    images=cast(np.ndarray, None),
                    stem=None,
                    layout=_strip_layout(request.layout),
                    features=cast(np.ndarray, None) if kept else request.features,
                    # The child sends a preview as a message when this is set (a callable does
                    # not pickle): True stands for "wanted".
                    on_preview=cast(Any, True) if request.on_preview is not None else None,
                )
                shared = f"lr{os.getpid():x}{secrets.token_hex(3)}j{number:x}_"
                keep = self._keep(key)
                # The child drops the networks not in ``keep`` when it reads the message.
                self._known &= {self._first_key, *keep}
                self._send(JobMessage(plain, key, weights, new_key, number, kept, shared, keep))
                result: FineTuneResult = self._receive(progress, request.on_preview)
                # Kept by the child now: the base (loaded from its weights if sent) and the result.
                self._known |= {key, new_key} & {self._first_key, new_key, *keep}
                received = time.time()
                state = None
                if isinstance(result.weights, np.ndarray):  # sent out of band (see ``_serve``)
                    # The new version's tensors are views of the received array (no copy); the
                    # checkpoint keeps the bytes.
                    state = state_views(result.weights)
                    result.weights = result.weights.tobytes()
                self._kept_key = new_key  # the child keeps this result's features
            finally:
                self._current_job = 0
                unlink_shared(shared)  # what a child that died mid-answer left (usually nothing)
        if state is None:
            state = state_from_bytes(result.weights)
        network = base.updated(state)  # the frozen stem is shared
        self._keys[network] = new_key
        result.network = network
        # Where the time between the job's end and here goes (benchmarks; wall clock, both processes).
        sent = result.seconds.pop("sent at", None)
        if sent is not None:
            result.seconds["to the app"] = max(received - sent, 0.0)
        result.seconds["rebuild"] = max(time.time() - received, 0.0)
        if cancelled is not None and cancelled():
            raise FineTuneCancelled("the fine-tune was cancelled")
        return result


# --- the child ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _child_environment(threads: int) -> Iterator[None]:
    """Thread-count variables for the child while it is spawned (it copies the environment then).

    They must be set before the child imports numpy and torch, which happens while it unpickles
    its target, before any of our code runs there.
    """
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
        os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def lower_priority(nice: int) -> bool:
    """Run this process below normal priority, on every platform; False where it was not possible.

    Unix: ``os.nice`` (absent on Windows). Windows: ``SetPriorityClass`` with the below-normal
    class through ``ctypes`` (the nearest match to a positive nice value).
    """
    if nice <= 0:
        return False
    if sys.platform == "win32":
        below_normal = 0x4000  # BELOW_NORMAL_PRIORITY_CLASS
        try:
            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
            return bool(kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), below_normal))
        except (OSError, AttributeError):
            return False
    if hasattr(os, "nice"):
        try:
            os.nice(nice)
            return True
        except OSError:
            return False
    return False


def _serve(conn: Connection, torch_threads: int, cancel: Any = None) -> None:
    import torch

    from game.learning.finetune import compute_stem_cache, run_finetune
    from game.learning.preview import prepare_features, reduces_ahead
    from game.learning.stem import (
        frozen_stem_names,
        head_parameter_names,
        prime_pre_activations,
        result_arrays_from,
    )
    from game.nets.weights import state_from_bytes

    torch.set_num_threads(torch_threads)

    def send(
        message: ProgressMessage | PreviewMessage | OkMessage | ErrorMessage, segments: Segments | None = None
    ) -> None:
        _put(conn, message, segments)

    first: tuple[str, Any] | None = None
    networks: OrderedDict[str, Any] = OrderedDict()
    images: np.ndarray | None = None
    is_train: np.ndarray | None = None
    stem: Any = None
    released: set[str] = set()  # the first network's parameters ``Network.release`` let go of
    kept: tuple[str, np.ndarray] | None = None  # the last result's network token and features
    sent: Segments | None = None  # the last result's segments (copies held until the parent maps them)
    _warm_up()  # before the first message: a child started early is warm when the scene opens
    while True:
        try:
            message = _get(conn)
        except (EOFError, OSError):  # the parent went away
            return
        if sent is not None:  # the parent read the last answer before sending this
            sent.release_copies()
            sent = None
        if isinstance(message, QuitMessage):
            return
        try:
            if isinstance(message, InitMessage):
                images, is_train, stem = message.images, message.is_train, message.stem
                images = same_strides(images, message.strides)
                first = (message.key, message.network)
                networks.clear()
                kept = None
                if not message.full_finetune and stem is None:
                    stem = compute_stem_cache(message.network, images, message.head_layers)
                released = set()
                if stem is not None:
                    stem.preconditioned_inputs(is_train)
                    # The start network's pre-activations: its first job re-infers by a low-rank update.
                    prime_pre_activations(message.network, len(images), stem)
                    if not message.full_finetune:
                        images = count_only(images)
                        # Nor does a head-only job read the frozen stem's parameters (their outputs
                        # stand in): their memory goes (AlexNet's convolutions and fc6: 160 MB);
                        # every network made from this one shares the empty tensors.
                        released = set(frozen_stem_names(message.network, stem, False))
                        message.network.release(released)
                _warm_up()
                send(OkMessage({"stem_seconds": float(stem.seconds) if stem is not None else 0.0}))
            elif isinstance(message, FeaturesMessage):
                if first is None or message.key != first[0]:
                    raise JobProcessError("features for a network the child was not given")
                kept = (message.key, message.features)
                projector = copy.copy(message.projector)
                projector.n_jobs = torch_threads
                _prepare_quietly(prepare_features, message.features, projector, True, message.basis)
                send(OkMessage(None))
            elif isinstance(message, HeldMessage):
                held = ([first[0]] if first is not None else []) + list(networks)
                nets = ([first[1]] if first is not None else []) + list(networks.values())
                grads = sum(
                    p.grad.numel() * p.grad.element_size()
                    for net in nets
                    for p in net.module.parameters()
                    if p.grad is not None
                )
                # Bytes of parameters outside the head that the networks hold (0 once released).
                head = set(head_parameter_names(nets[0].module, stem.start)) if nets and stem else set()
                stem_bytes = {
                    p.data_ptr(): p.numel() * p.element_size()
                    for net in nets
                    for n, p in net.module.named_parameters()
                    if n not in head and p.device.type != "meta"
                }
                answer = {
                    "networks": held,
                    "gradient_bytes": int(grads),
                    "stem_bytes": sum(stem_bytes.values()),
                }
                send(OkMessage(answer))
            elif isinstance(message, JobMessage):
                req, key, weights, new_key = message.request, message.key, message.weights, message.new_key
                number = message.number
                if first is None:
                    raise JobProcessError("job before init")
                for old in [k for k in networks if k not in message.keep and k != key]:
                    del networks[old]  # the parent sends their weights if a job needs them again
                base = first[1] if key == first[0] else networks.get(key)
                if base is None:
                    if weights is None:
                        raise JobProcessError(f"unknown network {key} and no weights sent")
                    base = first[1].clone()
                    # Not the released frozen stem's: the same values as the first network's.
                    state = {k: v for k, v in state_from_bytes(weights).items() if k not in released}
                    base.module.load_state_dict(state, strict=False)
                    del state
                    networks[key] = base
                assert images is not None  # set by the InitMessage, with ``first``
                if req.config.full_finetune and images.strides[0] == 0:
                    raise JobProcessError("a full fine-tune asked of a child set up for the head only")
                req.network, req.images, req.stem = base, images, stem
                if message.features_kept:
                    if kept is None or kept[0] != key:
                        raise JobProcessError(f"the features of {key} were not kept")
                    req.features = kept[1]
                if getattr(req.projector, "n_jobs", 1) != torch_threads:
                    # openTSNE's threads too: the frame loop keeps a core (same result: tested).
                    req.projector = copy.copy(req.projector)
                    req.projector.n_jobs = torch_threads

                def progress(fraction: float, text: str) -> None:
                    send(ProgressMessage(float(fraction), text))

                def preview(shown: Any) -> None:
                    send(PreviewMessage(shown))

                req.on_preview = preview if req.on_preview else None

                def stop(number: int = number) -> bool:
                    return cancel is not None and cancel.value == number

                segments = Segments(message.shared) if message.shared else None
                try:
                    if segments is not None and isinstance(req.features, np.ndarray):
                        # The result's features take as many bytes as the base's (float32).
                        segments.premake(req.features.shape[0] * req.features[0].size * 4)
                    with result_arrays_from(segments.allocate if segments is not None else _no_array):
                        result = run_finetune(req, progress=progress, cancelled=stop)
                    finished = time.time()
                    networks[new_key] = result.network
                    for old in [k for k in networks if k not in message.keep and k != new_key]:
                        del networks[old]
                    kept = (new_key, result.inference.features)
                    result.network = None  # type: ignore[assignment]
                    result.layout = _strip_layout(result.layout)
                    # The weights' bytes (fc7 + fc8: 64 MB) out of band, not copied into the pickle.
                    result.weights = cast(bytes, np.frombuffer(result.weights, dtype=np.uint8))
                    result.seconds["child after the job"] = time.time() - finished
                    result.seconds["sent at"] = time.time()
                    send(OkMessage(result), segments)
                except BaseException:
                    if segments is not None:
                        segments.discard()
                    raise
                if segments is not None:
                    segments.after_sending()
                    sent = segments
                # While the parent tweens: what the next job (on these features) measures first.
                # (Not beside the re-layout: tried, it doubled the re-layout's 1.5 s at 50k on two
                # cores and added 0.2 GB to the peak; issue 17, docs/benchmarks.md.)
                _prepare_quietly(
                    prepare_features,
                    kept[1],
                    req.projector,
                    reduces_ahead(len(kept[1]), req.config.preview_above),
                )
                # The base's features are not needed past the job: let their mapping go now, not
                # when the next message replaces ``req`` (shared pages count in this process's RSS).
                req.features = cast(np.ndarray, None)
            else:
                raise JobProcessError(f"unknown request {type(message).__name__}")
        except BaseException as exc:  # report, keep serving
            try:
                pickle.dumps(exc)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            send(ErrorMessage(exc))


def _no_array(_shape: tuple[int, ...]) -> None:
    return None  # a job without segments: ``np.empty``


def _prepare_quietly(prepare: Callable[..., None], *args: Any) -> None:
    """``preview.prepare_features`` in the child, its failure (say a MemoryError at 50k) ignored.

    What it remembers only saves the next job time (that job computes it again when absent). After
    a job's ``OkMessage`` the parent is not waiting: an ``ErrorMessage`` sent then would be read
    as the next request's answer and fail a job that did nothing wrong; before a
    ``FeaturesMessage``'s answer it would fail the whole process backend.
    """
    with contextlib.suppress(Exception):  # a courtesy; see above
        prepare(*args)


_WARM = False


def _warm_up() -> None:
    """Pay torch's and the layout's lazy imports once per child (at start, not in a job)."""
    global _WARM
    if _WARM:
        return
    from game.layout.projector import warm_up
    from game.learning.backend import warm_up_optimisers as _warm_up_optimisers

    _warm_up_optimisers()
    warm_up()
    _WARM = True


def _child_main(conn: Connection, cancel: Any, torch_threads: int, nice: int) -> None:
    """The child's entry point (spawned): lower its priority, then serve jobs until told to quit.

    Spawn unpickles this function by its module's real name, so the message classes are this
    module's on both sides (never ``__main__``'s).
    """
    lower_priority(nice)
    try:
        _serve(conn, torch_threads, cancel)
    finally:
        conn.close()
