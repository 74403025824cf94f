"""``xtalhpc export RUN --output MODEL.pt``: a model file from a training run's checkpoint."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="write a model file from a training run's checkpoint (a run not finished yet)",
        description="Write MODEL.pt, the model file a run writes at its end (docs/training.md), with the "
                    "weights and step of one of the run's checkpoints (default: the newest), so that a run "
                    "sliced over sessions or still going can be evaluated, calibrated "
                    "(`xtalhpc evaluate --calibrate`) and used by `xtalhpc predict`. Reads RUN/config.toml, "
                    "RUN/job.json and the run's dataset (for the grid and the digests).")
    p.add_argument("run", metavar="RUN", help="training run directory")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="model file to write")
    p.add_argument("--checkpoint", default=None, metavar="STEP|FILE",
                   help="a step number of RUN/checkpoints or a step-*.pt file (default: the newest)")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="the run's dataset where it now lives (regenerated from its seed); digests must match")
    return p


def run(args) -> int:
    from ..job import EXIT_OK
    from ..train.export import export_model

    path, step = export_model(args.run, args.output, checkpoint=args.checkpoint, dataset=args.dataset)
    print(f"{path}: the weights of {args.run} at step {step}")
    return EXIT_OK
