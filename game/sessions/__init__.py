"""Sessions: recording events and poses to SQLite as they happen, reading them back, replay.

No panda3d here: a replay drives a ``Workspace`` (and, through callbacks, a camera), so tests
and notebooks can replay a session without a window.
"""

from game.sessions.paths import SessionError, list_sessions, new_session_path, resolve_session, sessions_dir
from game.sessions.reader import PoseTrack, RecordedEvent, SessionReader
from game.sessions.recorder import SessionRecorder, dataset_fingerprint

__all__ = [
    "PoseTrack",
    "RecordedEvent",
    "SessionError",
    "SessionReader",
    "SessionRecorder",
    "dataset_fingerprint",
    "list_sessions",
    "new_session_path",
    "resolve_session",
    "sessions_dir",
]
