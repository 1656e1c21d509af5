"""What-if: paint over part of an image, fill it by inpainting, and see how the prediction changes.

After Cabrera et al.'s interactive classification: removing a region ("what if the dog's head
were not there?") and re-classifying shows which parts the network relies on, in a way anyone can
read. ``WhatIfEditor`` keeps the brush strokes (undo, reset) and is pure numpy/OpenCV, so the
panel can update the mask every mouse move and send ``editor.snapshot()`` to the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from game.nets.network import Network

INPAINT_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


@dataclass
class WhatIfResult:
    """The edited image and the top-5 before and after."""

    edited: np.ndarray  # uint8 (H, W, C), same shape as the input
    mask: np.ndarray = field(repr=False)  # bool (H, W)
    before_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    before_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    after_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    after_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seconds: float = 0.0

    def table(self, class_names: list[str] | None = None) -> str:
        """Top-5 before and after as aligned text (the CLI prints this)."""

        def name(c: int) -> str:
            return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)

        rows = ["rank  before                    after"]
        for i in range(max(len(self.before_classes), len(self.after_classes))):
            b = (
                f"{name(int(self.before_classes[i]))} {self.before_scores[i]:.3f}"
                if i < len(self.before_classes)
                else ""
            )
            a = (
                f"{name(int(self.after_classes[i]))} {self.after_scores[i]:.3f}"
                if i < len(self.after_classes)
                else ""
            )
            rows.append(f"{i + 1:>4}  {b:<24}  {a}")
        return "\n".join(rows)


def inpaint(image: np.ndarray, mask: np.ndarray, method: str = "telea", radius: float = 3.0) -> np.ndarray:
    """Fill the masked pixels from their surroundings; every other pixel is left bit-identical.

    OpenCV's inpainting takes 1- or 3-channel 8-bit images; grey ``(H, W, 1)`` images go through
    as ``(H, W)``, 4-channel ones per 3+1 channels. The result is composited back with the mask so
    only masked pixels can change, whatever the algorithm does at the border.
    """
    if method not in INPAINT_METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; use 'telea' or 'ns'")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 image (H, W, C), got {img.dtype} {img.shape}")
    m = _check_mask(mask, img.shape[:2])
    if not m.any():
        return img.copy()
    m8 = m.astype(np.uint8) * 255
    flag = INPAINT_METHODS[method]
    if img.ndim == 2 or img.shape[2] == 1:
        filled = cv2.inpaint(np.ascontiguousarray(img.reshape(img.shape[:2])), m8, radius, flag)
        filled = filled.reshape(img.shape)
    elif img.shape[2] == 3:
        filled = cv2.inpaint(np.ascontiguousarray(img), m8, radius, flag)
    else:
        rgb = cv2.inpaint(np.ascontiguousarray(img[:, :, :3]), m8, radius, flag)
        rest = [
            cv2.inpaint(np.ascontiguousarray(img[:, :, c]), m8, radius, flag) for c in range(3, img.shape[2])
        ]
        filled = np.concatenate([rgb] + [r[:, :, None] for r in rest], axis=2)
    out = img.copy()
    out[m] = filled[m]
    return out


def whatif(
    network: Network,
    image: np.ndarray,
    mask: np.ndarray,
    method: str = "telea",
    radius: float = 3.0,
    before: tuple[np.ndarray, np.ndarray] | None = None,
) -> WhatIfResult:
    """Inpaint ``mask`` and classify the edited image; ``before`` (classes, scores) may be passed
    in when already known (the workspace has every card's top-5), saving a forward pass."""
    t0 = time.perf_counter()
    m = _check_mask(mask, np.asarray(image).shape[:2])
    edited = inpaint(image, m, method, radius)
    if before is None:
        classes, scores = network.classify(np.stack([np.asarray(image).reshape(edited.shape), edited]))
        before = (classes[0], scores[0])
        after = (classes[1], scores[1])
    else:
        classes, scores = network.classify(edited[None])
        after = (classes[0], scores[0])
    return WhatIfResult(edited, m, before[0], before[1], after[0], after[1], seconds=time.perf_counter() - t0)


def rect_mask(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A boolean mask with the rectangle ``[x0, x1) x [y0, y1)`` set (pixel coordinates, x right,
    y down). Raises ``ValueError`` if the rectangle is empty or leaves the image."""
    h, w = shape
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(
            f"mask {x0},{y0},{x1},{y1} must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (image is {w}x{h})"
        )
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def stamp_segment(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> None:
    """Paint filled circles of ``radius`` (pixels) along the segment p0 -> p1 into ``mask`` (in place).

    Stamps are spaced a quarter radius apart (at least every half pixel) so fast mouse moves still
    leave a continuous stroke. Points are ``(x, y)`` in image pixels and may be fractional.
    """
    r = max(0.5, float(radius))
    (x0, y0), (x1, y1) = p0, p1
    length = float(np.hypot(x1 - x0, y1 - y0))
    n = max(1, int(np.ceil(length / max(0.5, r / 4)))) + 1
    h, w = mask.shape
    yy, xx = np.ogrid[:h, :w]
    # Pixel centres are at integer + 0.5 in continuous coordinates.
    for t in np.linspace(0.0, 1.0, n):
        cx, cy = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
        ya, yb = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
        xa, xb = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
        if ya >= yb or xa >= xb:
            continue
        d2 = (xx[:, xa:xb] + 0.5 - cx) ** 2 + (yy[ya:yb] + 0.5 - cy) ** 2
        mask[ya:yb, xa:xb] |= d2 <= r * r


class WhatIfEditor:
    """Brush strokes over one image, with undo and reset.

    ``begin(x, y)``, ``drag(x, y)``..., ``end()`` paint one stroke; ``undo()`` drops the last
    stroke, ``reset()`` all of them. The mask after every stroke is kept (images are small), so
    undo is instant. Coordinates are image pixels (the panel converts from its texture UVs).
    """

    def __init__(self, image: np.ndarray, radius: float = 0.0, method: str = "telea") -> None:
        self.image = np.asarray(image)
        h, w = self.image.shape[:2]
        self.radius = radius or max(0.75, min(h, w) / 12)  # ~1 px on a digit, ~19 px at 224
        self.method = method
        self._committed: list[np.ndarray] = []  # mask after each finished stroke
        self._current: np.ndarray | None = None
        self._last: tuple[float, float] | None = None
        self.version = 0  # bumps on every change; stale worker results can be dropped

    @property
    def mask(self) -> np.ndarray:
        if self._current is not None:
            return self._current
        if self._committed:
            return self._committed[-1]
        return np.zeros(self.image.shape[:2], dtype=bool)

    @property
    def n_strokes(self) -> int:
        return len(self._committed) + (self._current is not None)

    def begin(self, x: float, y: float) -> None:
        self._current = self.mask.copy()
        self._last = (x, y)
        stamp_segment(self._current, (x, y), (x, y), self.radius)
        self.version += 1

    def drag(self, x: float, y: float) -> None:
        if self._current is None or self._last is None:
            self.begin(x, y)
            return
        stamp_segment(self._current, self._last, (x, y), self.radius)
        self._last = (x, y)
        self.version += 1

    def end(self) -> None:
        if self._current is not None:
            self._committed.append(self._current)
        self._current = None
        self._last = None

    def undo(self) -> bool:
        """Drop the stroke in progress, else the last finished one. False if there was none."""
        if self._current is not None:
            self._current, self._last = None, None
        elif self._committed:
            self._committed.pop()
        else:
            return False
        self.version += 1
        return True

    def reset(self) -> None:
        self._committed.clear()
        self._current, self._last = None, None
        self.version += 1

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, str, int]:
        """(image, mask copy, method, version): what a worker job needs, detached from the editor."""
        return self.image, self.mask.copy(), self.method, self.version

    def edited(self) -> np.ndarray:
        return inpaint(self.image, self.mask, self.method)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask shape {m.shape} does not match the image's {tuple(shape[:2])}")
    return m.astype(bool)
