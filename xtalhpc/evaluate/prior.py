"""Deployment prior: probabilities for the space-group frequencies users measure, not training's.

A network trained with class-weighted cross-entropy on a flattened label distribution
answers for that distribution. Its training prior is, per class y of a head,

    pi_eff(y)  proportional to  n_y * w_y

with n_y the training split's count and w_y the loss weight of :func:`xtalhpc.train.data.class_weights`
(the population minimiser of a weighted cross-entropy is ``q(y|x) ~ w_y p(y|x)``). The probability
under a deployment prior pi_dep (here: the space-group frequencies of a structure database, which
issue 12 allows as a prior) follows from Bayes' rule without refitting anything (post-hoc logit
adjustment, Menon et al. 2021, "Long-tail learning via logit adjustment"):

    p_dep(y|x) = softmax(z / T + a)_y,    a_y = log pi_dep(y) - log pi_eff(y)

Counts of both tables get a pseudo-count of 0.5 so that a class absent from either stays finite;
``a`` is centred (softmax ignores a constant). The other heads get the same from the space-group
counts summed over their classes (crystal system, Bravais lattice, extinction group).
NumPy only: importable without torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Pseudo-count added to every class of both tables.
PSEUDO_COUNT = 0.5


def sg_to_class(head: str) -> np.ndarray:
    """Class index of ``head`` for each space group 1-230 (array of 230, index 0 = group 1)."""
    from ..spacegroups import bravais_lattice, crystal_system, extinction_group
    from ..train.data import head_vocabularies

    vocab = head_vocabularies()
    if head not in vocab:
        raise InputError(f"unknown head {head!r}; known: {', '.join(vocab)}", field="head")
    if head == "space_group":
        return np.arange(230, dtype=np.int64)
    if head == "extinction_group":
        return np.array([extinction_group(n) for n in range(1, 231)], dtype=np.int64)
    name = {"crystal_system": crystal_system, "bravais_lattice": bravais_lattice}[head]
    index = {c: i for i, c in enumerate(vocab[head])}
    return np.array([index[name(n)] for n in range(1, 231)], dtype=np.int64)


def head_counts(sg_counts, head: str) -> np.ndarray:
    """Counts of ``head``'s classes from counts per space group 1-230."""
    from ..train.data import head_vocabularies

    c = np.asarray(sg_counts, dtype=np.float64)
    if c.shape != (230,):
        raise InputError(f"space-group counts must have 230 entries, got {c.shape}", field="counts")
    return np.bincount(sg_to_class(head), weights=c, minlength=len(head_vocabularies()[head]))


def effective_training_prior(counts, class_balance: float, max_class_weight: float) -> np.ndarray:
    """pi_eff (sums to 1) of a head trained on ``counts`` with the loss weights of ``class_weights``."""
    from ..train.data import class_weights

    n = np.asarray(counts, dtype=np.float64)
    w = class_weights(n, class_balance, max_class_weight)  # exactly training's weights
    if (n <= 0).any():
        w[n <= 0] = w.max() if (n > 0).any() else 1.0      # a class training never saw: the largest weight
    p = (n + PSEUDO_COUNT) * w
    return p / p.sum()


def logit_adjustment(target_counts, train_counts, class_balance: float, max_class_weight: float) -> np.ndarray:
    """``a = log pi_dep - log pi_eff``, centred (float64)."""
    t = np.asarray(target_counts, dtype=np.float64) + PSEUDO_COUNT
    if t.shape != np.shape(train_counts):
        raise InputError(f"target counts {t.shape} and training counts {np.shape(train_counts)} differ in length",
                         field="counts")
    a = np.log(t / t.sum()) - np.log(effective_training_prior(train_counts, class_balance, max_class_weight))
    return a - a.mean()


def adjusted_log_softmax(logits, temperature: float = 1.0, adjustment=None) -> np.ndarray:
    """log softmax(z / T + a) along the last axis (a = 0 when ``adjustment`` is None)."""
    from .calibration import log_softmax

    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if adjustment is not None:
        z = z + np.asarray(adjustment, dtype=np.float64)
    return log_softmax(z)


def deployment_prior(table, train_sg_counts, loss: dict, heads, name: str | None = None,
                     adjust_heads=None) -> dict:
    """The model file's ``priors[name]`` record for a space-group table (CSV with a space-group
    column, as ``generate --synthetic-prior`` reads) and the training split's counts per space group.

    ``loss`` is the model's ``train_config["loss"]`` (``class_balance``, ``max_class_weight``).
    ``adjust_heads`` (default: all ``heads``) are the heads that get the adjustment; the others
    get zeros (their probabilities stay the training prior's). Returns ``{"name", "table",
    "table_sha256", "table_rows", "class_balance", "max_class_weight", "adjusted_heads",
    "log_adjust": {head: list}, "train_counts": list, "target_counts": list}``.
    """
    from ..generate.items import space_group_prior

    p = Path(table)
    target = space_group_prior(p)
    train = np.asarray(train_sg_counts, dtype=np.float64)
    if train.shape != (230,) or train.sum() <= 0:
        raise InputError("the training counts per space group are empty", field="train_counts")
    cb = float(loss.get("class_balance", 0.0))
    cap = float(loss.get("max_class_weight", 10.0))
    heads = list(heads)
    chosen = heads if adjust_heads is None else list(adjust_heads)
    unknown = sorted(set(chosen) - set(heads))
    if unknown:
        raise InputError(f"heads {unknown} are not the model's ({', '.join(heads)})", field="--heads")
    adjust = {h: (logit_adjustment(head_counts(target, h), head_counts(train, h), cb, cap) if h in chosen
                  else np.zeros(head_counts(target, h).size)).tolist() for h in heads}
    return {"name": name or p.stem, "table": p.name, "table_sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "table_rows": int(target.sum()), "class_balance": cb, "max_class_weight": cap,
            "adjusted_heads": [h for h in heads if h in chosen], "log_adjust": adjust,
            "train_counts": train.astype(np.int64).tolist(), "target_counts": target.astype(np.int64).tolist()}


def importance_weights(sg_labels, target_sg_counts, train_sg_counts) -> np.ndarray:
    """Per-pattern weights pi_dep(y) / pi_train(y) that make a validation split drawn from the
    training prior estimate accuracy under the deployment prior (pseudo-count as above)."""
    t = np.asarray(target_sg_counts, dtype=np.float64) + PSEUDO_COUNT
    s = np.asarray(train_sg_counts, dtype=np.float64) + PSEUDO_COUNT
    ratio = (t / t.sum()) / (s / s.sum())
    return ratio[np.asarray(sg_labels, dtype=np.int64)]
