"""Temperature scaling (Guo et al. 2017): one temperature per head, fitted on validation logits.

p = softmax(z / T). T > 1 softens over-confident logits, T < 1 sharpens; the ranking (hence
every top-k accuracy) is unchanged. T minimises the validation negative log-likelihood,
found by golden-section search on log T (the NLL is unimodal in log T for one head; the
search brackets T in [1/50, 50] and stops when the bracket is narrower than 1e-5 in log T).
NumPy only: importable without torch.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import InputError

T_MIN, T_MAX = 0.02, 50.0
_GOLDEN = (math.sqrt(5) - 1) / 2


def log_softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """log softmax(z / T) along the last axis, computed stably."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def calibrated_probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(z / T): rows sum to 1."""
    return np.exp(log_softmax(logits, temperature))


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(z / T)."""
    lp = log_softmax(logits, temperature)
    y = np.asarray(labels, dtype=np.int64)
    return float(-lp[np.arange(y.size), y].mean())


def fit_temperature(logits, labels, *, t_min: float = T_MIN, t_max: float = T_MAX, tol: float = 1e-5) -> float:
    """The temperature minimising :func:`nll` on (validation) logits; golden section on log T.

    Raises
    ------
    InputError
        Logits not (N, C) with N >= 1, labels not indices 0..C-1.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0 or y.shape != (z.shape[0],):
        raise InputError(f"logits must be (N, C) with N >= 1 and labels (N,); got {z.shape} and {y.shape}", None,
                         "logits")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= z.shape[1]:
        raise InputError(f"labels must be integer indices 0..{z.shape[1] - 1}", None, "labels")
    a, b = math.log(t_min), math.log(t_max)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = nll(z, y, math.exp(c)), nll(z, y, math.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = nll(z, y, math.exp(d))
    return float(math.exp((a + b) / 2))


def fit_temperatures(logits: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    """One temperature per head: ``{head: T}``."""
    return {h: fit_temperature(logits[h], labels[h]) for h in logits}
