"""Typed events: the only way the workspace changes.

Every change (a card grabbed, a drop, a relabel, a new model, undo) is one of these frozen
dataclasses. The world posts them, the workspace applies them at a frame boundary, the recorder
writes them, and replay feeds them back. Keeping them plain data (ints, floats, strings, tuples and
numpy arrays) means a session file can store them without pickle.

Coordinates are world metres, Z up (x right, y forward), the convention of the layout and the
Panda3D world alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

Vec3 = tuple[float, float, float]

# The closed sets of values some fields take. They stay plain strings in events and in session
# files (old sessions keep loading); the type checker holds code to these values.
EditAction = Literal["relabel", "reinforce", "unsure"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
JobTask = Literal["", "finetune", "undo"]  # "": sessions recorded before the field, the edit queue
MessageLevel = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Event:
    """Base class; ``kind`` is the stable name used in session files."""

    kind: ClassVar[str] = "event"
    # Whether applying it changes the workspace's state (a replay's seek must re-apply it).
    changes_state: ClassVar[bool] = False
    # Whether the system posts it in answer to the person's input (an edit, a job status, a new
    # model, a message): ``replay --verify`` re-creates these instead of feeding them back.
    derived: ClassVar[bool] = False
    # Whether a later ``ModelUpdated`` replaces its whole effect (labels, predictions, features,
    # positions and card states): a seek may skip it if one follows before the target.
    superseded_by_model: ClassVar[bool] = False

    def to_fields(self) -> dict[str, Any]:
        """Field values as a dict (arrays stay arrays; the recorder decides how to store them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


EVENT_TYPES: dict[str, type[Event]] = {}


def register(cls: type[Event]) -> type[Event]:
    """Class decorator that makes an event type known to ``event_from_fields``."""
    if cls.kind in EVENT_TYPES:
        raise ValueError(f"duplicate event kind {cls.kind!r}")
    EVENT_TYPES[cls.kind] = cls
    return cls


def event_from_fields(kind: str, fields: dict[str, Any]) -> Event:
    """Rebuild an event from its kind and field values; unknown kinds are a clear error."""
    try:
        cls = EVENT_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}") from None
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - names
    if unknown:
        raise ValueError(f"event {kind!r} has unknown fields {sorted(unknown)}")
    converted = {}
    for f in dataclasses.fields(cls):
        if f.name not in fields:
            continue
        value = fields[f.name]
        if isinstance(value, list):
            value = tuple(value)
        converted[f.name] = value
    return cls(**converted)


# --- hand interaction -------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class CardSelected(Event):
    """A card was selected for inspection (``card == -1`` clears the selection)."""

    kind: ClassVar[str] = "select"
    changes_state: ClassVar[bool] = True
    card: int
    hand: str = "mouse"


@register
@dataclass(frozen=True)
class CardGrabbed(Event):
    kind: ClassVar[str] = "grab"
    card: int
    position: Vec3
    hand: str = "mouse"


@register
@dataclass(frozen=True)
class CardMoved(Event):
    """A grabbed card is being carried; posted at most once per frame per hand."""

    kind: ClassVar[str] = "move"
    changes_state: ClassVar[bool] = True
    superseded_by_model: ClassVar[bool] = True
    card: int
    position: Vec3
    hand: str = "mouse"


@register
@dataclass(frozen=True)
class GrabCancelled(Event):
    """The drag was cancelled (Esc): the card goes back to ``position``."""

    kind: ClassVar[str] = "cancel"
    changes_state: ClassVar[bool] = True
    superseded_by_model: ClassVar[bool] = True
    card: int
    position: Vec3
    hand: str = "mouse"


@register
@dataclass(frozen=True)
class CardDropped(Event):
    """A card was released at ``position``; ``nearest_class`` is the nearest centroid's class."""

    kind: ClassVar[str] = "drop"
    changes_state: ClassVar[bool] = True
    superseded_by_model: ClassVar[bool] = True
    card: int
    position: Vec3
    nearest_class: int
    distance: float
    hand: str = "mouse"


# --- edits and learning ------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class EditQueued(Event):
    """A drop was interpreted as an edit.

    ``action`` is ``"relabel"`` (moved into another class's cluster), ``"reinforce"`` (moved
    inside its own cluster; used ``repeats`` times) or ``"unsure"`` (dropped far from all).
    """

    kind: ClassVar[str] = "edit"
    changes_state: ClassVar[bool] = True
    superseded_by_model: ClassVar[bool] = True
    derived: ClassVar[bool] = True
    card: int
    action: EditAction
    old_label: int
    new_label: int
    repeats: int
    position: Vec3


@register
@dataclass(frozen=True)
class JobStatus(Event):
    """Progress of a fine-tune (or other worker) job: queued, running, done, failed, cancelled.

    ``task`` says what the job is (``"finetune"``, ``"undo"``; empty in sessions recorded before
    the field existed, and for the edit queue's "N edits waiting" with ``job_id`` 0).
    """

    kind: ClassVar[str] = "job"
    derived: ClassVar[bool] = True
    job_id: int
    state: JobState
    message: str = ""
    progress: float = 0.0
    task: JobTask = ""


@register
@dataclass(frozen=True)
class ModelUpdated(Event):
    """A job finished: new predictions, features and layout for every card.

    ``labels`` carries the labels after the job's relabels so that undo can restore them.
    ``checkpoint`` names the stored weights of ``version``. ``features`` are those of the
    workspace's feature layer under ``version``; None means "not carried": a session file stores
    none when it stores the version's weights (4,096 floats per card for AlexNet fc7, recomputed
    from the weights on demand), and the workspace then asks its ``feature_source``.
    """

    kind: ClassVar[str] = "model"
    changes_state: ClassVar[bool] = True
    superseded_by_model: ClassVar[bool] = True
    derived: ClassVar[bool] = True
    version: int
    labels: np.ndarray = field(repr=False)
    top5_classes: np.ndarray = field(repr=False)
    top5_scores: np.ndarray = field(repr=False)
    features: np.ndarray | None = field(repr=False)
    positions: np.ndarray = field(repr=False)
    checkpoint: str = ""
    summary: str = ""


@register
@dataclass(frozen=True)
class PositionsChanged(Event):
    """Cards get new target positions (a re-layout, an undo, a layer switch); the world tweens."""

    kind: ClassVar[str] = "positions"
    changes_state: ClassVar[bool] = True
    superseded_by_model: ClassVar[bool] = True
    positions: np.ndarray = field(repr=False)
    reason: str = ""


@register
@dataclass(frozen=True)
class UndoRequested(Event):
    kind: ClassVar[str] = "undo"
    hand: str = "keyboard"


@register
@dataclass(frozen=True)
class LayerChanged(Event):
    """The feature layer changed; ``features`` and ``positions`` are for the new layer.

    ``features`` None: not carried (a session file recomputes them from the weights of the
    version shown then; see ``ModelUpdated``)."""

    kind: ClassVar[str] = "layer"
    changes_state: ClassVar[bool] = True
    layer: str
    features: np.ndarray | None = field(repr=False)
    positions: np.ndarray = field(repr=False)


@register
@dataclass(frozen=True)
class CardAdded(Event):
    """A new card (e.g. a kept what-if image) joins the world."""

    kind: ClassVar[str] = "add"
    changes_state: ClassVar[bool] = True
    image: np.ndarray = field(repr=False)
    label: int
    top5_classes: tuple[int, ...]
    top5_scores: tuple[float, ...]
    feature: np.ndarray = field(repr=False)
    position: Vec3
    source: str = ""


@register
@dataclass(frozen=True)
class Message(Event):
    """Something to tell the person (a failed job, a skipped file); shown in the world."""

    kind: ClassVar[str] = "message"
    derived: ClassVar[bool] = True
    text: str
    level: MessageLevel = "info"
