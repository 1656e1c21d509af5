"""VR tests need the ``openvr`` package's library to load (its structs are real in the double).

Where it cannot load (a platform pyopenvr ships no library for), the modules that build real
``openvr`` structs are not collected instead of failing at import; the rest still runs.
"""

try:
    import openvr  # noqa: F401
except (ImportError, OSError):
    collect_ignore_glob = [
        "test_vr_backends.py",
        "test_vr_launch_and_grab.py",
        "test_vr_runtime.py",
        "test_vr_stereo.py",
    ]
