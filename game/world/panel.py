"""The info panel of the selected card: enlarged image, ground truth, top-5 with score bars, source.

Built as one ``NodePath`` in its own local frame (x right, z up, facing -y), so the desktop puts
it on ``aspect2d`` and VR can reparent it anywhere in the world (``place_in_world``). The image
has an optional heat-map overlay for explanations (``set_overlay``).
"""

from __future__ import annotations

import numpy as np
from panda3d.core import CardMaker, NodePath, SamplerState, TextNode, Texture, TransparencyAttrib

from game.world.palette import class_colours

WIDTH = 1.0
HEIGHT = 1.62
IMAGE = 0.62  # image side in panel units
BAR_MAX = 0.5


def _text(
    parent: NodePath, name: str, scale: float, pos: tuple[float, float], colour=(1, 1, 1, 1)
) -> TextNode:
    node = TextNode(name)
    node.set_text_color(*colour)
    node.set_align(TextNode.A_left)
    path = parent.attach_new_node(node)
    path.set_scale(scale)
    path.set_pos(pos[0], -0.003, pos[1])
    return node


def image_texture(image: np.ndarray, name: str = "image") -> Texture:
    """A 2-D texture of one (H, W, C) uint8 image; nearest filtering for tiny images."""
    img = np.asarray(image, dtype=np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] == 3:
        img = np.concatenate([img, np.full((h, w, 1), 255, np.uint8)], axis=2)
    ram = np.ascontiguousarray(img[::-1, :, [2, 1, 0, 3]])
    tex = Texture(name)
    tex.setup_2d_texture(w, h, Texture.T_unsigned_byte, Texture.F_rgba8)
    tex.set_ram_image(memoryview(ram).cast("B"))
    tex.set_wrap_u(SamplerState.WM_clamp)
    tex.set_wrap_v(SamplerState.WM_clamp)
    if max(h, w) <= 64:
        tex.set_magfilter(SamplerState.FT_nearest)
        tex.set_minfilter(SamplerState.FT_nearest)
    else:
        tex.set_minfilter(SamplerState.FT_linear_mipmap_linear)
        tex.set_magfilter(SamplerState.FT_linear)
    return tex


def _quad(
    parent: NodePath, name: str, left: float, right: float, bottom: float, top: float, depth: float
) -> NodePath:
    cm = CardMaker(name)
    cm.set_frame(left, right, bottom, top)
    node = parent.attach_new_node(cm.generate())
    node.set_y(depth)
    return node


class InfoPanel:
    """Shows one card; ``root`` is the node to place (2-D overlay or in the 3-D world)."""

    def __init__(self, parent: NodePath, class_names: list[str]) -> None:
        self.root = parent.attach_new_node("info-panel")
        self.root.set_light_off(1)
        self.root.set_transparency(TransparencyAttrib.M_alpha)
        self.root.set_two_sided(True)
        self.class_names = list(class_names)
        self.colours = class_colours(max(1, len(class_names)))
        self.card = -1
        top = HEIGHT / 2
        left = -WIDTH / 2
        self.background = _quad(self.root, "background", left, -left, -top, top, 0.0)
        self.background.set_color(0.06, 0.07, 0.09, 0.88)
        self.title = _text(self.root, "title", 0.065, (left + 0.05, top - 0.1))
        img_left = -IMAGE / 2
        img_top = top - 0.16
        self.image_frame = _quad(
            self.root,
            "image-frame",
            img_left - 0.02,
            -img_left + 0.02,
            img_top - IMAGE - 0.02,
            img_top + 0.02,
            -0.001,
        )
        self.image = _quad(self.root, "image", img_left, -img_left, img_top - IMAGE, img_top, -0.002)
        self.overlay = _quad(self.root, "overlay", img_left, -img_left, img_top - IMAGE, img_top, -0.003)
        self.overlay.hide()
        y = img_top - IMAGE - 0.1
        self.truth = _text(self.root, "truth", 0.06, (left + 0.05, y))
        y -= 0.09
        self.header = _text(self.root, "top5-header", 0.05, (left + 0.05, y), (0.75, 0.78, 0.85, 1))
        self.header.set_text("top-5 predictions")
        self.rows: list[tuple[TextNode, NodePath, TextNode]] = []
        self.bar_nodes: list[NodePath] = []
        for r in range(5):
            y -= 0.075
            name = _text(self.root, f"top{r}-name", 0.05, (left + 0.05, y))
            bar = _quad(self.root, f"top{r}-bar", 0.0, 1.0, -0.012, 0.038, -0.002)
            bar.set_x(left + 0.3)
            bar.set_z(y)
            score = _text(self.root, f"top{r}-score", 0.045, (left + 0.3 + BAR_MAX + 0.03, y))
            self.rows.append((name, bar, score))
            self.bar_nodes.append(bar)
        y -= 0.1
        self.source = _text(self.root, "source", 0.04, (left + 0.05, y), (0.7, 0.72, 0.78, 1))
        self.source.set_wordwrap(22)
        self._image_tex: Texture | None = None
        self.root.hide()

    # --- content ------------------------------------------------------------------------------

    def show_card(self, workspace, index: int) -> None:
        """Fill the panel for card ``index`` of ``workspace`` (``-1`` hides it)."""
        self.card = int(index)
        if index < 0 or index >= workspace.n_cards:
            self.root.hide()
            return
        names = workspace.class_names
        label = int(workspace.labels[index])
        original = int(workspace.original_labels[index])
        split = "train" if bool(workspace.is_train[index]) else "held out"
        self.title.set_text(f"card #{index}  ({split})")
        truth = f"truth: {names[original]}"
        if label != original:
            truth += f"  -> relabelled {names[label]}"
        self.truth.set_text(truth)
        colour = self.colours[label % len(self.colours)]
        self.image_frame.set_color(*(float(c) for c in colour))
        self._image_tex = image_texture(workspace.images[index], f"card-{index}")
        self.image.set_texture(self._image_tex, 1)
        classes = np.asarray(workspace.top5_classes[index])
        scores = np.asarray(workspace.top5_scores[index], dtype=np.float32)
        for r, (name, bar, score) in enumerate(self.rows):
            if r >= len(classes):
                name.set_text("")
                score.set_text("")
                bar.hide()
                continue
            k = int(classes[r])
            s = float(np.clip(scores[r], 0.0, 1.0))
            name.set_text(names[k] if 0 <= k < len(names) else str(k))
            name.set_text_color(*(float(c) for c in self.colours[k % len(self.colours)]))
            score.set_text(f"{100 * s:.1f}%")
            bar.show()
            bar.set_sx(max(0.004, BAR_MAX * s))
            bar.set_color(*(float(c) for c in self.colours[k % len(self.colours)]))
        self.source.set_text(str(workspace.sources[index]))
        self.root.show()

    def set_overlay(self, rgba: np.ndarray | None, alpha: float = 0.6) -> None:
        """Blend an (H, W, 4) uint8 heat-map over the image (any size); ``None`` removes it.

        The overlay is stretched over the image, so pass it at the image's aspect ratio.
        """
        if rgba is None:
            self.overlay.hide()
            return
        arr = np.asarray(rgba, dtype=np.uint8)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"overlay must be (H, W, 3|4) uint8, got shape {arr.shape}")
        tex = image_texture(arr, "overlay")
        if arr.shape[2] == 3:
            self.overlay.set_color_scale(1, 1, 1, alpha)
        else:
            self.overlay.set_color_scale(1, 1, 1, 1)
        tex.set_magfilter(SamplerState.FT_linear)
        self.overlay.set_texture(tex, 1)
        self.overlay.show()

    # --- placement ----------------------------------------------------------------------------

    def place_on_screen(self, aspect2d: NodePath, aspect_ratio: float, scale: float = 0.85) -> None:
        """Dock at the right edge of a 2-D overlay (the desktop)."""
        self.root.reparent_to(aspect2d)
        self.root.set_scale(scale)
        self.root.set_pos(aspect_ratio - scale * WIDTH / 2 - 0.03, 0, 0.1)
        self.root.set_hpr(0, 0, 0)
        self.root.set_depth_test(False)
        self.root.set_depth_write(False)

    def place_in_world(self, parent: NodePath, position, look_at=None, scale: float = 0.35) -> None:
        """Put the panel in 3-D (VR): ``scale`` metres per panel unit, facing ``look_at``."""
        self.root.reparent_to(parent)
        self.root.set_scale(scale)
        self.root.set_pos(*position)
        self.root.set_depth_test(True)
        self.root.set_depth_write(True)
        if look_at is not None:
            # The panel's front faces -y; heads-up towards the viewer.
            self.root.look_at(*look_at)
            self.root.set_h(self.root.get_h() + 180)

    def destroy(self) -> None:
        self.root.remove_node()
