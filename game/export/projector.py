"""The TensorBoard Embedding Projector format: tensors, metadata, a sprite and the config.

The projector reads a ``projector_config.pbtxt`` that lists embeddings, each a TSV of vectors
(one row per point, tab-separated, no header), a metadata TSV (a header row when there is more
than one column, then one row per point) and optionally a sprite: one PNG with every image tiled
row-major in a square grid, with ``single_image_dim`` giving the size of one tile. Paths in the
config are relative to the folder it sits in, so the folder can be moved or zipped as is.

Two embeddings are written: ``layout`` (the 3-D world positions the person arranged; the
projector shows them as they are) and ``features`` (the network's features, for the projector's
own PCA / t-SNE / UMAP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

MAX_SPRITE_SIDE = 8192  # the projector refuses larger sprite images
MIN_TILE = 32  # tiny images (8x8 digits) are enlarged so they can be told apart


def _tsv_cell(value: object) -> str:
    """Tabs and newlines would break the TSV; the projector has no quoting."""
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_tensor_tsv(path: Path, values: np.ndarray) -> None:
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    np.savetxt(path, v, delimiter="\t", fmt="%.6g")


def write_metadata_tsv(path: Path, columns: dict[str, Sequence[object]]) -> None:
    """A header row and one row per point (the projector needs the header for 2+ columns)."""
    names = list(columns)
    n = len(columns[names[0]])
    lines = ["\t".join(_tsv_cell(c) for c in names)]
    for i in range(n):
        lines.append("\t".join(_tsv_cell(columns[c][i]) for c in names))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def sprite_layout(n_images: int, image_side: int) -> tuple[int, int]:
    """``(grid side in tiles, tile side in pixels)`` so the sprite fits ``MAX_SPRITE_SIDE``."""
    grid = max(1, math.ceil(math.sqrt(n_images)))
    tile = max(image_side, MIN_TILE)
    tile = min(tile, MAX_SPRITE_SIDE // grid)
    if tile < 1:
        raise ValueError(f"{n_images} images do not fit a {MAX_SPRITE_SIDE}-pixel sprite")
    return grid, tile


def make_sprite(images: np.ndarray) -> tuple[np.ndarray, int]:
    """Tile ``(N, H, W, C)`` uint8 images row-major into one RGB square; returns it and the tile side.

    Non-square images are letterboxed into square tiles; empty tiles stay black.
    """
    images = np.asarray(images, dtype=np.uint8)
    n, h, w = images.shape[:3]
    grid, tile = sprite_layout(n, max(h, w))
    sheet = np.zeros((grid * tile, grid * tile, 3), dtype=np.uint8)
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    for i in range(n):
        img = images[i]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        small = np.asarray(Image.fromarray(img[..., :3]).resize(size, resample))
        r, c = divmod(i, grid)
        y0 = r * tile + (tile - size[1]) // 2
        x0 = c * tile + (tile - size[0]) // 2
        sheet[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return sheet, tile


def projector_config(embeddings: list[dict[str, str]], tile: int | None) -> str:
    """The ``projector_config.pbtxt`` text (protobuf text format) for ``embeddings``."""
    out = []
    for e in embeddings:
        out.append("embeddings {")
        out.append(f'  tensor_name: "{e["name"]}"')
        out.append(f'  tensor_path: "{e["tensor_path"]}"')
        out.append(f'  metadata_path: "{e["metadata_path"]}"')
        if tile is not None:
            out.append("  sprite {")
            out.append(f'    image_path: "{e["sprite_path"]}"')
            out.append(f"    single_image_dim: {tile}")
            out.append(f"    single_image_dim: {tile}")
            out.append("  }")
        out.append("}")
    return "\n".join(out) + "\n"


def write_projector(
    out_dir: str | Path,
    positions: np.ndarray,
    metadata: dict[str, Sequence[object]],
    images: np.ndarray | None = None,
    features: np.ndarray | None = None,
) -> list[Path]:
    """Write the projector files into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    write_tensor_tsv(out / "tensors.tsv", positions)
    write_metadata_tsv(out / "metadata.tsv", metadata)
    written += [out / "tensors.tsv", out / "metadata.tsv"]
    embeddings = [
        {
            "name": "layout",
            "tensor_path": "tensors.tsv",
            "metadata_path": "metadata.tsv",
            "sprite_path": "sprite.png",
        }
    ]
    if features is not None:
        write_tensor_tsv(out / "features.tsv", features)
        written.append(out / "features.tsv")
        embeddings.append({**embeddings[0], "name": "features", "tensor_path": "features.tsv"})
    tile = None
    if images is not None and len(images):
        sheet, tile = make_sprite(images)
        Image.fromarray(sheet).save(out / "sprite.png")
        written.append(out / "sprite.png")
    (out / "projector_config.pbtxt").write_text(projector_config(embeddings, tile), encoding="utf-8")
    written.append(out / "projector_config.pbtxt")
    return written
