"""Where the person stands when VR starts: inside the cloud, at a scale where cards are readable.

The desktop's framing shows the whole cloud from outside; in a headset that is a 1.7 m clump
two metres away, with nothing readable at arm's length. ``room_scale_start`` instead scales the
person so a card looks at least ``READABLE`` (10 cm) across, stands the head nearest the cloud's
centre where no card is in the face but one is within arm's reach, and turns it towards the
nearest cluster, so clusters are around and a step or two away. Locomotion and the two-hand
scale gesture still show the whole cloud. ``readability`` measures what the head sees from a
start place.

The desktop holds the class labels in a row above the whole cloud (seen from outside, no card
is in front of them); from inside at room scale that row floats 2.6-2.9 m above the floor and a
standing person looks up to read it. ``LabelPlacement`` puts each class's marker by its own
cluster instead, on the side facing the start place, between chest and eye height.

Pure numpy (no panda3d): tested and measured headless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

READABLE = 0.10  # metres a card should look across (readable at arm's length, 0.6 m)
ARM = 0.6  # metres: arm's length
STEP = 0.75  # metres: one step
EYE_HEIGHT = 1.6  # metres above the floor in tracking space (a standing person)
CLEARANCE = 0.35  # metres (as the person sees them) from the head to the nearest card
# Class markers in VR, in the person's metres above the floor: the sphere no lower than the
# chest, the label over it a little under the eyes (a slightly lowered gaze is the comfortable one).
MARKER_LOW = 1.0
MARKER_HIGH = 1.3


@dataclass(frozen=True)
class StartPlace:
    """The rig (tracking space in the world): position, heading in degrees, person scale."""

    position: np.ndarray
    heading: float
    scale: float

    def head(self, eye_height: float = EYE_HEIGHT) -> np.ndarray:
        return self.position + np.array([0.0, 0.0, eye_height * self.scale])


def _centroids(positions: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    if labels is None or len(labels) != len(positions):
        return positions.mean(axis=0, keepdims=True)
    return np.stack([positions[labels == c].mean(axis=0) for c in np.unique(labels)])


def room_scale_start(
    positions: np.ndarray,
    card_size: float,
    labels: np.ndarray | None = None,
    *,
    eye_height: float = EYE_HEIGHT,
    min_scale: float = 0.05,
) -> StartPlace:
    """A start place inside the cloud (see the module docstring)."""
    p = np.asarray(positions, dtype=np.float64)
    scale = float(np.clip(card_size / READABLE, min_scale, 1.0))
    if len(p) == 0:
        return StartPlace(np.array([0.0, 0.0, 0.0]), 0.0, scale)
    centre = np.median(p, axis=0)
    # Candidate head positions on a grid around the centre; keep the nearest with clearance.
    spread = float(np.percentile(np.linalg.norm(p - centre, axis=1), 50)) + 1e-6
    r = np.linspace(-1.0, 1.0, 9) * spread
    grid = np.stack(np.meshgrid(r, r, r * 0.5, indexing="ij"), axis=-1).reshape(-1, 3) + centre
    sample = p if len(p) <= 5000 else p[np.random.default_rng(0).choice(len(p), 5000, replace=False)]
    nearest = nearest_card(grid, sample)
    clear = nearest >= CLEARANCE * scale
    # Best: clear of the face yet with a card within arm's reach; then merely clear; nearest the
    # centre either way.
    reach = clear & (nearest <= ARM * scale)
    off_centre = np.linalg.norm(grid - centre, axis=1)
    ok = reach if reach.any() else clear
    head = (
        grid[int(np.argmin(np.where(ok, off_centre, np.inf)))] if ok.any() else grid[int(np.argmax(nearest))]
    )
    # Face the nearest cluster (horizontal direction).
    centroids = _centroids(p, labels)
    d = centroids - head
    d[:, 2] = 0.0
    dist = np.linalg.norm(d, axis=1)
    k = int(np.argmin(np.where(dist > 1e-6, dist, np.inf))) if (dist > 1e-6).any() else 0
    dx, dy = float(d[k, 0]), float(d[k, 1])
    heading = math.degrees(math.atan2(-dx, dy)) if dist[k] > 1e-6 else 0.0  # Panda: h=0 faces +Y
    return StartPlace(head - np.array([0.0, 0.0, eye_height * scale]), heading, scale)


def nearest_card(points: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Distance from each of ``points`` to the nearest card centre (inf without one; hidden, NaN
    cards ignored): the "no card in the face" test of a head position (``CLEARANCE``), used for
    the start place and for the wrist menu's "Go to card" (``VRControls.go_to``)."""
    q = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        return np.full(len(q), np.inf)
    return np.sqrt(((q[:, None, :] - p[None, :, :]) ** 2).sum(axis=2).min(axis=1))


def readability(
    positions: np.ndarray,
    card_size: float,
    head: np.ndarray,
    scale: float,
    labels: np.ndarray | None = None,
) -> dict[str, float]:
    """What the head sees, in the person's metres (world metres / scale).

    ``card_apparent_m``: how large a card looks; ``nearest_card_m``: the closest card (nothing in
    the face); ``cards_within_arm``: cards within arm's length; ``clusters_within_two_steps``:
    cluster centres within two steps; ``readable_fraction``: cards that look at least as large
    as a 10 cm card at arm's length (angular size), i.e. within ``apparent size * 0.6 / 0.1``.
    """
    p = np.asarray(positions, dtype=np.float64)
    dist = np.linalg.norm(p - np.asarray(head, dtype=np.float64), axis=1) / scale
    apparent = card_size / scale
    centroids = _centroids(p, labels)
    cdist = np.linalg.norm(centroids - head, axis=1) / scale
    readable_within = apparent * ARM / READABLE
    return {
        "card_apparent_m": float(apparent),
        "nearest_card_m": float(dist.min()) if len(dist) else float("inf"),
        "cards_within_arm": float((dist <= ARM).sum()),
        "clusters_within_two_steps": float((cdist <= 2 * STEP).sum()),
        "readable_fraction": float((dist <= readable_within).mean()) if len(dist) else 0.0,
    }


@dataclass(frozen=True)
class LabelPlacement:
    """Where the class markers stand in VR: by their clusters, at a comfortable height.

    Called as ``CentroidMarkers``' placement: ``(centroids, radii) -> offsets`` from each
    centroid to its marker (world metres). Horizontally the marker moves from the centroid
    towards ``head`` by the cluster's radius (at most half the way to the head), so it stands at
    the cluster's near side instead of among its cards; its height is the centroid's, held
    between ``MARKER_LOW`` and ``MARKER_HIGH`` person-metres above ``floor`` (world z).
    """

    head: np.ndarray
    floor: float
    scale: float
    low: float = MARKER_LOW
    high: float = MARKER_HIGH

    @classmethod
    def at(cls, place: StartPlace, eye_height: float = EYE_HEIGHT) -> LabelPlacement:
        return cls(place.head(eye_height), float(place.position[2]), place.scale)

    def __call__(self, centroids: np.ndarray, radii: np.ndarray | None = None) -> np.ndarray:
        c = np.asarray(centroids, dtype=np.float64)
        offsets = np.zeros_like(c)
        valid = np.isfinite(c).all(axis=1)
        if not valid.any():
            return offsets
        cv = c[valid]
        towards = np.asarray(self.head, dtype=np.float64) - cv
        towards[:, 2] = 0.0
        dist = np.linalg.norm(towards, axis=1)
        r = np.zeros(len(cv)) if radii is None else np.nan_to_num(np.asarray(radii, dtype=np.float64)[valid])
        pull = np.minimum(r, dist / 2)
        offsets[valid, :2] = (towards[:, :2] / np.maximum(dist, 1e-9)[:, None]) * pull[:, None]
        z = np.clip(cv[:, 2], self.floor + self.low * self.scale, self.floor + self.high * self.scale)
        offsets[valid, 2] = z - cv[:, 2]
        return offsets
