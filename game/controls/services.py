"""What the controls may use of the running game: narrow services, never the app itself.

``game.assembly`` builds these from the app and hands each control only what it uses:

- a ``Viewport`` (the camera, the mouse, picking rays, framing): ``assembly.AppViewport``;
- a ``SceneParts`` for the scene on show (its workspace, the world that draws it, the model
  store, the scene's settings, the projector); a new one is passed to ``rebind`` after the start
  menu opened another scene;
- the ``Worker`` (background jobs and the interactive lane);
- for the start menu, plain callables: open a loaded scene, quit.

Controls never see the ShowBase (no ``accept``, no ``userExit``, no task manager) and never reach
other controls: what they share is passed in by ``game.assembly`` (the ``InputModes`` stack, the
desktop controls' flying speed for the menu). A test hands a control the same services, or small
stand-ins for them; ``tests/cli/test_cli_run_wiring.py`` checks that no control takes the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from panda3d.core import NodePath

    from game.core.scene import Scene
    from game.core.workspace import Workspace
    from game.layout.projector import Projector
    from game.learning.store import ModelStore
    from game.pipeline import LoadedScene
    from game.world.hud import Hud
    from game.world.panel import InfoPanel
    from game.world.world import World


class Viewport(Protocol):
    """The camera as a control uses it: the mouse, pick rays, projection to pixels, framing.

    The same object for the whole run (the camera outlives scene switches)."""

    @property
    def camera(self) -> NodePath: ...

    @property
    def render(self) -> NodePath:
        """The 3-D scene root (what positions are relative to)."""

    @property
    def render2d(self) -> NodePath:
        """The 2-D screen root (what normalised mouse coordinates are relative to)."""

    def mouse(self) -> tuple[float, float] | None:
        """The mouse in normalised screen coordinates (-1..1, y up), None outside the window."""

    def is_down(self, button: Any) -> bool:
        """Whether a Panda3D ``ButtonHandle`` (a key or a mouse button) is held now."""

    def mouse_ray(self, mx: float, my: float) -> tuple[np.ndarray, np.ndarray]: ...

    def project(self, point: Any) -> tuple[float, float] | None: ...

    def frame_card(self, card: int, distance: float = 0.6) -> None: ...

    def frame_all(self) -> None: ...


@dataclass(frozen=True)
class SceneParts:
    """The scene on show, as the controls see it; replaced (never changed) by a scene switch.

    The model store, settings and projector are read from the start-up bundle when asked for
    (a headless or VR test may start a game on a bundle without a network)."""

    workspace: Workspace
    world: World  # the drawing: cards, centroid markers, the info panel, the HUD
    loaded: LoadedScene  # read only through the properties below

    @classmethod
    def of(cls, loaded: LoadedScene, world: World) -> SceneParts:
        return cls(loaded.workspace, world, loaded)

    @property
    def models(self) -> ModelStore:
        """The live network and layout (``models.network()``)."""
        return self.loaded.models

    @property
    def settings(self) -> Scene:
        """The scene's settings as loaded."""
        return self.loaded.scene

    @property
    def projector(self) -> Projector:
        return self.loaded.projector

    @property
    def panel(self) -> InfoPanel:
        return self.world.panel

    @property
    def hud(self) -> Hud:
        return self.world.hud


class Flight(Protocol):
    """The flying speed the settings page shows and changes (the desktop controls')."""

    speed: float
