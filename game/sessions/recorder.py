"""Recording a session as it happens: every event, head and hand poses, every model version.

The recorder is a workspace listener (``workspace.subscribe(recorder.on_event)``) plus one call
the app makes itself: ``record_pose`` once per frame. Model versions come from the model store
(``follow_models``): when a ``ModelUpdated`` names a version not stored yet, the writer thread
asks the store for that version's trainable part and stores it (the whole network once, for the
base version; per fine-tune only what the job could change, e.g. the head). ``record_model``
stores given bytes directly. Nothing on the frame loop touches the disk: ``on_event`` puts the event on
a queue, ``record_pose`` writes one row into a preallocated numpy buffer, and a single writer
thread owns the SQLite connection, turning the queue into rows and committing each batch at once.

Arrays that can be recomputed from stored weights are not stored twice: a ``ModelUpdated`` or
``LayerChanged`` of a model version whose weights the file holds is written without its per-card
features (``features: null``; replay recomputes them on demand, see ``sessions.features``), so a
fine-tune grows the file by its trainable part plus the small per-card arrays (labels, top-5,
positions).
Pose rows are handed to the writer every ``flush_interval`` seconds (0.5 s by default), so a
killed process loses at most that much pose data and no event the writer had committed, usually
within a millisecond or two of the frame that applied it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from game.core import events as ev
from game.sessions import schema
from game.sessions.paths import SessionError, new_session_path

PoseLike = Sequence[float] | tuple[Sequence[float], Sequence[float]] | np.ndarray | None

# Initial per-card arrays larger than this (AlexNet fc7 features of a big folder) are left out of
# the file; replay recomputes them from the version-0 weights.
MAX_INITIAL_FEATURES_BYTES = 64 * 1024 * 1024

_EVENT, _POSES, _MODEL, _META, _FLUSH, _CLOSE = range(6)
CHECKPOINT_SECONDS = 3.0  # the WAL is folded into the main file at least this often


def dataset_fingerprint(workspace: Any) -> str:
    """A hash of the cards' pixels, original labels and class names (not their file paths).

    Replay checks it before it trusts the recorded card indices to mean the same images.
    """
    h = hashlib.sha256()
    images = np.ascontiguousarray(workspace.images)
    h.update(f"{images.dtype}{images.shape}".encode())
    h.update(images.data.cast("B"))
    h.update(np.ascontiguousarray(workspace.original_labels, dtype=np.int64).tobytes())
    h.update(json.dumps(list(workspace.class_names)).encode())
    return h.hexdigest()


def layout_arrays(layout: Any) -> dict[str, np.ndarray]:
    """A ``LayoutState``'s fitted numbers, stored so verify can warm-start exactly as live did
    (the positions are the starting workspace's, stored with it), with the PCA a large scene's
    jobs reduce in (``state_io``: a replay that refitted it would not always get the same rows)."""
    from game.layout.state_io import layout_to_arrays

    return layout_to_arrays(layout, prefix="layout_", positions=False, basis=True)


def _scene_texts(scene: Any) -> dict[str, str]:
    """The scene as the TOML the person wrote and as the resolved dict (defaults filled in)."""
    if scene is None:
        return {}
    out = {"scene_json": json.dumps(scene.to_dict()), "scene_source": scene.source or ""}
    try:
        out["scene_toml"] = Path(scene.source).read_text(encoding="utf-8") if scene.source else ""
    except OSError:
        out["scene_toml"] = ""
    out["scene_name"] = scene.scene.name
    return out


class SessionRecorder:
    """Writes one session file; see the module docstring for the threading model.

    ``record_pose`` must be called from one thread (the frame loop); ``on_event``,
    ``record_model`` and ``flush`` are safe from any thread. Recording never raises into the
    game after start-up: a write error (disk full) is reported once on stderr, kept in
    ``self.error``, and later data is dropped.
    """

    def __init__(
        self,
        path: str | Path,
        scene: Any = None,
        workspace: Any = None,
        *,
        meta: dict[str, Any] | None = None,
        extra_arrays: dict[str, np.ndarray] | None = None,
        flush_interval: float = 0.5,
        pose_capacity: int = 1024,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise SessionError(f"session file already exists, not overwriting it: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = float(flush_interval)
        self._clock = clock
        self._t0 = clock()
        self.error: BaseException | None = None
        self.dropped_events = 0
        self._workspace = None
        self._store: Any = None  # a ModelStore whose versions are recorded as they appear
        self._recorded_versions: set[int] = set()
        try:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level="DEFERRED")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
            conn.executescript(schema.DDL)
            conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise SessionError(f"cannot create session file {self.path}: {exc}") from None
        self._conn = conn
        from game import __version__

        info: dict[str, Any] = {
            "schema_version": str(schema.SCHEMA_VERSION),
            "app_version": __version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "started_epoch": repr(time.time()),
            "pose_format": schema.POSE_FORMAT,
            "flush_interval": repr(self.flush_interval),
        }
        info.update(_scene_texts(scene))
        if workspace is not None:
            info.update(self._initial_state(workspace))
        if extra_arrays:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO initial_state(name, npy, digest) VALUES (?, ?, ?)",
                    [_blob_row(k, schema.array_to_npy(np.asarray(v))) for k, v in extra_arrays.items()],
                )
        info.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()})
        with conn:
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", info.items())
            self._seal_start(conn, info)

        self._pose_times = np.empty(pose_capacity, dtype=np.float64)
        self._pose_values = np.full((pose_capacity, schema.POSE_COLUMNS), np.nan, dtype=np.float32)
        self._n_poses = 0
        self._poses_handed_at = 0.0
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name="session-recorder", daemon=True)
        self._thread.start()
        if workspace is not None:
            # Hashing every pixel takes a moment on big datasets; the writer does it.
            self._queue.put((_META, "dataset_fingerprint", lambda: dataset_fingerprint(workspace)))

    # --- construction helpers ------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        scene: Any,
        workspace: Any,
        folder: str | Path | None = None,
        weights: bytes | None = None,
        layout: Any = None,
        label: str = "",
        store: Any = None,
        **kwargs: Any,
    ) -> SessionRecorder:
        """A new session file in the sessions folder, subscribed to ``workspace``.

        ``weights`` (safetensors bytes of the network as the session starts) or ``store`` (a
        ``ModelStore``: its live version now and every later one, see ``follow_models``), and
        ``layout`` (the starting ``LayoutState``) make the session self-contained for
        ``replay --verify``.
        """
        name = label or (scene.scene.name if scene is not None else "session")
        if layout is not None:
            kwargs.setdefault("extra_arrays", {}).update(layout_arrays(layout))
        recorder = cls(new_session_path(folder, name), scene, workspace, **kwargs)
        if weights is not None:
            recorder.record_model(int(workspace.model_version), weights, t=0.0)
        if store is not None:
            recorder.follow_models(store, t=0.0)
        recorder.attach(workspace)
        return recorder

    def follow_models(self, store: Any, t: float | None = None) -> None:
        """Store the live version of ``store`` (a ``ModelStore``) now, and each version a later
        ``ModelUpdated`` names, once. The bytes are fetched from the store on the writer thread:
        the frame loop that applies a fine-tune never serialises weights."""
        self._store = store
        self._queue_version(store.version, self.now() if t is None else float(t))

    def attach(self, workspace: Any) -> None:
        """Listen to ``workspace`` (same as ``workspace.subscribe(recorder.on_event)``)."""
        workspace.subscribe(self.on_event)
        self._workspace = workspace

    def _initial_state(self, ws: Any) -> dict[str, str]:
        arrays = {
            "labels": ws.labels,
            "original_labels": ws.original_labels,
            "top5_classes": ws.top5_classes,
            "top5_scores": ws.top5_scores,
            "positions": ws.positions,
            "is_train": ws.is_train,
            "card_state": ws.card_state,
        }
        omitted = np.asarray(ws.features).nbytes > MAX_INITIAL_FEATURES_BYTES
        if not omitted:
            arrays["features"] = ws.features
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO initial_state(name, npy, digest) VALUES (?, ?, ?)",
                [_blob_row(k, schema.array_to_npy(np.asarray(v))) for k, v in arrays.items()],
            )
        return {
            "n_cards": str(int(ws.n_cards)),
            "image_shape": json.dumps(list(ws.images.shape[1:])),
            "class_names": json.dumps(list(ws.class_names)),
            "sources": json.dumps(list(ws.sources)),
            "model_version": str(int(ws.model_version)),
            "feature_layer": ws.feature_layer,
            "selected": str(int(ws.selected)),
            "features_omitted": "1" if omitted else "0",
        }

    # --- the hot path --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def now(self) -> float:
        """Seconds since the session started, on the clock events and poses share."""
        return self._clock() - self._t0

    def on_event(self, event: ev.Event, workspace: Any = None) -> None:
        """Workspace listener: queue the event with the current session time (about a microsecond)."""
        if self._closed:
            return
        t = self.now()
        source = None
        if self._store is not None and isinstance(event, ev.ModelUpdated):
            version = int(event.version)
            source = self._version_source(version)
        self._queue.put((_EVENT, t, event, self._features_recomputable(event, workspace)))
        if source is not None:
            self._queue.put((_MODEL, t, version, source))

    def _features_recomputable(self, event: ev.Event, workspace: Any) -> bool:
        """Whether ``event`` carries per-card features that the file's weights can give again
        (its model version's weights are stored, or queued to be): those are not written."""
        if isinstance(event, ev.ModelUpdated):
            version = int(event.version)
        elif isinstance(event, ev.LayerChanged):
            ws = workspace if workspace is not None else self._workspace
            if ws is None:
                return False
            version = int(ws.model_version)  # listeners run after the event is applied
        else:
            return False
        return event.features is not None and version in self._recorded_versions

    def _version_source(self, version: int) -> Callable[[], bytes] | None:
        """The store's bytes of ``version`` if not recorded yet (marked recorded), else None."""
        if version in self._recorded_versions or self._closed:
            return None
        try:
            source: Callable[[], bytes] = self._store.weights_source(version)
        except KeyError:  # not a version of this store (another model's event)
            return None
        self._recorded_versions.add(version)
        return source

    def _queue_version(self, version: int, t: float) -> None:
        source = self._version_source(version)
        if source is not None:
            self._queue.put((_MODEL, t, version, source))

    def record_pose(
        self, t: float | None, head: PoseLike, left: PoseLike = None, right: PoseLike = None
    ) -> None:
        """Record one frame's poses; each is ``(x, y, z, qw, qx, qy, qz)``, ``(pos, quat)`` or None.

        ``t`` is session time (``None``: now). Quaternions are w-first like Panda3D's ``Quat``.
        """
        if self._closed:
            return
        if t is None:
            t = self._clock() - self._t0
        i = self._n_poses
        if i == len(self._pose_times):
            self._hand_off_poses()
            i = 0
        self._pose_times[i] = t
        row = self._pose_values[i]
        _put_pose(row, 0, head)
        _put_pose(row, 7, left)
        _put_pose(row, 14, right)
        self._n_poses = i + 1
        if t - self._poses_handed_at >= self.flush_interval:
            self._hand_off_poses()

    def _hand_off_poses(self) -> None:
        n = self._n_poses
        if n:
            self._queue.put((_POSES, self._pose_times[:n].copy(), self._pose_values[:n].copy()))
            self._poses_handed_at = float(self._pose_times[n - 1])
            self._n_poses = 0

    def record_model(self, version: int, weights: bytes | Any, t: float | None = None) -> None:
        """Store the weights of model ``version`` (safetensors bytes, or a torch module).

        Identical weights are stored once (by SHA-256). Safe from the worker thread; the hashing
        and writing happen on the recorder's own thread.
        """
        if self._closed:
            return
        self._recorded_versions.add(int(version))
        if not isinstance(weights, (bytes, bytearray, memoryview)):
            from game.nets.weights import state_to_bytes

            weights = state_to_bytes(getattr(weights, "module", weights))
        self._queue.put((_MODEL, self.now() if t is None else float(t), int(version), bytes(weights)))

    def set_meta(self, key: str, value: Any) -> None:
        """Add a note to the file's meta table (e.g. what produced the session)."""
        text = value if isinstance(value, str) else json.dumps(value)
        self._queue.put((_META, key, lambda: text))

    # --- flushing and closing ------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Hand pending poses over and wait until everything queued so far is committed."""
        if self._closed:
            return True
        self._hand_off_poses()
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        return done.wait(timeout)

    def close(self) -> Path:
        """Commit everything, fold the WAL into the file and close it (idempotent)."""
        if self._closed:
            return self.path
        if self._workspace is not None:
            with contextlib.suppress(ValueError):
                self._workspace.unsubscribe(self.on_event)
            self._workspace = None
        self._hand_off_poses()
        duration = self.now()
        self._queue.put((_META, "duration", lambda: repr(duration)))
        self._closed = True
        self._queue.put((_CLOSE,))
        self._thread.join()
        return self.path

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread ---------------------------------------------------------------------

    def _writer(self) -> None:
        conn = self._conn
        running = True
        while running:
            batch = [self._queue.get()]
            while len(batch) < 512:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            waiters = []
            for item in batch:
                tag = item[0]
                if tag == _FLUSH:
                    waiters.append(item[1])
                    continue
                if tag == _CLOSE:
                    running = False
                    continue
                if self.error is not None:
                    continue
                try:
                    self._write(conn, item)
                except (sqlite3.Error, OSError, MemoryError) as exc:
                    self._fail(exc)
                except (TypeError, ValueError) as exc:  # an event we cannot store: skip it
                    self.dropped_events += 1
                    if self.dropped_events <= 3:
                        print(f"latent-reach: recorder skipped an event: {exc}", file=sys.stderr)
            if self.error is None:
                try:
                    if not running:
                        self._write_end(conn)
                    conn.commit()
                    self._maybe_checkpoint(conn)
                except sqlite3.Error as exc:
                    self._fail(exc)
            for w in waiters:
                w.set()
        try:
            if self.error is None:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                # A finished session is only read from now on. Left in WAL mode, every read-only
                # open (the start menu, replay, verify) would make a -wal and a -shm file beside
                # it that no read-only connection may delete; the rollback journal needs neither.
                conn.execute("PRAGMA journal_mode=DELETE")
            conn.close()
        except sqlite3.Error as exc:
            self._fail(exc)

    def _seal_start(self, conn: sqlite3.Connection, info: dict[str, str]) -> None:
        """Write ``meta.integrity`` over the first meta keys and initial arrays; seed the chains."""
        keys = sorted(info)
        arrays = dict(conn.execute("SELECT name, digest FROM initial_state").fetchall())
        seal = schema.start_digest(info, keys, arrays)
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('integrity', ?)",
            (json.dumps({"keys": keys, "digest": seal}),),
        )
        self._chains = {"events": seal, "poses": seal, "models": seal}
        self._rows = {"events": 0, "poses": 0, "models": 0}
        self._last_seq = 0
        self._last_checkpoint = time.monotonic()

    def _write_end(self, conn: sqlite3.Connection) -> None:
        """The clean-close marker: where each chain ends, the row counts, a digest of the meta."""
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        end = {
            "last_seq": self._last_seq,
            "t": float(meta.get("duration", "0") or 0.0),
            "chains": self._chains,
            "rows": self._rows,
            "meta": schema.meta_digest(meta),
        }
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('end', ?)", (json.dumps(end),))

    def _maybe_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Fold the WAL into the main file every few seconds, so a copied ``.sqlite`` alone holds
        all but the last seconds of a session (PASSIVE: never waits for a reader)."""
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_SECONDS:
            self._last_checkpoint = now
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            print(f"latent-reach: session recording stopped ({self.path}): {exc}", file=sys.stderr)

    def _write(self, conn: sqlite3.Connection, item: tuple[Any, ...]) -> None:
        tag = item[0]
        if tag == _EVENT:
            _, t, event, recomputable = item
            fields = event.to_fields()
            if recomputable:  # the stored weights give them again (see the module docstring)
                fields["features"] = None
            text, arrays = schema.split_fields(fields)
            card = fields.get("card")
            card = int(card) if isinstance(card, (int, np.integer)) else None
            seq = self._last_seq + 1
            digests = {name: schema.digest(blob) for name, blob in arrays.items()}
            link = schema.event_link(self._chains["events"], seq, float(t), event.kind, card, text, digests)
            conn.execute(
                "INSERT INTO events(seq, t, kind, card, fields, chain) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, float(t), event.kind, card, text, link),
            )
            if arrays:
                conn.executemany(
                    "INSERT INTO event_arrays(seq, name, npy, digest) VALUES (?, ?, ?, ?)",
                    [(seq, name, blob, digests[name]) for name, blob in arrays.items()],
                )
            self._last_seq, self._chains["events"] = seq, link
            self._rows["events"] += 1
        elif tag == _POSES:
            _, times, values = item
            row = (
                float(times[0]),
                float(times[-1]),
                len(times),
                times.astype("<f8").tobytes(),
                values.astype("<f4").tobytes(),
            )
            link = schema.pose_link(self._chains["poses"], *row)
            conn.execute(
                'INSERT INTO poses(t_start, t_end, n, times, "values", chain) VALUES (?, ?, ?, ?, ?, ?)',
                (*row, link),
            )
            self._chains["poses"] = link
            self._rows["poses"] += 1
        elif tag == _MODEL:
            _, t, version, data = item
            if callable(data):  # the store's bytes of that version, fetched here, off the frame loop
                data = data()
            digest = hashlib.sha256(data).hexdigest()
            _insert_weights(conn, digest, data)
            row_id = self._rows["models"] + 1
            link = schema.model_link(self._chains["models"], row_id, int(version), float(t), digest)
            conn.execute(
                "INSERT INTO models(id, version, t, sha256, chain) VALUES (?, ?, ?, ?, ?)",
                (row_id, int(version), float(t), digest, link),
            )
            self._chains["models"] = link
            self._rows["models"] = row_id
        elif tag == _META:
            _, key, produce = item
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, produce()))


WEIGHTS_CHUNK = 8 << 20  # bytes of a model's weights written into their row at a time


def _insert_weights(conn: sqlite3.Connection, digest: str, data: bytes) -> None:
    """A ``weights`` row for ``data`` unless one has ``digest``: a row of zeros of its length,
    then written through an incremental blob a chunk at a time.

    Why not one ``INSERT ... VALUES (?, ?)``: sqlite copies a bound blob, and the statement cache
    keeps that statement with its copy bound until the statement is run again (the next model
    version): the whole network's 230 MB (AlexNet) held in the app from the session's start to
    the first fine-tune, and 230 MB more while it was written (issue 17). The row's bytes are the
    same either way."""
    if conn.execute("SELECT 1 FROM weights WHERE sha256 = ?", (digest,)).fetchone() is not None:
        return
    view = memoryview(data).cast("B")
    row = conn.execute(
        "INSERT INTO weights(sha256, data) VALUES (?, zeroblob(?))", (digest, len(view))
    ).lastrowid
    if not len(view):
        return
    if row is None:  # never left as zeros under a digest that says otherwise
        raise sqlite3.DatabaseError(f"the weights row {digest[:12]} was not inserted")
    with conn.blobopen("weights", "data", row) as blob:
        for start in range(0, len(view), WEIGHTS_CHUNK):
            blob.write(view[start : start + WEIGHTS_CHUNK])


def _blob_row(name: str, blob: bytes) -> tuple[str, bytes, str]:
    return (name, blob, schema.digest(blob))


def _put_pose(row: np.ndarray, offset: int, pose: PoseLike) -> None:
    if pose is None:
        row[offset : offset + 7] = np.nan
    elif len(pose) == 2:
        row[offset : offset + 3] = pose[0]
        row[offset + 3 : offset + 7] = pose[1]
    else:
        row[offset : offset + 7] = pose
