"""No Unix-only call outside a guarded place in game/ (issue 16: the program must run on Windows).

A call is guarded when it sits under an ``if`` that tests the platform (``sys.platform``,
``os.name``, ``platform.system()``) or the call's presence (``hasattr``), or inside a ``try`` that
catches ``AttributeError``/``ImportError`` (what a missing function or module raises). Anything
else on the list below fails this test with its file and line, so the next ``os.nice`` or
``pass_fds`` is caught on Linux before a Windows player meets it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Attributes that exist only on Unix (or behave only there), by module.
# fmt: off
UNIX_ATTRIBUTES = {
    "os": {
        "fork", "forkpty", "nice", "set_blocking", "get_blocking", "getuid", "geteuid", "getgid",
        "getegid", "setuid", "setgid", "setsid", "getsid", "killpg", "getpgid", "setpgid", "setpgrp",
        "getpgrp", "wait3", "wait4", "mkfifo", "mknod", "sysconf", "getloadavg", "uname", "chown",
        "lchown", "fchown", "sched_setaffinity", "sched_getaffinity", "pipe2", "posix_spawn",
        "register_at_fork", "openpty", "getpriority", "setpriority", "WNOHANG",
    },
    "signal": {
        "SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGQUIT", "SIGSTOP",
        "SIGCONT", "SIGPIPE", "SIGTSTP", "alarm", "setitimer", "pause", "siginterrupt", "pthread_kill",
    },
    "select": {"select", "poll", "epoll", "kqueue"},  # select() takes no pipes on Windows
}
UNIX_MODULES = {"fcntl", "resource", "pwd", "grp", "termios", "tty", "pty", "posix", "crypt", "syslog"}
UNIX_KEYWORDS = {"pass_fds", "preexec_fn", "start_new_session", "restore_signals"}  # subprocess.Popen
# fmt: on
GUARD_WORDS = ("sys.platform", "os.name", "platform.system", "hasattr(")
GUARD_EXCEPTIONS = {"AttributeError", "ImportError", "ModuleNotFoundError"}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST], source: str) -> bool:
    child, parent = node, parents.get(node)
    while parent is not None:
        if (
            isinstance(parent, (ast.If, ast.IfExp, ast.While))
            and child is not parent.test
            and any(w in (ast.get_source_segment(source, parent.test) or "") for w in GUARD_WORDS)
        ):
            return True
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                if any(isinstance(n, ast.Name) and n.id in GUARD_EXCEPTIONS for n in names):
                    return True
        child, parent = parent, parents.get(parent)
    return False


def unguarded_unix_calls(source: str, filename: str = "<code>") -> list[str]:
    """``file:line: what`` for every Unix-only call, attribute, keyword or import not guarded."""
    tree = ast.parse(source, filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in UNIX_ATTRIBUTES.get(node.value.id, ()):
                what = f"{node.value.id}.{node.attr}"
        elif isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name.split(".")[0] in UNIX_MODULES]
            what = f"import {bad[0]}" if bad else None
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNIX_MODULES:
                what = f"from {node.module} import"
            else:
                bad = [a.name for a in node.names if a.name in UNIX_ATTRIBUTES.get(node.module, ())]
                what = f"from {node.module} import {bad[0]}" if bad else None
        elif isinstance(node, ast.keyword) and node.arg in UNIX_KEYWORDS:
            what = f"{node.arg}="
        if what is not None and not _guarded(node, parents, source):
            found.append(f"{filename}:{node.lineno}: {what}")
    return found


def test_the_check_catches_what_it_should():
    assert unguarded_unix_calls("import os\nos.nice(5)\n") == ["<code>:2: os.nice"]
    assert unguarded_unix_calls("import os\nos.set_blocking(3, False)\n")
    assert unguarded_unix_calls("import signal, os\nos.kill(1, signal.SIGKILL)\n")
    assert unguarded_unix_calls("import fcntl\n")
    assert unguarded_unix_calls("from os import fork\n")
    assert unguarded_unix_calls("import select\nselect.select([r], [], [], 0)\n")
    assert unguarded_unix_calls("import subprocess\nsubprocess.Popen(['x'], pass_fds=(3,))\n")
    # os.nice raises AttributeError on Windows: an OSError handler does not guard it.
    assert unguarded_unix_calls("import os\ntry:\n    os.nice(5)\nexcept OSError:\n    pass\n")
    # Guarded: a platform test, a presence test, or a handler for what a missing name raises.
    assert not unguarded_unix_calls("import os\nif hasattr(os, 'nice'):\n    os.nice(5)\n")
    assert not unguarded_unix_calls("import os, sys\nif sys.platform != 'win32':\n    os.nice(5)\n")
    assert not unguarded_unix_calls("try:\n    import fcntl\nexcept ImportError:\n    fcntl = None\n")
    assert not unguarded_unix_calls("import os\nx = os.getuid() if os.name == 'posix' else 0\n")
    assert unguarded_unix_calls("import os\nif os.getuid() == 0:\n    pass\n")  # the test is no guard


def _sources() -> list[Path]:
    return sorted(p for p in (ROOT / "game").rglob("*.py") if "__pycache__" not in p.parts)


def test_no_unguarded_unix_only_call_in_game():
    files = _sources()
    assert len(files) > 50  # the walk found the package
    found = []
    for path in files:
        found += unguarded_unix_calls(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "Unix-only calls outside a guard:\n" + "\n".join(found)


@pytest.mark.parametrize("name", ["game/learning/jobprocess.py"])
def test_the_job_process_uses_spawn_and_no_inherited_descriptors(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    assert re.search(r'^START_METHOD(: \w+)? = "spawn"', text, re.MULTILINE)
    assert "subprocess" not in text and "os.pipe" not in text
