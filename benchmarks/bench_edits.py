"""Simulated person: follow the guidance, move mislabelled cards home, measure held-out accuracy.

On the embedded default (or ``--dataset SCENE``) a seeded fraction of the training labels is
flipped and the small CNN is trained on the noisy labels (``--base-epochs``, long enough that it
memorises them, as a real network does). Then a simulated person repeatedly asks the guidance for
the most suspicious training card it has not looked at yet; if that card's label is wrong it
moves the card to its true class's centroid through the app's own edit path
(``game.learning.headless.apply_moves``: ``CardDropped`` events, the ``FineTuneController``, one
fine-tune per edit), otherwise it leaves the card alone. Suspicion scores are recomputed after
every fine-tune, as in the app.

Curves of held-out accuracy (against the true labels) by number of edits K:

* ``ce_only``: the same edit path with the feature-space terms switched off
  (``feature_weight = 0``, ``preserve_weight = 0``): relabel + cross-entropy (with replay);
* ``full``: the fine-tune method as configured by the scene;
* ``full_batched``: the same person, but one fine-tune per ``--batch`` edits;
* ``scratch``: retraining from scratch on the labels corrected so far (the ceiling), every
  ``--scratch-every`` edits (``null`` in between).

Also the guidance's AUROC for the injected errors, the precision among visited cards, and the
time per edit. Timings were taken while other work shared the CPU: compare variants of one run.

    .venv/bin/python benchmarks/bench_edits.py [--seed 0] [--noise 0.15] [--classes 0,1,2]
        [--dataset scenes/x.toml] [--max-edits 50] [--json OUT] [--plot OUT.png]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def subset_classes(data: Any, spec: str) -> Any:
    """The dataset restricted to the named (or indexed) classes, labels renumbered 0..k-1."""
    from game.core.errors import UserError

    wanted = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in data.class_names:
            wanted.append(data.class_names.index(item))
        elif item.isdigit() and int(item) < data.n_classes:
            wanted.append(int(item))
        else:
            raise UserError(f"--classes: unknown class {item!r} (classes: {', '.join(data.class_names)})")
    if len(set(wanted)) < 2:
        raise UserError("--classes needs at least two distinct classes")
    wanted = sorted(set(wanted))
    keep = np.isin(data.labels, wanted)
    remap = np.full(data.n_classes, -1, dtype=np.int64)
    remap[wanted] = np.arange(len(wanted))
    return dataclasses.replace(
        data,
        images=data.images[keep],
        labels=remap[data.labels[keep]],
        class_names=[data.class_names[c] for c in wanted],
        sources=[s for s, k in zip(data.sources, keep) if k],
        skipped=list(data.skipped),
    )


def train_small_cnn(
    scene: Any, data: Any, labels: np.ndarray, is_train: np.ndarray, epochs: int, seed: int
) -> Any:
    """A small CNN trained from scratch on ``labels`` (seeded, so variants are comparable).

    Cached by content (images, labels, split, epochs, seed) in the cache folder's ``bench_models``:
    A/B runs of the learning settings share their base and clean-label models.
    """
    import torch

    from game.nets.architectures import build_module, input_size_for
    from game.nets.build import TRAINING_RECIPE, train_classifier
    from game.nets.cache import cache_dir, content_hash
    from game.nets.network import Network
    from game.nets.weights import load_weights, save_weights

    torch.manual_seed(seed)  # the initial weights too
    channels = data.images.shape[-1]
    module = build_module("small_cnn", data.n_classes, channels)
    key = content_hash(TRAINING_RECIPE, data.images, labels, is_train, data.n_classes, epochs, seed)
    path = cache_dir("bench_models") / f"small_cnn-{key}.safetensors"
    if path.is_file():
        load_weights(module, path)
    else:
        train_classifier(
            module,
            dataclasses.replace(data, labels=labels),
            is_train,
            epochs=epochs,
            seed=seed,
            progress=False,
        )
        save_weights(module, path)
    return Network(
        module,
        "small_cnn",
        data.n_classes,
        channels,
        input_size_for("small_cnn", data.images.shape[1]),
        scene.network.feature_layer,
        "centred",
    )


def network_probability_of_label(ws: Any) -> np.ndarray:
    """The network's own softmax probability of each card's given label (0 when not in its top 5)."""
    hit = ws.top5_classes == ws.labels[:, None]
    return np.where(hit, ws.top5_scores, 0.0).sum(1)


def heldout_accuracy(predictions: np.ndarray, truth: np.ndarray, is_train: np.ndarray) -> float:
    held = ~is_train
    return float(np.mean(predictions[held] == truth[held]))


def measured_accuracy(base: dict[str, Any], predictions: np.ndarray, network: Any) -> float:
    """Held-out accuracy against the true labels: the workspace's held-out cards (``predictions``)
    and, where ``base`` has an ``"extra"`` evaluation set (images, labels: images of the same
    distribution that the scene never holds, ``bench_suite.py --eval-extra``), those too, as
    ``network`` predicts them. Why the extra cards: a generated dataset's 240 held-out cards
    measure a single edit's effect in steps of 0.42 points, and the p95 of those steps over 30
    edits was mostly the sampling noise of the 240 (issue 13, twelfth session)."""
    truth, held = base["truth"], ~base["is_train"]
    right, n = int(np.sum(predictions[held] == truth[held])), int(held.sum())
    extra = base.get("extra")
    if extra is not None:
        images, labels = extra
        predicted = network.infer(images, batch_size=base["scene"].network.batch_size).top5_classes[:, 0]
        right, n = right + int(np.sum(predicted == labels)), n + len(labels)
    return right / n


def build_base(args: argparse.Namespace, data: Any = None) -> dict[str, Any]:
    """Dataset, noisy labels, the network trained on them, its features and layout.

    ``data``: a ``Dataset`` to use instead of the scene's (generated datasets in bench_suite).
    """
    from game.core.errors import UserError
    from game.core.scene import load_scene
    from game.data.dataset import load_dataset
    from game.layout.projector import Projector
    from game.learning.guidance import inject_label_noise
    from game.pipeline import make_workspace

    scene = load_scene(args.dataset)
    if scene.network.arch != "small_cnn" or scene.network.weights:
        raise UserError(
            "the benchmark retrains the network on noisy labels: it needs network.arch = small_cnn"
        )
    data = load_dataset(scene) if data is None else data
    if args.classes:
        data = subset_classes(data, args.classes)
    is_train = ~data.heldout_mask(scene.dataset.heldout_fraction, scene.dataset.seed)
    truth = data.labels.copy()
    noisy, flipped = inject_label_noise(truth, data.n_classes, args.noise, args.seed, mask=is_train)
    t = time.perf_counter()
    network = train_small_cnn(scene, data, noisy, is_train, args.base_epochs, args.seed)
    train_seconds = time.perf_counter() - t
    inference = network.infer(data.images, batch_size=scene.network.batch_size)
    projector = Projector(scene.layout)
    layout = projector.fit(inference.features)
    noisy_data = dataclasses.replace(data, labels=noisy)
    workspace = make_workspace(noisy_data, inference, layout, is_train, network.feature_layer)
    return {
        "scene": scene,
        "data": noisy_data,
        "truth": truth,
        "noisy": noisy,
        "flipped": flipped,
        "is_train": is_train,
        "network": network,
        "projector": projector,
        "layout": layout,
        "workspace": workspace,
        "train_seconds": train_seconds,
    }


def fresh_loaded(base: dict[str, Any], learning: dict[str, Any] | None = None) -> Any:
    """A private ``LoadedScene`` over the noisy base, with learning settings overridden."""
    from game.pipeline import LoadedScene

    scene = copy.deepcopy(base["scene"])
    for k, v in (learning or {}).items():
        setattr(scene.learning, k, v)
    return LoadedScene(
        scene,
        base["data"],
        base["network"].clone(),
        base["projector"],
        copy.deepcopy(base["layout"]),
        base["workspace"].copy(),
        {},
    )


def simulate(
    base: dict[str, Any], args: argparse.Namespace, learning: dict[str, Any] | None, batch: int, name: str
) -> dict[str, Any]:
    """The simulated person; returns the accuracy curve by K, the visit log and timings."""
    from game.core.worker import Worker
    from game.learning.controller import FineTuneController
    from game.learning.guidance import (
        APP_ORDER,
        decided_rule,
        suspicion,
        top_suspects,
        visit_priority,
        within_top,
    )
    from game.learning.headless import apply_moves

    loaded = fresh_loaded(base, learning)
    ws = loaded.workspace
    truth, flipped, is_train = base["truth"], base["flipped"], base["is_train"]
    worker = Worker(torch_threads=loaded.scene.learning.torch_threads)
    controller = FineTuneController(loaded, worker)
    curve: list[float | None] = [measured_accuracy(base, ws.predictions, loaded.network)]
    # With extra evaluation cards, also the scene's held-out cards alone (what the curve was)
    heldout_curve: list[float] = [heldout_accuracy(ws.predictions, truth, is_train)]
    visited: list[int] = []
    edited: list[int] = []
    edit_seconds: list[float] = []
    guidance_seconds: list[float] = []
    job_seconds: list[float] = []
    moves: list[dict[str, Any]] = []  # per edit: flipped, landed, neighbours kept, held-out change
    queue: list[tuple[int, int]] = []
    rules: list[str] = []  # per refresh, the rule taken ("auto": the first refresh's, kept)
    try:
        while len(edited) < args.max_edits:
            t = time.perf_counter()
            details = suspicion(ws.features, ws.labels, ws.n_classes, seed=args.seed)
            # the app's order by default (guidance.APP_ORDER); --order in bench_suite: A/B
            rule, _, window = str(getattr(args, "order", None) or APP_ORDER).partition("@")
            # "auto" and "auto_partial" are decided once, before any edit (auto_rule's why)
            rule = rules[0] if rules else decided_rule(rule, details, ws.labels, ws.predictions, ws.is_train)
            rules.append(rule)
            scores = visit_priority(details, ws.labels, ws.predictions, ws.is_train, rule)
            guidance_seconds.append(time.perf_counter() - t)
            # The person looks at suspects in order until it has a batch of wrong labels to fix.
            looked = np.array(visited + [c for c, _ in queue], dtype=np.int64)
            exclude = ~is_train.copy()
            exclude[looked] = True
            if window:  # RULE@W: the suspicion's first W, reordered by the rule
                candidates = within_top(details.scores, scores, int(window), exclude=exclude)
            else:
                candidates = top_suspects(scores, len(ws.labels), exclude=exclude)
            if not len(candidates):
                break
            for card in candidates:
                visited.append(int(card))
                if ws.labels[card] != truth[card]:
                    queue.append((int(card), int(truth[card])))
                    if len(queue) >= batch or len(edited) + len(queue) >= args.max_edits:
                        break
            if not queue:
                break
            t = time.perf_counter()
            report = apply_moves(
                loaded, queue, controller=controller, together=True, seed=args.seed + len(edited)
            )
            elapsed = time.perf_counter() - t
            job_seconds.append(elapsed)
            edit_seconds += [elapsed / len(queue)] * len(queue)
            if report.messages:
                print(f"[{name}] " + " | ".join(report.messages), file=sys.stderr)
            acc_before = next(a for a in reversed(curve) if a is not None)
            acc = measured_accuracy(base, ws.predictions, controller.store.network())
            heldout_curve.append(heldout_accuracy(ws.predictions, truth, is_train))
            names = ws.class_names
            for m, (_, target) in zip(report.moves, queue, strict=True):
                moves.append(
                    {
                        "card": m.card,
                        "flipped": m.predicted_after == names[target],
                        "landed": m.nearest_class == names[target],
                        "kept": m.neighbours_kept,
                        "heldout_change": (acc - acc_before) / len(queue),
                        "heldout_only_change": (heldout_curve[-1] - heldout_curve[-2]) / len(queue),
                        "steps": m.steps,
                    }
                )
            for i, (card, _) in enumerate(queue):
                edited.append(card)
                curve.append(acc if i == len(queue) - 1 else None)  # measured once per job
            queue = []
            print(f"[{name}] K={len(edited):3d} held-out {acc:.4f} ({elapsed:.1f} s)", file=sys.stderr)
    finally:
        controller.close()
        worker.close()
    return {
        "curve": curve,
        "heldout_curve": heldout_curve,
        "visited": visited,
        "edited": edited,
        "precision_visited": float(np.mean(flipped[visited])) if visited else float("nan"),
        "seconds_per_edit": float(np.median(edit_seconds)) if edit_seconds else float("nan"),
        "seconds_per_job": float(np.median(job_seconds)) if job_seconds else float("nan"),
        "guidance_seconds": float(np.median(guidance_seconds)) if guidance_seconds else float("nan"),
        "labels_fixed": int(np.sum(ws.labels[edited] == truth[edited])) if edited else 0,
        "moves": moves,
        "rules": rules,
    }


def scratch_curve(
    base: dict[str, Any], edited: list[int], args: argparse.Namespace
) -> tuple[list[Any], float]:
    """Held-out accuracy after retraining from scratch with the first K edits corrected."""
    truth, is_train = base["truth"], base["is_train"]
    n = len(edited)
    curve: list[Any] = [None] * (n + 1)
    every = max(1, args.scratch_every)
    ks = sorted(set(list(range(0, n + 1, every)) + [n]))
    seconds = []
    for k in ks:
        labels = base["noisy"].copy()
        labels[edited[:k]] = truth[edited[:k]]
        t = time.perf_counter()
        net = train_small_cnn(base["scene"], base["data"], labels, is_train, args.base_epochs, args.seed)
        seconds.append(time.perf_counter() - t)
        pred = net.infer(base["data"].images).top5_classes[:, 0]
        curve[k] = heldout_accuracy(pred, truth, is_train)
        print(f"[scratch] K={k:3d} held-out {curve[k]:.4f}", file=sys.stderr)
    return curve, float(np.median(seconds))


def write_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    styles = {
        "ce_only": ("relabel, cross-entropy only", "tab:orange", "-"),
        "full": ("full method (one fine-tune per edit)", "tab:blue", "-"),
        "full_batched": (
            f"full method, batched ({result['config']['batch']} edits per job)",
            "tab:blue",
            ":",
        ),
        "scratch": ("retrain from scratch (ceiling)", "tab:green", "--"),
    }
    for key, (label, colour, ls) in styles.items():
        ys = result["curves"].get(key)
        if not ys:
            continue
        pts = [(k, y) for k, y in enumerate(ys) if y is not None]
        if pts:
            ax.plot(
                *zip(*pts),
                ls,
                color=colour,
                label=label,
                marker="o" if key != "full" and key != "ce_only" else None,
                ms=3,
            )
    if result.get("clean_accuracy") is not None:
        ax.axhline(result["clean_accuracy"], color="grey", lw=0.8, ls="-.", label="trained on clean labels")
    ax.set_xlabel("guided edits K")
    ax.set_ylabel("held-out accuracy")
    cfg = result["config"]
    ax.set_title(f"{cfg['noise']:.0%} label noise, seed {cfg['seed']}; guidance AUROC {result['auroc']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.15, help="fraction of training labels flipped")
    parser.add_argument("--classes", default="", help="comma-separated subset of classes (names or indices)")
    parser.add_argument(
        "--dataset", default=None, metavar="SCENE", help="scene file (default: embedded digits)"
    )
    parser.add_argument("--max-edits", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10, help="edits per job in the batched variant")
    parser.add_argument(
        "--base-epochs", type=int, default=40, help="epochs of the noisy base model (memorises)"
    )
    parser.add_argument("--scratch-every", type=int, default=10, help="retrain from scratch every N edits")
    parser.add_argument(
        "--variants", default="ce_only,full,full_batched,scratch", help="comma-separated, or 'none'"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", metavar="OUT")
    parser.add_argument(
        "--plot", default="", metavar="OUT.png", help="default: next to --json, or bench_edits.png"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from game.core.errors import UserError
    from game.learning.guidance import (
        ambiguity_scores,
        auroc,
        cross_validated_probabilities,
        knn_disagreement,
        suspicion_scores,
    )

    torch.set_num_threads(args.threads)
    variants = {v.strip() for v in args.variants.split(",") if v.strip()}
    try:
        base = build_base(args)
    except UserError as exc:
        print(f"bench_edits: error: {exc}", file=sys.stderr)
        return 2
    ws = base["workspace"]
    truth, flipped, is_train = base["truth"], base["flipped"], base["is_train"]
    t = time.perf_counter()
    scores = suspicion_scores(ws.features, ws.labels, ws.n_classes, seed=args.seed)
    guidance_seconds = time.perf_counter() - t
    start_acc = heldout_accuracy(ws.predictions, truth, is_train)
    # The parts of the score, and the label-agnostic peer (the network's own margin).
    probs = cross_validated_probabilities(ws.features, ws.labels, ws.n_classes, seed=args.seed)
    doubt = 1.0 - probs[np.arange(ws.n_cards), ws.labels]
    parts = {
        "cross_validated_only": auroc(doubt[is_train], flipped[is_train]),
        "knn_only": auroc(knn_disagreement(ws.features, ws.labels)[is_train], flipped[is_train]),
        "ambiguity_label_agnostic": auroc(ambiguity_scores(ws.top5_scores)[is_train], flipped[is_train]),
        "network_self_confidence": auroc(1.0 - network_probability_of_label(ws)[is_train], flipped[is_train]),
    }
    result: dict[str, Any] = {
        "config": {
            "seed": args.seed,
            "noise": args.noise,
            "classes": args.classes or "all",
            "dataset": base["scene"].source,
            "max_edits": args.max_edits,
            "batch": args.batch,
            "base_epochs": args.base_epochs,
            "cards": int(ws.n_cards),
            "train_cards": int(is_train.sum()),
            "flipped": int(flipped.sum()),
        },
        "auroc": auroc(scores[is_train], flipped[is_train]),
        "auroc_parts": parts,
        "heldout_no_edits": start_acc,
        "train_fits_noisy_labels": float(np.mean(ws.predictions[is_train] == ws.labels[is_train])),
        "guidance_seconds": guidance_seconds,
        "base_train_seconds": base["train_seconds"],
        "curves": {},
    }
    print(f"AUROC {result['auroc']:.4f}; held-out accuracy with no edits {start_acc:.4f}", file=sys.stderr)
    runs: dict[str, dict[str, Any]] = {}
    if "ce_only" in variants:
        runs["ce_only"] = simulate(base, args, {"feature_weight": 0.0, "preserve_weight": 0.0}, 1, "ce_only")
    if "full" in variants:
        runs["full"] = simulate(base, args, None, 1, "full")
    if "full_batched" in variants:
        runs["full_batched"] = simulate(base, args, None, args.batch, "full_batched")
    for key, run in runs.items():
        result["curves"][key] = run["curve"]
        result[key] = {k: v for k, v in run.items() if k not in ("curve", "moves")}
    main_run = runs.get("full") or next(iter(runs.values()), None)
    if main_run is not None:
        result["precision_visited"] = main_run["precision_visited"]
        result["seconds_per_edit"] = main_run["seconds_per_edit"]
    else:
        top = np.argsort(-np.where(is_train, scores, -np.inf), kind="stable")[: args.max_edits]
        result["precision_visited"] = float(flipped[top].mean())
    if "scratch" in variants:
        edited = (
            main_run["edited"]
            if main_run
            else list(
                np.argsort(-np.where(is_train & flipped, scores, -np.inf), kind="stable")[: args.max_edits]
            )
        )
        result["curves"]["scratch"], result["scratch_train_seconds"] = scratch_curve(base, edited, args)
        clean = train_small_cnn(base["scene"], base["data"], truth, is_train, args.base_epochs, args.seed)
        result["clean_accuracy"] = heldout_accuracy(
            clean.infer(ws.images).top5_classes[:, 0], truth, is_train
        )
    k30 = min(30, args.max_edits)
    checks = {}
    for key in ("ce_only", "full", "full_batched", "scratch"):
        ys = result["curves"].get(key)
        if ys and len(ys) > k30 and ys[k30] is not None:
            checks[f"{key}_at_{k30}"] = ys[k30]
    if f"full_at_{k30}" in checks:
        checks["full_gain_points"] = 100 * (checks[f"full_at_{k30}"] - start_acc)
        if f"ce_only_at_{k30}" in checks:
            checks["full_minus_ce_only_points"] = 100 * (
                checks[f"full_at_{k30}"] - checks[f"ce_only_at_{k30}"]
            )
    result["at_30"] = checks
    result["targets"] = {
        "auroc_ge_0.98": result["auroc"] >= 0.98,
        "full_gain_ge_3_points": checks.get("full_gain_points", -1) >= 3.0,
        "full_above_ce_only": checks.get("full_minus_ce_only_points", -1) > 0,
    }
    text = json.dumps(result, indent=2, default=float)
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("curves", "ce_only", "full", "full_batched")},
            indent=2,
            default=float,
        )
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text, encoding="utf-8")
    plot = (
        Path(args.plot)
        if args.plot
        else (Path(args.json).with_suffix(".png") if args.json else Path("bench_edits.png"))
    )
    write_plot(result, plot)
    print(f"plot: {plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
