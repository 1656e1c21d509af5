"""Shared pieces of the ``explain`` and ``whatif`` commands: open just what they need, validate.

The commands only need the dataset and the network, not the 3-D layout, so they skip t-SNE
(``open_scene`` would compute or load the layout for nothing). Card ``N`` is the N-th image of
the dataset, the same index as in the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from game.core.errors import UserError
from game.core.scene import Scene
from game.data.dataset import Dataset, load_dataset
from game.nets.build import build_network
from game.nets.network import Network


@dataclass
class CardContext:
    dataset: Dataset
    network: Network
    index: int
    image: np.ndarray  # uint8 (H, W, C)

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset.class_names)

    def describe(self, c: int) -> str:
        names = self.class_names
        return f"{c} ({names[c]})" if 0 <= c < len(names) and names[c] != str(c) else str(c)


def open_card(scene: Scene, card: int, progress: bool = False) -> CardContext:
    """Dataset and network of ``scene`` and card ``card``'s image; a bad index is a ``UserError``.

    ``progress`` False (what ``explain`` and ``whatif`` pass): no bar at all, neither the
    network's training nor the dataset's "Reading images" (it was left on before).
    """
    data = load_dataset(scene, progress=progress)
    n = len(data.images)
    if not 0 <= card < n:
        raise UserError(f"--card {card} is out of range: the scene has {n} cards (0..{n - 1})")
    is_train = ~data.heldout_mask(scene.dataset.heldout_fraction, scene.dataset.seed)
    network = build_network(scene, data, is_train, progress=progress)
    return CardContext(data, network, card, data.images[card])


def parse_target(value: str | None, class_names: list[str], n_classes: int) -> int | None:
    """``--target`` as a class index or a class name; None means the predicted class."""
    if value is None:
        return None
    if value in class_names and not value.isdigit():
        return class_names.index(value)
    try:
        c = int(value)
    except ValueError:
        raise UserError(f"--target {value!r} is neither a class index nor a class name") from None
    if not 0 <= c < n_classes:
        raise UserError(
            f"--target {c} is out of range: the network has {n_classes} classes (0..{n_classes - 1})"
        )
    return c


def parse_mask(value: str, shape: tuple[int, int]) -> np.ndarray:
    """``x0,y0,x1,y1`` (pixels, x1 and y1 exclusive) -> a boolean mask; bad input is a ``UserError``."""
    from game.explain.whatif import rect_mask

    parts = value.split(",")
    try:
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--mask must be four integers x0,y0,x1,y1, got {value!r}") from None
    try:
        return rect_mask(shape, x0, y0, x1, y1)
    except ValueError as exc:
        raise UserError(f"bad --mask: {exc}") from None
