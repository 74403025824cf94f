"""``xtalhpc balance``: plan a class-balanced set by down-sampling and augmentation (docs/curation.md)."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

HELP = "plan a space-group-balanced set (down-sample large classes, augment small ones)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "balance", help=HELP, description=(
            "Writes a plan CSV (item, space_group, member, id, variant, seed): variant 0 = the member as "
            "is, variant k > 0 = an augmented copy drawn from (seed, item). Optionally restrict to one split "
            "of an assignment CSV from 'xtalhpc split' and write the class-balance report."))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="tables or structure files/folders")
    p.add_argument("--output", "-o", required=True, metavar="CSV", help="plan CSV to write")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--target", type=int, help="items per class")
    g.add_argument("--total", type=int, help="total items (per class = total // classes present; "
                                             "the poster's balanced set: 50000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-variants", type=int, default=None, metavar="K",
                   help="at most K augmented copies per structure; classes that cannot reach the target "
                        "stay short and are listed (default: no limit)")
    p.add_argument("--assignment", metavar="CSV", help="assignment CSV from 'xtalhpc split'")
    p.add_argument("--split", default="train", help="split to balance when --assignment is given (default train)")
    p.add_argument("--report", metavar="PNG", help="write the class-balance histogram (and .csv/.md tables)")
    return p


def run(args) -> int:
    from ..curate.balance import plan_balance, target_per_class
    from ..curate.report import class_balance_report
    from ..curate.table import load_inputs, report_skipped
    from ..errors import InputError

    _, records, skipped = load_inputs(args.inputs)
    report_skipped(skipped, "balance")
    if args.assignment:
        wanted = set()
        with open(args.assignment, newline="") as fh:
            reader = csv.DictReader(fh)
            for col in ("id", "source", "split"):
                if col not in (reader.fieldnames or []):
                    raise InputError(f"missing column {col!r} (is this an 'xtalhpc split' output?)",
                                     args.assignment, col)
            for row in reader:
                if row["split"] == args.split:
                    wanted.add((row["source"], row["id"]))
        records = [r for r in records if (r.source, r.id) in wanted]
        if not records:
            raise InputError(f"no entry of the inputs is in split {args.split!r}", args.assignment, "split")
    labels = [r.space_group for r in records]
    target = args.target if args.target is not None else target_per_class(args.total, len(set(labels)))
    plan = plan_balance(labels, target, args.seed, max_variants=args.max_variants)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan.write_csv(out, ids=[r.id for r in records])
    n_aug = sum(1 for it in plan.items if it.variant > 0)
    print(f"balance: {len(records)} entries in {len(set(labels))} classes -> {len(plan.items)} items "
          f"({target} per class; {n_aug} augmented, seed {args.seed}) -> {out}")
    if plan.short:
        print(f"  {len(plan.short)} classes stay below {target} (--max-variants {args.max_variants}): "
              + ", ".join(f"{k}: {v}" for k, v in sorted(plan.short.items())))
    if args.report:
        png = Path(args.report)
        s = class_balance_report(labels, plan.labels(), png, png.with_suffix(".csv"), png.with_suffix(".md"))
        print(f"  imbalance (largest/smallest class) {s['before']['imbalance']:.1f} -> "
              f"{s['after']['imbalance']:.1f}; report {png}")
    return 0
