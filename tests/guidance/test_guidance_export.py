"""Exports: labels CSV, safetensors weights, TensorBoard Embedding Projector files."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
from PIL import Image

from game.export import export_workspace
from game.export.projector import make_sprite, sprite_layout


def _read_tsv(path):
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_sprite_tiles_row_major():
    images = np.zeros((5, 8, 8, 1), dtype=np.uint8)
    for i in range(5):
        images[i] = 40 * (i + 1)
    sheet, tile = make_sprite(images)
    assert tile == 32 and sheet.shape == (96, 96, 3)  # 3x3 grid of 32-pixel tiles
    assert sheet[16, 16 + 32 * 1, 0] == 80  # image 1: row 0, column 1
    assert sheet[16 + 32, 16 + 32 * 1, 0] == 200  # image 4: row 1, column 1
    assert sheet[16 + 64, 16, 0] == 0  # empty tile
    grid, tile = sprite_layout(100_000, 64)
    assert grid * tile <= 8192


def test_export_workspace_files(loaded_digits, tmp_path):
    ws = loaded_digits.workspace.copy()
    ws.labels[5] = (ws.labels[5] + 1) % ws.n_classes
    weights = {k: v.clone() for k, v in loaded_digits.network.module.state_dict().items()}
    result = export_workspace(ws, weights, {5: "2026-11-23T12:00:00"}, tmp_path / "out")
    out = tmp_path / "out"
    assert result.n_changed == 1

    with open(out / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == ws.n_cards
    assert list(rows[0]) == ["card", "path", "split", "original_label", "new_label", "changed", "edit_time"]
    changed = [r for r in rows if r["changed"] == "1"]
    assert [r["card"] for r in changed] == ["5"]
    assert changed[0]["edit_time"] == "2026-11-23T12:00:00"
    assert changed[0]["new_label"] != changed[0]["original_label"]
    assert rows[5]["path"] == ws.sources[5]

    from safetensors.torch import load_file

    loaded = load_file(str(out / "weights.safetensors"))
    assert set(loaded) == set(weights)
    assert all(np.allclose(loaded[k].numpy(), weights[k].numpy()) for k in weights)

    proj = out / "projector"
    tensors = np.array(_read_tsv(proj / "tensors.tsv"), dtype=np.float64)
    assert tensors.shape == (ws.n_cards, 3)
    assert np.allclose(tensors, ws.positions, atol=1e-4)
    features = np.array(_read_tsv(proj / "features.tsv"), dtype=np.float64)
    assert features.shape == ws.features.shape
    meta = _read_tsv(proj / "metadata.tsv")
    assert meta[0] == ["label", "original_label", "predicted", "changed", "split", "path"]
    assert len(meta) == ws.n_cards + 1
    assert meta[1 + 5][3] == "1"

    config = (proj / "projector_config.pbtxt").read_text()
    dims = [int(x) for x in re.findall(r"single_image_dim: (\d+)", config)]
    assert config.count("embeddings {") == 2
    assert 'tensor_path: "tensors.tsv"' in config and 'metadata_path: "metadata.tsv"' in config
    assert 'image_path: "sprite.png"' in config
    sprite = Image.open(proj / "sprite.png")
    tile = dims[0]
    assert dims == [tile] * 4  # width and height, for both embeddings
    grid = int(np.ceil(np.sqrt(ws.n_cards)))
    assert sprite.size == (grid * tile, grid * tile)
    # card 0 sits in the top-left tile: the sprite shows its image there (8x8 scaled up)
    pixels = np.asarray(sprite)[:tile, :tile, 0]
    expected = np.asarray(
        Image.fromarray(ws.images[0, :, :, 0]).resize((tile, tile), Image.Resampling.NEAREST)
    )
    assert np.array_equal(pixels, expected)

    manifest = json.loads((out / "export.json").read_text())
    assert manifest["relabelled"] == 1 and manifest["cards"] == ws.n_cards


def test_export_without_weights_or_features(loaded_digits, tmp_path):
    ws = loaded_digits.workspace.copy()
    result = export_workspace(ws, None, None, tmp_path, include_features=False)
    assert result.n_changed == 0
    assert not (tmp_path / "weights.safetensors").exists()
    assert not (tmp_path / "projector" / "features.tsv").exists()
    assert (tmp_path / "projector" / "projector_config.pbtxt").read_text().count("embeddings {") == 1
