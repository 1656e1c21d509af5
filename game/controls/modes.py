"""Who has the keyboard and the mouse: an explicit stack of input modes.

Before, each control had an ``enabled`` flag that other controls switched (the menu and the
what-if painter switched the desktop controls off and on again, and could leave them wrong when
two of them overlapped). Now one ``InputModes`` stack is shared by every control of a game:

- ``WORLD`` (the bottom, never popped): fly, point, select, grab; explanation and guidance keys.
- ``MENU``: the start menu has the keys and the mouse.
- ``PAINT``: what-if painting; left-drag paints on the panel image instead of grabbing cards.
- ``DRAG``: a card is carried; the mouse moves it, Esc cancels it.
- ``VR``: the headset has the input (``game.assembly`` pushes it while VR runs, over ``WORLD``).
  The desktop window only mirrors an eye, so its keys and mouse are quiet: a key bound with
  ``when`` acts only if its modes name ``VR``, one bound with ``desktop`` not at all, and Esc does
  nothing (the person in the headset closes menus with the controllers). What stays: Ctrl+Q and
  the window's close button (bound unguarded) quit. The start menu, what-if painting and the drop
  preview opened from the controllers push their modes over ``VR`` as on the desktop, but the
  desktop's keys for them stay quiet; a scene switch (``reset``) keeps ``VR``.

Whoever pushed the top mode gets the input. ``escape()`` is Esc: it calls the handler the top
mode was pushed with (the drag owner cancels the drag, the painter stops painting, the menu
closes), which pops it; on ``WORLD`` it calls the base handler (open the menu, or hide the help;
never quit). The module is engine-free, so it is tested without a window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """One input mode; the string value is what a status line or a test may print."""

    WORLD = "world"
    MENU = "menu"
    PAINT = "paint"
    DRAG = "drag"
    VR = "vr"


@dataclass(frozen=True)
class _Entry:
    mode: Mode
    on_escape: Callable[[], None] | None


class InputModes:
    """A stack of ``Mode`` with ``WORLD`` at the bottom; listeners hear every change of the top."""

    def __init__(self, on_base_escape: Callable[[], None] | None = None) -> None:
        self._stack: list[_Entry] = [_Entry(Mode.WORLD, None)]
        self.on_base_escape = on_base_escape
        self.listeners: list[Callable[[Mode], None]] = []

    @property
    def top(self) -> Mode:
        return self._stack[-1].mode

    @property
    def stack(self) -> tuple[Mode, ...]:
        """Bottom first (for status lines and tests)."""
        return tuple(e.mode for e in self._stack)

    def is_top(self, *modes: Mode) -> bool:
        return self.top in modes

    def holds(self, mode: Mode) -> bool:
        return any(e.mode is mode for e in self._stack)

    def push(self, mode: Mode, on_escape: Callable[[], None] | None = None) -> bool:
        """Put ``mode`` on top; False (and nothing changes) when it is on the stack already."""
        if mode is Mode.WORLD or self.holds(mode):
            return False
        self._stack.append(_Entry(mode, on_escape))
        self._changed()
        return True

    def pop(self, mode: Mode) -> bool:
        """Take ``mode`` off (wherever it is: a drag may end under a menu); False if absent."""
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].mode is mode:
                del self._stack[i]
                self._changed()
                return True
        return False

    def reset(self) -> None:
        """Back to ``WORLD`` (and ``VR`` while it runs): a scene switch, the old drag, painting
        and menu are gone."""
        kept = [e for e in self._stack[1:] if e.mode is Mode.VR]
        if len(self._stack) > 1 + len(kept):
            self._stack[1:] = kept
            self._changed()

    def escape(self) -> None:
        """Esc: the top mode's handler (which pops it), or pop it; the base handler on ``WORLD``."""
        if self.holds(Mode.VR):
            return  # the mirror window's Esc: the controllers have the input
        entry = self._stack[-1]
        if entry.mode is Mode.WORLD:
            if self.on_base_escape is not None:
                self.on_base_escape()
        elif entry.on_escape is not None:
            entry.on_escape()
        else:
            self.pop(entry.mode)

    def when(self, *modes: Mode) -> Callable[[Callable[..., Any]], Callable[..., None]]:
        """Decorator-like: ``modes.when(Mode.WORLD)(fn)`` runs ``fn`` only while one of ``modes``
        is on top (a key bound that way is quiet under the menu, for example). While ``VR`` is on
        the stack, only if ``modes`` names it (the desktop's keys are quiet in VR)."""
        for_vr = Mode.VR in modes

        def wrap(fn: Callable[..., Any]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                if self.top in modes and (for_vr or not self.holds(Mode.VR)):
                    fn(*args)

            return call

        return wrap

    def desktop(self, fn: Callable[..., Any]) -> Callable[..., None]:
        """``fn`` in every mode but not while ``VR`` runs (a desktop key that is not per mode)."""

        def call(*args: Any) -> None:
            if not self.holds(Mode.VR):
                fn(*args)

        return call

    def _changed(self) -> None:
        top = self.top
        for listener in list(self.listeners):
            listener(top)
