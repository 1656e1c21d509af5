"""The workspace: everything the person sees and changes, in one object.

Images, labels, predictions, features, positions, centroids and the model version live here and
change only through typed events (``game.core.events``). Producers ``post`` events from any
thread; the owner (the frame loop, or a headless script) calls ``flush`` at a frame boundary, which
applies them in order and tells every listener. The recorder and the world are just listeners, so
there is one path that changes state and replay can drive it exactly as the hand did.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from game.core import events as ev

# Default for the array fields ``__post_init__`` derives when the caller gives none: None at
# construction, always an array afterwards (so the field is typed as the array it will be).
_FILLED_IN_POST_INIT = cast(np.ndarray, None)

Listener = Callable[[ev.Event, "Workspace"], None]

# (model version, feature layer, images) -> features of every image: what recomputes the
# features an event did not carry (a replayed session's, from that version's stored weights).
FeatureSource = Callable[[int, str, np.ndarray], np.ndarray]

# Card states shown in the world.
CARD_NORMAL = 0
CARD_PENDING = 1  # dropped; waiting for a fine-tune to act on it
CARD_UNSURE = 2  # dropped far from every cluster
CARD_EDITED = 3  # relabelled by the person


@dataclass
class Workspace:
    """State of one dataset under one network.

    ``images`` is ``(N, H, W, C)`` uint8 with C in {1, 3}; ``labels`` are the current labels (the
    person's relabels included) and ``original_labels`` the ones the dataset came with.
    ``is_train`` marks the cards the network may train on; the rest are held out for measuring.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    top5_classes: np.ndarray
    top5_scores: np.ndarray
    features: np.ndarray
    positions: np.ndarray
    is_train: np.ndarray
    sources: list[str]
    original_labels: np.ndarray = field(default=_FILLED_IN_POST_INIT)
    model_version: int = 0
    feature_layer: str = ""
    card_state: np.ndarray = field(default=_FILLED_IN_POST_INIT)
    selected: int = -1
    # The clusters drops are judged against: the layout the network (or the switched-to layer)
    # gave, without the cards the person has dragged since. Set by the same events that set a
    # layout, so the drop preview and the learning side read the same geometry.
    cluster_positions: np.ndarray = field(default=_FILLED_IN_POST_INIT)

    def __post_init__(self) -> None:
        n = len(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64).copy()
        if self.original_labels is None:
            self.original_labels = self.labels.copy()
        if self.card_state is None:
            self.card_state = np.zeros(n, dtype=np.int8)
        self.positions = np.asarray(self.positions, dtype=np.float32).copy()
        if self.cluster_positions is None:
            self.cluster_positions = self.positions.copy()
        self.cluster_positions = np.asarray(self.cluster_positions, dtype=np.float32).copy()
        for name in (
            "labels",
            "top5_classes",
            "top5_scores",
            "features",
            "positions",
            "is_train",
            "cluster_positions",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(f"workspace {name} has {len(getattr(self, name))} rows, images have {n}")
        if len(self.sources) != n:
            raise ValueError(f"workspace sources has {len(self.sources)} rows, images have {n}")
        self.cluster_revision = 0  # bumped whenever cluster_positions or labels change (cache key)
        self._queue: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()
        self._listeners: list[Listener] = []
        # Features an event did not carry are computed on first read (``features_pending``).
        self.feature_source: FeatureSource | None = None
        self._pending_features: tuple[int, str] | None = None

    # --- features not carried by an event (a replayed session) ----------------------------------

    @property
    def features_pending(self) -> tuple[int, str] | None:
        """``(model version, layer)`` whose features are computed on the next read of
        ``features`` (an event without them was applied), or None when they are at hand."""
        return None if "features" in self.__dict__ else self._pending_features

    def _set_features(self, features: np.ndarray | None, version: int, layer: str) -> None:
        if features is not None:
            self.features = np.asarray(features)
            self._pending_features = None
        else:  # nothing is computed now: a replay that never reads them never pays for them
            self.__dict__.pop("features", None)
            self._pending_features = (int(version), layer)

    def _compute_features(self) -> np.ndarray:
        """Features of the pending version and layer, from ``feature_source`` (may take a while;
        a newer event applied meanwhile wins)."""
        pending = self._pending_features
        if pending is None:
            raise AttributeError("features")
        if self.feature_source is None:
            raise RuntimeError(
                f"the features of model v{pending[0]} were not recorded and nothing can recompute them"
            )
        features = np.asarray(self.feature_source(pending[0], pending[1], self.images))
        if len(features) != self.n_cards:
            raise ValueError(f"recomputed features have {len(features)} rows, images have {self.n_cards}")
        if self._pending_features is pending:
            self.features = features
            self._pending_features = None
        return features

    if not TYPE_CHECKING:  # hidden from the type checker: ``features`` stays a typed field

        def __getattr__(self, name: str):
            if name == "features" and self.__dict__.get("_pending_features") is not None:
                return self._compute_features()
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def copy(self) -> Workspace:
        """An independent copy with no listeners and no queued events (arrays are copied; pending
        features stay pending, with the same feature source)."""
        pending = self.features_pending
        copied = Workspace(
            images=self.images,  # images never change in place; sharing them is safe
            labels=self.labels.copy(),
            class_names=list(self.class_names),
            top5_classes=self.top5_classes.copy(),
            top5_scores=self.top5_scores.copy(),
            features=np.zeros((self.n_cards, 0), np.float32) if pending else self.features.copy(),
            positions=self.positions.copy(),
            is_train=self.is_train.copy(),
            sources=list(self.sources),
            original_labels=self.original_labels.copy(),
            model_version=self.model_version,
            feature_layer=self.feature_layer,
            card_state=self.card_state.copy(),
            selected=self.selected,
            cluster_positions=self.cluster_positions.copy(),
        )
        copied.feature_source = self.feature_source
        if pending is not None:
            copied._set_features(None, *pending)
        return copied

    # --- derived views ---------------------------------------------------------------------

    @property
    def n_cards(self) -> int:
        return len(self.images)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def predictions(self) -> np.ndarray:
        """The network's top-1 class for every card."""
        return self.top5_classes[:, 0]

    def centroids(self) -> np.ndarray:
        """Mean position of every class's cards (current labels); NaN for an empty class."""
        return class_centroids(self.positions, self.labels, self.n_classes)

    def cluster_radii(self, percentile: float = 90.0) -> np.ndarray:
        """Per class, the given percentile of its cards' distances to the class centroid."""
        return cluster_radii(self.positions, self.labels, self.n_classes, percentile)

    def nearest_centroid(self, position: np.ndarray) -> tuple[int, float]:
        """The class whose centroid is nearest ``position`` and the distance to it."""
        c = self.centroids()
        d = np.linalg.norm(c - np.asarray(position, dtype=np.float32)[None, :], axis=1)
        d = np.where(np.isnan(d), np.inf, d)
        k = int(np.argmin(d))
        return k, float(d[k])

    def cluster_centroids(self) -> np.ndarray:
        """Centroids of the clusters drops are judged against (``cluster_positions``)."""
        return class_centroids(self.cluster_positions, self.labels, self.n_classes)

    def drop_event(self, card: int, position: np.ndarray | ev.Vec3, hand: str = "mouse") -> ev.CardDropped:
        """The ``CardDropped`` for ``card`` released at ``position``, naming the nearest centroid
        (the one recipe every hand, script and benchmark uses; the caller posts it)."""
        x, y, z = (float(v) for v in np.asarray(position).reshape(3))
        pos = (x, y, z)
        klass, distance = self.nearest_centroid(np.asarray(pos, dtype=np.float32))
        return ev.CardDropped(int(card), pos, klass, distance, hand=hand)

    # --- events ------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event, workspace)`` after each event is applied."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener, missing_ok: bool = False) -> None:
        """Stop calling ``listener``; ``missing_ok``: no error if it was not subscribed (a part
        that may be closed twice)."""
        if missing_ok and listener not in self._listeners:
            return
        self._listeners.remove(listener)

    def post(self, event: ev.Event) -> None:
        """Queue an event; safe from any thread. It takes effect at the next ``flush``."""
        self._queue.put(event)

    def flush(self) -> list[ev.Event]:
        """Apply every queued event in order (call once per frame, on the owning thread)."""
        applied = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self.apply(event)
            applied.append(event)
        return applied

    def apply(self, event: ev.Event) -> None:
        """Apply one event now and notify listeners (use ``post`` from other threads)."""
        handler = getattr(self, "_on_" + event.kind, None)
        if handler is not None:
            handler(event)
        for listener in list(self._listeners):
            listener(event, self)

    # Handlers: one per event kind that changes state. Events with no handler (grab, job,
    # message, undo) change nothing here but still reach listeners.

    def _on_select(self, e: ev.CardSelected) -> None:
        self.selected = e.card

    def _on_move(self, e: ev.CardMoved) -> None:
        self.positions[e.card] = e.position

    def _on_cancel(self, e: ev.GrabCancelled) -> None:
        self.positions[e.card] = e.position

    def _on_drop(self, e: ev.CardDropped) -> None:
        self.positions[e.card] = e.position
        self.card_state[e.card] = CARD_PENDING

    def _on_edit(self, e: ev.EditQueued) -> None:
        if e.action == "unsure":
            self.card_state[e.card] = CARD_UNSURE
        else:
            self.card_state[e.card] = CARD_PENDING

    def _on_model(self, e: ev.ModelUpdated) -> None:
        self.model_version = e.version
        self.labels = np.asarray(e.labels, dtype=np.int64).copy()
        self.top5_classes = np.asarray(e.top5_classes)
        self.top5_scores = np.asarray(e.top5_scores)
        self._set_features(e.features, e.version, self.feature_layer)
        new_positions = np.asarray(e.positions, dtype=np.float32).copy()
        # Cards dropped but not trained yet are posted where the person dropped them, still under
        # their old label; counted there, they would stretch their old class's cluster towards
        # the new one. They keep their place in the clusters until a model has learned them.
        kept = (self.card_state == CARD_PENDING) & np.all(new_positions == self.positions, axis=1)
        cluster_positions = new_positions.copy()
        cluster_positions[kept] = self.cluster_positions[kept]
        self.positions = new_positions
        self.cluster_positions = cluster_positions
        self.cluster_revision += 1
        edited = self.labels != self.original_labels
        self.card_state = np.where(edited, CARD_EDITED, CARD_NORMAL).astype(np.int8)
        self.card_state[kept] = CARD_PENDING  # still waiting for a model to learn them

    def _on_positions(self, e: ev.PositionsChanged) -> None:
        self.positions = np.asarray(e.positions, dtype=np.float32).copy()
        self.cluster_positions = self.positions.copy()
        self.cluster_revision += 1

    def _on_layer(self, e: ev.LayerChanged) -> None:
        self.feature_layer = e.layer
        self._set_features(e.features, self.model_version, e.layer)
        self.positions = np.asarray(e.positions, dtype=np.float32).copy()
        self.cluster_positions = self.positions.copy()
        self.cluster_revision += 1

    def _on_add(self, e: ev.CardAdded) -> None:
        image = np.asarray(e.image, dtype=np.uint8)
        if image.shape != self.images.shape[1:]:
            raise ValueError(f"added image has shape {image.shape}, cards have {self.images.shape[1:]}")
        self.images = np.concatenate([self.images, image[None]])
        self.labels = np.append(self.labels, e.label)
        self.original_labels = np.append(self.original_labels, e.label)
        self.top5_classes = np.concatenate([self.top5_classes, np.asarray([e.top5_classes])])
        self.top5_scores = np.concatenate([self.top5_scores, np.asarray([e.top5_scores], dtype=np.float32)])
        if self.features_pending is None:  # pending ones are computed for every image, this too
            self.features = np.concatenate(
                [self.features, np.asarray(e.feature, dtype=self.features.dtype)[None]]
            )
        self.positions = np.concatenate([self.positions, np.asarray([e.position], dtype=np.float32)])
        self.cluster_positions = np.concatenate(
            [self.cluster_positions, np.asarray([e.position], dtype=np.float32)]
        )
        self.cluster_revision += 1
        self.is_train = np.append(self.is_train, False)
        self.card_state = np.append(self.card_state, np.int8(CARD_NORMAL))
        self.sources.append(e.source or f"added:{len(self.sources)}")


def class_centroids(positions: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean position per class; NaN rows for classes without cards."""
    dims = positions.shape[1]
    sums = np.zeros((n_classes, dims), dtype=np.float64)
    np.add.at(sums, labels, positions)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts[:, None]).astype(np.float32)


def cluster_radii(positions: np.ndarray, labels: np.ndarray, n_classes: int, percentile: float) -> np.ndarray:
    """Per class, the ``percentile`` of card distances to the centroid (0 for empty classes)."""
    centroids = class_centroids(positions, labels, n_classes)
    radii = np.zeros(n_classes, dtype=np.float32)
    for c in range(n_classes):
        members = positions[labels == c]
        if len(members):
            radii[c] = np.percentile(np.linalg.norm(members - centroids[c], axis=1), percentile)
    return radii
