"""The measured-pattern benchmark: `xtalhpc predict` on every row of benchmarks/measured.csv.

For each measured constant-wavelength neutron pattern of the shared data folder (paths in the
CSV are relative to it: $XTALHPC_SHARED_DATA, else /work/shared/data, else ../shared/data
beside the repository), with the wavelength and instrument parameter file the CSV gives,
prints the top-3 space groups and the top crystal system beside the known labels, then the
hit rates (crystal-system top-1, space-group top-1 and top-3, Bravais-lattice top-1) and the
latency of predict on one core: per pattern with the model loaded (read, background,
regrid, normalise, forward), and from process start to the first answer (`xtalhpc predict`
in a fresh process). Works with any model file (`--model`; default the installed one).

    python benchmarks/bench_measured.py --model RUN/model.pt [--background subtract|keep] [--json OUT]

A row the CSV gives no wavelength for (G4.1 Dy3Al5O12: none is stated in any file) is listed
as rejected, as `xtalhpc predict` would reject it; the hit rates are given over the patterns
predicted and over all rows (a rejected row counted as a miss).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("XTALHPC_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [Path("/work/shared/data"), REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    sys.exit("no shared data folder: set XTALHPC_SHARED_DATA")


def first_answer_seconds(exe: list[str], args: list[str], env: dict) -> float:
    """Wall time from starting `xtalhpc predict ...` to its first line of stdout (the first file's answer)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(exe + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline()
    t = time.perf_counter() - t0
    p.communicate()
    if not line:
        raise RuntimeError(f"no answer from {' '.join(exe + args)} (exit {p.returncode})")
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model file or run directory (default: the installed model)")
    ap.add_argument("--csv", default=str(REPO / "benchmarks" / "measured.csv"))
    ap.add_argument("--data", default=None, help="shared data folder (default: $XTALHPC_SHARED_DATA, /work/shared/data)")
    ap.add_argument("--background", default="subtract", choices=("subtract", "keep"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (default 3)")
    ap.add_argument("--prior", default="default", help="deployment prior: default (the file's), none, or a name")
    ap.add_argument("--json", default=None, help="write the per-file results and the rates as JSON")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from xtalhpc.errors import InputError
    from xtalhpc.io.measured import read_measured
    from xtalhpc.predict import Classifier, Prediction, prepare_pattern, reason, resolve_model, space_group_symbol

    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else shared_data_dir()
    rows = list(csv.DictReader(open(args.csv)))
    model = resolve_model(args.model)
    t0 = time.perf_counter()
    clf = Classifier(model, prior=args.prior)
    t_load = time.perf_counter() - t0

    def one(r) -> Prediction:
        f = data / r["file"]
        try:
            pat = read_measured(f, instrument_file=(data / r["instrument_file"]) if r["instrument_file"] else None)
            wl = float(r["wavelength"]) if r["wavelength"] else None
            p = Prediction(str(f), prepared=prepare_pattern(pat, clf, wavelength=wl, wavelength_source="csv",
                                                            background=args.background))
        except InputError as exc:
            return Prediction(str(f), error=reason(exc))
        p.probabilities = {h: v[0] for h, v in clf.probabilities(clf.logits(p.prepared.x[None])).items()}
        return p

    one(rows[0])  # warm-up (first forward allocates)
    times, preds = [], []
    for r in rows:
        best = float("inf")
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            p = one(r)
            best = min(best, time.perf_counter() - t)
        times.append(best)
        preds.append(p)
    ok = [p.error is None for p in preds]
    # forward pass alone, batched over the benchmark's patterns
    x = np.stack([p.prepared.x for p in preds if p.error is None])
    t = time.perf_counter()
    for _ in range(max(1, args.repeat)):
        clf.logits(x)
    t_fwd = (time.perf_counter() - t) / max(1, args.repeat) / len(x)

    print(f"model {model}  (prior {clf.prior or 'none'}; temperatures {', '.join(f'{h} {v:.3g}' for h, v in clf.temperatures.items())}); "
          f"background {args.background}; {args.threads} torch thread(s); data {data}")
    hdr = f"{'material':<16} {'known':<14} {'system':<13} {'top-3 space groups (p)':<52} {'pred. system':<19} hit"
    print(hdr)
    print("-" * len(hdr))
    recs = []
    for r, p in zip(rows, preds):
        known = int(r["space_group"])
        ks = f"{known} {space_group_symbol(known)}"
        if p.error:
            print(f"{r['material']:<16} {ks:<14} {r['crystal_system']:<13} rejected: {p.error}")
            recs.append({"file": r["file"], "material": r["material"], "error": p.error})
            continue
        sg = p.ranked("space_group", 3, clf.classes["space_group"])
        cs = p.ranked("crystal_system", 1, clf.classes["crystal_system"])[0]
        bl = p.ranked("bravais_lattice", 1, clf.classes["bravais_lattice"])[0] if "bravais_lattice" in \
            p.probabilities else ("", 0.0)
        top3 = [int(n) for n, _ in sg]
        hit = {"sg1": top3[0] == known, "sg3": known in top3, "cs1": cs[0] == r["crystal_system"],
               "bl1": bl[0] == r["bravais_lattice"]}
        cells = ", ".join(f"{n} {space_group_symbol(int(n))} ({q:.2f})" for n, q in sg)
        flags = ("S" if hit["sg1"] else ("s" if hit["sg3"] else "-")) + ("C" if hit["cs1"] else "-")
        print(f"{r['material']:<16} {ks:<14} {r['crystal_system']:<13} {cells:<52} {cs[0] + f' ({cs[1]:.2f})':<19} "
              f"{flags}")
        recs.append({"file": r["file"], "material": r["material"], "space_group": known,
                     "crystal_system": r["crystal_system"], "bravais_lattice": r["bravais_lattice"],
                     "top3": [{"number": int(n), "probability": q} for n, q in sg],
                     "predicted_crystal_system": cs[0], "predicted_bravais_lattice": bl[0],
                     "coverage": p.prepared.coverage, **hit})
    print("hit: S space group top-1, s top-3, C crystal system top-1")
    done = [r for r in recs if "error" not in r]
    n, n_all = len(done), len(recs)
    rates = {}
    print(f"\nhit rates over the {n} patterns predicted (and over all {n_all} rows, a rejected row a miss):")
    for key, label in (("cs1", "crystal system top-1"), ("sg1", "space group top-1"), ("sg3", "space group top-3"),
                       ("bl1", "Bravais lattice top-1")):
        k = sum(r[key] for r in done)
        rates[key] = {"hits": k, "of_predicted": k / n if n else float("nan"), "of_all": k / n_all}
        print(f"  {label:<22} {k:>2}/{n} = {k / max(n, 1):.2f}   ({k}/{n_all} = {k / n_all:.2f})")
    ms = [1000 * t for t, o in zip(times, ok) if o]
    print(f"\nlatency on {args.threads} thread(s), model loaded (load {t_load:.2f} s): per pattern read + background + "
          f"regrid + normalise + forward median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}); "
          f"forward alone {1000 * t_fwd:.2f} ms per pattern (batch of {len(x)})")
    # from process start to the first answer: a fresh `xtalhpc predict` on the first predictable row
    r0 = next(r for r, o in zip(rows, ok) if o)
    pargs = ["predict", str(data / r0["file"]), "--model", str(model), "--threads", str(args.threads),
             "--background", args.background]
    if r0["instrument_file"]:
        pargs += ["--param-file", str(data / r0["instrument_file"])]
    if r0["wavelength"]:
        pargs += ["--wavelength", r0["wavelength"]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    exe = [sys.executable, "-m", "xtalhpc.cli"]
    starts = [first_answer_seconds(exe, pargs, env) for _ in range(max(1, args.repeat))]
    print(f"process start to first answer (`python -m xtalhpc.cli predict {Path(r0['file']).name} ...`): median "
          f"{statistics.median(starts):.2f} s of {len(starts)} (min {min(starts):.2f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": str(model), "background": args.background, "threads": args.threads, "results": recs,
            "rates": rates, "latency_ms": {"median": statistics.median(ms), "min": min(ms), "max": max(ms),
                                           "forward": 1000 * t_fwd},
            "first_answer_s": {"median": statistics.median(starts), "min": min(starts)}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
