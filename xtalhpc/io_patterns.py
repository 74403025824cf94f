"""Compatibility names for 1-D pattern files; the readers live in :mod:`xtalhpc.io.measured`."""
from __future__ import annotations

import os

import numpy as np

from .io.measured import read_measured
from .io.measured.xye import write_xye

__all__ = ["read_xye", "write_xye"]


def read_xye(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(2theta, intensity, sigma or None) of a 2- or 3-column text pattern (see :func:`xtalhpc.io.measured.read_xye`)."""
    pat = read_measured(path, format="xye")
    return pat.two_theta, pat.intensity, (pat.sigma if pat.meta.get("columns") == 3 else None)
