"""Does a model file's deployment prior help where users are? Checked on synthetic validation data only.

A synthetic validation split follows the training prior, not the deployment one, so each pattern
is weighted by pi_dep(y) / pi_train(y) (importance weights; :func:`xtalhpc.evaluate.prior.importance_weights`,
with the table and training counts stored in the prior record): the weighted accuracy estimates
the accuracy on data drawn with the table's space-group frequencies. The network runs once; the
script reports, per head, top-1 / top-3 / NLL unweighted and weighted, with the training prior
(``--prior none``) and with the deployment prior, and for crystal system and Bravais lattice also
the sums of the space-group probabilities over their classes ("from sg"). No real structure or
measured pattern is used.

    python benchmarks/prior_check.py --model M.pt --dataset DIR [--split val] [--augment measured] \\
        [--prior NAME] [--limit N] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a synthetic dataset with the training prior's frequencies")
    ap.add_argument("--split", default="val")
    ap.add_argument("--augment", default="measured", choices=("off", "measured"))
    ap.add_argument("--prior", default="default", help="the model file's prior to check (default: its default)")
    ap.add_argument("--limit", type=int, default=0, help="first N rows of the split only (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from xtalhpc.evaluate.prior import importance_weights
    from xtalhpc.evaluate.run import EvalDataset, measured_augment, split_rows
    from xtalhpc.predict import Classifier
    from xtalhpc.train.data import EpochPlan, load_training_data

    on = Classifier(args.model, prior=args.prior)
    if on.prior is None:
        raise SystemExit(f"{args.model}: no deployment prior {args.prior!r} (write one with `xtalhpc prior`)")
    off = Classifier(args.model, prior="none")
    rec = on.meta["priors"][on.prior]
    data = load_training_data(args.dataset, require_split=False)
    heads = [h for h in on.heads if h in data.labels]
    rows = split_rows(data, args.split)
    if args.limit:
        rows = rows[:args.limit]
    plan = EpochPlan(rows, chunk=16, batch_size=256, world_size=1, seed=args.seed, shuffle=False)
    ds = EvalDataset(data, plan, rank=0, heads=heads, normalisation=on.normalisation,
                     augment=measured_augment() if args.augment == "measured" else None, seed=args.seed)
    from xtalhpc.evaluate.prior import sg_to_class

    derived = [h for h in ("crystal_system", "bravais_lattice") if h in heads and "space_group" in heads]
    maps = {h: sg_to_class(h) for h in derived}
    keep = {f"{h}/{k}/{w}": [] for h in heads + [f"{d}(from sg)" for d in derived] for k in ("rank", "ll")
            for w in ("none", "prior")}
    labels = {h: [] for h in heads}
    t0 = time.perf_counter()
    for step in range(len(ds)):
        b = ds[step]
        if len(b["rows"]) == 0:
            continue
        z = on.logits(b["x"])
        for h in heads:
            y = b[h]
            labels[h].append(y)
            for tag, clf in (("none", off), ("prior", on)):
                lp = clf.log_probabilities(h, z[h])
                ly = lp[np.arange(y.size), y]
                keep[f"{h}/rank/{tag}"].append((lp > ly[:, None]).sum(axis=1))  # 0 = ranked first
                keep[f"{h}/ll/{tag}"].append(ly)
        for d in derived:  # the head's classes as sums of the space-group probabilities
            y = b[d]
            for tag, clf in (("none", off), ("prior", on)):
                psg = np.exp(clf.log_probabilities("space_group", z["space_group"]))
                pd = np.zeros((psg.shape[0], int(maps[d].max()) + 1))
                np.add.at(pd.T, maps[d], psg.T)
                lp = np.log(np.maximum(pd, 1e-300))
                ly = lp[np.arange(y.size), y]
                keep[f"{d}(from sg)/rank/{tag}"].append((lp > ly[:, None]).sum(axis=1))
                keep[f"{d}(from sg)/ll/{tag}"].append(ly)
    labels = {h: np.concatenate(v) for h, v in labels.items()}
    keep = {k: np.concatenate(v) for k, v in keep.items()}
    w = importance_weights(labels["space_group"], rec["target_counts"], rec["train_counts"])
    out = {"model": args.model, "prior": on.prior, "dataset": str(data.master), "split": args.split,
           "augment": args.augment, "n": int(w.size), "effective_n_weighted": float(w.sum() ** 2 / (w ** 2).sum()),
           "seconds": time.perf_counter() - t0, "heads": {}}
    print(f"{args.model}: {w.size:,} {args.split} patterns of {data.master} (augment {args.augment}); prior "
          f"{on.prior!r}; weighted to its table, effective n {out['effective_n_weighted']:,.0f}")
    print(f"{'head':<27} {'weights':<9} {'prior':<6} {'top1':>6} {'top3':>6} {'nll':>7}")
    for h in heads + [f"{d}(from sg)" for d in derived]:
        out["heads"][h] = {}
        for wname, ww in (("none", np.ones_like(w)), ("table", w)):
            for tag in ("none", "prior"):
                r, ll = keep[f"{h}/rank/{tag}"], keep[f"{h}/ll/{tag}"]
                m = {"top1": float(np.average(r < 1, weights=ww)), "top3": float(np.average(r < 3, weights=ww)),
                     "nll": float(-np.average(ll, weights=ww))}
                out["heads"][h][f"{wname}/{tag}"] = m
                print(f"{h:<27} {wname:<9} {tag:<6} {m['top1']:6.3f} {m['top3']:6.3f} {m['nll']:7.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
