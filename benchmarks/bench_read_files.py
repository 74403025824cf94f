#!/usr/bin/env python
"""Reading many CIFs, warm, for one or more checkouts side by side (issue 18).

The set: every COD / pyxtal / XRD-AutoAnalyzer CIF under the shared data's structures folder
(815 files, 1-7,296 atoms; the bench_read set is 75 of them and their P1 re-exports). Each
checkout runs in fresh processes of its own (``PYTHONPATH=ROOT/.pth:ROOT``,
NUMBA_NUM_THREADS=1): one pass over all files (first sight of every operator set, kernels
loaded from Numba's cache or compiled: reported as "first pass"), then ``--passes`` timed passes of ``read_blocks(path, find_symmetry=False)``; the
best pass is the process's figure. The checkouts alternate (A B, B A, ...) for ``--repeats``
rounds; medians of the processes are reported. Times are CPU seconds of the process
(time.process_time).

Usage::

    python benchmarks/bench_read_files.py [ROOT ...] [--repeats 4] [--passes 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkouts import alternate  # noqa: E402
SOURCES = ("cod", "pyxtal", "xrd_autoanalyzer")


def files_of(shared: Path) -> list[str]:
    root = shared / "structures"
    return sorted(str(p) for src in SOURCES for p in (root / src).rglob("*.cif"))


def inner(shared: Path, passes: int) -> dict:
    from xtalhpc.io import read_blocks

    files = files_of(shared)
    clock = time.process_time
    t = clock()
    for f in files:
        read_blocks(f, find_symmetry=False)
    first = clock() - t
    best = float("inf")
    for _ in range(passes):
        t = clock()
        for f in files:
            read_blocks(f, find_symmetry=False)
        best = min(best, clock() - t)
    return {"n_files": len(files), "first_pass_ms": 1e3 * first / len(files), "best_pass_ms": 1e3 * best / len(files)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", type=Path, nargs="*", help="checkouts to compare (default: this one)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("XTALHPC_SHARED_DATA",
                                                                      REPO.parent / "shared" / "data")))
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args.shared, args.passes)))
        return 0
    roots = [r.resolve() for r in args.roots] or [REPO]
    runs = alternate(__file__, roots, args.repeats, ["--inner", "--shared", str(args.shared),
                                                     "--passes", str(args.passes)])
    n = runs[0]["n_files"]
    print(f"\n{n} CIFs, CPU ms per file, medians of {args.repeats} processes per checkout\n")
    print("| | " + " | ".join(str(r) for r in roots) + " |")
    print("|---|" + "---:|" * len(roots))
    for k, name in (("first_pass_ms", "first pass (operator sets first seen)"), ("best_pass_ms", "best warm pass")):
        vals = [statistics.median(x[k] for x in runs if x["root"] == str(r)) for r in roots]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
