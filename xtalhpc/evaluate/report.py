"""Tables, markdown report and run comparison from metrics (pandas; no torch).

:func:`write_report` turns the output of :func:`~xtalhpc.evaluate.metrics.evaluate_heads`
into ``metrics.json``, ``summary.csv``/``per_class_<head>.csv``, ``confusion_<head>.png`` and
``report.md``. :func:`compare` reads several runs' ``metrics.json`` into one DataFrame and
:func:`plot_compare` draws it. Markdown tables come from :func:`markdown_table` (a small
formatter, so pandas' optional ``tabulate`` dependency is not needed).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import read_metrics_json, to_json_dict, write_metrics_json

#: Heads whose confusion matrix is grouped by crystal system (their classes are space-group numbers).
SPACE_GROUP_HEADS = ("space_group",)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return str(v)


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured markdown table of ``df`` (floats to 4 decimals, NaN/None blank)."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    rows = []
    for idx, r in zip(df.index, df.itertuples(index=False)):
        cells = ([str(idx)] if index else []) + [_fmt(v) for v in r]
        rows.append([c.replace("|", "\\|") for c in cells])
    num = [all(_is_num(row[i]) for row in rows) for i in range(len(cols))]
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---:" if n else "---" for n in num) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _is_num(s: str) -> bool:
    if s == "":
        return True
    try:
        float(s)
    except ValueError:
        return False
    return True


def summary_frame(metrics: dict) -> pd.DataFrame:
    """One row per head: n, top1, top3, top5, macro_accuracy, classes seen."""
    rows = []
    for head, m in metrics["heads"].items():
        seen = sum(1 for v in m["per_class"].values() if v["support"])
        rows.append({"head": head, "n": m.get("n", metrics["n"]), **{k: m[k] for k in m if k.startswith("top")},
                     "macro_accuracy": m.get("macro_accuracy"), "classes_seen": seen,
                     "classes": len(m["per_class"])})
    return pd.DataFrame(rows).set_index("head")


def per_class_frame(head_metrics: dict) -> pd.DataFrame:
    """One row per class: support and top-1 accuracy (classes with no sample kept, accuracy NaN)."""
    pc = head_metrics["per_class"]
    df = pd.DataFrame({"support": [v["support"] for v in pc.values()],
                       "accuracy": [np.nan if v["accuracy"] is None else v["accuracy"] for v in pc.values()]},
                      index=pd.Index(list(pc.keys()), name="class"))
    return df


def write_report(metrics: dict, outdir: str | os.PathLike, *, title: str = "xtalhpc evaluation",
                 spans: Mapping[str, list] | None = None, notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write metrics.json, summary.csv, per_class_<head>.csv, confusion_<head>.png and report.md.

    ``metrics`` is :func:`evaluate_heads` output (with confusion arrays). Space-group heads
    are grouped by crystal system; ``spans`` may give groups for other heads.
    Returns the paths written, by name.
    """
    from .confusion import plot_confusion, space_group_spans

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    write_metrics_json(metrics, out / "metrics.json")
    written["metrics.json"] = out / "metrics.json"
    summ = summary_frame(to_json_dict(metrics))
    summ.to_csv(out / "summary.csv")
    written["summary.csv"] = out / "summary.csv"
    lines = [f"# {title}\n", f"{metrics['n']} patterns.\n", *[f"{n}\n" for n in notes], "## Summary\n",
             markdown_table(summ)]
    for head, m in metrics["heads"].items():
        pcf = per_class_frame(m)
        pcf.to_csv(out / f"per_class_{head}.csv")
        written[f"per_class_{head}.csv"] = out / f"per_class_{head}.csv"
        png = out / f"confusion_{head}.png"
        classes = list(m["per_class"].keys())
        order, sp = None, (spans or {}).get(head)
        if head in SPACE_GROUP_HEADS:
            order, sp = space_group_spans(classes)
        if "confusion" in m:
            plot_confusion(m["confusion"], classes, png, title=f"{head}: top-1 {m['top1']:.1%}", spans=sp,
                           order=order)
            written[png.name] = png
        lines.append(f"\n## {head}\n")
        lines.append("top-1 {:.4f}, top-3 {:.4f}, top-5 {:.4f}, macro accuracy {}\n".format(
            m["top1"], m.get("top3", math.nan), m.get("top5", math.nan), _fmt(m.get("macro_accuracy"))))
        if png.exists():
            lines.append(f"\n![confusion {head}]({png.name})\n")
        shown = pcf[pcf["support"] > 0]
        if len(pcf) > 30:
            lines.append(f"\nClasses with support ({len(shown)} of {len(pcf)}; all in {head} CSV "
                         f"`per_class_{head}.csv`):\n\n")
        else:
            shown = pcf
            lines.append("\n")
        lines.append(markdown_table(shown))
    (out / "report.md").write_text("".join(lines))
    written["report.md"] = out / "report.md"
    return written


def compare(paths: Iterable[str | os.PathLike], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Several runs side by side: one row per run, columns ``(head, metric)`` (a MultiIndex).

    Parameters
    ----------
    paths : metrics.json files or directories holding one
    names : row labels; default the file's directory name (or the file stem if that is taken)

    Metrics per head: n, top1, top3, top5, macro_accuracy (where present).
    """
    paths = [Path(p) for p in paths]
    rows, labels = [], []
    for i, p in enumerate(paths):
        d = read_metrics_json(p)
        f = p / "metrics.json" if p.is_dir() else p
        label = names[i] if names is not None else f.parent.name or f.stem
        if label in labels:
            label = str(f)
        labels.append(label)
        row = {}
        for head, m in d["heads"].items():
            for k in ("n", "top1", "top3", "top5", "macro_accuracy"):
                if k in m or k == "n":
                    v = m.get(k, d["n"])
                    row[(head, k)] = np.nan if v is None else v
        rows.append(row)
    df = pd.DataFrame(rows, index=pd.Index(labels, name="run"))
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["head", "metric"])
    return df


def compare_flat(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`compare` output with ``head.metric`` column names (for CSV and markdown)."""
    flat = df.copy()
    flat.columns = [f"{h}.{m}" for h, m in df.columns]
    return flat


def plot_compare(df: pd.DataFrame, path: str | os.PathLike, metric: str = "top1") -> None:
    """Grouped bars: ``metric`` per head (groups) for each run (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = df.xs(metric, axis=1, level="metric")
    heads, runs = list(sub.columns), list(sub.index)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(heads) * max(1, len(runs)) / 2), 4.5))
    w = 0.8 / max(len(runs), 1)
    x = np.arange(len(heads))
    for i, run in enumerate(runs):
        vals = sub.loc[run].to_numpy(dtype=float)
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * w, vals, w, label=str(run))
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(x, heads)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} by head and run", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_compare(paths: Iterable[str | os.PathLike], outdir: str | os.PathLike,
                  names: Sequence[str] | None = None) -> pd.DataFrame:
    """compare.csv, compare.md and compare.png for several runs; returns the frame."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    df = compare(paths, names)
    flat = compare_flat(df)
    flat.to_csv(out / "compare.csv")
    (out / "compare.md").write_text("# Runs compared\n\n" + markdown_table(flat))
    plot_compare(df, out / "compare.png")
    return df
