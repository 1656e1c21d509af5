"""Where session files live and how a name on the command line finds one.

Default: the user data folder (``platformdirs``) / ``sessions``; ``$LATENT_REACH_SESSIONS`` or an
explicit folder (the ``--sessions`` flag) overrides it, so tests and demos never touch the
person's real sessions.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from game.core.errors import UserError

SUFFIX = ".session.sqlite"
ENV_VAR = "LATENT_REACH_SESSIONS"


class SessionError(UserError):
    """A session file that cannot be used: missing, newer, damaged, or lacking a checkpoint."""


def sessions_dir(folder: str | Path | None = None, create: bool = True) -> Path:
    """The sessions folder: ``folder`` if given, else ``$LATENT_REACH_SESSIONS``, else user data."""
    if folder:
        path = Path(folder).expanduser()
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
    else:
        from platformdirs import user_data_dir

        path = Path(user_data_dir("latent-reach")) / "sessions"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def new_session_path(folder: str | Path | None = None, label: str = "") -> Path:
    """A fresh, sortable file name: ``20261123-141502-digits.session.sqlite`` (never reused)."""
    root = sessions_dir(folder)
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "session"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{slug}{SUFFIX}"
    i = 2
    while path.exists():
        path = root / f"{stamp}-{slug}-{i}{SUFFIX}"
        i += 1
    return path


def list_sessions(folder: str | Path | None = None) -> list[Path]:
    """Session files in the folder, least recently written first."""
    root = sessions_dir(folder, create=False)
    if not root.is_dir():
        return []
    return sorted(root.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime_ns, p.name))


def resolve_session(name: str, folder: str | Path | None = None) -> Path:
    """A path, a file name in the sessions folder, or ``latest`` -> an existing session file."""
    if name == "latest":
        found = list_sessions(folder)
        if not found:
            raise SessionError(f"no sessions recorded yet in {sessions_dir(folder, create=False)}")
        return found[-1]
    path = Path(name).expanduser()
    if path.is_file():
        return path
    root = sessions_dir(folder, create=False)
    for candidate in (root / name, root / f"{name}{SUFFIX}"):
        if candidate.is_file():
            return candidate
    raise SessionError(f"session file not found: {name} (also looked in {root})")
