"""The wrist menu: every desktop key within reach of a controller, plus painting with the laser.

A headset hides the keyboard, so each desktop feature that has no gesture of its own (undo, next
suspect, feature layer, heat-map method, next top-5 class, class model, what-if painting and its
tools, info panel, frame the selection, frame the whole cloud, help, quit) is a button on a small
panel that floats above the hand whose menu button opened it (the off hand, by convention the
left: it is the only menu button a Vive wand or a Mixed Reality controller has). The other
hand's laser points at a button (it lights up, the controller ticks) and the trigger clicks it.
The panel faces the eyes and keeps its size for the person whatever the world's scale, so its
text stays 1 to 1.4 degrees tall from a straight to a bent arm.

Gesture: with a card selected, the laser on the info panel's image paints the what-if mask while
the trigger is held (painting starts by itself on the first press there), exactly as dragging
the mouse over the image does on the desktop (``paint_uv``).

Both are ``RayTarget``s of ``VRControls``; the panel itself (layout, hit test, drawing) is
``game.vr.wrist_panel``, this module is what its buttons do. ``attach_wrist_menu`` wires them into a running ``VRSession``
with the explanation and guidance controls of the game (either may be missing: their buttons
then stay dim).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from panda3d.core import Point3

from game.core import events as ev
from game.vr.wrist_panel import MenuButton, WristMenu

if TYPE_CHECKING:
    from game.controls.vr_controls import VRControls
    from game.vr.launch import VRSession

__all__ = ["MenuButton", "PanelPainter", "WristMenu", "attach_wrist_menu", "wrist_buttons"]

QUIT_CONFIRM_SECONDS = 4.0

SHORT_METHODS = {
    "gradcam": "Grad-CAM",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "ig": "Integr. Grad.",
    "guided": "Guided BP",
    "occlusion": "Occlusion",
}


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


def _fixed(text: str) -> Callable[[], str]:
    return lambda: text


def _floats3(v: Any) -> list[float]:
    """Three plain floats (one ``tolist`` for the controls' arrays)."""
    return v.tolist() if isinstance(v, np.ndarray) else [float(x) for x in v]


class PanelPainter:
    """The laser on the info panel: it blocks the cards behind it, and on the card's image the
    held trigger paints the what-if (starting painting on the first press there)."""

    def __init__(self, session: VRSession, explain: ExplainActions) -> None:
        self.session = session
        self.explain = explain
        self.stroke_hand: str | None = None
        self.last_uv: tuple[float, float] | None = None
        # Whether the panel is in the world and its transform, read once a frame for both hands'
        # rays (the in-world UI places it after the controls; a button's action on a frame a
        # trigger is pulled may show it: then read per ray).
        self._bounds: tuple[Any, ...] | None = None  # (panel, the quads' transforms, bounds)
        self._view: tuple[Any, Any, Any] | None = None  # (panel, world -> panel, bounds), the same way
        self._keep_bounds = False

    def place(self, controls: VRControls) -> None:
        self._view = None
        self._keep_bounds = not any(controls.pressed.values())
        hand = self.stroke_hand
        if hand is not None and not controls.triggers.get(hand, False):
            self.explain.paint_uv(-1.0, -1.0, pressed=False)  # the trigger let go: the stroke ends
            self.stroke_hand = None

    def _hit(self, origin: np.ndarray, forward: np.ndarray) -> tuple[float, float, float, bool] | None:
        """(u, v, distance, on the image) where the ray meets the panel, or None."""
        app = self.session.app
        panel = app.world.panel
        view = self._view
        if view is None or view[0] is not panel:
            view = self._read_view(panel)
            if self._keep_bounds:
                self._view = view
        to_panel = view[1]
        if to_panel is None:
            return None
        # In the panel's frame (row vectors: p' = p M): the origin as a point, the direction as a
        # vector; plain floats (no Panda3D call per ray).
        x0, y0, z0 = _floats3(origin)
        fx, fy, fz = _floats3(forward)
        (m00, m01, m02), (m10, m11, m12), (m20, m21, m22), (m30, m31, m32) = to_panel
        dy = fx * m01 + fy * m11 + fz * m21
        if abs(dy) < 1e-12:
            return None
        t = -(x0 * m01 + y0 * m11 + z0 * m21 + m31) / dy
        if t <= 0:
            return None
        x = x0 * m00 + y0 * m10 + z0 * m20 + m30 + t * (fx * m00 + fy * m10 + fz * m20)
        z = x0 * m02 + y0 * m12 + z0 * m22 + m32 + t * (fx * m02 + fy * m12 + fz * m22)
        blo, bhi, lo, hi = view[2]
        if not (blo[0] <= x <= bhi[0] and blo[2] <= z <= bhi[2]):
            return None
        u = (x - lo[0]) / max(1e-9, hi[0] - lo[0])
        v = (hi[2] - z) / max(1e-9, hi[2] - lo[2])
        length = math.hypot(fx, fy, fz)
        return float(u), float(v), float(t * length), bool(0 <= u <= 1 and 0 <= v <= 1)

    def _read_view(self, panel: Any) -> tuple[Any, Any, Any]:
        """(panel, world -> panel transform or None when the panel is not in the world, bounds of
        the background and the image in the panel's frame): once a frame for both hands' rays."""
        app = self.session.app
        root = panel.root
        if app.workspace.selected < 0 or root.is_hidden() or root.get_parent() != app.render:
            return panel, None, None
        # The bounds follow the two quads' own transforms (the panel lays them out by moving and
        # scaling them): read again only when one of those changed.
        key = (panel, panel.background.get_mat(), panel.image.get_mat())
        bounds = self._bounds
        if bounds is None or bounds[0] is not panel or bounds[1] != key[1] or bounds[2] != key[2]:
            bounds = (*key, *panel.background.get_tight_bounds(root), *panel.image.get_tight_bounds(root))
            self._bounds = bounds
        m = app.render.get_mat(root)  # world -> panel, read once a frame as plain floats
        return panel, [(r[0], r[1], r[2]) for r in m], bounds[3:]

    def ray(
        self, hand: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None:
        hit = self._hit(origin, forward)
        if hit is None:
            return None
        u, v, distance, on_image = hit
        if trigger and (pressed or self.stroke_hand == hand):
            self._view = None  # painting may show the panel anew (the other hand reads it)
            self._keep_bounds = False
            if pressed and on_image and not self.explain.painting:
                self.explain.toggle_paint()
            if self.explain.painting and (on_image or self.stroke_hand == hand):
                self.explain.paint_uv(u, v, pressed=True)
                self.stroke_hand = hand
                self.last_uv = (u, v)
        return distance


class StartMenuActions(Protocol):
    """What the laser uses of the start menu (``MenuController``: scenes, sessions, settings)."""

    root: Any
    index: int
    items: list[Any]

    @property
    def visible(self) -> bool: ...

    def show_start(self) -> None: ...

    def hide(self) -> None: ...

    def move(self, delta: int) -> None: ...

    def activate(self) -> None: ...

    def adjust(self, delta: int) -> None: ...

    def item_at(self, origin: Any, direction: Any) -> int: ...


START_MENU_DISTANCE = 0.8  # metres (the person's) from the eyes to the start menu in VR
MODAL_LASER_METRES = 1.5  # the laser's drawn length while the start menu holds it, pointing away
START_MENU_SCALE = 0.45  # the menu's units to the person's metres: its rows' text 2.7 cm at 0.8 m


class StartMenuLaser:
    """The start menu (scenes, recent sessions, settings, quit) in VR: placed before the eyes when
    it opens, its rows hovered by the laser and activated by the trigger; on a setting the
    trigger on the row's left half lowers it, on the right half raises it (the desktop's
    Left / Right)."""

    def __init__(self, menu: StartMenuActions) -> None:
        self.menu = menu
        self._placed = False
        self._scale = 1.0

    def place(self, controls: VRControls) -> None:
        if not self.menu.visible:
            self._placed = False
            return
        if self._placed:
            return
        scale = controls.rig.scale
        self._scale = scale
        head = controls.head_world[:3, 3]
        forward = controls.head_world[:3, 1].copy()
        forward[2] = 0.0
        n = float(np.linalg.norm(forward))
        forward = forward / n if n > 1e-6 else np.array([0.0, 1.0, 0.0])
        # Its top row near eye height: the menu's origin is its top edge.
        where = head + forward * START_MENU_DISTANCE * scale + np.array([0.0, 0.0, 0.12 * scale])
        root = self.menu.root
        root.set_pos(*map(float, where))
        root.set_hpr(float(np.degrees(np.arctan2(-forward[0], forward[1]))), 0.0, 0.0)
        root.set_scale(START_MENU_SCALE * scale)
        self._placed = True

    def plane_hit(self, origin: np.ndarray, forward: np.ndarray) -> tuple[float, float]:
        """Where the ray meets the menu's plane: (ray parameter, negative when behind the
        origin; x across the menu in its units)."""
        root = self.menu.root
        parent = root.get_parent()
        o = root.get_relative_point(parent, Point3(*map(float, origin)))
        e = root.get_relative_point(parent, Point3(*map(float, np.asarray(origin) + forward)))
        depth = e[1] - o[1]
        t = -o[1] / depth if abs(depth) > 1e-9 else -1.0
        return float(t), float(o[0] + t * (e[0] - o[0]))

    def ray(
        self, hand: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None:
        menu = self.menu
        if not self._placed or not menu.visible:  # closed (the usual case): no Panda3D call
            return None
        row = menu.item_at(origin, forward)
        if row < 0:
            return None  # the wrist menu and the panel may still take it; else StartMenuShield
        t, x = self.plane_hit(origin, forward)
        if row != menu.index:
            menu.move(row - menu.index)
        if pressed:
            item = menu.items[row]
            if getattr(item, "adjust", None) is not None and getattr(item, "activate", None) is None:
                menu.adjust(-1 if x < 0 else +1)
            else:
                menu.activate()
        return float(t * np.linalg.norm(forward))


class StartMenuShield:
    """The start menu is modal, as on the desktop: while it is shown, a ray that no row, wrist
    button or panel took stops here, so a trigger beside or between the menu's rows never
    selects a card in the world behind it. The last of the ray targets."""

    def __init__(self, laser: StartMenuLaser) -> None:
        self.laser = laser

    def place(self, controls: VRControls) -> None:
        pass  # the laser places the menu

    def ray(
        self, hand: str, origin: np.ndarray, forward: np.ndarray, trigger: bool, pressed: bool
    ) -> float | None:
        laser = self.laser
        if not laser._placed or not laser.menu.visible:
            return None
        t, _ = laser.plane_hit(origin, forward)
        if t > 0:
            return float(t * np.linalg.norm(forward))  # the laser ends on the menu's plane
        return MODAL_LASER_METRES * laser._scale


def wrist_buttons(
    session: VRSession,
    explain: ExplainActions | None,
    guidance: GuidanceActions | None,
    menu: Callable[[], WristMenu],
    start_menu: StartMenuActions | None = None,
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

    def toggle_start_menu() -> None:
        if start_menu is not None:
            start_menu.hide() if start_menu.visible else start_menu.show_start()

    def can_explain() -> bool:
        return explain is not None and has_card()

    def painting() -> bool:
        return explain is not None and explain.painting

    e = explain
    return [
        MenuButton("undo", _fixed("Undo"), undo, "Undo the last fine-tune (the undo button, A / X, too)"),
        MenuButton(
            "suspect",
            _fixed("Next\nsuspect"),
            next_suspect,
            "Next suspect: select it, go to it, say why",
            lambda: guidance is not None,
        ),
        MenuButton(
            "layer",
            _fixed("Next\nlayer"),
            lambda: guidance.cycle_layer() if guidance is not None else None,
            "Next layer: the cloud from another feature layer",
            lambda: guidance is not None,
        ),
        MenuButton(
            "heatmap",
            heat_label,
            lambda: e.cycle_method() if e is not None else None,
            "Heat map: the next method, on the panel",
            can_explain,
        ),
        MenuButton(
            "target",
            _fixed("Next\nclass"),
            lambda: e.next_target() if e is not None else None,
            "Explain the next of the top-5 classes",
            can_explain,
        ),
        MenuButton(
            "classmodel",
            _fixed("Class\nmodel"),
            lambda: e.request_class_model() if e is not None else None,
            "Class model: an image made for the class",
            can_explain,
        ),
        MenuButton(
            "paint",
            lambda: "Painting\ndone" if painting() else "What-if\npaint",
            lambda: e.toggle_paint() if e is not None else None,
            "What-if: the trigger on the panel's image paints",
            lambda: painting() or can_explain(),
        ),
        MenuButton(
            "stroke",
            _fixed("Undo\nstroke"),
            lambda: e.undo_stroke() if e is not None else None,
            "Undo the last stroke",
            painting,
        ),
        MenuButton(
            "clear",
            _fixed("Clear\nmask"),
            lambda: e.reset_strokes() if e is not None else None,
            "Clear the painted mask",
            painting,
        ),
        MenuButton(
            "inpaint",
            _fixed("Telea /\nNav.-Stokes"),
            lambda: e.toggle_inpaint_method() if e is not None else None,
            "Fill method: Telea or Navier-Stokes",
            painting,
        ),
        MenuButton(
            "keep",
            _fixed("Keep as\nnew card"),
            lambda: e.keep_edit() if e is not None else None,
            "Keep the edited image as a new card",
            lambda: painting() and e is not None and e.last_whatif is not None,
        ),
        MenuButton("panel", _fixed("Info\npanel"), toggle_panel, "Show / hide the info panel", has_card),
        MenuButton(
            "goto", _fixed("Go to\ncard"), go_to, "Go to the selected card (at arm's length)", has_card
        ),
        MenuButton(
            "overview",
            lambda: "Back in" if controls.overview else "See all",
            controls.see_all,
            "The whole cloud before you; again: back",
        ),
        MenuButton("help", _fixed("Help"), page("help"), "What each controller button does"),
        MenuButton("back", _fixed("Back"), page("main"), "Back to the buttons"),
        MenuButton(
            "scenes",
            _fixed("Scenes,\nsettings"),
            toggle_start_menu,
            "The start menu: scenes, sessions, settings",
            lambda: start_menu is not None,
        ),
        MenuButton("quit", quit_label, quit_app, "Quit Latent Reach: click twice"),
    ]


def attach_wrist_menu(
    session: VRSession,
    explain: ExplainActions | None = None,
    guidance: GuidanceActions | None = None,
    start_menu: StartMenuActions | None = None,
) -> WristMenu:
    """Give a running VR session the wrist menu (menu button), laser painting on the panel and,
    where the game has one, the start menu before the eyes (laser + trigger)."""
    holder: list[WristMenu] = []

    def lift_hud(hand: str | None) -> None:
        session.ui.hud_lift = holder[0].height + 0.02 if hand == "left" else 0.0

    menu = WristMenu(
        session.app.render,
        wrist_buttons(session, explain, guidance, lambda: holder[0], start_menu),
        haptic=session.controls.haptic,
        on_open=lift_hud,
    )
    holder.append(menu)
    controls = session.controls
    laser = StartMenuLaser(start_menu) if start_menu is not None else None
    if laser is not None:
        controls.targets.append(laser)  # before the eyes, over everything
    controls.targets.append(menu)
    if explain is not None:
        controls.targets.append(PanelPainter(session, explain))
    if laser is not None:
        controls.targets.append(StartMenuShield(laser))  # last: what nothing else took
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
