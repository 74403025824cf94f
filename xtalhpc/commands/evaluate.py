"""``xtalhpc evaluate``: a trained model on a dataset split (metrics, confusion matrices, report), or
several evaluations side by side (``--compare``)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="evaluate a trained model on a dataset split, or compare evaluations (--compare)",
        description="Run the model of RUN_OR_MODEL (a training run directory or a model file) over one split of "
                    "a dataset on the model's 2theta grid, and write OUTPUT/metrics.json (top-1/3/5 and per-class "
                    "accuracy per head), summary.csv, per_class_<head>.csv, confusion_<head>.png, report.md and "
                    "predictions.npz (the 5 best classes per head per pattern). --augment measured corrupts each "
                    "pattern like a measurement first (seeded); --calibrate fits temperature scaling on the split "
                    "and writes a calibrated model file. With --compare EVAL... the evaluations' metrics go into "
                    "one table and one plot. docs/evaluate.md.")
    p.add_argument("model", nargs="?", metavar="RUN_OR_MODEL", help="run directory (its model.pt) or model file")
    p.add_argument("--dataset", metavar="DIR", help="dataset directory (xtalhpc generate) on the model's grid")
    p.add_argument("--split", default="test", choices=("test", "val", "train", "unassigned", "all"),
                   help="patterns to evaluate (default test; all: every pattern, e.g. of a dataset generated with "
                        "--split none)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--augment", default="off", choices=("off", "measured", "coverage"),
                   help="off: the patterns as stored; measured: noise, background, zero shift, broadening and an "
                        "impurity peak like a measurement (fixed settings, seeded per pattern); coverage: the same "
                        "and the grid covered only as far as a measurement at a 1-1.65x longer wavelength reaches "
                        "once converted through d-spacing (docs/evaluate.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of --augment measured/coverage (default 0)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="patterns per forward pass (default 256)")
    p.add_argument("--calibrate", default=None, metavar="MODEL.pt",
                   help="fit one calibration temperature per head on this split (val, or all/unassigned of a "
                        "dataset kept for it) and write the model with them to MODEL.pt")
    p.add_argument("--prior", default="default", metavar="NAME|none",
                   help="deployment prior of the model file the probabilities and rankings use: 'default' (the "
                        "file's default one, as predict uses; none if it has none), 'none' (the training prior: "
                        "right for a synthetic validation split) or a name the file carries (docs/predict.md)")
    p.add_argument("--cluster", default="local", choices=("local", "slurm", "debug"),
                   help="local: this machine (in this process with one CPU process, else submitit processes); "
                        "slurm: a Slurm job; debug: submitit's DebugExecutor in this process")
    p.add_argument("--gpus", type=int, default=0, metavar="N", help="GPUs per node, one process each (default 0)")
    p.add_argument("--procs", type=int, default=1, metavar="K", help="CPU processes with --gpus 0 (default 1)")
    p.add_argument("--nodes", type=int, default=1, metavar="M", help="nodes (--cluster slurm only)")
    p.add_argument("--partition", default=None, metavar="P", help="Slurm partition")
    p.add_argument("--time", default=None, metavar="T", help="time limit (minutes or [D-]H:MM:SS)")
    p.add_argument("--compare", nargs="+", default=None, metavar="EVAL",
                   help="evaluation directories (or metrics.json files) to put side by side in OUTPUT/compare.csv, "
                        "compare.md and compare.png (no model is run)")
    return p


def _compare(args, log) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..evaluate.report import compare_flat, markdown_table, write_compare
    from ..job import EXIT_OK

    if args.model or args.dataset:
        raise InputError("--compare takes evaluation directories only; leave out RUN_OR_MODEL and --dataset",
                         field="--compare")
    df = write_compare(args.compare, args.output)
    print(markdown_table(compare_flat(df)), end="")
    log(f"wrote {Path(args.output) / 'compare.csv'}, compare.md, compare.png")
    return EXIT_OK


def run(args) -> int:
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..evaluate.run import (CALIBRATION_SPLITS, EVALUATION_NAME, EvaluateTask, file_digest,
                                resolve_run_or_model, split_rows)
    from ..job import Log, OutputDir, write_atomic
    from ..launch import LaunchSpec, check_spec

    log = Log("evaluate")
    if args.compare:
        return _compare(args, log)
    if not args.model or not args.dataset:
        raise InputError("give RUN_OR_MODEL and --dataset DIR (or --compare EVAL...)",
                         field="RUN_OR_MODEL" if not args.model else "--dataset")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be >= 1", field="--batch-size")
    if args.calibrate and args.split not in CALIBRATION_SPLITS:
        raise InputError(f"--calibrate on the {args.split!r} split: temperatures are fitted on "
                         f"{' or '.join(CALIBRATION_SPLITS)} (never on test, which the numbers are reported on, nor "
                         "on train, which the network fits better than new data)", field="--split")
    time_min = None
    if args.time is not None:
        from .train import _minutes

        try:
            time_min = _minutes(args.time)
        except argparse.ArgumentTypeError as exc:
            raise InputError(str(exc), field="--time") from None
    spec = LaunchSpec(cluster=args.cluster, gpus=args.gpus, procs=args.procs, nodes=args.nodes,
                      partition=args.partition, time_min=time_min)
    check_spec(spec)
    model = resolve_run_or_model(args.model)
    # the checks that must fail before anything is written or submitted: model file, dataset, grid, split
    from ..train.data import load_training_data
    from ..train.modelfile import check_same_grid, read_model_file

    blob = read_model_file(model)
    data = load_training_data(args.dataset, require_split=False)
    check_same_grid(blob["two_theta"].numpy(), data.two_theta, model, data.master)
    rows = split_rows(data, args.split)
    out = OutputDir(args.output, "evaluate", holds="another evaluation")
    ours = out.check_empty_or_ours(EVALUATION_NAME)
    task = EvaluateTask(str(model.resolve()), str(Path(args.dataset).resolve()), str(Path(args.output).resolve()),
                        split=args.split, augment=args.augment, seed=args.seed, batch_size=args.batch_size,
                        device=spec.device, calibrate=str(Path(args.calibrate).resolve()) if args.calibrate else None,
                        prior=_check_prior(blob, args.prior, model))
    settings = {**task.settings(), "model_sha256": file_digest(model),
                "dataset_digest": {k: data.digest[k] for k in ("config_digest", "manifest_digest", "n_patterns")}}
    if ours:  # rerunning the same evaluation overwrites it; another one is refused
        old = out.read_json(EVALUATION_NAME)
        old.pop("processes", None)
        out.refuse_other_config(EVALUATION_NAME, old, settings, hint="choose a new --output")
    out.lock()
    try:
        write_atomic(out.path / EVALUATION_NAME, json.dumps({**settings, "processes": spec.world_size}, indent=1)
                     + "\n")
        return _launch(task, spec, out.path, data, rows, model, args, log)
    finally:
        out.unlock()


def _check_prior(blob, prior, model):
    """The prior name the task uses (None: the training prior); InputError before anything runs."""
    from ..predict import resolve_prior

    return resolve_prior(blob, prior, model)


def _launch(task, spec, outpath, data, rows, model, args, log) -> int:
    from ..job import EXIT_OK
    from ..launch import LOG_DIR, build_executor, wait_for_job

    log(f"{rows.size:,} {args.split} patterns of {data.master}; model {model}")
    if spec.cluster == "local" and spec.world_size == 1 and spec.gpus == 0:
        result = task()  # one CPU process: in this one (no submitit start-up, errors surface directly)
        log(f"done: {result['n']:,} patterns evaluated; {outpath}/report.md")
        return EXIT_OK
    logs = outpath / LOG_DIR
    ex = build_executor(spec, logs, workers=0, name="xtalhpc-evaluate")
    job = ex.submit(task)
    log(f"submitted job {job.job_id} ({spec.cluster}, {spec.world_size} process(es), "
        f"{'GPU' if spec.gpus else 'CPU'}); logs in {logs}/")
    status, results = wait_for_job(job, spec, log, what="evaluation", logs=logs)
    if status == EXIT_OK:
        r0 = next(r for r in results if r.get("rank") == 0)
        log(f"done: {r0['n']:,} patterns evaluated; {outpath}/report.md")
    return status
