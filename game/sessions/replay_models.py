"""Keeping a replay's model store on the model version the replay shows.

A replay posts the recorded ``ModelUpdated`` events, so labels, scores and positions follow the
session; nothing re-runs the fine-tunes, so the scene's model store would keep the starting
network. Heat maps, what-ifs and guidance in a free-camera replay window read
``models.network()``: without this they would explain the starting network while the cards show
a later one. The follower rebuilds the shown version from the session's stored weights (laid
over the starting network, as ``restore`` does) and makes it the store's live network.

Reading the weights is a SQLite read on the frame loop's thread (the reader's connection is that
thread's); building the network from them runs on a background thread, because it takes seconds
for an AlexNet-sized network and the replay must keep playing meanwhile.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from game.core import events as ev
from game.core.workspace import Workspace
from game.learning.store import ModelStore
from game.nets.network import Network
from game.nets.weights import state_from_bytes
from game.sessions.paths import SessionError
from game.sessions.reader import SessionReader


class ReplayModelFollower:
    """A frame hook: ``update(now)`` brings ``models`` to ``workspace.model_version``.

    ``background=False`` builds on the calling thread (tests, headless exports).
    """

    def __init__(
        self, reader: SessionReader, models: ModelStore, workspace: Workspace, background: bool = True
    ) -> None:
        self.reader = reader
        self.models = models
        self.workspace = workspace
        self._base = models.network(models.base_version)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="replay-model") if background else None
        self._building: tuple[int, Future[Network]] | None = None
        self._missing: set[int] = set()

    def update(self, now: float = 0.0) -> None:
        del now
        self._collect()
        wanted = int(self.workspace.model_version)
        if self._building is not None or wanted == self.models.version or wanted in self._missing:
            return
        if wanted == self.models.base_version:
            self.models.show(wanted, self._base)
            return
        try:
            data = self.reader.model_weights(wanted)
        except SessionError as exc:
            # An older file, or one damaged there: say once that explanations show another
            # version, and keep playing.
            self._missing.add(wanted)
            self.workspace.post(
                ev.Message(
                    f"model version {wanted} is not in the session ({exc}); explanations use v{self.models.version}"
                )
            )
            return
        if self._pool is None:
            self.models.show(wanted, self._build(data))
            return
        self._building = (wanted, self._pool.submit(self._build, data))

    def _build(self, data: bytes) -> Network:
        return self._base.updated(state_from_bytes(data))

    def _collect(self) -> None:
        if self._building is None or not self._building[1].done():
            return
        version, future = self._building
        self._building = None
        try:
            network = future.result()
        except Exception as exc:  # weights that do not fit: same as a missing version
            self._missing.add(version)
            self.workspace.post(ev.Message(f"model version {version} could not be rebuilt: {exc}"))
            return
        self.models.show(version, network)

    def wait(self) -> None:
        """Finish a build in flight and apply it (tests; closing)."""
        if self._building is not None:
            self._building[1].result()
            self._collect()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
