"""Keeping a replay's model store on the model version the replay shows.

A replay posts the recorded ``ModelUpdated`` events, so labels, scores and positions follow the
session; nothing re-runs the fine-tunes, so the scene's model store would keep the starting
network. Heat maps, what-ifs and guidance in a free-camera replay window read
``models.network()``: without this they would explain the starting network while the cards show
a later one. The follower rebuilds the shown version from the session's stored weights (laid
over the starting network, as ``restore`` does) and makes it the store's live network.

Reading the weights (hundreds of MB and their hash for an AlexNet-sized network) and building the
network from them run on a background thread, through that thread's own SQLite connection
(``SessionReader.model_weights``), so seeking through a replay never stalls its frame loop.
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
        if self._pool is None:
            try:
                network = self._fetch(wanted)
            except SessionError as exc:
                self._not_in_session(wanted, exc)
                return
            self.models.show(wanted, network)
            return
        self._building = (wanted, self._pool.submit(self._fetch, wanted))

    def _not_in_session(self, version: int, exc: SessionError) -> None:
        # An older file, or one damaged there: say once that explanations show another version,
        # and keep playing.
        self._missing.add(version)
        self.workspace.post(
            ev.Message(
                f"model version {version} is not in the session ({exc}); explanations use v{self.models.version}"
            )
        )

    def _fetch(self, version: int) -> Network:
        return self._build(self.reader.model_weights(version))

    def _build(self, data: bytes) -> Network:
        return self._base.updated(state_from_bytes(data))

    def _collect(self) -> None:
        if self._building is None or not self._building[1].done():
            return
        version, future = self._building
        self._building = None
        try:
            network = future.result()
        except SessionError as exc:
            self._not_in_session(version, exc)
            return
        except Exception as exc:  # weights that do not fit: same as a missing version
            self._missing.add(version)
            self.workspace.post(ev.Message(f"model version {version} could not be rebuilt: {exc}"))
            return
        self.models.show(version, network)

    def wait(self) -> None:
        """Finish a build in flight and apply it (tests; closing)."""
        if self._building is not None:
            self._building[1].exception()  # waits; a failure is reported by _collect
            self._collect()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
