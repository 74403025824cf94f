"""Column text patterns: ``.xy``, ``.xye``, ``.dat`` (2theta, intensity[, sigma]).

Layout read
-----------
* Comment lines start with ``#``, ``!`` or ``//``; blank lines are skipped.
* Before the first data line, non-numeric lines are a header (column names, a title);
  after it, every non-comment line must hold the same 2 or 3 numbers (whitespace or
  comma separated). Anything else is an error naming the line.
* Column 1 is 2theta in degrees, column 2 the intensity, column 3 (optional) its
  standard uncertainty; without it sigma = sqrt(max(I, 1)). Points with sigma = 0 are masked.
* A wavelength is taken from a header or comment line such as ``# wavelength = 1.5403``
  or ``# lambda: 1.54`` (angstrom); otherwise the pattern has none.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .base import MeasuredPattern, PatternFileError, finish, read_lines

SUFFIXES: tuple[str, ...] = (".xy", ".xye", ".dat", ".txt", ".csv")

_COMMENT = ("#", "!", "//")
_WAVELENGTH = re.compile(r"(?:wave\s*length|lambda)\w*\s*(?:\([^)]*\))?\s*[=:]?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)",
                         re.IGNORECASE)
_SPLIT = re.compile(r"[\s,;]+")


def wavelength_in(text: str) -> float | None:
    """A wavelength stated in a free-text line (``wavelength = 1.54``, ``Lambda: 2.4``), else None."""
    m = _WAVELENGTH.search(text)
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v if 0.01 < v < 100 else None


def read_xye(path: str | os.PathLike, *, wavelength: float | None = None) -> MeasuredPattern:
    """Read a 2- or 3-column text pattern.

    Parameters
    ----------
    path : str or PathLike
    wavelength : float, optional
        Angstrom; overrides any wavelength stated in the file.

    Raises
    ------
    PatternFileError
        Not a file, empty, a non-numeric or short row after the data began (naming the
        line), 2theta outside (0, 180) or not increasing, no data.
    """
    src = str(path)
    lines = read_lines(path)
    xs: list[float] = []
    ys: list[float] = []
    es: list[float] = []
    where: list[int] = []
    ncol = 0
    header_wl = None
    for i, raw in enumerate(lines, start=1):
        ln = raw.strip()
        if not ln:
            continue
        if ln.startswith(_COMMENT):
            if header_wl is None:
                header_wl = wavelength_in(ln)
            continue
        tok = [t for t in _SPLIT.split(ln) if t]
        try:
            vals = [float(t) for t in tok]
        except ValueError:
            if not xs:  # header before the data
                if header_wl is None:
                    header_wl = wavelength_in(ln)
                continue
            bad = next(t for t in tok if not _is_float(t))
            raise PatternFileError(f"not a number: {bad!r} (expected 2theta, intensity[, sigma])",
                                   src, i, "columns") from None
        if not ncol:
            if len(vals) not in (2, 3):
                raise PatternFileError(f"{len(vals)} columns; allowed: 2 (2theta, intensity) or 3 (2theta, "
                                       "intensity, sigma)", src, i, "columns")
            ncol = len(vals)
        elif len(vals) != ncol:
            raise PatternFileError(f"{len(vals)} columns where the data began with {ncol}", src, i, "columns")
        xs.append(vals[0])
        ys.append(vals[1])
        if ncol == 3:
            es.append(vals[2])
        where.append(i)
    if not xs:
        raise PatternFileError("no numeric data lines (expected 2theta, intensity[, sigma] columns)", src)
    wl, wsrc = (wavelength, "caller") if wavelength is not None else (header_wl, "file")
    return finish(src, "xye", xs, ys, es if ncol == 3 else None, wavelength=wl, wavelength_source=wsrc,
                  lines=where, title=Path(src).stem, meta={"columns": ncol})


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def write_xye(path: str | os.PathLike, two_theta: np.ndarray, intensity: np.ndarray, sigma: np.ndarray | None = None,
              header: str = "") -> None:
    """Write ``2theta intensity sigma`` columns (``#`` header lines); sigma defaults to sqrt(max(I, 0))."""
    y = np.asarray(intensity, dtype=float)
    e = np.sqrt(np.clip(y, 0, None)) if sigma is None else np.asarray(sigma, dtype=float)
    with open(path, "w") as fh:
        for line in header.splitlines():
            fh.write(f"# {line}\n")
        fh.write("# 2theta(deg) intensity sigma\n")
        np.savetxt(fh, np.column_stack([two_theta, y, e]), fmt=["%.5f", "%.8g", "%.6g"])
