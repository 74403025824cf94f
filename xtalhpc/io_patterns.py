"""Reading and writing 1-D powder patterns (.xye)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


def write_xye(path: str | Path, two_theta: np.ndarray, intensity: np.ndarray, sigma: np.ndarray | None = None,
              header: str = "") -> None:
    """Write ``2theta intensity sigma`` columns; sigma defaults to sqrt(max(I, 0)) (counting statistics)."""
    y = np.asarray(intensity, dtype=float)
    e = np.sqrt(np.clip(y, 0, None)) if sigma is None else np.asarray(sigma, dtype=float)
    with open(path, "w") as fh:
        for line in header.splitlines():
            fh.write(f"# {line}\n")
        fh.write("# 2theta(deg) intensity sigma\n")
        np.savetxt(fh, np.column_stack([two_theta, y, e]), fmt=["%.5f", "%.8g", "%.6g"])


def read_xye(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a 2- or 3-column text pattern (``#`` comments); returns (2theta, intensity, sigma or None)."""
    p = Path(path)
    try:
        data = np.loadtxt(p, comments=("#", "!"), ndmin=2)
    except FileNotFoundError:
        raise InputError("file not found", str(p)) from None
    except ValueError as exc:
        raise InputError(f"not a numeric 2- or 3-column pattern: {exc}", str(p)) from None
    if data.shape[0] == 0 or data.shape[1] < 2:
        raise InputError(f"needs at least 2 columns (2theta, intensity), got shape {data.shape}", str(p))
    return data[:, 0], data[:, 1], (data[:, 2] if data.shape[1] > 2 else None)
