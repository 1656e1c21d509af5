"""VR starts inside the cloud at room scale: cards readable at arm's length, clusters near."""

from __future__ import annotations

import math

import numpy as np
from vr_helpers import close_app, make_app, synthetic_loaded

from game.vr.launch import attach
from game.vr.placement import CLEARANCE, READABLE, STEP, readability, room_scale_start
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


def test_a_vr_session_starts_at_the_room_scale_place():
    loaded = synthetic_loaded(n=60)
    loaded.scene.world.card_size = 0.05
    backend = SimulatedBackend([{"head": {"pos": [0.0, 0.0, 1.6]}, "frames": 2}], size=(48, 32))
    backend.start()
    app = make_app(loaded)
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
