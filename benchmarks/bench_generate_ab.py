"""Generation speed of two checkouts side by side (before/after a change), alternating runs.

Each repeat runs ``xtalhpc generate`` from checkout A, then B (the order flips every repeat),
on 1 and then 2 ranks, with :func:`bench_generate.run_generate` (same 64 structures, ``--cycle-to
N``, NUMBA_NUM_THREADS=1 per rank). A checkout is imported from its own root (PYTHONPATH=ROOT/.pth:
ROOT, where ``.pth/xtalhpc_kernels`` links to ROOT/kernels; without ``.pth`` the root must be the
venv's editable install). On a shared machine compare the medians and say the spread.

Usage::

    python benchmarks/bench_generate_ab.py /work/main /work/wt-i14 --n 20000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generate as bg  # noqa: E402


def use_checkout(root: Path) -> None:
    """Make ``python -m xtalhpc.cli`` in subprocesses import ``root``'s code."""
    pth = root / ".pth"
    os.environ["PYTHONPATH"] = f"{pth}:{root}" if pth.is_dir() else str(root)
    os.chdir(root)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="checkout A (e.g. main)")
    ap.add_argument("b", type=Path, help="checkout B (e.g. the branch)")
    ap.add_argument("--n", type=int, default=20_000, help="patterns per run")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/xtalhpc-bench-generate-ab"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not bg.SHARED.is_dir():
        print(f"shared data {bg.SHARED} absent (set XTALHPC_SHARED_DATA)", file=sys.stderr)
        return 2
    roots = {"A": args.a.resolve(), "B": args.b.resolve()}
    shutil.rmtree(args.workdir, ignore_errors=True)
    inputs = args.workdir / "inputs"
    bg.select_structures(inputs)
    for root in roots.values():  # load (or compile) each checkout's kernels, not timed
        use_checkout(root)
        bg.run_generate(inputs, args.workdir / "warm", 64, 1, 64)
        shutil.rmtree(args.workdir / "warm")
    runs = []
    for rep in range(args.repeats):
        for name in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            use_checkout(roots[name])
            for r in args.ranks:
                out = args.workdir / f"{name}-r{r}"
                res = bg.run_generate(inputs, out, args.n, r, args.shard_size)
                res.update(checkout=name, root=str(roots[name]), repeat=rep)
                runs.append(res)
                print(f"repeat {rep} {name} {r} rank(s): {res['patterns_per_s']:,.0f} patterns/s "
                      f"({res['cpu_share']:.2f} cores, {res['patterns_per_cpu_s']:,.0f} patterns per CPU-s, "
                      f"load {res['loadavg_before']:.1f})", flush=True)
                shutil.rmtree(out)
    print(f"\n| ranks | A {roots['A']} patterns/s (median; runs) | B {roots['B']} patterns/s (median; runs) "
          "| B/A (medians) | B/A patterns per CPU-s |")
    print("|---:|---|---|---:|---:|")
    for r in args.ranks:
        pa = [x["patterns_per_s"] for x in runs if x["checkout"] == "A" and x["ranks"] == r]
        pb = [x["patterns_per_s"] for x in runs if x["checkout"] == "B" and x["ranks"] == r]
        ca = [x["patterns_per_cpu_s"] for x in runs if x["checkout"] == "A" and x["ranks"] == r]
        cb = [x["patterns_per_cpu_s"] for x in runs if x["checkout"] == "B" and x["ranks"] == r]
        print(f"| {r} | {statistics.median(pa):,.0f}; {', '.join(f'{x:,.0f}' for x in pa)} "
              f"| {statistics.median(pb):,.0f}; {', '.join(f'{x:,.0f}' for x in pb)} "
              f"| {statistics.median(pb) / statistics.median(pa):.3f} "
              f"| {statistics.median(cb) / statistics.median(ca):.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"roots": {k: str(v) for k, v in roots.items()}, "runs": runs}, indent=1)
                             + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
