"""Class colours that stay distinguishable for 10+ classes and for colour-blind people.

The first eight are the Okabe-Ito set (designed to survive the common colour-vision deficiencies);
after that come the brighter colours of Paul Tol's qualitative schemes, then a golden-angle hue
walk so any number of classes gets a colour. Pure numpy: tests and the learning core may use it.
The list below is written out for this project (hex values of those published palettes).
"""

from __future__ import annotations

import colorsys

import numpy as np

# Okabe-Ito without black (black disappears on the dark background), then Paul Tol's colours,
# ordered so that the first ten (the digits) stay farthest apart.
_BASE_HEX = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#BBBBBB",  # grey (Tol)
    "#EE3377",  # magenta (Tol vibrant)
    "#9966FF",  # violet (chosen here: farthest from the nine above among bright candidates)
    "#999933",  # olive (Tol muted)
    "#44AA99",  # teal (Tol muted)
    "#CC6677",  # rose (Tol muted)
    "#882255",  # wine (Tol muted)
    "#228833",  # green (Tol bright)
    "#332288",  # indigo (Tol muted)
)

# Marker colours for highlights and card states (kept apart from the class colours).
SELECTED = (1.0, 1.0, 1.0, 1.0)
HOVER = (0.85, 0.85, 0.85, 0.8)
PENDING = (1.0, 0.78, 0.1, 1.0)
UNSURE = (1.0, 0.25, 0.25, 1.0)
EDITED = (0.3, 1.0, 0.55, 1.0)


def _hex_to_rgb(value: str) -> tuple[float, float, float]:
    v = value.lstrip("#")
    return tuple(int(v[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


def class_colours(n: int) -> np.ndarray:
    """``(n, 4)`` float32 RGBA colours for ``n`` classes; the first 16 are the fixed palette."""
    out = [(*_hex_to_rgb(h), 1.0) for h in _BASE_HEX[:n]]
    golden = 0.61803398875
    hue = 0.11
    while len(out) < n:
        hue = (hue + golden) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
        out.append((r, g, b, 1.0))
    return np.asarray(out, dtype=np.float32).reshape(n, 4)
