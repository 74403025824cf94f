"""Training's side of the launcher: checks everything it can, prepares the run directory, submits.

Nothing here trains. Where :class:`~xtalhpc.train.task.TrainTask` runs (``local``, ``slurm``,
``debug``) is decided by the launcher shared with ``xtalhpc evaluate``, :mod:`xtalhpc.launch`
(:class:`LaunchSpec`, :func:`check_spec`, :func:`build_executor`, re-exported here).

``prepare_run`` does the checks that must fail *before* anything is submitted (config,
dataset, grid of an ``init`` model, GPUs asked for versus visible, an existing run without
``--resume``) and writes ``RUN/config.toml`` and ``RUN/job.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..job import OutputDir, config_from_dict, config_to_dict, to_toml
from ..launch import LOG_DIR, LaunchSpec, build_executor, check_spec, visible_gpus  # noqa: F401 (re-exported)
from .config import TrainConfig

CONFIG_NAME = "config.toml"
#: Keys a resumed run may change: how it runs, not what it computes.
EXECUTION_KEYS = ("run.threads", "data.workers", "run.log_every", "run.eval_every", "run.checkpoint_every",
                  "run.checkpoint_minutes", "run.keep_checkpoints")
JOB_NAME = "job.json"
#: [model] keys that shape training but not the weights: an ``init`` model may differ in them.
WEIGHTLESS_MODEL_KEYS = ("dropout", "stem_dropout")


def _grid_record(data) -> dict:
    tt = data.two_theta
    return {"n_points": int(tt.size), "first": float(tt[0]), "last": float(tt[-1])}


def check_init_model(path: str, data, cfg: TrainConfig) -> None:
    """An ``init`` model must have been trained on this dataset's grid with the same input, and
    with the same architecture (``run.init_layers = "all"``) or one of the same kind sharing some
    of the network's tensors (``"matching"``)."""
    from .modelfile import check_same_grid, matching_weights, read_model_file

    blob = read_model_file(path)
    check_same_grid(blob["two_theta"].numpy(), data.two_theta, path, data.master)
    want = config_to_dict(cfg)["model"]
    if cfg.run.init_layers == "matching":
        differ = [k for k in ("arch",) if want.get(k) != blob["arch"].get(k)]
    else:
        differ = sorted(k for k in set(want) | set(blob["arch"])
                        if k not in WEIGHTLESS_MODEL_KEYS and want.get(k) != blob["arch"].get(k))
    if differ:
        raise InputError("the model's architecture differs from the config's [model] section in "
                         + ", ".join(f"{k} (model {blob['arch'].get(k)!r}, config {want.get(k)!r})" for k in differ)
                         + ("" if cfg.run.init_layers == "matching" else
                            " (run.init_layers = \"matching\" takes the tensors whose shapes match)"),
                         path, "arch")
    if int(blob["in_channels"]) != cfg.normalise.in_channels:
        raise InputError(f"the model takes {blob['in_channels']} input channels, the config "
                         f"{cfg.normalise.in_channels}", path, "in_channels")
    if cfg.run.init_layers == "matching":
        from .models import build_model

        own = build_model(cfg.model, int(data.two_theta.size), cfg.normalise.in_channels, cfg.loss.heads).state_dict()
        if not any(k.startswith("trunk.") for k in matching_weights(blob["state_dict"], own)[0]):
            raise InputError("no layer of the model's trunk matches the config's network in name and shape "
                             "(run.init_layers = \"matching\")", path, "state_dict")


def prepare_run(cfg: TrainConfig, dataset: str, output: str, spec: LaunchSpec, *, resume: bool,
                gpus_visible=visible_gpus):
    """All checks, then ``RUN/config.toml`` and ``RUN/job.json``. Returns the loaded TrainingData."""
    from .data import load_training_data
    from .task import checkpoint_paths

    check_spec(spec, gpus_visible)
    data = load_training_data(dataset)
    if cfg.run.init and not (resume and checkpoint_paths(Path(output))):
        # (a resumed run starts from its checkpoint: the init model need not exist any more)
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


def submit(cfg: TrainConfig, dataset: str, output: str, spec: LaunchSpec, stop_at: int | None = None):
    """Submit a prepared run; returns the submitit job."""
    from .task import TrainTask

    ex = build_executor(spec, Path(output) / LOG_DIR, cfg.data.workers, name="xtalhpc-train")
    task = TrainTask(config_to_dict(cfg), str(Path(dataset).resolve()), str(Path(output).resolve()), spec.device,
                     stop_at)
    return ex.submit(task)
