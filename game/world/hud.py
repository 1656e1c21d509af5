"""Status texts: job progress, transient messages, the help overlay, the key hint and legends.

Each is a ``NodePath`` with a ``TextNode`` so the desktop docks them on ``aspect2d`` and VR can
reparent them into the world. Timing uses the app's clock (``now``), never wall time, so replays
and tests are deterministic.
"""

from __future__ import annotations

from panda3d.core import NodePath

from game.world.label import Label

HELP_TEXT = "\n".join(
    [
        "Latent Reach - every key",
        "Fly: W A S D move, Q / E down / up, mouse wheel flying speed",
        "Look: right mouse button + move",
        "Cards: left click select, left drag carry (the text says what a release does)",
        "   while carrying: mouse wheel push / pull, Esc cancel the drag",
        "Camera: F frame the selection, C frame the whole cloud",
        "Learning: Ctrl+Z undo the last fine-tune",
        "Guidance: orange ? = label probably wrong; N next suspect and why",
        "   L switch the feature layer (early convolution / penultimate)",
        "Panel: Tab hide / show the info panel",
        "Explain: X heat map beside the image (cycle methods), T next top-5 class",
        "   P what-if: paint on the image (Backspace undo, Del clear,",
        "      I Telea / Navier-Stokes, K keep as a new card, P or Esc done)",
        "   G class model of the explained class",
        "Menu: M or Esc (when the game has a menu); in it Up / Down, Enter,",
        "   Left / Right change a setting",
        "H: show / hide this help     Ctrl+Q: quit",
    ]
)
HINT_MENU = "H: help   M: menu   Ctrl+Q: quit"
HINT_NO_MENU = "H: help   Ctrl+Q: quit"
LEGEND_COLOUR = (1.0, 0.55, 0.25, 1)  # the suspect markers' orange


def make_text(
    parent: NodePath, name: str, scale: float, colour=(1, 1, 1, 1), card=True, opacity: float = 0.8
) -> tuple[NodePath, Label]:
    label = Label(parent, name, scale, colour, backing=(0.04, 0.05, 0.07, opacity) if card else None)
    return label.root, label


class Hud:
    """Job status line, a transient message line and the help overlay."""

    def __init__(self, parent: NodePath) -> None:
        self.root = parent.attach_new_node("hud")
        self.root.set_light_off(1)
        self.status_path, self.status = make_text(self.root, "job-status", 0.05, (0.9, 0.9, 0.6, 1))
        self.message_path, self.message = make_text(self.root, "message", 0.055)
        self.help_path, self.help = make_text(self.root, "help", 0.045, opacity=0.95)
        self.help.set_text(HELP_TEXT)
        self.help_path.hide()
        # Backed like every other text: readable over cards, the floor or the sky.
        self.hint_path, self.hint = make_text(self.root, "hint", 0.042, (0.82, 0.85, 0.92, 1))
        self.hint.set_text(HINT_NO_MENU)
        self.legend_path, self.legend = make_text(self.root, "legend", 0.042, LEGEND_COLOUR)
        self.legend_path.hide()
        self.legend_text = ""
        self.status_path.hide()
        self.message_path.hide()
        self._message_until = 0.0
        self._status_until: float | None = None
        self.status_text = ""
        self.message_text = ""

    def layout(self, aspect_ratio: float) -> None:
        """Dock the texts on a 2-D overlay of this aspect ratio (desktop)."""
        self.status_path.set_pos(-aspect_ratio + 0.05, 0, 0.92)
        self.message_path.set_pos(-aspect_ratio + 0.05, 0, 0.83)
        self.help_path.set_pos(-aspect_ratio + 0.08, 0, 0.6)
        self.hint_path.set_pos(-aspect_ratio + 0.05, 0, -0.95)
        self.legend_path.set_pos(-aspect_ratio + 0.05, 0, -0.87)

    def set_menu(self, available: bool) -> None:
        """Say "M: menu" in the hint only where M opens one (a game without the start menu)."""
        self.hint.set_text(HINT_MENU if available else HINT_NO_MENU)

    def set_legend(self, text: str) -> None:
        """A standing one-line key to a marker in the world (the suspects' "?"); "" hides it."""
        self.legend_text = text
        self.legend.set_text(text)
        if text:
            self.legend_path.show()
        else:
            self.legend_path.hide()

    def set_job(self, state: str, progress: float, message: str, now: float) -> None:
        """queued / running NN% / done / failed; done and failed fade after a few seconds."""
        if state == "running":
            text = f"fine-tune running {100 * progress:.0f}%"
        else:
            text = f"fine-tune {state}"
        if message:
            text += f": {message}"
        self.status_text = text
        self.status.set_text(text)
        self.status_path.show()
        self._status_until = now + 4.0 if state in ("done", "failed", "cancelled") else None

    def show_message(self, text: str, level: str, now: float, seconds: float = 4.0) -> None:
        colours = {"error": (1, 0.45, 0.4, 1), "warning": (1, 0.8, 0.3, 1)}
        self.message.set_colour(colours.get(level, (1, 1, 1, 1)))
        self.message_text = text
        self.message.set_text(text)
        self.message_path.show()
        self._message_until = now + seconds

    def toggle_help(self) -> bool:
        if self.help_path.is_hidden():
            self.help_path.show()
            return True
        self.help_path.hide()
        return False

    def update(self, now: float) -> None:
        if not self.message_path.is_hidden() and now >= self._message_until:
            self.message_path.hide()
            self.message_text = ""
        if self._status_until is not None and now >= self._status_until:
            self.status_path.hide()
            self._status_until = None

    def destroy(self) -> None:
        self.root.remove_node()
