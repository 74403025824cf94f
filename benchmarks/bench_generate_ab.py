"""Generation speed of two checkouts side by side (before/after a change), alternating runs.

Each repeat runs ``xtalhpc generate`` from checkout A, then B (the order flips every repeat),
on 1 and then 2 ranks, with :func:`bench_generate.run_generate` (same 64 structures, ``--cycle-to
N``, NUMBA_NUM_THREADS=1 per rank). A checkout is imported from its own root (PYTHONPATH=ROOT/.pth:
ROOT, where ``.pth/xtalhpc_kernels`` links to ROOT/kernels; without ``.pth`` the root must be the
venv's editable install). On a shared machine compare the medians and say the spread.

With ``--all-real`` the input is instead every structure file under the shared data's
``structures/`` once (distinct files: CIF, .ncmat, POSCAR; shard size 32, as ``bench_generate.py
--all-real``), and the table gives the share of the rank's time spent in the compiled kernels.

Usage::

    python benchmarks/bench_generate_ab.py /work/main /work/wt-i14 --n 20000 --repeats 3
    python benchmarks/bench_generate_ab.py /work/main /work/wt-i18b --all-real --ranks 1 --repeats 3
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
    ap.add_argument("--all-real", action="store_true", help="every shared structure file once (see above)")
    args = ap.parse_args(argv)
    if args.all_real:
        return all_real(args)
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


def all_real(args) -> int:
    """A/B of generate over every shared structure file once: kernel share of the rank time."""
    roots = {"A": args.a.resolve(), "B": args.b.resolve()}
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    src = bg.SHARED / "structures"
    runs = []
    for root in roots.values():  # load (or compile) each checkout's kernels, not timed
        use_checkout(root)
        bg.run_generate(src, args.workdir / "warm", 0, 1, 32, cycle=False)
        shutil.rmtree(args.workdir / "warm")
    for rep in range(args.repeats):
        for name in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            use_checkout(roots[name])
            for r in args.ranks:
                out = args.workdir / f"{name}-r{r}"
                res = bg.run_generate(src, out, 0, r, 32, cycle=False)
                res.update(checkout=name, root=str(roots[name]), repeat=rep,
                           kernel_share_rank=res["kernel_s"] / res["busy_rank_s"],
                           kernel_share_wall=res["kernel_s"] / (res["wall_s"] * r))
                runs.append(res)
                print(f"repeat {rep} {name} {r} rank(s): {res['n']} items, wall {res['wall_s']:.1f} s, read "
                      f"{res['read_s']:.2f} s, post {res['post_s']:.2f} s, simulate {res['simulate_s']:.2f} s, "
                      f"kernels {res['kernel_s']:.2f} s = {100 * res['kernel_share_rank']:.1f}% of rank time "
                      f"(load {res['loadavg_before']:.1f})", flush=True)
                shutil.rmtree(out)
    print("\n| ranks | checkout | kernels / rank time (median; runs) | reading (s) | labels + key (s) "
          "| simulate_batch (s) | kernels (s) | wall (s) |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for r in args.ranks:
        for name in ("A", "B"):
            xs = [x for x in runs if x["checkout"] == name and x["ranks"] == r]
            med = lambda k: statistics.median(x[k] for x in xs)  # noqa: E731
            shares = ", ".join(f"{100 * x['kernel_share_rank']:.1f}%" for x in xs)
            print(f"| {r} | {name} {roots[name]} | {100 * med('kernel_share_rank'):.1f}%; "
                  f"{shares} | {med('read_s'):.2f} "
                  f"| {med('post_s'):.2f} | {med('simulate_s'):.2f} | {med('kernel_s'):.2f} | {med('wall_s'):.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"roots": {k: str(v) for k, v in roots.items()}, "runs": runs}, indent=1)
                             + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
