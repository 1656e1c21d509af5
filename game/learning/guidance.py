"""Guidance: which cards to look at first, because their label is probably wrong.

Two different questions, two different scores:

* **Suspicion** ("this label is probably wrong") must look at the label. A network's own
  confidence is useless for it on its training cards: it memorised them, wrong labels included.
  So the score combines two label-aware, *held-out* views of the features:

  - cross-validated self-confidence: a fast linear classifier (logistic regression on
    PCA-reduced, standardised features) is trained on K-1 folds and asked about the K-th, so
    every card is judged by a model that never saw its label; the score is one minus the
    probability it gives the card's *given* label;
  - k-NN label disagreement: the (distance-weighted) share of a card's nearest neighbours in
    feature space whose label differs from its own.

  Measured on digits with injected label errors, label-aware scores like these reach an AUROC
  of 0.97-0.998, where label-agnostic entropy sits at chance.
* **Ambiguity** ("the network cannot make up its mind") ignores the label: one minus the margin
  between the two best softmax probabilities. It ranks cards differently and is shown apart.

Everything here is numpy and scikit-learn, fast enough (well under a second for 2,000 cards)
to refresh on the worker after every fine-tune.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

if TYPE_CHECKING:
    from game.core.workspace import Workspace

DEFAULT_FOLDS = 5
DEFAULT_NEIGHBOURS = 10
DEFAULT_PCA_DIMS = 32


def _reduce(features: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """Standardised PCA scores: a small, well-conditioned input for both views."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    x = x - x.mean(0)
    dims = min(dims, x.shape[1], max(len(x) - 1, 1))
    if dims < x.shape[1]:
        x = PCA(n_components=dims, random_state=seed).fit_transform(x)
    std = x.std(0)
    scaled: np.ndarray = x / np.where(std > 1e-12, std, 1.0)
    return scaled


def _folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold index per card (each class spread evenly over the folds)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # so small classes do not all land in fold 0
    return fold


def cross_validated_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    pca_dims: int = DEFAULT_PCA_DIMS,
    reduced: np.ndarray | None = None,
) -> np.ndarray:
    """``(N, n_classes)`` class probabilities, each card's from a model that never saw it."""
    labels = np.asarray(labels, dtype=np.int64)
    x = _reduce(features, pca_dims, seed) if reduced is None else reduced
    n = len(labels)
    probs = np.full((n, n_classes), 1.0 / n_classes)
    folds = max(2, min(folds, n))
    fold = _folds(labels, folds, seed)
    for f in range(folds):
        test = fold == f
        train = ~test
        present = np.unique(labels[train])
        if not test.any() or len(present) < 2:
            continue
        clf = LogisticRegression(C=1.0, max_iter=200, tol=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x[train], labels[train])
        p = np.zeros((int(test.sum()), n_classes))
        p[:, clf.classes_] = clf.predict_proba(x[test])
        probs[test] = p
    return probs


def _neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each row's ``k`` nearest other rows, nearest first."""
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, 1:], idx[:, 1:]  # drop each card itself


def _disagreement(dist: np.ndarray, idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    w = 1.0 / (dist + 1e-6 + np.median(dist[:, :1]))
    differs = labels[idx] != labels[:, None]
    share: np.ndarray = (w * differs).sum(1) / w.sum(1)
    return share


def knn_disagreement(
    features: np.ndarray,
    labels: np.ndarray,
    neighbours: int = DEFAULT_NEIGHBOURS,
    reduced: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per card, the distance-weighted share of its nearest neighbours with another label."""
    labels = np.asarray(labels, dtype=np.int64)
    x = _reduce(features, DEFAULT_PCA_DIMS, seed) if reduced is None else reduced
    k = min(neighbours, len(labels) - 1)
    if k < 1:
        return np.zeros(len(labels))
    return _disagreement(*_neighbours(x, k), labels)


@dataclass
class Suspicion:
    """The suspicion scores and the two views they came from, kept so a card's score can be
    explained in words later (``explain_suspect``) without computing anything again."""

    scores: np.ndarray  # (N,) float32 in [0, 1]
    held_out: np.ndarray = field(repr=False)  # (N, C) cross-validated class probabilities
    neighbours: np.ndarray = field(repr=False)  # (N, k) each card's nearest neighbours, nearest first


def suspicion(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    neighbours: int = DEFAULT_NEIGHBOURS,
    pca_dims: int = DEFAULT_PCA_DIMS,
    knn_weight: float = 0.5,
) -> Suspicion:
    """``suspicion_scores`` plus the held-out probabilities and neighbour lists behind them."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    n = len(labels)
    k = min(neighbours, n - 1)
    if n < 3 or k < 1:
        return Suspicion(
            np.zeros(n, dtype=np.float32),
            np.full((n, n_classes), 1.0 / max(n_classes, 1)),
            np.zeros((n, 0), dtype=np.int64),
        )
    x = _reduce(features, pca_dims, seed)
    probs = cross_validated_probabilities(features, labels, n_classes, seed, folds, pca_dims, reduced=x)
    doubt = 1.0 - probs[np.arange(n), labels]
    dist, idx = _neighbours(x, k)
    disagree = _disagreement(dist, idx, labels)
    scores = ((1.0 - knn_weight) * doubt + knn_weight * disagree).astype(np.float32)
    return Suspicion(scores, probs, idx)


def suspicion_scores(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    neighbours: int = DEFAULT_NEIGHBOURS,
    pca_dims: int = DEFAULT_PCA_DIMS,
    knn_weight: float = 0.5,
) -> np.ndarray:
    """``(N,)`` scores in [0, 1]; higher means the card's given label is more probably wrong.

    The mean of the cross-validated doubt (1 - p(given label)) and the k-NN disagreement,
    ``knn_weight`` setting the share of the latter.
    """
    return suspicion(features, labels, n_classes, seed, folds, neighbours, pca_dims, knn_weight).scores


def _percent(p: float) -> str:
    """72 %, 99.9 % (never a rounded-up "100 %" for a probability short of one)."""
    x = 100.0 * float(p)
    if 99.5 <= x < 100.0:
        return f"{np.floor(10.0 * x) / 10.0:.1f} %"
    if 0.0 < x < 0.5:
        return f"{x:.1f} %"
    return f"{x:.0f} %"


def explain_suspect(
    workspace: Workspace,
    card: int,
    details: Suspicion | None = None,
    seed: int = 0,
) -> str:
    """Why ``card``'s label is suspect, in one line a person can check by looking.

    E.g. "labelled 3; 8 of its 10 look-alikes are 9; a classifier that never saw its label says
    9 at 81 %; the network says 9 at 72 %". Look-alikes are the card's nearest neighbours in the
    features the scores use; the held-out classifier is the cross-validated view. The network's
    own top-1 is added last and, when it agrees with the given label on a training card, marked
    as learnt: it was trained on that label, so its confidence says little (see the module
    docstring). ``details``: the ``Suspicion`` the scores came from (computed here if None; the
    game keeps the one from its last refresh so this costs nothing). Labels are read from the
    workspace now, so a card relabelled since is described as it is.
    """
    ws = workspace
    card = int(card)
    if not 0 <= card < ws.n_cards:
        raise IndexError(f"card {card} out of range 0..{ws.n_cards - 1}")
    if details is None or len(details.scores) != ws.n_cards:
        details = suspicion(ws.features, ws.labels, ws.n_classes, seed=seed)
    names = list(ws.class_names)

    def name(k: int) -> str:
        return str(names[k]) if 0 <= k < len(names) else str(k)

    label = int(ws.labels[card])
    parts = [f"labelled {name(label)}"]
    near = np.asarray(details.neighbours[card], dtype=np.int64)
    if len(near):
        counts = np.bincount(np.asarray(ws.labels)[near], minlength=ws.n_classes)
        same = int(counts[label])
        others = counts.copy()
        others[label] = -1
        other = int(np.argmax(others))
        k = len(near)
        if counts[other] <= 0:
            parts.append(f"all {k} of its look-alikes are {name(label)} too")
        else:
            text = f"{int(counts[other])} of its {k} look-alikes are {name(other)}"
            if same > counts[other]:
                text += f" ({same} are {name(label)})"
            elif same == 0:
                text += f", none is {name(label)}"
            parts.append(text)
    held = np.asarray(details.held_out[card], dtype=np.float64)
    if held.size and np.isfinite(held).all():
        best = int(np.argmax(held))
        lead = "a classifier that never saw its label"
        if best != label:
            text = (
                f"{lead} says {name(best)} at {_percent(held[best])} ({name(label)}: {_percent(held[label])})"
            )
        elif held[label] < 0.75:
            text = f"{lead} gives {name(label)} only {_percent(held[label])}"
        else:
            text = f"{lead} agrees ({name(label)} at {_percent(held[label])})"
        parts.append(text)
    predicted = int(ws.top5_classes[card][0])
    text = f"the network says {name(predicted)} at {_percent(float(ws.top5_scores[card][0]))}"
    if predicted == label and bool(ws.is_train[card]):
        text += " (trained on this label)"
    parts.append(text)
    return "; ".join(parts)


def ambiguity_scores(scores: np.ndarray) -> np.ndarray:
    """``(N,)`` in [0, 1]: one minus the margin between the two best probabilities.

    ``scores`` are either full softmax probabilities ``(N, C)`` or the workspace's top-5 scores
    (best first); either way only the two largest matter. Label-agnostic on purpose.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        return np.zeros(len(s), dtype=np.float32)
    top2 = -np.sort(-s, axis=1)[:, :2]
    return (1.0 - (top2[:, 0] - top2[:, 1])).clip(0.0, 1.0).astype(np.float32)


def top_suspects(scores: np.ndarray, k: int, exclude: Iterable[int] | np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, skipping ``exclude``.

    ``exclude`` is either card indices or a boolean mask (e.g. cards already edited, or
    held-out cards). Ties go to the lower index, so the order is reproducible.
    """
    s = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None:
        ex = np.asarray(exclude if not isinstance(exclude, (set, frozenset)) else list(exclude))
        if ex.dtype == bool:
            s[ex] = -np.inf
        elif ex.size:
            s[ex.astype(np.int64)] = -np.inf
    order = np.argsort(-s, kind="stable")
    order = order[np.isfinite(s[order])]
    return order[: max(int(k), 0)]


PROBABLY_WRONG = 0.5  # a suspicion above this: the label is more probably wrong than right
# The order the app shows suspects in (``GuidanceControls``), ``latent-reach suspects`` prints
# them in and bench_suite's simulated person visits them in: issue 13's eleventh session
# (docs/benchmarks.md) adopted it, the suspicion's order until then.
APP_ORDER = "auto_partial"
VISIT_RULES = ("suspicion", "spread", "disputed", "cluster", "auto", "auto_partial")
# ``"auto"``'s two gates (issue 13's eleventh session, docs/benchmarks.md): the network took on
# some of the labels the guidance distrusts (it predicts at least this share of them) ...
AUTO_TAKEN_ON = 0.15
# ... and it hardly confuses the labels the guidance trusts (it predicts another class for at
# most this share of them)
AUTO_CONFUSED = 0.01
# ``"auto_partial"``: a network that predicts at least this share of its suspects' labels memorised
# its noise and keeps the suspicion's order (``replay_trust.DROP_ABOVE``, the line of
# ``finetune.memorised_share``'s check; not imported: replay_trust imports this module).
AUTO_MEMORISED = 0.5


def auto_gates(
    details: Suspicion,
    labels: np.ndarray,
    predictions: np.ndarray,
    is_train: np.ndarray,
    threshold: float = PROBABLY_WRONG,
) -> tuple[float, float] | None:
    """What ``auto_rule`` decides on: the share of suspected training cards (suspicion above
    ``threshold``) whose given label the network predicts ("taken on"), and the share of trusted
    training cards it predicts another class for ("confused"); None when no card is suspected.
    Apart from the rule so a person can see why an order was chosen (``latent-reach suspects``)."""
    s = np.asarray(details.scores, dtype=np.float64)
    train = np.asarray(is_train, dtype=bool)
    hits = np.asarray(predictions, dtype=np.int64) == np.asarray(labels, dtype=np.int64)
    suspects, trusted = train & (s > threshold), train & (s <= threshold)
    if not suspects.any():
        return None
    confused = float(1.0 - hits[trusted].mean()) if trusted.any() else 1.0
    return float(hits[suspects].mean()), confused


def auto_rule(
    details: Suspicion,
    labels: np.ndarray,
    predictions: np.ndarray,
    is_train: np.ndarray,
    threshold: float = PROBABLY_WRONG,
    partial: bool = False,
) -> str:
    """``"disputed"`` or ``"suspicion"``, the order ``"auto"`` stands for, derived from the
    network and the labels: ``"disputed"`` where the network took on the wrong labels the guidance
    suspects (it predicts the given label of at least ``AUTO_TAKEN_ON`` of the training cards whose
    suspicion is above ``threshold``: ``replay_trust.memorised`` with the guidance's own scores)
    and hardly confuses the labels it trusts (it predicts another class for at most
    ``AUTO_CONFUSED`` of the training cards at or below ``threshold``); ``"suspicion"`` otherwise,
    and where no card is above ``threshold``.

    Meant for the network as trained on the labels, before any edit: a caller decides once and
    keeps the rule (``bench_edits.simulate``). Fine-tunes that replay every trusted card teach
    the network those labels, so after one or two of them shapes' network confuses under 1 % of
    its trusted cards and the rule would turn; decided at every refresh, ``"auto"`` moved to
    ``"disputed"`` on shapes and back and forth on digits 1-4-7-9 (issue 13's eleventh session).
    ``visit_priority(..., "auto")`` decides on the state it is given.

    Why these two gates (issue 13's eleventh session, measured on the suite's base networks):
    ``"disputed"`` puts first the wrong labels whose look-alikes the network predicts as that
    label, where the noise reached its decisions. That is a sign of spread noise only if the
    network takes wrong labels on at all (on the memorised digits and on digits 1-4-7-9 it
    predicts 26-100 % of its suspects' labels; where it predicts 5-8 % of them, photo crops and
    a network trained on clean labels, it is mostly confusion) and only if it tells the classes of
    its trusted cards apart (shapes: it predicts another class for 1.5-1.9 % of its trusted
    training cards, the others for at most 0.6 %; there the look-alikes predicted as a suspect's
    label are confusable right labels, and ``"disputed"`` showed 0.38-0.46 wrong labels per card
    looked at and raised the per-edit held-out loss).

    ``partial`` (``"auto_partial"``, the app's order, ``APP_ORDER``): ``"disputed"`` only where the
    network took on fewer than ``AUTO_MEMORISED`` of its suspects' labels: a network that
    memorised its noise keeps the suspicion's order."""
    gates = auto_gates(details, labels, predictions, is_train, threshold)
    if gates is None:
        return "suspicion"
    taken_on, confused = gates
    if partial and taken_on >= AUTO_MEMORISED:
        return "suspicion"
    return "disputed" if taken_on >= AUTO_TAKEN_ON and confused <= AUTO_CONFUSED else "suspicion"


def decided_rule(
    order: str, details: Suspicion, labels: np.ndarray, predictions: np.ndarray, is_train: np.ndarray
) -> str:
    """``order`` with ``"auto"`` and ``"auto_partial"`` resolved by ``auto_rule`` on this state (a
    caller keeps what it returns: decided once, before any edit); any other rule as it is."""
    if order in ("auto", "auto_partial"):
        return auto_rule(details, labels, predictions, is_train, partial=order == "auto_partial")
    return order


def visit_priority(
    details: Suspicion,
    labels: np.ndarray,
    predictions: np.ndarray,
    is_train: np.ndarray,
    rule: str = "spread",
    threshold: float = PROBABLY_WRONG,
) -> np.ndarray:
    """``(N,)`` an order in which to show suspects (higher first): which wrong label to fix first.

    ``"suspicion"`` returns ``details.scores``; the app's order is ``APP_ORDER`` (``"auto_partial"``:
    ``"disputed"`` or ``"suspicion"`` by ``auto_rule``, decided once before any edit). The rules
    came from issue 13's tenth and eleventh sessions (docs/benchmarks.md; ``bench_suite.py
    --order`` reruns them). The suspicion says how probably a
    card's label is wrong, not how much fixing it helps: a wrong label alone among look-alikes
    the network predicts right (the most suspicious kind: every neighbour disagrees) does little
    harm, one whose look-alikes the network predicts *as that wrong label* is where the noise
    reached the network's decisions. The other rules put the cards whose suspicion is above
    ``threshold`` first, ordered by a share of their look-alikes (``details.neighbours``, any
    split), then by suspicion; the other cards follow by suspicion:

    * ``"spread"``: look-alikes the network predicts as the card's given label;
    * ``"disputed"``: those of them that the held-out view (``details.held_out``) gives another
      class than that label;
    * ``"cluster"``: training look-alikes with the same label that are themselves above
      ``threshold``;
    * ``"auto"`` and ``"auto_partial"``: ``"disputed"`` or ``"suspicion"``, whichever ``auto_rule``
      derives from the network and the labels given (a caller that keeps the rule through edits
      resolves it once with ``decided_rule``).

    Each card's own given label is read; no look-alike's held-out label is counted (``"cluster"``
    counts training look-alikes only, ``"disputed"``'s held-out view is the suspicion's own).
    """
    s = np.asarray(details.scores, dtype=np.float64)
    near = np.asarray(details.neighbours, dtype=np.int64)
    if rule not in VISIT_RULES:
        raise ValueError(f"unknown visit rule {rule!r}; one of {VISIT_RULES}")
    if rule in ("auto", "auto_partial"):
        rule = auto_rule(details, labels, predictions, is_train, threshold, partial=rule == "auto_partial")
    if rule == "suspicion" or near.ndim != 2 or near.shape[0] != len(s) or near.shape[1] == 0:
        return s.copy()
    labels = np.asarray(labels, dtype=np.int64)
    given = labels[:, None]
    as_label = np.asarray(predictions, dtype=np.int64)[near] == given
    if rule == "spread":
        share = as_label.mean(1)
    elif rule == "disputed":
        other = np.asarray(details.held_out).argmax(1)[near] != given
        share = (as_label & other).mean(1)
    else:
        train = np.asarray(is_train, dtype=bool)[near]
        share = ((labels[near] == given) & train & (s[near] > threshold)).mean(1)
    # the suspicion term stays below one step of the share (1 / k), so it only breaks ties
    step = 1.0 / near.shape[1]
    priority: np.ndarray = np.where(s > threshold, 2.0 + share + 0.5 * step * s, s)
    return priority


def within_top(
    scores: np.ndarray,
    priority: np.ndarray,
    window: int,
    exclude: Iterable[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Every card not excluded by suspicion (``top_suspects``), the first ``window`` of them
    reordered by ``priority`` (``visit_priority``): the same cards shown (the app marks its top
    ten), another order among them. A/B of issue 13's tenth session."""
    order = top_suspects(scores, len(np.asarray(scores)), exclude=exclude)
    head = order[: max(int(window), 0)]
    head = head[np.argsort(-np.asarray(priority, dtype=np.float64)[head], kind="stable")]
    out: np.ndarray = np.concatenate([head, order[len(head) :]])
    return out


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positives`` (ties count half)."""
    from scipy.stats import rankdata

    pos = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def inject_label_noise(
    labels: np.ndarray,
    n_classes: int,
    fraction: float = 0.15,
    seed: int = 0,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip a seeded ``fraction`` of the labels (within ``mask``, e.g. the training cards).

    Each chosen label becomes a different class, uniformly. Returns the noisy labels and the
    boolean mask of flipped cards (the ground truth for measuring guidance).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noise fraction must be in [0, 1], got {fraction}")
    if n_classes < 2:
        raise ValueError("label noise needs at least two classes")
    labels = np.asarray(labels, dtype=np.int64)
    eligible = np.flatnonzero(np.ones(len(labels), bool) if mask is None else np.asarray(mask, bool))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, int(round(fraction * len(eligible))), replace=False)
    noisy = labels.copy()
    shift = rng.integers(1, n_classes, size=len(chosen))
    noisy[chosen] = (labels[chosen] + shift) % n_classes
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[chosen] = True
    return noisy, flipped
