"""The drop preview: what releasing the carried card will do, shown while it is carried.

A workspace listener. On every ``CardGrabbed``/``CardMoved`` it asks the ``DropJudge`` (the same
judge the fine-tune controller uses on the ``CardDropped``) what a release at the card's position
means, and shows it three ways: the target cluster lit (a ring in the class colour around its
centroid, sized to the cluster), a line from the card to that centroid, and one line of text
("release: relabel 7 -> 2", "release: reinforce 7 x6", "release: unsure (far from every cluster)")
at the bottom of the window and, for VR, floating above the card. Whatever moves the card (mouse,
controller, a replay) gets the same preview, and what is shown is what will be trained.

``on_target_change(hand, edit)`` is called when the meaning under a hand changes (a VR controller
ticks its haptics there).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
from panda3d.core import LineSegs, NodePath, TextNode, TransparencyAttrib

from game.core import events as ev
from game.core.events import EditQueued
from game.core.workspace import Workspace
from game.learning.edits import UNSURE, DropJudge, describe_edit
from game.world.label import Label, preload_glyphs

UNSURE_COLOUR = (1.0, 0.45, 0.4, 1.0)
TEXT_TINT = 0.45  # how far the text colour is taken towards white
RING_SEGMENTS = 48
TargetListener = Callable[[str, EditQueued], None]


def _unit_line(name: str, thickness: float) -> NodePath:
    """A line from (0,0,0) to (0,1,0): placed, aimed and stretched each time the card moves."""
    segs = LineSegs(name)
    segs.set_thickness(thickness)
    segs.move_to(0, 0, 0)
    segs.draw_to(0, 1, 0)
    return NodePath(segs.create())


def _unit_ring(name: str, thickness: float) -> NodePath:
    """A unit circle in the XZ plane; billboarded, it reads as a ring around the cluster."""
    segs = LineSegs(name)
    segs.set_thickness(thickness)
    for i in range(RING_SEGMENTS + 1):
        a = 2 * math.pi * i / RING_SEGMENTS
        if i == 0:
            segs.move_to(math.cos(a), 0, math.sin(a))
        else:
            segs.draw_to(math.cos(a), 0, math.sin(a))
    return NodePath(segs.create())


class DropPreview:
    """Target ring, line and text for the card being carried; see the module docstring."""

    def __init__(
        self,
        workspace: Workspace,
        judge: DropJudge,
        render: NodePath,
        overlay: NodePath | None,
        colours: np.ndarray,
        aspect_ratio: float = 1.6,
        in_world_text: bool = False,
    ) -> None:
        self.workspace = workspace
        self.judge = judge
        self.colours = colours
        self.on_target_change: list[TargetListener] = []
        self.edit: EditQueued | None = None  # what a release would do now (None: nothing carried)
        self.text = ""
        self.text_colour: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
        self._hand = ""
        # Per hand (dicts keep the order of the last update): the card it carries and where, and
        # what a release would mean, so two VR hands each get their own preview and haptic ticks.
        self._carried: dict[str, tuple[int, np.ndarray]] = {}
        self._meanings: dict[str, tuple[str, int]] = {}
        preload_glyphs("->")
        self.root = render.attach_new_node("drop-preview")
        self.root.set_light_off(1)
        self.root.set_transparency(TransparencyAttrib.M_alpha)
        self.root.set_depth_test(False)  # a preview hidden behind cards would not be one
        self.root.set_depth_write(False)
        self.root.set_bin("fixed", 40)
        self.line = _unit_line("drop-line", 3.0)
        self.line.reparent_to(self.root)
        self.ring = _unit_ring("drop-ring", 4.0)
        self.ring.reparent_to(self.root)
        self.ring.set_billboard_point_eye()
        self.root.hide()
        self.label: Label | None = None
        if overlay is not None:
            self.label = Label(overlay, "drop-preview-text", 0.06, align=TextNode.A_center, sort=60)
            self.label.root.set_pos(-0.1 * aspect_ratio, 0, -0.82)
            self.label.root.hide()
        # In VR the 2-D overlay is not in the headset: the text also floats above the card
        # (``in_world_text``, switched on by the VR launch; off on the desktop, where it would
        # say the same thing twice).
        self.world_label = Label(self.root, "drop-preview-3d", 0.035, align=TextNode.A_center, sort=61)
        self.world_label.root.set_billboard_point_eye()
        self.in_world_text = in_world_text
        workspace.subscribe(self._on_event)

    # --- events ----------------------------------------------------------------------------------

    def _on_event(self, event: ev.Event, workspace: Workspace) -> None:
        if isinstance(event, (ev.CardGrabbed, ev.CardMoved)):
            self._carried.pop(event.hand, None)  # re-inserted last: the latest hand is shown
            self._carried[event.hand] = (event.card, np.asarray(event.position, dtype=np.float32))
            self.show(event.card, self._carried[event.hand][1], event.hand)
        elif isinstance(event, (ev.CardDropped, ev.GrabCancelled)):
            # Only the hand that let go: the other VR hand may still carry a card.
            self._carried.pop(event.hand, None)
            self._meanings.pop(event.hand, None)
            self._show_last_carried()
        elif isinstance(event, (ev.ModelUpdated, ev.LayerChanged, ev.PositionsChanged, ev.CardAdded)):
            # The clusters changed under cards still in a hand: judge them again where they are
            # held (the world keeps a carried card where the hand put it).
            self._carried = {h: c for h, c in self._carried.items() if c[0] < workspace.n_cards}
            self._show_last_carried()

    def _show_last_carried(self) -> None:
        """The preview of the hand that moved last, or none when no hand carries a card."""
        if not self._carried:
            self.hide()
            return
        hand, (card, position) = next(reversed(self._carried.items()))
        self.show(card, position, hand)

    # --- drawing ---------------------------------------------------------------------------------

    def show(self, card: int, position: np.ndarray, hand: str = "mouse") -> EditQueued:
        """Judge a release of ``card`` at ``position`` and draw what it means."""
        edit = self.judge.judge(self.workspace, card, position)
        meaning = (edit.action, edit.new_label)
        changed = self._meanings.get(hand) != meaning  # per hand: two VR hands never cross-tick
        self._meanings[hand] = meaning
        self.edit, self._hand = edit, hand
        self.text = describe_edit(edit, self.workspace.class_names)
        if edit.action == UNSURE:
            colour = UNSURE_COLOUR
            self.ring.hide()
            self.line.hide()
        else:
            r, g, b = (float(c) for c in self.colours[edit.new_label % len(self.colours), :3])
            colour = (r, g, b, 1.0)
            centroids, radii = self.judge.geometry(self.workspace, card)
            centre = centroids[edit.new_label]
            radius = max(float(radii[edit.new_label]), 0.02)
            self.ring.set_pos(*map(float, centre))
            self.ring.set_scale(radius)
            self.ring.set_color(*colour, 1)  # over LineSegs' white vertex colours
            self.ring.show()
            offset = centre - position
            length = float(np.linalg.norm(offset))
            if length > 1e-4:
                self.line.set_pos(*map(float, position))
                self.line.look_at(*map(float, centre))
                self.line.set_scale(1, length, 1)
                self.line.set_color(*colour, 1)
                self.line.show()
            else:
                self.line.hide()
        # The text in a light tint of the target's colour: dark class colours (Okabe-Ito blue)
        # were hard to read on the dark backing.
        self.text_colour = tuple(float(c + TEXT_TINT * (1.0 - c)) for c in colour[:3]) + (1.0,)
        self.root.show()
        if self.label is not None:
            self.label.set_text(self.text)
            self.label.set_colour(self.text_colour)
            self.label.root.show()
        if self.in_world_text:
            self.world_label.root.show()
            self.world_label.set_text(self.text)
            self.world_label.set_colour(self.text_colour)
            self.world_label.root.set_pos(float(position[0]), float(position[1]), float(position[2]) + 0.08)
        else:
            self.world_label.root.hide()
        if changed:
            for listener in list(self.on_target_change):
                listener(hand, edit)
        return edit

    def hide(self) -> None:
        self.edit = None
        self.text = ""
        self.root.hide()
        if self.label is not None:
            self.label.root.hide()

    @property
    def visible(self) -> bool:
        return not self.root.is_hidden()

    def destroy(self) -> None:
        with contextlib.suppress(ValueError):  # already unsubscribed
            self.workspace.unsubscribe(self._on_event)
        self.root.remove_node()
        if self.label is not None:
            self.label.root.remove_node()
