"""VR starts inside the cloud at room scale: cards readable at arm's length, clusters near."""

from __future__ import annotations

import math

import numpy as np
import pytest
from vr_helpers import close_app, make_app, synthetic_loaded

from game.vr.launch import attach
from game.vr.placement import (
    CLEARANCE,
    MARKER_HIGH,
    MARKER_LOW,
    READABLE,
    STEP,
    LabelPlacement,
    readability,
    room_scale_start,
)
from game.vr.simulated import SimulatedBackend


def digits_like(n: int = 1800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten clusters in a 3 m cloud, like the default scene's layout."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    centres = rng.uniform([-1.5, -1.5, 0.5], [1.5, 1.5, 2.5], size=(10, 3))
    return centres[labels] + rng.normal(scale=0.2, size=(n, 3)), labels


def test_small_cards_scale_the_person_and_the_head_stands_in_free_space_facing_a_cluster():
    positions, labels = digits_like()
    card = 0.045  # the default scene's card size
    place = room_scale_start(positions, card, labels)
    assert math.isclose(place.scale, card / READABLE)
    head = place.head()
    seen = readability(positions, card, head, place.scale, labels)
    assert seen["card_apparent_m"] >= READABLE - 1e-9  # 10 cm or more: readable at 0.6 m
    assert seen["nearest_card_m"] >= CLEARANCE - 1e-9  # nothing in the face
    assert seen["clusters_within_two_steps"] >= 1
    # Inside the cloud: within its bounding box.
    assert np.all(head >= positions.min(axis=0)) and np.all(head <= positions.max(axis=0))
    # Facing the nearest cluster (heading 0 faces +Y; Panda3D turns counter-clockwise).
    centres = np.stack([positions[labels == c].mean(axis=0) for c in range(10)])
    flat = centres - head
    flat[:, 2] = 0
    nearest = flat[np.argmin(np.linalg.norm(flat, axis=1))]
    h = math.radians(place.heading)
    facing = np.array([-math.sin(h), math.cos(h), 0.0])
    assert float(facing @ nearest) / np.linalg.norm(nearest) > 0.99
    # The desktop's view from outside at 1:1, for comparison: small cards, nothing near.
    outside = positions.mean(axis=0) + np.array([0.0, -3.5, 0.0])
    far = readability(positions, card, outside, 1.0, labels)
    assert far["card_apparent_m"] < READABLE and far["cards_within_arm"] == 0
    assert seen["cards_within_arm"] > far["cards_within_arm"]
    assert seen["clusters_within_two_steps"] > far["clusters_within_two_steps"]
    assert STEP > 0


def test_large_cards_keep_the_person_life_size():
    positions, labels = digits_like()
    assert room_scale_start(positions, 0.2, labels).scale == 1.0


def small_cards_app():
    """60 cards of 5 cm and a started headset standing at 1.6 m: (loaded, backend, app)."""
    loaded = synthetic_loaded(n=60)
    loaded.scene.world.card_size = 0.05
    backend = SimulatedBackend([{"head": {"pos": [0.0, 0.0, 1.6]}, "frames": 2}], size=(48, 32))
    backend.start()
    return loaded, backend, make_app(loaded)


def test_a_vr_session_starts_at_the_room_scale_place():
    loaded, backend, app = small_cards_app()
    try:
        session = attach(app, backend)
        app.step()
        place = room_scale_start(app.world.positions, 0.05, loaded.workspace.labels)
        assert math.isclose(session.controls.rig.scale, place.scale)
        head = session.controls.head_position()
        assert np.allclose(head, place.head(), atol=1e-4)
        session.stop()
    finally:
        close_app(app)


def test_vr_labels_stand_by_their_clusters_between_chest_and_eye_height():
    positions, labels = digits_like()
    card = 0.045
    place = room_scale_start(positions, card, labels)
    floor = float(place.position[2])
    centres = np.stack([positions[labels == c].mean(axis=0) for c in range(10)])
    radii = np.array(
        [np.percentile(np.linalg.norm(positions[labels == c] - centres[c], axis=1), 90) for c in range(10)]
    )
    # The desktop's row above the whole cloud, as the person inside sees it: far overhead.
    top = positions[:, 2].max() + 0.75 * card + 0.06 + 0.05
    assert (top - floor) / place.scale > 2.0
    markers = centres + LabelPlacement.at(place)(centres, radii)
    height = (markers[:, 2] - floor) / place.scale  # the person's metres above the floor
    assert np.all(height >= MARKER_LOW - 1e-9) and np.all(height <= MARKER_HIGH + 1e-9)
    # Near their own cluster: moved sideways by at most the cluster's radius, towards the head.
    flat = markers[:, :2] - centres[:, :2]
    moved = np.linalg.norm(flat, axis=1)
    assert np.all(moved <= radii + 1e-9)
    towards = place.head()[:2] - centres[:, :2]
    assert np.all(np.einsum("ij,ij->i", flat, towards) >= 0)
    # At the cluster's near side (not among its cards) where the head is far enough away.
    far = np.linalg.norm(towards, axis=1) > 2 * radii
    assert far.any() and np.allclose(moved[far], radii[far])
    # Classes without cards are left alone (hidden by the markers).
    centres[4] = np.nan
    assert np.all(LabelPlacement.at(place)(centres, None)[4] == 0.0)


def test_a_vr_session_places_the_labels_and_gives_the_desktop_row_back():
    _, backend, app = small_cards_app()
    try:
        markers = app.world.centroid_markers
        app.step()
        row = [float(s.get_z(app.render)) for s in markers.markers]
        session = attach(app, backend)
        app.step()
        assert isinstance(markers.placement, LabelPlacement)
        floor, scale = float(session.controls.rig.position[2]), session.controls.rig.scale
        for k, sphere in enumerate(markers.markers):
            if markers.spheres[k].is_hidden():
                continue
            height = (sphere.get_z(app.render) - floor) / scale
            assert MARKER_LOW - 1e-6 <= height <= MARKER_HIGH + 1e-6
        session.stop()
        app.step()
        assert markers.placement is None
        assert [float(s.get_z(app.render)) for s in markers.markers] == pytest.approx(row)
    finally:
        close_app(app)
