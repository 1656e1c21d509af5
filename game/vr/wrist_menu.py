"""The wrist menu: every desktop key within reach of a controller, plus painting with the laser.

A headset hides the keyboard, so each desktop feature that has no gesture of its own (undo, next
suspect, feature layer, heat-map method, next top-5 class, class model, what-if painting and its
tools, info panel, frame the selection, frame the whole cloud, help, quit) is a button on a small
panel that floats above the hand whose menu button opened it (the off hand, by convention the
left: it is the only menu button a Vive wand or a Mixed Reality controller has). The other
hand's laser points at a button (it lights up, the controller ticks) and the trigger clicks it.
The panel faces the eyes and keeps its size for the person whatever the world's scale, so its
text stays about a degree tall at a bent arm's distance.

Gesture: with a card selected, the laser on the info panel's image paints the what-if mask while
the trigger is held (painting starts by itself on the first press there), exactly as dragging
the mouse over the image does on the desktop (``paint_uv``).

Both are ``RayTarget``s of ``VRControls`` (headless geometry: a ray against a plane in numpy);
only drawing touches Panda3D. ``attach_wrist_menu`` wires them into a running ``VRSession``
with the explanation and guidance controls of the game (either may be missing: their buttons
then stay dim).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from panda3d.core import CardMaker, LMatrix4f, NodePath, Point3, TextNode, TransparencyAttrib

from game.core import events as ev
from game.vr import coords
from game.world.label import Label
from game.world.text_fit import fit_text

if TYPE_CHECKING:
    from game.controls.vr_controls import VRControls
    from game.vr.launch import VRSession

# Layout in the person's metres (the panel is scaled by the rig, so these are what they see).
COLUMNS = 3
BUTTON_W = 0.082
BUTTON_H = 0.038
GAP = 0.005
TEXT = 0.013  # text scale: capitals about 9 mm, 1.1 degrees at 45 cm
TITLE_H = 0.034
HINT_H = 0.046
LIFT = 0.05  # from the controller up to the panel's lower edge
WIDTH = COLUMNS * BUTTON_W + (COLUMNS + 1) * GAP
QUIT_CONFIRM_SECONDS = 4.0

SHORT_METHODS = {
    "gradcam": "Grad-CAM",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "ig": "Integr. Grad.",
    "guided": "Guided BP",
    "occlusion": "Occlusion",
}
HELP_TEXT = (
    "Grip: grab, carry, release drops\n"
    "Menu or undo while carrying: put it back\n"
    "Trigger: laser; press on a card: select\n"
    "Trigger on the panel's image: paint a what-if\n"
    "Left stick: walk   right stick: turn, up/down\n"
    "Both grips: scale and turn the world\n"
    "Undo button: undo   menu button: this menu"
)


class ExplainActions(Protocol):
    """What the menu uses of the explanation controls (``ExplainControls``)."""

    method: str | None
    painting: bool
    last_whatif: Any

    def cycle_method(self) -> None: ...

    def next_target(self) -> None: ...

    def request_class_model(self) -> None: ...

    def toggle_paint(self) -> None: ...

    def paint_uv(self, u: float, v: float, pressed: bool) -> None: ...

    def undo_stroke(self) -> None: ...

    def reset_strokes(self) -> None: ...

    def toggle_inpaint_method(self) -> None: ...

    def keep_edit(self) -> None: ...


class GuidanceActions(Protocol):
    """What the menu uses of the guidance controls (``GuidanceControls``)."""

    def next_suspect(self) -> int: ...

    def cycle_layer(self) -> None: ...


@dataclass
class MenuButton:
    """One button: ``label`` may change (``\\n`` for a second line), ``hint`` names the desktop key."""

    key: str
    label: Callable[[], str]
    action: Callable[[], object]  # what it returns is ignored
    hint: str
    enabled: Callable[[], bool] = field(default=lambda: True)


def _fixed(text: str) -> Callable[[], str]:
    return lambda: text


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
            return [b for b in self.buttons if b.key in ("back", "quit")]
        return [b for b in self.buttons if b.key not in ("back", "quit")]

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
            text = "\n".join(
                fit_text(label.node, line, (BUTTON_W - 0.006) / TEXT) for line in b.label().split("\n")
            )
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


class PanelPainter:
    """The laser on the info panel: it blocks the cards behind it, and on the card's image the
    held trigger paints the what-if (starting painting on the first press there)."""

    def __init__(self, session: VRSession, explain: ExplainActions) -> None:
        self.session = session
        self.explain = explain
        self.stroke_hand: str | None = None
        self.last_uv: tuple[float, float] | None = None

    def place(self, controls: VRControls) -> None:
        hand = self.stroke_hand
        if hand is not None and not controls.triggers.get(hand, False):
            self.explain.paint_uv(-1.0, -1.0, pressed=False)  # the trigger let go: the stroke ends
            self.stroke_hand = None

    def _hit(self, origin: np.ndarray, forward: np.ndarray) -> tuple[float, float, float, bool] | None:
        """(u, v, distance, on the image) where the ray meets the panel, or None."""
        app = self.session.app
        panel = app.world.panel
        root = panel.root
        if root.is_hidden() or root.get_parent() != app.render or app.workspace.selected < 0:
            return None
        o = root.get_relative_point(app.render, Point3(*map(float, origin)))
        e = root.get_relative_point(app.render, Point3(*map(float, np.asarray(origin) + forward)))
        dy = e[1] - o[1]
        if abs(dy) < 1e-12:
            return None
        t = -o[1] / dy
        if t <= 0:
            return None
        x, z = o[0] + t * (e[0] - o[0]), o[2] + t * (e[2] - o[2])
        blo, bhi = panel.background.get_tight_bounds(root)
        if not (blo[0] <= x <= bhi[0] and blo[2] <= z <= bhi[2]):
            return None
        lo, hi = panel.image.get_tight_bounds(root)
        u = (x - lo[0]) / max(1e-9, hi[0] - lo[0])
        v = (hi[2] - z) / max(1e-9, hi[2] - lo[2])
        return float(u), float(v), float(t * np.linalg.norm(forward)), bool(0 <= u <= 1 and 0 <= v <= 1)

    def ray(
        self, hand: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None:
        hit = self._hit(origin, forward)
        if hit is None:
            return None
        u, v, distance, on_image = hit
        if trigger and (pressed or self.stroke_hand == hand):
            if pressed and on_image and not self.explain.painting:
                self.explain.toggle_paint()
            if self.explain.painting and (on_image or self.stroke_hand == hand):
                self.explain.paint_uv(u, v, pressed=True)
                self.stroke_hand = hand
                self.last_uv = (u, v)
        return distance


def wrist_buttons(
    session: VRSession,
    explain: ExplainActions | None,
    guidance: GuidanceActions | None,
    menu: Callable[[], WristMenu],
) -> list[MenuButton]:
    """The desktop's keys as buttons, in the help overlay's order; ``menu`` gives the menu they
    sit on (for the pointing hand and the help page)."""
    app, controls = session.app, session.controls
    quit_armed: list[float] = []

    def selected() -> int:
        return int(app.workspace.selected)

    def has_card() -> bool:
        return 0 <= selected() < len(app.world.positions)

    def pointer() -> str:
        hand = menu().hand
        return "right" if hand == "left" else "left"

    def undo() -> None:
        app.workspace.post(ev.UndoRequested(hand=f"vr-{pointer()}"))

    def next_suspect() -> None:
        assert guidance is not None
        card = guidance.next_suspect()
        if card >= 0:
            controls.go_to(np.asarray(app.world.positions[card], dtype=np.float64))

    def heat_label() -> str:
        method = explain.method if explain is not None else None
        return "Heat map\n" + (SHORT_METHODS.get(method, method) if method else "off")

    def toggle_panel() -> None:
        panel = app.world.panel.root
        if panel.is_hidden() and has_card():
            panel.show()
        else:
            panel.hide()

    def go_to() -> None:
        controls.go_to(np.asarray(app.world.positions[selected()], dtype=np.float64))

    def quit_label() -> str:
        return (
            "Click again\nto quit"
            if quit_armed and app.now - quit_armed[0] < QUIT_CONFIRM_SECONDS
            else "Quit"
        )

    def quit_app() -> None:
        if quit_armed and app.now - quit_armed[0] < QUIT_CONFIRM_SECONDS:
            app.userExit()
            return
        quit_armed[:] = [app.now]

    def page(name: str) -> Callable[[], None]:
        def show() -> None:
            menu().page = name

        return show

    def can_explain() -> bool:
        return explain is not None and has_card()

    def painting() -> bool:
        return explain is not None and explain.painting

    e = explain
    return [
        MenuButton("undo", _fixed("Undo"), undo, "Undo (Ctrl+Z): the last fine-tune goes back"),
        MenuButton(
            "suspect",
            _fixed("Next\nsuspect"),
            next_suspect,
            "Next suspect (N): select it, go to it, say why",
            lambda: guidance is not None,
        ),
        MenuButton(
            "layer",
            _fixed("Next\nlayer"),
            lambda: guidance.cycle_layer() if guidance is not None else None,
            "Feature layer (L): the cloud from another layer",
            lambda: guidance is not None,
        ),
        MenuButton(
            "heatmap",
            heat_label,
            lambda: e.cycle_method() if e is not None else None,
            "Heat map (X): next method, on the panel",
            can_explain,
        ),
        MenuButton(
            "target",
            _fixed("Next\nclass"),
            lambda: e.next_target() if e is not None else None,
            "Next top-5 class (T) to explain",
            can_explain,
        ),
        MenuButton(
            "classmodel",
            _fixed("Class\nmodel"),
            lambda: e.request_class_model() if e is not None else None,
            "Class model (G): an image made for the class",
            can_explain,
        ),
        MenuButton(
            "paint",
            lambda: "Painting\ndone" if painting() else "What-if\npaint",
            lambda: e.toggle_paint() if e is not None else None,
            "What-if (P): trigger on the panel's image paints",
            lambda: painting() or can_explain(),
        ),
        MenuButton(
            "stroke",
            _fixed("Undo\nstroke"),
            lambda: e.undo_stroke() if e is not None else None,
            "Undo the last stroke (Backspace)",
            painting,
        ),
        MenuButton(
            "clear",
            _fixed("Clear\nmask"),
            lambda: e.reset_strokes() if e is not None else None,
            "Clear the painted mask (Delete)",
            painting,
        ),
        MenuButton(
            "inpaint",
            _fixed("Telea /\nNav.-Stokes"),
            lambda: e.toggle_inpaint_method() if e is not None else None,
            "Fill method: Telea or Navier-Stokes (I)",
            painting,
        ),
        MenuButton(
            "keep",
            _fixed("Keep as\nnew card"),
            lambda: e.keep_edit() if e is not None else None,
            "Keep the edited image as a new card (K)",
            lambda: painting() and e is not None and e.last_whatif is not None,
        ),
        MenuButton(
            "panel", _fixed("Info\npanel"), toggle_panel, "Show / hide the info panel (Tab)", has_card
        ),
        MenuButton("goto", _fixed("Go to\ncard"), go_to, "Go to the selected card (F)", has_card),
        MenuButton(
            "overview",
            lambda: "Back in" if controls.overview else "See all",
            controls.see_all,
            "The whole cloud before you, again: back (C)",
        ),
        MenuButton("help", _fixed("Help"), page("help"), "What each controller button does (H)"),
        MenuButton("back", _fixed("Back"), page("main"), "Back to the buttons"),
        MenuButton("quit", quit_label, quit_app, "Quit Latent Reach (Ctrl+Q): click twice"),
    ]


def attach_wrist_menu(
    session: VRSession, explain: ExplainActions | None = None, guidance: GuidanceActions | None = None
) -> WristMenu:
    """Give a running VR session the wrist menu (menu button) and laser painting on the panel."""
    holder: list[WristMenu] = []

    def lift_hud(hand: str | None) -> None:
        session.ui.hud_lift = holder[0].height + 0.02 if hand == "left" else 0.0

    menu = WristMenu(
        session.app.render,
        wrist_buttons(session, explain, guidance, lambda: holder[0]),
        haptic=session.controls.haptic,
        on_open=lift_hud,
    )
    holder.append(menu)
    controls = session.controls
    controls.targets.append(menu)
    if explain is not None:
        controls.targets.append(PanelPainter(session, explain))
    controls.on_menu = menu.toggle

    def after_frame(state: Any, paused: bool) -> None:
        menu.draw()
        for hand, length in controls.laser_length.items():
            if length is not None:
                session.ui.set_beam_length(hand, length)

    session.stereo.listeners.append(after_frame)
    stopped = session.stereo.on_stop

    def on_stop(reason: str) -> None:
        menu.destroy()
        if stopped is not None:
            stopped(reason)

    session.stereo.on_stop = on_stop
    return menu
