"""Readability of the default view: how much of each card, label and centroid marker a person sees.

Opens a scene (the embedded default unless ``--scene``) offscreen in the app's own first view
(the framing ``latent-reach snapshot`` uses, no anti-aliasing) and renders it once more as an ID
image: every card drawn with the card shader's geometry but a flat colour that encodes its index,
every class label and centroid marker in a flat colour of its own, no lighting, no blending, no
floor, no 2-D overlays. From that image:

* per card, the pixels it shows against the pixels its quad would cover alone (computed from its
  projected square, exactly what the vertex shader draws): the share of cards showing at least
  half of their face, the share showing any pixel, the window coverage and the overdraw (quad
  pixels drawn per covered pixel);
* per class label: the share of its pixels (backing and text, rendered alone) left visible in the
  full ID image, and its height on screen; readable = at least 98 % visible and 16 px tall;
* per centroid marker: the share of its pixels left visible; visible = at least half;
* the 10-NN agreement between the 3-D world positions and the 50-d PCA of the features (the
  measure of ``bench_layout``): how much of each image's neighbourhood the layout keeps.

    .venv/bin/python benchmarks/bench_readability.py [--scene FILE] [--size 1280x800] [--json OUT]
        [--id-image PNG] [--pitch DEG] [--card-size M] [--set layout.stretch=0.7 ...]

``--pitch``, ``--card-size`` and ``--set`` (scene settings, TOML values) measure variants of the
default: another first-view pitch, card size or layout.

Runs on the code it sits in: copy it into an older checkout to measure that one (the shaders it
needs are inline; only ``shaders/cards.vert`` is read from the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABEL_VISIBLE = 0.98  # a label counts as unoccluded with this share of its pixels visible
LABEL_MIN_PX = 16  # ... and readable when its backing is at least this tall on screen
MARKER_VISIBLE = 0.5  # a centroid marker counts as visible with this share of its pixels

# Card IDs: the card shader's vertex stage (same quads, same billboarding), this fragment stage.
CARD_ID_FRAG = """#version 330
in vec2 v_local;
flat in int v_card;
out vec4 p3d_FragColor;
void main() {
    if (max(abs(v_local.x), abs(v_local.y)) > 0.5) discard;  // marker rings are not the face
    int id = v_card + 1;
    p3d_FragColor = vec4(float(id & 255), float((id >> 8) & 255), float((id >> 16) & 255), 255.0) / 255.0;
}
"""
FLAT_VERT = """#version 330
uniform mat4 p3d_ModelViewProjectionMatrix;
in vec4 p3d_Vertex;
void main() { gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex; }
"""
FLAT_FRAG = """#version 330
uniform vec4 id_colour;
out vec4 p3d_FragColor;
void main() { p3d_FragColor = id_colour; }
"""


def id_colour(i: int) -> tuple[float, float, float, float]:
    return ((i & 255) / 255.0, ((i >> 8) & 255) / 255.0, ((i >> 16) & 255) / 255.0, 1.0)


def decode(img: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 ID image -> (H, W) int IDs (0: background)."""
    x = img.astype(np.int64)
    return x[..., 0] | (x[..., 1] << 8) | (x[..., 2] << 16)


def card_quads(app) -> tuple[np.ndarray, np.ndarray]:
    """Each card's projected square in pixels (x0, y0, x1, y1; y down) and its pixel count alone.

    The same maths as ``shaders/cards.vert``: a square of ``card_size * size * visible`` in view
    space around the card's view-space centre, projected by the camera lens. A pixel is covered
    when its centre is inside (the rasteriser's rule), so the count is exact up to edge ties.
    """
    cards = app.world.cards
    data = np.array(cards._data(), copy=True)
    pos = data[:, 0, :3].astype(np.float64)
    side = cards.card_size * data[:, 0, 3] * data[:, 2, 3]
    view = np.array(app.render.get_mat(app.cam), dtype=np.float64).reshape(4, 4)
    proj = np.array(app.camLens.get_projection_mat(), dtype=np.float64).reshape(4, 4)
    centre = np.c_[pos, np.ones(len(pos))] @ view  # Panda3D view space: x right, y forward, z up
    w, h = app.size
    corners = []
    for sign in (-0.5, 0.5):
        c = centre.copy()
        c[:, 0] += sign * side
        c[:, 2] += sign * side
        clip = c @ proj
        ndc = clip[:, :3] / clip[:, 3:4]
        corners.append(((ndc[:, 0] + 1) / 2 * w, (1 - ndc[:, 1]) / 2 * h))
    x0, x1 = np.minimum(corners[0][0], corners[1][0]), np.maximum(corners[0][0], corners[1][0])
    y0, y1 = np.minimum(corners[0][1], corners[1][1]), np.maximum(corners[0][1], corners[1][1])
    nx = np.clip(np.ceil(x1 - 0.5), 0, w) - np.clip(np.ceil(x0 - 0.5), 0, w)
    ny = np.clip(np.ceil(y1 - 0.5), 0, h) - np.clip(np.ceil(y0 - 0.5), 0, h)
    near = app.camLens.get_near()
    alone = np.where(centre[:, 1] > near, np.maximum(nx, 0) * np.maximum(ny, 0), 0).astype(np.int64)
    return np.c_[x0, y0, x1, y1], alone


def class_nodes(markers) -> list[tuple[object, object, list]]:
    """Per class: (label node, marker node, other nodes drawn for it) of ``CentroidMarkers``."""
    spheres = getattr(markers, "markers", None)
    out = []
    for k, holder in enumerate(markers.spheres):
        label = markers.labels[k]
        marker = spheres[k] if spheres is not None else holder.get_child(0)
        others = [c for c in holder.get_children() if c != label and c != marker]
        out.append((label, marker, others))
    return out


class IdRenderer:
    """Switches a running app into ID rendering and renders the subsets the measures need."""

    def __init__(self, app) -> None:
        from panda3d.core import Shader, TransparencyAttrib

        from game.world.shaders import SHADER_DIR

        self.app = app
        world = app.world
        vert = (SHADER_DIR / "cards.vert").read_text(encoding="utf-8")
        card_shader = Shader.make(Shader.SL_GLSL, vertex=vert, fragment=CARD_ID_FRAG)
        flat = Shader.make(Shader.SL_GLSL, vertex=FLAT_VERT, fragment=FLAT_FRAG)
        app.set_background_color(0, 0, 0, 1)
        # Hidden here, shown again by ``restore``: Panda3D's 2-D root outlives an app (the next
        # app in the same process would start with its overlays hidden).
        self.hidden = [app.aspect2d]
        self.hidden += [c for c in app.render.get_children() if c not in (world.root, app.camera)]
        self.hidden += [
            c for c in world.root.get_children() if c not in (world.cards.root, world.centroid_markers.root)
        ]
        self.hidden = [node for node in self.hidden if not node.is_hidden()]
        for node in self.hidden:
            node.hide()
        for chunk in world.cards._chunks:
            chunk.set_shader(card_shader, 100)
        self.n = world.cards.n
        self.k = len(world.centroid_markers.spheres)
        root = world.centroid_markers.root
        root.set_shader(flat, 100)
        root.set_transparency(TransparencyAttrib.M_none, 100)
        root.set_light_off(100)
        self.labels, self.markers = [], []
        for k, (label, marker, others) in enumerate(class_nodes(world.centroid_markers)):
            label.set_shader_input("id_colour", id_colour(self.label_id(k)), 100)
            marker.set_shader_input("id_colour", id_colour(self.marker_id(k)), 100)
            for node in others:  # stalks and the like: thin lines, not what a person reads
                node.hide()
            self.labels.append(label)
            self.markers.append(marker)

    def restore(self) -> None:
        """Show again what the ID pass hid (the card and marker shaders stay: the app is done)."""
        for node in self.hidden:
            node.show()

    def label_id(self, k: int) -> int:
        return self.n + 1 + k

    def marker_id(self, k: int) -> int:
        return self.n + 1 + self.k + k

    def render(self) -> np.ndarray:
        self.app.graphicsEngine.render_frame()
        return decode(self.app.pixels())

    def alone(self, node) -> np.ndarray:
        """The ID image with only ``node`` of the labels and markers drawn (and no cards)."""
        cards = self.app.world.cards.root
        everything = self.labels + self.markers
        cards.hide()
        for other in everything:
            if other != node:
                other.hide()
        try:
            return self.render()
        finally:
            cards.show()
            for other in everything:
                other.show()


def measure(
    loaded,
    size: tuple[int, int] = (1280, 800),
    id_image: str = "",
    pitch: float | None = None,
    card_size: float | None = None,
) -> dict:
    """Open an offscreen app on ``loaded`` in its first view and measure it (see module doc);
    ``id_image``: also write the ID render there, in random colours (a PNG to look at);
    ``pitch``, ``card_size``: re-frame the first view at this pitch, draw cards this size."""
    from game.app import LatentReachApp

    ws = loaded.workspace
    app = LatentReachApp(loaded, offscreen=True, size=size, controls=False, multisamples=0)
    ids: IdRenderer | None = None
    try:
        if card_size is not None:
            app.world.set_card_size(card_size)
        if pitch is not None:
            app.frame_points(app.world.positions, pitch=pitch)
        app.step(0.0)
        for _ in range(2):
            app.step(1.0 / 60.0)
        quads, alone = card_quads(app)
        ids = IdRenderer(app)
        full = ids.render()
        if id_image:
            save_id_image(full, id_image)
        n = ids.n
        visible = np.bincount(full[(full >= 1) & (full <= n)].ravel() - 1, minlength=n)
        share = np.where(alone > 0, visible / np.maximum(alone, 1), 0.0)
        covered = int(((full >= 1) & (full <= n)).sum())
        labels, markers = [], []
        present = ~np.isnan(app.world._centroids()).any(axis=1)
        for k in range(ids.k):
            if not present[k]:
                continue
            lab_alone = ids.alone(ids.labels[k]) == ids.label_id(k)
            rows = np.flatnonzero(lab_alone.any(axis=1))
            lab_vis = int((full[lab_alone] == ids.label_id(k)).sum())
            lab_px = int(lab_alone.sum())
            height = int(rows[-1] - rows[0] + 1) if len(rows) else 0
            frac = lab_vis / lab_px if lab_px else 0.0
            labels.append(
                {
                    "class": ws.class_names[k],
                    "pixels": lab_px,
                    "visible": round(frac, 4),
                    "height_px": height,
                    "readable": bool(frac >= LABEL_VISIBLE and height >= LABEL_MIN_PX),
                }
            )
            mk_alone = ids.alone(ids.markers[k]) == ids.marker_id(k)
            mk_px = int(mk_alone.sum())
            mk_frac = int((full[mk_alone] == ids.marker_id(k)).sum()) / mk_px if mk_px else 0.0
            markers.append(
                {
                    "class": ws.class_names[k],
                    "pixels": mk_px,
                    "visible": round(mk_frac, 4),
                    "ok": bool(mk_frac >= MARKER_VISIBLE and mk_px > 0),
                }
            )
        on_screen = alone > 0
        result = {
            "cards": int(n),
            "size": list(size),
            "card_half_face": round(float((share >= 0.5).mean()), 4),
            "card_any_pixel": round(float((visible > 0).mean()), 4),
            "cards_on_screen": round(float(on_screen.mean()), 4),
            "window_coverage": round(covered / (size[0] * size[1]), 4),
            "overdraw": round(float(alone.sum()) / max(covered, 1), 2),
            "card_side_px_median": round(float(np.median(np.sqrt(alone[on_screen]))), 1)
            if on_screen.any()
            else 0.0,
            "labels_readable": sum(lab["readable"] for lab in labels),
            "labels": labels,
            "markers_visible": sum(m["ok"] for m in markers),
            "markers": markers,
            "classes": int(present.sum()),
        }
        # Check of the analytic quads against the render: pixels drawn for a card never exceed its
        # quad, give or take the rasteriser's rounding along the quad's edges (a pixel or two: seen
        # once in a full test run whose layout came out slightly different).
        excess = visible - alone
        result["quad_check"] = bool((excess <= 2 + 0.05 * alone).all())
        result["quad_excess_px"] = int(excess.max()) if len(excess) else 0
        return result
    finally:
        if ids is not None:
            ids.restore()
        app.destroy()


def save_id_image(ids: np.ndarray, path: str) -> None:
    """The ID image with a random colour per ID (black background), for a person to look at."""
    from PIL import Image

    palette = np.random.default_rng(0).integers(40, 256, size=(int(ids.max()) + 1, 3), dtype=np.uint8)
    palette[0] = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(palette[ids]).save(path)


def knn_agreement(loaded) -> float:
    """10-NN agreement between the world positions and the 50-d PCA of the features."""
    from sklearn.decomposition import PCA

    from game.layout.projector import neighbour_agreement

    features = loaded.workspace.features
    dims = min(50, features.shape[1], len(features) - 1)
    reference = PCA(n_components=dims, random_state=0).fit_transform(features)
    return neighbour_agreement(reference, loaded.workspace.positions)


def print_table(result: dict) -> None:
    rows = [
        ("cards showing >= 50 % of their face", f"{100 * result['card_half_face']:.1f} %"),
        ("cards showing any pixel", f"{100 * result['card_any_pixel']:.1f} %"),
        ("cards on screen", f"{100 * result['cards_on_screen']:.1f} %"),
        ("window covered by cards", f"{100 * result['window_coverage']:.1f} %"),
        ("overdraw (quad px per covered px)", f"{result['overdraw']:.2f}"),
        ("median card side", f"{result['card_side_px_median']:.1f} px"),
        ("class labels readable, unoccluded", f"{result['labels_readable']} / {result['classes']}"),
        ("centroid markers visible", f"{result['markers_visible']} / {result['classes']}"),
        ("10-NN agreement, 3-D vs PCA-50", f"{result['knn10_vs_pca50']:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(
        "labels: "
        + "  ".join(f"{x['class']}:{100 * x['visible']:.0f}%/{x['height_px']}px" for x in result["labels"])
    )
    print("markers: " + "  ".join(f"{x['class']}:{100 * x['visible']:.0f}%" for x in result["markers"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default=None, help="scene file (default: the embedded default)")
    parser.add_argument("--size", default="1280x800")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--id-image", default="", help="also write the ID render here (PNG)")
    parser.add_argument("--pitch", type=float, default=None, help="first view's pitch, degrees")
    parser.add_argument("--card-size", type=float, default=None, help="card side, metres")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="scene setting (TOML value)"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from game.core.scene import load_scene
    from game.pipeline import open_scene
    from game.world.offscreen import parse_size

    size = parse_size(args.size)
    t0 = time.perf_counter()
    scene = load_scene(args.scene)
    for item in args.set:
        name, _, value = item.partition("=")
        section, _, key = name.partition(".")
        setattr(getattr(scene, section), key, tomllib.loads(f"v = {value}")["v"])
    loaded = open_scene(scene, progress=False)
    result = measure(loaded, size, args.id_image, args.pitch, args.card_size)
    result["variant"] = {"pitch": args.pitch, "card_size": args.card_size, "set": args.set}
    result["knn10_vs_pca50"] = round(knn_agreement(loaded), 4)
    result["scene"] = loaded.scene.scene.name
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
