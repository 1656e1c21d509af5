"""Screenshots of the explaining overlays on the default scene (docs/img/overlays_after_*.png).

    .venv/bin/python scripts/overlay_shots.py OUT_DIR

Offscreen at 1280x800: the suspect markers and their legend (default view and close up, after N
put the first suspect's reason on the panel), a Grad-CAM heat map beside its card, a what-if
stroke that changes the prediction (top-5 before | after), the class model of a card predicted
other than its label, the help, and the start menu with a long session name. The docs' copies
are quantised to 256 colours to keep them small.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(out: Path) -> None:
    sessions = tempfile.mkdtemp()
    name = "2026-12-02T08-01-33_digits_a_long_session_name_from_a_busy_afternoon.session.sqlite"
    Path(sessions, name).touch()
    os.environ["LATENT_REACH_SESSIONS"] = sessions

    import numpy as np
    import torch

    from game.assembly import open_game
    from game.core import events as ev
    from game.core.scene import load_scene
    from game.explain.whatif import WhatIfEditor, whatif
    from game.pipeline import open_scene

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    scene = load_scene()
    scene.learning.job_process = False
    loaded = open_scene(scene, progress=False)
    game = open_game(loaded, offscreen=True, size=(1280, 800), controls=True, menu=True, multisamples=0)
    app, ex = game.app, game.explain
    game.menu.hide()
    app.world.hud.set_menu(True)

    def settle(n: int = 3) -> None:
        for _ in range(n):
            app.step()
            app.worker.wait_idle(120)
        app.step()

    settle(4)
    card = game.guidance.next_suspect()
    settle(3)
    app.frame_all()
    settle(1)
    app.screenshot(out / "overlays_after_suspects.png")
    app.frame_card(card, 0.5)
    settle(1)
    app.screenshot(out / "overlays_after_suspects_near.png")
    app.frame_all()
    settle(1)
    ex.cycle_method()
    settle(3)
    app.screenshot(out / "overlays_after_heatmap.png")
    while ex.method is not None:
        ex.cycle_method()
    ws, net = app.workspace, loaded.models.network()
    flip = 0
    for c in range(300):  # a card whose prediction a stroke across its middle changes
        ed = WhatIfEditor(ws.images[c])
        h, w = ed.image.shape[:2]
        ed.begin(0.05 * w, 0.5 * h)
        ed.drag(0.95 * w, 0.5 * h)
        ed.end()
        r = whatif(net, ws.images[c], ed.mask)
        if int(r.after_classes[0]) != int(r.before_classes[0]):
            flip = c
            break
    ws.post(ev.CardSelected(flip))
    settle(2)
    ex.toggle_paint()
    for x in np.linspace(0.05, 0.95, 8):
        ex.paint_uv(float(x), 0.5, True)
    ex.paint_uv(0.95, 0.5, False)
    settle(3)
    app.screenshot(out / "overlays_after_whatif.png")
    ex.toggle_paint()
    settle(2)
    other = int(np.flatnonzero(ws.labels != ws.top5_classes[:, 0])[0])
    ws.post(ev.CardSelected(other))
    settle(2)
    ex.request_class_model()
    settle(4)
    app.screenshot(out / "overlays_after_classmodel.png")
    game.controls.toggle_help()
    settle(1)
    app.screenshot(out / "overlays_after_help.png")
    game.controls.toggle_help()
    game.menu.show_start()
    settle(1)
    app.screenshot(out / "overlays_after_menu.png")
    game.destroy()
    app.destroy()
    print(f"suspect #{card}, what-if #{flip}, class model #{other} -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/overlays"))
