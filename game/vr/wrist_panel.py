"""The wrist menu's panel: a grid of buttons above a hand, facing the eyes, hit by a laser.

``WristMenu`` is a ``RayTarget`` of ``VRControls``: ``place`` puts it above the menu hand each
frame (in the person's metres: the rig's scale multiplies it, so it looks the same size in any
world), ``ray`` tests the other hand's laser against its plane in numpy (hover, click on the
trigger's press), ``draw`` updates the Panda3D nodes after the controls have run (text rebuilt
only when a label changes). It is drawn over the world: standing inside a cluster, a card between
the eyes and the hand must not hide the buttons. What the buttons do is ``game.vr.wrist_menu``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from panda3d.core import CardMaker, LMatrix4f, NodePath, TextNode, TransparencyAttrib

from game.vr import coords
from game.world.label import Label
from game.world.text_fit import fit_text

if TYPE_CHECKING:
    from game.controls.vr_controls import VRControls

# Layout in the person's metres (the panel is scaled by the rig, so these are what they see).
COLUMNS = 3
BUTTON_W = 0.082
BUTTON_H = 0.038
GAP = 0.005
TEXT = 0.013  # text scale: capitals 10.7 mm, 1.4 degrees at 45 cm, 1.0 at 60 cm
TITLE_H = 0.034
HINT_H = 0.046
LIFT = 0.05  # from the controller up to the panel's lower edge
WIDTH = COLUMNS * BUTTON_W + (COLUMNS + 1) * GAP

HELP_PAGE = ("back", "scenes", "quit")  # the buttons under the help text
HELP_TEXT = (
    "Grip: grab, carry, release drops\n"
    "Menu or undo while carrying: put it back\n"
    "Trigger: laser; press on a card: select\n"
    "Trigger on the panel's image: paint a what-if\n"
    "Left stick: walk   right stick: turn, up/down\n"
    "Both grips: scale and turn the world\n"
    "Undo button: undo   menu button: this menu"
)


@dataclass
class MenuButton:
    """One button: ``label`` may change (``\\n`` for a second line), ``hint`` says what it does
    (in VR words: no desktop key, no keyboard is in sight)."""

    key: str
    label: Callable[[], str]
    action: Callable[[], object]  # what it returns is ignored
    hint: str
    enabled: Callable[[], bool] = field(default=lambda: True)


def _panda(m: np.ndarray) -> LMatrix4f:
    return LMatrix4f(*coords.panda_values(m))


def facing_frame(anchor: np.ndarray, eye: np.ndarray, scale: float) -> np.ndarray:
    """A 4x4 at ``anchor`` whose -Y faces ``eye`` with Z as close to world up as it can be
    (no roll), scaled by ``scale``: how a panel is held to be read."""
    away = np.asarray(anchor, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    n = float(np.linalg.norm(away))
    y = away / n if n > 1e-9 else np.array([0.0, 1.0, 0.0])
    up = np.array([0.0, 0.0, 1.0])
    x = np.cross(y, up)
    if float(np.linalg.norm(x)) < 1e-6:  # looking straight down or up at it
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    z = np.cross(x, y)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = x * scale, y * scale, z * scale
    m[:3, 3] = anchor
    return m


def ray_on_plane(
    matrix: np.ndarray, origin: np.ndarray, forward: np.ndarray
) -> tuple[float, float, float] | None:
    """Where a world ray meets the local XZ plane of ``matrix``: (x, z, distance), or None if it
    runs parallel or points away."""
    inv = np.linalg.inv(matrix)
    o = inv @ np.append(np.asarray(origin, dtype=np.float64), 1.0)
    d = inv[:3, :3] @ np.asarray(forward, dtype=np.float64)
    if abs(d[1]) < 1e-9:
        return None
    t = -o[1] / d[1]
    if t <= 0:
        return None
    local = o[:3] + t * d
    return float(local[0]), float(local[2]), float(t * np.linalg.norm(forward))


class WristMenu:
    """The panel, its buttons and their hit test; ``toggle(hand)`` opens it on that hand."""

    def __init__(
        self,
        render: NodePath,
        buttons: list[MenuButton],
        haptic: Callable[[str, float], None] | None = None,
        on_open: Callable[[str | None], None] | None = None,
    ) -> None:
        self.buttons = buttons
        self.haptic = haptic or (lambda hand, seconds: None)
        self.on_open = on_open
        self.hand: str | None = None  # the hand it floats above; None: closed
        self.page = "main"
        self.matrix = np.eye(4)
        self.hovered: str | None = None
        self.clicked: list[str] = []  # every click, in order (tests, the session's story)
        self.hint = ""
        self.rows = math.ceil(len(self.page_buttons()) / COLUMNS)  # the main page's grid
        self.height = TITLE_H + self.rows * (BUTTON_H + GAP) + GAP + HINT_H
        self.root = render.attach_new_node("vr-wrist-menu")
        self.root.set_light_off(1)
        self.root.set_two_sided(True)
        self.root.set_transparency(TransparencyAttrib.M_alpha)
        # Drawn over the world (fixed bin, after the cards; no depth test): standing inside a
        # cluster, a card between the eyes and the hand must not hide the buttons.
        self.root.set_depth_test(False)
        self.root.set_depth_write(False)
        self.root.hide()
        self._build()

    # --- layout (panel metres, origin at the panel's centre, x right, z up) -----------------------

    def cell(self, i: int) -> tuple[float, float, float, float]:
        """Button ``i``'s (left, right, bottom, top)."""
        row, col = divmod(i, COLUMNS)
        left = -WIDTH / 2 + GAP + col * (BUTTON_W + GAP)
        top = self.height / 2 - TITLE_H - row * (BUTTON_H + GAP)
        return left, left + BUTTON_W, top - BUTTON_H, top

    def page_buttons(self) -> list[MenuButton]:
        if self.page == "help":
            return [b for b in self.buttons if b.key in HELP_PAGE]
        return [b for b in self.buttons if b.key not in HELP_PAGE]

    def slots(self) -> list[tuple[int, MenuButton]]:
        """(grid slot, button) for this page; the help page's buttons sit on the last row."""
        first = (self.rows - 1) * COLUMNS if self.page == "help" else 0
        return [(first + i, b) for i, b in enumerate(self.page_buttons())]

    def centre_of(self, key: str) -> np.ndarray:
        """A button's centre in the world (where a test or a demo aims the laser)."""
        for slot, b in self.slots():
            if b.key == key:
                left, right, bottom, top = self.cell(slot)
                return (self.matrix @ np.array([(left + right) / 2, 0.0, (bottom + top) / 2, 1.0]))[:3]
        raise KeyError(key)

    def _build(self) -> None:
        def quad(
            name: str, frame: tuple[float, float, float, float], colour, depth: float, sort: int
        ) -> NodePath:
            cm = CardMaker(name)
            cm.set_frame(*frame)
            node = self.root.attach_new_node(cm.generate())
            node.set_color(*colour)
            node.set_y(depth)
            node.set_bin("fixed", sort)
            node.set_depth_write(False)
            return node

        h = self.height
        quad("wrist-bg", (-WIDTH / 2, WIDTH / 2, -h / 2, h / 2), (0.05, 0.06, 0.08, 0.93), 0.0, 70)
        self.title = Label(self.root, "wrist-title", TEXT, (1, 0.85, 0.4, 1), backing=None, sort=72)
        self.title.root.set_pos(-WIDTH / 2 + GAP + 0.004, -0.002, h / 2 - TITLE_H + 0.011)
        small = TEXT * 0.85
        self.hint_label = Label(self.root, "wrist-hint", small, (0.8, 0.82, 0.9, 1), backing=None, sort=72)
        self.hint_label.root.set_pos(-WIDTH / 2 + GAP + 0.004, -0.002, -h / 2 + HINT_H - 0.022)
        self.help_label = Label(self.root, "wrist-help", small, (0.92, 0.93, 0.96, 1), backing=None, sort=72)
        self.help_label.set_text(HELP_TEXT)
        self.help_label.root.set_pos(-WIDTH / 2 + GAP + 0.004, -0.002, h / 2 - TITLE_H - 0.012)
        self.help_label.root.hide()
        self._cells: list[tuple[NodePath, Label]] = []
        for i in range(self.rows * COLUMNS):
            left, right, bottom, top = self.cell(i)
            bg = quad(f"wrist-button-{i}", (left, right, bottom, top), (0.16, 0.2, 0.3, 1), -0.001, 71)
            label = Label(
                self.root,
                f"wrist-text-{i}",
                TEXT,
                (1, 1, 1, 1),
                backing=None,
                align=TextNode.A_center,
                sort=72,
            )
            label.root.set_pos((left + right) / 2, -0.002, (bottom + top) / 2)
            self._cells.append((bg, label))
        self._shown: list[tuple[str, tuple[float, ...]] | None] = [None] * len(self._cells)
        self._fitted: dict[str, str] = {}  # a label's text -> as it fits its button

    # --- open / close ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.hand is not None

    def toggle(self, hand: str) -> None:
        """The menu button: open on ``hand``, close (from either hand), or move to ``hand``."""
        if self.hand == hand:
            self.close()
            return
        self.hand = hand
        self.page = "main"
        self.root.show()
        if self.on_open is not None:
            self.on_open(hand)

    def close(self) -> None:
        self.hand = None
        self.hovered = None
        self.root.hide()
        if self.on_open is not None:
            self.on_open(None)

    # --- RayTarget ------------------------------------------------------------------------------

    def place(self, controls: VRControls) -> None:
        """Above the menu hand, facing the eyes, sized for the person (the rig's scale)."""
        if self.hand is None:
            return
        scale = controls.rig.scale
        hand = controls.hand_world[self.hand][:3, 3]
        anchor = hand + np.array([0.0, 0.0, (LIFT + self.height / 2) * scale])
        self.matrix = facing_frame(anchor, controls.head_world[:3, 3], scale)
        self.hovered = None

    def ray(
        self, hand: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None:
        if self.hand is None or hand == self.hand:
            return None
        hit = ray_on_plane(self.matrix, origin, forward)
        if hit is None:
            return None
        x, z, distance = hit
        if abs(x) > WIDTH / 2 or abs(z) > self.height / 2:
            return None
        for slot, b in self.slots():
            left, right, bottom, top = self.cell(slot)
            if left <= x <= right and bottom <= z <= top:
                if self.hovered != b.key:
                    self.haptic(hand, 0.006)  # a tick as the laser crosses onto a button
                self.hovered = b.key
                if pressed:
                    self.click(b.key, hand)
                break
        return distance

    def click(self, key: str, hand: str = "right") -> bool:
        """Run a button's action (if it is on this page and enabled); True if it ran."""
        button = next((b for b in self.page_buttons() if b.key == key), None)
        if button is None or not button.enabled():
            return False
        self.clicked.append(key)
        self.haptic(hand, 0.02)
        button.action()
        return True

    # --- drawing (after the controls have run this frame) ---------------------------------------

    def draw(self) -> None:
        if self.hand is None:
            return
        self.root.set_mat(_panda(self.matrix))
        help_page = self.page == "help"
        self.title.set_text("Latent Reach - help" if help_page else "Latent Reach")
        if help_page:
            self.help_label.root.show()
        else:
            self.help_label.root.hide()
        placed = dict(self.slots())
        for slot, (bg, label) in enumerate(self._cells):
            b = placed.get(slot)
            if b is None:
                bg.hide()
                label.root.hide()
                self._shown[slot] = None
                continue
            bg.show()
            label.root.show()
            enabled = b.enabled()
            colour: tuple[float, ...]
            if not enabled:
                colour = (0.11, 0.12, 0.15, 1.0)
            elif b.key == self.hovered:
                colour = (0.3, 0.5, 0.9, 1.0)
            else:
                colour = (0.16, 0.2, 0.3, 1.0)
            raw = b.label()
            text = self._fitted.get(raw)
            if text is None:  # measuring text costs; a label has a few texts at most
                width = (BUTTON_W - 0.006) / TEXT
                text = "\n".join(fit_text(label.node, line, width) for line in raw.split("\n"))
                self._fitted[raw] = text
            state = (text, colour + (float(enabled),))
            if self._shown[slot] == state:
                continue  # text is only rebuilt when it changes
            self._shown[slot] = state
            bg.set_color(*colour)
            label.set_text(text)
            label.set_colour((1, 1, 1, 1) if enabled else (0.5, 0.52, 0.58, 1))
            _l, _r, bottom, top = self.cell(slot)
            frame = label.node.get_frame_actual()  # (left, right, bottom, top) in text units
            label.root.set_z((bottom + top) / 2 - TEXT * (frame[2] + frame[3]) / 2)
        hovered = next((b for b in self.page_buttons() if b.key == self.hovered), None)
        hint = hovered.hint if hovered is not None else "Point with the other hand; the trigger clicks."
        if hint != self.hint:
            self.hint = hint
            self.hint_label.set_text(fit_text(self.hint_label.node, hint, (WIDTH - 3 * GAP) / (TEXT * 0.85)))

    def destroy(self) -> None:
        self.root.remove_node()
