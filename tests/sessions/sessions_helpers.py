"""Small synthetic workspaces and sample events for the session tests (no network, no t-SNE)."""

from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np

from game.core import events as ev
from game.core.workspace import Workspace


def fine_tune_twice(loaded, controller) -> list[int]:
    """Moves two training cards the network gets right to a wrong class, one fine-tune each (the
    first by one class, the second by two); returns the two cards."""
    from game.learning.headless import apply_moves

    ws = loaded.workspace
    cards = [int(c) for c in (ws.is_train & (ws.predictions == ws.labels)).nonzero()[0][:2]]
    apply_moves(loaded, [(cards[0], (int(ws.labels[cards[0]]) + 1) % 10)], controller=controller)
    apply_moves(loaded, [(cards[1], (int(ws.labels[cards[1]]) + 2) % 10)], controller=controller)
    return cards


def tiny_workspace(n: int = 24, classes: int = 3, seed: int = 0) -> Workspace:
    rng = np.random.default_rng(seed)
    top5 = np.stack([(np.arange(n) + k) % classes for k in range(classes)], axis=1).astype(np.int64)
    return Workspace(
        images=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
        labels=np.arange(n) % classes,
        class_names=[f"c{i}" for i in range(classes)],
        top5_classes=top5,
        top5_scores=rng.random((n, classes)).astype(np.float32),
        features=rng.normal(size=(n, 6)).astype(np.float32),
        positions=rng.normal(size=(n, 3)).astype(np.float32),
        is_train=np.arange(n) % 4 != 0,
        sources=[f"img{i}.png" for i in range(n)],
    )


def _sample_value(name: str, hint, ws: Workspace, rng: np.random.Generator):
    n = ws.n_cards
    optional = [h for h in typing.get_args(hint) if h is not type(None)]
    if isinstance(hint, types.UnionType) and len(optional) == 1:  # ``X | None``: a value of X
        hint = optional[0]
    if hint is np.ndarray:
        per_card = {
            "labels": lambda: rng.integers(0, ws.n_classes, n).astype(np.int64),
            "top5_classes": lambda: rng.integers(0, ws.n_classes, (n, ws.top5_classes.shape[1])),
            "top5_scores": lambda: rng.random((n, ws.top5_scores.shape[1])).astype(np.float32),
            "features": lambda: rng.normal(size=ws.features.shape).astype(np.float32),
            "positions": lambda: rng.normal(size=(n, 3)).astype(np.float32),
            "image": lambda: rng.integers(0, 255, ws.images.shape[1:], dtype=np.uint8),
            "feature": lambda: rng.normal(size=ws.features.shape[1]).astype(np.float32),
        }
        return per_card.get(name, lambda: rng.normal(size=(4, 2)))()
    if name == "card":
        return int(rng.integers(0, n))
    if name in ("label", "nearest_class", "old_label", "new_label"):
        return int(rng.integers(0, ws.n_classes))
    if name == "action":
        return "relabel"
    if hint is int:
        return int(rng.integers(1, 5))
    if hint is float:
        return float(rng.random())
    if hint is str:
        return f"{name}-ü"
    if hint is bool:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:  # a closed set of strings (events.JobState, MessageLevel, ...)
        return typing.get_args(hint)[-1]
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            k = ws.top5_classes.shape[1]
            return tuple(int(i) for i in range(k)) if args[0] is int else tuple(0.1 * i for i in range(k))
        return tuple(float(rng.normal()) for _ in args)
    raise TypeError(f"no sample for {name}: {hint}")


def sample_events(ws: Workspace, seed: int = 1) -> list[ev.Event]:
    """One event of every registered kind, with plausible values for ``ws``."""
    rng = np.random.default_rng(seed)
    out = []
    for cls in ev.EVENT_TYPES.values():
        hints = typing.get_type_hints(cls, vars(ev))
        kwargs = {f.name: _sample_value(f.name, hints[f.name], ws, rng) for f in dataclasses.fields(cls)}
        out.append(cls(**kwargs))
    return out


def assert_events_equal(a: ev.Event, b: ev.Event) -> None:
    assert type(a) is type(b), (a, b)
    fa, fb = a.to_fields(), b.to_fields()
    assert fa.keys() == fb.keys()
    for k in fa:
        va, vb = fa[k], fb[k]
        if isinstance(va, np.ndarray):
            assert isinstance(vb, np.ndarray), k
            assert va.dtype == vb.dtype and va.shape == vb.shape, k
            np.testing.assert_array_equal(va, vb)
        elif isinstance(va, float) and np.isnan(va):
            assert np.isnan(vb)
        else:
            assert tuple(va) == tuple(vb) if isinstance(va, tuple) else va == vb, (k, va, vb)
