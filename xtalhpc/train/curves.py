"""``curves.png``: loss and top-1 / top-3 accuracy per head against step, train and validation."""
from __future__ import annotations

import json
from pathlib import Path

from .config import HEADS


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Draw the records of ``metrics.jsonl`` (one JSON object per evaluation and split) to ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    heads = [h for h in HEADS if any(r.get(f"{h}/top1") is not None for r in recs)]
    fig, axes = plt.subplots(1, 1 + len(heads), figsize=(4.2 * (1 + len(heads)), 3.6), squeeze=False)
    axes = axes[0]
    styles = {"train": dict(color="tab:blue"), "val": dict(color="tab:orange")}
    for split in ("train", "val"):
        rs = [r for r in recs if r.get("split") == split]
        if not rs:
            continue
        steps = [r["step"] for r in rs]
        axes[0].plot(steps, [r["loss"] for r in rs], marker=".", label=split, **styles[split])
        for ax, h in zip(axes[1:], heads):
            for k, ls in ((1, "-"), (3, "--")):
                ys = [r.get(f"{h}/top{k}") for r in rs]
                ax.plot(steps, [float("nan") if y is None else y for y in ys], ls=ls, marker=".",
                        label=f"{split} top-{k}", **styles[split])
    axes[0].set_title("loss (weighted cross-entropy)")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    for ax, h in zip(axes[1:], heads):
        ax.set_title(h.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(out_path)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out
