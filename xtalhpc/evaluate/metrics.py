"""Classification metrics from per-head scores and true labels (NumPy only, no torch).

Every function takes the head's class labels as an input, so it works for any head
(space group, extinction group, Bravais lattice, crystal system, or one added later).

Conventions
-----------
* ``scores``: shape (N, C), logits or probabilities (only their order matters for top-k).
* ``labels``: shape (N,), integer indices 0..C-1 into ``classes``.
* top-k: the true class is among the k highest scores; ties are broken by the lower class
  index (a stable sort of -scores), so results are deterministic. k larger than C counts
  as C (every class).
* per-class accuracy: top-1 accuracy over the samples whose true class it is; classes with
  no sample get ``accuracy`` None and ``support`` 0. The macro average is the mean of the
  per-class accuracies over classes with support > 0.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError

TOP_K: tuple[int, ...] = (1, 3, 5)


def _check(scores, labels, classes: Sequence | None = None, head: str = "") -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    where = f"head {head!r}" if head else None
    if s.ndim != 2:
        raise InputError(f"scores must be 2-D (samples, classes), got shape {s.shape}", where, "scores")
    if y.shape != (s.shape[0],):
        raise InputError(f"labels shape {y.shape} does not match {s.shape[0]} samples", where, "labels")
    if classes is not None and len(classes) != s.shape[1]:
        raise InputError(f"{len(classes)} class labels for {s.shape[1]} score columns", where, "classes")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= s.shape[1]):
        raise InputError(f"labels must be integer indices 0..{s.shape[1] - 1}", where, "labels")
    return s, y.astype(np.int64)


def ranks(scores) -> np.ndarray:
    """Class indices by decreasing score, shape (N, C); ties: lower index first."""
    return np.argsort(-np.asarray(scores, dtype=float), axis=1, kind="stable")


def topk_hits(scores, labels, k: int) -> np.ndarray:
    """Boolean (N,): the true label is among the k best."""
    s, y = _check(scores, labels)
    k = min(int(k), s.shape[1])
    return (ranks(s)[:, :k] == y[:, None]).any(axis=1)


def topk_accuracy(scores, labels, k: int) -> float:
    """Fraction of samples whose true label is among the k best (NaN for no samples)."""
    h = topk_hits(scores, labels, k)
    return float(h.mean()) if h.size else math.nan


def confusion_matrix(labels, predictions, n_classes: int) -> np.ndarray:
    """Counts, shape (C, C): row = true class, column = predicted class."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def head_metrics(scores, labels, classes: Sequence, *, ks: Sequence[int] = TOP_K, head: str = "") -> dict:
    """Top-k accuracies, per-class accuracy and support, macro average, confusion matrix of one head.

    Returns
    -------
    dict
        ``{"top1": .., "top3": .., "top5": .., "macro_accuracy": .., "n": N,
        "per_class": {str(class): {"accuracy": float | None, "support": int}}}``, plus
        ``"confusion"`` (an int ndarray, C x C; dropped when written to JSON).
    """
    s, y = _check(scores, labels, classes, head)
    out: dict = {f"top{k}": topk_accuracy(s, y, k) for k in ks}
    pred = ranks(s)[:, 0] if s.shape[0] else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y, pred, s.shape[1])
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    per = {}
    accs = []
    for i, c in enumerate(classes):
        acc = float(correct[i] / support[i]) if support[i] else None
        if acc is not None:
            accs.append(acc)
        per[str(c)] = {"accuracy": acc, "support": int(support[i])}
    out["macro_accuracy"] = float(np.mean(accs)) if accs else math.nan
    out["n"] = int(s.shape[0])
    out["per_class"] = per
    out["confusion"] = cm
    return out


def head_metrics_from_top(top, labels, classes: Sequence, *, ks: Sequence[int] = TOP_K, head: str = "") -> dict:
    """:func:`head_metrics` from the best classes alone: ``top`` (N, K) class indices, best first, as
    ``ranks(scores)[:, :K]`` gives them (so the numbers equal :func:`head_metrics` on the full scores
    for every k <= K; a larger k counts the K best). What ``xtalhpc evaluate`` streams and what
    ``predictions.npz`` stores, so its numbers can be recomputed."""
    t = np.asarray(top, dtype=np.int64)
    y = np.asarray(labels)
    where = f"head {head!r}" if head else None
    if t.ndim != 2 or y.shape != (t.shape[0],):
        raise InputError(f"top must be (N, K) and labels (N,); got {t.shape} and {y.shape}", where, "top")
    c = len(classes)
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= c):
        raise InputError(f"labels must be integer indices 0..{c - 1}", where, "labels")
    y = y.astype(np.int64)
    out: dict = {}
    for k in ks:
        kk = min(int(k), t.shape[1])
        out[f"top{k}"] = float((t[:, :kk] == y[:, None]).any(axis=1).mean()) if y.size else math.nan
    cm = confusion_matrix(y, t[:, 0] if y.size else np.zeros(0, dtype=np.int64), c)
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    per, accs = {}, []
    for i, name in enumerate(classes):
        acc = float(correct[i] / support[i]) if support[i] else None
        if acc is not None:
            accs.append(acc)
        per[str(name)] = {"accuracy": acc, "support": int(support[i])}
    out["macro_accuracy"] = float(np.mean(accs)) if accs else math.nan
    out["n"] = int(y.size)
    out["per_class"] = per
    out["confusion"] = cm
    return out


def evaluate_heads(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                   classes: Mapping[str, Sequence], *, ks: Sequence[int] = TOP_K) -> dict:
    """Metrics of every head: ``{"n": N, "heads": {head: head_metrics(...)}}``.

    ``scores``, ``labels`` and ``classes`` are keyed by head name; every head must have the
    same number of samples.
    """
    missing = [h for h in scores if h not in labels or h not in classes]
    if missing:
        raise InputError(f"heads {missing} have scores but no labels or class list", None, "heads")
    ns = {h: np.asarray(s).shape[0] for h, s in scores.items()}
    if len(set(ns.values())) > 1:
        raise InputError(f"heads have different sample counts: {ns}", None, "scores")
    n = next(iter(ns.values())) if ns else 0
    return {"n": int(n), "heads": {h: head_metrics(scores[h], labels[h], classes[h], ks=ks, head=h) for h in scores}}


def to_json_dict(metrics: dict) -> dict:
    """The metrics without the confusion arrays, NaN as None: what metrics.json holds."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k != "confusion"}
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    return clean(metrics)


def write_metrics_json(metrics: dict, path: str | os.PathLike) -> None:
    """Write ``{"n": N, "heads": {head: {"top1", "top3", "top5", "macro_accuracy", "n", "per_class"}}}``."""
    with open(path, "w") as fh:
        json.dump(to_json_dict(metrics), fh, indent=1)
        fh.write("\n")


def read_metrics_json(path: str | os.PathLike) -> dict:
    """A metrics.json (or the metrics.json inside a directory)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "metrics.json")
    try:
        with open(p) as fh:
            d = json.load(fh)
    except FileNotFoundError:
        raise InputError("no such metrics file", p, "path") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON ({exc.msg} at line {exc.lineno})", p, "metrics") from None
    if not isinstance(d, dict) or "heads" not in d or "n" not in d:
        raise InputError('not an xtalhpc metrics file (needs "n" and "heads")', p, "heads")
    return d
