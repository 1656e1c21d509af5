"""Offscreen rendering through EGL: cards in class colours, selection, panel, tweens, HUD.

One app (ShowBase) for the whole module: Panda3D keeps global state per ShowBase, and opening a
window on software OpenGL costs about a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from game.core import events as ev
from game.core.workspace import CARD_PENDING

SIZE = (640, 400)


@pytest.fixture(scope="module")
def app(loaded_digits):
    from game.app import LatentReachApp
    from game.pipeline import LoadedScene

    src = loaded_digits
    loaded = LoadedScene(
        src.scene, src.dataset, src.network, src.projector, src.layout, src.workspace.copy(), {}
    )
    a = LatentReachApp(loaded, offscreen=True, size=SIZE, controls=False, multisamples=0)
    a.step(0.0)
    yield a
    a.destroy()


def colour_pixels(img: np.ndarray, rgb, tol: int = 12) -> int:
    target = np.asarray(rgb, dtype=np.int16)
    return int((np.abs(img.astype(np.int16) - target).max(axis=2) <= tol).sum())


def test_cards_visible_in_class_colours(app):
    img = app.pixels()
    assert img.shape == (SIZE[1], SIZE[0], 3)
    colours = (np.asarray(app.world.colours[:, :3]) * 255).round().astype(int)
    counts = [colour_pixels(img, c) for c in colours]
    # Every class's frame colour shows up; most classes show plenty of it.
    assert min(counts) > 0, counts
    assert sum(c > 40 for c in counts) >= 8, counts


def test_one_draw_call_for_all_cards(app):
    from panda3d.core import GeomNode

    cards = app.world.cards
    assert cards.draw_calls == 1
    geom_nodes = cards.root.find_all_matches("**/+GeomNode")
    assert geom_nodes.get_num_paths() == 1
    assert isinstance(geom_nodes[0].node(), GeomNode)
    assert geom_nodes[0].get_instance_count() == app.workspace.n_cards


def test_selected_card_highlighted_and_panel_shows_top5(app):
    ws = app.workspace
    card = int(np.flatnonzero(~ws.is_train)[3])
    x, y = (int(v) for v in app.project(app.world.positions[card]))
    before = app.pixels()
    window = (slice(max(0, y - 14), y + 15), slice(max(0, x - 14), x + 15))
    white_before = colour_pixels(before[window], (255, 255, 255), tol=3)
    ws.post(ev.CardSelected(card=card))
    app.step(0.0)
    after = app.pixels()
    white_after = colour_pixels(after[window], (255, 255, 255), tol=3)
    assert white_after > white_before + 20, (white_before, white_after)
    panel = app.world.panel
    assert panel.card == card and not panel.root.is_hidden()
    names = [row[0].get_text() for row in panel.rows]
    assert names == [ws.class_names[k] for k in ws.top5_classes[card]]
    # The top-1 bar is drawn in its class colour on the right-hand panel.
    top1 = int(ws.top5_classes[card][0])
    rgb = (np.asarray(app.world.colours[top1, :3]) * 255).round().astype(int)
    right = after[:, SIZE[0] // 2 :]
    assert colour_pixels(right, rgb, tol=10) > 100
    # The bar length follows the score.
    bar = panel.bar_nodes[0]
    assert bar.get_sx() == pytest.approx(0.5 * float(ws.top5_scores[card][0]), rel=1e-3)
    ws.post(ev.CardSelected(card=-1))
    app.step(0.0)
    assert panel.root.is_hidden()


def test_positions_changed_tweens_all_cards(app):
    ws = app.workspace
    start = app.world.positions.copy()
    target = ws.positions + np.array([0.0, 0.0, 0.5], np.float32)
    duration = app.world.config.tween_seconds
    ws.post(ev.PositionsChanged(positions=target, reason="test"))
    app.step(0.0)  # applies the event; tween starts at this frame's time
    app.step(duration / 2)
    np.testing.assert_allclose(app.world.positions, (start + target) / 2, atol=1e-4)
    app.step(duration)
    np.testing.assert_allclose(app.world.positions, target, atol=1e-6)
    # The GPU buffer holds the new positions too.
    data = app.world.cards._data()
    np.testing.assert_allclose(data[:, 0, :3], target, atol=1e-6)
    ws.post(ev.PositionsChanged(positions=start, reason="back"))
    app.step(0.0)
    app.step(duration + 0.1)


def test_drop_marks_card_pending_and_hud_reacts(app):
    from game.controls.hand import Hand

    ws = app.workspace
    world = app.world
    hand = Hand(ws, positions=lambda: world.positions, card_size=world.config.card_size, name="test")
    card = 7
    p = world.positions[card]
    hand.touch(p)
    assert hand.hovered == card
    hand.grab()
    target = p + np.array([0.3, 0, 0.2], np.float32)
    hand.move_to(target)
    hand.update(app.now)
    app.step(0.0)
    np.testing.assert_allclose(world.positions[card], target, atol=1e-6)
    drop = hand.release()
    app.step(0.0)
    assert drop is not None and ws.card_state[card] == CARD_PENDING
    assert world.cards._data()[card, 1, 3] == CARD_PENDING
    ws.post(ev.JobStatus(job_id=1, state="running", progress=0.4))
    ws.post(ev.Message(text="hello world", level="warning"))
    app.step(0.0)
    assert world.hud.status_text == "fine-tune running 40%"
    assert world.hud.message_text == "hello world"
    app.step(10.0)
    assert world.hud.message_text == ""


def test_status_texts_add_no_glyphs_to_the_font_pages(app):
    """The world preloads every glyph the game's texts use: showing any of them later changes no
    font page texture, whose re-upload would stall a software-GL frame by 50-90 ms (the longest
    frame of a session used to be the first "fine-tune running 0%" status, as the first job began)."""
    from panda3d.core import TextNode

    from game.world.label import GAME_GLYPHS

    font = TextNode.get_default_font()

    def pages() -> list[tuple[int, str]]:
        return [
            (font.get_page(i).get_image_modified().get_seq(), font.get_page(i).get_name())
            for i in range(font.get_num_pages())
        ]

    before = pages()
    assert before, "the world drew no text"
    ws = app.workspace
    ws.post(ev.JobStatus(job_id=3, state="running", message="re-layout", progress=0.73))
    app.step(0.0)
    assert app.world.hud.status_text == "fine-tune running 73%: re-layout"
    hud = app.world.hud
    for text in (GAME_GLYPHS, " ".join(ws.class_names), "model v19: 3 steps, edits learned (2/2 flipped)"):
        hud.message.set_text(text)
        hud.message_path.show()
        app.step(0.0)
    hud.message_path.hide()
    assert pages() == before


def test_card_added_grows_the_field_without_new_draw_calls(app):
    ws = app.workspace
    n = ws.n_cards
    ws.post(
        ev.CardAdded(
            image=ws.images[0],
            label=3,
            top5_classes=(3, 1, 2, 4, 5),
            top5_scores=(0.9, 0.05, 0.03, 0.01, 0.01),
            feature=ws.features[0],
            position=(0.0, 0.0, 1.2),
            source="what-if",
        )
    )
    app.step(0.0)
    assert len(app.world.positions) == n + 1
    assert app.world.cards.draw_calls == 1
    assert app.world.cards.root.find("**/+GeomNode").get_instance_count() == n + 1


def test_screenshot_writes_png(app, tmp_path):
    out = app.screenshot(tmp_path / "shot.png")
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == SIZE


def test_menu_settings_change_card_size(app):
    from game.assembly import AppViewport, scene_parts
    from game.controls.menu import MenuController

    menu = MenuController(
        AppViewport(app), scene_parts(app), app.worker, switch_scene=app.switch_scene, quit=lambda: None
    )
    try:
        menu.show_page("settings")
        menu.show()
        size = app.world.config.card_size
        menu.index = 1  # card size
        menu.adjust(+1)
        assert app.world.config.card_size == pytest.approx(size * 1.2)
        menu.adjust(-1)
        assert app.world.config.card_size == pytest.approx(size)
        # A ray through the screen centre hits the menu panel placed in front of the camera.
        origin, direction = app.mouse_ray(0.0, 0.0)
        assert menu.item_at(origin, direction) in range(-1, len(menu.items))
        menu.show_page("start")
        texts = [item.text() for item in menu.items]
        assert any(t.startswith("Scene: Handwritten digits") for t in texts)
        app.step(0.0)
    finally:
        menu.hide()
        menu.destroy()


def test_desktop_drag_on_camera_plane_and_keys(app):
    from game.assembly import AppViewport, scene_parts
    from game.controls.desktop import DesktopControls

    ws = app.workspace
    controls = DesktopControls(AppViewport(app), scene_parts(app))
    seen: list[ev.Event] = []

    def listener(e, w):
        seen.append(e)

    ws.subscribe(listener)
    try:
        aim = int(np.flatnonzero(ws.card_state == 0)[50])
        x, y = app.project(app.world.positions[aim])
        w, h = SIZE
        mouse = (2 * x / w - 1, 1 - 2 * y / h)
        controls.pointer(mouse)
        card = controls.hand.hovered  # the aimed card or one in front of it
        assert card >= 0 and ws.card_state[card] == 0
        cam = np.array(app.camera.get_pos(app.render), dtype=np.float32)
        assert (
            np.linalg.norm(app.world.positions[card] - cam)
            <= np.linalg.norm(app.world.positions[aim] - cam) + 1e-4
        )
        controls._press, controls._press_card = mouse, card
        controls.hand.select()
        start = app.world.positions[card].copy()
        depth0 = float(np.dot(start - cam, controls._forward()))
        controls.pointer((mouse[0] + 0.1, mouse[1]))  # past the drag threshold: grab
        # Over empty space (no cluster under the cursor: the readable world fills most of the
        # view, so look for such a point) the card stays on the plane facing the camera.
        empty = [
            (mx, my)
            for my in np.linspace(0.9, -0.9, 19)
            for mx in np.linspace(-0.9, 0.9, 19)
            if controls.judge.cluster_on_ray(ws, card, *app.mouse_ray(mx, my)) is None
        ]
        assert empty
        target = min(empty, key=lambda m: np.hypot(m[0] - mouse[0], m[1] - mouse[1]))
        controls.pointer(target)
        controls.update(app.now)
        app.step(0.0)
        moved = app.world.positions[card]
        # Carried on the plane facing the camera: same depth, new place.
        assert float(np.dot(moved - cam, controls._forward())) == pytest.approx(depth0, abs=1e-3)
        assert np.linalg.norm(moved - start) > 0.05
        controls._on_wheel(+1)  # push away while dragging
        controls.update(app.now)
        app.step(0.0)
        assert float(np.dot(app.world.positions[card] - cam, controls._forward())) > depth0 * 1.05
        controls._on_release()
        controls.undo()
        app.step(0.0)
        kinds = [type(e) for e in seen]
        for k in (ev.CardSelected, ev.CardGrabbed, ev.CardMoved, ev.CardDropped, ev.UndoRequested):
            assert k in kinds, kinds
        assert ws.card_state[card] == CARD_PENDING
        # Esc during a drag cancels: the card goes back.
        controls.pointer(mouse)
        other = controls.hand.hovered
        if other >= 0:
            before = app.world.positions[other].copy()
            controls._press, controls._press_card = mouse, other
            controls.pointer((mouse[0] + 0.1, mouse[1]))
            controls.update(app.now)
            app.step(0.0)
            controls._on_escape()
            app.step(0.0)
            np.testing.assert_allclose(app.world.positions[other], before, atol=1e-5)
        controls.frame_selection()
        assert app.project(app.world.positions[ws.selected]) is not None
    finally:
        ws.unsubscribe(listener)
        controls.destroy()
        app.frame_all()
