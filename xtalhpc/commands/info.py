"""``xtalhpc info DATASET``: counts, label histograms, instrument, provenance."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="summarise a generated dataset",
                              description="Counts, label histograms, instrument and provenance of a dataset.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory or its dataset.h5")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--top", type=int, default=10, metavar="N", help="space groups and reject reasons to list")
    p.add_argument("--class-report", metavar="PREFIX",
                   help="write PREFIX.png (histogram of the space-group labels), PREFIX.csv and PREFIX.md "
                        "(per-class counts); with --before, the labels before balancing beside them")
    p.add_argument("--before", metavar="DATASET",
                   help="with --class-report: the dataset before balancing (e.g. the unbalanced source set)")
    return p


def summarise(path, top: int = 10) -> dict:
    """The summary ``xtalhpc info`` prints, as a dict."""
    from collections import Counter
    from pathlib import Path

    import numpy as np

    from ..dataset import open_dataset, schema

    with open_dataset(path, check=False) as ds:
        problems = ds.shard_problems()
        a = ds.attrs
        out = {"path": str(ds.path), "schema": f"{a['schema']} v{a['schema_version']}",
               "xtalhpc_version": a.get("xtalhpc_version"), "complete": not problems,
               "shard_problems": problems[:top],
               "n_items": int(a["n_items"]), "n_patterns": len(ds), "n_rejected": int(a["n_rejected"]),
               "n_shards": int(a["n_shards"]), "n_files": int(a.get("n_files", 0)),
               "has_peaks": ds.has_peaks, "seed": int(a["seed"]),
               "group_key_method": a.get("group_key_method"),
               "split_fractions": json.loads(a.get("split_fractions", "null"))}
        inst = a["instrument"]
        out["instrument"] = {k: inst[k] for k in ("name", "radiation", "wavelengths", "two_theta_min",
                                                  "two_theta_max", "two_theta_step", "U", "V", "W", "X", "Y")}
        out["n_points"] = int(len(ds.two_theta))
        if not problems and len(ds):
            for name in ("crystal_system", "bravais_lattice", "split"):
                idx = ds.read(name)
                vocab = schema.VOCABULARIES[name]
                cnt = np.bincount(idx, minlength=len(vocab))
                out[name] = {vocab[i]: int(c) for i, c in enumerate(cnt) if c}
            sg = Counter(ds.read("space_group").tolist())
            out["n_space_groups"] = len(sg)
            out["space_group_top"] = {int(k): int(v) for k, v in sg.most_common(top)}
            out["n_group_keys"] = len(set(ds.read("group_key").tolist()))
        rej = ds.rejects()
        reasons = Counter(_short(r) for r in rej["reason"])
        out["reject_reasons_top"] = dict(reasons.most_common(top))
        out["rejects_first"] = [{"item_index": int(i), "source": s, "reason": r}
                                for i, s, r in list(zip(rej["item_index"], rej["source"], rej["reason"]))[:top]]
        d = Path(ds.path).parent
        size = sum(p.stat().st_size for p in (d / schema.SHARD_DIR).glob("part-*.h5")) + ds.path.stat().st_size
        out["bytes_on_disk"] = size
        out["bytes_per_pattern"] = size / len(ds) if len(ds) else None
        out["config"] = a["config"]
        out["provenance"] = a.get("provenance")
    return out


def _short(reason: str) -> str:
    # Group reject reasons without their file prefix ("path: field 'x': message" -> "field 'x': message").
    parts = reason.split(": ")
    return ": ".join(parts[1:]) if len(parts) > 1 and ("/" in parts[0] or "\\" in parts[0]) else reason


def _space_groups(path) -> np.ndarray:
    from ..dataset.reader import open_dataset

    with open_dataset(path) as ds:
        return np.asarray(ds.read("space_group"))


def class_report(args) -> dict:
    """The class-balance report of ``xtalhpc info --class-report`` (xtalhpc.curate.report)."""
    from ..curate.report import class_balance_report

    after = _space_groups(args.dataset)
    if args.before:
        before, labels_after = _space_groups(args.before), after
    else:
        before, labels_after = after, None
    prefix = Path(args.class_report)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    return class_balance_report(before, labels_after, prefix.with_suffix(".png"), prefix.with_suffix(".csv"),
                                prefix.with_suffix(".md"))


def run(args) -> int:
    if args.before and not args.class_report:
        raise InputError("--before needs --class-report", field="--before")
    s = summarise(args.dataset, args.top)
    if args.class_report:
        s["class_report"] = class_report(args)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0 if s["complete"] else 1
    inst = s["instrument"]
    lines = [
        f"dataset   {s['path']}  ({s['schema']}, xtalhpc {s['xtalhpc_version']})",
        f"status    {'complete' if s['complete'] else 'INCOMPLETE: ' + '; '.join(s['shard_problems'])}",
        f"counts    {s['n_items']} inputs = {s['n_patterns']} patterns + {s['n_rejected']} rejected; "
        f"{s['n_shards']} shards; {s['n_files']} files; peaks {'stored' if s['has_peaks'] else 'not stored'}",
        f"instrument {inst['name']}: {inst['radiation']}, lambda {', '.join(f'{w:g}' for w in inst['wavelengths'])} A, "
        f"2theta {inst['two_theta_min']:g}-{inst['two_theta_max']:g} step {inst['two_theta_step']:g} deg "
        f"({s['n_points']} points), U V W {inst['U']:g} {inst['V']:g} {inst['W']:g}, X {inst['X']:g}",
        f"disk      {s['bytes_on_disk'] / 1e6:.2f} MB"
        + (f", {s['bytes_per_pattern']:.0f} bytes per pattern" if s["bytes_per_pattern"] else ""),
        f"seed      {s['seed']}; groups by {s['group_key_method']}; split {s['split_fractions'] or 'unassigned'}",
    ]
    for name in ("crystal_system", "bravais_lattice", "split"):
        if name in s:
            lines.append(f"{name:15s} " + ", ".join(f"{k} {v}" for k, v in s[name].items()))
    if "space_group_top" in s:
        lines.append(f"space groups    {s['n_space_groups']} distinct; top: "
                     + ", ".join(f"{k} ({v})" for k, v in s["space_group_top"].items()))
        lines.append(f"group keys      {s['n_group_keys']} distinct structure-type groups")
    if s["reject_reasons_top"]:
        lines.append("rejects by reason:")
        lines += [f"  {v:6d}  {k}" for k, v in s["reject_reasons_top"].items()]
    if "class_report" in s:
        r = s["class_report"]
        parts = [f"{k}: {v['total']} patterns in {v['classes']} space groups, largest/smallest class "
                 f"{v['max']}/{v['min']} = {v['imbalance']:.1f}" for k, v in r.items() if isinstance(v, dict)]
        lines.append(f"class report    {Path(args.class_report).with_suffix('.png')} (+ .csv, .md); "
                     + "; ".join(parts))
    prov = s.get("provenance") or {}
    lines.append("provenance " + ", ".join(f"{k}={v}" for k, v in prov.items()))
    print("\n".join(lines))
    return 0 if s["complete"] else 1
