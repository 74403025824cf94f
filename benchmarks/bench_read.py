#!/usr/bin/env python
"""Reading vs simulating distinct structures, and the single-call overhead of ``simulate()``,
for one or more checkouts side by side (issue 18).

The structure set is bench_simulate's distinct set (``--distinct N`` files of the shared data:
every k-th single-block COD / pyxtal / XRD-AutoAnalyzer CIF of 1-200 atoms, plus a full-precision
P1 re-export of each that carries symmetry), written once by this process. Each checkout then
runs, in a fresh process of its own (``PYTHONPATH=ROOT/.pth:ROOT``, NUMBA_NUM_THREADS=1, kernels
compiled before timing), the same stages over the same files:

* reading: ``read_blocks(path, find_symmetry=False)`` per file;
* symmetry finding: ``detect_symmetry`` on each structure given without operations;
* simulation: one ``simulate_batch`` over all structures (best of 5);
* single call: ``simulate(crystal)`` per structure (best of 5 each) and, beside it, the kernel
  stages of ``simulate_batch([crystal])`` (best of 5 of their timers): the rest is the overhead of
  one call beyond the kernels.

Times are CPU seconds of the process (time.process_time; one thread, so one core's time): on a
machine shared with other jobs they are stretched far less than wall times. The checkouts
alternate (A B, B A, ...) for ``--repeats`` rounds; medians are reported.

Usage::

    python benchmarks/bench_read.py [ROOT ...] [--distinct 40] [--repeats 3] [--json out.json]

With no ROOT, this checkout alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkouts import alternate  # noqa: E402
KERNEL_STAGES = ("count", "structure_factors", "families", "profiles")


def inner(list_file: Path) -> dict:
    """The stages over the files listed in ``list_file``, in this process (this checkout)."""
    import numpy as np

    from xtalhpc.crystal import detect_symmetry
    from xtalhpc.instruments import get_instrument
    from xtalhpc.io import read_blocks
    from xtalhpc.simulate import simulate, simulate_batch

    paths = [Path(p) for p in json.loads(list_file.read_text())]
    inst = get_instrument("bt1-cu311")
    clock = time.process_time
    # load every kernel the stages use before timing: a file with operators (the reader's
    # expansion and symmetrisation) and a P1 re-export (symmetry finding), then the simulator;
    # and spglib, which the reader imports for an operator set gemmi's table does not know (~15
    # ms, once per process, like the kernels' loading: 0.2 ms per structure of a 75-file run)
    import spglib  # noqa: F401
    for p in (paths[0], paths[-1]):
        warm = read_blocks(p, find_symmetry=False)[0]
        warm = detect_symmetry(warm) if warm.symmetry is None else warm
        simulate_batch([warm], inst)
        simulate(warm, inst)
    t_read, t_sym, cs = 0.0, 0.0, []
    for p in paths:
        t = clock()
        c = read_blocks(p, find_symmetry=False)[0]
        t1 = clock()
        if c.symmetry is None:
            c = detect_symmetry(c)
        t_read += t1 - t
        t_sym += clock() - t1
        cs.append(c)
    simulate_batch(cs, inst)  # the group tables once per process, as in a dataset run
    t_batch = np.inf
    for _ in range(5):
        t = clock()
        simulate_batch(cs, inst)
        t_batch = min(t_batch, clock() - t)
    single, single_kernels = [], []
    for c in cs:
        best = np.inf
        for _ in range(5):
            t = clock()
            simulate(c, inst)
            best = min(best, clock() - t)
        # simulate() returns no timers: its kernels' time is that of simulate_batch([c]) (best
        # of 5 of the kernel timers, wall clocks of a one-thread run)
        kern = min(sum(simulate_batch([c], inst).timings.get(k, 0.0) for k in KERNEL_STAGES) for _ in range(5))
        single.append(best)
        single_kernels.append(min(kern, best))
    single = np.array(single)
    over = single - np.array(single_kernels)
    n = len(cs)
    return {"n": n, "read_ms": 1e3 * t_read / n, "symmetry_ms": 1e3 * t_sym / n, "simulate_ms": 1e3 * t_batch / n,
            "read_over_simulate": t_read / t_batch, "read_symmetry_over_simulate": (t_read + t_sym) / t_batch,
            "single_call_median_ms": 1e3 * float(np.median(single)),
            "single_call_overhead_median_ms": 1e3 * float(np.median(over)),
            "single_call_overhead_min_ms": 1e3 * float(over.min())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", type=Path, nargs="*", help="checkouts to compare (default: this one)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("XTALHPC_SHARED_DATA",
                                                                      REPO.parent / "shared" / "data")))
    ap.add_argument("--distinct", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--inner", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args.inner)))
        return 0
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_simulate import distinct_files

    roots = [r.resolve() for r in args.roots] or [REPO]
    tmp = Path(tempfile.mkdtemp(prefix="bench-read-"))
    paths, _ = distinct_files(args.shared, args.distinct, tmp)
    list_file = tmp / "files.json"
    list_file.write_text(json.dumps([str(p) for p in paths]))
    runs = alternate(__file__, roots, args.repeats, ["--inner", str(list_file)])
    keys = [("read_ms", "reading (ms/structure)"), ("symmetry_ms", "symmetry finding (ms/structure)"),
            ("simulate_ms", "simulate_batch (ms/structure)"), ("read_over_simulate", "reading / simulate"),
            ("read_symmetry_over_simulate", "(reading + symmetry) / simulate"),
            ("single_call_median_ms", "simulate() one call, median (ms)"),
            ("single_call_overhead_median_ms", "simulate() beyond the kernels, median (ms)")]
    print(f"\n{len(paths)} structures, CPU time, medians of {args.repeats} runs per checkout\n")
    print("| | " + " | ".join(str(r) for r in roots) + " |")
    print("|---|" + "---:|" * len(roots))
    for k, name in keys:
        vals = [statistics.median(x[k] for x in runs if x["root"] == str(r)) for r in roots]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"n_files": len(paths), "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
