from pathlib import Path

import pytest

from game.core.scene import SceneError, list_scenes, load_scene, scene_from_dict


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
