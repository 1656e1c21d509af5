"""Turning heat maps into pictures: colourised overlays, plain heat textures, side-by-side panels.

All outputs are RGBA uint8 ``(H, W, 4)`` so the world can upload them straight into a texture
(``panel.set_overlay(rgba)``) and the CLI can write them with Pillow. Pure numpy + OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` -> ``(H, W, 3)``."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def colourise(heat: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """A [0, 1] map -> RGB uint8 through an OpenCV colour map (JET by default: blue cold, red hot)."""
    h8 = np.clip(np.asarray(heat, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(h8, colormap)[:, :, ::-1].copy()  # OpenCV is BGR


def overlay(
    image: np.ndarray, heat: np.ndarray, alpha: float = 0.6, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """The image with the colourised heat map blended over it, opaque RGBA uint8 at image size.

    The blend weight grows with the heat (from a quarter of ``alpha`` to ``alpha``) so cold parts
    of the map leave the image readable and hot parts show clearly.
    """
    rgb = to_rgb(image).astype(np.float32)
    heat = _fit(heat, rgb.shape[:2])
    colour = colourise(heat, colormap).astype(np.float32)
    w = (alpha * (0.25 + 0.75 * heat))[:, :, None]
    out = rgb * (1.0 - w) + colour * w
    rgba = np.empty(rgb.shape[:2] + (4,), dtype=np.uint8)
    rgba[:, :, :3] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    rgba[:, :, 3] = 255
    return rgba


def heat_rgba(heat: np.ndarray, colormap: int = cv2.COLORMAP_JET, max_alpha: float = 0.8) -> np.ndarray:
    """The heat map alone with alpha = heat: a transparent layer to put over a card's texture."""
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    rgba = np.empty(heat.shape + (4,), dtype=np.uint8)
    rgba[:, :, :3] = colourise(heat, colormap)
    rgba[:, :, 3] = np.clip(heat * max_alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return rgba


def upscale(rgba: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor so the shorter side is at least ``min_side``
    (an 8x8 digit stays crisp pixels instead of a blur)."""
    h, w = rgba.shape[:2]
    factor = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    if factor == 1:
        return rgba
    return np.repeat(np.repeat(rgba, factor, axis=0), factor, axis=1)


def side_by_side(
    tiles: Sequence[tuple[str, np.ndarray]], tile_side: int = 192, gap: int = 6, title_height: int = 22
) -> np.ndarray:
    """Compose titled tiles in one row: ``[("Original", rgba), ("Grad-CAM", rgba), ...]`` -> RGBA.

    Each tile is scaled to ``tile_side`` on its longer side (nearest for small images, area
    averaging for big ones) and titled above in white on a dark strip.
    """
    if not tiles:
        raise ValueError("side_by_side needs at least one tile")
    n = len(tiles)
    width = n * tile_side + (n + 1) * gap
    height = title_height + tile_side + 2 * gap
    canvas = np.zeros((height, width, 4), dtype=np.uint8)
    canvas[:, :, :3] = 24
    canvas[:, :, 3] = 255
    for i, (title, img) in enumerate(tiles):
        rgba = _as_rgba(img)
        h, w = rgba.shape[:2]
        s = tile_side / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        interp = cv2.INTER_NEAREST if s >= 1 else cv2.INTER_AREA
        tile = cv2.resize(rgba, (nw, nh), interpolation=interp)
        x0 = gap + i * (tile_side + gap) + (tile_side - nw) // 2
        y0 = gap + title_height + (tile_side - nh) // 2
        canvas[y0 : y0 + nh, x0 : x0 + nw] = tile
        _put_title(canvas, title, gap + i * (tile_side + gap), tile_side, title_height + gap)
    return canvas


def _put_title(canvas: np.ndarray, text: str, x0: int, width: int, height: int) -> None:
    scale = 0.45
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    while tw > width - 4 and scale > 0.25:
        scale -= 0.05
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (x0 + max(0, (width - tw) // 2), (height + th) // 2)
    rgb = np.ascontiguousarray(canvas[:, :, :3])
    cv2.putText(rgb, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    canvas[:, :, :3] = rgb


def _as_rgba(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        return np.ascontiguousarray(img).astype(np.uint8)
    rgb = to_rgb(img)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)


def _fit(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    if heat.shape != tuple(size):
        heat = cv2.resize(heat, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return heat
