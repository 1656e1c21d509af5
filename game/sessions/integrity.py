"""Checking a session file's checksums once, when it is opened (see ``schema`` for the scheme).

Why one pass at open: replay, seek, verify and summary all read events in different orders; if
each had to check the chain it would be checked (or forgotten) in many places. Instead the reader
learns here where the valid part of the file ends (``good_seq``) and never reads past it, and the
damage report names the first bad sequence number. Version-1 files have no checksums: they are
read as before, with a note saying so.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from game.sessions import schema

UNBOUNDED = 2**62


class StartDamaged(Exception):
    """The starting state (first meta keys, initial arrays) does not match its seal."""


@dataclass
class Integrity:
    good_seq: int = UNBOUNDED  # events after this sequence number are not trusted
    good_poses: int = UNBOUNDED  # pose chunks (in row order) after this many are not trusted
    good_models: int = UNBOUNDED  # model rows (by id) after this one are not trusted
    damage: str | None = None  # the first inconsistency found, in words
    ended_early: str | None = None  # "recording ended early at t = ..." when there is no end marker
    note: str | None = None  # "no checksums (older format)"
    checked: bool = False  # the file carries checksums and they were checked


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _json_object(text: object, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise StartDamaged(f"{what} is not readable")
    return value


def check(conn: sqlite3.Connection, meta: dict[str, str]) -> Integrity:
    """Verify seals and chains; raises ``StartDamaged`` when nothing can be trusted."""
    if "chain" not in _columns(conn, "events"):
        return Integrity(note="no checksums (older format)")
    out = Integrity(checked=True)
    seal_info = _json_object(meta.get("integrity"), "the integrity record (meta.integrity)")
    keys, seal = seal_info.get("keys"), seal_info.get("digest")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or not isinstance(seal, str):
        raise StartDamaged("the integrity record (meta.integrity) is malformed")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise StartDamaged(f"meta key {missing[0]!r} is missing")
    arrays: dict[str, str] = {}
    for name, blob, dig in conn.execute("SELECT name, npy, digest FROM initial_state"):
        if not isinstance(blob, bytes) or schema.digest(blob) != dig:
            raise StartDamaged(f"the starting array {name!r} fails its checksum")
        arrays[str(name)] = dig
    if schema.start_digest(meta, keys, arrays) != seal:
        raise StartDamaged("the starting meta or arrays were changed, added or deleted")
    for part in (_check_events, _check_poses, _check_models):
        try:
            part(conn, seal, out)
        except sqlite3.DatabaseError as exc:  # a truncated or torn page: rows before it stand
            _damage(out, f"the file is damaged ({exc})")
            if part is _check_events:
                out.good_seq = min(out.good_seq, getattr(out, "_read", 0))
            elif part is _check_poses:
                out.good_poses = min(out.good_poses, getattr(out, "_poses_read", 0))
            else:
                out.good_models = min(out.good_models, getattr(out, "_models_read", 0))
    try:
        _check_end(conn, meta, out)
    except sqlite3.DatabaseError as exc:
        _damage(out, f"the file is damaged ({exc})")
    return out


def _damage(out: Integrity, why: str) -> None:
    if out.damage is None:
        out.damage = why


def _batches(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[Any, ...]]:
    """Rows in key order, 256 at a time: a torn page deep in a table still yields every row before
    it (one query over the whole table fails at its first step when an interior page is lost)."""
    last = -(2**63)
    while True:
        rows = conn.execute(sql, (last,)).fetchall()
        if not rows:
            return
        for row in rows:
            if not isinstance(row[0], int):  # a key of the wrong type: stop, the caller reports it
                yield row
                return
            yield row
        if rows[-1][0] <= last:  # a damaged index gave a key not past the last: never ask again
            return
        last = rows[-1][0]


def _check_events(conn: sqlite3.Connection, seal: str, out: Integrity) -> None:
    prev, expected = seal, 1
    last_t = -math.inf
    for seq, t, kind, card, fields, chain in _batches(
        conn, "SELECT seq, t, kind, card, fields, chain FROM events WHERE seq > ? ORDER BY seq LIMIT 256"
    ):
        blobs: dict[str, str] = {}
        if isinstance(seq, int):
            for name, blob, dig in conn.execute(
                "SELECT name, npy, digest FROM event_arrays WHERE seq = ?", (seq,)
            ):
                ok = isinstance(blob, bytes) and isinstance(dig, str) and schema.digest(blob) == dig
                blobs[str(name)] = dig if ok else "bad"
        why = None
        if seq != expected:
            why = (
                f"event #{expected} is missing (next is #{seq})"
                if seq > expected
                else f"event #{seq} is out of order"
            )
        elif not isinstance(t, float | int) or isinstance(t, bool) or not math.isfinite(t) or t < last_t:
            why = f"event #{seq} has an invalid time {t!r}"
        elif "bad" in blobs.values():
            bad = next(k for k, v in blobs.items() if v == "bad")
            why = f"event #{seq}: array {bad!r} fails its checksum"
        elif not (
            isinstance(kind, str) and isinstance(fields, str) and (card is None or isinstance(card, int))
        ):
            why = f"event #{seq} has a field of the wrong type"
        elif schema.event_link(prev, seq, float(t), kind, card, fields, blobs) != chain:
            why = f"event #{seq} fails its checksum (edited, replaced or reordered)"
        if why is not None:
            out.good_seq = min(out.good_seq, expected - 1)
            _damage(out, why)
            return
        prev, expected, last_t = chain, expected + 1, float(t)
        out._read = expected - 1  # type: ignore[attr-defined]
    orphan = conn.execute(
        "SELECT min(seq) FROM event_arrays WHERE seq NOT IN (SELECT seq FROM events)"
    ).fetchone()[0]
    if orphan is not None:
        first = orphan if isinstance(orphan, int) else expected
        out.good_seq = min(out.good_seq, max(0, min(first, expected) - 1))
        _damage(out, f"event #{orphan} has arrays but no event row (deleted)")
    out.event_chain_end = prev  # type: ignore[attr-defined]
    out.last_seq_read = expected - 1  # type: ignore[attr-defined]


def _check_poses(conn: sqlite3.Connection, seal: str, out: Integrity) -> None:
    prev, count = seal, 0
    for row in _batches(
        conn,
        'SELECT rowid, t_start, t_end, n, times, "values", chain FROM poses WHERE rowid > ? ORDER BY rowid LIMIT 256',
    ):
        _, t0, t1, n, times, values, chain = row
        ok = (
            isinstance(t0, float | int)
            and isinstance(t1, float | int)
            and isinstance(n, int)
            and isinstance(times, bytes)
            and isinstance(values, bytes)
            and math.isfinite(t0)
            and math.isfinite(t1)
        )
        if not ok or schema.pose_link(prev, float(t0), float(t1), n, times, values) != chain:
            out.good_poses = count
            _damage(out, f"pose chunk {count + 1} (t = {t0!r} s) fails its checksum")
            return
        prev, count = chain, count + 1
        out._poses_read = count  # type: ignore[attr-defined]
    out.pose_chain_end, out.pose_rows = prev, count  # type: ignore[attr-defined]


def _check_models(conn: sqlite3.Connection, seal: str, out: Integrity) -> None:
    prev, count = seal, 0
    for row_id, version, t, sha, chain in _batches(
        conn, "SELECT id, version, t, sha256, chain FROM models WHERE id > ? ORDER BY id LIMIT 256"
    ):
        ok = isinstance(row_id, int) and isinstance(version, int) and isinstance(t, float | int)
        ok = ok and isinstance(sha, str) and row_id == count + 1
        if not ok or schema.model_link(prev, row_id, version, float(t), sha) != chain:
            out.good_models = count
            _damage(out, f"model record {count + 1} (version {version!r}) fails its checksum")
            return
        prev, count = chain, count + 1
        out._models_read = count  # type: ignore[attr-defined]
    out.model_chain_end, out.model_rows = prev, count  # type: ignore[attr-defined]


def _check_end(conn: sqlite3.Connection, meta: dict[str, str], out: Integrity) -> None:
    if "end" not in meta:
        t = conn.execute("SELECT max(t) FROM events").fetchone()[0]
        tp = conn.execute("SELECT max(t_end) FROM poses").fetchone()[0]
        ends = [float(x) for x in (t, tp) if isinstance(x, float | int) and math.isfinite(x)]
        out.ended_early = f"recording ended early at t = {max(ends, default=0.0):.2f} s (no end marker)"
        return
    try:
        end = _json_object(meta["end"], "the end marker (meta.end)")
        chains, rows = end["chains"], end["rows"]
        last_seq, meta_dig = int(end["last_seq"]), str(end["meta"])
        if not isinstance(chains, dict) or not isinstance(rows, dict):
            raise TypeError("chains and rows are not objects")  # a damaged leaf (fuzz seed 23)
    except (StartDamaged, KeyError, TypeError, ValueError):
        _damage(out, "the end marker (meta.end) is malformed")
        return
    if out.damage is not None:
        return  # the first damage is already known; the end marker cannot add a better place
    read = getattr(out, "last_seq_read", 0)
    if read < last_seq:
        out.good_seq = min(out.good_seq, read)
        _damage(out, f"events #{read + 1} to #{last_seq} are missing (deleted at the end)")
    elif read > last_seq or chains.get("events") != getattr(out, "event_chain_end", None):
        out.good_seq = min(out.good_seq, last_seq)
        _damage(out, f"events after #{last_seq} were added after the recording ended")
    elif rows.get("poses") != getattr(out, "pose_rows", None) or chains.get("poses") != getattr(
        out, "pose_chain_end", None
    ):
        _damage(out, "pose chunks were deleted or added at the end")
    elif rows.get("models") != getattr(out, "model_rows", None) or chains.get("models") != getattr(
        out, "model_chain_end", None
    ):
        _damage(out, "model records were deleted or added at the end")
    elif schema.meta_digest(meta) != meta_dig:
        _damage(out, "the meta table was changed after the recording ended")
