"""The model store: every kept model version's network and layout, in one engine-free object.

Why: the workspace's arrays change only through events, and the network and layout must too.
Before the store, the fine-tune controller wrote each new network into the shared ``LoadedScene``
and explanations, guidance and export read it back from there (two sources of truth, and a
restored session had none). Now ``LoadedScene`` is the start-up bundle and never changes; the
store holds the versions; ``ModelUpdated.version`` names the one the world shows, and consumers
ask ``store.network(version)`` / ``store.layout(version)`` (default: the live one).

What is kept: the undo stack's checkpoints (labels, top-5, features, layout and the trainable
part's safetensors bytes, see ``history``), the base network (version 0's, whole) and the live
network. An older version's network is rebuilt on request from the base and its bytes (a head-
only version shares the frozen stem, so that is cheap; do it on a worker). Nothing else: results
of earlier jobs are not kept.

Memory at scale: each checkpoint's features are the size of the scene's (0.8 GB at 50,000 cards
x 4,096), and the undo stack has no depth limit, so at scale every fine-tune added that much to the
app. Only the live and the previous checkpoints are read (the next job's starting features, the
next undo); the features of older ones above ``SPILL_AT_BYTES`` are written to a temporary file on
a background thread and kept memory-mapped (``_spill``), and read back into memory when an undo
brings them within the newest two. Their weights' bytes (64 MB a version for AlexNet's head,
``SPILL_WEIGHTS_AT_BYTES``) go to a file beside them and are read from it when asked for.

Threads: ``push``/``pop`` happen on the owner's thread (the frame loop); every reader may be on
another thread (a worker asking for the live network, the session recorder's writer thread asking
for a version's bytes); one lock guards the stack. The base version's bytes (the whole network,
230 MB for AlexNet) are serialised by whichever background thread asks, each time, and not kept.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from game.learning.history import Checkpoint, ModelHistory

if TYPE_CHECKING:
    from game.core.workspace import Workspace
    from game.layout.projector import LayoutState
    from game.nets.network import Network


# Checkpoint features of at least this many bytes leave memory once two newer versions exist:
# the embedded scenes' (under 1 MB) never do.
SPILL_AT_BYTES = 64 * 1024 * 1024
KEEP_IN_MEMORY = 2  # the live checkpoint and the previous one (what undo shows next)
# An old checkpoint's weights' bytes of at least this size leave memory with its features.
SPILL_WEIGHTS_AT_BYTES = 16 * 1024 * 1024


class ModelStore:
    """Versioned networks and layouts; see the module docstring."""

    def __init__(self, network: Network, layout: LayoutState, version: int = 0) -> None:
        self._lock = threading.RLock()
        self._spiller: ThreadPoolExecutor | None = None
        self._spill_dir: Path | None = None
        self._history = ModelHistory()
        self._base_network = network
        self._base_version = int(version)
        self._live_network = network
        self._live_version = int(version)
        self._layout0 = layout
        # Checkpoints (by version) whose weights' bytes were written out (``_spill``): their file.
        self._weights_files: dict[int, Path] = {}

    @classmethod
    def start(cls, network: Network, layout: LayoutState, workspace: Workspace) -> ModelStore:
        """A store whose base version is what ``workspace`` shows now (its labels, top-5, features)."""
        store = cls(network, layout, int(workspace.model_version))
        store.push(
            Checkpoint(
                int(workspace.model_version),
                b"",  # the whole network's bytes: made lazily, off the frame loop (``weights``)
                workspace.labels.copy(),
                workspace.top5_classes.copy(),
                workspace.top5_scores.copy(),
                # Not a copy: the workspace's features are replaced by events, never written in
                # place (a copy was 0.8 GB more in the app at 50,000 cards x 4,096).
                workspace.features,
                layout,
            ),
            network,
        )
        return store

    # --- reading (any thread) -----------------------------------------------------------------

    @property
    def version(self) -> int:
        """The live version (the one the last ``ModelUpdated`` named)."""
        return self._live_version

    @property
    def base_version(self) -> int:
        return self._base_version

    @property
    def started(self) -> bool:
        """Whether the base checkpoint is in (``start`` or a first ``push``)."""
        return len(self._history) > 0

    def network(self, version: int | None = None) -> Network:
        """The network of ``version`` (default: live). An older kept version is rebuilt from its
        bytes over the base network: call that from a worker, not the frame loop."""
        with self._lock:
            if version is None or version == self._live_version:
                return self._live_network
            if version == self._base_version:
                return self._base_network
            cp = self._history.find(version)
        from game.nets.weights import state_from_bytes

        return self._base_network.updated(state_from_bytes(self._bytes_of(cp)))

    def _bytes_of(self, cp: Checkpoint) -> bytes:
        """``cp``'s weights' bytes, read back from their file when they were spilled."""
        with self._lock:  # both read under the lock: ``_spill_weights`` empties one, fills the other
            data = cp.weights
            path = None if data else self._weights_files.get(cp.version)
        return data if path is None else path.read_bytes()  # the file outside it: 64 MB

    def layout(self, version: int | None = None) -> LayoutState:
        """The layout of ``version`` (default: live)."""
        with self._lock:
            if not self.started:
                return self._layout0
            return self.checkpoint(version).layout

    def checkpoint(self, version: int | None = None) -> Checkpoint:
        with self._lock:
            if version is None:
                return self._history.current
            return self._history.find(version)

    @property
    def current(self) -> Checkpoint:
        return self.checkpoint()

    @property
    def previous(self) -> Checkpoint | None:
        with self._lock:
            return self._history.previous

    @property
    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            return self._history.checkpoints

    @property
    def versions(self) -> list[int]:
        with self._lock:
            return self._history.versions

    def next_version(self) -> int:
        with self._lock:
            return self._history.next_version()

    def weights(self, version: int | None = None) -> bytes:
        """Safetensors bytes of ``version``'s trainable part; the base version's are the whole
        network, serialised here at each call (a background thread's work: the session
        recorder's writer, once per session) and not kept: the same bytes every time, and keeping
        them held the whole network (230 MB for AlexNet) in the app for good (issue 17)."""
        with self._lock:
            cp = self.checkpoint(version)
            stored = cp.weights or cp.version != self._base_version or cp.version in self._weights_files
            network = self._base_network
        if stored:
            return self._bytes_of(cp)  # outside the lock: a spilled version's file is read
        from game.nets.weights import state_to_bytes

        return state_to_bytes(network.module)  # outside the lock: seconds for a big network

    def weights_source(self, version: int) -> Callable[[], bytes]:
        """A function that returns ``version``'s bytes later on another thread, even if the
        version is undone in between (it holds the checkpoint, not the number)."""
        with self._lock:  # read together: ``_spill_weights`` may empty ``cp.weights`` on its thread
            cp = self.checkpoint(version)
            data = cp.weights
            stored = bool(data) or cp.version != self._base_version or cp.version in self._weights_files
        if data:
            return lambda: data
        if stored:
            return lambda: self._bytes_of(cp)
        return lambda: self.weights(cp.version)

    def full_state(self, version: int | None = None) -> dict[str, Any]:
        """The whole state dict of ``version`` (tensors of the frozen part are the base's)."""
        return self.network(version).module.state_dict()

    # --- changing (the owner's thread) ----------------------------------------------------------

    def push(self, checkpoint: Checkpoint, network: Network) -> Checkpoint:
        """A new live version (a fine-tune's result): its checkpoint and network."""
        with self._lock:
            self._history.push(checkpoint)
            self._live_network = network
            self._live_version = checkpoint.version
            for cp in self._older_than_kept():
                if _spillable(cp.features) or len(cp.weights) >= SPILL_WEIGHTS_AT_BYTES:
                    self._spill_later(cp)
        return checkpoint

    # --- features of old checkpoints out of memory ----------------------------------------------

    def _older_than_kept(self) -> list[Checkpoint]:
        return self._history.checkpoints[:-KEEP_IN_MEMORY]

    def _spill_later(self, cp: Checkpoint) -> None:
        if self._spiller is None:
            self._spiller = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-spill")
            weakref.finalize(self, self._spiller.shutdown, wait=False)
        self._spiller.submit(self._spill, cp)

    def _spill_path(self, cp: Checkpoint) -> Path:
        with self._lock:
            if self._spill_dir is None:
                self._spill_dir = Path(tempfile.mkdtemp(prefix="latent-reach-undo-"))
                # Windows cannot delete a file still mapped: what is left there goes with the temp folder.
                weakref.finalize(self, shutil.rmtree, self._spill_dir, ignore_errors=True)
            return self._spill_dir / f"features-v{cp.version}-{id(cp):x}.npy"

    def _spill(self, cp: Checkpoint) -> None:
        """Write ``cp``'s features to a file and keep them memory-mapped (the background thread;
        ``pad`` calls it directly). An undo that brought ``cp`` back within the newest two first
        keeps its features in memory."""
        with self._lock:
            features = cp.features
            if not self._is_old(cp):
                return
        path = self._spill_path(cp)
        self._spill_weights(cp, path.with_name(path.stem.replace("features", "weights") + ".safetensors"))
        if not _spillable(features):
            return
        temporary = path.with_suffix(".tmp.npy")
        np.save(temporary, features)
        temporary.replace(path)
        mapped = np.load(path, mmap_mode="r")
        with self._lock:
            if cp.features is features and self._is_old(cp):
                cp.features = mapped
                return
        del mapped
        path.unlink(missing_ok=True)

    def replace_features(self, old: np.ndarray, new: np.ndarray) -> None:
        """Checkpoints that hold the array ``old`` hold ``new`` (the same values) instead: the
        features the job process maps from shared memory (``FineTuneController``)."""
        with self._lock:
            for cp in self._history.checkpoints:
                if cp.features is old:
                    cp.features = new

    def _spill_weights(self, cp: Checkpoint, path: Path) -> None:
        """Write an old checkpoint's weights' bytes to ``path`` and let go of them in memory (they
        are read back on request: a rebuild after an undo, the session's writer)."""
        with self._lock:
            data = cp.weights
            if len(data) < SPILL_WEIGHTS_AT_BYTES or not self._is_old(cp):
                return
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
        with self._lock:
            if cp.weights is data and self._is_old(cp):
                self._weights_files[cp.version] = path
                cp.weights = b""
                return
        path.unlink(missing_ok=True)

    def _is_old(self, cp: Checkpoint) -> bool:
        return any(old is cp for old in self._older_than_kept())

    def wait_for_spills(self) -> None:
        """Let every scheduled write finish (tests, closing)."""
        if self._spiller is not None:
            self._spiller.submit(lambda: None).result()

    def _load_recent(self) -> None:
        """Features of the newest two back in memory (after an undo)."""
        for cp in self._history.checkpoints[-KEEP_IN_MEMORY:]:
            if isinstance(cp.features, np.memmap):
                cp.features = np.array(cp.features)

    def pop(self, network: Network | None = None) -> Checkpoint:
        """Undo: drop the live version; the previous one becomes live. ``network`` is its network
        if the caller rebuilt it already (else it is rebuilt now)."""
        with self._lock:
            dropped = self._history.pop()
            self._load_recent()
            cp = self._history.current
            if network is None:  # before the live version changes (it would answer the dropped one's)
                network = self.network(cp.version)
            self._live_version = cp.version
            self._live_network = network
        return dropped

    def show(self, version: int, network: Network) -> None:
        """Make ``network`` the one read as live without a checkpoint: a replay shows recorded
        versions in any order (seeking back included), and its explanations must read the network
        of the moment shown, while the history stays the session's starting point."""
        with self._lock:
            self._live_network = network
            self._live_version = int(version)

    def pad(self, workspace: Workspace) -> None:
        """Cards joined the workspace: every kept checkpoint gets their rows (see ``pad_checkpoint``)."""
        with self._lock:
            for cp in self._history.checkpoints:
                spilled = isinstance(cp.features, np.memmap)
                pad_checkpoint(cp, workspace)
                if spilled:  # one at a time, so memory stays bounded at scale
                    self._spill(cp)


def pad_checkpoint(cp: Checkpoint, workspace: Workspace) -> None:
    """Give ``cp`` rows for cards the workspace gained after it was made (their current values).

    A kept what-if card has no history: every version shows it with the label, scores, features
    and position it was added with.
    """
    import dataclasses

    k = workspace.n_cards - len(cp.labels)
    if k <= 0:
        return
    cp.labels = np.concatenate([cp.labels, workspace.labels[-k:]])
    cp.top5_classes = np.concatenate([cp.top5_classes, workspace.top5_classes[-k:]])
    cp.top5_scores = np.concatenate([cp.top5_scores, workspace.top5_scores[-k:]])
    extra = workspace.features[-k:]
    if extra.shape[1] != cp.features.shape[1]:  # the workspace shows another layer
        extra = np.repeat(cp.features.mean(0, keepdims=True), k, axis=0)
    cp.features = np.concatenate([cp.features, extra.astype(cp.features.dtype)])
    layout = cp.layout
    positions = np.asarray(workspace.positions[-k:], dtype=np.float32)
    cp.layout = dataclasses.replace(
        layout,
        embedding=np.concatenate([layout.embedding, layout.to_raw(positions)]),
        positions=np.concatenate([layout.positions, positions]).astype(np.float32),
        tsne=None,
        neighbours=None,  # recomputed from the padded features at the next local re-layout
        neighbour_gaps=None,
        moved=None,
    )


def _spillable(features: np.ndarray) -> bool:
    return not isinstance(features, np.memmap) and features.nbytes >= SPILL_AT_BYTES
