#!/usr/bin/env python
"""One ``simulate()`` call, as interactive and predict-side use makes it: checkouts side by side.

For each bundled structure (xtalhpc/data/structures/*.cif, read with ``load_structure``) the
median wall and CPU time of ``--calls`` calls of ``simulate(crystal, "bt1-cu311")``, and the
kernel stages of ``simulate_batch([crystal])`` (its timers) for the overhead beyond them. Numba's
thread count is left at its default (all cores), as a user gets it, unless ``--threads`` is
given. Each checkout runs in a fresh process of its own (``PYTHONPATH=ROOT/.pth:ROOT``), A B, B A, ...

Usage::

    python benchmarks/bench_single_call.py ROOT_A ROOT_B [--repeats 3] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkouts import alternate  # noqa: E402
KERNEL_STAGES = ("count", "structure_factors", "families", "profiles")


def inner(calls: int) -> dict:
    from xtalhpc.io import load_structure
    from xtalhpc.simulate import simulate, simulate_batch

    files = sorted((REPO / "xtalhpc" / "data" / "structures").glob("*.cif"))
    cs = [load_structure(f) for f in files]
    for c in cs:  # compile / load the kernels and the group tables
        simulate(c, "bt1-cu311")
    wall, cpu, over = [], [], []
    for c in cs:
        w_, c_, k_ = [], [], []
        for _ in range(calls):
            t, p = time.perf_counter(), time.process_time()
            simulate(c, "bt1-cu311")
            w_.append(time.perf_counter() - t)
            c_.append(time.process_time() - p)
            k_.append(sum(simulate_batch([c], "bt1-cu311").timings.get(k, 0.0) for k in KERNEL_STAGES))
        wall.append(statistics.median(w_))
        cpu.append(statistics.median(c_))
        over.append(statistics.median(w_) - statistics.median(k_))
    import numba

    return {"threads": numba.get_num_threads(), "n_structures": len(cs),
            "wall_ms_median": 1e3 * statistics.median(wall), "cpu_ms_median": 1e3 * statistics.median(cpu),
            "wall_beyond_kernels_ms_median": 1e3 * statistics.median(over)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", type=Path, nargs="*")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args.calls)))
        return 0
    roots = [r.resolve() for r in args.roots] or [REPO]
    runs = alternate(__file__, roots, args.repeats, ["--inner", "--calls", str(args.calls)], threads=args.threads)
    print("\n| checkout | Numba threads | simulate() wall, median (ms) | CPU (ms) | wall beyond the kernels (ms) |")
    print("|---|---:|---:|---:|---:|")
    for root in roots:
        xs = [x for x in runs if x["root"] == str(root)]
        med = lambda k: statistics.median(x[k] for x in xs)  # noqa: E731
        print(f"| {root} | {xs[0]['threads']} | {med('wall_ms_median'):.3f} | {med('cpu_ms_median'):.3f} "
              f"| {med('wall_beyond_kernels_ms_median'):.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
