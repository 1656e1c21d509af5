"""Applying moves without a window: the CLI's ``edit`` command, tests and benchmarks use this.

``apply_moves`` drops each card at the target class's centroid (plus a small seeded offset) by
posting ``CardDropped`` to the workspace, exactly as the world does, and lets the
``FineTuneController`` do the rest; then it measures what the person would care about: did the
prediction flip, did held-out accuracy hold, where did the card end up, did unconcerned cards keep
their neighbours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from game.core import events as ev
from game.core.errors import UserError
from game.core.worker import Worker
from game.layout.projector import neighbour_agreement
from game.learning.controller import FineTuneController
from game.learning.edits import cluster_geometry


@dataclass
class MoveReport:
    """What one move did (all accuracies in [0, 1])."""

    card: int
    action: str
    old_label: str
    new_label: str
    repeats: int
    predicted_before: str
    predicted_after: str
    heldout_before: float
    heldout_after: float
    final_position: tuple[float, float, float]
    nearest_class: str
    ended_nearest_target: bool
    neighbours_kept: float  # unconcerned cards: mean fraction of their 10-NN kept in the layout
    version: int
    seconds: float
    steps: int


@dataclass
class MovesReport:
    moves: list[MoveReport] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"moves": [asdict(m) for m in self.moves], "messages": list(self.messages)}


def parse_move(text: str, class_names: list[str], n_cards: int) -> tuple[int, int]:
    """``"CARD:CLASS"`` -> (card index, class index); a clear ``UserError`` when either is wrong."""
    card_text, sep, class_text = text.rpartition(":")
    if not sep or not card_text or not class_text:
        raise UserError(f"--move {text!r}: expected CARD:CLASS, e.g. 17:3")
    try:
        card = int(card_text)
    except ValueError:
        raise UserError(f"--move {text!r}: card must be an integer index, not {card_text!r}") from None
    if not 0 <= card < n_cards:
        raise UserError(f"--move {text!r}: card {card} is out of range (0..{n_cards - 1})")
    return card, resolve_class(class_text, class_names, f"--move {text!r}")


def resolve_class(text: str, class_names: list[str], where: str = "class") -> int:
    """A class by name, or by index when no class has that name."""
    if text in class_names:
        return class_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        return int(text)
    shown = ", ".join(class_names[:20]) + (" ..." if len(class_names) > 20 else "")
    raise UserError(f"{where}: unknown class {text!r} (classes: {shown})")


def drop_position(
    loaded: Any, card: int, target: int, rng: np.random.Generator, offset: float = 0.15
) -> np.ndarray:
    """The target class's centroid plus a seeded offset of ``offset`` times its cluster radius."""
    ws = loaded.workspace
    positions = np.asarray(loaded.models.layout().positions, dtype=np.float64)
    centroids, radii = cluster_geometry(
        positions, ws.labels, ws.n_classes, loaded.scene.learning.cluster_percentile, exclude=card
    )
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-12
    point: np.ndarray = (centroids[target] + direction * offset * radii[target]).astype(np.float32)
    return point


def heldout_accuracy(
    predictions: np.ndarray, original: np.ndarray, is_train: np.ndarray, exclude: np.ndarray
) -> float:
    """Accuracy on held-out cards against their original labels, leaving out edited cards."""
    mask = ~is_train
    mask[exclude] = False
    return float(np.mean(predictions[mask] == original[mask])) if mask.any() else float("nan")


def neighbours_kept(before: np.ndarray, after: np.ndarray, exclude: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each unconcerned card's k nearest unconcerned neighbours kept."""
    keep = np.ones(len(before), dtype=bool)
    keep[exclude] = False
    return neighbour_agreement(before[keep], after[keep], k)


def apply_moves(
    loaded: Any,
    moves: list[tuple[int, int]],
    controller: FineTuneController | None = None,
    together: bool = True,
    seed: int = 0,
    timeout: float = 600.0,
) -> MovesReport:
    """Drop each ``(card, class)`` at that class's centroid and fine-tune, through the app's events.

    ``together``: one job for all moves (as when the person moves cards in quick succession);
    otherwise one job per move, each on top of the previous model.
    """
    own_worker = controller is None
    if controller is None:
        worker = Worker(torch_threads=loaded.scene.learning.torch_threads)
        # No frame loop to keep fluid here: train on the worker thread (same results, no child).
        controller = FineTuneController(loaded, worker, job_process=False)
    ws = loaded.workspace
    report = MovesReport()
    messages: list[str] = []

    def listen(event: ev.Event, _ws: Any) -> None:
        if isinstance(event, ev.Message):
            messages.append(event.text)

    ws.subscribe(listen)
    rng = np.random.default_rng(seed)
    try:
        groups = [moves] if together else [[m] for m in moves]
        for group in groups:
            report.moves += _apply_group(loaded, controller, group, rng, timeout)
    finally:
        ws.unsubscribe(listen)
        if own_worker:
            controller.close()
            controller.worker.close(wait=True, timeout=30)  # torch aborts if torn down mid-op
    report.messages = messages
    return report


def _apply_group(
    loaded: Any,
    controller: FineTuneController,
    group: list[tuple[int, int]],
    rng: np.random.Generator,
    timeout: float,
) -> list[MoveReport]:
    ws = loaded.workspace
    names = ws.class_names
    cards = np.array([c for c, _ in group], dtype=np.int64)
    before_positions = np.asarray(loaded.models.layout().positions).copy()
    predicted_before = ws.predictions.copy()
    acc_before = heldout_accuracy(ws.predictions, ws.original_labels, ws.is_train.copy(), cards)
    last_before = controller.last_result
    edits: dict[int, ev.EditQueued] = {}

    def listen(event: ev.Event, _ws: Any) -> None:
        if isinstance(event, ev.EditQueued):
            edits[event.card] = event

    ws.subscribe(listen)
    try:
        for card, target in group:
            pos = drop_position(loaded, card, target, rng)
            x, y, z = map(float, ws.positions[card])
            ws.post(ev.CardGrabbed(card, (x, y, z), hand="headless"))
            ws.post(ws.drop_event(card, pos, hand="headless"))
        ws.flush()
        controller.apply_edits_now()
        controller.wait(timeout)
        ws.flush()
    finally:
        ws.unsubscribe(listen)
    result = controller.last_result if controller.last_result is not last_before else None
    acc_after = heldout_accuracy(ws.predictions, ws.original_labels, ws.is_train.copy(), cards)
    kept = neighbours_kept(before_positions, np.asarray(ws.positions), cards) if result else 1.0
    outcomes = {o.card: o for o in result.outcomes} if result else {}
    out = []
    for card, _target in group:
        e = edits.get(card)
        o = outcomes.get(card)
        p = ws.positions[card]
        out.append(
            MoveReport(
                card=card,
                action=e.action if e else "none",
                old_label=names[e.old_label] if e else names[ws.labels[card]],
                new_label=names[e.new_label] if e else names[ws.labels[card]],
                repeats=e.repeats if e else 0,
                predicted_before=names[predicted_before[card]],
                predicted_after=names[ws.predictions[card]],
                heldout_before=acc_before,
                heldout_after=acc_after,
                final_position=(float(p[0]), float(p[1]), float(p[2])),
                nearest_class=names[o.nearest_class] if o else names[ws.nearest_centroid(p)[0]],
                ended_nearest_target=bool(o.ended_nearest_target) if o else False,
                neighbours_kept=kept,
                version=int(ws.model_version),
                seconds=float(result.seconds.get("total", 0.0)) if result else 0.0,
                steps=int(result.steps) if result else 0,
            )
        )
    return out
