"""``xtalhpc dedup``: drop duplicate structure entries (rules in docs/curation.md)."""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

HELP = "de-duplicate structure tables (ICSD-style CSV) and structure files"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dedup", help=HELP, description=(
            "Entries are duplicates when they have the same reduced formula and space group and "
            "(cell mode) a, b, c within --tolerance percent and alpha, beta, gamma within --angle-tolerance "
            "degrees; grouping is transitive. Kept per group: most recent publication year, then lowest id. "
            "Writes OUT/kept.csv, OUT/dropped.csv (id, kept_id, reason) and OUT/summary.json."))
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="CSV/TSV tables (.csv, .tsv, .txt) or structure files/folders")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder")
    p.add_argument("--by", choices=("auto", "cell", "formula"), default="auto",
                   help="cell: formula + space group + lattice; formula: formula + space group only; "
                        "auto (default): cell if every entry has lattice parameters")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="PERCENT",
                   help="relative tolerance on a, b, c in percent (default 1)")
    p.add_argument("--angle-tolerance", type=float, default=1.0, metavar="DEG",
                   help="absolute tolerance on alpha, beta, gamma in degrees (default 1)")
    p.add_argument("--niggli", action="store_true",
                   help="cell mode: also match Niggli-reduced primitive cells, so the same structure in "
                        "another setting is found")
    return p


NORMALIZED_COLUMNS = ["id", "formula_as_written", "reduced_formula", "space_group", "year",
                      "a", "b", "c", "alpha", "beta", "gamma", "source", "row"]


def _normalized_row(r) -> list:
    cell = list(r.cell) if r.cell is not None else [""] * 6
    return [r.id, r.formula_as_written, r.formula, r.space_group, "" if r.year is None else r.year,
            *cell, r.source, r.row]


def run(args) -> int:
    from ..curate.dedup import find_duplicates
    from ..curate.table import load_inputs, report_skipped

    t0 = time.perf_counter()
    mode = args.by
    headers, records, skipped = load_inputs(args.inputs, require_cell=(mode == "cell"))
    report_skipped(skipped, "dedup")
    result = find_duplicates(records, mode=mode, length_tol=args.tolerance / 100.0,
                             angle_tol=args.angle_tolerance, niggli=args.niggli)
    used = "cell" if mode == "cell" or (mode == "auto" and records and all(r.cell is not None for r in records)) \
        else "formula"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    same_header = all(h is not None for h in headers) and all(h == headers[0] for h in headers)
    with open(out / "kept.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        multi = len(args.inputs) > 1
        if same_header:
            w.writerow(headers[0] + (["source"] if multi else []))
            for i in result.kept:
                r = records[i]
                w.writerow(r.raw[: len(headers[0])] + ([r.source] if multi else []))
        else:
            w.writerow(NORMALIZED_COLUMNS)
            for i in result.kept:
                w.writerow(_normalized_row(records[i]))
    with open(out / "dropped.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "kept_id", "reason", "source", "row", "kept_source", "kept_row"])
        for i, k, reason in result.dropped:
            w.writerow([records[i].id, records[k].id, reason, records[i].source, records[i].row,
                        records[k].source, records[k].row])
    summary = {
        "inputs": [str(p) for p in args.inputs], "mode": used,
        "length_tolerance_percent": args.tolerance if used == "cell" else None,
        "angle_tolerance_deg": args.angle_tolerance if used == "cell" else None,
        "niggli": bool(args.niggli) if used == "cell" else None,
        "keep_rule": "most recent publication year (missing = oldest), then lowest id, then input order",
        "before": result.n_before, "after": len(result.kept), "dropped": len(result.dropped),
        "dropped_fraction": result.dropped_fraction, "groups": result.n_groups,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"dedup ({used} mode): before {result.n_before}, after {len(result.kept)}, "
          f"dropped {len(result.dropped)} ({100 * result.dropped_fraction:.1f} %) "
          f"in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0
