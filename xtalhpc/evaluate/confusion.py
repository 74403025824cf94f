"""Confusion matrices as PNG (matplotlib, Agg).

Small heads (crystal system, Bravais lattice; up to :data:`ANNOTATE_MAX` classes) are
drawn with every count written in its cell and the colour as the row fraction, so they
read at a glance. Large heads (space groups) are drawn as a count image on a log colour
scale, classes ordered by number and grouped by crystal system, with separator lines and
the system names along both axes.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

#: Heads with at most this many classes get the count written in every cell.
ANNOTATE_MAX = 20


def space_group_spans(classes: Sequence) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Order (by space-group number) and crystal-system spans ``(name, start, stop)`` in that order.

    ``classes`` are space-group numbers (int or numeric str).
    """
    from ..spacegroups import crystal_system

    nums = np.array([int(c) for c in classes])
    order = np.argsort(nums, kind="stable")
    systems = [crystal_system(int(nums[i])) for i in order]
    spans: list[tuple[str, int, int]] = []
    for i, s in enumerate(systems):
        if spans and spans[-1][0] == s:
            spans[-1] = (s, spans[-1][1], i + 1)
        else:
            spans.append((s, i, i + 1))
    return order, spans


def plot_confusion(cm: np.ndarray, classes: Sequence, path: str | os.PathLike, *, title: str = "",
                   spans: list[tuple[str, int, int]] | None = None, order: np.ndarray | None = None) -> None:
    """Write the confusion matrix ``cm`` (rows true, columns predicted) as a PNG.

    Parameters
    ----------
    cm : ndarray (C, C) of counts
    classes : sequence of C labels
    path : output PNG
    title : str
    spans : list of (name, start, stop), optional
        Groups of consecutive classes (after ``order``) to separate and label.
    order : index array, optional
        Class order for display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    cm = np.asarray(cm)
    labels = [str(c) for c in classes]
    if order is not None:
        cm = cm[np.ix_(order, order)]
        labels = [labels[i] for i in order]
    n = cm.shape[0]
    if n <= ANNOTATE_MAX:
        rows = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
        size = max(4.5, 0.55 * n + 2.5)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8 if n > 10 else 10,
                            color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xticks(range(n), labels, rotation=45 if max(map(len, labels)) > 3 else 0, ha="right" if
                      max(map(len, labels)) > 3 else "center")
        ax.set_yticks(range(n), [f"{lab} ({int(s)})" for lab, s in zip(labels, rows[:, 0])])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        ax.set_ylabel("true class (support)")
    else:
        fig, ax = plt.subplots(figsize=(11, 10))
        masked = np.ma.masked_equal(cm, 0)
        vmax = max(int(cm.max()), 1)
        im = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(vmax, 2)), interpolation="nearest")
        ax.set_facecolor("white")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="count (log scale; blank = 0)")
        ax.set_ylabel("true class")
        if spans:
            for _, start, stop in spans[1:]:
                ax.axhline(start - 0.5, color="0.4", lw=0.6)
                ax.axvline(start - 0.5, color="0.4", lw=0.6)
            mids = [(a + b - 1) / 2 for _, a, b in spans]
            names = [f"{nm}\n{labels[a]}-{labels[b - 1]}" for nm, a, b in spans]
            # x: ranges only (triclinic and monoclinic span 2 and 13 classes: names would collide)
            ax.set_xticks(mids, [f"{labels[a]}-{labels[b - 1]}" for _, a, b in spans], fontsize=7, rotation=90)
            ax.set_yticks(mids, names, fontsize=7)
        else:
            step = max(1, n // 20)
            ax.set_xticks(range(0, n, step), labels[::step], fontsize=7, rotation=90)
            ax.set_yticks(range(0, n, step), labels[::step], fontsize=7)
        diag = np.trace(cm) / max(cm.sum(), 1)
        title = f"{title}  (diagonal {diag:.1%})" if title else f"diagonal {diag:.1%}"
    ax.set_xlabel("predicted class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
