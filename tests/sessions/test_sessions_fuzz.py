"""Fuzzing recorded sessions (issue 14): random damage is refused, reported, or provably harmless.

One small session is recorded per module; each mutation works on a copy: bytes flipped, rows
deleted, duplicated or reordered, columns set to values of the wrong type or range, JSON values
replaced, arrays swapped for ones of another shape or dtype, the file truncated. Every mutated
copy is opened, restored and replayed to its end. The outcome must be one of

* refused: a ``SessionError`` (the one-line ``latent-reach: error:`` of the command line),
* damage: the reader reports damage (or that the recording ended early),
* harmless: the replay's final workspace equals the original's,

and never a traceback, a hang, or a silently different result. Run with ``-s`` to see the tally
(docs/benchmarks.md records it).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_sessions_replay import assert_same_state, record_session

from game.sessions.paths import SessionError
from game.sessions.reader import SessionReader
from game.sessions.replay import ReplayDriver

MUTATIONS = int(os.environ.get("LATENT_REACH_FUZZ", "1200"))
TABLES = ("events", "event_arrays", "poses", "models", "initial_state", "meta", "weights")


class Hang(Exception):
    pass


# Versions 1 and 3 have stored (stand-in) weights: their model events, and the layer switch at
# v3, are written without features (schema 3), v2's with them; the replay recomputes the missing
# ones with ``_features``.
WEIGHTS_FOR = (1, 3)


def _features(version: int, layer: str, images: np.ndarray) -> np.ndarray:
    """A stand-in for recomputing features from stored weights: a function of its inputs."""
    seed = version * 1000 + sum(layer.encode()) + len(images)
    return np.random.default_rng(seed).normal(size=(len(images), 4)).astype(np.float32)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "original.session.sqlite"
    initial, _ = record_session(path, weights_for=WEIGHTS_FOR)
    with SessionReader(path) as reader:
        assert reader.damage is None and reader.ended_early is None
        nulls = [
            r.event.version for r in reader.events() if r.event.kind == "model" and r.event.features is None
        ]
        assert nulls == list(WEIGHTS_FOR)
        final = _replay(reader, initial.images)
    return path, initial.images, final


def _replay(reader: SessionReader, images: np.ndarray):
    ws = reader.initial_workspace(images)
    ws.feature_source = _features
    driver = ReplayDriver(reader, ws, auto_flush=True)
    driver.play()
    driver.update(0.0)
    driver.update(1e9)
    reader.poses()
    reader.model_versions()
    return ws


def _random_value(rng: np.random.Generator):
    choices = [
        lambda: int(rng.integers(-(2**40), 2**40)),
        lambda: -1,
        lambda: float(rng.normal() * 10.0 ** rng.integers(-3, 300)),
        lambda: -1e9,
        lambda: 1e300,
        lambda: "abc",
        lambda: "",
        lambda: "[]",
        lambda: '{"dataset": 5}',
        lambda: None,
        lambda: bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)),
    ]
    return choices[int(rng.integers(len(choices)))]()


def _rows(conn: sqlite3.Connection, table: str) -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT rowid FROM {table}")]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _mutate_json(value, rng: np.random.Generator):
    """``value`` with one random leaf (or the whole value) replaced."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[int(rng.integers(len(value)))]
        return {**value, key: _mutate_json(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = int(rng.integers(len(value)))
        return value[:i] + [_mutate_json(value[i], rng)] + value[i + 1 :]
    pick = int(rng.integers(6))
    return [[], {}, None, -1, "x", 1e300][pick] if pick < 6 else value


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _mutate(path: Path, rng: np.random.Generator) -> str:
    """Damage the copy at ``path`` in one random way; returns what was done."""
    kind = ["bytes", "delete", "update", "json", "array", "reorder", "truncate", "duplicate"][
        int(rng.integers(8))
    ]
    if kind == "bytes":
        data = bytearray(path.read_bytes())
        for _ in range(int(rng.integers(1, 5))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        return kind
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(rng.integers(0, len(data)))])
        return kind
    conn = sqlite3.connect(path)
    try:
        table = TABLES[int(rng.integers(len(TABLES)))]
        rows = _rows(conn, table)
        if not rows:
            return "noop"
        row = rows[int(rng.integers(len(rows)))]
        if kind == "delete":
            conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (row,))
        elif kind == "update":
            cols = _columns(conn, table)
            col = cols[int(rng.integers(len(cols)))]
            try:
                conn.execute(f'UPDATE {table} SET "{col}" = ? WHERE rowid = ?', (_random_value(rng), row))
            except sqlite3.IntegrityError:
                return "noop"
        elif kind == "json":
            if table == "meta":
                key, value = conn.execute("SELECT key, value FROM meta WHERE rowid = ?", (row,)).fetchone()
            else:
                event = conn.execute("SELECT seq, fields FROM events ORDER BY random() LIMIT 1").fetchone()
                key, value = event
            try:
                new = json.dumps(_mutate_json(json.loads(value), rng))
            except ValueError:
                value = _random_value(rng)
                new = json.dumps(0 if isinstance(value, bytes) else value)
            if table == "meta":
                conn.execute("UPDATE meta SET value = ? WHERE key = ?", (new, key))
            else:
                conn.execute("UPDATE events SET fields = ? WHERE seq = ?", (new, key))
        elif kind == "array":
            target = "initial_state" if rng.random() < 0.4 else "event_arrays"
            blob_rows = _rows(conn, target)
            if not blob_rows:
                return "noop"
            r = blob_rows[int(rng.integers(len(blob_rows)))]
            shape = tuple(int(x) for x in rng.integers(0, 30, int(rng.integers(0, 3))))
            dtype = ["<f4", "<f8", "<i8", "|u1", "<U3", "|b1"][int(rng.integers(6))]
            array = np.zeros(shape, dtype=dtype)
            blob = _npy(array)
            if rng.random() < 0.3:
                blob = blob[: int(rng.integers(0, len(blob)))]
            conn.execute(f"UPDATE {target} SET npy = ? WHERE rowid = ?", (blob, r))
        elif kind == "reorder":
            seqs = _rows(conn, "events")
            a, b = (int(x) for x in rng.choice(seqs, 2, replace=False))
            conn.execute("UPDATE events SET seq = -1 WHERE seq = ?", (a,))
            conn.execute("UPDATE events SET seq = ? WHERE seq = ?", (a, b))
            conn.execute("UPDATE events SET seq = ? WHERE seq = -1", (b,))
        elif kind == "duplicate":
            if table != "events":
                return "noop"
            conn.execute(
                "INSERT INTO events(t, kind, card, fields, chain) SELECT t, kind, card, fields, chain "
                "FROM events WHERE rowid = ?",
                (row,),
            )
        conn.commit()
        return f"{kind}:{table}"
    finally:
        conn.close()


def _outcome(path: Path, images: np.ndarray, final) -> str:
    try:
        with SessionReader(path) as reader:
            ws = _replay(reader, images)
            if reader.damage or reader.ended_early:
                return "damage"
            try:
                assert_same_state(ws, final)
            except AssertionError:
                return "silent"
            return "harmless"
    except SessionError as exc:
        assert "\n" not in str(exc)
        return "refused"


def _alarm(signum, frame):
    raise Hang()


def test_random_damage_is_refused_reported_or_harmless(recorded, tmp_path):
    original, images, final = recorded
    rng = np.random.default_rng(int(os.environ.get("LATENT_REACH_FUZZ_SEED", "14")))
    tally: Counter[str] = Counter()
    failures: list[str] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(MUTATIONS):
            copy = tmp_path / f"m{i % 4}.session.sqlite"
            shutil.copyfile(original, copy)
            what = _mutate(copy, rng)
            signal.alarm(10)
            try:
                result = _outcome(copy, images, final)
            except Hang:
                result = "hang"
            except Exception:
                result = "traceback"
                failures.append(f"{i} {what}: {traceback.format_exc(limit=-3)}")
            finally:
                signal.alarm(0)
            if result in ("silent", "hang"):
                failures.append(f"{i} {what}: {result}")
            tally[result] += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    print(
        f"\nsession fuzz: {MUTATIONS} mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
    )
    assert not failures, "\n".join(failures[:10])
    assert tally["refused"] + tally["damage"] + tally["harmless"] == MUTATIONS
    assert tally["damage"] > 0 and tally["refused"] > 0


def test_a_damaged_index_that_hands_back_an_event_again_ends_in_a_damage_report(recorded, tmp_path):
    """Seed 47's 21st mutation flips bits so that a keyed read of the events table gives a row whose
    sequence number is not past the one before (16 where 24 was): each batch query then started
    over from there and replay never ended. Now the reader reports the damage and stops."""
    original, images, final = recorded
    rng = np.random.default_rng(47)
    copy = tmp_path / "m.session.sqlite"
    for _ in range(21):
        shutil.copyfile(original, copy)
        what = _mutate(copy, rng)
    assert what == "bytes"
    conn = sqlite3.connect(copy)
    try:
        seqs = [row[0] for row in conn.execute("SELECT seq FROM events WHERE seq > 0 ORDER BY seq")]
    finally:
        conn.close()
    assert any(b <= a for a, b in zip(seqs, seqs[1:])), "the mutation no longer damages the index"
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        assert _outcome(copy, images, final) == "damage"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_schema_byte_that_is_not_utf8_is_refused_not_a_traceback(recorded, tmp_path):
    # Found by seed 91 (mutation 620): an '_' of a name in the schema's text flipped to 0xdf;
    # SQLite quotes the malformed schema in its error, and Python's sqlite3 could not decode it.
    path, _images, _final = recorded
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big") or 65536
    tried = 0
    for pos in (i for i in range(page) if data[i] == ord("_")):
        bad = bytearray(data)
        bad[pos] ^= 0x80
        copy = tmp_path / f"bad{pos}.session.sqlite"
        copy.write_bytes(bytes(bad))
        try:
            with SessionReader(copy) as reader:
                reader.model_versions()
        except SessionError as exc:
            assert "session file" in str(exc) or "damaged" in str(exc)
        tried += 1
        copy.unlink()
    assert tried > 10
