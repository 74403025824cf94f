"""``xtalhpc demo``: simulate NIST BT-1 patterns of the bundled real structures.

Writes, per structure, the pattern (.xye), the reflection families (.csv)
and a plot (.png) into the output directory, plus a summary. This is what
``make demo`` runs.
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
    print(f"demo output in {out.resolve()}")
    return status
