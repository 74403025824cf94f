"""``xtalhpc verify DATASET``: every shard present and complete, checksums, no VDS fill values."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "verify", help="check a generated dataset: shards complete, checksums, VDS mapping",
        description="Exit 0 if the dataset is complete and intact, 1 if any problem is found (an unfinished or failed `generate` leaves no master file: incomplete). Reads every "
                    "pattern through the master file's Virtual Datasets and compares SHA-256 checksums "
                    "with those each shard recorded when written.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory or its dataset.h5")
    p.add_argument("--no-checksums", action="store_true",
                   help="skip reading the data (only structure, counts and completeness)")
    return p


def run(args) -> int:
    import time

    from ..dataset import verify_dataset

    t = time.perf_counter()
    rep = verify_dataset(args.dataset, checksums=not args.no_checksums)
    dt = time.perf_counter() - t
    for w in rep.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for p in rep.problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    status = "OK" if rep.ok else f"FAILED ({len(rep.problems)} problem(s))"
    print(f"{rep.path}: {status}: {rep.n_shards} shards, {rep.n_patterns} patterns + {rep.n_rejected} rejected "
          f"of {rep.n_items} inputs; {rep.bytes_checked / 1e6:.1f} MB checksummed through the VDS in {dt:.1f} s")
    from ..job import EXIT_FAILED, EXIT_OK

    return EXIT_OK if rep.ok else EXIT_FAILED
