"""The worker-side service and the picture helpers."""

import numpy as np
import pytest
from synthetic import busy_image, quadrant_fraction, quadrant_network

from game.core.worker import Worker
from game.explain.render import heat_rgba, overlay, side_by_side, upscale
from game.explain.service import ExplainService
from game.explain.whatif import rect_mask


@pytest.fixture
def worker():
    w = Worker(torch_threads=1)
    yield w
    w.close()


def test_service_delivers_maps_panels_and_class_models_on_poll(worker):
    net = quadrant_network(32, "bl")
    image = busy_image(32)
    service = ExplainService(worker)
    got = []
    service.request_map(net, image, "gradcam", got.append, version=1)
    service.request_panel(net, image, ["saliency", "occlusion"], got.append, version=1)
    service.request_class_model(net, 2, (32, 32, 1), got.append, version=1)
    assert worker.wait_idle(60)
    assert got == []  # nothing arrives before the main thread polls
    worker.poll()
    m, p, c = got
    assert m.overlay.shape == (32, 32, 4) and m.heat_layer.shape == (32, 32, 4)
    assert quadrant_fraction(m.explanation.heat, "bl") > 0.8
    assert [e.method for e in p.explanations] == ["saliency", "occlusion"]
    assert p.panel.shape[1] > 2.5 * p.panel.shape[0]  # three tiles in a row (plus a title strip)
    assert c.target == 2 and c.image.shape == (32, 32, 1)
    # One explainer copy for the same network and version, a new one for a new version.
    first = service.explainer_for(net, 1)
    assert service.explainer_for(net, 1) is first and service.explainer_for(net, 2) is not first


def test_newer_whatif_requests_supersede_older_ones(worker):
    net = quadrant_network(32, "tl")
    image = busy_image(32)
    service = ExplainService(worker)
    got = []
    for x1 in range(4, 20, 2):
        service.request_whatif(net, image, rect_mask((32, 32), 0, 0, x1, 8), got.append)
    worker.wait_idle(60)
    worker.poll()
    assert len(got) == 1 and got[0].mask.sum() == 18 * 8


def test_errors_reach_on_error_and_cancel_drops_results(worker):
    net = quadrant_network(32, "tl")
    service = ExplainService(worker)
    errors, got = [], []
    service.request_map(net, busy_image(32), "saliency", got.append, target=99, on_error=errors.append)
    worker.wait_idle(60)
    worker.poll()
    assert got == [] and "out of range" in str(errors[0])
    service.request_map(net, busy_image(32), "saliency", got.append)
    service.cancel("map")
    worker.wait_idle(60)
    worker.poll()
    assert got == []


def test_overlay_colours_hot_pixels_red_and_keeps_cold_ones_close_to_the_image():
    image = np.full((8, 8, 1), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[2, 3] = 1.0
    rgba = overlay(image, heat)
    assert rgba.shape == (8, 8, 4) and (rgba[:, :, 3] == 255).all()
    r, g, b = rgba[2, 3, :3].astype(int)
    assert r > g + 50 and r > b + 50  # JET tops out at dark red
    assert abs(int(rgba[7, 7, 0]) - 100) < 40
    layer = heat_rgba(heat)
    assert layer[2, 3, 3] > 150 and layer[0, 0, 3] == 0


def test_upscale_and_side_by_side():
    tile = np.zeros((8, 8, 4), np.uint8)
    tile[0, 0] = (255, 0, 0, 255)
    big = upscale(tile, 256)
    assert big.shape == (256, 256, 4) and (big[:32, :32, 0] == 255).all() and big[32, 32, 0] == 0
    panel = side_by_side(
        [("A", tile), ("B", np.zeros((20, 10, 3), np.uint8))], tile_side=64, gap=4, title_height=16
    )
    assert panel.shape == (16 + 64 + 8, 2 * 64 + 3 * 4, 4)
    assert (panel[4 + 16, 4, :3] == (255, 0, 0)).all()
