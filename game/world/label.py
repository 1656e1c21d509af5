"""Text with a dark backing card, readable over cards and the floor, in 2-D or 3-D.

TextNode's own card (``set_card_color``) hides the glyphs here (the card and the glyphs share a
depth and the card wins), so the backing is a separate quad placed just behind the text and sized
from the text's frame every time the text changes.
"""

from __future__ import annotations

import string

from panda3d.core import CardMaker, NodePath, TextNode, TransparencyAttrib

#: Every character the game's own texts use (status lines, messages, the panel, menus, help).
GAME_GLYPHS = string.ascii_letters + string.digits + string.punctuation + " "


def preload_glyphs(extra: str = "") -> None:
    """Render every glyph the texts may show into the default font's page textures now.

    Why: Panda3D's default font is a ``DynamicTextFont`` that renders a glyph the first time a
    text uses it, into a shared 256x256 page texture, and a page that gains a glyph is uploaded
    to the GPU again. With software OpenGL (llvmpipe) one such upload stalls the next frame by
    50-90 ms, so the first "fine-tune running 0%" status (new glyphs '%', '0', 'r', 'g') was the
    longest frame of a session, right as the first job started. Called while a scene opens
    (``World``), the uploads land on the loading frame instead. ``extra``: other characters the
    scene shows (class names, which may be non-ASCII).
    """
    node = TextNode("glyph-preload")
    node.set_text(GAME_GLYPHS + "".join(sorted(set(extra) - set(GAME_GLYPHS) - set("\n\t"))))
    node.get_frame_actual()  # assembling the text renders (and caches) each glyph in the font


class Label:
    """A ``TextNode`` plus backing quad under one ``root`` (scale/position the root)."""

    def __init__(
        self,
        parent: NodePath,
        name: str,
        scale: float,
        colour=(1, 1, 1, 1),
        backing=(0.04, 0.05, 0.07, 0.8),
        align: int = TextNode.A_left,
        margin: tuple[float, float] = (0.35, 0.2),
        shadow: bool = False,
        sort: int = 10,
    ) -> None:
        self.root = parent.attach_new_node(name)
        self.root.set_scale(scale)
        self.root.set_light_off(1)
        self.root.set_transparency(TransparencyAttrib.M_alpha)
        self.margin = margin
        self.backing: NodePath | None = None
        if backing is not None:
            cm = CardMaker(f"{name}-backing")
            cm.set_frame(0, 1, 0, 1)
            self.backing = self.root.attach_new_node(cm.generate())
            self.backing.set_color(*backing)
            self.backing.set_y(0.02)
            # Fixed-bin order draws the backing first and the glyphs over it, whatever the
            # transparent bin's depth sort would decide for two nodes this close.
            self.backing.set_bin("fixed", sort)
            self.backing.set_depth_write(False)
            self.backing.hide()
        self.node = TextNode(name)
        self.node.set_align(align)
        self.node.set_text_color(*colour)
        if shadow:
            # Only for 2-D overlays: in 3-D the shadow glyphs can land in front of the text.
            self.node.set_shadow(0.05, 0.05)
            self.node.set_shadow_color(0, 0, 0, 0.9)
        self.text_path = self.root.attach_new_node(self.node)
        self.text_path.set_bin("fixed", sort + 1)

    def set_text(self, text: str) -> None:
        self.node.set_text(text)
        if self.backing is None:
            return
        if not text:
            self.backing.hide()
            return
        left, right, bottom, top = self.node.get_frame_actual()
        mx, mz = self.margin
        self.backing.set_pos(left - mx, 0.02, bottom - mz)
        self.backing.set_scale(right - left + 2 * mx, 1, top - bottom + 2 * mz)
        self.backing.show()

    @property
    def text(self) -> str:
        return self.node.get_text()

    def set_colour(self, colour) -> None:
        self.node.set_text_color(*colour)
