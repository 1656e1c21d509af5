"""Desktop keys for explanations on the info panel: heat maps, what-if painting, class models.

A frame hook (``update(now)``) plus messenger keys. All computation goes through
``ExplainService`` on the app's worker; results arrive in ``worker.poll`` and are drawn with
``panel.set_overlay``. Nothing here waits for torch.

Keys (see ``HELP_LINES``):
  X   cycle the heat-map method over the selected card (off, Grad-CAM, saliency, SmoothGrad,
      Integrated Gradients, Guided Backprop, occlusion); the method follows the selection
  T   explain the next of the top-5 classes instead of the prediction
  P   what-if painting on/off: left-drag over the enlarged image paints a mask that is inpainted
      and re-classified live; Backspace undoes a stroke, Delete clears, I switches Telea /
      Navier-Stokes, K keeps the edited image as a new card
  G   class model of the explained class (prediction, or the top-5 rank chosen with T): an image
      optimised for that class, shown on the panel and floating on the class's centroid sphere

VR can drive the same painting through ``paint_uv(u, v, pressed)`` with the laser's hit on the
panel image (u right, v down, 0..1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from direct.showbase.DirectObject import DirectObject
from panda3d.core import Point3, TextNode

from game.controls.modes import InputModes, Mode
from game.controls.services import SceneParts, Viewport
from game.controls.wording import Wording
from game.core import events as ev
from game.core.worker import Worker
from game.core.workspace import Workspace
from game.explain.attribution import METHOD_TITLES, METHODS
from game.explain.keep import new_card_event
from game.explain.render import colourise, to_rgb, upscale
from game.explain.service import ExplainService, MapResult
from game.explain.whatif import WhatIfEditor, WhatIfResult
from game.world.panel import percent

CYCLE: tuple[str, ...] = ("gradcam", "saliency", "smoothgrad", "ig", "guided", "occlusion")
HELP_LINES = (
    "X: heat map (cycle methods)   T: explain next top-5 class",
    "P: what-if paint (drag on image; Backspace undo, Del clear, I Telea/NS, K keep)",
    "G: class model of the prediction",
)
DISPLAY_SIDE = 256  # overlays are enlarged (nearest) so tiny images stay crisp under linear filtering
HEAT_ALPHA = 0.5  # the heat layer's opacity where the map is hottest (a quarter of it where cold)
MASK_RGBA = (255, 140, 40, 150)  # the painted what-if mask over the card's own image
INPAINT_TITLES = {"telea": "Telea", "ns": "Navier-Stokes"}


class ExplainControls:
    """Explanations for the selected card, shown on the scene's info panel."""

    def __init__(
        self,
        view: Viewport,
        scene: SceneParts,
        worker: Worker,
        service: ExplainService | None = None,
        modes: InputModes | None = None,
        wording: Wording | None = None,
    ) -> None:
        assert set(CYCLE) == set(METHODS)
        self.view = view
        # The status line names keys on the desktop, wrist-menu buttons in VR; a line on show
        # is said again when the device changes (``_say`` keeps how to say it).
        self.wording = wording if wording is not None else Wording()
        self._status: Callable[[], str] = lambda: ""
        self._reword = lambda device: self._say(self._status)
        self.wording.listeners.append(self._reword)
        self.scene = scene
        self.worker = worker
        # Keys act unless the menu is on top; painting pushes PAINT (clicks paint, Esc stops).
        self.modes = modes if modes is not None else InputModes()
        self.service = service or ExplainService(worker.lane("interactive"))
        self.method: str | None = None
        self.target_rank = 0
        self.editor: WhatIfEditor | None = None
        self.painting = False
        self._pressed = False
        self._sent_version = -1
        self.last_map: MapResult | None = None
        self.last_whatif: WhatIfResult | None = None
        self._centroid_cards: dict[int, Any] = {}  # panda3d NodePaths (untyped)
        self._workspace: Workspace | None = None
        self._text_path = None
        self._text: TextNode | None = None
        self._events = DirectObject()
        for key, fn in {
            "x": self.cycle_method,
            "t": self.next_target,
            "p": self.toggle_paint,
            "g": self.request_class_model,
            "backspace": self.undo_stroke,
            "delete": self.reset_strokes,
            "i": self.toggle_inpaint_method,
            "k": self.keep_edit,
            "mouse1": lambda: self._mouse_button(True),
            "mouse1-up": lambda: self._mouse_button(False),
        }.items():
            self._events.accept(key, self.modes.when(Mode.WORLD, Mode.PAINT, Mode.DRAG)(fn))
        self.rebind(scene)  # game.assembly calls it again after a scene switch

    # --- wiring -------------------------------------------------------------------------------

    def rebind(self, scene: SceneParts) -> None:
        """Follow ``scene``'s workspace and panel (at start and after a scene switch)."""
        if self._workspace is not None:
            self._unsubscribe()
        self.scene = scene
        self._workspace = scene.workspace
        self._workspace.subscribe(self._on_event)
        self.method, self.editor, self.painting = None, None, False
        self.modes.pop(Mode.PAINT)
        self._centroid_cards = {}  # the old world (and its cards) is gone
        self._status = lambda: ""  # the new panel shows no status yet
        self._make_text()

    def _make_text(self) -> None:
        """The status line is the panel's (``panel.set_status``): laid out with the content."""
        self._text = self.scene.panel.status

    @property
    def card(self) -> int:
        return int(self.scene.workspace.selected)

    def _say(self, text: str | Callable[[], str]) -> None:
        """Show a status line; a callable is asked again when the input device changes."""
        self._status = text if callable(text) else (lambda: text)
        self.scene.panel.set_status(self._status())

    def _on_event(self, event: ev.Event, ws) -> None:
        if isinstance(event, ev.CardSelected):
            self._stop_paint()
            self.target_rank = 0
            self.scene.panel.clear_aside()
            self._say("")
            if self.method is not None:
                self.request_map()
        elif isinstance(event, ev.ModelUpdated) and self.method is not None and not self.painting:
            self.request_map()

    # --- heat maps ----------------------------------------------------------------------------

    def cycle_method(self) -> None:
        if self.card < 0:
            return
        self._stop_paint()
        i = CYCLE.index(self.method) + 1 if self.method in CYCLE else 0
        self.method = CYCLE[i] if i < len(CYCLE) else None
        if self.method is None:
            self.service.cancel("map")
            self.scene.panel.clear_aside()
            self._say("")
        else:
            self.request_map()

    def next_target(self) -> None:
        if self.card < 0:
            return
        k = len(self.scene.workspace.top5_classes[self.card])
        self.target_rank = (self.target_rank + 1) % max(1, k)
        if self.method is None:
            self.method = CYCLE[0]
        self.request_map()

    def _target(self) -> int:
        return int(self.scene.workspace.top5_classes[self.card][self.target_rank])

    def request_map(self) -> None:
        card, method = self.card, self.method
        if card < 0 or method is None:
            return
        ws = self.scene.workspace
        target = self._target()
        name = ws.class_names[target]
        rank = self.target_rank
        self._say(f"{METHOD_TITLES[method]} for '{name}' ...")

        def shown(result: MapResult) -> None:
            if self.scene.workspace.selected != card or self.method != method or self.painting:
                return
            self.last_map = result
            which = "the prediction" if rank == 0 else f"top-{rank + 1}"
            self.scene.panel.show_aside(
                None,  # the card's own image, with the heat map as a translucent layer over it
                f"{METHOD_TITLES[method]} for '{name}' ({which})",
                layer=upscale(heat_layer(result.explanation.heat), DISPLAY_SIDE),
                colour_bar=colour_bar(),
                bar_labels=("low", "high"),
            )
            ms = result.explanation.seconds * 1000
            self._say(lambda: f"{ms:.0f} ms   {self.wording.say('explain_keys')}")

        self.service.request_map(
            self.scene.models.network(),
            ws.images[card],
            method,
            shown,
            target=target,
            version=ws.model_version,
            on_error=self._failed,
        )

    # --- what-if painting ---------------------------------------------------------------------

    def toggle_paint(self) -> None:
        if self.painting:
            self._stop_paint()
            self.scene.panel.clear_aside()
            self._say("")
            if self.method is not None:
                self.request_map()
            return
        if self.card < 0:
            return
        self.service.cancel("map")
        self.editor = WhatIfEditor(self.scene.workspace.images[self.card])
        self.painting = True
        self._sent_version = -1
        self.last_whatif = None
        self.scene.panel.root.show()
        self.scene.panel.clear_aside()
        self.modes.push(Mode.PAINT, on_escape=self.toggle_paint)  # clicks paint, not grab cards
        self._say(self._paint_prompt)

    def _paint_prompt(self) -> str:
        w = self.wording
        return f"what-if: {w.say('paint_how')}   {w.say('paint_done')}"

    def _stop_paint(self) -> None:
        if not self.painting:
            return
        self.painting = False
        self._pressed = False
        self.service.cancel("whatif")
        self.modes.pop(Mode.PAINT)

    def _mouse_button(self, down: bool) -> None:
        if not self.painting:
            return
        uv = self._mouse_uv()
        self.paint_uv(*(uv if uv is not None else (-1.0, -1.0)), pressed=down)

    def _mouse_uv(self) -> tuple[float, float] | None:
        """The mouse over the panel's image as (u right, v down) in 0..1, None if elsewhere."""
        mouse = self.view.mouse()
        return None if mouse is None else self.screen_to_uv(*mouse)

    def screen_to_uv(self, mx: float, my: float) -> tuple[float, float] | None:
        panel = self.scene.panel
        lo, hi = panel.image.get_tight_bounds(panel.root)
        p = panel.root.get_relative_point(self.view.render2d, Point3(mx, 0, my))
        u = (p[0] - lo[0]) / max(1e-9, hi[0] - lo[0])
        v = (hi[2] - p[2]) / max(1e-9, hi[2] - lo[2])
        return (float(u), float(v)) if 0 <= u <= 1 and 0 <= v <= 1 else None

    def paint_uv(self, u: float, v: float, pressed: bool) -> None:
        """Brush input in image UV (u right, v down); ``pressed`` False ends the stroke.
        Outside 0..1 a press is ignored. The VR laser calls this with its hit on the panel."""
        if not self.painting or self.editor is None:
            return
        inside = 0 <= u <= 1 and 0 <= v <= 1
        h, w = self.editor.image.shape[:2]
        x, y = u * w, v * h
        if pressed and inside:
            if self._pressed:
                self.editor.drag(x, y)
            else:
                self.editor.begin(x, y)
            self._pressed = True
        elif not pressed:
            if self._pressed:
                self.editor.end()
            self._pressed = False
        self._send_whatif()

    def update(self, now: float) -> None:
        # The mouse paints while its button is held; in VR the laser does (``paint_uv``).
        if self.painting and self._pressed and not self.modes.holds(Mode.VR):
            uv = self._mouse_uv()
            if uv is not None:
                self.paint_uv(*uv, pressed=True)

    def undo_stroke(self) -> None:
        if self.painting and self.editor is not None and self.editor.undo():
            self._send_whatif()

    def reset_strokes(self) -> None:
        if self.painting and self.editor is not None:
            self.editor.reset()
            self._send_whatif()

    def toggle_inpaint_method(self) -> None:
        if self.painting and self.editor is not None:
            self.editor.method = "ns" if self.editor.method == "telea" else "telea"
            self.editor.version += 1
            self._send_whatif()

    def _send_whatif(self) -> None:
        ed = self.editor
        if ed is None or ed.version == self._sent_version:
            return
        self._sent_version = ed.version
        card = self.card
        ws = self.scene.workspace
        panel = self.scene.panel
        if not ed.mask.any():
            self.service.cancel("whatif")
            self.last_whatif = None
            panel.clear_aside()
            self._say(self._paint_prompt)
            return
        panel.set_overlay(upscale(mask_layer(ed.mask), DISPLAY_SIDE))  # the brush shows at once
        image, mask, method, version = ed.snapshot()
        before = (np.asarray(ws.top5_classes[card]), np.asarray(ws.top5_scores[card]))

        def shown(result: WhatIfResult) -> None:
            if not self.painting or self.editor is not ed or self.scene.workspace.selected != card:
                return
            self.last_whatif = result
            panel = self.scene.panel
            panel.show_aside(
                upscale(_opaque(result.edited), DISPLAY_SIDE),
                f"edited ({INPAINT_TITLES.get(method, method)})",
                left_caption="painted",
            )
            panel.set_overlay(upscale(mask_layer(result.mask), DISPLAY_SIDE))
            panel.show_compare(result.after_classes, result.after_scores, "after")
            names = self.scene.workspace.class_names
            other = "NS" if method == "telea" else "Telea"
            b, a = int(result.before_classes[0]), int(result.after_classes[0])
            verdict = (
                f"still {names[a]}" if a == b else f"{names[b]} -> {names[a]}"
            ) + f" ({percent(float(result.after_scores[0]))})"
            self._say(lambda: f"what-if: {verdict}\n{self.wording.say('paint_keys', other=other)}")

        self.service.request_whatif(
            self.scene.models.network(),
            image,
            mask,
            shown,
            method=method,
            before=before,
            on_error=self._failed,
        )

    def keep_edit(self) -> None:
        """Add the edited image as a new card, placed by the current network (on the worker)."""
        result = self.last_whatif
        if not self.painting or result is None:
            return
        ws = self.scene.workspace
        card = self.card
        label = int(ws.labels[card])
        network = self.scene.models.network()

        def job():
            # Read here, on the worker: in a replay the features may still be pending (recomputed
            # from the stored weights on first read, a pass over every card).
            features, positions = ws.features, ws.positions
            return new_card_event(
                network, result.edited, features, positions, label, f"what-if of card #{card}"
            )

        def done(j) -> None:
            self.scene.workspace.post(j.result)
            self.scene.workspace.post(ev.Message(text=f"kept the what-if of card #{card} as a new card"))

        self.worker.submit(
            job,
            name="explain:keep",
            on_done=done,
            on_error=lambda j: self._failed(j.error),
            lane="interactive",
        )
        self._stop_paint()
        self.scene.panel.clear_aside()
        self._say("")

    # --- class models ---------------------------------------------------------------------------

    def request_class_model(self) -> None:
        if self.card < 0:
            return
        self._stop_paint()
        ws = self.scene.workspace
        target = self._target()
        card = self.card
        name = ws.class_names[target]
        rank = self.target_rank
        relation = "the predicted class" if rank == 0 else f"the top-{rank + 1} class"
        self._say(f"class model of {name} ...")

        def shown(cm) -> None:
            if self.scene.workspace.selected != card or self.painting:
                return
            self.method = None
            panel = self.scene.panel
            # Its own titled view in its class's colour, beside the card: never in the card's frame.
            panel.show_aside(
                upscale(_opaque(cm.image), DISPLAY_SIDE),
                f"class model of {name}, {relation}",
                frame=tuple(float(c) for c in panel.colours[target % len(panel.colours)]),
            )
            self.show_on_centroid(target, cm.image)
            self._say(f"optimised for {name}: score {cm.score_start:.1f} -> {cm.score_end:.1f}")

        self.service.request_class_model(
            self.scene.models.network(),
            target,
            tuple(ws.images.shape[1:]),
            shown,
            version=ws.model_version,
            on_error=self._failed,
            images=ws.images,
        )

    def show_on_centroid(self, k: int, image: np.ndarray) -> None:
        """Float the class model as a billboarded card on class ``k``'s centroid sphere."""
        from panda3d.core import CardMaker

        from game.world.panel import image_texture

        markers = self.scene.world.centroid_markers
        if not 0 <= k < len(markers.spheres):
            return
        old = self._centroid_cards.pop(k, None)
        if old is not None and not old.is_empty():
            old.remove_node()
        side = 2.6 * markers.radius
        cm = CardMaker(f"class-model-{k}")
        cm.set_frame(-side / 2, side / 2, -side / 2, side / 2)
        card = markers.spheres[k].attach_new_node(cm.generate())
        card.set_texture(image_texture(upscale(_opaque(image), 64), f"class-model-{k}"), 1)
        card.set_light_off(1)
        card.set_two_sided(True)
        card.set_billboard_point_eye()
        card.set_pos(0, 0, markers.radius + side / 2 + 0.01)
        self._centroid_cards[k] = card

    # --- misc -------------------------------------------------------------------------------------

    def _failed(self, exc: BaseException | None) -> None:
        self._say("")
        self.scene.workspace.post(ev.Message(text=f"explanation failed: {exc}", level="error"))

    def destroy(self) -> None:
        self._events.ignore_all()
        with contextlib.suppress(ValueError):
            self.wording.listeners.remove(self._reword)
        self.service.cancel("map")
        self.service.cancel("whatif")
        if self._workspace is not None:
            self._unsubscribe()
        if self._text_path is not None:
            self._text_path.remove_node()
            self._text_path = None

    def _unsubscribe(self) -> None:
        with contextlib.suppress(ValueError):  # already gone (destroy called twice)
            if self._workspace is not None:
                self._workspace.unsubscribe(self._on_event)
        self._workspace = None


def heat_layer(heat: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """The colourised map as RGBA, translucent (a quarter of ``alpha`` where cold, ``alpha`` where
    hot): drawn over the image it gives ``render.overlay``'s blend, with the image underneath."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    rgba = np.empty(h.shape + (4,), dtype=np.uint8)
    rgba[:, :, :3] = colourise(h)
    rgba[:, :, 3] = np.clip(255.0 * alpha * (0.25 + 0.75 * h) + 0.5, 0, 255).astype(np.uint8)
    return rgba


def colour_bar(width: int = 256) -> np.ndarray:
    """The heat maps' colour scale as a ``(1, width, 3)`` strip, low (left) to high (right)."""
    return colourise(np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :])


def mask_layer(mask: np.ndarray) -> np.ndarray:
    """The painted what-if mask as a translucent RGBA layer (clear where not painted)."""
    m = np.asarray(mask, dtype=bool)
    rgba = np.zeros(m.shape + (4,), dtype=np.uint8)
    rgba[m] = MASK_RGBA
    return rgba


def _opaque(image: np.ndarray) -> np.ndarray:
    rgb = to_rgb(image)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
