"""Tiny model files for plumbing tests of ``evaluate`` and ``predict``, written through the real
model-file writer (:func:`xtalhpc.train.modelfile.save_model`).

Random weights: good for checking that files are read, converted, normalised, batched and
reported correctly, never for an accuracy claim.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

#: A 3-stage ResNet of ~10k parameters: a forward pass on the BT-1 grid takes a millisecond.
TINY_ARCH = {"dims": [8, 8, 8], "kernels": [5, 5, 5], "strides": [4, 4, 4], "blocks": [1, 1, 1],
             "stem_kernel": 7, "pool_kernel": 3, "pool_stride": 3, "dropout": 0.0, "norm": "group"}
HEADS = ("space_group", "crystal_system", "bravais_lattice", "extinction_group")


def bt1_grid() -> np.ndarray:
    """The BT-1 Cu(311) preset's grid (3296 points, 3-167.75 deg)."""
    from xtalhpc.instruments import get_instrument

    inst = get_instrument("bt1-cu311")
    n = int(round((inst.two_theta_max - inst.two_theta_min) / inst.two_theta_step)) + 1
    return inst.two_theta_min + inst.two_theta_step * np.arange(n)


def write_tiny_model(path, two_theta=None, wavelength: float = 1.5403, *, seed: int = 0, heads=HEADS,
                     normalise: dict | None = None, model=None):
    """Save a randomly initialised tiny ResNet (or ``model``) for the grid ``two_theta`` (default BT-1);
    returns ``(path, model)``."""
    import torch

    from xtalhpc.job import config_from_dict
    from xtalhpc.train.config import HEADS as NCLASS, TrainConfig
    from xtalhpc.train.modelfile import save_model
    from xtalhpc.train.models import build_model

    tt = bt1_grid() if two_theta is None else np.asarray(two_theta, dtype=float)
    cfg = config_from_dict(TrainConfig, {"model": TINY_ARCH, "normalise": normalise or {},
                                         "loss": {h: (1.0 if h in heads else 0.0) for h in NCLASS}})
    if model is None:
        torch.manual_seed(seed)
        model = build_model(cfg.model, tt.size, cfg.normalise.in_channels, {h: NCLASS[h] for h in heads})
    data = SimpleNamespace(two_theta=tt, wavelength=wavelength, instrument={"name": "test"},
                           digest={"config_digest": "test", "manifest_digest": "test"})
    save_model(path, model=model, cfg=cfg, data=data, heads=list(heads), step=0, metrics={})
    return path, model
