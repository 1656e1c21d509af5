"""Fit a line of text into a width by cutting it with an ellipsis (menus, long file names).

The width is measured with the font the text is drawn in (``TextNode.calc_width``), so the cut
is where the line would leave its panel, whatever the characters. "..." rather than the single
ellipsis character: the default font's glyphs for ASCII are preloaded (``label.GAME_GLYPHS``).
"""

from __future__ import annotations

from panda3d.core import TextNode

ELLIPSIS = "..."


def fit_text(node: TextNode, text: str, width: float) -> str:
    """``text`` unchanged if it fits in ``width`` (text units of ``node``), else its longest
    prefix that fits with ``ELLIPSIS`` appended."""
    if node.calc_width(text) <= width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits is in [lo, hi)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if node.calc_width(text[:mid].rstrip() + ELLIPSIS) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS
