#!/usr/bin/env python
"""SHA-256 of every simulated pattern and |F|^2 list of a structure set, to compare two versions
of the code bit for bit (run once per checkout, then diff the JSON files).

Structures: the NCrystal library (../shared/data/structures/ncrystal, read by xtalhpc's .ncmat
reader, lengths from the tables, no overrides) and the bundled demo CIFs; one batch per
structure and one batch of all of them, BT-1 Cu(311). Each row says whether the structure holds
an absorbing nuclide (a non-zero imaginary length in this checkout's tables, when it has them).

Usage: PYTHONPATH=<checkout>/.pth:<checkout> python benchmarks/pattern_digests.py --out digests.json
       python benchmarks/pattern_digests.py --compare before.json after.json
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def collect(shared: Path) -> dict:
    from xtalhpc.io import read_structures
    from xtalhpc.simulate import simulate_batch

    files = sorted((shared / "structures" / "ncrystal").rglob("*.ncmat"))
    files += sorted((REPO / "xtalhpc" / "data" / "structures").glob("*.cif"))
    crystals, names = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                cs = read_structures(f)
            except Exception:  # noqa: BLE001 - files the reader refuses are not compared
                continue
            crystals += cs[:1]
            names.append(f.name)
    try:
        from xtalhpc.scattering import neutron_length

        absorbing = [any(neutron_length(s, 1.5403).imag != 0 for s in set(c.species)) for c in crystals]
    except ImportError:  # the checkout before complex lengths
        absorbing = [None] * len(crystals)
    out = {}
    batch = simulate_batch(crystals, "bt1-cu311", on_error="collect")
    for i, (c, name) in enumerate(zip(crystals, names)):
        one = simulate_batch([c], "bt1-cu311", on_error="collect")
        if not one.ok[0]:
            continue
        r = one.reflections(0)
        out[name] = {"pattern": _digest(one.patterns[0]), "F2": _digest(r.F2, r.hkl),
                     "pattern_in_batch": _digest(batch.patterns[i]), "absorbing": absorbing[i]}
    return out


def compare(a_path: str, b_path: str) -> int:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    common = sorted(set(a) & set(b))
    same, differ = [], []
    for k in common:
        eq = all(a[k][f] == b[k][f] for f in ("pattern", "F2", "pattern_in_batch"))
        (same if eq else differ).append(k)
    absorbing = {k for k in common if b[k].get("absorbing")}
    print(f"{len(common)} structures in both; identical bits: {len(same)}; different: {len(differ)}")
    print(f"  absorbing (b'' != 0 at 1.5403 A): {sorted(absorbing)}")
    print(f"  different without absorbers: {sorted(set(differ) - absorbing)}")
    print(f"  different with absorbers: {sorted(set(differ) & absorbing)}")
    return 1 if set(differ) - absorbing else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    res = collect(Path(args.shared))
    Path(args.out).write_text(json.dumps(res, indent=1, sort_keys=True))
    print(f"{len(res)} structures -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
