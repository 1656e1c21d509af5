"""Write docs/scenes.md from the scene dataclasses, so the reference never drifts from the code.

Each field's explanation is its ``setting(..., doc=...)`` or the comment after it in
``game/core/scene.py``; the allowed values come from its declared ``Range`` and, for a fixed set of
words, its ``Literal`` type (``ranges.rule_for``, the loader's own rule).

    .venv/bin/python scripts/make_scene_docs.py          # rewrite docs/scenes.md
    .venv/bin/python scripts/make_scene_docs.py --check  # exit 1 if it is out of date (tests do)
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from game.core import scene as scene_module  # noqa: E402
from game.core.ranges import rule_for  # noqa: E402

DOC = ROOT / "docs" / "scenes.md"


def field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment written after the field."""
    comments: dict[tuple[str, str], str] = {}
    current = ""
    for line in Path(scene_module.__file__).read_text(encoding="utf-8").splitlines():
        m = re.match(r"^class (\w+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^    (\w+): [^=]+=.*?#\s*(.+)$", line)
        if m and current:
            comments[(current, m.group(1))] = m.group(2).strip()
    return comments


def allowed(f: dataclasses.Field, hint: object, value: object) -> str:
    """The declared range in words (types without one: any text, true/false)."""
    rule = rule_for(f, hint)
    if isinstance(value, bool):
        return "true, false"  # a bool declared with setting() only for its doc has no range
    if rule is not None:
        return rule.describe().replace("<=", "≤").replace("|", "\\|")
    if isinstance(value, bool):
        return "true, false"
    if isinstance(value, str):
        return "text"
    return ""


def render() -> str:
    comments = field_comments()
    lines = [
        "# Scene settings",
        "",
        "A scene preset is a TOML file in `scenes/`; `scenes/digits.toml` is the embedded default.",
        "Every key is optional (the default below applies); an unknown table or key, a value of the",
        "wrong type, or one outside its allowed range (every number must also be finite) is an error",
        "that names the key, the value and the range. Relative paths are relative to the scene file.",
        "",
        "This page is generated from `game/core/scene.py` by `scripts/make_scene_docs.py`.",
    ]
    defaults = scene_module.Scene()
    for f in dataclasses.fields(scene_module.Scene):
        if f.name == "source":
            continue
        section = getattr(defaults, f.name)
        cls = type(section)
        lines += ["", f"## [{f.name}]", ""]
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(cls.__name__ + "("):
            lines += [doc, ""]
        lines += ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        hints = typing.get_type_hints(cls)
        for sub in dataclasses.fields(cls):
            value = getattr(section, sub.name)
            shown = repr(value).replace("'", '"').replace("True", "true").replace("False", "false")
            meaning = sub.metadata.get("doc") or comments.get((cls.__name__, sub.name), "")
            lines.append(f"| `{sub.name}` | `{shown}` | {allowed(sub, hints[sub.name], value)} | {meaning} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not DOC.is_file() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is out of date: run scripts/make_scene_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
