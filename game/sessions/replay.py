"""Playing a recorded session back into a live workspace, the same way the hand drove it.

``ReplayDriver`` posts recorded events into a ``Workspace`` through ``post``: whoever owns the
frame loop flushes them as usual, so the world (or a test) cannot tell replay from a person.
Fine-tunes are not re-run: their recorded ``ModelUpdated`` events carry the results (per-card
features only in files that did not store the weights; otherwise the workspace recomputes them
from the weights when read, see ``features``). The camera
follows the recorded head through a callback, so this module needs no engine.

Per frame: ``driver.update(now)`` (``now`` in seconds on any steady clock). Controls: ``play``,
``pause``, ``toggle``, ``set_speed`` (x0.25 to x8), ``seek``, ``step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from game.core import events as ev
from game.core.workspace import Workspace
from game.sessions.reader import PoseTrack, RecordedEvent, SessionReader

MIN_SPEED = 0.25
MAX_SPEED = 8.0
POSE_WINDOW = 4.0  # seconds of poses read at a time

PoseCallback = Callable[[np.ndarray | None, np.ndarray | None, np.ndarray | None], None]


def _device(row: np.ndarray | None, k: int) -> np.ndarray | None:
    if row is None:
        return None
    part = row[k * 7 : (k + 1) * 7]
    return None if np.isnan(part).any() else part


class ReplayDriver:
    """Feeds a session's events into ``workspace`` at their recorded times (scaled by speed).

    ``workspace`` must be in the session's starting state (``SessionReader.initial_workspace``).
    ``on_pose(head, left, right)`` gets each frame's interpolated poses, each ``(x, y, z, qw, qx,
    qy, qz)`` or None when that device was absent; leave it out for a free camera.
    ``auto_flush`` flushes the workspace after posting (headless use, no frame loop to do it).
    """

    def __init__(
        self,
        reader: SessionReader,
        workspace: Workspace,
        on_pose: PoseCallback | None = None,
        speed: float = 1.0,
        auto_flush: bool = False,
    ) -> None:
        self.reader = reader
        self.workspace = workspace
        self.on_pose = on_pose
        self.auto_flush = auto_flush
        self.speed = 1.0
        self.set_speed(speed)
        self.duration = reader.duration
        self.clock = 0.0  # playback position in session seconds
        self.playing = False
        self.posted = 0
        self._initial = workspace.copy()
        self._last_now: float | None = None
        self._track = PoseTrack(np.zeros(0), np.zeros((0, 21), dtype=np.float32))
        self._track_span = (1.0, 0.0)
        self._restart(1)

    # --- controls ------------------------------------------------------------------------------

    def play(self) -> None:
        self.playing = True

    def pause(self) -> None:
        self.playing = False

    def toggle(self) -> None:
        self.playing = not self.playing

    def set_speed(self, speed: float) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"replay speed must be between x{MIN_SPEED} and x{MAX_SPEED}, not x{speed}")
        self.speed = float(speed)

    @property
    def finished(self) -> bool:
        return self._peek is None and self.clock >= self.duration

    @property
    def damage(self) -> str | None:
        """Where the file's readable part ended, if it is damaged."""
        return self.reader.damage

    # --- per frame -----------------------------------------------------------------------------

    def update(self, now: float) -> list[RecordedEvent]:
        """Advance playback to ``now`` and post every event that became due; returns them."""
        if self._last_now is not None and self.playing:
            self.clock = min(self.clock + (now - self._last_now) * self.speed, self.duration)
        self._last_now = now
        posted = self._post_until(self.clock)
        self._emit_pose()
        if self.playing and self.finished:
            self.playing = False
        return posted

    def step(self) -> RecordedEvent | None:
        """Post exactly the next event, move the clock to it, and pause."""
        self.playing = False
        item = self._peek
        if item is None:
            return None
        self.clock = max(self.clock, item.t)
        self._post(item)
        self._advance()
        self._emit_pose()
        return item

    def seek(self, t: float) -> None:
        """Jump to session time ``t``: the workspace gets the state it had then.

        The state at the last fine-tune before ``t`` arrives as one ``ModelUpdated`` (plus layer,
        added cards and selection), then the few events after it that still matter are posted
        again as recorded, so pending and unsure markers come back too.
        """
        t = float(min(max(t, 0.0), self.duration))
        end = self.reader.last_seq_at(t)
        keep, last_model = self.reader.fast_forward_plan(end)
        base = self._initial.copy()
        tail: list[RecordedEvent] = []
        for item in self.reader.events(1, end, only=keep):
            if item.seq <= last_model:
                base.apply(item.event)
            else:
                tail.append(item)
        for event in self._events_for_state(base):
            self.workspace.post(event)
        for item in tail:
            self.workspace.post(item.event)
        if self.auto_flush:
            self.workspace.flush()
        self.clock = t
        self._restart(end + 1)
        self._emit_pose()

    # --- internals -----------------------------------------------------------------------------

    def _restart(self, seq: int) -> None:
        self._iter: Iterator[RecordedEvent] = self.reader.events(seq)
        self._advance()

    def _advance(self) -> None:
        self._peek = next(self._iter, None)

    def _post(self, item: RecordedEvent) -> None:
        self.workspace.post(item.event)
        self.posted += 1
        if self.auto_flush:
            self.workspace.flush()

    def _post_until(self, t: float) -> list[RecordedEvent]:
        out = []
        while self._peek is not None and self._peek.t <= t:
            out.append(self._peek)
            self.workspace.post(self._peek.event)
            self._advance()
        self.posted += len(out)
        if out and self.auto_flush:
            self.workspace.flush()
        return out

    def pose_at(self, t: float) -> np.ndarray | None:
        """The interpolated pose row at session time ``t`` (None before any pose)."""
        lo, hi = self._track_span
        if not lo <= t <= hi:
            self._track = self.reader.poses(t - 0.5, t + POSE_WINDOW)
            self._track_span = (t, t + POSE_WINDOW - 0.5)
        return self._track.at(t)

    def _emit_pose(self) -> None:
        if self.on_pose is None:
            return
        row = self.pose_at(self.clock)
        self.on_pose(_device(row, 0), _device(row, 1), _device(row, 2))

    def _events_for_state(self, state: Workspace) -> list[ev.Event]:
        """Events that bring the live workspace to ``state`` through the normal event path."""
        live = self.workspace
        out: list[ev.Event] = []
        # Features the file did not store stay unread here: the live workspace gets them pending
        # too (None in the events), computed only if something reads them.
        pending = state.features_pending is not None
        features = None if pending else state.features
        if live.feature_layer != state.feature_layer:
            out.append(ev.LayerChanged(state.feature_layer, features, state.positions))
        if state.n_cards < live.n_cards:
            # Seeking back past an added card: the card stays, with its current values.
            state = _pad_state(state, live)
            features = None if pending else state.features
        for i in range(live.n_cards, state.n_cards):
            x, y, z = (float(p) for p in state.positions[i])
            out.append(
                ev.CardAdded(
                    image=state.images[i],
                    label=int(state.labels[i]),
                    top5_classes=tuple(int(c) for c in state.top5_classes[i]),
                    top5_scores=tuple(float(s) for s in state.top5_scores[i]),
                    feature=_feature_row(features, i, live),
                    position=(x, y, z),
                    source=state.sources[i],
                )
            )
        out.append(
            ev.ModelUpdated(
                version=state.model_version,
                labels=state.labels.copy(),
                top5_classes=state.top5_classes.copy(),
                top5_scores=state.top5_scores.copy(),
                features=None if features is None else features.copy(),
                positions=state.positions.copy(),
                summary="replay seek",
            )
        )
        if live.selected != state.selected:
            out.append(ev.CardSelected(state.selected, hand="replay"))
        return out


def _feature_row(features: np.ndarray | None, i: int, live: Workspace) -> np.ndarray:
    """Card ``i``'s feature for a ``CardAdded``; a placeholder when the state's are pending (the
    ``ModelUpdated`` after it leaves the live workspace's pending too, so it is never read)."""
    if features is not None:
        row: np.ndarray = features[i]
        return row
    dim = 0 if live.features_pending is not None else live.features.shape[1]
    return np.zeros(dim, dtype=np.float32)


def _pad_state(state: Workspace, live: Workspace) -> Workspace:
    extra = slice(state.n_cards, live.n_cards)
    padded = state.copy()
    padded.images = live.images
    names = ["labels", "top5_classes", "top5_scores", "positions", "is_train"]
    if state.features_pending is None:  # pending ones are computed for every image, these too
        names.append("features")
    for name in names:
        setattr(padded, name, np.concatenate([getattr(state, name), getattr(live, name)[extra]]))
    padded.sources = list(state.sources) + list(live.sources[extra])
    return padded
