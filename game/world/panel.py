"""The info panel of the selected card: enlarged image, ground truth, top-5 with score bars, source.

Built as one ``NodePath`` in its own local frame (x right, z up, facing -y), so the desktop puts
it on ``aspect2d`` and VR can reparent it anywhere in the world (``place_in_world``).

Explanations never replace the card: the card's own image stays in its own frame, and an
explanation gets a second, titled image beside it (``show_aside``): a heat map drawn as a
translucent layer over a copy of the image with a colour bar (low / high), a what-if's edited
image, or a class model in its class's colour. A what-if also turns the top-5 into two columns,
before and after (``show_compare``), as the interactive-classification tool does. The panel lays
itself out from the top down and its background follows the content, so a long suspect reason
(``set_note``) or status line (``set_status``) never runs off it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from panda3d.core import CardMaker, NodePath, SamplerState, TextNode, Texture, TransparencyAttrib

from game.world.palette import class_colours
from game.world.text_fit import fit_text

WIDTH = 1.0
HEIGHT = 1.62  # of the card-only layout; the background grows with notes and status lines
IMAGE = 0.62  # image side in panel units, the card alone
SIDE = 0.42  # each image's side when an explanation sits beside the card
BAR_MAX = 0.5
COLUMN_BAR_MAX = 0.17  # bars of the before / after columns
COLUMN_BAR_MIN = 0.05  # the shortest full bar a column keeps beside long class names
COLUMN_SCORE_X = 0.30  # a column's score with long names ("100.0%" still ends inside 0.45)
TRUTH_SCALE = 0.06  # the "truth: ..." line
NAME_SCALE = 0.05  # the top-5 names' text scale
NAME_GAP = 0.015  # between a name and its bar, a bar and its score
MARGIN = 0.05
TEXT_WRAP = 23.0  # em at scale 0.038: the panel's inner width
LINE = 0.038  # scale of the small texts (status, note, captions)
NEUTRAL_FRAME = (0.55, 0.58, 0.65, 1.0)


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
    tex.set_ram_image(ram.data.cast("B"))
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


def _unit_quad(parent: NodePath, name: str, depth: float) -> NodePath:
    """A 1x1 quad from (0, 0) to (1, 1): placed with ``_box`` (position + scale)."""
    return _quad(parent, name, 0.0, 1.0, 0.0, 1.0, depth)


def _box(node: NodePath, left: float, right: float, bottom: float, top: float) -> None:
    node.set_x(left)
    node.set_z(bottom)
    node.set_sx(max(1e-4, right - left))
    node.set_sz(max(1e-4, top - bottom))


def _rows(node: TextNode) -> int:
    return max(1, node.get_num_rows()) if node.get_text() else 0


def _line_height(node: TextNode) -> float:
    return float(node.get_line_height())


@dataclass
class _Aside:
    image: np.ndarray
    caption: str
    left_caption: str
    frame: tuple[float, float, float, float]
    layer: np.ndarray | None
    colour_bar: np.ndarray | None
    bar_labels: tuple[str, str]


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
        self.top = HEIGHT / 2
        self.bottom = -HEIGHT / 2
        left = -WIDTH / 2
        self.background = _unit_quad(self.root, "background", 0.0)
        self.background.set_color(0.06, 0.07, 0.09, 0.95)
        self.title = _text(self.root, "title", 0.065, (left + MARGIN, self.top - 0.1))
        # The card's own image (left slot when an explanation is beside it).
        self.image_frame = _unit_quad(self.root, "image-frame", -0.001)
        self.image = _unit_quad(self.root, "image", -0.002)
        self.overlay = _unit_quad(self.root, "overlay", -0.003)  # a layer over the card (the what-if mask)
        self.overlay.hide()
        # The explanation beside it: its own frame, image, translucent layer and colour bar.
        self.aside_frame = _unit_quad(self.root, "aside-frame", -0.001)
        self.aside = _unit_quad(self.root, "aside", -0.002)
        self.aside_layer = _unit_quad(self.root, "aside-layer", -0.003)
        self.colour_bar = _unit_quad(self.root, "colour-bar", -0.002)
        self.caption_left = _text(self.root, "caption-left", LINE, (0, 0), (0.8, 0.82, 0.88, 1))
        self.caption = _text(self.root, "caption", LINE, (0, 0))
        self.bar_low = _text(self.root, "colour-bar-low", 0.034, (0, 0), (0.75, 0.78, 0.85, 1))
        self.bar_high = _text(self.root, "colour-bar-high", 0.034, (0, 0), (0.75, 0.78, 0.85, 1))
        for node in (self.caption_left, self.caption):
            node.set_align(TextNode.A_center)
            node.set_wordwrap(SIDE / LINE)
        self.bar_high.set_align(TextNode.A_right)
        self._aside_nodes = [
            self.aside_frame,
            self.aside,
            self.aside_layer,
            self.colour_bar,
            *(self._np(n) for n in (self.caption_left, self.caption, self.bar_low, self.bar_high)),
        ]
        self.truth = _text(self.root, "truth", TRUTH_SCALE, (left + MARGIN, 0))
        # A folder's class names can be long ("chinese temple roof tiles (Beijing) -> relabelled
        # ..."): the line wraps inside the panel and what follows moves down.
        self.truth.set_wordwrap((WIDTH - 2 * MARGIN) / TRUTH_SCALE)
        self.header = _text(self.root, "top5-header", 0.05, (left + MARGIN, 0), (0.75, 0.78, 0.85, 1))
        self.header_after = _text(self.root, "top5-header-after", 0.05, (0, 0), (0.75, 0.78, 0.85, 1))
        self.rows: list[tuple[TextNode, NodePath, TextNode]] = []
        self.bar_nodes: list[NodePath] = []
        self.after_rows: list[tuple[TextNode, NodePath, TextNode]] = []
        for r in range(5):
            self.rows.append(self._row(f"top{r}"))
            self.bar_nodes.append(self.rows[-1][1])
            self.after_rows.append(self._row(f"after{r}"))
        self.source = _text(self.root, "source", 0.04, (left + MARGIN, 0), (0.7, 0.72, 0.78, 1))
        self.source.set_wordwrap(22)
        self.status = _text(self.root, "status", LINE, (left + MARGIN, 0), (0.95, 0.85, 0.55, 1))
        self.status.set_wordwrap(TEXT_WRAP)
        self.note = _text(self.root, "note", LINE, (left + MARGIN, 0), (1.0, 0.62, 0.3, 1))
        self.note.set_wordwrap(TEXT_WRAP)
        self._image_tex: Texture | None = None
        self._aside: _Aside | None = None
        self._after: tuple[np.ndarray, np.ndarray, str] | None = None
        self._top5: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        self._image: np.ndarray | None = None
        self._notes: dict[int, str] = {}
        self.root.hide()
        self._layout()

    def _np(self, node: TextNode) -> NodePath:
        return self.root.find(node.get_name())

    def _row(self, name: str) -> tuple[TextNode, NodePath, TextNode]:
        label = _text(self.root, f"{name}-name", NAME_SCALE, (0, 0))
        bar = _quad(self.root, f"{name}-bar", 0.0, 1.0, -0.012, 0.038, -0.002)
        score = _text(self.root, f"{name}-score", 0.045, (0, 0))
        return label, bar, score

    # --- content ------------------------------------------------------------------------------

    def show_card(self, workspace, index: int) -> None:
        """Fill the panel for card ``index`` of ``workspace`` (``-1`` hides it).

        Another card drops the explanation shown beside the last one; the same card (a model
        update refreshing its top-5) keeps it.
        """
        if int(index) != self.card:
            self._aside = None
            self._after = None
            self.overlay.hide()
            self.status.set_text("")
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
        self._image = np.asarray(workspace.images[index])
        self._image_tex = image_texture(self._image, f"card-{index}")
        self.image.set_texture(self._image_tex, 1)
        self._top5 = (
            np.asarray(workspace.top5_classes[index]),
            np.asarray(workspace.top5_scores[index], dtype=np.float32),
        )
        self.source.set_text(str(workspace.sources[index]))
        self.root.show()
        self._layout()

    def set_overlay(self, rgba: np.ndarray | None, alpha: float = 0.6) -> None:
        """Blend an (H, W, 4) uint8 layer over the card's own image (the what-if mask);
        ``None`` removes it. Stretched over the image: pass it at the image's aspect ratio."""
        _set_layer(self.overlay, rgba, alpha)

    def show_aside(
        self,
        image: np.ndarray | None,
        caption: str,
        *,
        left_caption: str = "this card",
        frame: tuple[float, ...] | None = None,
        layer: np.ndarray | None = None,
        colour_bar: np.ndarray | None = None,
        bar_labels: tuple[str, str] = ("low", "high"),
    ) -> None:
        """Show an explanation beside the card (which shrinks but stays in its own frame).

        ``image``: the picture (None: a copy of the card's image, for a heat map ``layer`` on
        it); ``caption``: its title (method and target class, "class model of 3, the predicted
        class", ...); ``frame``: its frame colour (neutral if None; a class model uses its
        class's colour, never the card's); ``layer``: an RGBA layer drawn translucently over the
        picture; ``colour_bar``: an ``(1, W, 3|4)`` strip read left (low) to right (high), with
        ``bar_labels`` under its ends.
        """
        if image is None:
            if self._image is None:
                return
            image = self._image
        rgba = np.asarray(image, dtype=np.uint8)
        self._aside = _Aside(
            rgba,
            caption,
            left_caption,
            tuple(float(c) for c in (frame or NEUTRAL_FRAME)),  # type: ignore[arg-type]
            None if layer is None else np.asarray(layer, dtype=np.uint8),
            None if colour_bar is None else np.asarray(colour_bar, dtype=np.uint8),
            bar_labels,
        )
        self.aside.set_texture(image_texture(rgba, "aside"), 1)
        _set_layer(self.aside_layer, self._aside.layer, 1.0)
        if self._aside.colour_bar is not None:
            tex = image_texture(self._aside.colour_bar, "colour-bar")
            tex.set_magfilter(SamplerState.FT_linear)
            self.colour_bar.set_texture(tex, 1)
        self._layout()

    def clear_aside(self) -> None:
        """Back to the card alone (explanation, mask and before / after columns gone)."""
        self._aside = None
        self._after = None
        self.overlay.hide()
        self._layout()

    @property
    def aside_shown(self) -> bool:
        return self._aside is not None

    def show_compare(self, classes: np.ndarray, scores: np.ndarray, header: str = "after") -> None:
        """The top-5 as two columns: the card's (before) and ``classes`` / ``scores`` (after)."""
        self._after = (np.asarray(classes), np.asarray(scores, dtype=np.float32), header)
        self._layout()

    def clear_compare(self) -> None:
        self._after = None
        self._layout()

    def set_status(self, text: str) -> None:
        """One status paragraph under the top-5 (what an explanation key is doing)."""
        self.status.set_text(text)
        self._layout()

    def set_note(self, card: int, text: str) -> None:
        """A note about ``card`` (why it is suspect), shown whenever that card is on the panel."""
        if text:
            self._notes[int(card)] = text
        else:
            self._notes.pop(int(card), None)
        if int(card) == self.card:
            self._layout()

    # --- layout ---------------------------------------------------------------------------------

    def _layout(self) -> None:
        """Place everything from the top down for the current content; size the background."""
        left = -WIDTH / 2
        top = self.top
        aside = self._aside
        if aside is None:
            for node in self._aside_nodes:
                node.hide()
            img_top = top - 0.16
            img_left = -IMAGE / 2
            self._place_image(img_left, img_left + IMAGE, img_top - IMAGE, img_top)
        else:
            cap_base = top - 0.16 - 0.045  # baseline of a caption's last line
            img_top = top - 0.25
            gap = WIDTH - 2 * MARGIN - 2 * SIDE
            l0 = left + MARGIN
            r0 = l0 + SIDE + gap
            self._place_image(l0, l0 + SIDE, img_top - SIDE, img_top)
            _box(self.aside_frame, r0 - 0.02, r0 + SIDE + 0.02, img_top - SIDE - 0.02, img_top + 0.02)
            self.aside_frame.set_color(*aside.frame)
            _box(self.aside, r0, r0 + SIDE, img_top - SIDE, img_top)
            _box(self.aside_layer, r0, r0 + SIDE, img_top - SIDE, img_top)
            for node in (self.aside_frame, self.aside):
                node.show()
            self.aside_layer.show() if aside.layer is not None else self.aside_layer.hide()
            for node, text, x in (
                (self.caption_left, aside.left_caption, l0 + SIDE / 2),
                (self.caption, aside.caption, r0 + SIDE / 2),
            ):
                node.set_text(text)
                path = self._np(node)
                path.set_pos(x, -0.003, cap_base + (_rows(node) - 1) * _line_height(node) * LINE)
                path.show()
            self.caption.set_text_color(*aside.frame)
            bar_nodes = (self.colour_bar, self._np(self.bar_low), self._np(self.bar_high))
            if aside.colour_bar is not None:
                bar_top = img_top - SIDE - 0.05
                _box(self.colour_bar, r0, r0 + SIDE, bar_top - 0.035, bar_top)
                self.bar_low.set_text(aside.bar_labels[0])
                self.bar_high.set_text(aside.bar_labels[1])
                self._np(self.bar_low).set_pos(r0, -0.003, bar_top - 0.075)
                self._np(self.bar_high).set_pos(r0 + SIDE, -0.003, bar_top - 0.075)
                for node in bar_nodes:
                    node.show()
            else:
                for node in bar_nodes:
                    node.hide()
        # Texts below the images: the same heights whether an explanation is shown or not.
        y = top - 0.16 - IMAGE - 0.1
        self._np(self.truth).set_z(y)
        y -= 0.09 + (_rows(self.truth) - 1) * _line_height(self.truth) * TRUTH_SCALE
        self._np(self.header).set_z(y)
        compare = self._after
        header_after = self._np(self.header_after)
        if compare is None:
            self.header.set_text("top-5 predictions")
            header_after.hide()
        else:
            half = (WIDTH - 2 * MARGIN) / 2
            self.header.set_text("before")
            self.header_after.set_text(compare[2])
            header_after.set_pos(left + MARGIN + half, -0.003, y)
            header_after.show()
        classes, scores = self._top5
        columns = [(self.rows, classes, scores, left + MARGIN, compare is None)]
        if compare is not None:
            columns.append(
                (self.after_rows, compare[0], compare[1], left + MARGIN + (WIDTH - 2 * MARGIN) / 2, False)
            )
        else:
            for row in self.after_rows:
                for node in (self._np(row[0]), row[1], self._np(row[2])):
                    node.hide()
        for rows, cls, sc, x0, wide in columns:
            self._fill_rows(rows, cls, sc, x0, y, wide)
        y -= 0.075 * 5 + 0.1
        self._np(self.source).set_z(y)
        y -= _rows(self.source) * _line_height(self.source) * 0.04 + 0.02
        note = self._notes.get(self.card, "")
        self.note.set_text(note)
        for node, text_scale in ((self.status, LINE), (self.note, LINE)):
            path = self._np(node)
            if not node.get_text():
                path.hide()
                continue
            y -= 0.02
            path.set_z(y)
            path.show()
            y -= _rows(node) * _line_height(node) * text_scale
        self.bottom = min(-HEIGHT / 2, y - 0.03)
        _box(self.background, left, -left, self.bottom, top)

    def _place_image(self, left: float, right: float, bottom: float, top: float) -> None:
        _box(self.image_frame, left - 0.02, right + 0.02, bottom - 0.02, top + 0.02)
        _box(self.image, left, right, bottom, top)
        _box(self.overlay, left, right, bottom, top)

    def _fill_rows(self, rows, classes, scores, x0: float, y: float, wide: bool) -> None:
        shown = [self._class_name(int(k)) for k in classes[: len(rows)]]
        if wide:
            bar_x, bar_max, score_x = 0.25, BAR_MAX, 0.25 + BAR_MAX + 0.03
            shown = [fit_text(rows[0][0], t, (bar_x - NAME_GAP) / NAME_SCALE) for t in shown]
        else:
            # A column of the before / after pair (0.45 wide): the bar starts after the widest
            # name, so "triangle" or a folder's class name never runs under it; one-character
            # names (digits) keep the bar at 0.08.
            bar_x, bar_max, score_x = 0.08, COLUMN_BAR_MAX, 0.08 + COLUMN_BAR_MAX + 0.02
            widest = max((rows[0][0].calc_width(t) * NAME_SCALE for t in shown), default=0.0)
            if widest > bar_x - NAME_GAP:
                score_x = COLUMN_SCORE_X
                room = score_x - NAME_GAP - COLUMN_BAR_MIN - NAME_GAP
                shown = [fit_text(rows[0][0], t, room / NAME_SCALE) for t in shown]
                widest = max(rows[0][0].calc_width(t) * NAME_SCALE for t in shown)
                bar_x = widest + NAME_GAP
                bar_max = score_x - NAME_GAP - bar_x
        for r, (name, bar, score) in enumerate(rows):
            y_row = y - 0.075 * (r + 1)
            name_path, score_path = self._np(name), self._np(score)
            name_path.set_pos(x0, -0.003, y_row)
            score_path.set_pos(x0 + score_x, -0.003, y_row)
            if r >= len(classes):
                name.set_text("")
                score.set_text("")
                bar.hide()
                continue
            k = int(classes[r])
            s = float(np.clip(scores[r], 0.0, 1.0))
            colour = tuple(float(c) for c in self.colours[k % len(self.colours)])
            name.set_text(shown[r])
            name.set_text_color(*colour)
            score.set_text(percent(s))
            bar.set_pos(x0 + bar_x, -0.002, y_row)
            bar.set_sx(max(0.004, bar_max * s))
            bar.set_color(*colour)
            for node in (name_path, bar, score_path):
                node.show()

    def _class_name(self, k: int) -> str:
        names = self.class_names
        return str(names[k]) if 0 <= k < len(names) else str(k)

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


def percent(p: float) -> str:
    """A probability as "97.3%": rounded down, so a score short of one never reads "100.0%"."""
    p = float(p)
    return "100%" if p >= 1.0 else f"{math.floor(1000.0 * p) / 10.0:.1f}%"


def _set_layer(node: NodePath, rgba: np.ndarray | None, alpha: float) -> None:
    """Texture ``node`` with an RGBA (or RGB at ``alpha``) layer, or hide it for ``None``."""
    if rgba is None:
        node.hide()
        return
    arr = np.asarray(rgba, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"overlay must be (H, W, 3|4) uint8, got shape {arr.shape}")
    tex = image_texture(arr, node.get_name())
    node.set_color_scale(1, 1, 1, alpha if arr.shape[2] == 3 else 1)
    tex.set_magfilter(SamplerState.FT_linear)
    node.set_texture(tex, 1)
    node.show()
