"""``xtalhpc split``: train/val/test assignment grouped by structure type (docs/curation.md)."""
from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

HELP = "assign train/val/test splits grouped by structure type (no group straddles splits)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "split", help=HELP, description=(
            "Group key: anonymous formula (solid-solution sites merged) + space group, e.g. 'ABC3|221'. "
            "Writes one row per entry (id, source, row, reduced_formula, space_group, structure_type, split) "
            "and OUTPUT.json with the settings and counts."))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tables or structure files/folders")
    p.add_argument("--output", "-o", required=True, metavar="CSV", help="assignment CSV to write")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1),
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions (default 0.8 0.1 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the assignment (default 0)")
    p.add_argument("--method", choices=("hash", "greedy"), default="hash",
                   help="hash: per-group hash, stable when data are added (default); "
                        "greedy: largest groups first, row fractions close to target")
    return p


def run(args) -> int:
    from ..curate.splits import SPLIT_NAMES, assign_splits, structure_type_key
    from ..curate.table import load_inputs, report_skipped

    _, records, skipped = load_inputs(args.inputs)
    report_skipped(skipped, "split")
    keys = [structure_type_key(r) for r in records]
    splits = assign_splits(keys, args.fractions, args.seed, method=args.method)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "source", "row", "reduced_formula", "space_group", "structure_type", "split"])
        for r, k, s in zip(records, keys, splits):
            w.writerow([r.id, r.source, r.row, r.formula, r.space_group, k, s])
    rows = Counter(splits)
    groups = Counter(s for s in dict(zip(keys, splits)).values())
    summary = {"inputs": [str(p) for p in args.inputs], "fractions": list(args.fractions), "seed": args.seed,
               "method": args.method, "key": "anonymous formula (solid-solution sites merged) | space group",
               "rows": {s: rows.get(s, 0) for s in SPLIT_NAMES},
               "groups": {s: groups.get(s, 0) for s in SPLIT_NAMES}}
    Path(str(out) + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    n = len(records)
    print(f"split: {n} entries in {len(set(keys))} structure-type groups (seed {args.seed}, {args.method})")
    for s in SPLIT_NAMES:
        print(f"  {s:5s} {rows.get(s, 0):8d} rows ({100 * rows.get(s, 0) / max(n, 1):5.1f} %) "
              f"{groups.get(s, 0):7d} groups")
    return 0
