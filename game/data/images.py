"""Reading one image file of any common mode into a uint8 array of a fixed square size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageSkipped(Exception):
    """This file cannot be used; the message is the reason shown in the skip report."""


def read_image(path: str | Path, size: int, max_pixels: int) -> tuple[np.ndarray, bool]:
    """Decode, normalise and resize one image.

    Returns ``(array, is_grey)`` where array is ``(size, size, 3)`` uint8. 16-bit and float images
    are rescaled to 0..255, palettes expanded, CMYK converted, and transparency composited over
    white (the usual background of cut-out images). The image is centre-cropped to a square
    before resizing so that shapes are not squashed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageSkipped(f"oversized ({w}x{h} pixels, limit {max_pixels})")
                img.load()
                upright = _upright(img)
                is_grey = upright.mode in GREY_MODES or (upright.mode == "P" and _palette_is_grey(upright))
                rgb = _to_rgb(upright)
    except ImageSkipped:
        raise
    except UnidentifiedImageError:
        raise ImageSkipped("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageSkipped("oversized (decompression bomb limit)") from None
    except PermissionError:
        raise ImageSkipped("permission denied") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system's own error (EIO, EISDIR, ...), not the decoder's
            raise ImageSkipped(f"cannot be read ({exc.strerror or exc})") from None
        raise ImageSkipped(f"corrupt or truncated ({exc})") from None
    except (ValueError, SyntaxError) as exc:
        raise ImageSkipped(f"cannot be decoded ({exc})") from None
    rgb = ImageOps.fit(
        rgb,
        (size, size),
        method=Image.Resampling.LANCZOS if size < min(rgb.size) else Image.Resampling.BICUBIC,
    )
    return np.asarray(rgb, dtype=np.uint8), is_grey


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a phone photo taken upside down, sideways).

    A damaged EXIF block is not a reason to drop the picture: it is then used as stored.
    """
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # Pillow raises several types on malformed EXIF; the pixels are still good
        return img


def _palette_is_grey(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    triples = np.asarray(pal[: (len(pal) // 3) * 3]).reshape(-1, 3)
    return bool(len(triples)) and bool(np.all(triples == triples[:, :1]))


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            a = a / 257.0
        elif mode == "I":
            a = a / 257.0 if a.max(initial=0) > 255 else a
        else:  # float images: 0..1 if they look normalised, else 0..255
            a = a * 255.0 if a.max(initial=0) <= 1.0 else a
        grey = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "RGBA", "PA") or (mode in ("L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
