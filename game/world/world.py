"""The world: cards, centroids, floor, panel and status texts, kept in step with the workspace.

The world is a workspace listener. Every event that changes where cards should be (a new model,
a re-layout, a layer switch, undo) starts one vectorised tween to ``workspace.positions``; a card in
the hand is pinned where the hand put it. Nothing here changes the workspace: the world only draws.
"""

from __future__ import annotations

import contextlib

import numpy as np
from panda3d.core import AmbientLight, DirectionalLight, NodePath

from game.core import events as ev
from game.core.scene import WorldConfig
from game.core.workspace import Workspace
from game.learning.preview import Preview, preview_target
from game.world.cards import CardField
from game.world.centroids import CentroidMarkers
from game.world.geometry import make_grid
from game.world.hud import Hud
from game.world.label import preload_glyphs
from game.world.palette import class_colours
from game.world.panel import InfoPanel
from game.world.tween import Tween


class World:
    """Everything drawn for one workspace under ``render``; 2-D texts under ``overlay``."""

    def __init__(
        self,
        render: NodePath,
        overlay: NodePath,
        loader,
        workspace: Workspace,
        config: WorldConfig | None = None,
    ) -> None:
        self.config = config or WorldConfig()
        self.workspace = workspace
        self.now = 0.0
        self.root = render.attach_new_node("world")
        ws = workspace
        preload_glyphs("".join(ws.class_names))  # before any text: no font upload during a job
        self.colours = class_colours(max(1, ws.n_classes))
        self.tween = Tween(ws.positions, self.config.tween_seconds)
        self.cards = CardField(
            self.root, ws.images, ws.positions, self.colours[ws.labels], self.config.card_size
        )
        self.cards.set_states(ws.card_state)
        # ShowBase's camera (a child of render named "camera") picks the full-resolution cards
        # until VR hands the head over (``set_viewer``).
        self._default_viewer = render.find("camera")
        self.set_viewer(None)
        self.centroid_markers = CentroidMarkers(self.root, loader, ws.class_names, self.colours)
        self._top = self._marker_top(ws.positions)
        self.centroid_markers.update(ws.centroids(), ws.cluster_radii(90.0), top=self._top)
        half = float(np.ceil(max(2.0, np.abs(ws.positions[:, :2]).max() + 0.5) * 2) / 2)
        self.grid = make_grid(self.root, half=half)
        self._add_lights()
        self.panel = InfoPanel(overlay, ws.class_names)
        self.hud = Hud(overlay)
        self._dirty = False
        self._radii: np.ndarray | None = None
        self.frame_events = 0
        workspace.subscribe(self.on_event)

    def _add_lights(self) -> None:
        ambient = AmbientLight("ambient")
        ambient.set_color((0.35, 0.35, 0.4, 1))
        sun = DirectionalLight("sun")
        sun.set_color((0.85, 0.82, 0.78, 1))
        sun_np = self.root.attach_new_node(sun)
        sun_np.set_hpr(30, -55, 0)
        self.root.set_light(self.root.attach_new_node(ambient))
        self.root.set_light(sun_np)

    # --- positions ------------------------------------------------------------------------------

    @property
    def positions(self) -> np.ndarray:
        """Where the cards are drawn right now (mid-tween included): what the hand picks from."""
        return self.tween.current

    def retarget(self, positions: np.ndarray) -> None:
        self.tween.retarget(positions, self.now, self.config.tween_seconds)
        self._radii = self.workspace.cluster_radii(90.0)
        self._top = self._marker_top(positions)
        self._dirty = True

    def show_preview(self, preview: Preview | None) -> None:
        """A running job's preview (``FineTuneController.preview_listeners``): the cards near its
        edits glide to where it puts them; ``None``: back to the workspace's positions."""
        self.retarget(preview_target(self.workspace.positions, preview))

    def _marker_top(self, positions: np.ndarray) -> float:
        """World height of the class markers: just above the highest card of ``positions`` (where
        the cards are going), so no card is between them and an eye above the cloud."""
        z = np.asarray(positions, dtype=np.float64)[:, 2]
        z = z[np.isfinite(z)]
        if len(z) == 0:
            return 0.0
        return float(z.max()) + 0.75 * self.config.card_size + self.centroid_markers.radius + 0.05

    # --- events ---------------------------------------------------------------------------------

    def on_event(self, event: ev.Event, ws: Workspace) -> None:
        """React to one applied workspace event (called inside ``workspace.flush``)."""
        self.frame_events += 1
        if isinstance(event, ev.CardSelected):
            self.cards.set_highlight(selected=event.card)
            self.panel.show_card(ws, event.card)
        elif isinstance(event, ev.CardGrabbed):
            self.tween.pin(event.card, self.tween.current[event.card])
        elif isinstance(event, (ev.CardMoved, ev.GrabCancelled, ev.CardDropped)):
            self.tween.pin(event.card, event.position)
            self._dirty = True
            if isinstance(event, ev.CardDropped):
                self.cards.set_states(ws.card_state)
        elif isinstance(event, ev.EditQueued):
            self.cards.set_states(ws.card_state)
        elif isinstance(event, ev.ModelUpdated):
            self.cards.set_colours(self.colours[ws.labels])
            self.cards.set_states(ws.card_state)
            self.retarget(ws.positions)
            if ws.selected >= 0:
                self.panel.show_card(ws, ws.selected)
        elif isinstance(event, (ev.PositionsChanged, ev.LayerChanged)):
            self.retarget(ws.positions)
        elif isinstance(event, ev.CardAdded):
            self._rebuild_cards(ws)
        elif isinstance(event, ev.JobStatus):
            self.hud.set_job(event.state, event.progress, event.message, self.now)
        elif isinstance(event, ev.Message):
            self.hud.show_message(event.text, event.level, self.now)

    def set_viewer(
        self, viewer: NodePath | None, *, face: bool = False, hands: list[NodePath] | None = None
    ) -> None:
        """Who looks at the cards: ``None`` is the desktop camera (cards face the view plane); VR
        passes the head (cards face its position) and the hands (near them, full resolution)."""
        node = viewer if viewer is not None else self._default_viewer
        self.cards.set_viewer(node, face=face and viewer is not None, hands=hands)

    def _rebuild_cards(self, ws: Workspace) -> None:
        """A card joined: grow the tween and rebuild the card textures (rare; never per frame)."""
        self.tween.resize(ws.positions)
        self.cards.build(ws.images, self.tween.current, self.colours[ws.labels])
        self.cards.set_states(ws.card_state)
        self._dirty = True

    # --- per frame ------------------------------------------------------------------------------

    def update(self, now: float) -> None:
        """Advance tweens and timers to ``now``; upload positions only when they changed."""
        self.now = now
        moved = self.tween.update(now)
        if moved or self._dirty:
            self.cards.set_positions(self.tween.current)
            self.centroid_markers.update(self._centroids(), self._radii, top=self._top)
            self._radii = None
            self._dirty = False
        self.cards.update_lod()
        self.hud.update(now)

    def _centroids(self) -> np.ndarray:
        ws = self.workspace
        pos = self.tween.current
        labels = ws.labels
        counts = np.bincount(labels, minlength=ws.n_classes).astype(np.float64)
        out = np.full((ws.n_classes, 3), np.nan, dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            for d in range(3):
                out[:, d] = np.bincount(labels, weights=pos[:, d], minlength=ws.n_classes) / counts
        return out

    def set_card_size(self, size: float) -> None:
        self.config.card_size = float(size)
        self.cards.set_card_size(size)

    def destroy(self) -> None:
        with contextlib.suppress(ValueError):
            self.workspace.unsubscribe(self.on_event)
        self.panel.destroy()
        self.hud.destroy()
        self.root.remove_node()
