"""A model file from a training run's checkpoint: ship or evaluate a run that has not finished.

A run writes ``RUN/model.pt`` only at its last step. A long run sliced over sessions (``--stop-at``,
a time limit) has checkpoints in between, and those are what a learning curve evaluates and what
can ship while the run goes on. :func:`export_model` writes the same model file the run's end
would write (:func:`xtalhpc.train.modelfile.save_model`: grid, vocabularies, normalisation,
config and dataset digests) with a checkpoint's weights and step; the metrics recorded are
the run's last validation record at or before that step.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def _checkpoint_path(run: Path, checkpoint) -> Path:
    from .task import checkpoint_paths

    if checkpoint is None:
        cks = checkpoint_paths(run)
        if not cks:
            raise InputError("holds no checkpoint (RUN/checkpoints/step-*.pt)", str(run), "checkpoints")
        return cks[-1]
    p = Path(checkpoint)
    if not p.exists() and str(checkpoint).isdigit():
        p = run / "checkpoints" / f"step-{int(checkpoint):09d}.pt"
    if not p.is_file():
        raise InputError("no such checkpoint (give a step-*.pt file or a step number of RUN/checkpoints)",
                         str(p), "checkpoint")
    return p


def _metrics_at(path: Path, step: int) -> dict:
    last = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("split") == "val" and int(rec.get("step", 0)) <= step:
                last = rec
    return last


def export_model(run, output, checkpoint=None, dataset=None) -> tuple[Path, int]:
    """Write ``output`` from checkpoint ``checkpoint`` (default: the newest) of ``run``; returns (path, step).

    ``dataset`` overrides the run's recorded dataset directory (e.g. regenerated elsewhere from
    its seed); its digests must be the run's.
    """
    import torch

    from ..job import load_config
    from .config import TrainConfig
    from .data import load_training_data
    from .launch import CONFIG_NAME, JOB_NAME
    from .modelfile import save_model
    from .models import build_model
    from .task import METRICS_NAME

    run = Path(run)
    if not (run / CONFIG_NAME).is_file() or not (run / JOB_NAME).is_file():
        raise InputError(f"is not a training run (no {CONFIG_NAME} and {JOB_NAME})", str(run), "run")
    cfg = load_config(TrainConfig, run / CONFIG_NAME)
    job = json.loads((run / JOB_NAME).read_text())
    ck_path = _checkpoint_path(run, checkpoint)
    ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    if ck.get("format") != "xtalhpc.train-checkpoint":
        raise InputError(f"format {ck.get('format')!r} is not 'xtalhpc.train-checkpoint'", str(ck_path), "format")
    data = load_training_data(dataset or job["dataset"])
    want = job.get("dataset_digest", {})
    for key in ("config_digest", "manifest_digest"):
        if want.get(key) and data.digest.get(key) != want[key]:
            raise InputError(f"is not the dataset this run trained on ({key} {data.digest.get(key)} != "
                             f"{want[key]})", str(dataset or job["dataset"]), key)
    model = build_model(cfg.model, data.two_theta.size, cfg.normalise.in_channels, cfg.loss.heads)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the run's [model] config: {str(exc).splitlines()[0]}",
                         str(ck_path), "model") from None
    step = int(ck["step"])
    path = save_model(output, model=model, cfg=cfg, data=data, heads=cfg.loss.heads, step=step,
                      metrics=_metrics_at(run / METRICS_NAME, step))
    return Path(path), step
