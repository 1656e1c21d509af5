"""The VR pictures of the docs: the controller bindings and the wrist menu in the headset.

    .venv/bin/python scripts/vr_pictures.py [OUT_DIR]      (default: docs/img)

- ``vr_bindings.png``: a left and a right controller (Index / Touch shape: trigger, grip, stick,
  two face buttons) drawn with PIL, each control labelled with what it does, and a strip with
  where the menu and undo buttons are on each controller family (from the binding files).
- ``vr_wrist_menu.png``: the simulated headset's mirror (the left eye) on the default scene with
  the wrist menu open on the left hand, the right hand's laser on a button, a suspect visited
  through the menu and its heat map on the info panel: what a person sees at 1000x1000 per eye.
  The docs' copies are quantised to 256 colours to keep them small.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
INK = (230, 232, 238)
DIM = (150, 156, 170)
ACCENT = (255, 214, 102)
BODY = (58, 64, 78)
EDGE = (120, 128, 146)
BG = (22, 25, 32)
FAMILIES = (  # controller type in the binding files -> what a person calls it
    ("knuckles", "Valve Index"),
    ("oculus_touch", "Oculus Touch"),
    ("vive_controller", "Vive wand"),
    ("holographic_controller", "Windows MR"),
    ("vive_cosmos_controller", "Vive Cosmos"),
    ("generic", "Other"),
)
BUTTON_NAMES = {
    "a": "A",
    "b": "B",
    "x": "X",
    "y": "Y",
    "application_menu": "menu button",
    "trackpad": "touchpad",
    "joystick": "stick",
    "thumbstick": "stick",
}


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def buttons_of(controller_type: str) -> dict[str, list[str]]:
    """Action name -> ["left B", "right B"]: which button feeds menu and undo in the binding."""
    data = json.loads((ROOT / "game" / "vr" / f"bindings_{controller_type}.json").read_text())
    out: dict[str, list[str]] = {}
    for source in data["bindings"]["/actions/latent"]["sources"]:
        _, _, _, hand, _, component = source["path"].split("/")
        for inp in source["inputs"].values():
            action = inp["output"].rsplit("/", 1)[-1]
            if action in ("menu", "undo"):
                out.setdefault(action, []).append(f"{hand} {BUTTON_NAMES.get(component, component)}")
    return out


def _controller(draw, cx: int, cy: int, mirror: bool, hand: str, labels: dict[str, str]) -> None:
    """A stylised controller seen from above: ring/handle, stick, two face buttons, trigger (front),
    grip (side); each control gets a callout line to its label."""
    s = -1 if mirror else 1
    small, font = _font(17), _font(20)
    # Handle and head.
    draw.rounded_rectangle((cx - 55, cy - 40, cx + 55, cy + 230), 45, fill=BODY, outline=EDGE, width=3)
    draw.ellipse((cx - 95, cy - 150, cx + 95, cy + 40), fill=BODY, outline=EDGE, width=3)
    # Trigger at the front (top of the picture), grip on the outer side.
    draw.rounded_rectangle(
        (cx - 30, cy - 185, cx + 30, cy - 140), 12, fill=(90, 160, 220), outline=EDGE, width=2
    )
    gx = cx + s * 55
    draw.rounded_rectangle(
        (min(gx, gx + s * 22), cy + 20, max(gx, gx + s * 22), cy + 170), 10, fill=(110, 190, 120)
    )
    # Stick and the two face buttons.
    draw.ellipse((cx - 28, cy - 95, cx + 28, cy - 39), fill=(40, 44, 54), outline=INK, width=3)
    bx = cx + s * 50  # on the side of the labels
    draw.ellipse(
        (bx - 15, cy - 60, bx + 15, cy - 30), fill=(200, 120, 60), outline=INK, width=2
    )  # upper: menu
    draw.ellipse(
        (bx + s * 10 - 15, cy - 20, bx + s * 10 + 15, cy + 10), fill=(180, 80, 170), outline=INK, width=2
    )
    draw.text((cx, cy + 245), f"{hand} hand", fill=DIM, font=font, anchor="mt")

    def callout(x: int, y: int, key: str, ty: int) -> None:
        tx = cx + s * 150
        draw.line((x, y, tx - s * 8, ty), fill=EDGE, width=2)
        draw.text((tx, ty), labels[key], fill=INK, font=small, anchor="lm" if s > 0 else "rm", spacing=4)

    callout(cx + s * 30, cy - 162, "trigger", cy - 200)
    callout(gx + s * 11, cy + 100, "grip", cy + 120)
    callout(cx + s * 28, cy - 67, "stick", cy - 120)
    callout(bx, cy - 45, "menu", cy - 40)
    callout(bx + s * 10, cy - 5, "undo", cy + 35)


def bindings_picture(path: Path) -> None:
    from PIL import Image, ImageDraw

    w, h = 1500, 860
    img = Image.new("RGB", (w, h), BG)
    draw = ImageDraw.Draw(img)
    draw.text((40, 28), "Latent Reach in VR: the controllers", fill=ACCENT, font=_font(30))
    draw.text(
        (40, 70),
        "Anything else the desktop does is on the wrist menu: menu button, then the other hand's laser + trigger.",
        fill=DIM,
        font=_font(19),
    )
    left = {
        "trigger": "Trigger: laser; press on a card = select\n(info panel); on the panel's image = paint\na what-if; on the wrist menu = click",
        "grip": "Grip: grab / carry a card, release drops\n(both grips: scale and turn the world)",
        "stick": "Stick: walk (Vive: touchpad pressed)",
        "menu": "Y / B / menu button: the wrist menu\n(on a carried card: put it back)",
        "undo": "X / A: undo the last fine-tune\n(on a carried card: put it back)",
    }
    right = dict(left)
    right["stick"] = "Stick: snap turn (x), up / down (y)"
    right["menu"] = "B: wrist menu (opens on this hand)"
    right["undo"] = "A / Vive right menu button: undo"
    _controller(draw, 560, 330, True, "left", left)
    _controller(draw, w - 560, 330, False, "right", right)
    # Where menu and undo are on each family (read from the binding files).
    y = 650
    draw.text((40, y), "Menu and undo per controller (game/vr/bindings_*.json):", fill=ACCENT, font=_font(20))
    font = _font(17)
    for i, (kind, name) in enumerate(FAMILIES):
        b = buttons_of(kind)
        col, row = i % 3, i // 3
        x, yy = 40 + col * 480, y + 40 + row * 70
        draw.text((x, yy), name, fill=INK, font=_font(18))
        draw.text((x, yy + 24), f"menu: {', '.join(b.get('menu', ['-']))}", fill=DIM, font=font)
        draw.text((x, yy + 44), f"undo: {', '.join(b.get('undo', ['-']))}", fill=DIM, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(256).save(path, optimize=True)


def _aim(controls, hand_pos: list[float], world_point, **buttons) -> dict:
    """A script step: the right controller at ``hand_pos`` (tracking) pointing at ``world_point``."""
    import numpy as np

    rig = controls.rig.matrix()
    target = (np.linalg.inv(rig) @ np.append(world_point, 1.0))[:3]
    d = target - np.asarray(hand_pos)
    h = math.degrees(math.atan2(-d[0], d[1]))
    p = math.degrees(math.atan2(d[2], math.hypot(d[0], d[1])))
    return {"right": {"pos": hand_pos, "hpr": [h, p, 0.0], **buttons}}


def wrist_menu_picture(path: Path, size: int = 1000) -> None:
    import torch

    from game.assembly import open_game
    from game.core.scene import load_scene
    from game.pipeline import open_scene
    from game.vr.simulated import SimulatedBackend
    from game.vr.wrist_menu import WristMenu

    torch.set_num_threads(1)
    scene = load_scene()
    scene.learning.job_process = False
    loaded = open_scene(scene, progress=False)
    head, left, right = [0.0, 0.0, 1.65], [-0.07, 0.34, 1.33], [0.2, 0.22, 1.22]
    backend = SimulatedBackend(
        [
            {
                "head": {"pos": head, "hpr": [14, -20, 0]},
                "left": {"pos": left, "hpr": [20, 10, 0]},
                "right": {"pos": right},
            }
        ],
        size=(size, size),
    )
    backend.start()
    game = open_game(
        loaded, offscreen=True, size=(size, size), controls=True, vr_backend=backend, multisamples=0
    )
    app, session = game.app, game.vr
    assert session is not None
    controls = session.controls
    menu = next(t for t in controls.targets if isinstance(t, WristMenu))

    def play(*steps: dict) -> None:
        for _ in range(backend.extend(list(steps))):
            app.step()

    def settle(n: int = 2) -> None:
        for _ in range(n):
            app.worker.wait_idle(300)
            play({})

    for _ in range(backend.length):  # the script's own frames first: then each step plays at once
        app.step()
    settle(3)  # suspicion scores
    play({"left": {"menu": True}}, {"left": {"menu": False}})
    for key in ("suspect", "heatmap"):
        centre = menu.centre_of(key)
        for trigger in (False, True, False):
            play(_aim(controls, right, centre, trigger=trigger))
        settle(2)
    play(_aim(controls, right, menu.centre_of("paint")))
    play(_aim(controls, right, menu.centre_of("paint")))
    assert menu.clicked == ["suspect", "heatmap"], menu.clicked
    app.screenshot(path)
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    game.destroy()
    app.destroy()


def main(out: Path) -> None:
    bindings_picture(out / "vr_bindings.png")
    print(out / "vr_bindings.png")
    wrist_menu_picture(out / "vr_wrist_menu.png")
    print(out / "vr_wrist_menu.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img")
