"""Scene presets: one TOML file names the dataset, network, layer, layout and learning settings.

Each TOML table maps to one dataclass below, and each key to one field. Loading is strict: an
unknown table or key, a value of the wrong type, or one outside the field's declared range
(``setting(default, ge=..., le=...)``, see ``game/core/ranges.py``) is a ``SceneError`` that names
the key, the value and what is allowed, because a typo that silently falls back to a default (or a
NaN that silently becomes all-NaN positions) costs a researcher an afternoon.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from game.core.errors import UserError
from game.core.ranges import Range, rule_for, setting

SCENES_DIR = Path(__file__).resolve().parents[2] / "scenes"
DEFAULT_SCENE = SCENES_DIR / "digits.toml"
SEED_MAX = 2**32 - 1  # numpy and scikit-learn accept seeds up to this


# The scene's fixed sets of words: the type checker and the loader (``ranges.rule_for``) both
# read these, so a choice is added in one place.
DatasetKind = Literal["digits", "folder", "shapes"]
ArchName = Literal["small_cnn", "alexnet"]  # and "torchvision:NAME" (the field is ``ArchName | str``)
RelayoutMethod = Literal["local", "full"]
LabelTrust = Literal["none", "soft", "drop"]
PullScale = Literal["fixed", "memorised"]
FeatureTerms = Literal["always", "landing"]
TORCHVISION_PREFIX = "torchvision:"


class SceneError(UserError, ValueError):
    """A scene file that cannot be used; the message names the file and the key."""


@dataclass
class SceneInfo:
    name: str = "Untitled scene"  # shown in the start menu
    description: str = ""  # one line under the name in the start menu
    vr: bool = False  # start in VR (like `run --vr`; falls back to the desktop)


@dataclass
class DatasetConfig:
    kind: DatasetKind = setting(
        "digits",
        doc='"digits" (embedded default), "folder", or "shapes" (generated colour shapes in clutter)',
    )
    path: str = ""  # folder with one subfolder per class (kind = "folder")
    labels_csv: str = ""  # optional CSV of path,label (relative paths are relative to ``path``)
    labels_outside: bool = False  # allow labels CSV paths outside ``path`` (refused by default)
    image_size: int = setting(
        0, ge=8, le=1024, also=(0,), doc="resize to a square of this side; 0 keeps the network's default"
    )
    max_pixels: int = setting(40_000_000, ge=1, le=10**12, doc="larger images are skipped as oversized")
    max_images: int = setting(0, ge=0, le=10**9, aliases=(("all", 0),), doc="0 = all")
    heldout_fraction: float = setting(
        0.2, ge=0.0, lt=1.0, doc="cards kept out of training, used to measure accuracy"
    )
    seed: int = setting(0, ge=0, le=SEED_MAX, doc="seeds the held-out split and the max_images sample")
    features: str = ""  # a feature store (`latent-reach features`) to open instead of computing features
    max_cards: int = setting(
        20_000, ge=2, le=10**8, doc="with features: cards shown, a seeded sample (the rest are left out)"
    )
    place_rest: bool = setting(
        False, doc="with features: place the cards beyond max_cards by openTSNE's transform (kept, not drawn)"
    )


@dataclass
class NetworkConfig:
    arch: ArchName | str = setting(
        "small_cnn",
        prefixes=(TORCHVISION_PREFIX,),
        doc='"small_cnn", "alexnet", or "torchvision:NAME"',
    )
    weights: str = ""  # .safetensors or torch state dict; empty: train (small_cnn) or random
    feature_layer: str = ""  # module name; empty: the penultimate layer (fc7 for AlexNet)
    train_epochs: int = setting(12, ge=1, le=10_000, doc="for training the small CNN at first use")
    seed: int = setting(0, ge=0, le=SEED_MAX, doc="seeds the small CNN's initial weights and batch order")
    batch_size: int = setting(256, ge=1, le=65_536, doc="images per batch when computing features and top-5")


@dataclass
class LayoutConfig:
    pca_dims: int = setting(
        50, ge=2, le=10_000, doc="PCA dimensions before t-SNE (fewer when features have fewer)"
    )
    perplexity: float = setting(
        50.0, gt=0.0, le=10_000.0, doc="t-SNE perplexity (about the number of neighbours each card keeps)"
    )
    early_iterations: int = setting(100, ge=0, le=100_000, doc="t-SNE iterations with early exaggeration 12")
    iterations: int = setting(250, ge=0, le=100_000, doc="t-SNE iterations after the early phase")
    update_iterations: int = setting(
        100, ge=0, le=100_000, doc="iterations of a warm-started update (layer switch, scripts)"
    )
    theta: float = setting(0.5, ge=0.0, le=1.0, doc="Barnes-Hut accuracy (lower: slower and more exact)")
    reuse_above: int = setting(
        5_000,
        ge=0,
        le=10**9,
        doc="from this many cards a local re-layout reduces the new features in the previous layout's "
        "PCA and finds their neighbours from its neighbour record (no refit, no new index)",
    )
    seed: int = setting(0, ge=0, le=SEED_MAX, doc="seeds PCA, the neighbour search and t-SNE")
    volume: list[float] = setting(
        [4.0, 4.0, 1.8], gt=0.0, le=1000.0, length=3, doc="x, y, z extent in metres"
    )
    floor_clearance: float = setting(0.5, ge=0.0, le=100.0, doc="lowest card height above the floor, metres")
    exaggeration: float = setting(
        0.5,
        gt=0.0,
        le=100.0,
        doc="t-SNE exaggeration after the early phase and in updates (below 1: each cluster spreads "
        "into the empty space around it, so cards hide fewer others; 1: plain t-SNE)",
    )
    align_axes: bool = True  # turn the cloud so its longest principal axis runs along x, the shortest up
    stretch: float = setting(
        0.5,
        ge=0.0,
        le=1.0,
        doc="0: one scale for every axis (the volume's tightest side limits it); 1: each axis fills "
        "its side of the volume; between: a geometric blend",
    )


@dataclass
class LearningConfig:
    cluster_percentile: float = setting(
        90.0, gt=0.0, le=100.0, doc="R_c: this percentile of a class's distances to its centroid"
    )
    unsure_factor: float = setting(
        1.5, ge=1.0, le=100.0, doc='beyond unsure_factor * R_c of every centroid: "unsure"'
    )
    train_unsure: bool = False  # also re-train cards dropped far from every cluster
    r_max: int = setting(8, ge=1, le=1000, doc="repeats of an image dropped at its own centroid")
    delay_seconds: float = setting(0.15, ge=0.0, le=3600.0, doc="a job starts this long after the last drop")
    replay_samples: int = setting(
        256, ge=0, le=10_000_000, doc="unedited training images sampled for replay per job"
    )
    max_steps: int = setting(
        60, ge=1, le=1_000_000, doc="training steps at most per job (stops early once edits are learned)"
    )
    learning_rate: float = setting(0.001, gt=0.0, le=100.0, doc="optimiser learning rate")
    feature_weight: float = setting(
        1.0,
        ge=0.0,
        le=1e6,
        doc="weight of the feature-space pull toward the drop's neighbours (a hinge: it stops once "
        "the edit is as near their mean as they are on average, a radius measured per edit)",
    )
    neighbours: int = setting(
        10, ge=1, le=10_000, doc="k: cards around the drop (and the old place) that define the pull"
    )
    full_finetune: bool = False  # train every layer (false: the classifier head only, stem cached)
    torch_threads: int = setting(
        1, ge=1, le=1024, doc="torch threads of a job (the frame loop keeps the other core)"
    )
    job_process: bool = True  # run fine-tune jobs in a persistent child process (frame loop keeps the GIL)
    job_nice: int = setting(
        5,
        ge=0,
        le=19,
        doc="the job process's niceness (higher: the frame loop wins the CPU, jobs take longer)",
    )
    head_layers: int = setting(
        2, ge=1, le=1000, doc="head-only fine-tune trains this many trailing Linear layers"
    )
    replay_batch: int = setting(64, ge=1, le=1_000_000, doc="replayed (unedited) images per training step")
    min_steps: int = setting(
        5,
        ge=0,
        le=1_000_000,
        doc="train at least this many steps before stopping early (a bare flip leaves the card on "
        "the class boundary, its look-alikes behind)",
    )
    feature_margin: float = setting(
        0.5, ge=0.0, le=1e6, doc="triplet margin (in feature-spread units) for relabels"
    )
    # Held-out cards near a drop or an edited card's old place are never trained with their labels
    # (issue 13: they were, so the suite's held-out accuracy partly measured trained cards).
    train_heldout: bool = False  # also train held-out neighbours of an edit with their labels (old)
    # A network that never fitted its label noise is then not taught it around each edit; one that
    # memorised it skips nothing. Off: on the suite it helped CE-only more than the full method.
    skip_disputed: bool = False  # no cross-entropy on neighbours/replay the first network disputes
    # Defaults "drop" and "landing" since issue 13's suite (docs/benchmarks.md): together they
    # missed 3 of its goals where "none"/"always" missed 9; recorded sessions keep the old values
    # (game.sessions.reader._OLD_DEFAULTS).
    label_trust: LabelTrust = setting(
        "drop",
        doc='cross-entropy weight of neighbours and replayed cards from the guidance\'s suspicion: "soft" '
        '1 - suspicion, "drop" 0 above 0.5 (and out of the replay pool), "none" 1 (game.learning.replay_trust; '
        '"none" was the default until issue 13\'s suite chose "drop" with feature_terms "landing")',
    )
    pull_scale: PullScale = setting(
        "fixed",
        doc='"memorised": the pull\'s weight is feature_weight times a factor from the share m of the '
        "job's guidance-distrusted neighbours and replayed cards whose label the network predicts: "
        "0 up to m = 0.5, rising linearly to 1 at m = 1 (1 when none is distrusted or label_trust is "
        '"none"; game.learning.replay_trust.pull_share); "fixed": feature_weight',
    )
    feature_terms: FeatureTerms = setting(
        "landing",
        doc='"landing": an edit\'s pull and push act only while it is not yet learned (predicted as its '
        "target and, for relabels, nearer its new neighbours than its old), so cross-entropy does the "
        'rest of the job (game.learning.loss); "always": every step (the default until issue 13\'s '
        'suite, docs/benchmarks.md: with label_trust "drop" it missed 3 of its goals, "always" 9)',
    )
    # 256 since issue 13's suite (docs/benchmarks.md); recorded sessions keep 0
    # (game.sessions.reader._OLD_DEFAULTS).
    check_samples: int = setting(
        256,
        ge=0,
        le=1_000_000,
        doc="training cards a job sets aside, untrained, to decide when to stop: once the edits are "
        "learned (after min_steps) it goes on while their cross-entropy (by label trust) falls, where the "
        "network did not memorise the labels the guidance distrusts (fewer than half of them predicted; "
        'label_trust "none": never); a network that did stops as soon as the edits are learned '
        "(game.learning.finetune.train); "
        "0: always so (the default until issue 13's suite)",
    )
    # 4096 since issue 13's suite (docs/benchmarks.md); recorded sessions keep 0
    # (game.sessions.reader._OLD_DEFAULTS).
    replay_all_up_to: int = setting(
        4096,
        ge=0,
        le=10_000_000,
        doc="a job whose check runs (check_samples, on a network that did not memorise the labels the "
        "guidance distrusts) replays, at every step, every trusted training card outside its edits, "
        "neighbours and check cards (trust from a label_trust call of its own) instead of a replay_batch "
        "sample, where those training cards number at most this many; above it, on memorised networks "
        'and with label_trust "none" it samples as before (game.learning.finetune.train). Why the cap: '
        "every step then trains every one of them (the suite's datasets, 700-1,800 cards: docs/benchmarks.md; "
        "at 50,000 each step would carry about 800 times the cards of a 64-card sample, and their trust "
        "would be judged too), so a large dataset "
        "keeps the sampled replay and its speed. 0: always samples (the default until issue 13's suite)",
    )
    # New in issue 17's thirteenth session; recorded sessions keep 0 (``_OLD_DEFAULTS``).
    replay_all_max_cost: float = setting(
        1e9,
        ge=0.0,
        le=1e18,
        doc="replay_all_up_to also stops where a step would cost more than this many multiply-adds "
        "through the head's linear layers (the cards times game.nets.split.head_multiply_adds): the "
        "suite's networks (132 k per card, at most 4,096 cards: 0.54 G) replay every card, an "
        "AlexNet-sized head (16.8 M per card) samples replay_batch as large datasets do. Why: a "
        "5,400-card AlexNet scene replayed 3,150 cards at every step, 206 CPU s for one drop "
        "(docs/benchmarks.md, issue 17). 0: no such cap",
    )
    preserve_weight: float = setting(
        1.0, ge=0.0, le=1e6, doc="keeps unedited cards' features (and so the layout) in place"
    )
    edit_step: float = setting(
        0.15, gt=0.0, le=1.0, doc="head-only: fraction of the way one step moves an edited image"
    )
    protect_neighbours: int = setting(
        0, ge=0, le=10_000, doc="head-only: look-alikes of an edited image held still (0: off)"
    )
    protect_weight: float = setting(1.0, ge=0.0, le=1e6, doc="how firmly (relative to the whole dataset)")
    head_damping: float = setting(
        0.0,
        ge=0.0,
        le=100.0,
        doc="head-only: the preconditioner's damping (relative to the mean eigenvalue); 0: derived "
        "from the data, the smallest value (0.005 to 0.64, continuous) at which held-out images are "
        "amplified at most 2 times as much as training images (digits: about 0.01; fewer images "
        "than dimensions: more)",
    )
    layout_iterations: int = setting(
        40, ge=0, le=100_000, doc="t-SNE iterations of the re-layout after a job"
    )
    relayout: RelayoutMethod = setting(
        "local",
        doc='"local": only edited cards and those whose neighbours changed move; "full": all',
    )
    relayout_keep: float = setting(
        0.2, ge=0.0, le=1.0, doc="local: a card moves when it kept fewer of its 10 feature neighbours"
    )
    anchor_edits: bool = True  # full re-layout: start edited cards at their drop positions
    exact_affinities_below: int = setting(
        3000, ge=0, le=10_000_000, doc="exact t-SNE affinities for fewer cards (faster than annoy)"
    )
    preview_above: int = setting(
        5000,
        ge=0,
        le=1_000_000_000,
        doc="from this many cards a job first sends a preview: the cards near its edits re-placed "
        "before the full result (fewer: the full result comes fast; 0: always)",
    )
    preview_cards: int = setting(
        2000, ge=1, le=1_000_000, doc="cards nearest the drops and old places that the preview re-infers"
    )
    seed: int = setting(
        0, ge=0, le=SEED_MAX, doc="seeds replay sampling (a job's seed is this plus its version)"
    )
    checkpoint_dir: str = ""  # also write every model version here (empty: memory only)


@dataclass
class WorldConfig:
    card_size: float = setting(0.08, gt=0.0, le=100.0, doc="metres")
    tween_seconds: float = setting(
        1.0, ge=0.0, le=3600.0, doc="how long cards glide to new places (ease in/out)"
    )
    move_speed: float = setting(2.0, gt=0.0, le=10_000.0, doc="metres per second")
    background: list[float] = setting(
        [0.08, 0.09, 0.11], ge=0.0, le=1.0, length=3, doc="RGB of the sky, 0..1"
    )


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


def _check_type(where: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, bool) and hint is not bool:
            raise SceneError(f"{where}: expected {hint.__name__}, got a boolean")
        if not isinstance(value, hint):
            raise SceneError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin is Literal:
        kinds = tuple({type(c) for c in typing.get_args(hint)})  # the choices are checked as a range
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise SceneError(f"{where}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise SceneError(f"{where}: expected a list, got {type(value).__name__}")
        return [_check_type(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(where, value, option)
            except SceneError:
                continue
        names = " or ".join(dict.fromkeys(_type_name(option) for option in typing.get_args(hint)))
        raise SceneError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _type_name(hint: Any) -> str:
    """How an error message names a type (a Literal by the type of its words)."""
    if typing.get_origin(hint) is Literal:
        return " or ".join(sorted({type(c).__name__ for c in typing.get_args(hint)}))
    return str(getattr(hint, "__name__", hint))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_setting(where: str, value: Any, hint: Any, rule: Range | None) -> Any:
    """One scene value checked against its declared type and range; returns the value to store."""
    if rule is not None:
        for word, meant in rule.aliases:
            if value == word:
                return meant
    value = _check_type(where, value, hint)
    items = value if isinstance(value, list) else [value]
    if rule is not None and rule.length is not None and len(items) != rule.length:
        raise SceneError(f"{where} = {_shown(value)}: expected {rule.describe()}")
    for item in items:
        finite = not isinstance(item, float) or math.isfinite(item)
        if not finite or (rule is not None and not rule.accepts(item)):
            allowed = rule.describe() if rule is not None else "a finite number"
            raise SceneError(f"{where} = {_shown(value)} is out of range (allowed: {allowed})")
    return value


def _section_keys(section: str) -> set[str]:
    """The keys a table of the scene file accepts."""
    return {f.name for f in dataclasses.fields(getattr(Scene(), section))}


def scene_from_dict(data: dict[str, Any], source: str = "") -> Scene:
    """Build a validated Scene from parsed TOML (or a session's recorded scene)."""
    label = source or "scene"
    if not isinstance(data, dict):
        raise SceneError(f"{label}: a scene must be a table of tables, got {type(data).__name__}")
    scene = Scene(source=source)
    for section, values in data.items():
        if section not in _SECTIONS and not isinstance(values, dict):
            # A key above every table (``name = "..."`` at the top of the file), not a table.
            homes = [f"[{name}]" for name in _SECTIONS if section in _section_keys(name)]
            where = f"; it belongs under {' or '.join(homes)}" if homes else ""
            raise SceneError(
                f"{label}: key {section!r} is outside every table{where} (tables: {', '.join(_SECTIONS)})"
            )
        if section not in _SECTIONS:
            raise SceneError(f"{label}: unknown table [{section}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, dict):
            raise SceneError(f"{label}: [{section}] must be a table")
        target = getattr(scene, section)
        hints = typing.get_type_hints(type(target))
        rules = {f.name: rule_for(f, hints[f.name]) for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in hints:
                known = ", ".join(hints)
                raise SceneError(f"{label}: unknown key {section}.{key} (known: {known})")
            checked = check_setting(f"{label}: {section}.{key}", value, hints[key], rules.get(key))
            setattr(target, key, checked)
    _validate(scene, label)
    return scene


def _validate(scene: Scene, label: str) -> None:
    """Rules that tie two settings together (single values are checked by their ``Range``)."""
    if scene.dataset.kind == "folder" and not scene.dataset.path:
        raise SceneError(f"{label}: dataset.path is required when dataset.kind = 'folder'")
    if scene.learning.min_steps > scene.learning.max_steps:
        raise SceneError(
            f"{label}: learning.min_steps = {scene.learning.min_steps} is out of range "
            f"(allowed: at most learning.max_steps = {scene.learning.max_steps})"
        )


def load_scene(path: str | Path | None = None) -> Scene:
    """Load and validate a scene file (the embedded default when ``path`` is None)."""
    p = Path(path) if path is not None else DEFAULT_SCENE
    if p.is_dir():
        raise SceneError(f"scene path is a folder, not a scene file: {p}")
    if not p.is_file():
        raise SceneError(f"scene file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SceneError(f"{p}: not a valid TOML file: {exc}") from None
    except OSError as exc:
        raise SceneError(f"cannot read scene file {p}: {exc.strerror or exc}") from None
    return scene_from_dict(data, source=str(p.resolve()))


def list_scenes(folder: Path = SCENES_DIR) -> list[Path]:
    """Scene files shipped in ``scenes/`` (for the start menu)."""
    return sorted(folder.glob("*.toml"))
