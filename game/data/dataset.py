"""The dataset every other part works on, and the loader that picks the right source."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from game.core.errors import UserError
from game.core.scene import DatasetConfig, Scene


class DatasetError(UserError):
    """An unusable dataset: missing folder, no images, fewer than two classes."""


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class Dataset:
    """Images as ``(N, H, W, C)`` uint8 (C = 1 or 3, all one size), labels and class names.

    ``sources`` says where each image came from (a path, or ``digits:#i``) so that a card can
    always be traced back; ``skipped`` lists every file that was left out and why.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)
    name: str = ""
    notes: list[str] = field(default_factory=list)  # things used with a caveat (extra CSV columns)
    # A key that names exactly these images (an image folder's files and reading settings), so
    # the features cache need not hash their bytes; "" when none is known (then it hashes them).
    content_key: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if not (len(self.images) == len(self.labels) == len(self.sources)):
            raise ValueError("images, labels and sources differ in length")
        validate_classes(self.labels, self.class_names, self.name)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def heldout_mask(self, fraction: float, seed: int) -> np.ndarray:
        """A stratified, seeded choice of held-out cards (True = held out)."""
        rng = np.random.default_rng(seed)
        mask = np.zeros(len(self.labels), dtype=bool)
        for c in range(self.n_classes):
            idx = np.flatnonzero(self.labels == c)
            rng.shuffle(idx)
            k = int(round(len(idx) * fraction))
            if len(idx) > 1:
                k = min(k, len(idx) - 1)  # keep at least one training example per class
            mask[idx[:k]] = True
        return mask

    def skip_report(self) -> str:
        """Human-readable list of skipped files and notes ("" when there is nothing to say)."""
        lines = []
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        if self.notes:
            lines.append("note:" if len(self.notes) == 1 else "notes:")
            lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def validate_classes(labels: np.ndarray, class_names: list[str], name: str = "") -> None:
    where = f" in {name}" if name else ""
    if len(labels) == 0:
        raise DatasetError(f"the dataset{where} has no usable images")
    present = np.unique(labels)
    if len(present) < 2:
        raise DatasetError(
            f"the dataset{where} has {len(present)} class(es) with images; at least 2 are needed"
        )
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError("labels out of range of class_names")


def load_dataset(
    config: DatasetConfig | Scene, image_size: int | None = None, progress: bool = True, cache: bool = False
) -> Dataset:
    """Load the dataset a scene names. ``image_size`` (square side) overrides the config's.

    ``progress`` False: no progress bar (``--quiet``). ``cache``: an image folder's decoded
    images are reused while its files are unchanged (``load_image_folder``).
    """
    scene = config if isinstance(config, Scene) else None
    cfg = config.dataset if isinstance(config, Scene) else config
    size = image_size if image_size else cfg.image_size
    if cfg.kind == "digits":
        from game.data.digits import load_digits_dataset

        data = load_digits_dataset()
    elif cfg.kind == "shapes":
        from game.data.shapes import load_shapes_dataset

        data = load_shapes_dataset(size=size or 32, seed=cfg.seed)
    else:
        from game.data.folder import load_image_folder

        root = scene.resolve_path(cfg.path) if scene else cfg.path
        csv = (scene.resolve_path(cfg.labels_csv) if scene else cfg.labels_csv) if cfg.labels_csv else None
        data = load_image_folder(
            root,
            labels_csv=csv,
            image_size=size or 64,
            max_pixels=cfg.max_pixels,
            progress=progress,
            allow_outside=getattr(cfg, "labels_outside", False),
            cache=cache,
        )
    if cfg.max_images and len(data.images) > cfg.max_images:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(data.images))[: cfg.max_images])
        data = Dataset(
            data.images[keep],
            data.labels[keep],
            data.class_names,
            [data.sources[i] for i in keep],
            data.skipped,
            data.name,
            data.notes,
        )
    return data
