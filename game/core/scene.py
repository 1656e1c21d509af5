"""Scene presets: one TOML file names the dataset, network, layer, layout and learning settings.

Each TOML table maps to one dataclass below, and each key to one field. Loading is strict: an
unknown table or key, or a value of the wrong type, is a ``SceneError`` that names it, because a
typo that silently falls back to a default costs a researcher an afternoon.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from game.core.errors import UserError

SCENES_DIR = Path(__file__).resolve().parents[2] / "scenes"
DEFAULT_SCENE = SCENES_DIR / "digits.toml"


class SceneError(UserError, ValueError):
    """A scene file that cannot be used; the message names the file and the key."""


@dataclass
class SceneInfo:
    name: str = "Untitled scene"  # shown in the start menu
    description: str = ""  # one line under the name in the start menu
    vr: bool = False  # start in VR (like `run --vr`; falls back to the desktop)


@dataclass
class DatasetConfig:
    kind: str = "digits"  # "digits" (embedded default) or "folder"
    path: str = ""  # folder with one subfolder per class (kind = "folder")
    labels_csv: str = ""  # optional CSV of path,label (relative paths are relative to ``path``)
    image_size: int = 0  # resize to a square of this side; 0 keeps the network's default
    max_pixels: int = 40_000_000  # larger images are skipped as oversized
    max_images: int = 0  # 0 = all
    heldout_fraction: float = 0.2  # cards kept out of training, used to measure accuracy
    seed: int = 0  # seeds the held-out split and the max_images sample


@dataclass
class NetworkConfig:
    arch: str = "small_cnn"  # "small_cnn", "alexnet", or "torchvision:NAME"
    weights: str = ""  # .safetensors or torch state dict; empty: train (small_cnn) or random
    feature_layer: str = ""  # module name; empty: the penultimate layer (fc7 for AlexNet)
    train_epochs: int = 12  # for training the small CNN at first use
    seed: int = 0  # seeds the small CNN's initial weights and batch order
    batch_size: int = 256  # images per batch when computing features and top-5


@dataclass
class LayoutConfig:
    pca_dims: int = 50  # PCA dimensions before t-SNE (fewer when features have fewer)
    perplexity: float = 50.0  # t-SNE perplexity (about the number of neighbours each card keeps)
    early_iterations: int = 100  # t-SNE iterations with early exaggeration 12
    iterations: int = 250  # t-SNE iterations after the early phase
    update_iterations: int = 100  # iterations of a warm-started update (layer switch, scripts)
    theta: float = 0.5  # Barnes-Hut accuracy (lower: slower and more exact)
    seed: int = 0  # seeds PCA, the neighbour search and t-SNE
    volume: list[float] = field(default_factory=lambda: [4.0, 4.0, 1.8])  # x, y, z extent in metres
    floor_clearance: float = 0.5  # lowest card height above the floor, metres


@dataclass
class LearningConfig:
    cluster_percentile: float = 90.0  # R_c: this percentile of a class's distances to its centroid
    unsure_factor: float = 1.5  # beyond unsure_factor * R_c of every centroid: "unsure"
    train_unsure: bool = False  # also re-train cards dropped far from every cluster
    r_max: int = 8  # repeats of an image dropped at its own centroid
    delay_seconds: float = 0.15  # a job starts this long after the last drop
    replay_samples: int = 256  # unedited training images sampled for replay per job
    max_steps: int = 60  # training steps at most per job (stops early once edits are learned)
    learning_rate: float = 0.001  # optimiser learning rate
    feature_weight: float = 1.0  # weight of the feature-space pull toward the drop's neighbours
    neighbours: int = 10  # k: cards around the drop (and the old place) that define the pull
    full_finetune: bool = False  # train every layer (false: the classifier head only, stem cached)
    torch_threads: int = 1  # torch threads of a job (the frame loop keeps the other core)
    job_process: bool = True  # run fine-tune jobs in a persistent child process (frame loop keeps the GIL)
    job_nice: int = 5  # the job process's niceness (higher: the frame loop wins the CPU, jobs take longer)
    head_layers: int = 2  # head-only fine-tune trains this many trailing Linear layers
    replay_batch: int = 64  # replayed (unedited) images per training step
    min_steps: int = 1  # train at least this many steps before stopping early
    feature_margin: float = 0.5  # triplet margin (in feature-spread units) for relabels
    preserve_weight: float = 1.0  # keeps unedited cards' features (and so the layout) in place
    edit_step: float = 0.15  # head-only: fraction of the way one step moves an edited image
    protect_neighbours: int = 0  # head-only: look-alikes of an edited image held still (0: off)
    protect_weight: float = 1.0  # how firmly (relative to the whole dataset)
    layout_iterations: int = 40  # t-SNE iterations of the re-layout after a job
    relayout: str = "local"  # "local": only edited cards and those whose neighbours changed move; "full": all
    relayout_keep: float = 0.5  # local: a card moves when it kept fewer of its 10 feature neighbours
    anchor_edits: bool = True  # full re-layout: start edited cards at their drop positions
    exact_affinities_below: int = 3000  # exact t-SNE affinities for fewer cards (faster than annoy)
    seed: int = 0  # seeds replay sampling (a job's seed is this plus its version)
    checkpoint_dir: str = ""  # also write every model version here (empty: memory only)


@dataclass
class WorldConfig:
    card_size: float = 0.08  # metres
    tween_seconds: float = 1.0  # how long cards glide to new places (ease in/out)
    move_speed: float = 2.0  # metres per second
    background: list[float] = field(default_factory=lambda: [0.08, 0.09, 0.11])  # RGB of the sky, 0..1


@dataclass
class Scene:
    """A whole scene preset; ``source`` is the file it came from (for relative paths)."""

    scene: SceneInfo = field(default_factory=SceneInfo)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    source: str = ""

    def resolve_path(self, value: str) -> Path:
        """A path from the scene, relative to the scene file's folder when not absolute."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Scene) if f.name != "source"}


def _check_value(where: str, value: Any, annotation: Any) -> Any:
    hint = annotation
    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, bool) and hint is not bool:
            raise SceneError(f"{where}: expected {hint.__name__}, got a boolean")
        if not isinstance(value, hint):
            raise SceneError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise SceneError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check_value(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_value(where, value, option)
            except SceneError:
                continue
        raise SceneError(f"{where}: value {value!r} has the wrong type")
    return value


def scene_from_dict(data: dict[str, Any], source: str = "") -> Scene:
    """Build a validated Scene from parsed TOML."""
    label = source or "scene"
    scene = Scene(source=source)
    for section, values in data.items():
        if section not in _SECTIONS:
            raise SceneError(f"{label}: unknown table [{section}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, dict):
            raise SceneError(f"{label}: [{section}] must be a table")
        target = getattr(scene, section)
        hints = typing.get_type_hints(type(target))
        for key, value in values.items():
            if key not in hints:
                known = ", ".join(hints)
                raise SceneError(f"{label}: unknown key {section}.{key} (known: {known})")
            setattr(target, key, _check_value(f"{label}: {section}.{key}", value, hints[key]))
    _validate(scene, label)
    return scene


def _validate(scene: Scene, label: str) -> None:
    def bad(key: str, why: str) -> None:
        raise SceneError(f"{label}: {key} {why}")

    if scene.dataset.kind not in ("digits", "folder"):
        bad("dataset.kind", f"must be 'digits' or 'folder', not {scene.dataset.kind!r}")
    if scene.dataset.kind == "folder" and not scene.dataset.path:
        bad("dataset.path", "is required when dataset.kind = 'folder'")
    if not 0.0 <= scene.dataset.heldout_fraction < 1.0:
        bad("dataset.heldout_fraction", "must be in [0, 1)")
    arch = scene.network.arch
    if arch not in ("small_cnn", "alexnet") and not arch.startswith("torchvision:"):
        bad("network.arch", f"must be 'small_cnn', 'alexnet' or 'torchvision:NAME', not {arch!r}")
    if scene.layout.pca_dims < 2:
        bad("layout.pca_dims", "must be at least 2")
    if scene.layout.perplexity <= 0:
        bad("layout.perplexity", "must be positive")
    for key in ("early_iterations", "iterations", "update_iterations"):
        if getattr(scene.layout, key) < 0:
            bad(f"layout.{key}", "must not be negative")
    if scene.network.batch_size < 1:
        bad("network.batch_size", "must be at least 1")
    if scene.learning.layout_iterations < 0:
        bad("learning.layout_iterations", "must not be negative")
    if scene.learning.relayout not in ("local", "full"):
        bad("learning.relayout", f"must be 'local' or 'full', not {scene.learning.relayout!r}")
    if not 0.0 <= scene.learning.relayout_keep <= 1.0:
        bad("learning.relayout_keep", "must be in [0, 1]")
    if len(scene.layout.volume) != 3 or min(scene.layout.volume) <= 0:
        bad("layout.volume", "must be three positive numbers (x, y, z metres)")
    if scene.learning.r_max < 1:
        bad("learning.r_max", "must be at least 1")
    if not 0 <= scene.learning.job_nice <= 19:
        bad("learning.job_nice", "must be in 0..19")
    if not 0 < scene.learning.cluster_percentile <= 100:
        bad("learning.cluster_percentile", "must be in (0, 100]")
    if scene.learning.unsure_factor < 1.0:
        bad("learning.unsure_factor", "must be at least 1")
    if scene.learning.delay_seconds < 0:
        bad("learning.delay_seconds", "must not be negative")
    if scene.learning.max_steps < 1 or scene.learning.min_steps < 0:
        bad("learning.max_steps", "must be at least 1 (and min_steps not negative)")
    if scene.learning.learning_rate <= 0:
        bad("learning.learning_rate", "must be positive")
    if scene.learning.head_layers < 1:
        bad("learning.head_layers", "must be at least 1")
    if scene.learning.neighbours < 1:
        bad("learning.neighbours", "must be at least 1")
    if scene.world.card_size <= 0:
        bad("world.card_size", "must be positive")
    if scene.world.tween_seconds < 0:
        bad("world.tween_seconds", "must not be negative")


def load_scene(path: str | Path | None = None) -> Scene:
    """Load and validate a scene file (the embedded default when ``path`` is None)."""
    p = Path(path) if path is not None else DEFAULT_SCENE
    if not p.is_file():
        raise SceneError(f"scene file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SceneError(f"{p}: not a valid TOML file: {exc}") from None
    return scene_from_dict(data, source=str(p.resolve()))


def list_scenes(folder: Path = SCENES_DIR) -> list[Path]:
    """Scene files shipped in ``scenes/`` (for the start menu)."""
    return sorted(folder.glob("*.toml"))
