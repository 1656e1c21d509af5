"""The session file format: one SQLite database per session, versioned, with no pickles.

Why SQLite: a session is written while the game runs and must survive a crash. In WAL mode each
commit is an append to the ``-wal`` file, so a killed process loses only what it had not yet
committed, and a reader can open the file while it is still being written.

Layout (schema version 3; version 1 lacks the checksum columns, and 1 and 2 always carry the
features in ``model`` and ``layer`` events; all are still read)::

    meta(key, value)                      text: schema, app version, scene TOML, scene JSON, ...
    initial_state(name, npy, digest)      the workspace's per-card arrays when recording began
    events(seq, t, kind, card, fields, chain)  one row per typed event; non-array fields as JSON
    event_arrays(seq, name, npy, digest)  array fields of an event, each an .npy blob
    poses(t_start, t_end, n, times, values, chain)  a chunk of frames: float64 times, float32 rows
    weights(sha256, data)                 safetensors bytes, stored once per distinct content
    models(id, version, t, sha256, chain) which weights each model version had

What is not stored (schema 3): the per-card features of a ``ModelUpdated`` or ``LayerChanged``
whose model version's weights the file stores. Their ``features`` field is JSON ``null``; they
are recomputed from that version's weights when something reads them (``sessions.features``).
For AlexNet fc7 on 2,000 images that is 33 MB per fine-tune, half again the trainable weights.
The starting features are stored as before (up to ``recorder.MAX_INITIAL_FEATURES_BYTES``).

Checksums (why: a session is evidence of what a person did; a deleted or edited row must not
replay as if nothing happened). ``meta.integrity`` hashes the meta keys and initial arrays
written when recording began; its digest seeds three chains. Each event's ``chain`` is the hash
of the previous event's chain and this row (seq, t, kind, card, fields, and each array's name
and ``digest``, the hash of its blob), so a deleted, inserted, edited or reordered event breaks
the chain at the first bad sequence number. Pose chunks and model rows chain the same way. A
clean close writes ``meta.end`` (last seq, the chains' ends, the row counts and a digest of the
whole meta table): without it the recording ended early; with it, rows lost at the end show.

Arrays are written with ``np.save(..., allow_pickle=False)`` and read with
``np.load(..., allow_pickle=False)``: an object array can neither be stored nor loaded, so a
session file can never carry code.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from typing import Any

import numpy as np

SCHEMA_VERSION = 3  # 3: event features may be null (recomputed from the stored weights)
CHECKSUM_SCHEMA = 2  # the first schema whose rows carry checksums
APPLICATION_ID = 0x4C524331  # "LRC1": marks the file as a Latent Reach session for `file(1)` & co.

# One pose row: head, left hand, right hand, each position (x, y, z) + quaternion (w, x, y, z).
POSE_DEVICES = ("head", "left", "right")
POSE_WIDTH = 7
POSE_COLUMNS = POSE_WIDTH * len(POSE_DEVICES)
POSE_FORMAT = "float64 times; float32 rows of head,left,right x (x,y,z,qw,qx,qy,qz); NaN = absent"

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS initial_state (
    name TEXT PRIMARY KEY,
    npy BLOB NOT NULL,
    digest TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    card INTEGER,
    fields TEXT NOT NULL,
    chain TEXT
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(t);
CREATE INDEX IF NOT EXISTS events_by_kind ON events(kind, card);
CREATE TABLE IF NOT EXISTS event_arrays (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    npy BLOB NOT NULL,
    digest TEXT,
    PRIMARY KEY (seq, name)
);
CREATE TABLE IF NOT EXISTS poses (
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    n INTEGER NOT NULL,
    times BLOB NOT NULL,
    "values" BLOB NOT NULL,
    chain TEXT
);
CREATE INDEX IF NOT EXISTS poses_by_end ON poses(t_end);
CREATE TABLE IF NOT EXISTS weights (
    sha256 TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    t REAL NOT NULL,
    sha256 TEXT NOT NULL,
    chain TEXT
);
CREATE INDEX IF NOT EXISTS models_by_version ON models(version);
"""


def array_to_npy(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes; object arrays are refused (they would need pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_to_array(blob: bytes) -> np.ndarray:
    """``.npy`` bytes back to an array, never unpickling anything."""
    array: np.ndarray = np.load(io.BytesIO(blob), allow_pickle=False)
    return array


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples to JSON-friendly Python values (NaN/inf kept as strings)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a session file")


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def split_fields(fields: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    """An event's fields as (JSON text of the plain ones, {name: npy bytes} of the arrays)."""
    plain: dict[str, Any] = {}
    arrays: dict[str, bytes] = {}
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            arrays[name] = array_to_npy(value)
        else:
            plain[name] = _plain(value)
    return json.dumps(plain, separators=(",", ":"), allow_nan=False), arrays


def join_fields(text: str, arrays: dict[str, bytes]) -> dict[str, Any]:
    """The inverse of ``split_fields``."""
    fields = _unplain(json.loads(text))
    if not isinstance(fields, dict):
        raise ValueError("event fields are not a JSON object")
    for name, blob in arrays.items():
        fields[name] = npy_to_array(blob)
    return fields


# --- checksums ---------------------------------------------------------------------------------

_SEP = b"\x1f"


def digest(*parts: bytes | str | int | float | None) -> str:
    """A 128-bit BLAKE2b of the parts (types and order matter), as hex."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            h.update(b"b")
            h.update(bytes(part))
        elif isinstance(part, float):
            h.update(b"f" + repr(part).encode())
        elif isinstance(part, bool) or part is None:
            h.update(b"n" + repr(part).encode())
        elif isinstance(part, int):
            h.update(b"i" + str(part).encode())
        else:
            h.update(b"s" + str(part).encode("utf-8", "surrogatepass"))
        h.update(_SEP)
    return h.hexdigest()


def event_link(
    prev: str, seq: int, t: float, kind: str, card: int | None, fields: str, arrays: dict[str, str]
) -> str:
    """The chain value of one event row; ``arrays`` maps each array field's name to its digest."""
    listed = ";".join(f"{name}={arrays[name]}" for name in sorted(arrays))
    return digest(prev, seq, float(t), kind, card, fields, listed)


def pose_link(prev: str, t_start: float, t_end: float, n: int, times: bytes, values: bytes) -> str:
    return digest(prev, float(t_start), float(t_end), int(n), times, values)


def model_link(prev: str, row_id: int, version: int, t: float, sha256: str) -> str:
    return digest(prev, int(row_id), int(version), float(t), sha256)


def meta_digest(items: dict[str, str], keys: list[str] | None = None) -> str:
    """A digest of ``keys`` of the meta table (all but ``end`` when None)."""
    chosen = sorted(keys if keys is not None else (k for k in items if k != "end"))
    return digest(*(part for k in chosen for part in (k, items.get(k))))


def start_digest(meta: dict[str, str], keys: list[str], arrays: dict[str, str]) -> str:
    """What ``meta.integrity`` seals: the first meta keys and every initial array's digest."""
    listed = ";".join(f"{name}={arrays[name]}" for name in sorted(arrays))
    return digest(meta_digest(meta, keys), listed)
