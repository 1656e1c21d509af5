"""Desktop keys for guidance and layer switching: which cards to look at, which layer to see.

A frame hook (``update(now)``) plus messenger keys, in the style of ``ExplainControls``. The
suspicion scores (``game.learning.guidance``) are computed on the app's worker at start, after
every ``ModelUpdated`` and after every ``LayerChanged``; the top ``top_k`` suspects get a small
orange "?" at a corner of their card (``game.world.suspect_markers``: constant size on screen,
clear of the class labels, under labels and menus), explained by a legend line in the HUD. A
selected suspect's panel says why it is suspect (``explain_suspect``).

The order suspects are shown in is ``guidance.APP_ORDER`` (``"auto_partial"``), decided once by
``auto_rule`` on the first scores after a scene is bound (the network before this run's edits) and
kept: by suspicion, or, where the network took on some but fewer than half of the wrong labels it
is suspected of and tells its trusted labels apart, the probably-wrong labels whose look-alikes the
network predicts as that label first (``"disputed"``; issue 13's eleventh session,
docs/benchmarks.md). The rule is kept across layer switches too (L), though the suspicion it was
decided on is the first layer's: the person's order does not jump when they look at another layer.

Keys:
  N   select the next suspect (in the order above, cards already visited skipped), frame it
      and say why on the panel
  L   cycle the feature layer (early convolution blocks ... penultimate layer): the features and
      a fresh layout aligned to the current one are computed on the worker and posted as a
      ``LayerChanged`` event, which the world tweens and the recorder records; once the cards
      have moved the camera frames the new cloud

VR can call ``next_suspect()`` and ``cycle_layer()`` from controller buttons.
"""

from __future__ import annotations

import contextlib

import numpy as np
from direct.showbase.DirectObject import DirectObject

from game.controls.modes import InputModes, Mode
from game.controls.services import SceneParts, Viewport
from game.controls.wording import Wording
from game.core import events as ev
from game.core.worker import Worker
from game.core.workspace import Workspace
from game.learning.guidance import (
    APP_ORDER,
    Suspicion,
    decided_rule,
    explain_suspect,
    suspicion,
    top_suspects,
    visit_priority,
)
from game.learning.layers import layer_label, next_layer, switch_layer
from game.world.suspect_markers import SuspectMarkers, label_rects

HELP_LINES = ("N: next suspicious card (label probably wrong)   L: switch feature layer",)
LEGEND = "? = label probably wrong: {n} suspects, {next}"  # next: the Wording's next_suspect


class _CardsChanged(Exception):
    """A card joined between the request for scores and the worker's read of the features."""


class GuidanceControls:
    """Suspect markers, N to visit the next suspect, L to cycle the feature layer."""

    def __init__(
        self,
        view: Viewport,
        scene: SceneParts,
        worker: Worker,
        top_k: int = 10,
        modes: InputModes | None = None,
        wording: Wording | None = None,
    ) -> None:
        self.view = view
        # The legend names the key on the desktop, the wrist-menu button in VR.
        self.wording = wording if wording is not None else Wording()
        self._reword = lambda device: self._show_legend()
        self.wording.listeners.append(self._reword)
        self.scene = scene
        self.worker = worker
        self.modes = modes if modes is not None else InputModes()  # keys are quiet under the menu
        self.top_k = int(top_k)
        self.scores: np.ndarray | None = None
        self.order: np.ndarray | None = None  # visit_priority of the scores under ``rule``
        self.rule: str | None = None  # decided on the first scores after a scene is bound
        self.suspects: np.ndarray = np.zeros(0, dtype=np.int64)
        self.visited: set[int] = set()
        self._pending_scores = False
        self._stale = True
        self._layer_busy = False
        self._workspace: Workspace | None = None
        self._markers: list = []
        self._root = None
        self._events = DirectObject()
        unless_menu = self.modes.when(Mode.WORLD, Mode.PAINT, Mode.DRAG)
        self._events.accept("n", unless_menu(self.next_suspect))
        self._events.accept("l", unless_menu(self.cycle_layer))
        self.rebind(scene)  # game.assembly calls it again after a scene switch

    # --- wiring ------------------------------------------------------------------------------

    def rebind(self, scene: SceneParts) -> None:
        """Follow ``scene``'s workspace and world (at start and after a scene switch)."""
        if self._workspace is not None:
            self._workspace.unsubscribe(self._on_event)
        self.scene = scene
        self._workspace = scene.workspace
        self._workspace.subscribe(self._on_event)
        if self._root is not None:
            self._root.remove_node()
        self._marker_set = SuspectMarkers(self.scene.world.root)  # drawn under labels and menus
        self._root = self._marker_set.root
        self._markers = []
        self.details: Suspicion | None = None
        self._reframe = False
        self.scores, self.suspects, self.visited = None, np.zeros(0, dtype=np.int64), set()
        self.order, self.rule = None, None
        self._stale = True

    def _on_event(self, event: ev.Event, ws) -> None:
        if isinstance(event, (ev.ModelUpdated, ev.LayerChanged, ev.CardAdded)):
            self._stale = True
        if isinstance(event, ev.LayerChanged):
            self._reframe = True  # the cloud changes shape: frame it once the cards have moved
        elif isinstance(event, ev.CardSelected):
            self._explain(event.card)

    # --- scores on the worker -------------------------------------------------------------------

    def _request_scores(self) -> None:
        ws = self.scene.workspace
        labels, n_classes = ws.labels.copy(), ws.n_classes
        predictions, is_train = ws.predictions.copy(), ws.is_train.copy()
        seed = int(self.scene.settings.learning.seed)
        rule = self.rule
        self._pending_scores = True
        self._stale = False

        def scores() -> tuple[Suspicion, str, np.ndarray]:
            # The features are read here, on the worker: in a replay they may still be pending
            # (recomputed from the stored weights on first read, a pass over every card).
            features = ws.features.copy()
            if not len(features) == len(labels) == len(predictions) == len(is_train):
                raise _CardsChanged
            details = suspicion(features, labels, n_classes, seed)
            chosen = rule or decided_rule(APP_ORDER, details, labels, predictions, is_train)
            return details, chosen, visit_priority(details, labels, predictions, is_train, chosen)

        self.worker.submit(
            scores,  # the scores, what explains them (look-alikes, held-out view) and the order
            name="guidance-scores",
            lane="interactive",
            on_done=lambda job: self._scores_done(job.result, len(labels)),
            on_error=lambda job: self._scores_failed(job.error),
        )

    def _scores_done(self, result: tuple[Suspicion, str, np.ndarray], n: int) -> None:
        self._pending_scores = False
        details, rule, order = result
        ws = self.scene.workspace
        if len(details.scores) != ws.n_cards or n != ws.n_cards:
            self._stale = True  # a card joined meanwhile: ask again
            return
        self.details = details
        self.scores = details.scores
        self.rule = self.rule or rule
        self.order = order
        self.suspects = self._ranked()[: self.top_k]
        self._rebuild_markers()
        self._explain(ws.selected)  # the reason shown for the selected card follows the scores

    def _scores_failed(self, error: BaseException | None) -> None:
        self._pending_scores = False
        if isinstance(error, _CardsChanged):
            self._stale = True  # a card joined between the request and the read: ask again
            return
        self.scene.workspace.post(ev.Message(f"guidance failed: {error}", level="error"))

    def _ranked(self) -> np.ndarray:
        """Training cards in the order (``rule``), visited ones and held-out cards left out."""
        if self.order is None:
            return np.zeros(0, dtype=np.int64)
        ws = self.scene.workspace
        exclude = ~ws.is_train.copy()
        if self.visited:
            exclude[np.fromiter(self.visited, dtype=np.int64)] = True
        return top_suspects(self.order, self.top_k * 4, exclude=exclude)

    # --- markers -------------------------------------------------------------------------------

    def _rebuild_markers(self) -> None:
        self._marker_set.set_cards(self.suspects)
        self._markers = self._marker_set.nodes
        self._show_legend()
        self._place_markers()

    def _show_legend(self) -> None:
        """What the "?" means and how to visit the next one (in the input device's words)."""
        n = len(self.suspects)
        self.scene.hud.set_legend(LEGEND.format(n=n, next=self.wording.say("next_suspect")) if n else "")

    def _place_markers(self) -> None:
        """Constant size on screen, at a card corner that leaves the class labels readable."""
        if not self._markers:
            return
        view, world = self.view, self.scene.world
        labels = getattr(world.centroid_markers, "labels", [])
        avoid = label_rects(labels, view.camera, view.render, view.project)
        self._marker_set.place(
            world.positions, view.camera, view.render, world.config.card_size, view.project, avoid
        )

    def _explain(self, card: int) -> None:
        """Put why a suspect (or a visited one) is suspect on the panel, under its top-5."""
        ws = self.scene.workspace
        if self.details is None or not 0 <= card < ws.n_cards or len(self.details.scores) != ws.n_cards:
            return
        if card not in self.visited and card not in set(self.suspects.tolist()):
            return
        reason = explain_suspect(ws, card, self.details)
        self.scene.panel.set_note(card, f"? suspect: {reason}")

    # --- keys ----------------------------------------------------------------------------------

    def next_suspect(self) -> int:
        """Select and frame the first suspect not yet visited; returns it (-1: none)."""
        ranked = self._ranked()
        if not len(ranked):
            self.scene.workspace.post(ev.Message("no suspicious cards (scores are still being computed)"))
            return -1
        card = int(ranked[0])
        self.visited.add(card)
        self.suspects = self._ranked()[: self.top_k]
        self._rebuild_markers()
        self.scene.workspace.post(ev.CardSelected(card, hand="keyboard"))
        self._explain(card)
        self.view.frame_card(card)
        return card

    def cycle_layer(self) -> None:
        """Compute the next layer's features and layout on the worker; post ``LayerChanged``."""
        if self._layer_busy:
            return
        scene = self.scene
        ws = scene.workspace
        network = scene.models.network()
        current = ws.feature_layer or network.feature_layer
        layer = next_layer(network.module, current)
        snapshot = ws.copy()
        self._layer_busy = True
        ws.post(ev.Message(f"switching to layer {layer_label(network.module, layer)} ..."))
        self.worker.submit(
            switch_layer,
            network,
            snapshot,
            scene.projector,
            layer,
            scene.models.layout(),
            scene.settings.network.batch_size,
            name="layer-switch",
            on_done=lambda job: self._layer_done(job.result),
            on_error=lambda job: self._layer_failed(job.error),
        )

    def _layer_done(self, switch) -> None:
        self._layer_busy = False
        ws = self.scene.workspace
        if len(switch.event.positions) != ws.n_cards:
            return  # the cards changed meanwhile; the person can press L again
        ws.post(switch.event)
        label = layer_label(self.scene.models.network().module, switch.event.layer)
        ws.post(ev.Message(f"layer {label}: {switch.event.features.shape[1]} features"))

    def _layer_failed(self, error: BaseException | None) -> None:
        self._layer_busy = False
        self.scene.workspace.post(ev.Message(f"layer switch failed: {error}", level="error"))

    # --- per frame -----------------------------------------------------------------------------

    def update(self, now: float) -> None:
        if self._stale and not self._pending_scores:
            self._request_scores()
        if self._reframe and not self.scene.world.tween.active:
            self._reframe = False
            self.view.frame_all()  # after a layer switch, once its tween has ended
        self._place_markers()

    def destroy(self) -> None:
        self._events.ignore_all()
        with contextlib.suppress(ValueError):
            self.wording.listeners.remove(self._reword)
        if self._workspace is not None:
            with contextlib.suppress(ValueError):
                self._workspace.unsubscribe(self._on_event)
        if self._root is not None:
            self._root.remove_node()
            self._root = None
