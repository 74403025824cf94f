"""Command-line entry point: ``xtalhpc SUBCOMMAND ...``.

Each subcommand lives in its own module under ``xtalhpc/commands`` with
``add_parser(subparsers)`` and ``run(args) -> int``; ``main(argv)`` can be
called in-process (tests do), and heavy imports happen inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import XtalhpcError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "simulate",
    "demo",
    "generate",
    "info",
    "verify",
    "dedup",
    "split",
    "balance",
    "synthesize",
    "train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtalhpc",
        description="Simulate powder-diffraction patterns at scale and classify crystal symmetry.")
    parser.add_argument("--version", action="version", version=f"xtalhpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f".commands.{name}", __package__)
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except XtalhpcError as exc:
        print(f"xtalhpc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def entry(argv: list[str] | None = None) -> None:
    """Console-script and ``python -m xtalhpc.cli`` entry: :func:`main`, then exit.

    Before exiting, every object is moved to the collector's permanent generation
    (``gc.freeze``): the interpreter's teardown otherwise walks all the objects Numba's
    type system created, ~0.3 s per process, which every MPI rank of ``generate`` (and
    the launching process) would pay at the end of a run. Reference-counted cleanup and
    the atexit handlers (mpi4py's MPI_Finalize among them) still run as usual.
    In-process callers (tests) use :func:`main`.
    """
    import gc

    status = main(argv)
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
