"""Re-sealing a session file after a test edits it: every checksum recomputed as the recorder
would have, so the reader's own validation (types, shapes, unknown kinds) can be tested behind
a valid chain (a file edited by a newer version, or by someone who knows the format)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from game.sessions import schema


def reseal(path: str | Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        info = json.loads(meta["integrity"])
        for name, blob in conn.execute("SELECT name, npy FROM initial_state").fetchall():
            conn.execute("UPDATE initial_state SET digest = ? WHERE name = ?", (schema.digest(blob), name))
        arrays = dict(conn.execute("SELECT name, digest FROM initial_state"))
        seal = schema.start_digest(meta, info["keys"], arrays)
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'integrity'",
            (json.dumps({"keys": info["keys"], "digest": seal}),),
        )
        prev, last = seal, 0
        for seq, t, kind, card, fields in conn.execute(
            "SELECT seq, t, kind, card, fields FROM events ORDER BY seq"
        ).fetchall():
            digests = {}
            for name, blob in conn.execute(
                "SELECT name, npy FROM event_arrays WHERE seq = ?", (seq,)
            ).fetchall():
                digests[name] = schema.digest(blob)
                conn.execute(
                    "UPDATE event_arrays SET digest = ? WHERE seq = ? AND name = ?",
                    (digests[name], seq, name),
                )
            prev = schema.event_link(prev, seq, float(t), kind, card, fields, digests)
            conn.execute("UPDATE events SET chain = ? WHERE seq = ?", (prev, seq))
            last = seq
        chains = {"events": prev}
        prev, n = seal, 0
        for rowid, t0, t1, k, times, values in conn.execute(
            'SELECT rowid, t_start, t_end, n, times, "values" FROM poses ORDER BY rowid'
        ).fetchall():
            prev, n = schema.pose_link(prev, t0, t1, k, times, values), n + 1
            conn.execute("UPDATE poses SET chain = ? WHERE rowid = ?", (prev, rowid))
        chains["poses"], rows = prev, {"events": last, "poses": n}
        prev, n = seal, 0
        for row_id, version, t, sha in conn.execute(
            "SELECT id, version, t, sha256 FROM models ORDER BY id"
        ).fetchall():
            prev, n = schema.model_link(prev, row_id, version, t, sha), n + 1
            conn.execute("UPDATE models SET chain = ? WHERE id = ?", (prev, row_id))
        chains["models"], rows["models"] = prev, n
        if "end" in meta:
            end = json.loads(meta["end"])
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            end.update(last_seq=last, chains=chains, rows=rows, meta=schema.meta_digest(meta))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'end'", (json.dumps(end),))
    conn.close()
