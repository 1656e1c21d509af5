"""The drop preview in VR: a controller carrying a card into another cluster sees what a release
does in the headset (the simulated backend's mirror), and the controller ticks when the target
changes; the release is the relabel the preview announced."""

from __future__ import annotations

import numpy as np
from vr_helpers import close_app, make_app, synthetic_loaded

from game.controls.vr_controls import Rig
from game.core import events as ev
from game.vr.simulated import SimulatedBackend


def test_controller_drag_shows_the_preview_in_the_mirror_and_ticks():
    from game.assembly import assemble_game

    loaded = synthetic_loaded(spread=0.3)
    ws = loaded.workspace
    card = 0  # class 0, around x = -0.5
    start = ws.positions[card].astype(float)
    target_centre = ws.positions[ws.labels == 1].mean(axis=0).astype(float)
    tip = 0.06  # the controller touches 6 cm ahead of its origin (+Y)
    steps = [
        {"head": {"pos": [0.0, -1.5, 1.7]}, "right": {"pos": (start - [0, tip, 0]).tolist()}},
        {"right": {"grip": True}},
        {"frames": 6, "lerp": True, "right": {"pos": (target_centre - [0, tip, 0]).tolist()}},
        {"frames": 4},  # held still inside class 1
        {"right": {"grip": False}},
        {"frames": 2},
    ]
    backend = SimulatedBackend(steps, size=(160, 120))
    backend.start()
    app = make_app(loaded, size=(160, 120))
    try:
        systems = assemble_game(app, vr_backend=backend)
        session = systems.vr
        assert session is not None
        session.controls.rig = Rig(np.zeros(3))  # the script is written in world coordinates
        session.stereo.set_rig(session.controls.rig.matrix())
        seen: list[ev.Event] = []
        ws.subscribe(lambda e, _ws: seen.append(e))
        preview = app.drop_preview
        held_frames = backend.length - 3  # the last frame before the release
        for _ in range(held_frames):
            app.step()
        assert preview.visible and preview.in_world_text
        assert preview.edit is not None and (preview.edit.action, preview.edit.new_label) == ("relabel", 1)
        assert preview.text.startswith("release: relabel class0 -> class1")
        assert not preview.world_label.root.is_hidden()
        # In the mirror: the same frame with and without the preview differs in class 1's colour.
        with_preview = app.pixels().astype(int)
        preview.root.hide()
        app.step(0.0)
        without = app.pixels().astype(int)
        preview.root.show()
        changed = np.abs(with_preview - without).sum(axis=2) > 30
        assert changed.sum() > 20
        for _ in range(backend.length - held_frames - 1):
            app.step()
        session.stop()
    finally:
        close_app(app)
    ticks = [(h, s) for _, h, s in backend.haptics if s == session.controls.config.tick_seconds]
    assert ticks and all(h == "right" for h, _ in ticks)  # the target changed under the right hand
    edits = [e for e in seen if isinstance(e, ev.EditQueued)]
    drops = [e for e in seen if isinstance(e, ev.CardDropped)]
    assert drops and drops[-1].card == card
    if edits:  # a fine-tune controller (learning=True) turns the drop into the edit it previewed
        assert (edits[-1].action, edits[-1].new_label) == ("relabel", 1)
    from game.learning.edits import DropJudge

    judged = DropJudge(loaded.scene.learning).judge(ws, card, drops[-1].position)
    assert (judged.action, judged.new_label) == ("relabel", 1)
