"""Synthetic-crystal kernels with and without SciPy's BLAS: a baseline revision's
``xtalhpc/synth/_kernels.py`` against this checkout's, side by side in one process.

Usage::

    python benchmarks/bench_synth_kernels.py [--baseline main] [--per-group 10] [--cells 20000]
                                             [--rounds 3] [--seed 0]

The baseline's kernel source is taken with ``git show REV:xtalhpc/synth/_kernels.py``
(main computed the reciprocal metric with ``np.linalg.inv(lat @ lat.T)`` and
``c @ gstar @ c``, which Numba runs through SciPy's BLAS/LAPACK: SciPy must be
installed to run the baseline) and imported under another module name; this
checkout's kernels are ``xtalhpc.synth._kernels``. Two measurements, A and B
alternated ``--rounds`` times so a load change on the shared machine hits both:

* ``_geometry`` alone: one Numba driver calls each version's kernel for ``--cells``
  random cells (60-120 degree angles) with the 13 cubic relation rows;
* end to end: ``xtalhpc.synth.generate_crystal`` for ``--per-group`` crystals of each of
  the 230 space groups with each version's ``place`` kernel (``generator._compile``
  swapped), CPU seconds of this process per crystal.

Also checked: the largest relative difference of G* and of the relation limits
between the two versions, and whether every crystal (cell and coordinates) comes out
bit-identical. Numba is pinned to one thread.
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_baseline(rev: str, where: Path):
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:xtalhpc/synth/_kernels.py"],
                         check=True, capture_output=True, text=True).stdout
    path = where / "synth_kernels_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("synth_kernels_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@numba.njit
def drive(geometry, cells, combos, gstars, climits):
    lat = np.zeros((3, 3))
    spacing = np.empty(3)
    climit = np.empty(combos.shape[0])
    for i in range(cells.shape[0]):
        cell = cells[i].copy()
        g = geometry(cell, lat, spacing, combos, 0.01, climit)
        gstars[i] = g
        climits[i] = climit


def random_cells(n: int, rng) -> np.ndarray:
    cells = np.empty((n, 6))
    cells[:, :3] = rng.uniform(3.0, 20.0, (n, 3))
    cells[:, 3:] = rng.uniform(60.0, 120.0, (n, 3))
    return cells


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="main", help="git revision of the baseline kernels (default main)")
    ap.add_argument("--per-group", type=int, default=10)
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from xtalhpc.synth import _kernels as new
    from xtalhpc.synth import generate_crystal, generator

    tmp = tempfile.TemporaryDirectory()
    old = load_baseline(a.baseline, Path(tmp.name))
    versions = {"baseline": old, "this checkout": new}
    combos, _ = generator._relations("cubic")
    combos = np.ascontiguousarray(combos)
    cells = random_cells(a.cells, np.random.default_rng(a.seed))

    # Compile and load both (excluded from the timings), and compare their numbers.
    out = {}
    for name, mod in versions.items():
        g = np.empty((a.cells, 3, 3))
        c = np.empty((a.cells, combos.shape[0]))
        drive(mod._geometry, cells, combos, g, c)
        out[name] = (g, c)
    (g0, c0), (g1, c1) = out["baseline"], out["this checkout"]
    d_g = float(np.max(np.abs(g1 - g0)) / np.max(np.abs(g0)))
    d_c = float(np.max(np.abs(c1 - c0) / np.abs(c0)))

    def crystals(place):
        generator._compile = lambda: place
        t = time.process_time()
        cs = [generate_crystal(sg, a.seed, (sg - 1) * a.per_group + k)
              for sg in range(1, 231) for k in range(a.per_group)]
        return time.process_time() - t, cs

    for mod in versions.values():  # Wyckoff tables and the place kernels: one-time costs
        crystals(mod.place)
    t_geo = {k: [] for k in versions}
    t_syn = {k: [] for k in versions}
    made = {}
    for _ in range(a.rounds):
        for name, mod in versions.items():
            g = np.empty((a.cells, 3, 3))
            c = np.empty((a.cells, combos.shape[0]))
            t = time.perf_counter()
            drive(mod._geometry, cells, combos, g, c)
            t_geo[name].append(time.perf_counter() - t)
            dt, cs = crystals(mod.place)
            t_syn[name].append(dt)
            made[name] = cs
    same = all(np.array_equal(x.cell, y.cell) and np.array_equal(x.frac, y.frac) and x.species == y.species
               for x, y in zip(made["baseline"], made["this checkout"]))
    n = 230 * a.per_group
    print(f"# synth kernels: {a.baseline} vs this checkout, one process, best of {a.rounds} alternated rounds "
          f"({platform.processor() or platform.machine()}, load avg {os.getloadavg()[0]:.1f}, "
          f"numba {numba.__version__}, numpy {np.__version__})\n")
    print(f"| measurement | {a.baseline} (np.linalg.inv, @: SciPy BLAS) | this checkout (by hand) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    b0, b1 = min(t_geo["baseline"]), min(t_geo["this checkout"])
    print(f"| `_geometry`, ns per cell ({a.cells} cells) | {1e9 * b0 / a.cells:.0f} | {1e9 * b1 / a.cells:.0f} | "
          f"{b0 / b1:.2f}x |")
    s0, s1 = min(t_syn["baseline"]), min(t_syn["this checkout"])
    print(f"| generate_crystal, us per crystal ({n} crystals, 230 groups) | {1e6 * s0 / n:.0f} | "
          f"{1e6 * s1 / n:.0f} | {s0 / s1:.2f}x |")
    print(f"\nlargest relative difference: G* {d_g:.1e}, relation limits {d_c:.1e}; "
          f"crystals bit-identical: {same} ({n} crystals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
