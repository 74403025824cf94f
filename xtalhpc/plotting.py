"""Plots a person would want to look at (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path


def plot_pattern(pattern, path: str | Path) -> None:
    """The simulated pattern with a tick at every reflection family and the strongest indexed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c, inst, r = pattern.crystal, pattern.instrument, pattern.reflections
    y = pattern.intensity
    ymax = float(y.max()) if y.size and y.max() > 0 else 1.0
    fig, (ax, axt) = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True, gridspec_kw={"height_ratios": [6, 1]})
    ax.plot(pattern.two_theta, y / ymax * 100, lw=0.8, color="tab:blue")
    ax.set_ylabel("intensity (% of max)")
    wl = ", ".join(f"{w:g}" for w in inst.wavelengths)
    sg = f"SG {c.space_group} ({c.bravais_lattice})" if c.space_group else "SG unknown"
    ax.set_title(f"{c.formula}  {sg}  —  {inst.name} ({inst.radiation}, λ = {wl} Å)", fontsize=10)
    on = (r.two_theta >= inst.two_theta_min) & (r.two_theta <= inst.two_theta_max)
    axt.vlines(r.two_theta[on], 0, 1, color="tab:red", lw=0.6)
    axt.set_yticks([])
    axt.set_xlabel("2θ (degrees)")
    # Label the strongest few families with their hkl.
    if on.any():
        idx = np.flatnonzero(on)
        top = idx[np.argsort(r.intensity[idx])[::-1][:8]]
        for j in top:
            h, k, l = (int(v) for v in r.hkl[j])
            i_pk = int(round((r.two_theta[j] - inst.two_theta_min) / inst.two_theta_step))
            if 0 <= i_pk < y.size:
                ax.annotate(f"{h}{k}{l}" if max(abs(h), abs(k), abs(l)) < 10 else f"{h},{k},{l}",
                            (r.two_theta[j], y[i_pk] / ymax * 100), textcoords="offset points", xytext=(0, 4),
                            ha="center", fontsize=7)
    ax.set_xlim(inst.two_theta_min, inst.two_theta_max)
    ax.set_ylim(0, 110)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
