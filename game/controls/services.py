"""What the controls may use of the running game, as typed protocols instead of the whole app.

``LatentReachApp`` satisfies every protocol here structurally; a test can hand a control a small
stand-in instead. Controls never see the ShowBase as such (no ``accept``, no ``userExit``, no
task manager) and never reach other controls through it: what they share is passed in by
``game.assembly`` (the ``InputModes`` stack, the desktop controls' flying speed for the menu).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from panda3d.core import MouseWatcher, NodePath

    from game.core.worker import Worker
    from game.core.workspace import Workspace
    from game.pipeline import LoadedScene
    from game.world.world import World


class Viewport(Protocol):
    """The camera as a control uses it: pick rays, projection to pixels, framing, the mouse."""

    camera: NodePath
    render: NodePath
    render2d: NodePath
    mouseWatcherNode: MouseWatcher | None  # noqa: N815 (ShowBase's name)

    def mouse_ray(self, mx: float, my: float) -> tuple[np.ndarray, np.ndarray]: ...

    def project(self, point: Any) -> tuple[float, float] | None: ...

    def frame_card(self, card: int, distance: float = 0.6) -> None: ...

    def frame_all(self) -> None: ...


class SceneView(Protocol):
    """The current scene: its workspace, the world that draws it, the start-up bundle, the worker.

    All four change when the start menu opens another scene; a control rebinds (``rebind()``)
    when ``game.assembly`` tells it to.
    """

    workspace: Workspace
    world: World
    loaded: LoadedScene
    worker: Worker


class GameView(Viewport, SceneView, Protocol):
    """Both: what the desktop, explanation and guidance controls are given."""


class MenuHost(GameView, Protocol):
    """The start menu also opens scenes and quits."""

    def switch_scene(self, loaded: LoadedScene) -> None: ...

    def userExit(self) -> None: ...  # noqa: N802 (ShowBase's name)


class Flight(Protocol):
    """The flying speed the settings page shows and changes (the desktop controls')."""

    speed: float
