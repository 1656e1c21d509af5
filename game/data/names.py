"""A printable form of any file name the filesystem allows, for every place a name is shown.

On Linux a file name is bytes; Python decodes the ones that are not valid UTF-8 with
``surrogateescape``, giving a ``str`` that cannot be encoded again. Such a string aborts
Panda3D's text renderer (``std::logic_error``) and fails ``UnicodeEncodeError`` in a UTF-8 CSV,
JSON-to-UTF-8 or a print to a UTF-8 terminal. ``display_name`` turns every byte that was not
UTF-8 into ``\\xNN`` and every unprintable character into ``\\uNNNN`` (control characters, a
newline in a name), so the result is plain printable text that still points at the file.
"""

from __future__ import annotations

import os
from pathlib import Path


def display_name(name: str | bytes | os.PathLike[str]) -> str:
    """``name`` as printable text; names that were already printable UTF-8 are unchanged."""
    text = os.fsdecode(os.fspath(name)) if not isinstance(name, str) else name
    if text.isprintable() and not _has_surrogates(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def display_path(path: str | Path) -> str:
    """A path's printable form (see ``display_name``)."""
    return display_name(str(path))


def _has_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
