"""The launcher: checks everything it can, prepares the run directory, builds the submitit executor.

Nothing here trains; it only decides where :class:`~xtalhpc.train.task.TrainTask` runs:

* ``local``: real processes on this machine (submitit's LocalExecutor: one process per task,
  logs in ``RUN/logs``);
* ``slurm``: a Slurm job (submitit's SlurmExecutor through AutoExecutor): ``--nodes`` x
  tasks per node, one task per GPU (``--gpus`` per node) or ``--procs`` CPU tasks per node;
* ``debug``: in this process (submitit's DebugExecutor), for a debugger; one process.

``prepare_run`` does the checks that must fail *before* anything is submitted (config,
dataset, grid of an ``init`` model, GPUs asked for versus visible, an existing run without
``--resume``) and writes ``RUN/config.toml`` and ``RUN/job.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..job import OutputDir, config_from_dict, config_to_dict, to_toml, write_atomic
from .config import TrainConfig

CONFIG_NAME = "config.toml"
#: Keys a resumed run may change: how it runs, not what it computes.
EXECUTION_KEYS = ("run.threads", "data.workers", "run.log_every", "run.eval_every", "run.checkpoint_every",
                  "run.checkpoint_minutes", "run.keep_checkpoints")
JOB_NAME = "job.json"
LOG_DIR = "logs"


@dataclass(frozen=True)
class LaunchSpec:
    """Where and how wide to run. ``time_min``: the job's time limit in minutes (None: the cluster's
    default on Slurm, no limit locally)."""

    cluster: str = "local"
    gpus: int = 0
    procs: int = 1
    nodes: int = 1
    partition: str | None = None
    time_min: int | None = None
    cpus_per_task: int | None = None

    @property
    def tasks_per_node(self) -> int:
        return self.gpus if self.gpus > 0 else self.procs

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without a CUDA build of torch or a GPU)."""
    import torch

    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


def check_spec(spec: LaunchSpec, gpus_visible=visible_gpus) -> None:
    """Refuse impossible requests before anything is submitted (flags named in the message)."""
    if spec.cluster not in ("local", "slurm", "debug"):
        raise InputError(f"--cluster {spec.cluster!r}; allowed: local, slurm, debug", field="--cluster")
    if spec.gpus < 0:
        raise InputError(f"--gpus {spec.gpus} must be >= 0", field="--gpus")
    if spec.procs < 1:
        raise InputError(f"--procs {spec.procs} must be >= 1", field="--procs")
    if spec.nodes < 1:
        raise InputError(f"--nodes {spec.nodes} must be >= 1", field="--nodes")
    if spec.gpus > 0 and spec.procs > 1 and spec.procs != spec.gpus:
        raise InputError(f"--procs {spec.procs} with --gpus {spec.gpus}: with GPUs there is one process per GPU; "
                         "leave out --procs", field="--procs")
    if spec.cluster != "slurm" and spec.nodes > 1:
        raise InputError(f"--nodes {spec.nodes} needs --cluster slurm ({spec.cluster} runs on this machine only)",
                         field="--nodes")
    if spec.cluster == "debug" and spec.tasks_per_node > 1:
        raise InputError(f"--cluster debug runs one process in this one; got {spec.tasks_per_node} "
                         f"({'--gpus' if spec.gpus else '--procs'})", field="--gpus" if spec.gpus else "--procs")
    if spec.cluster in ("local", "debug") and spec.gpus > 0:
        n = gpus_visible()
        if n == 0:
            raise InputError(f"--gpus {spec.gpus}: no CUDA GPU is visible on this machine (torch.cuda.device_count() "
                             "= 0; a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES empty); train on CPUs with "
                             "--gpus 0 --procs K", field="--gpus")
        if spec.gpus > n:
            raise InputError(f"--gpus {spec.gpus}: only {n} GPU(s) visible on this machine", field="--gpus")
    if spec.time_min is not None and spec.time_min < 1:
        raise InputError(f"--time {spec.time_min} minutes must be >= 1", field="--time")


def _grid_record(data) -> dict:
    tt = data.two_theta
    return {"n_points": int(tt.size), "first": float(tt[0]), "last": float(tt[-1])}


def check_init_model(path: str, data, cfg: TrainConfig) -> None:
    """An ``init`` model must have been trained on this dataset's grid with the same architecture and input."""
    import numpy as np

    from .modelfile import read_model_file

    blob = read_model_file(path)
    tt = blob["two_theta"].numpy()
    if tt.shape != data.two_theta.shape or not np.allclose(tt, data.two_theta, rtol=0, atol=1e-9):
        raise InputError(f"the model's 2theta grid ({tt.size} points, {tt[0]:g}-{tt[-1]:g} deg) differs from the "
                         f"dataset's ({data.two_theta.size} points, {data.two_theta[0]:g}-{data.two_theta[-1]:g} deg, "
                         f"{data.master})", path, "two_theta")
    if blob["arch"] != config_to_dict(cfg)["model"]:
        raise InputError("the model's architecture differs from the config's [model] section", path, "arch")
    if int(blob["in_channels"]) != cfg.normalise.in_channels:
        raise InputError(f"the model takes {blob['in_channels']} input channels, the config "
                         f"{cfg.normalise.in_channels}", path, "in_channels")


def prepare_run(cfg: TrainConfig, dataset: str, output: str, spec: LaunchSpec, *, resume: bool,
                gpus_visible=visible_gpus):
    """All checks, then ``RUN/config.toml`` and ``RUN/job.json``. Returns the loaded TrainingData."""
    from .data import load_training_data
    from .task import checkpoint_paths

    check_spec(spec, gpus_visible)
    data = load_training_data(dataset)
    if cfg.run.init:
        check_init_model(cfg.run.init, data, cfg)
    run = OutputDir(output, "train")
    ours = run.check_empty_or_ours(CONFIG_NAME)
    new_cfg = config_to_dict(cfg)
    job = {"dataset": str(Path(dataset).resolve()), "dataset_digest": {k: data.digest[k] for k in
                                                                   ("config_digest", "manifest_digest", "n_patterns")},
           "grid": _grid_record(data), "device": spec.device, "world_size": spec.tasks_per_node * spec.nodes}
    if ours:
        if not resume:
            raise InputError(f"{run.path} holds a training run; pass --resume to continue it or choose a new --output",
                             str(run.path / CONFIG_NAME), "--resume")
        import tomllib

        # the old config resolved by this version (keys added since take their defaults), execution keys aside
        old = config_to_dict(config_from_dict(TrainConfig, tomllib.loads((run.path / CONFIG_NAME).read_text()),
                                              source=str(run.path / CONFIG_NAME)))
        cmp_new = json.loads(json.dumps(new_cfg))
        for key in EXECUTION_KEYS:
            sec, name = key.split(".")
            old[sec].pop(name, None)
            cmp_new[sec].pop(name, None)
        extra = []
        old_job = json.loads((run.path / JOB_NAME).read_text()) if (run.path / JOB_NAME).exists() else {}
        if old_job.get("grid") and old_job["grid"] != job["grid"]:
            raise InputError(f"the run was trained on a 2theta grid of {old_job['grid']}; the dataset {data.master} "
                             f"has {job['grid']}", str(run.path / JOB_NAME), "grid")
        if old_job.get("dataset_digest") and old_job["dataset_digest"] != job["dataset_digest"]:
            extra.append(f"dataset {old_job.get('dataset')} -> {job['dataset']} (another digest)")
        if old_job.get("world_size") and old_job["world_size"] != job["world_size"] and checkpoint_paths(run.path):
            extra.append(f"processes {old_job['world_size']} -> {job['world_size']} (the sampler order depends on them)")
        run.refuse_other_config(CONFIG_NAME, old, cmp_new, extra=extra,
                                hint="resume with the same config, dataset and process count, or choose a new --output")
    elif resume:
        raise InputError(f"--resume: {run.path} holds no training run to resume", str(run.path), "--resume")
    # A running job holds the lock: refuse now rather than have its rank 0 refuse later.
    run.lock()
    run.unlock()
    run.write_text(CONFIG_NAME, to_toml(new_cfg, header="xtalhpc train: the resolved config of this run"))
    run.write_text(JOB_NAME, json.dumps(job, indent=1) + "\n")
    (run.path / LOG_DIR).mkdir(exist_ok=True)
    return data


def task_from_run(run: str | Path):
    """The :class:`TrainTask` of a prepared run directory (the plain-srun entry uses it)."""
    import tomllib

    from .task import TrainTask

    run = Path(run)
    try:
        cfg = tomllib.loads((run / CONFIG_NAME).read_text())
        job = json.loads((run / JOB_NAME).read_text())
    except OSError as exc:
        raise InputError(f"not a prepared training run ({exc.strerror}); run `xtalhpc train ... --prepare-only`",
                         str(run)) from None
    config_from_dict(TrainConfig, cfg, source=str(run / CONFIG_NAME))
    return TrainTask(cfg, job["dataset"], str(run), job["device"])


def build_executor(spec: LaunchSpec, folder: Path, workers: int = 1):
    """The submitit executor for ``spec``, writing its logs under ``folder``."""
    import submitit

    if spec.cluster == "debug":
        return submitit.DebugExecutor(folder=str(folder))
    if spec.cluster == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(tasks_per_node=spec.tasks_per_node, gpus_per_node=spec.gpus,
                             timeout_min=spec.time_min or 60 * 24 * 365, signal_delay_s=90)
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = dict(nodes=spec.nodes, tasks_per_node=spec.tasks_per_node, cpus_per_task=spec.cpus_per_task or
                  max(1, workers + 1), name="xtalhpc-train", slurm_signal_delay_s=120)
    if spec.gpus:
        params["gpus_per_node"] = spec.gpus
    if spec.time_min:
        params["timeout_min"] = spec.time_min
    if spec.partition:
        params["slurm_partition"] = spec.partition
    ex.update_parameters(**params)
    return ex


def submit(cfg: TrainConfig, dataset: str, output: str, spec: LaunchSpec, stop_at: int | None = None):
    """Submit a prepared run; returns the submitit job."""
    from .task import TrainTask

    ex = build_executor(spec, Path(output) / LOG_DIR, cfg.data.workers)
    task = TrainTask(config_to_dict(cfg), str(Path(dataset).resolve()), str(Path(output).resolve()), spec.device,
                     stop_at)
    return ex.submit(task)
