"""Class-balance report: label histogram before/after balancing and a count table."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError
from ..spacegroups import crystal_system

N_SPACE_GROUPS = 230


def _counts(labels: Iterable, what: str) -> np.ndarray:
    c = Counter()
    for i, v in enumerate(labels):
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise InputError(f"label {i} = {v!r} is not a space-group number", field=what) from None
        if not 1 <= n <= N_SPACE_GROUPS:
            raise InputError(f"label {i} = {n} is outside 1-230", field=what)
        c[n] += 1
    out = np.zeros(N_SPACE_GROUPS + 1, dtype=np.int64)
    for k, v in c.items():
        out[k] = v
    return out[1:]


def class_balance_report(labels_before: Iterable, labels_after: Iterable | None, out_png: str | Path,
                         out_csv: str | Path | None = None, out_md: str | Path | None = None,
                         title: str = "space-group label balance") -> dict:
    """Histogram of space-group labels before and after balancing, and a per-class table.

    Parameters
    ----------
    labels_before, labels_after : space-group numbers (1-230) per pattern;
        ``labels_after`` may be None (report of one set only).
    out_png : the figure (counts per space group on a log axis, before and after).
    out_csv : table with columns space_group, crystal_system, before, after
        (one row per space group 1-230, zeros included).
    out_md : the same table as markdown, only the classes with any count.

    Returns
    -------
    dict
        Summary: totals, classes present, smallest and largest non-zero class,
        and the imbalance ratio (largest / smallest non-zero count) before and after.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    before = _counts(labels_before, "labels_before")
    after = None if labels_after is None else _counts(labels_after, "labels_after")
    sg = np.arange(1, N_SPACE_GROUPS + 1)

    def summary(c):
        nz = c[c > 0]
        return {"total": int(c.sum()), "classes": int(nz.size),
                "min": int(nz.min()) if nz.size else 0, "max": int(nz.max()) if nz.size else 0,
                "imbalance": float(nz.max() / nz.min()) if nz.size else float("nan")}

    result = {"before": summary(before)}
    if after is not None:
        result["after"] = summary(after)

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(sg, before, width=1.0, color="tab:gray", alpha=0.7,
           label=f"before ({result['before']['total']} patterns, {result['before']['classes']} classes)")
    if after is not None:
        ax.step(sg, after, where="mid", color="tab:blue", lw=1.2,
                label=f"after ({result['after']['total']} patterns, {result['after']['classes']} classes)")
    if before.max() > 0 or (after is not None and after.max() > 0):
        ax.set_yscale("log")
    ax.set_xlim(0.5, N_SPACE_GROUPS + 0.5)
    for edge in (3, 16, 75, 143, 168, 195):
        ax.axvline(edge - 0.5, color="k", lw=0.5, ls=":")
    ax.set_xlabel("space group number")
    ax.set_ylabel("patterns per class")
    ax.set_title(title)
    ax.legend(loc="upper right")
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)

    rows = [(int(n), crystal_system(int(n)), int(before[n - 1]), None if after is None else int(after[n - 1]))
            for n in sg]
    if out_csv is not None:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        with open(out_csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["space_group", "crystal_system", "before", "after"])
            for r in rows:
                w.writerow([r[0], r[1], r[2], "" if r[3] is None else r[3]])
    if out_md is not None:
        lines = ["| space group | crystal system | before | after |", "| ---: | --- | ---: | ---: |"]
        for r in rows:
            if r[2] or r[3]:
                lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {'' if r[3] is None else r[3]} |")
        Path(out_md).write_text("\n".join(lines) + "\n")
    return result
