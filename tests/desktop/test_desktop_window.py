"""The game in a real X window, driven by real mouse and key events, checked from outside.

``latent-reach run --no-menu`` opens on a virtual display (Xvfb); xdotool moves the pointer and
presses buttons and keys through the X server (XTEST), exactly as a person's mouse would; the
outcome is read from the session file the game records, from screenshots of the screen, and from
``$LATENT_REACH_VIEW_REPORT`` (where the app draws each cluster and card: that is how a test
knows where to press, as a person knows by looking).
"""

from __future__ import annotations

import time

import numpy as np
from desktop_helpers import (
    GameProcess,
    bright_pixels,
    changed_pixels,
    focus,
    quit_and_time,
    ready,
    wait_for,
)

DRAG_STEPS = 14
EMPTY_PX = (20, 20)  # window pixel over nothing (top-left corner: no card, no panel, no button)
STEP_PAUSE_S = 0.05  # between pointer moves: a quick hand, several frames per step on llvmpipe


def choose_drag(report: dict, margin: float = 40.0) -> tuple[dict, dict, dict]:
    """(card, its class, another class) for a drag from a cluster onto another as drawn.

    The target is the class whose drawn centroid lies farthest (in pixels) from every other
    class's, so the pointer over it is over that cluster and no other (a colourful one first, so
    its preview text can be told from the cards by colour); the source is the nearest
    other class with a card a press would pick, so the drag is short but crosses empty space.
    """
    w, h = report["window"]["width"], report["window"]["height"]
    classes = [c for c in report["classes"] if c.get("centroid_px")]
    pts = {c["class"]: np.array(c["centroid_px"]) for c in classes}

    def inside(p) -> bool:
        return margin <= p[0] <= w - margin and margin <= p[1] <= h - 2 * margin

    def separation(c: dict) -> float:
        p = pts[c["class"]]
        return min(float(np.linalg.norm(p - q)) for k, q in pts.items() if k != c["class"])

    def colourful(c: dict) -> bool:
        # A grey class's preview text is the light grey of the digit cards: the test that finds
        # the text by its colour cannot tell it from the cards (it failed on class 7's grey).
        rgb = c.get("colour") or (0, 0, 0)
        return max(rgb) - min(rgb) >= 60

    targets = sorted(
        (c for c in classes if inside(pts[c["class"]])),
        key=lambda c: (colourful(c), separation(c)),
        reverse=True,
    )
    assert targets, f"no class centroid drawn inside the window: {report['classes']}"
    for target in targets:
        p = pts[target["class"]]
        sources = [
            c
            for c in classes
            if c["class"] != target["class"]
            and c["pickable"]
            and inside(c["pickable"][0]["px"])
            and np.linalg.norm(np.array(c["pickable"][0]["px"]) - p) > 60
        ]
        if sources:
            source = min(sources, key=lambda c: float(np.linalg.norm(np.array(c["pickable"][0]["px"]) - p)))
            return source["pickable"][0], source, target
    raise AssertionError("no class with a pickable card apart from the target")


def drag(game: GameProcess, card: int, start, end, steps: int = DRAG_STEPS) -> None:
    """Press on ``card`` at ``start`` and move (button held) to ``end`` in ``steps`` (window pixels).

    Each phase waits until the app has seen it, as a person waits for the highlight: the app reads
    the pointer once per frame, so on a slow frame a press and the next move would otherwise
    arrive together (and the press be taken where the pointer already went).
    """
    x = game.x
    if (game.report() or {}).get("selected") == card:  # so that the press can be seen selecting it
        x.move(*game.screen(EMPTY_PX))
        x.click()
        game.wait_report("the selection cleared", lambda r: r.get("selected") != card)
    x.move(*game.screen(start))
    game.wait_report(f"card {card} lit under the pointer", lambda r: r.get("hovered") == card)
    x.press(1)
    game.wait_report(f"card {card} selected by the press", lambda r: r.get("selected") == card)
    s, e = np.asarray(start, float), np.asarray(end, float)
    for f in np.linspace(0.0, 1.0, steps + 1)[1:]:
        x.move(*game.screen(s + f * (e - s)))
        time.sleep(STEP_PAUSE_S)
    game.wait_report(f"card {card} in the hand", lambda r: (r["carried"] or {}).get("card") == card)

    # The carried card stays under the cursor (in depth it may go into a cluster): once it is drawn
    # at the pointer, the app has seen the last move.
    def under_pointer(r: dict) -> bool:
        carried = r["carried"] or {}
        px = carried.get("px")
        return (
            carried.get("card") == card and px is not None and float(np.linalg.norm(np.subtract(px, e))) <= 3
        )

    try:
        game.wait_report(f"card {card} drawn under the pointer at {tuple(e)}", under_pointer, timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last report: carried {(game.report() or {}).get('carried')}") from None


def colour_pixels(img: np.ndarray, box, rgb, tol: int = 40, tinted: bool = False) -> int:
    """Pixels within ``tol`` of ``rgb`` in ``box``. ``tinted``: only those about as colourful as
    ``rgb`` too, since a pale tint is also within ``tol`` of the light grey of the digit cards."""
    x0, y0, x1, y1 = (int(v) for v in box)
    region = img[max(0, y0) : y1, max(0, x0) : x1].astype(np.int16)
    near = np.abs(region - np.asarray(rgb, np.int16)).max(axis=2) <= tol
    if tinted:
        chroma = region.max(axis=2) - region.min(axis=2)
        near &= chroma >= (max(rgb) - min(rgb)) // 2
    return int(near.sum())


def test_h_shows_and_hides_the_help(game, shoot):
    game.wait_report("the first view", ready, timeout=60)
    focus(game)
    game.settled_screen()
    before = shoot(game, "before")
    h, w = before.shape[:2]
    game.x.key("h")

    def help_drawn():
        img = game.x.screenshot()
        changed = changed_pixels(before, img)
        return (img, changed) if changed.mean() > 0.02 else None

    shown, changed = wait_for("the help overlay to appear", help_drawn, timeout=20, interval=0.25)
    shown = shoot(game, "help")
    ys, xs = np.nonzero(changed_pixels(before, shown))
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    # A block of text: wide and tall, with many more bright (white text) pixels than before.
    assert box[2] - box[0] > 0.25 * w and box[3] - box[1] > 0.15 * h, box
    assert bright_pixels(shown, box) > bright_pixels(before, box) + 1500, box

    game.x.key("h")

    def help_gone():
        img = game.x.screenshot()
        return img if bright_pixels(img, box) < bright_pixels(before, box) + 300 else None

    wait_for("the help overlay to go", help_gone, timeout=20, interval=0.25)
    shoot(game, "hidden")


def test_escape_during_a_drag_cancels_it(game, shoot):
    game.settled_screen()
    report = game.wait_report("the first view", ready, timeout=60)
    card, source, target = choose_drag(report)
    c = card["card"]
    start_seq = max((e["seq"] for e in game.events()), default=0)
    drag(game, c, card["px"], target["centroid_px"])
    shoot(game, "carrying")
    game.x.key("Escape")
    game.wait_report("the hand to be empty after Esc", lambda r: r["carried"] is None)
    game.x.release(1)
    cancel = game.wait_event(f"a cancel of card {c}", lambda e: e["kind"] == "cancel" and e["card"] == c)
    assert cancel["seq"] > start_seq
    # The card went back where it was grabbed.
    grab = [e for e in game.events(("grab",)) if e["card"] == c and e["seq"] > start_seq][-1]
    assert np.allclose(cancel["position"], grab["position"], atol=1e-4)
    # A click on empty space afterwards is recorded after anything the release could have caused:
    # once it is in the file, no drop or edit of the card came before it.
    game.x.move(*game.screen(EMPTY_PX))
    game.wait_report("nothing lit under the pointer", lambda r: r.get("hovered") == -1)
    game.x.click()
    sentinel = game.wait_event(
        "the click on empty space", lambda e: e["kind"] == "select" and e["seq"] > cancel["seq"]
    )
    after = [e for e in game.events(("drop", "edit")) if start_seq < e["seq"] <= sentinel["seq"]]
    assert after == [], after
    shoot(game, "cancelled")


def test_card_dragged_onto_another_cluster_as_drawn_is_relabelled(game, shoot):
    game.settled_screen()
    report = game.wait_report("the first view", ready, timeout=60)
    card, source, target = choose_drag(report)
    c, a, b = card["card"], source["class"], target["class"]
    before = shoot(game, "before")
    drag(game, c, card["px"], target["centroid_px"])

    # Before release the world says what a release will do: relabel to the cluster under the cursor.
    def previewing(r: dict) -> bool:
        p = r.get("preview")
        return p is not None and p["card"] == c and (p["action"], p["new_label"]) == ("relabel", b)

    try:
        r = game.wait_report(f"the preview 'relabel {a} -> {b}'", previewing, timeout=20)
    except AssertionError as exc:
        last = game.report() or {}
        shoot(game, "no-preview")
        raise AssertionError(
            f"{exc}; last preview: {last.get('preview')}, carried: {last.get('carried')}"
        ) from None
    # It holds while the pointer stays: once nothing on screen changes, it still says the same.
    game.wait_quiet(1.0)
    r = game.report()
    assert previewing(r), (
        f"the preview changed with the pointer still over class {b}",
        r["preview"],
        r["carried"],
    )
    carrying = shoot(game, "carrying")
    preview = r["preview"]
    assert preview["text"].startswith("release: relabel"), preview
    # The preview text at the bottom, in the target's colour, was not there before the drag.
    lx, ly = preview["label_px"]
    text_box = (lx - 320, ly - 40, lx + 320, ly + 20)
    colour, text_colour = target["colour"], preview["text_colour"]  # the text: a light tint of it
    text_now = colour_pixels(carrying, text_box, text_colour, tinted=True)
    text_before = colour_pixels(before, text_box, text_colour, tinted=True)
    assert text_now > text_before + 40, (preview, text_colour, text_now, text_before)
    # The target is lit: its ring, in its colour, around its centroid as drawn.
    tx, ty = preview["ring_px"]
    ring_box = (tx - 200, ty - 200, tx + 200, ty + 200)
    changed = changed_pixels(before, carrying)
    x0, y0, x1, y1 = (int(max(0, v)) for v in ring_box)
    lit = colour_pixels(carrying, ring_box, colour) - colour_pixels(before, ring_box, colour)
    assert changed[y0:y1, x0:x1].sum() > 100 and lit > 30, (changed[y0:y1, x0:x1].sum(), lit)

    game.x.release(1)
    edit = game.wait_event(f"an edit of card {c}", lambda e: e["kind"] == "edit" and e["card"] == c)
    drop = [e for e in game.events(("drop",)) if e["card"] == c][-1]
    assert (edit["action"], edit["old_label"], edit["new_label"]) == ("relabel", a, b), (edit, drop)
    # Released: the preview goes, on screen too.
    game.wait_report("the preview to go after the release", lambda r: r["preview"] is None)

    def text_gone():
        img = game.x.screenshot()
        return (
            img
            if colour_pixels(img, text_box, text_colour) <= colour_pixels(before, text_box, text_colour) + 10
            else None
        )

    wait_for("the preview text to leave the screen", text_gone, timeout=20, interval=0.25)
    shoot(game, "released")


def test_ctrl_q_closes_the_window_and_ends_the_process(game, shoot):
    """Last here: it quits the shared game (a test after it would get a new one)."""
    focus(game)
    quit_and_time(game, lambda: game.x.key("ctrl+q"), shoot, "Ctrl+Q")
