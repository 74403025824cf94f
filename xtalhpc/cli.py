"""Command-line entry point: ``xtalhpc SUBCOMMAND ...``.

Each subcommand lives in its own module under ``xtalhpc/commands`` with
``add_parser(subparsers)`` and ``run(args) -> int``; ``main(argv)`` can be
called in-process (tests do), and heavy imports happen inside ``run``.

Exit statuses follow :mod:`xtalhpc.job` (docs/exit-status.md): a command returns
0 or 3 itself; :func:`main` maps bad input (:class:`~xtalhpc.errors.InputError`) to 2,
every other error (a :class:`~xtalhpc.errors.JobError`, or any exception, described by
:func:`~xtalhpc.errors.job_error`) to 1, Ctrl-C to 130. Every ``--help`` ends with the
one table :data:`xtalhpc.job.EXIT_STATUS_HELP`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import InputError, XtalhpcError, job_error
from .job import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_STATUS_HELP, EXIT_USAGE

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
    "export",
    "evaluate",
    "prior",
    "predict",
    "study",
)


def _with_raw_epilog(base: type) -> type:
    """``base`` formatter, except that the exit-status epilog keeps its line breaks."""
    class Formatter(base):
        def _fill_text(self, text, width, indent):
            if text == EXIT_STATUS_HELP:
                return "".join(indent + line for line in text.splitlines(keepends=True))
            return super()._fill_text(text, width, indent)

    return Formatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtalhpc",
        description="Simulate powder-diffraction patterns at scale and classify crystal symmetry.",
        epilog=EXIT_STATUS_HELP, formatter_class=_with_raw_epilog(argparse.HelpFormatter))
    parser.add_argument("--version", action="version", version=f"xtalhpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f".commands.{name}", __package__)
        p = mod.add_parser(sub)
        p.epilog = EXIT_STATUS_HELP
        p.formatter_class = _with_raw_epilog(p.formatter_class)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status of docs/exit-status.md (:mod:`xtalhpc.job`):
    the command's own 0 or 3, 2 for bad input, 1 for any other error, 130 for Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        print(f"xtalhpc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"xtalhpc {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the job failed: one message with the cause and the fix
        err = exc if isinstance(exc, XtalhpcError) else job_error(exc, f"xtalhpc {args.command}{_where(exc)}")
        print(f"xtalhpc {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FAILED


def _where(exc: BaseException) -> str:
    """`` (at file.py:123 in func)``: the innermost frame of an unexpected error, for the report."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno} in {f.name})"


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
