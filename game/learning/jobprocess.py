"""Fine-tune jobs in one persistent child process, so the frame loop never shares the GIL with them.

Why a process: on a worker *thread* the job holds the GIL for most of its run (the re-layout's
numpy and openTSNE glue, torch's Python-level training loop, pickling and copies), and every
time the frame loop wants the GIL back it waits up to the interpreter's switch interval, or for
as long as a C call that keeps the GIL lasts. Frames then stall for tens of milliseconds. In a
child process the job only competes for a CPU core, and it runs at a lower priority (``nice``).

How: ``JobProcess`` starts ``python -m game.learning.jobprocess`` once (when the controller is
created) and talks to it over its stdin/stdout with pickled plain data (numpy arrays, tensors,
safetensors bytes, dataclasses of those). The child keeps what is expensive to send or rebuild:
the images, the frozen stem's outputs (``StemCache``) and the networks it trained, keyed by a
token the parent gives each network object; only a network the child has never seen (e.g. one
restored by undo) travels as safetensors bytes. Results come back without the network (the
parent rebuilds it from the job's changed weights, which it needs anyway for checkpoints).

The parent side is blocking and is meant to be called from the ``Worker`` thread: waiting on the
pipe releases the GIL. ``cancel`` (any thread, e.g. an undo on the frame loop) writes the running
job's number into a second pipe that the child polls between training steps and phases, so an
undo stops a job inside the child too instead of waiting for its answer. The child runs the same
``run_finetune`` with the same torch thread count, so results are bitwise identical to the thread
path.

This module must stay free of panda3d (the child imports it).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from game.core.worker import stop_at_exit
from game.learning.finetune import FineTuneCancelled, FineTuneRequest, FineTuneResult

Progress = Any  # Callable[[float, str], None]

_KEEP_NETWORKS = 4  # trained networks the child keeps besides the first (undo goes back a few)


class JobProcessError(RuntimeError):
    """The child process ended or answered something unexpected."""


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
        self._known: set[str] = set()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._init_args: tuple | None = None
        self._proc: subprocess.Popen | None = None
        self._cancel_fd: int | None = None  # write end of the child's cancel pipe
        self._job_numbers = itertools.count(1)
        self._current_job = 0
        self._start()
        stop_at_exit(self.kill)  # before the worker waiting on it is joined

    # --- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["OMP_NUM_THREADS"] = str(self.torch_threads)
        env["MKL_NUM_THREADS"] = str(self.torch_threads)
        self._close_cancel_pipe()
        read_end, self._cancel_fd = os.pipe()
        os.set_blocking(self._cancel_fd, False)
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "game.learning.jobprocess",
                    str(self.torch_threads),
                    str(self.nice),
                    str(read_end),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                pass_fds=(read_end,),
            )
        finally:
            os.close(read_end)
        self._known.clear()

    def _close_cancel_pipe(self) -> None:
        fd, self._cancel_fd = self._cancel_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def cancel(self) -> None:
        """Ask the child to stop the job it is running (a no-op when it already answered)."""
        fd, job = self._cancel_fd, self._current_job
        if fd is not None and job:
            with contextlib.suppress(OSError):  # full pipe or a child that is gone: nothing to stop
                os.write(fd, struct.pack("<I", job))

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to quit; kill it if it does not within ``timeout``."""
        proc, self._proc = self._proc, None
        self._close_cancel_pipe()
        if proc is None:
            return
        try:
            if proc.poll() is None:
                assert proc.stdin is not None
                pickle.dump(("quit",), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                proc.stdin.close()
            proc.wait(timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def kill(self) -> None:
        """End the child now, mid-job (the interpreter is exiting): a waiting ``run`` then fails."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def __del__(self) -> None:  # last resort: never leave an orphan behind
        self.kill()
        if getattr(self, "_cancel_fd", None) is not None:
            self._close_cancel_pipe()

    # --- talking -----------------------------------------------------------------------------

    def _send(self, message: tuple) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise JobProcessError(f"the fine-tune process is gone ({exc})") from None

    def _receive(self, progress: Progress | None = None) -> Any:
        """Read messages until an answer; progress messages go to ``progress`` on the way."""
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            try:
                message = pickle.load(self._proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                code = self._proc.poll()
                raise JobProcessError(f"the fine-tune process ended (exit code {code}): {exc!r}") from None
            kind = message[0]
            if kind == "progress":
                if progress is not None:
                    progress(message[1], message[2])
            elif kind == "ok":
                return message[1]
            elif kind == "error":
                raise message[1]
            else:
                raise JobProcessError(f"unexpected message from the fine-tune process: {kind!r}")

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
        self._init_args = (network, images, is_train, full, head_layers, stem)
        self._send(("init", key, network, images, images.strides, is_train, full, head_layers, stem))
        info = self._receive()
        self._known.add(key)
        return info

    def run(
        self, request: FineTuneRequest, progress: Progress | None = None, cancelled: Any = None
    ) -> FineTuneResult:
        """Run ``run_finetune(request)`` in the child; the result carries a rebuilt network."""
        from game.nets.weights import state_from_bytes, state_to_bytes

        with self._lock:
            if not self.alive:
                if self._init_args is None:
                    raise JobProcessError("the fine-tune process was never initialised")
                self._init_locked(*self._init_args)  # restarts it: a crash loses no later job
            # The number first, then the check: an undo sets its flag before ``cancel``, so one
            # of the two always sees the other (serialising an unseen network can take seconds).
            number = next(self._job_numbers)
            self._current_job = number
            try:
                if cancelled is not None and cancelled():
                    raise FineTuneCancelled("the fine-tune was cancelled")
                base = request.network
                key = self._key(base)
                weights = None if key in self._known else state_to_bytes(base.module)
                new_key = f"net{next(self._counter)}"
                plain = dataclasses.replace(
                    request, network=None, images=None, stem=None, layout=_strip_layout(request.layout)
                )
                self._send(("job", plain, key, weights, new_key, number))
                self._known.add(key)
                result: FineTuneResult = self._receive(progress)
            finally:
                self._current_job = 0
            self._known.add(new_key)
        network = base.updated(state_from_bytes(result.weights))  # the frozen stem is shared
        self._keys[network] = new_key
        result.network = network
        if cancelled is not None and cancelled():
            raise FineTuneCancelled("the fine-tune was cancelled")
        return result


# --- the child ---------------------------------------------------------------------------------


class _CancelPipe:
    """Child side of the cancel pipe: job numbers the parent asked to stop."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.asked: set[int] = set()
        if fd is not None:
            os.set_blocking(fd, False)  # polled between steps (select() cannot take fds >= 1024)

    def asked_to_stop(self, job: int) -> bool:
        while self.fd is not None:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            if not data:  # the parent closed its end
                self.fd = None
                break
            self.asked.update(n for (n,) in struct.iter_unpack("<I", data[: len(data) // 4 * 4]))
        return job in self.asked


def _serve(inp: BinaryIO, out: BinaryIO, torch_threads: int, cancel_fd: int | None = None) -> None:
    import torch

    from game.learning.finetune import compute_stem_cache, run_finetune
    from game.nets.weights import state_from_bytes

    torch.set_num_threads(torch_threads)

    def send(message: tuple) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    cancel = _CancelPipe(cancel_fd)
    first: tuple[str, Any] | None = None
    networks: OrderedDict[str, Any] = OrderedDict()
    images = is_train = stem = None
    while True:
        try:
            message = pickle.load(inp)
        except EOFError:  # the parent went away
            return
        kind = message[0]
        if kind == "quit":
            return
        try:
            if kind == "init":
                _, key, network, images, strides, is_train, full_finetune, head_layers, stem = message
                images = same_strides(images, strides)
                first = (key, network)
                networks.clear()
                if not full_finetune and stem is None:
                    stem = compute_stem_cache(network, images, head_layers)
                if stem is not None:
                    stem.preconditioned_inputs(is_train)
                _warm_up()
                send(("ok", {"stem_seconds": float(stem.seconds) if stem is not None else 0.0}))
            elif kind == "job":
                _, req, key, weights, new_key, number = message
                if first is None:
                    raise JobProcessError("job before init")
                base = first[1] if key == first[0] else networks.get(key)
                if base is None:
                    if weights is None:
                        raise JobProcessError(f"unknown network {key} and no weights sent")
                    base = first[1].clone()
                    base.module.load_state_dict(state_from_bytes(weights), strict=False)
                    networks[key] = base
                req.network, req.images, req.stem = base, images, stem
                if getattr(req.projector, "n_jobs", 1) != torch_threads:
                    # openTSNE's threads too: the frame loop keeps a core (same result: tested).
                    req.projector = copy.copy(req.projector)
                    req.projector.n_jobs = torch_threads

                def progress(fraction: float, text: str) -> None:
                    send(("progress", float(fraction), text))

                stop = functools.partial(cancel.asked_to_stop, number)
                result = run_finetune(req, progress=progress, cancelled=stop)
                networks[new_key] = result.network
                while len(networks) > _KEEP_NETWORKS:
                    networks.popitem(last=False)
                result.network = None  # type: ignore[assignment]
                result.layout = _strip_layout(result.layout)
                send(("ok", result))
            else:
                raise JobProcessError(f"unknown request {kind!r}")
        except BaseException as exc:  # report, keep serving
            try:
                pickle.dumps(exc)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            send(("error", exc))


def _warm_up() -> None:
    from game.layout.projector import warm_up
    from game.learning.controller import _warm_up_optimisers

    _warm_up_optimisers()
    warm_up()


def main(argv: list[str]) -> int:
    torch_threads = int(argv[0]) if argv else 1
    nice = int(argv[1]) if len(argv) > 1 else 0
    cancel_fd = int(argv[2]) if len(argv) > 2 else None
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    # Answers go to a private copy of stdout; anything else printed lands on stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, out, torch_threads, cancel_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
