"""Learning curve of a training run: accuracy against training patterns seen, on held-out data.

For every checkpoint of a run (``RUN/checkpoints/step-*.pt``, or a folder where they were
copied before the run deleted old ones), writes a model file with that checkpoint's weights
(``xtalhpc export``: the file the run's end writes, with that checkpoint's weights) and runs
``xtalhpc evaluate`` on a dataset, then prints one row per checkpoint: patterns seen and top-1 /
top-3 per head. This is the evidence for "what more compute would buy" on the model card.

    python benchmarks/learning_curve.py RUN --dataset DIR [--split all] [--augment measured] \\
        [--checkpoints DIR] [--output OUT] [--json OUT.json]

The validation curve the run logged itself is in ``RUN/metrics.jsonl``; this script adds the
curve on data the run never saw in any form (e.g. patterns simulated from real structures).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HEADS = ("space_group", "crystal_system", "bravais_lattice", "extinction_group")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="training run directory (its config.toml, job.json and checkpoints)")
    ap.add_argument("--dataset", required=True, help="held-out dataset on the model's grid")
    ap.add_argument("--split", default="all")
    ap.add_argument("--augment", default="measured", choices=("off", "measured"))
    ap.add_argument("--checkpoints", type=Path, default=None, help="folder of step-*.pt (default RUN/checkpoints)")
    ap.add_argument("--output", type=Path, default=Path("learning-curve"))
    ap.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--train-dataset", default=None,
                    help="the run's training dataset where it now lives (default: the one RUN/job.json names)")
    args = ap.parse_args(argv)

    import tomllib

    from xtalhpc.cli import main as cli
    from xtalhpc.train.export import export_model

    cfg = tomllib.loads((args.run / "config.toml").read_text())
    batch = int(cfg.get("data", {}).get("batch_size", 0)) or None
    ckdir = args.checkpoints or args.run / "checkpoints"
    cks = sorted(ckdir.glob("step-*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    if not cks:
        raise SystemExit(f"no step-*.pt in {ckdir}")
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for ck in cks:
        model = args.output / f"{ck.stem}.model.pt"
        _, step = export_model(args.run, model, checkpoint=ck, dataset=args.train_dataset)
        out = args.output / ck.stem
        rc = cli(["evaluate", str(model), "--dataset", args.dataset, "--split", args.split,
                  "--augment", args.augment, "--output", str(out)])
        if rc != 0:
            print(f"{ck}: evaluate exited {rc}", file=sys.stderr)
            return rc
        m = json.loads((out / "metrics.json").read_text())
        row = {"checkpoint": ck.name, "step": step, "patterns_seen": step * batch if batch else None, "n": m["n"]}
        for h in HEADS:
            if h in m["heads"]:
                row[f"{h}/top1"] = m["heads"][h]["top1"]
                row[f"{h}/top3"] = m["heads"][h]["top3"]
        rows.append(row)
    cols = ["step", "patterns_seen"] + [f"{h}/top{k}" for h in HEADS for k in (1, 3)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
