"""Where a model fails on patterns simulated from real structures: accuracy by subset.

Reads one ``xtalhpc evaluate`` output (its ``predictions.npz``) and the dataset it evaluated,
and prints space-group top-1 / top-3 and crystal-system top-1 by source collection (the folder
under ``structures/``), by hydrogen content (any H or D; organic: C and H), by the number of
distinct elements, by atoms per cell and by crystal system. This is how stage 12's lever was
found (docs/model-card.md): it reads evaluation output only and fits nothing.

    python benchmarks/real_breakdown.py EVAL_DIR DATASET_DIR [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def _text(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])


def _elements(formula: str) -> set[str]:
    return set(re.findall(r"[A-Z][a-z]?", formula))


def breakdown(eval_dir: str, dataset: str) -> list[dict]:
    """Rows ``{"subset", "n", "sg_top1", "sg_top3", "cs_top1"}``."""
    import h5py

    p = np.load(f"{eval_dir}/predictions.npz")
    rows = p["rows"]
    with h5py.File(f"{dataset}/dataset.h5", "r") as f:
        items = f["entry/items"]
        source = _text(items["source_id"][:])[rows]
        formula = _text(items["formula"][:])[rows]
        n_atoms = items["n_atoms"][:][rows]
    label, top = p["space_group/label"], p["space_group/top"]
    cs_label, cs_top = p["crystal_system/label"], p["crystal_system/top"]
    hit1 = top[:, 0] == label
    hit3 = (top[:, :3] == label[:, None]).any(axis=1)
    cs1 = cs_top[:, 0] == cs_label
    out = []

    def add(name, mask):
        n = int(mask.sum())
        if n:
            out.append({"subset": name, "n": n, "sg_top1": float(hit1[mask].mean()),
                        "sg_top3": float(hit3[mask].mean()), "cs_top1": float(cs1[mask].mean())})

    add("all", np.ones(len(rows), bool))
    folder = np.array([s.split("structures/", 1)[1].split("/", 1)[0] if "structures/" in s else "other"
                       for s in source])
    for name in sorted(set(folder)):
        add(f"source {name}", folder == name)
    els = [_elements(x) for x in formula]
    has_h = np.array([bool(e & {"H", "D"}) for e in els])
    organic = np.array([bool(e & {"H", "D"}) and "C" in e for e in els])
    add("with hydrogen", has_h)
    add("with hydrogen and carbon", organic)
    add("without hydrogen", ~has_h)
    n_el = np.array([len(e) for e in els])
    for k in (1, 2, 3):
        add(f"{k} element(s)", n_el == k)
    add("4 or more elements", n_el >= 4)
    for lo, hi in ((1, 4), (5, 16), (17, 48), (49, 120), (121, None)):
        add(f"atoms per cell {lo}-{hi or ''}", (n_atoms >= lo) & ((n_atoms <= hi) if hi else True))
    for k, name in enumerate(CRYSTAL_SYSTEMS):
        add(f"crystal system {name}", cs_label == k)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir")
    ap.add_argument("dataset")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = breakdown(args.eval_dir, args.dataset)
    print(f"{'subset':34s} {'n':>6s}  sg top-1  sg top-3  cs top-1")
    for r in rows:
        print(f"{r['subset']:34s} {r['n']:6d}  {r['sg_top1']:8.3f}  {r['sg_top3']:8.3f}  {r['cs_top1']:8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"eval_dir": args.eval_dir, "dataset": args.dataset, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
