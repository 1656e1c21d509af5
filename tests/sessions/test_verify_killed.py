"""``replay --verify`` on a session killed (kill -9) while its first fine-tune ran (issue 14).

It used to print OK and then abort with ``terminate called without an active exception`` (exit
134): the re-run started the recorded fine-tune, nothing waited for it, and the worker thread was
still inside torch when the interpreter finalised. The exit handler of ``game.core.worker`` joins
workers for a bounded time only, so on a busy machine the abort came back. Here that bound is set
to zero so the outcome does not depend on the machine's load: the command must end with exit 0,
say the last fine-tune was not compared, and leave no worker thread alive.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCENE = """
[scene]
name = "Digits (killed during a fine-tune)"
[dataset]
kind = "digits"
[layout]
early_iterations = 50
iterations = 100
update_iterations = 40
[learning]
job_process = false
"""


def _finetune_started(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT fields FROM events WHERE kind = 'job'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # the writer holds it, or the tables are not there yet
    return any('"task":"finetune"' in r[0] and '"state":"queued"' in r[0] for r in rows)


@pytest.fixture(scope="module")
def killed_session(tmp_path_factory, loaded_digits) -> Path:
    """A demo recording killed with SIGKILL as soon as its first fine-tune was queued.

    ``loaded_digits`` trains the digits network into this run's cache first, so the demo child
    (same ``LATENT_REACH_CACHE``) only loads it.
    """
    root = tmp_path_factory.mktemp("killed")
    scene = root / "scene.toml"
    scene.write_text(SCENE)
    sessions = root / "sessions"
    cmd = [sys.executable, "-m", "game", "demo", "--out", str(root / "out"), "--scene", str(scene)]
    cmd += ["--sessions", str(sessions), "--quiet", "--threads", "1", "--renderer", "plot"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    found: Path | None = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(sessions.glob("*.session.sqlite")) if sessions.is_dir() else []
            if files and _finetune_started(files[0]):
                found = files[0]
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert found is not None, "the demo never queued a fine-tune"
    return found


VERIFY = textwrap.dedent(
    """
    import sys, threading
    import game.core.worker as worker
    worker.EXIT_JOIN_SECONDS = 0.0  # the exit handler does not wait: as on a machine too busy for it
    from game.cli import main
    code = main(["replay", sys.argv[1], "--verify", "--threads", "1"])
    alive = [t.name for t in threading.enumerate() if t.name.startswith("latent-reach-worker")]
    print("ALIVE", alive, flush=True)
    sys.exit(code)
    """
)


def test_verify_of_a_killed_session_exits_cleanly(killed_session):
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "-c", VERIFY, str(killed_session)],
            cwd=ROOT,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "terminate called" not in run.stderr, run.stderr
        assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
        assert "ALIVE []" in run.stdout, run.stdout  # nothing left inside torch at exit
        assert "OK: everything matches" in run.stdout
        assert "its result was never recorded, so it was not compared" in run.stdout
        assert "recording ended early" in run.stderr
