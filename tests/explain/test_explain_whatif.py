"""What-if inpainting: exactly the masked pixels change; strokes, undo and reset; re-classification."""

import numpy as np
import pytest

from game.explain.whatif import WhatIfEditor, inpaint, rect_mask, stamp_segment, whatif


def _scene_with_patch(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ramp with a saturated square no fill from the surroundings could reproduce."""
    h = w = 24
    ramp = np.tile(np.linspace(40, 160, w, dtype=np.float32), (h, 1))
    img = np.repeat(ramp[:, :, None], channels, axis=2).astype(np.uint8)
    mask = rect_mask((h, w), 8, 6, 15, 13)
    img[mask] = 255 if channels == 1 else (255, 0, 255)[:channels]
    return img, mask


@pytest.mark.parametrize("method", ["telea", "ns"])
@pytest.mark.parametrize("channels", [1, 3])
def test_inpainting_changes_exactly_the_masked_pixels(method, channels):
    img, mask = _scene_with_patch(channels)
    out = inpaint(img, mask, method)
    assert out.shape == img.shape and out.dtype == np.uint8
    changed = (out != img).any(axis=2)
    np.testing.assert_array_equal(changed, mask)
    # The fill comes from the surroundings: inside the ramp's range, not the patch's colour.
    assert out[mask].max() <= 170 and out[mask].min() >= 30


def test_empty_mask_is_a_copy_and_bad_masks_are_refused():
    img, _ = _scene_with_patch(3)
    out = inpaint(img, np.zeros(img.shape[:2], bool))
    assert out is not img and np.array_equal(out, img)
    with pytest.raises(ValueError, match="does not match"):
        inpaint(img, np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="telea"):
        inpaint(img, np.zeros(img.shape[:2], bool), method="blur")
    with pytest.raises(ValueError, match="x0 < x1"):
        rect_mask((8, 8), 4, 0, 4, 8)
    with pytest.raises(ValueError):
        rect_mask((8, 8), 0, 0, 9, 8)


def test_stamped_stroke_is_continuous_and_round():
    mask = np.zeros((32, 32), bool)
    stamp_segment(mask, (2.5, 10.5), (29.5, 10.5), radius=2.0)
    assert mask[10, 2:30].all()  # no gaps along the stroke
    assert mask[8:13, 15].all() and not mask[7, 15] and not mask[14, 15]  # 2 px each side
    assert not mask[:8, :2].any() and not mask[:7].any() and not mask[14:].any()


def test_editor_strokes_undo_and_reset():
    img, _ = _scene_with_patch(1)
    ed = WhatIfEditor(img, radius=1.5)
    assert not ed.mask.any() and ed.n_strokes == 0
    ed.begin(3, 3)
    ed.drag(10, 3)
    ed.end()
    first = ed.mask.copy()
    ed.begin(3, 20)
    ed.drag(3, 12)
    ed.end()
    assert ed.n_strokes == 2 and ed.mask.sum() > first.sum()
    v = ed.version
    assert ed.undo()
    np.testing.assert_array_equal(ed.mask, first)
    assert ed.version > v
    ed.begin(20, 20)  # undo while drawing drops just the stroke in progress
    assert ed.undo()
    np.testing.assert_array_equal(ed.mask, first)
    ed.reset()
    assert not ed.mask.any() and not ed.undo()
    ed.begin(5, 5)
    ed.end()
    edited = ed.edited()
    np.testing.assert_array_equal((edited != img).any(axis=2), ed.mask & (edited != img).any(axis=2))
    image, mask, method, version = ed.snapshot()
    assert method == "telea" and version == ed.version and mask is not ed.mask


def test_whatif_reclassifies_the_edited_image(loaded_digits):
    net = loaded_digits.network
    image = loaded_digits.workspace.images[10]
    mask = rect_mask(image.shape[:2], 0, 0, 8, 4)
    res = whatif(net, image, mask)
    classes, scores = net.classify(np.stack([image, res.edited]))
    np.testing.assert_array_equal(res.before_classes, classes[0])
    np.testing.assert_array_equal(res.after_classes, classes[1])
    np.testing.assert_allclose(res.after_scores, scores[1], rtol=1e-5)
    assert not np.array_equal(res.edited, image)
    # With the known top-5 passed in, only the edited image is classified; same answer.
    res2 = whatif(net, image, mask, before=(classes[0], scores[0]))
    np.testing.assert_array_equal(res2.after_classes, res.after_classes)
    text = res.table(loaded_digits.workspace.class_names)
    assert text.count("\n") == 5 and "before" in text and "after" in text


def test_kept_edit_becomes_a_card_near_its_neighbours(fresh_digits):
    from game.explain.keep import new_card_event

    ws = fresh_digits.workspace
    net = fresh_digits.network
    image = ws.images[42]
    edited = whatif(net, image, rect_mask(image.shape[:2], 0, 6, 8, 8)).edited
    event = new_card_event(
        net, edited, ws.features, ws.positions, label=int(ws.labels[42]), source="what-if of #42"
    )
    n = ws.n_cards
    ws.apply(event)
    assert ws.n_cards == n + 1 and np.array_equal(ws.images[-1], edited)
    assert ws.labels[-1] == ws.labels[42] and ws.sources[-1] == "what-if of #42"
    # Placed among cards whose features resemble it: within the cloud, near its nearest neighbour.
    d = np.linalg.norm(ws.features[:n] - ws.features[-1], axis=1)
    nearest = ws.positions[int(np.argmin(d))]
    spread = np.linalg.norm(ws.positions[:n] - ws.positions[:n].mean(0), axis=1).mean()
    assert np.linalg.norm(ws.positions[-1] - nearest) < spread
