"""In-world start menu (scenes, recent sessions) and settings page (movement speed, card size).

The menu is a 3-D panel placed in front of the camera, so the same node works on the desktop and
in VR. Keyboard: Up/Down choose, Enter activates, Left/Right change a setting, Esc or M closes.
Mouse: hover and click an item (a ray against the panel's plane, no collision system needed).

While shown, ``MENU`` is the top of the shared ``InputModes`` stack: the world's keys are quiet and
Esc (routed by the stack) closes the menu. It opens over the world or over what-if painting, not
while a card is carried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from direct.showbase.DirectObject import DirectObject
from panda3d.core import CardMaker, NodePath, Point3, TextNode, TransparencyAttrib

from game.controls.modes import InputModes, Mode
from game.controls.services import Flight, SceneParts, Viewport
from game.controls.wording import Wording
from game.core import events as ev
from game.core.scene import Scene, list_scenes, load_scene
from game.core.worker import Worker
from game.world.label import Label
from game.world.text_fit import fit_text

if TYPE_CHECKING:
    from game.pipeline import LoadedScene

ROW = 0.11
WIDTH = 1.5


def _fixed(text: str) -> Callable[[], str]:
    """A row whose text never changes."""
    return lambda: text


@dataclass
class Item:
    text: Callable[[], str]
    activate: Callable[[], None] | None = None
    adjust: Callable[[int], None] | None = None  # Left/Right on a setting


class MenuController:
    """Start menu and settings; while ``visible``, ``MENU`` is the top input mode."""

    def __init__(
        self,
        view: Viewport,
        scene: SceneParts,
        worker: Worker,
        *,
        switch_scene: Callable[[LoadedScene], None],
        quit: Callable[[], None],
        prestart: Callable[[Scene], None] | None = None,
        modes: InputModes | None = None,
        flight: Flight | None = None,
        wording: Wording | None = None,
    ) -> None:
        self.view = view
        # The hint names keys on the desktop, the laser and trigger in VR.
        self.wording = wording if wording is not None else Wording()
        self._hint: Label | None = None
        self.wording.listeners.append(self._reword)
        self.scene = scene  # game.assembly passes the next one to ``rebind`` after a switch
        self.worker = worker
        self.switch_scene = switch_scene  # shows a scene loaded here (the app's ``switch_scene``)
        self.quit = quit
        # Told a scene's settings before it loads (game.assembly: start its job process meanwhile).
        self.prestart = prestart
        self.modes = modes if modes is not None else InputModes()
        self.flight = flight  # the desktop controls' flying speed, for the settings page
        self.root = view.render.attach_new_node("menu")
        self.root.set_light_off(1)
        self.root.set_depth_test(False)
        self.root.set_depth_write(False)
        self.root.set_bin("fixed", 50)
        self.root.set_transparency(TransparencyAttrib.M_alpha)
        self.root.hide()
        self.page = "start"
        self.index = 0
        self.items: list[Item] = []
        self._nodes: list[NodePath] = []
        self.session_handler: Callable[[Path], None] | None = None
        self.loading = False
        # Own DirectObject: a second app.accept of the same event would replace the controls' one.
        self._events = DirectObject()
        for key, fn in {
            "arrow_up": lambda: self.move(-1),
            "arrow_down": lambda: self.move(+1),
            "enter": self.activate,
            "arrow_left": lambda: self.adjust(-1),
            "arrow_right": lambda: self.adjust(+1),
            "m": self.toggle,
            "mouse1": self._click,
        }.items():
            self._events.accept(key, self.modes.when(Mode.MENU)(fn) if key != "m" else self.modes.desktop(fn))

    def rebind(self, scene: SceneParts) -> None:
        """The start menu opened another scene: settings and messages go to it."""
        self.scene = scene

    @property
    def visible(self) -> bool:
        return not self.root.is_hidden()

    # --- pages --------------------------------------------------------------------------------

    def _start_items(self) -> list[Item]:
        items = [Item(lambda: "Resume", self.hide)]
        for path in list_scenes():
            try:
                name = load_scene(path).scene.name
            except Exception:  # a broken preset is listed but cannot be opened
                name = f"{path.name} (invalid)"
            items.append(Item(_fixed(f"Scene: {name}  [{path.name}]"), partial(self.open_scene, path)))
        for path in self._recent_sessions():
            items.append(Item(_fixed(f"Session: {path.name}"), partial(self.open_session, path)))
        items.append(Item(lambda: "Settings", lambda: self.show_page("settings")))
        items.append(Item(lambda: "Quit", self.quit))
        return items

    def _settings_items(self) -> list[Item]:
        flight = self.flight

        def speed_text() -> str:
            return f"Movement speed:  < {flight.speed:.1f} m/s >" if flight else "Movement speed: -"

        def speed_adjust(d: int) -> None:
            if flight:
                flight.speed = max(0.2, min(20.0, flight.speed * (1.25 if d > 0 else 0.8)))

        def size_text() -> str:
            return f"Card size:  < {100 * self.scene.world.config.card_size:.0f} cm >"

        def size_adjust(d: int) -> None:
            world = self.scene.world
            world.set_card_size(max(0.02, min(0.4, world.config.card_size * (1.2 if d > 0 else 1 / 1.2))))

        def tween_text() -> str:
            return f"Animation time:  < {self.scene.world.config.tween_seconds:.1f} s >"

        def tween_adjust(d: int) -> None:
            cfg = self.scene.world.config
            cfg.tween_seconds = max(0.0, min(5.0, round(cfg.tween_seconds + 0.25 * d, 2)))

        return [
            Item(speed_text, None, speed_adjust),
            Item(size_text, None, size_adjust),
            Item(tween_text, None, tween_adjust),
            Item(lambda: "Back", lambda: self.show_page("start")),
        ]

    def _recent_sessions(self, limit: int = 5) -> list[Path]:
        try:
            from game.sessions.paths import list_sessions

            return list(reversed(list_sessions()))[:limit]
        except Exception:
            return []

    def show_page(self, page: str) -> None:
        self.page = page
        self.items = self._start_items() if page == "start" else self._settings_items()
        self.index = min(self.index, len(self.items) - 1) if page == "settings" else 0
        self._draw()

    def _draw(self) -> None:
        for node in self._nodes:
            node.remove_node()
        self._nodes.clear()
        self._hint = None
        title = "Latent Reach" if self.page == "start" else "Settings"
        height = ROW * (len(self.items) + 2.5)
        cm = CardMaker("menu-bg")
        cm.set_frame(-WIDTH / 2, WIDTH / 2, -height, 0.05)
        bg = self.root.attach_new_node(cm.generate())
        bg.set_color(0.05, 0.06, 0.08, 0.95)
        bg.set_bin("fixed", 50)
        self._nodes.append(bg)
        head = Label(
            self.root, "menu-title", 0.09, (1, 0.85, 0.4, 1), backing=None, align=TextNode.A_left, sort=60
        )
        head.set_text(title)
        head.root.set_pos(-WIDTH / 2 + 0.06, -0.001, -0.1)
        self._nodes.append(head.root)
        hint = Label(self.root, "menu-hint", 0.04, (0.7, 0.72, 0.8, 1), backing=None, sort=60)
        hint.set_text(self.wording.say("menu_keys"))
        hint.root.set_pos(-WIDTH / 2 + 0.06, -0.001, -height + 0.04)
        self._nodes.append(hint.root)
        self._hint = hint
        self._rows: list[Label] = []
        for i, item in enumerate(self.items):
            row = Label(self.root, f"menu-item-{i}", 0.06, (1, 1, 1, 1), backing=None, sort=60)
            row.set_text(self._fit(row, item.text()))
            row.root.set_pos(-WIDTH / 2 + 0.1, -0.002, self._row_z(i))
            self._rows.append(row)
            self._nodes.append(row.root)
        cm = CardMaker("menu-cursor")
        cm.set_frame(-WIDTH / 2 + 0.04, WIDTH / 2 - 0.04, -0.035, 0.075)
        self.cursor = self.root.attach_new_node(cm.generate())
        self.cursor.set_color(0.3, 0.5, 0.9, 0.45)
        self.cursor.set_bin("fixed", 55)
        self.cursor.set_y(-0.0005)
        self._nodes.append(self.cursor)
        self._refresh()

    def _row_z(self, i: int) -> float:
        return -0.25 - ROW * i

    @staticmethod
    def _fit(row: Label, text: str) -> str:
        """The row's text, cut with "..." where it would leave the panel (long session names)."""
        return fit_text(row.node, text, (WIDTH - 0.1 - 0.06) / 0.06)

    def _refresh(self) -> None:
        for i, (row, item) in enumerate(zip(self._rows, self.items)):
            row.set_text(self._fit(row, item.text()))
            row.set_colour((1, 0.9, 0.5, 1) if i == self.index else (0.92, 0.93, 0.96, 1))
        self.cursor.set_z(self._row_z(self.index))

    # --- visibility ---------------------------------------------------------------------------

    def show_start(self) -> None:
        self.show_page("start")
        self.show()

    def show(self) -> None:
        if not self.items:
            self.show_page("start")
        # In front of the camera, facing it, at a comfortable reading distance.
        cam, render = self.view.camera, self.view.render
        self.root.reparent_to(render)
        self.root.set_pos(render.get_relative_point(cam, Point3(0, 1.6, 0.45)))
        self.root.set_hpr(cam.get_hpr(render))
        self.root.show()
        self.modes.push(Mode.MENU, on_escape=self.hide)

    def hide(self) -> None:
        self.root.hide()
        self.modes.pop(Mode.MENU)

    def toggle(self) -> None:
        """M (and Esc in the world): open over the world or painting, never over a carried card."""
        if self.visible:
            self.hide()
        elif self.modes.is_top(Mode.WORLD, Mode.PAINT):
            self.show_start() if self.page == "start" or not self.items else self.show()

    # --- navigation ---------------------------------------------------------------------------

    def move(self, delta: int) -> None:
        self.index = (self.index + delta) % len(self.items)
        self._refresh()

    def activate(self) -> None:
        item = self.items[self.index]
        if item.activate is not None:
            item.activate()
        elif item.adjust is not None:
            item.adjust(+1)
        if self.visible and self.items:
            self._refresh()

    def adjust(self, delta: int) -> None:
        item = self.items[self.index]
        if item.adjust is not None:
            item.adjust(delta)
            self._refresh()

    def item_at(self, origin, direction) -> int:
        """Index of the menu row a ray hits, or -1 (mouse or VR laser)."""
        local_o = self.root.get_relative_point(self.view.render, Point3(*map(float, origin)))
        end = [float(origin[i]) + float(direction[i]) for i in range(3)]
        local_e = self.root.get_relative_point(self.view.render, Point3(*end))
        dy = local_e[1] - local_o[1]
        if abs(dy) < 1e-9:
            return -1
        t = -local_o[1] / dy
        if t <= 0:
            return -1
        x = local_o[0] + t * (local_e[0] - local_o[0])
        z = local_o[2] + t * (local_e[2] - local_o[2])
        if abs(x) > WIDTH / 2:
            return -1
        for i in range(len(self.items)):
            z0 = self._row_z(i)
            if z0 - 0.035 <= z <= z0 + 0.075:
                return i
        return -1

    def _click(self) -> None:
        mouse = self.view.mouse()
        if mouse is None:
            return
        origin, direction = self.view.mouse_ray(*mouse)
        i = self.item_at(origin, direction)
        if i >= 0:
            self.index = i
            self.activate()

    # --- actions ----------------------------------------------------------------------------------

    def open_scene(self, path: Path) -> None:
        """Load another scene on the worker (training/layout can take a while), then switch.

        Its job process is prestarted first (``prestart``), as for the first scene of a run: it
        starts while the scene loads, and the first drop after the switch does not wait for it."""
        if self.loading:
            return
        from game.pipeline import open_scene

        try:
            scene = load_scene(path)
        except Exception as exc:  # listed as "(invalid)": say why instead of loading
            self.scene.workspace.post(ev.Message(text=f"could not open {path.name}: {exc}", level="error"))
            return
        self.loading = True
        self.scene.workspace.post(ev.Message(text=f"loading {path.name} ..."))
        self.hide()
        if self.prestart is not None:
            try:
                self.prestart(scene)
            except Exception as exc:  # the scene still opens; its controller starts its own child
                self.scene.workspace.post(
                    ev.Message(text=f"job process not prestarted: {exc}", level="warning")
                )

        def done(job) -> None:
            self.loading = False
            self.switch_scene(job.result)  # game.assembly rebinds this menu to the new scene
            self.scene.workspace.post(ev.Message(text=f"opened {job.result.scene.scene.name}"))

        def failed(job) -> None:
            self.loading = False
            self.scene.workspace.post(
                ev.Message(text=f"could not open {path.name}: {job.error}", level="error")
            )

        self.worker.submit(open_scene, scene, False, name="open-scene", on_done=done, on_error=failed)

    def open_session(self, path: Path) -> None:
        if self.session_handler is not None:
            self.hide()
            self.session_handler(path)
        else:
            self.scene.workspace.post(
                ev.Message(text=f"replay it with: latent-reach replay {path.name}", level="info")
            )

    def _reword(self, device: str) -> None:
        """The input device changed (VR started or stopped): the hint on show follows."""
        if self._hint is not None:
            self._hint.set_text(self.wording.say("menu_keys"))

    def destroy(self) -> None:
        self._events.ignore_all()
        if self._reword in self.wording.listeners:
            self.wording.listeners.remove(self._reword)
        self.modes.pop(Mode.MENU)
        self.root.remove_node()
