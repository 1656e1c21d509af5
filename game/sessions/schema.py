"""The session file format: one SQLite database per session, versioned, with no pickles.

Why SQLite: a session is written while the game runs and must survive a crash. In WAL mode each
commit is an append to the ``-wal`` file, so a killed process loses only what it had not yet
committed, and a reader can open the file while it is still being written.

Layout (schema version 1)::

    meta(key, value)                      text: schema, app version, scene TOML, scene JSON, ...
    initial_state(name, npy)              the workspace's per-card arrays when recording began
    events(seq, t, kind, card, fields)    one row per typed event; non-array fields as JSON
    event_arrays(seq, name, npy)          array fields of an event, each an .npy blob
    poses(t_start, t_end, n, times, values)  a chunk of frames: float64 times, float32 rows
    weights(sha256, data)                 safetensors bytes, stored once per distinct content
    models(id, version, t, sha256)        which weights each model version had

Arrays are written with ``np.save(..., allow_pickle=False)`` and read with
``np.load(..., allow_pickle=False)``: an object array can neither be stored nor loaded, so a
session file can never carry code.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
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
    npy BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    card INTEGER,
    fields TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(t);
CREATE INDEX IF NOT EXISTS events_by_kind ON events(kind, card);
CREATE TABLE IF NOT EXISTS event_arrays (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    npy BLOB NOT NULL,
    PRIMARY KEY (seq, name)
);
CREATE TABLE IF NOT EXISTS poses (
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    n INTEGER NOT NULL,
    times BLOB NOT NULL,
    "values" BLOB NOT NULL
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
    sha256 TEXT NOT NULL
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
    return np.load(io.BytesIO(blob), allow_pickle=False)


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
