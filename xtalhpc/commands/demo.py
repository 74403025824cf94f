"""``xtalhpc demo``: the toolkit end to end on what ships with it.

1. Simulates NIST BT-1 patterns of the bundled real structures: per structure
   the pattern (.xye), the reflection families (.csv) and a plot (.png).
2. Runs the batch job, ``xtalhpc generate --ranks 2``, on those structures plus
   one synthetic crystal of each of the 230 space groups, into a sharded HDF5 dataset
   (OUTPUT/dataset), then ``xtalhpc verify`` and ``xtalhpc info`` on it.

This is what ``make demo`` runs.
"""
from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="simulate BT-1 patterns of the bundled structures (what `make demo` runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--instrument", default="bt1-cu311", help="instrument preset or TOML (default: bt1-cu311)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks for the generate step (default 2)")
    p.add_argument("--synthetic", type=int, default=230,
                   help="synthetic crystals added to the dataset, cycling over space groups 1-230 (default 230: one each)")
    return p


def bundled_structures() -> list[Path]:
    """The demo CIFs shipped in the package (see data/structures/PROVENANCE.txt)."""
    root = resources.files("xtalhpc") / "data" / "structures"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".cif"))


def run(args) -> int:
    from .simulate import run as simulate_run

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in bundled_structures()]
    ns = argparse.Namespace(files=files, instrument=args.instrument, device=args.device,
                            xye=str(out) + "/", reflections=str(out) + "/", plot=str(out) + "/")
    status = simulate_run(ns)

    from ..cli import main as cli_main

    dataset = out / "dataset"
    print(f"\n== xtalhpc generate --ranks {args.ranks}: bundled structures + {args.synthetic} synthetic crystals")
    gen = cli_main(["generate", *files, "--synthetic", str(args.synthetic), "--output", str(dataset),
                    "--ranks", str(args.ranks), "--instrument", args.instrument, "--device", args.device,
                    "--shard-size", "16", "--seed", "1", "--quiet"])
    if gen != 0:
        return gen
    print("\n== xtalhpc verify")
    ver = cli_main(["verify", str(dataset)])
    print("\n== xtalhpc info")
    cli_main(["info", str(dataset), "--top", "5"])
    print(f"\ndemo output in {out.resolve()}")
    return status or ver
