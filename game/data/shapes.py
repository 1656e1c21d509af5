"""A procedurally generated colour dataset: shapes in clutter, deterministic from a seed, no download.

Why it exists: 8x8 digits are too small for an explanation to point at a part of the image, and
every digit pixel is "the object". Here each 32-64 px image holds one object on a cluttered
background, and what decides the class is a *part* of the object:

* ``disc`` vs ``ring``: a filled circle or one with a hole of varying size (paint the hole over
  and a ring becomes a disc: a what-if that changes the prediction);
* ``triangle`` vs ``arrow``: a triangle, or a smaller one on a shaft of varying length (the shaft
  is the difference);
* ``cross`` vs ``bar``: a plus sign, or one of its arms alone (the second arm is the difference).

Nuisances that must not matter: the object's colour (any hue), size, position and rotation (up to
about 30 degrees, so a bar stays nearer horizontal than vertical), the background's colour gradient, clutter
(short lines and dots in other colours, thinner and smaller than the object), and pixel noise.
Images are drawn four times larger and downsampled (anti-aliased edges), with Pillow.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from game.data.dataset import Dataset

CLASSES = ["disc", "ring", "triangle", "arrow", "cross", "bar"]
SUPERSAMPLE = 4


def _colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> tuple:
    h = float(rng.random())
    s = float(rng.uniform(*saturation))
    v = float(rng.uniform(*value))
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def _rotate(
    points: list[tuple[float, float]], angle: float, cx: float, cy: float
) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A two-colour diagonal gradient in muted colours."""
    a = np.array(_colour(rng, (0.1, 0.5), (0.25, 0.6)), dtype=np.float32)
    b = np.array(_colour(rng, (0.1, 0.5), (0.25, 0.6)), dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle), 0, 1)[..., None]
    img = (1 - t) * a + t * b
    return Image.fromarray(img.astype(np.uint8), "RGB")


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int) -> None:
    """Short thin lines and small dots: edges and blobs that are not the object."""
    s = SUPERSAMPLE
    for _ in range(count):
        colour = _colour(rng, (0.2, 0.9), (0.3, 1.0))
        x, y = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            length = rng.uniform(0.12, 0.3) * size
            a = rng.uniform(0, math.pi)
            draw.line(
                [(x * s, y * s), ((x + length * math.cos(a)) * s, (y + length * math.sin(a)) * s)],
                fill=colour,
                width=max(1, int(round(rng.uniform(0.6, 1.2) * s))),
            )
        else:
            r = rng.uniform(0.6, 1.6) * s
            draw.ellipse([x * s - r, y * s - r, x * s + r, y * s + r], fill=colour)


def _draw_object(
    draw: ImageDraw.ImageDraw,
    kind: str,
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    colour: tuple,
    shaft: float = 1.0,
) -> None:
    """One object centred at (cx, cy) (supersampled pixels), ``radius`` its half-extent;
    ``shaft`` is an arrow's shaft length in units of ``radius`` (short ones look like triangles)."""
    r = radius
    if kind in ("disc", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)  # a ring's hole is cut later
    elif kind in ("triangle", "arrow"):
        if kind == "arrow":  # a smaller head on a shaft, pointing up (then rotated)
            head = [(0.0, -r), (0.62 * r, -0.1 * r), (-0.62 * r, -0.1 * r)]
            tail = [
                (-0.17 * r, -0.15 * r),
                (0.17 * r, -0.15 * r),
                (0.17 * r, shaft * r),
                (-0.17 * r, shaft * r),
            ]
            draw.polygon(_rotate(head, angle, cx, cy), fill=colour)
            draw.polygon(_rotate(tail, angle, cx, cy), fill=colour)
        else:
            tri = [(0.0, -r), (0.9 * r, 0.65 * r), (-0.9 * r, 0.65 * r)]
            draw.polygon(_rotate(tri, angle, cx, cy), fill=colour)
    elif kind in ("cross", "bar"):
        w = 0.22 * r
        arms = [[(-r, -w), (r, -w), (r, w), (-r, w)], [(-w, -r), (w, -r), (w, r), (-w, r)]]
        for arm in arms if kind == "cross" else arms[:1]:
            draw.polygon(_rotate(arm, angle, cx, cy), fill=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def render_shape(kind: str, rng: np.random.Generator, size: int = 32, clutter: int = 5) -> np.ndarray:
    """One (size, size, 3) uint8 image of ``kind`` with seeded nuisances."""
    s = SUPERSAMPLE
    background = _background(rng, size)
    canvas = background.resize((size * s, size * s), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    _clutter(draw, rng, size, int(rng.integers(clutter // 2, clutter + 1)))
    radius = rng.uniform(0.28, 0.4) * size
    margin = radius * 1.05
    cx = rng.uniform(margin, size - margin) * s
    cy = rng.uniform(margin, size - margin) * s
    angle = math.radians(rng.uniform(-30, 30))
    colour = _colour(rng, (0.3, 1.0), (0.65, 1.0))
    # The confusable part varies: small holes and short shafts sit near the other class.
    shaft = float(rng.uniform(0.3, 1.0))
    hole = float(rng.uniform(0.22, 0.55)) * radius * s  # drawn for every kind: same nuisances
    hole = hole if kind == "ring" else 0.0
    _draw_object(draw, kind, cx, cy, radius * s, angle, colour, shaft)
    if hole:  # cut the hole back to the background (the clutter under it stays hidden)
        mask = Image.new("L", canvas.size, 0)
        ImageDraw.Draw(mask).ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=255)
        canvas.paste(background.resize(canvas.size, Image.Resampling.BILINEAR), (0, 0), mask)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    small += rng.normal(0.0, 4.0, small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


PER_CLASS = 200  # the scene's images per class (``load_dataset``)


def load_shapes_dataset(
    per_class: int = PER_CLASS,
    size: int = 32,
    seed: int = 0,
    classes: list[str] | None = None,
    first: int = 0,
) -> Dataset:
    """``per_class`` images of each shape, ``size`` pixels square, the same for the same seed.

    Each image draws from its own generator seeded by (seed, class, index), so a subset of classes
    or a different count gives the same images for the same (class, index). ``first``: the first
    index; ``first = PER_CLASS`` gives images the scene never holds, from the same distribution
    (the learning suite measures held-out accuracy on more of them than the scene's own held-out
    cards: ``benchmarks/bench_suite.py``'s ``--eval-extra``).
    """
    if not 16 <= size <= 128:
        raise ValueError(f"shapes: size must be in 16..128 pixels, not {size}")
    names = list(classes or CLASSES)
    images, labels, sources = [], [], []
    for c, kind in enumerate(names):
        k = CLASSES.index(kind)
        for i in range(first, first + per_class):
            rng = np.random.default_rng([seed, k, i])
            images.append(render_shape(kind, rng, size))
            labels.append(c)
            sources.append(f"shapes:{kind}#{i}")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), names, sources, name="shapes")
