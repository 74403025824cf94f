"""Synthetic-crystal throughput: xtalhpc.synth vs pyxtal ``from_random``, side by side in one run.

Usage::

    python benchmarks/bench_synth.py [--per-group 20] [--pyxtal-per-group 3] [--seed 0]
                                     [--special-fraction F] [--hydrogen-fraction F] [--json OUT]

xtalhpc.synth draws ``--per-group`` crystals for each of the 230 space groups
(default settings, max_atoms 160). pyxtal is slow, so it runs on 23 groups
spread evenly over 1-230 (``numpy.linspace(1, 230, 23)``, covering all seven
crystal systems): for each, ``pyxtal().from_random(3, sg, species, numIons)`` is
called with the compositions (species and atom counts per conventional cell) of
the first ``--pyxtal-per-group`` xtalhpc crystals of that group, so both draw the
same groups at the same sizes. Times are CPU seconds of this process
(``time.process_time``) with BLAS/OpenMP pinned to one thread, i.e. per core,
which keeps the comparison fair on a shared machine. One-time costs (table
building, Numba compilation or disk-cache load, pyxtal import) are excluded
and printed separately. Also reported: the fraction of xtalhpc crystals whose
space group spglib (symprec 1e-3 A) finds to be the intended one.
``--special-fraction F`` draws the xtalhpc crystals with ``SynthConfig(special_fraction=F)``
(docs/synthetic.md: that share on special Wyckoff positions, each checked to have exactly its
group); pyxtal then gets those crystals' compositions. ``--hydrogen-fraction F`` likewise with
``SynthConfig(hydrogen_fraction=F)`` (that share drawn as molecular crystals with hydrogen, in
groups whose general position holds at most 18 atoms).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402

PYXTAL_GROUPS = tuple(int(round(x)) for x in np.linspace(1, 230, 23))


def bench_synth(per_group: int, seed: int, special_fraction: float = 0.0, hydrogen_fraction: float = 0.0):
    from xtalhpc.synth import SynthConfig, generate_crystal, spglib_number

    cfg = SynthConfig(special_fraction=special_fraction, hydrogen_fraction=hydrogen_fraction)
    t = time.process_time()
    for sg in range(1, 231):  # tables + kernel: one-time costs
        generate_crystal(sg, seed + 1, 0, cfg)
    setup = time.process_time() - t
    rate, atoms, crystals, agree = {}, {}, {}, {}
    for sg in range(1, 231):
        t = time.process_time()
        cs = [generate_crystal(sg, seed, (sg - 1) * per_group + k, cfg) for k in range(per_group)]
        dt = time.process_time() - t
        rate[sg] = per_group / dt
        atoms[sg] = float(np.median([c.n_atoms for c in cs]))
        crystals[sg] = cs
    t = time.process_time()
    for sg, cs in crystals.items():
        agree[sg] = sum(spglib_number(c, 1e-3) == sg for c in cs) / len(cs)
    t_spglib = time.process_time() - t
    # a looser tolerance finds accidental near-symmetry more easily: reported for information
    agree_loose = {sg: sum(spglib_number(c, 1e-2) == sg for c in cs) / len(cs) for sg, cs in crystals.items()}
    return rate, atoms, crystals, agree, agree_loose, setup, t_spglib


def bench_pyxtal(crystals, per_group: int, seed: int):
    t = time.process_time()
    from pyxtal import pyxtal
    setup = time.process_time() - t
    rate, atoms, fails = {}, {}, {}
    for sg in PYXTAL_GROUPS:
        n_ok = 0
        dt = 0.0
        sizes = []
        for k, c in enumerate(crystals[sg][:per_group]):
            counts = Counter(c.species)
            species = sorted(counts)
            num = [counts[s] for s in species]
            t = time.process_time()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    x = pyxtal()
                    x.from_random(3, sg, species, num, random_state=seed + k)
                ok = bool(x.valid)
            except Exception:  # noqa: BLE001 - pyxtal raises several kinds when it gives up
                ok = False
            dt += time.process_time() - t
            n_ok += ok
            sizes.append(sum(num))
        rate[sg] = n_ok / dt if n_ok else 0.0
        atoms[sg] = float(np.median(sizes))
        fails[sg] = per_group - n_ok
    return rate, atoms, fails, setup


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-group", type=int, default=20)
    ap.add_argument("--pyxtal-per-group", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--special-fraction", type=float, default=0.0,
                    help="share of crystals on special positions (SynthConfig.special_fraction; default 0)")
    ap.add_argument("--hydrogen-fraction", type=float, default=0.0,
                    help="share of molecular crystals with hydrogen (SynthConfig.hydrogen_fraction; default 0)")
    ap.add_argument("--json", help="write the raw numbers here")
    a = ap.parse_args(argv)

    import spglib

    import xtalhpc

    wall = time.perf_counter()
    s_rate, s_atoms, crystals, agree, agree_loose, s_setup, t_spglib = bench_synth(a.per_group, a.seed, a.special_fraction,
                                                                                  a.hydrogen_fraction)
    p_rate, p_atoms, p_fails, p_setup = bench_pyxtal(crystals, a.pyxtal_per_group, a.seed)
    wall = time.perf_counter() - wall
    import pyxtal

    sub = PYXTAL_GROUPS
    s_sub = np.array([s_rate[g] for g in sub])
    p_sub = np.array([p_rate[g] for g in sub])
    s_all = np.array([s_rate[g] for g in range(1, 231)])
    slow_s_all = min(s_rate, key=s_rate.get)
    slow_s_sub = min(sub, key=lambda g: s_rate[g])
    slow_p_sub = min(sub, key=lambda g: p_rate[g])
    n_total = 230 * a.per_group
    frac_all = sum(agree[g] * a.per_group for g in agree) / n_total
    worst = sorted(agree, key=agree.get)[:3]
    frac_loose = sum(agree_loose[g] * a.per_group for g in agree_loose) / n_total
    worst_loose = sorted(agree_loose, key=agree_loose.get)[:3]

    print(f"# synthetic crystals: xtalhpc.synth vs pyxtal {pyxtal.__version__} "
          f"(CPU s per process, 1 thread; {platform.processor() or platform.machine()}, "
          f"load avg {os.getloadavg()[0]:.1f})\n")
    print("| crystals / s / core | xtalhpc.synth | pyxtal from_random | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| median over the 23 shared groups | {np.median(s_sub):.0f} | {np.median(p_sub):.2f} | "
          f"{np.median(s_sub) / np.median(p_sub):.0f}x |")
    print(f"| slowest of the 23 shared groups | {s_rate[slow_s_sub]:.0f} (sg {slow_s_sub}) | "
          f"{p_rate[slow_p_sub]:.2f} (sg {slow_p_sub}) | {s_rate[slow_s_sub] / max(p_rate[slow_p_sub], 1e-12):.0f}x |")
    print(f"| median over all 230 groups | {np.median(s_all):.0f} | - | "
          f"{np.median(s_all) / np.median(p_sub):.0f}x vs pyxtal's 23-group median |")
    print(f"| slowest of all 230 groups | {s_rate[slow_s_all]:.0f} (sg {slow_s_all}) | - | - |")
    print(f"| median atoms per crystal (23 groups) | {np.median([s_atoms[g] for g in sub]):.0f} | "
          f"{np.median([p_atoms[g] for g in sub]):.0f} | same compositions |")
    print()
    print(f"xtalhpc.synth: {n_total} crystals ({a.per_group} per group); spglib finds the intended group for "
          f"{frac_all:.2%}; worst groups {[(g, round(agree[g], 3)) for g in worst]}; spglib check "
          f"{t_spglib / n_total * 1e3:.2f} ms per crystal (not included above); groups below 99 %: "
          f"{sum(v < 0.99 for v in agree.values())}")
    print(f"  at symprec 1e-2: {frac_loose:.2%}; worst groups {[(g, round(agree_loose[g], 3)) for g in worst_loose]}; "
          f"groups below 99 %: {sum(v < 0.99 for v in agree_loose.values())}")
    print(f"pyxtal: {len(sub)} groups x {a.pyxtal_per_group}; failed calls {sum(p_fails.values())} "
          f"({ {g: f for g, f in p_fails.items() if f} })")
    print(f"one-time costs: xtalhpc tables + kernel {s_setup:.2f} s for 230 groups; pyxtal import {p_setup:.2f} s; "
          f"wall time {wall:.0f} s")
    print("per shared group (crystals/s, xtalhpc / pyxtal, median atoms): " + ", ".join(
        f"{g}: {s_rate[g]:.0f}/{p_rate[g]:.2f} ({s_atoms[g]:.0f})" for g in sub))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"versions": {"xtalhpc": xtalhpc.__version__, "pyxtal": pyxtal.__version__,
                                    "spglib": spglib.__version__, "numpy": np.__version__},
                       "per_group": a.per_group, "pyxtal_per_group": a.pyxtal_per_group, "seed": a.seed,
                       "special_fraction": a.special_fraction, "hydrogen_fraction": a.hydrogen_fraction,
                       "synth_rate": s_rate, "synth_atoms": s_atoms, "spglib_agree": agree, "spglib_agree_1e-2": agree_loose,
                       "pyxtal_rate": p_rate, "pyxtal_atoms": p_atoms, "pyxtal_failures": p_fails}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
