"""A tiny synthetic scene and an offscreen app for the VR tests (no network, no t-SNE)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from game.core.scene import Scene
from game.core.workspace import Workspace


def synthetic_loaded(n: int = 40, classes: int = 3, seed: int = 0, spread: float = 0.6) -> SimpleNamespace:
    """Cards in a cloud around (0, 0, 1.5): in view of a head at (0, -2.5, 1.7) looking +Y."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = np.array([[-0.5, 0.0, 1.5], [0.5, 0.0, 1.5], [0.0, 0.3, 1.9]])[:classes]
    positions = centres[labels] + rng.normal(scale=spread / 4, size=(n, 3))
    images = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    top5 = np.stack([(labels + k) % classes for k in range(classes)], axis=1).astype(np.int64)
    ws = Workspace(
        images=images,
        labels=labels,
        class_names=[f"class{i}" for i in range(classes)],
        top5_classes=top5,
        top5_scores=np.full((n, classes), 1.0 / classes, dtype=np.float32),
        features=rng.normal(size=(n, 4)).astype(np.float32),
        positions=positions.astype(np.float32),
        is_train=np.ones(n, dtype=bool),
        sources=[f"img{i}.png" for i in range(n)],
    )
    scene = Scene()
    scene.world.card_size = 0.12
    return SimpleNamespace(scene=scene, workspace=ws)


def make_app(loaded, size=(160, 120)):
    from game.app import LatentReachApp

    return LatentReachApp(loaded, offscreen=True, size=size, controls=False, multisamples=0)


def texture_pixels(app, tex) -> np.ndarray:
    """An eye texture's pixels (H, W, 3), copied back from the GPU."""
    assert app.graphics_engine.extract_texture_data(tex, app.win.get_gsg())
    h, w = tex.get_y_size(), tex.get_x_size()
    data = np.frombuffer(bytes(tex.get_ram_image_as("RGB")), dtype=np.uint8)
    return data.reshape(h, w, 3)[::-1].copy()


def close_app(app) -> None:
    """Destroy an app so that the next test can open another (the task manager is global)."""
    app.task_mgr.remove("latent-reach-frame")
    app.destroy()
