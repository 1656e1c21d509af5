import dataclasses
import math
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from game.core.ranges import rule_for
from game.core.scene import Scene, SceneError, list_scenes, load_scene, scene_from_dict


def test_default_scene_loads():
    scene = load_scene()
    assert scene.dataset.kind == "digits"
    assert scene.network.arch == "small_cnn"
    assert scene.layout.volume == [4.0, 4.0, 1.8]


def test_every_shipped_scene_is_valid():
    scenes = list_scenes()
    assert any(p.name == "digits.toml" for p in scenes)
    for path in scenes:
        load_scene(path)


def test_unknown_key_names_the_key():
    with pytest.raises(SceneError, match=r"layout\.perplexitty"):
        scene_from_dict({"layout": {"perplexitty": 30}})


def test_unknown_table_is_an_error():
    with pytest.raises(SceneError, match=r"\[netwrok\]"):
        scene_from_dict({"netwrok": {}})


def test_wrong_type_names_the_key():
    with pytest.raises(SceneError, match=r"layout\.pca_dims: expected int"):
        scene_from_dict({"layout": {"pca_dims": "fifty"}})
    with pytest.raises(SceneError, match=r"scene\.vr: expected bool"):
        scene_from_dict({"scene": {"vr": 1}})


def test_bad_values_are_errors():
    with pytest.raises(SceneError, match="dataset.kind"):
        scene_from_dict({"dataset": {"kind": "imagenet"}})
    with pytest.raises(SceneError, match="dataset.path"):
        scene_from_dict({"dataset": {"kind": "folder"}})
    with pytest.raises(SceneError, match="network.arch"):
        scene_from_dict({"network": {"arch": "vgg"}})
    with pytest.raises(SceneError, match="layout.volume"):
        scene_from_dict({"layout": {"volume": [1.0, 2.0]}})
    with pytest.raises(SceneError, match="network.batch_size"):
        scene_from_dict({"network": {"batch_size": 0}})  # was a range() traceback in inference
    with pytest.raises(SceneError, match="layout.iterations"):
        scene_from_dict({"layout": {"iterations": -5}})
    with pytest.raises(SceneError, match="learning.relayout"):
        scene_from_dict({"learning": {"relayout": "partial"}})
    with pytest.raises(SceneError, match="learning.relayout_keep"):
        scene_from_dict({"learning": {"relayout_keep": 1.5}})


def test_word_choices_come_from_the_literal_types():
    """dataset.kind, network.arch and learning.relayout are typed Literal[...]: the loader, its
    error messages and docs/scenes.md take the allowed words from those types (declared once)."""
    from game.core import scene as scene_module

    for section, key, alias in (
        ("dataset", "kind", scene_module.DatasetKind),
        ("network", "arch", scene_module.ArchName),
        ("learning", "relayout", scene_module.RelayoutMethod),
    ):
        words = typing.get_args(alias)
        rules = {(s, k): rule for s, k, _, rule in FIELDS}
        assert rules[(section, key)].choices == words
        for word in words:
            extra = {"dataset": {"path": "imgs"}} if word == "folder" else {}
            loaded = scene_from_dict({**extra, section: {**extra.get(section, {}), key: word}})
            assert getattr(getattr(loaded, section), key) == word
        with pytest.raises(SceneError) as info:
            scene_from_dict({section: {key: "nonsense"}}, source="s.toml")
        text = str(info.value)
        assert f"{section}.{key} = " in text and all(f'"{w}"' in text for w in words), text
        with pytest.raises(SceneError, match=rf"{section}\.{key}: expected str"):
            scene_from_dict({section: {key: 3}})
    # network.arch is Literal[...] | str: any "torchvision:NAME" too, nothing else.
    assert (
        scene_from_dict({"network": {"arch": "torchvision:resnet18"}}).network.arch == "torchvision:resnet18"
    )


def test_choices_declared_both_in_the_type_and_in_setting_are_refused():
    from game.core.ranges import setting

    @dataclasses.dataclass
    class Twice:
        mode: typing.Literal["a", "b"] = setting("a", choices=("a", "b"))

    (f,) = dataclasses.fields(Twice)
    with pytest.raises(TypeError, match="declared twice"):
        rule_for(f, typing.get_type_hints(Twice)["mode"])


def test_int_is_accepted_for_float():
    scene = scene_from_dict({"layout": {"perplexity": 20}})
    assert scene.layout.perplexity == 20.0 and isinstance(scene.layout.perplexity, float)


def test_invalid_toml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[layout\n")
    with pytest.raises(SceneError, match="not a valid TOML"):
        load_scene(bad)
    with pytest.raises(SceneError, match="not found"):
        load_scene(tmp_path / "missing.toml")


def test_relative_paths_resolve_next_to_scene(tmp_path: Path):
    f = tmp_path / "s.toml"
    f.write_text('[dataset]\nkind = "folder"\npath = "imgs"\n')
    scene = load_scene(f)
    assert scene.resolve_path(scene.dataset.path) == tmp_path / "imgs"


def test_scene_reference_is_up_to_date():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "make_scene_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


# --- declared ranges (issue 14): every value either loads in range or is a one-line error ---------


def _fields() -> list[tuple[str, str, object, object]]:
    """(section, key, type hint, Range) of every scene setting."""
    out = []
    for section in dataclasses.fields(Scene):
        if section.name == "source":
            continue
        cls = type(getattr(Scene(), section.name))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out.append((section.name, f.name, hints[f.name], rule_for(f, hints[f.name])))
    return out


FIELDS = _fields()


def test_every_number_has_a_declared_range():
    missing = [
        f"{s}.{k}"
        for s, k, hint, rule in FIELDS
        if (hint in (int, float) or typing.get_origin(hint) is list) and rule is None
    ]
    assert not missing, f"declare a range with setting(...): {missing}"


_numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=2.0),
)
_values = st.one_of(
    _numbers,
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["digits", "folder", "all", "local", "full", "alexnet", "torchvision:resnet18"]),
    st.lists(_numbers, max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(
    picks=st.lists(st.tuples(st.sampled_from(range(len(FIELDS))), _values), min_size=1, max_size=4),
    data_path=st.booleans(),
)
def test_random_values_load_in_range_or_name_the_key(picks, data_path):
    table: dict[str, dict] = {}
    for i, value in picks:
        section, key, _, _ = FIELDS[i]
        table.setdefault(section, {})[key] = value
    if data_path:
        table.setdefault("dataset", {}).setdefault("path", "imgs")
    try:
        scene = scene_from_dict(table, source="s.toml")
    except SceneError as exc:
        text = str(exc)
        assert "\n" not in text
        assert text.startswith("s.toml: ")
        named = [f"{s}.{k}" for s, k, _, _ in FIELDS if s in table and k in table[s]]
        assert any(name in text for name in named) or "dataset.path" in text, text
        return
    # Loaded: every number it holds is finite and inside its declared range.
    for section, key, _, rule in FIELDS:
        value = getattr(getattr(scene, section), key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float):
                assert math.isfinite(item), (section, key, item)
            if rule is not None:
                assert rule.accepts(item), (section, key, item)
        if rule is not None and rule.length is not None:
            assert len(value) == rule.length


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("dataset", "image_size", -5),
        ("dataset", "image_size", 30000),
        ("dataset", "seed", -1),
        ("layout", "seed", -1),
        ("layout", "perplexity", math.nan),
        ("dataset", "max_images", -3),
        ("layout", "volume", [math.nan, 1.0, 1.0]),
        ("layout", "volume", [math.inf, 1.0, 1.0]),
        ("layout", "theta", math.nan),
        ("network", "train_epochs", -1),
        ("learning", "learning_rate", math.nan),
        ("world", "card_size", math.nan),
        ("world", "background", [0.1, 0.2, 2.0]),
    ],
)
def test_the_reported_bad_values_are_refused_naming_key_value_and_range(section, key, value):
    with pytest.raises(SceneError) as info:
        scene_from_dict({section: {key: value}}, source="s.toml")
    text = str(info.value)
    assert f"{section}.{key} = " in text and "allowed:" in text, text
    assert repr(value)[:20] in text


def test_max_images_accepts_all():
    assert scene_from_dict({"dataset": {"max_images": "all"}}).dataset.max_images == 0
    assert scene_from_dict({"dataset": {"max_images": 5}}).dataset.max_images == 5


def test_bad_scene_file_is_one_line_on_the_command_line(tmp_path: Path, capsys):
    from game.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[layout]\nperplexity = nan\n")
    assert main(["project", "--scene", str(bad), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latent-reach: error: ") and "\n" not in err
    assert "layout.perplexity = nan" in err and "allowed: 0 < x" in err
    assert main(["project", "--scene", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_key_above_every_table_names_the_table_it_belongs_under(tmp_path):
    """``name = "..."`` at the top of a scene file (found writing one by hand) said "unknown table
    [name]"; the message now says it is a key and where it goes."""
    path = tmp_path / "mine.toml"
    path.write_text('name = "my photos"\n[dataset]\nkind = "digits"\n', encoding="utf-8")
    with pytest.raises(SceneError, match=r"key 'name' is outside every table; it belongs under \[scene\]"):
        load_scene(path)
    path.write_text("colour = 3\n", encoding="utf-8")
    with pytest.raises(SceneError, match=r"key 'colour' is outside every table \(tables: scene, "):
        load_scene(path)
    path.write_text("[colour]\nx = 3\n", encoding="utf-8")
    with pytest.raises(SceneError, match=r"unknown table \[colour\]"):
        load_scene(path)
