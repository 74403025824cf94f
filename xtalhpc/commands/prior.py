"""``xtalhpc prior MODEL --table CSV --dataset DIR --output OUT.pt``: a model file with a deployment prior."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prior", help="write a copy of a model file whose probabilities follow a space-group frequency table",
        description="A network trained on flattened space-group frequencies with class-weighted loss answers for "
                    "that distribution. This writes OUT.pt, a copy of MODEL with a deployment prior: per head, "
                    "the logit adjustment log pi_table - log pi_training (Bayes' rule; docs/predict.md) that "
                    "predict and evaluate add to the calibrated logits. pi_training comes from the training "
                    "split's class counts of DIR (the dataset the model was trained on, or one made by the same "
                    "generate recipe) and the loss weights in the model's training config.")
    p.add_argument("model", metavar="MODEL", help="model file (or run directory)")
    p.add_argument("--table", required=True, metavar="CSV",
                   help="table with a space-group column (as generate --synthetic-prior reads), e.g. "
                        "an ICSD frequency table")
    p.add_argument("--dataset", required=True, metavar="DIR", help="the training dataset (its train split's counts)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="model file to write (may be MODEL)")
    p.add_argument("--name", default=None, metavar="NAME", help="the prior's name in the file (default: table stem)")
    p.add_argument("--heads", default=None, metavar="H1,H2",
                   help="heads that get the adjustment (default: all); the others keep the training prior's "
                        "probabilities (zeros in the file)")
    p.add_argument("--no-default", action="store_true",
                   help="store the prior without making it the one predict uses by default")
    return p


def run(args) -> int:
    from ..errors import InputError
    from ..evaluate.prior import deployment_prior
    from ..evaluate.run import resolve_run_or_model
    from ..job import EXIT_OK
    from ..train.data import load_training_data
    from ..train.modelfile import read_model_file, write_prior

    model = resolve_run_or_model(args.model)
    blob = read_model_file(model)
    data = load_training_data(args.dataset, require_split=False)
    if "space_group" not in data.labels:
        raise InputError("the dataset has no space-group labels", str(data.master), "labels/space_group")
    counts = data.class_counts("space_group", "train")
    if counts.sum() == 0:
        raise InputError("the dataset has no train split (the counts the model was trained on)", str(data.master),
                         "split")
    loss = blob.get("train_config", {}).get("loss", {})
    heads = None if args.heads is None else [h.strip() for h in args.heads.split(",") if h.strip()]
    rec = deployment_prior(args.table, counts, loss, list(blob["heads"]), name=args.name, adjust_heads=heads)
    rec["train_dataset"] = {k: data.digest.get(k) for k in ("config_digest", "manifest_digest", "n_patterns")}
    path = write_prior(model, args.output, rec, default=not args.no_default)
    sg = rec["log_adjust"]["space_group"]
    print(f"{path}: prior {rec['name']!r} ({rec['table_rows']:,} rows of {rec['table']}; training counts of "
          f"{int(counts.sum()):,} patterns; heads adjusted: {', '.join(rec['adjusted_heads'])}; space-group "
          f"adjustment {min(sg):+.2f} to {max(sg):+.2f})"
          + ("" if args.no_default else "; predict's default"))
    return EXIT_OK
