"""Reading a session file back: events in order, seeking by time, poses, model weights.

The file is opened read-only and checked before anything is trusted: a file from a newer
schema, or one that is not a session at all, is a ``SessionError`` (exit code 2). A damaged file
(truncated by a full disk, a half-copied download) is read up to its last valid event; ``damage``
then says where reading stopped and why, so replay can play what survived and say so. Nothing in
the file is ever unpickled or executed: fields are JSON, arrays are ``.npy`` loaded with
``allow_pickle=False``, weights are safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from game.core import events as ev
from game.sessions import integrity, schema
from game.sessions.paths import SessionError


@dataclass(frozen=True)
class RecordedEvent:
    """One event as it was applied: its sequence number, session time and the event itself."""

    seq: int
    t: float
    event: ev.Event


@dataclass
class PoseTrack:
    """Frames in a time range: ``times`` (n,) and ``values`` (n, 21) as recorded (NaN = absent)."""

    times: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def device(self, name: str) -> np.ndarray:
        """(n, 7) rows ``x, y, z, qw, qx, qy, qz`` of ``head``, ``left`` or ``right``."""
        k = schema.POSE_DEVICES.index(name)
        return self.values[:, k * schema.POSE_WIDTH : (k + 1) * schema.POSE_WIDTH]

    def at(self, t: float) -> np.ndarray | None:
        """The pose row at time ``t``: positions interpolated, quaternions normalised-lerped."""
        if not len(self.times):
            return None
        i = int(np.searchsorted(self.times, t))
        if i <= 0:
            first: np.ndarray = self.values[0].copy()
            return first
        if i >= len(self.times):
            last: np.ndarray = self.values[-1].copy()
            return last
        t0, t1 = self.times[i - 1], self.times[i]
        a = 0.0 if t1 <= t0 else float((t - t0) / (t1 - t0))
        v0, v1 = self.values[i - 1], self.values[i]
        out: np.ndarray = v0 + (v1 - v0) * a
        for k in range(len(schema.POSE_DEVICES)):
            q0 = v0[k * 7 + 3 : k * 7 + 7]
            q1 = v1[k * 7 + 3 : k * 7 + 7]
            if float(np.dot(q0, q1)) < 0:  # take the short way round
                q1 = -q1
            q = q0 + (q1 - q0) * a
            norm = float(np.linalg.norm(q))
            out[k * 7 + 3 : k * 7 + 7] = q / norm if norm > 0 else q0
        return out


# Events whose whole effect is replaced by a later ModelUpdated (it sets labels, predictions,
# features, positions and card states): a seek may skip them if one follows before the target.
_SUPERSEDED_BY_MODEL = tuple(k for k, cls in ev.EVENT_TYPES.items() if cls.superseded_by_model)


def _why(exc: BaseException) -> str:
    """An exception's text on one line (SQLite quotes whole schema statements, newlines and all)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _connect_ro(path: Path) -> sqlite3.Connection:
    """Read-only connection (a WAL left by a crash is still read); fails early on a bad file."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only=1")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        conn.close()
        raise
    except UnicodeDecodeError as exc:
        # A damaged schema's text is quoted in SQLite's error message, and Python's sqlite3 fails
        # to decode a byte that is not UTF-8 there (session fuzz seed 91): damage all the same.
        conn.close()
        raise sqlite3.DatabaseError(f"malformed database schema (not UTF-8 at byte {exc.start})") from None
    return conn


def _truncated_copy(path: Path) -> tuple[Path, int, int] | None:
    """A temporary copy of a truncated database whose header no longer claims the lost pages.

    Returns ``(copy, pages present, pages the header expected)``, or None when the file is not
    a truncated SQLite database (then nothing can be saved this way).
    """
    import tempfile

    with open(path, "rb") as f:
        head = f.read(100)
        if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
            return None
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        expected = int.from_bytes(head[28:32], "big")
        pages = path.stat().st_size // page_size
        if pages < 1 or pages >= expected:
            return None
        fd, name = tempfile.mkstemp(suffix=".session.sqlite", prefix="latent-reach-recovered-")
        f.seek(0)
        with os.fdopen(fd, "wb") as out:
            remaining = pages * page_size
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
            # Bytes 92..95 ("version-valid-for") differing from the change counter (24..27)
            # makes SQLite ignore the in-header size and use the real file size.
            counter = int.from_bytes(head[24:28], "big")
            out.seek(92)
            out.write(((counter + 1) & 0xFFFFFFFF).to_bytes(4, "big"))
    return Path(name), pages, expected


def _changes_state(kind: str) -> bool:
    """Whether events of ``kind`` change the workspace (grab, job, message, undo: no)."""
    cls = ev.EVENT_TYPES.get(kind)
    return cls is not None and cls.changes_state


class SessionReader:
    """A session file opened read-only. Use as a context manager or call ``close``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SessionError(f"session file not found: {self.path}")
        self.damage: str | None = None  # where and why reading stopped early, if it did
        self.skipped_kinds: dict[str, int] = {}
        self._temp_copy: Path | None = None
        self._truncation = ""
        self.ended_early: str | None = None  # "recording ended early at t = ..." (no end marker)
        self.notes: list[str] = []  # e.g. "no checksums (older format)"
        self._good = integrity.UNBOUNDED  # events after this sequence number are not trusted
        self._conn = self._open()
        self._owner = threading.get_ident()
        self._other_threads: dict[int, sqlite3.Connection] = {}
        self._threads_lock = threading.Lock()
        self._closed = False
        try:
            self._check()
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
            self.meta = {str(k): v if isinstance(v, str) else str(v) for k, v in rows}
            self._check_integrity()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise SessionError(f"{self.path} is damaged beyond reading: {_why(exc)}") from None
        except integrity.StartDamaged as exc:
            self.close()
            raise SessionError(f"{self.path} is damaged: {_why(exc)} (checksum mismatch)") from None
        except SessionError:
            self.close()
            raise

    def _check_integrity(self) -> None:
        """Check the checksums once (see ``integrity``); later reads stop where they fail."""
        self.integrity = integrity.check(self._conn, self.meta)
        if self.integrity.note:
            self.notes.append(self.integrity.note)
        self.ended_early = self.integrity.ended_early
        self._good = self.integrity.good_seq
        self._good_poses = self.integrity.good_poses
        self._good_models = self.integrity.good_models
        if self.integrity.damage:
            good = self._good if self._good < integrity.UNBOUNDED else None
            t = None
            if good is not None:
                t = self._scalar("SELECT t FROM events WHERE seq = ?", (good,)) if good else 0.0
                t = float(t) if isinstance(t, float | int) else 0.0
            self._note_damage(self.integrity.damage, good, t)

    def _open(self) -> sqlite3.Connection:
        try:
            return _connect_ro(self.path)
        except sqlite3.DatabaseError as exc:
            first_error = exc
        # SQLite refuses a file shorter than its header says. A truncated copy whose header is
        # told to trust the file size instead still gives up every page that survived.
        recovered = _truncated_copy(self.path)
        if recovered is not None:
            copy, pages, expected = recovered
            try:
                conn = _connect_ro(copy)
            except sqlite3.DatabaseError:
                copy.unlink(missing_ok=True)
            else:
                self._temp_copy = copy
                self._truncation = f"the file is truncated ({pages} of {expected} pages present)"
                self._note_damage(self._truncation)
                return conn
        raise SessionError(f"{self.path} is not a readable session file: {_why(first_error)}") from None

    def _check(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > schema.SCHEMA_VERSION:
            raise SessionError(
                f"{self.path} was written by a newer Latent Reach (session schema {version}; this "
                f"version reads up to {schema.SCHEMA_VERSION}): update latent-reach to replay it"
            )
        if version < 1 or not {"meta", "events"} <= tables:
            raise SessionError(f"{self.path} is not a Latent Reach session file")
        self.schema_version = int(version)

    def _connection(self) -> sqlite3.Connection:
        """The opening thread's connection, or one of the calling thread's own.

        A replay's model follower reads hundreds of MB of weights on a worker thread: on a shared
        connection that read would hold SQLite's mutex and stall the frame loop's event reads.
        """
        ident = threading.get_ident()
        if ident == self._owner:
            return self._conn
        with self._threads_lock:
            if self._closed:  # a worker still fetching after close: no connection left behind
                raise SessionError(f"{self.path} was closed")
            conn = self._other_threads.get(ident)
            if conn is None:
                conn = _connect_ro(self._temp_copy or self.path)
                self._other_threads[ident] = conn
            return conn

    def close(self) -> None:
        with self._threads_lock:
            self._closed = True
            for conn in self._other_threads.values():
                conn.close()
            self._other_threads.clear()
        self._conn.close()
        if self._temp_copy is not None:
            self._temp_copy.unlink(missing_ok=True)
            self._temp_copy = None

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the session is -------------------------------------------------------------------

    def meta_json(self, key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        """A JSON meta value of the expected type; anything else is a ``SessionError``."""
        text = self.meta.get(key)
        if text is None:
            return default
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, (int, float)):
            raise SessionError(f"{self.path} is damaged: meta {key} = {text[:40]!r} is not readable")
        return value

    def meta_number(self, key: str, default: float, kind: type = int) -> Any:
        """A numeric meta value (``int`` or finite ``float``); anything else is a ``SessionError``."""
        text = self.meta.get(key)
        if text is None:
            return default
        try:
            value = kind(text)
        except (TypeError, ValueError):
            value = None
        if value is None or (kind is float and not np.isfinite(value)):
            raise SessionError(f"{self.path} is damaged: meta {key} = {text[:40]!r} is not a number")
        return value

    @property
    def scene_dict(self) -> dict[str, Any]:
        scene: dict[str, Any] = self.meta_json("scene_json", {}, dict)
        return scene

    def scene(self) -> Any:
        """The scene as it was resolved when recording began (a ``Scene``)."""
        from game.core.scene import scene_from_dict

        if "scene_json" not in self.meta:
            raise SessionError(f"{self.path} does not record its scene")
        try:
            return scene_from_dict(
                _recorded_defaults(self.scene_dict), source=self.meta.get("scene_source", "")
            )
        except SessionError:
            raise
        except Exception as exc:  # a scene the loader refuses: the recorded one was altered
            raise SessionError(f"{self.path}: the recorded scene is not valid: {_why(exc)}") from None

    @property
    def class_names(self) -> list[str]:
        names: list[str] = self.meta_json("class_names", [], list)
        if not all(isinstance(n, str) for n in names):
            raise SessionError(f"{self.path} is damaged: meta class_names holds non-text names")
        return names

    def initial_arrays(self) -> dict[str, np.ndarray]:
        """The per-card arrays (and layout numbers) as they were when recording began."""
        try:
            rows = self._conn.execute("SELECT name, npy FROM initial_state").fetchall()
            return {str(name): schema.npy_to_array(blob) for name, blob in rows}
        except (sqlite3.DatabaseError, ValueError, TypeError, EOFError, OSError) as exc:
            raise SessionError(f"{self.path}: the starting state is damaged: {_why(exc)}") from None

    def initial_workspace(self, images: np.ndarray, features: np.ndarray | None = None) -> Any:
        """A ``Workspace`` as it was when recording began, given the dataset's images."""
        from game.core.workspace import Workspace

        a = self.initial_arrays()
        required = ("labels", "top5_classes", "top5_scores", "positions", "is_train", "original_labels")
        missing = [k for k in required if k not in a]
        if missing:
            raise SessionError(f"{self.path}: the starting state is damaged: no {missing[0]} array")
        n = self.meta_number("n_cards", len(a["labels"]))
        if len(images) != n:
            raise SessionError(f"{self.path} was recorded with {n} cards, the dataset has {len(images)}")
        if features is None:
            features = a.get("features")
        if features is None:
            raise SessionError(f"{self.path} does not store starting features; pass them in")
        names = self.class_names
        sources = self.meta_json("sources", [], list) or [f"card:{i}" for i in range(n)]
        _check_starting_arrays(self.path, a, features, n, len(names))
        selected = self.meta_number("selected", -1)
        if not -1 <= selected < n or len(sources) != n or not all(isinstance(s, str) for s in sources):
            raise SessionError(f"{self.path}: the starting state is damaged: selection or sources do not fit")
        try:
            return Workspace(
                images=images,
                labels=a["labels"],
                class_names=names,
                top5_classes=a["top5_classes"],
                top5_scores=a["top5_scores"],
                features=features,
                positions=a["positions"],
                is_train=a["is_train"],
                sources=sources,
                original_labels=a["original_labels"],
                model_version=self.meta_number("model_version", 0),
                feature_layer=self.meta.get("feature_layer", ""),
                # Sessions recorded before card states were stored have none: the default then.
                card_state=cast(np.ndarray, a.get("card_state")),
                selected=selected,
            )
        except (ValueError, TypeError, IndexError) as exc:
            raise SessionError(f"{self.path}: the starting state is damaged: {_why(exc)}") from None

    # --- events --------------------------------------------------------------------------------

    def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        try:
            row = self._conn.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as exc:
            self._note_damage(f"the event index is damaged ({_why(exc)})")
            return None
        return row[0] if row else None

    @property
    def event_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM events WHERE seq <= ?", (self._good,)) or 0)

    @property
    def last_seq(self) -> int:
        return int(self._scalar("SELECT max(seq) FROM events WHERE seq <= ?", (self._good,)) or 0)

    @property
    def duration(self) -> float:
        """Seconds from the start to the last event or pose (or the recorded duration)."""
        ends = [
            self.meta_number("duration", 0.0, float) if self._good == integrity.UNBOUNDED else 0.0,
            self._scalar("SELECT max(t) FROM events WHERE seq <= ?", (self._good,)),
            self._scalar("SELECT max(t_end) FROM poses"),
        ]
        return max(float(x) for x in ends if isinstance(x, float | int) and np.isfinite(x) or x == 0.0)

    def seek(self, t: float) -> int | None:
        """The sequence number of the first event at or after time ``t`` (None: none left)."""
        seq: int | None = self._scalar(
            "SELECT seq FROM events WHERE t >= ? AND seq <= ? ORDER BY t, seq LIMIT 1", (float(t), self._good)
        )
        return seq

    def last_seq_at(self, t: float) -> int:
        """The sequence number of the last event at or before time ``t`` (0: none yet)."""
        return int(
            self._scalar(
                "SELECT seq FROM events WHERE t <= ? AND seq <= ? ORDER BY t DESC, seq DESC LIMIT 1",
                (float(t), self._good),
            )
            or 0
        )

    def _note_damage(self, why: str, seq: int | None = None, t: float | None = None) -> None:
        """Keep the first place where reading stopped (a truncation note is refined by it)."""
        if self.damage is None or (self._truncation and self.damage.endswith(self._truncation)):
            where = "" if seq is None else f" after event #{seq} (t={t:.3f} s)"
            if self._truncation and why != self._truncation:
                why = f"{self._truncation}; {why}"
            self.damage = f"{self.path.name}: reading stopped{where}: {why}"

    def _decode(self, seq: int, t: float, kind: str, text: str) -> RecordedEvent | None:
        if kind not in ev.EVENT_TYPES:
            self.skipped_kinds[kind] = self.skipped_kinds.get(kind, 0) + 1
            return None
        rows = self._conn.execute("SELECT name, npy FROM event_arrays WHERE seq = ?", (seq,)).fetchall()
        if not isinstance(text, str) or not isinstance(t, float | int) or not np.isfinite(t):
            raise ValueError("the event row has values of the wrong type")
        fields = schema.join_fields(text, dict(rows))
        event = ev.event_from_fields(kind, fields)
        _check_event_types(event)
        return RecordedEvent(seq, float(t), event)

    def events(
        self,
        start_seq: int = 1,
        end_seq: int | None = None,
        only: set[int] | None = None,
        kinds: set[str] | None = None,
    ) -> Iterator[RecordedEvent]:
        """Events from ``start_seq`` to ``end_seq`` (inclusive) in order.

        ``only`` restricts to those sequence numbers (a seek's fast-forward), ``kinds`` to those
        event kinds (a summary). On damage the iteration ends early and ``self.damage`` says
        where; the events before it are all valid.
        """
        last_seq, last_t = start_seq - 1, 0.0
        end = min(end_seq if end_seq is not None else integrity.UNBOUNDED, self._good)
        kind_sql = ""
        kind_args: tuple[str, ...] = ()
        if kinds is not None:
            kind_sql = f" AND kind IN ({','.join('?' * len(kinds))})"
            kind_args = tuple(sorted(kinds))
        while True:
            try:
                rows = self._conn.execute(
                    "SELECT seq, t, kind, fields FROM events WHERE seq > ? AND seq <= ?"
                    f"{kind_sql} ORDER BY seq LIMIT 256",
                    (last_seq, end, *kind_args),
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                self._note_damage(str(exc), last_seq, last_t)
                return
            if not rows:
                return
            for seq, t, kind, text in rows:
                if not isinstance(seq, int) or seq <= last_seq:
                    # A damaged index can hand back a row it already gave (the next query would
                    # then start over: replay never ended, session fuzz at seed 47).
                    self._note_damage(f"event #{seq} is out of order after #{last_seq}", last_seq, last_t)
                    return
                if only is not None and seq not in only:
                    last_seq, last_t = seq, t
                    continue
                try:
                    item = self._decode(seq, t, kind, text)
                except (sqlite3.DatabaseError, ValueError, TypeError, KeyError, EOFError, OSError) as exc:
                    self._note_damage(f"event #{seq} ({kind}) cannot be read: {_why(exc)}", last_seq, last_t)
                    return
                last_seq, last_t = seq, t
                if item is not None:
                    yield item

    def event(self, seq: int) -> RecordedEvent | None:
        return next(self.events(seq, seq), None)

    def fast_forward_plan(self, end_seq: int) -> tuple[set[int], int]:
        """The events up to ``end_seq`` whose effect survives to it, and the last model event.

        Everything a later ModelUpdated replaces is skipped, events the workspace ignores
        (grab, job, message, undo) too, and of a card's moves after the last model only its
        last one counts. Applying just these, in order, gives the same workspace as applying
        all of them, so a seek into a long session decodes a few events, not thousands.
        """
        try:
            end_seq = min(int(end_seq), self._good)
            last_model = self._conn.execute(
                "SELECT max(seq) FROM events WHERE kind = 'model' AND seq <= ?", (end_seq,)
            ).fetchone()[0]
            last_model = int(last_model or 0)
            marks = ",".join("?" * len(_SUPERSEDED_BY_MODEL))
            keep = {
                seq
                for seq, kind in self._conn.execute(
                    f"SELECT seq, kind FROM events WHERE seq <= ? AND kind != 'move' "
                    f"AND NOT (seq < ? AND kind IN ({marks}))",
                    (end_seq, last_model, *_SUPERSEDED_BY_MODEL),
                )
                if _changes_state(kind)
            }
            keep |= {
                r[0]
                for r in self._conn.execute(
                    "SELECT max(seq) FROM events WHERE kind = 'move' AND seq <= ? AND seq > ? GROUP BY card",
                    (end_seq, last_model),
                )
            }
        except sqlite3.DatabaseError as exc:
            self._note_damage(f"the event index is damaged ({_why(exc)})")
            return set(), 0
        return keep, last_model

    def counts_by_kind(self) -> dict[str, int]:
        try:
            rows = self._conn.execute(
                "SELECT kind, count(*) FROM events WHERE seq <= ? GROUP BY kind ORDER BY kind", (self._good,)
            )
            return {str(k): int(n) for k, n in rows}
        except sqlite3.DatabaseError as exc:
            self._note_damage(f"the event table is damaged ({_why(exc)})")
            return {}

    # --- poses ---------------------------------------------------------------------------------

    def poses(self, t0: float = 0.0, t1: float = float("inf")) -> PoseTrack:
        """Frames with ``t0 <= t <= t1`` (whole chunks are read, then trimmed)."""
        times, values = [], []
        try:
            rows = self._conn.execute(
                'SELECT times, "values", n FROM poses WHERE t_end >= ? AND t_start <= ? AND rowid IN '
                "(SELECT rowid FROM poses ORDER BY rowid LIMIT ?) ORDER BY t_start",
                (float(t0), float(min(t1, 1e300)), min(self._good_poses, 2**62)),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._note_damage(f"the pose table is damaged ({_why(exc)})")
            rows = []
        for tb, vb, n in rows:
            if not isinstance(tb, bytes) or not isinstance(vb, bytes) or not isinstance(n, int):
                self._note_damage("a pose chunk has values of the wrong type")
                break
            if len(tb) % 8 or len(vb) % 4:
                self._note_damage("a pose chunk has the wrong size")
                break
            tt = np.frombuffer(tb, dtype="<f8")
            vv = np.frombuffer(vb, dtype="<f4")
            if len(tt) != n or len(vv) != n * schema.POSE_COLUMNS:
                self._note_damage("a pose chunk has the wrong size")
                break
            times.append(tt)
            values.append(vv.reshape(n, schema.POSE_COLUMNS))
        if not times:
            return PoseTrack(np.zeros(0), np.zeros((0, schema.POSE_COLUMNS), dtype=np.float32))
        t = np.concatenate(times)
        v = np.concatenate(values).astype(np.float32)
        keep = (t >= t0) & (t <= t1)
        return PoseTrack(t[keep], v[keep])

    # --- models --------------------------------------------------------------------------------

    def model_versions(self) -> list[tuple[int, float, str]]:
        """``(version, time, sha256)`` of every stored model, in the order they were recorded."""
        try:
            rows = self._conn.execute(
                "SELECT version, t, sha256 FROM models ORDER BY id LIMIT ?", (min(self._good_models, 2**62),)
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._note_damage(f"the model table is damaged ({_why(exc)})")
            return []
        out = []
        for v, t, h in rows:
            if not isinstance(v, int) or not isinstance(t, float | int) or not isinstance(h, str):
                self._note_damage(f"a model record has values of the wrong type ({v!r}, {t!r})")
                break
            out.append((int(v), float(t), h))
        return out

    def model_weights(self, version: int) -> bytes:
        """Safetensors bytes of model ``version`` (the last stored, if stored twice).

        Safe to call from another thread than the one that opened the reader (its own connection).
        """
        try:
            row = (
                self._connection()
                .execute(
                    "SELECT w.data, w.sha256 FROM models m JOIN weights w ON w.sha256 = m.sha256 "
                    "WHERE m.version = ? AND m.id <= ? ORDER BY m.id DESC LIMIT 1",
                    (int(version), min(self._good_models, 2**62)),
                )
                .fetchone()
            )
        except sqlite3.DatabaseError as exc:
            raise SessionError(
                f"{self.path}: the checkpoint of model version {version} is damaged: {_why(exc)}"
            ) from None
        if row is None:
            have = sorted({v for v, _, _ in self.model_versions()})
            raise SessionError(
                f"{self.path} has no checkpoint for model version {version} "
                f"(stored versions: {', '.join(map(str, have)) or 'none'})"
            )
        data, digest = row
        if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != digest:
            raise SessionError(
                f"{self.path}: the checkpoint of model version {version} is corrupt (hash mismatch)"
            )
        return bytes(data)


def _check_starting_arrays(
    path: Path, a: dict[str, np.ndarray], features: Any, n: int, n_classes: int
) -> None:
    """Shapes and kinds of the starting arrays, so a damaged file is a clear error, not an IndexError."""

    def bad(why: str) -> None:
        raise SessionError(f"{path}: the starting state is damaged: {why}")

    numeric = "biuf"
    for name in ("labels", "original_labels", "is_train", "top5_classes", "top5_scores", "positions"):
        arr = a[name]
        if arr.dtype.kind not in numeric or len(arr.shape) < 1 or arr.shape[0] != n:
            bad(f"{name} has shape {arr.shape} {arr.dtype}, expected {n} rows of numbers")
    if a["labels"].ndim != 1 or a["original_labels"].ndim != 1 or a["is_train"].ndim != 1:
        bad("labels, original_labels and is_train must be one value per card")
    for name in ("labels", "original_labels"):
        if a[name].dtype.kind not in "iu" or (n and (a[name].min() < 0 or a[name].max() >= n_classes)):
            bad(f"{name} are not class numbers below {n_classes}")
    if a["positions"].shape != (n, 3) or not np.isfinite(a["positions"]).all():
        bad(f"positions have shape {a['positions'].shape}, expected ({n}, 3) finite numbers")
    if a["top5_classes"].ndim != 2 or a["top5_scores"].shape != a["top5_classes"].shape:
        bad("top-5 classes and scores do not match")
    feats = np.asarray(features)
    if feats.dtype.kind not in numeric or feats.ndim != 2 or feats.shape[0] != n:
        bad(f"features have shape {feats.shape}, expected ({n}, D)")
    state = a.get("card_state")
    if state is not None and (state.dtype.kind not in "iu" or state.shape != (n,)):
        bad(f"card_state has shape {state.shape} {state.dtype}, expected ({n},) integers")


def _type_ok(value: Any, hint: Any) -> bool:
    import types
    import typing

    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is np.ndarray:
        return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
    if hint is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin is typing.Literal:  # a closed set of strings: checked as str (old sessions load)
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, h) for v, h in zip(value, args))
    if origin in (dict, list):
        return isinstance(value, origin)
    return True


def _check_event_types(event: ev.Event) -> None:
    """Every field of a decoded event has its declared type (a damaged row is a ValueError)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(event), vars(ev))
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if not _type_ok(value, hints.get(f.name, Any)):
            raise ValueError(f"field {f.name} = {str(value)[:40]!r} is not {hints.get(f.name)}")


# Settings whose default changed after sessions were recorded without them: such a session ran
# with the old value, so ``replay --verify`` and a resumed session must too.
# train_heldout: held-out neighbours of an edit were trained before it existed (issue 13).
# label_trust, feature_terms: "none" and "always" until issue 13's suite chose "drop"/"landing".
# check_samples, replay_all_up_to: no held-aside check cards, and sampled replay only, until
# issue 13's suite added the check and then every trusted card replayed where it runs.
# replay_all_max_cost: no cost cap on that until issue 17's thirteenth session.
_OLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "learning": {
        "train_heldout": True,
        "label_trust": "none",
        "feature_terms": "always",
        "check_samples": 0,
        "replay_all_up_to": 0,
        "replay_all_max_cost": 0.0,
    },
    "layout": {"reuse_above": 10**9},  # large scenes' local re-layout refitted PCA and annoy
}


def _recorded_defaults(scene: dict[str, Any]) -> dict[str, Any]:
    """The recorded scene with the old default of each setting it predates (see ``_OLD_DEFAULTS``)."""
    out = dict(scene)
    for section, defaults in _OLD_DEFAULTS.items():
        values = out.get(section)
        if isinstance(values, dict):
            out[section] = {**defaults, **values}
    return out
