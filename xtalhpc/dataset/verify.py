"""``xtalhpc verify``: is a dataset complete and intact?

Checks, in order:

1. the master file opens and has the schema;
2. every shard in the master's shard table exists under its final name, is
   complete (``complete`` attribute, written last), has the recorded item
   counts and the dataset's config digest;
3. the shards cover items ``0 .. n_items`` without gaps or overlaps and
   ``n_patterns + n_rejected == n_items``;
4. reading *through the Virtual Datasets* of the master gives exactly the
   bytes whose SHA-256 each shard recorded when it was written (so a missing
   shard, which a VDS silently reads as fill values, a remapped shard, or
   corrupted data all fail), and no value read is the fill value;
5. leftovers in ``shards/`` (``.tmp`` files, shards the master does not list)
   are reported as warnings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import schema
from .shard import ShardError, shard_info

#: Rows read through the VDS per step while checksumming: bounded memory
#: (4096 x 3296 x 4 B = 54 MB for the BT-1 grid) whatever the dataset size.
READ_BLOCK_ROWS = 4096


@dataclass
class VerifyReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_shards: int = 0
    n_patterns: int = 0
    n_rejected: int = 0
    n_items: int = 0
    bytes_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _hash_rows(dset, start: int, stop: int) -> tuple[str, bool, int]:
    """SHA-256 of rows [start, stop) of a (virtual) dataset, whether any fill value was seen, bytes read."""
    import hashlib

    h = hashlib.sha256()
    saw_fill = False
    nbytes = 0
    for a in range(start, stop, READ_BLOCK_ROWS):
        block = dset[a:min(stop, a + READ_BLOCK_ROWS)]
        if block.dtype == object:
            block = np.array([s.decode("utf-8") for s in block], dtype=object)
            saw_fill |= any(s == "" for s in block)
            for s in block:
                h.update(s.encode("utf-8"))
                h.update(b"\0")
        else:
            if block.dtype.kind == "f":
                saw_fill |= bool(np.isnan(block).any())
            nbytes += block.nbytes
            h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest(), saw_fill, nbytes


def verify_dataset(path: str | Path, *, checksums: bool = True) -> VerifyReport:
    """Check a dataset directory (or its master file); see the module docstring."""
    import h5py

    from .reader import resolve_master

    master = resolve_master(path)
    rep = VerifyReport(master)
    if not master.is_file():
        rep.problems.append(f"{master} is missing (generation not finished? rerun the same `xtalhpc generate` "
                            "command to resume)")
        return rep
    try:
        f = h5py.File(master, "r")
    except OSError as exc:
        rep.problems.append(f"{master} cannot be opened: {exc}")
        return rep
    directory = master.parent
    with f:
        a = f.attrs
        if a.get("schema") != schema.SCHEMA_NAME:
            rep.problems.append(f"{master} has schema {a.get('schema')!r}, expected {schema.SCHEMA_NAME!r}")
            return rep
        digest = str(a.get("config_digest", ""))
        rep.n_items = int(a.get("n_items", -1))
        rep.n_patterns = int(f["entry/data/pattern"].shape[0])
        rep.n_rejected = int(f["entry/rejects/item_index"].shape[0])
        t = f["entry/shards"]
        paths = [s.decode() for s in t["path"][()]]
        table = {k: t[k][()] for k in ("index", "item_start", "item_stop", "n_patterns", "n_rejected", "n_peaks")}
        sums = [json.loads(s) for s in t["sha256"][()]]
        rep.n_shards = len(paths)

        # 2. shard files
        ok_shard = []
        for i, rel in enumerate(paths):
            try:
                info = shard_info(directory / rel, expect_digest=digest, expect_index=int(table["index"][i]))
            except ShardError as exc:
                rep.problems.append(str(exc))
                ok_shard.append(False)
                continue
            bad = [k for k in table if int(getattr(info, k)) != int(table[k][i])]
            if bad:
                rep.problems.append(f"shard {rel}: {', '.join(bad)} differ from the master's shard table")
            if info.sha256 != sums[i]:
                rep.problems.append(f"shard {rel}: its checksums differ from those the master recorded "
                                    "(the shard was replaced after the master was built)")
            ok_shard.append(not bad)

        # 3. coverage and counts
        order = np.argsort(table["item_start"], kind="stable")
        pos = 0
        for j in order:
            if int(table["item_start"][j]) != pos:
                rep.problems.append(f"items {pos}..{int(table['item_start'][j])} are in no shard "
                                    f"(gap or overlap before {paths[j]})")
            pos = int(table["item_stop"][j])
        if pos != rep.n_items:
            rep.problems.append(f"shards cover items 0..{pos} but the dataset has {rep.n_items} inputs")
        if int(np.sum(table["n_patterns"])) != rep.n_patterns:
            rep.problems.append(f"shards hold {int(np.sum(table['n_patterns']))} patterns, the master maps "
                                f"{rep.n_patterns}")
        if rep.n_patterns + rep.n_rejected != rep.n_items:
            rep.problems.append(f"generated {rep.n_patterns} + rejected {rep.n_rejected} != inputs {rep.n_items}")

        # 4. through the VDS: bytes equal what each shard recorded, no fill values
        if checksums:
            names = {"patterns": "entry/data/pattern"}
            names.update({k: f"{schema.MASTER_GROUP[k]}/{k}"
                          for k in schema.per_pattern_fields(a.get("schema_version", 1))})
            if bool(a.get("has_peaks", False)):
                names.update({f"peaks/{k}": f"entry/peaks/{k}" for k in schema.PER_PEAK})
            starts = np.concatenate([[0], np.cumsum(table["n_patterns"])])
            pstarts = np.concatenate([[0], np.cumsum(table["n_peaks"])])
            for i, rel in enumerate(paths):
                for short, full in names.items():
                    lo, hi = (pstarts[i], pstarts[i + 1]) if short.startswith("peaks/") else (starts[i], starts[i + 1])
                    if hi == lo:
                        continue
                    try:
                        got, saw_fill, nb = _hash_rows(f[full], int(lo), int(hi))
                    except OSError as exc:
                        rep.problems.append(f"{full} rows {lo}..{hi} (shard {rel}) cannot be read: {exc}")
                        break
                    rep.bytes_checked += nb
                    if got != sums[i].get(short):
                        what = "fill values (shard missing behind the VDS)" if saw_fill else "different bytes"
                        rep.problems.append(f"{full} rows {lo}..{hi} read through the VDS give {what}: checksum "
                                            f"mismatch with shard {rel}")
                        break
                    if saw_fill and short == "patterns":
                        rep.problems.append(f"{full} rows {lo}..{hi}: NaN (the VDS fill value) in a pattern")

    # 5. leftovers
    listed = set(paths)
    sd = directory / schema.SHARD_DIR
    if sd.is_dir():
        for p in sorted(sd.iterdir()):
            rel = f"{schema.SHARD_DIR}/{p.name}"
            if p.name.endswith(schema.TMP_SUFFIX):
                rep.warnings.append(f"{rel}: leftover temporary file of an interrupted run")
            elif rel not in listed:
                rep.warnings.append(f"{rel}: not part of this dataset's master file")
    return rep
