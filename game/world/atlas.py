"""Pack card images into 2-D texture-array layers (pure numpy, so it is testable without a GPU).

Each layer is a grid of equal power-of-two tiles. Tiles aligned on power-of-two boundaries keep
mip levels up to the tile size from mixing neighbours, so large images can be mip-mapped while
8x8 digits stay crisp with nearest filtering. Packing many tiles per layer keeps the layer count
far below the GPU limit (2048 on llvmpipe, which hangs silently beyond it); when even that is not
enough the caller splits the cards into several arrays (one draw call each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class AtlasLayout:
    tile: int  # tile side in texels
    grid: int  # tiles per layer side
    layers: int  # layers in all
    count: int  # images packed

    @property
    def per_layer(self) -> int:
        return self.grid * self.grid

    @property
    def side(self) -> int:
        return self.tile * self.grid

    def slots(self, first: int = 0) -> np.ndarray:
        """``(count, 3)`` float32 rows of (layer, tile x, tile y) for each image."""
        i = np.arange(first, first + self.count)
        j = i % self.per_layer
        return np.stack([i // self.per_layer, j % self.grid, j // self.grid], axis=1).astype(np.float32)


def tile_side(height: int, width: int, cap: int = 64) -> int:
    """Power-of-two tile side that holds an image of this size, at most ``cap``."""
    side = 1 << max(0, math.ceil(math.log2(max(height, width, 1))))
    return int(min(side, cap))


def plan(count: int, tile: int, layer_side: int = 1024) -> AtlasLayout:
    """Tiles per layer and layer count for ``count`` images of side ``tile``."""
    grid = max(1, layer_side // tile)
    grid = max(1, min(grid, 1 << math.ceil(math.log2(max(1, math.ceil(math.sqrt(max(count, 1))))))))
    layers = max(1, math.ceil(count / (grid * grid)))
    return AtlasLayout(tile=tile, grid=grid, layers=layers, count=count)


def to_rgba_tiles(images: np.ndarray, tile: int) -> np.ndarray:
    """``(N, tile, tile, 4)`` uint8 RGBA tiles: grey expanded, resized to the tile, centred."""
    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    n, h, w, c = imgs.shape
    if c == 1:
        imgs = np.repeat(imgs, 3, axis=3)
    elif c == 4:
        imgs = imgs[..., :3]
    if max(h, w) > tile:
        imgs = _resize(imgs, tile)
        n, h, w, _ = imgs.shape
    out = np.zeros((n, tile, tile, 4), dtype=np.uint8)
    out[..., 3] = 255
    y0, x0 = (tile - h) // 2, (tile - w) // 2
    out[:, y0 : y0 + h, x0 : x0 + w, :3] = imgs
    return out


def thumbnails(images: np.ndarray, tile: int, thumb: int, batch: int = 2048) -> np.ndarray:
    """``(N, thumb, thumb, 4)`` tiles: each image at ``tile`` (as ``to_rgba_tiles``), then box-averaged
    down to ``thumb`` (both powers of two), in batches so the full tiles never all exist at once
    (at 50k cards of 64 px they would be 820 MB)."""
    n = len(images)
    out = np.empty((n, thumb, thumb, 4), dtype=np.uint8)
    f = max(1, tile // thumb)
    for first in range(0, n, batch):
        full = to_rgba_tiles(images[first : first + batch], tile)
        if f > 1:
            # Box average as a sum of f*f strided views (integer, far faster than a float mean).
            acc = np.zeros((len(full), thumb, thumb, 4), dtype=np.uint32)
            for dy in range(f):
                for dx in range(f):
                    acc += full[:, dy::f, dx::f]
            full = ((acc + (f * f) // 2) // (f * f)).astype(np.uint8)
        out[first : first + len(full)] = full
    return out


def to_panda_tiles(tiles: np.ndarray) -> np.ndarray:
    """``(N, t, t, 4)`` RGBA tiles in Panda3D's RAM order (rows bottom-up, BGRA), as
    ``pack_layers`` writes them."""
    return tiles[:, ::-1, :, [2, 1, 0, 3]]


def _resize(imgs: np.ndarray, tile: int) -> np.ndarray:
    """Shrink images so the longer side is ``tile`` (area filter via Pillow)."""
    from PIL import Image

    n, h, w, _ = imgs.shape
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BOX)) for im in imgs])


def pack_layers(tiles: np.ndarray, layout: AtlasLayout) -> np.ndarray:
    """Arrange tiles into ``(layers, side, side, 4)`` layer images in Panda3D's RAM order.

    Panda3D stores rows bottom-up and channels as BGRA, so tiles are flipped vertically and the
    colour channels swapped here; the shader then samples with v pointing up.
    """
    g, t = layout.grid, layout.tile
    total = layout.layers * layout.per_layer
    padded = np.zeros((total, t, t, 4), dtype=np.uint8)
    padded[: len(tiles)] = to_panda_tiles(tiles)
    grid = padded.reshape(layout.layers, g, g, t, t, 4)  # layer, tile y, tile x, row, col
    return np.ascontiguousarray(grid.transpose(0, 1, 3, 2, 4, 5)).reshape(
        layout.layers, layout.side, layout.side, 4
    )
