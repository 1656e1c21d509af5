"""Words for the input that does the next thing: desktop keys, or the controller and wrist menu.

Texts shown in the world say how to go on: the guidance legend ("press N"), the info panel's
status line ("X: next method"), the start menu's hint. On the desktop that is a key; in a headset
no keyboard is in sight, so the same text names the controller gesture or the wrist-menu button
(its label as drawn, ``game.vr.wrist_menu``; the bindings in ``docs/vr.md``). One ``Wording`` per
game, shared like the ``InputModes`` stack: ``game.assembly`` makes it "vr" while a headset
runs and "desktop" again when VR stops, and each text asks ``say(action)`` when it is shown;
``listeners`` hear a change, so a text on show is said again in the other words.

Engine-free: tested without a window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Device = Literal["desktop", "vr"]
DEVICES: tuple[Device, ...] = ("desktop", "vr")

# action -> (desktop words, VR words). VR words name wrist-menu buttons by their drawn labels.
WORDS: dict[str, tuple[str, str]] = {
    "next_suspect": ("press N (next, and why)", "wrist menu: Next suspect"),
    "explain_keys": ("X: next method   T: next top-5 class", "wrist menu: Heat map, Next class"),
    "paint_how": ("drag on the image to paint", "hold the trigger on the image to paint"),
    "paint_done": ("P: done", "wrist menu: Painting done"),
    "paint_keys": (
        "Bksp undo  Del clear  I {other}  K keep  P done",
        "wrist menu: Undo stroke, Clear mask, Telea / Nav.-Stokes, Keep as new card, Painting done",
    ),
    "menu_keys": (
        "Up/Down + Enter, Left/Right to change, Esc to close; or click",
        "Trigger: choose a row; left / right half of a setting: lower / raise",
    ),
}


class Wording:
    """The words of one game's texts for its input device ("desktop" or "vr")."""

    def __init__(self, device: Device = "desktop") -> None:
        self._device: Device = _checked(device)
        self.listeners: list[Callable[[Device], None]] = []

    @property
    def device(self) -> Device:
        return self._device

    def set_device(self, device: Device) -> None:
        """Switch the words; texts on show are said again (``listeners``) when it changes."""
        device = _checked(device)
        if device == self._device:
            return
        self._device = device
        for listener in list(self.listeners):
            listener(device)

    def say(self, action: str, **fields: str) -> str:
        """How to do ``action`` on this device (``fields`` fill its ``{placeholders}``)."""
        desktop, vr = WORDS[action]
        text = vr if self._device == "vr" else desktop
        return text.format(**fields) if fields else text


def _checked(device: str) -> Device:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    return "vr" if device == "vr" else "desktop"
