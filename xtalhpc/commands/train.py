"""``xtalhpc train``: train a classifier on a dataset, on CPU processes or GPUs, locally or under Slurm."""
from __future__ import annotations

import argparse
import re


def _minutes(text: str) -> int:
    """``90``, ``1:30:00``, ``2-00:00:00`` (Slurm forms) -> minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected minutes, H:MM:SS or D-HH:MM:SS")
    d, a, b, c = m.groups()
    if b is None:  # plain minutes
        return int(d or 0) * 1440 + int(a)
    if c is None:  # MM:SS
        return int(d or 0) * 1440 + int(a) + (1 if int(b) else 0)
    return int(d or 0) * 1440 + int(a) * 60 + int(b) + (1 if int(c) else 0)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a symmetry classifier on a dataset (PyTorch DDP via submitit: local, Slurm, debug)",
        description="Train the model of CONFIG.toml (jobs/train-*.toml) on the dataset DIR, writing RUN/config.toml, "
                    "RUN/checkpoints/, RUN/metrics.jsonl, RUN/curves.png, RUN/model.pt and RUN/logs/. Waits for the "
                    "job and exits with its status (0 done, 1 failed, 2 refused before starting). docs/training.md.")
    p.add_argument("config", metavar="CONFIG.toml", help="training recipe (e.g. jobs/train-smoke.toml)")
    p.add_argument("--dataset", required=True, metavar="DIR", help="dataset directory (xtalhpc generate)")
    p.add_argument("-o", "--output", required=True, metavar="RUN", help="run directory (created)")
    p.add_argument("--gpus", type=int, default=0, metavar="N", help="GPUs per node, one process each (default 0: CPU)")
    p.add_argument("--procs", type=int, default=1, metavar="K", help="CPU processes per node with --gpus 0 (gloo; default 1)")
    p.add_argument("--nodes", type=int, default=1, metavar="M", help="nodes (--cluster slurm only; default 1)")
    p.add_argument("--cluster", default="local", choices=("local", "slurm", "debug"),
                   help="local: processes on this machine; slurm: submit a Slurm job; debug: in this process")
    p.add_argument("--partition", default=None, metavar="P", help="Slurm partition (default: the cluster's)")
    p.add_argument("--time", type=_minutes, default=None, metavar="T",
                   help="time limit (minutes or [D-]H:MM:SS); at the limit the job checkpoints and requeues")
    p.add_argument("--cpus-per-task", type=int, default=None, metavar="C",
                   help="Slurm CPUs per process (default: data.workers + 1)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from its newest checkpoint")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after STEP with a checkpoint (the schedule still runs to run.steps; continue with "
                        "--resume): slices of a long run")
    p.add_argument("--no-wait", action="store_true", help="submit and return (the job keeps running)")
    p.add_argument("--prepare-only", action="store_true",
                   help="check and write RUN/config.toml and RUN/job.json, submit nothing (for slurm/train.sbatch)")
    g = p.add_argument_group("config overrides")
    g.add_argument("--steps", type=int, default=None, help="run.steps")
    g.add_argument("--epochs", type=int, default=None, help="run.epochs")
    g.add_argument("--batch-size", type=int, default=None, help="data.batch_size (per process)")
    g.add_argument("--lr", type=float, default=None, help="optim.lr")
    g.add_argument("--seed", type=int, default=None, help="run.seed")
    g.add_argument("--workers", type=int, default=None, help="data.workers (DataLoader processes per process)")
    g.add_argument("--threads", type=int, default=None, help="run.threads (torch threads per process)")
    g.add_argument("--init", default=None, metavar="MODEL.pt", help="run.init: start from these weights")
    g.add_argument("--init-layers", default=None, choices=("all", "matching"),
                   help="run.init_layers: all (the same network) or matching (every tensor of --init whose "
                        "name and shape match; the rest start at random)")
    g.add_argument("--eval-every", type=int, default=None, help="run.eval_every")
    return p


OVERRIDES = {"steps": "run.steps", "epochs": "run.epochs", "batch_size": "data.batch_size", "lr": "optim.lr",
             "seed": "run.seed", "workers": "data.workers", "threads": "run.threads", "init": "run.init",
             "init_layers": "run.init_layers", "eval_every": "run.eval_every"}


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..job import EXIT_OK, Log, replace_config
    from ..launch import LaunchSpec, rank0_stderr, wait_for_job
    from ..train.config import load_train_config
    from ..train.launch import prepare_run, submit

    log = Log("train")
    cfg = load_train_config(args.config)
    over = {OVERRIDES[k]: getattr(args, k) for k in OVERRIDES}
    try:
        cfg = replace_config(cfg, over)
    except InputError as exc:
        flag = next((f"--{k.replace('_', '-')}" for k, v in OVERRIDES.items() if exc.field and exc.field == v), None)
        raise InputError(exc.message, flag or args.config, exc.field) from None
    if cfg.run.init:
        cfg = replace_config(cfg, {"run.init": str(Path(cfg.run.init).resolve())})
    elif cfg.run.init_layers == "matching":  # else a random start, without a word
        raise InputError("run.init_layers = \"matching\" takes layers from run.init, which is empty: give "
                         "--init MODEL, or --init-layers all for a random start", args.config, "run.init_layers")
    if args.epochs is not None and args.steps is None:  # --epochs alone: the length is in epochs
        cfg = replace_config(cfg, {"run.steps": 0})
    spec = LaunchSpec(cluster=args.cluster, gpus=args.gpus, procs=args.procs, nodes=args.nodes,
                      partition=args.partition, time_min=args.time, cpus_per_task=args.cpus_per_task)
    data = prepare_run(cfg, args.dataset, args.output, spec, resume=args.resume)
    run_dir = Path(args.output)
    log(f"dataset {data.master}: {data.n:,} patterns on {data.two_theta.size} points; run {run_dir}/config.toml written")
    if args.prepare_only:
        log(f"prepared; start it with: srun python -m xtalhpc.train.task {run_dir}")
        return EXIT_OK
    if args.stop_at is not None and args.stop_at < 1:
        raise InputError(f"--stop-at {args.stop_at} must be >= 1", field="--stop-at")
    job = submit(cfg, args.dataset, args.output, spec, args.stop_at)
    logs = run_dir / "logs"
    err0 = rank0_stderr(job, spec)
    log(f"submitted job {job.job_id} ({spec.cluster}, {spec.nodes * spec.tasks_per_node} process(es), "
        f"{'GPU' if spec.gpus else 'CPU'}); logs in {logs}/")
    if args.no_wait:
        log(f"not waiting (--no-wait); follow {err0 or logs}; resume a stopped run with the same command + --resume")
        return EXIT_OK
    status, results = wait_for_job(job, spec, log, what="training", logs=logs,
                                   resume_hint="Continue with the same command + --resume")
    if status == EXIT_OK and spec.cluster != "debug":
        r0 = results[0]
        log(f"done: {r0.get('model') or 'stopped at step %d of %d' % (r0['step'], r0['total'])}")
    return status
