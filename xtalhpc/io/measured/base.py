"""The measured-pattern type shared by every reader, and the error they raise.

A reader turns one file into a :class:`MeasuredPattern`: 2theta in degrees,
intensity, its standard uncertainty, the wavelength where the file (or the
instrument parameter file it names) carries one, and a mask of the points to use.
Every reader raises :class:`PatternFileError` for a file it cannot read, naming
the file, the line and what was expected, so a batch (``xtalhpc predict``) can
list the bad file and go on.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError

#: sigma given to a point the file gives no usable uncertainty for (zero esd, zero weight).
#: Such points are also masked out; the floor (about one count) only keeps 1/sigma^2 finite.
MIN_SIGMA = 1.0


class PatternFileError(InputError):
    """A measured-pattern file that cannot be read.

    Parameters
    ----------
    message : str
        What is wrong and what is allowed.
    path : str or PathLike
        The file.
    line : int, optional
        1-based line number of the offending record.
    field : str, optional
        The column, CIF tag or BANK field.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None,
                 field: str | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = self.path
        if line is not None:
            where = f"{where}, line {line}" if where else f"line {line}"
        super().__init__(message, where, field)


@dataclass
class MeasuredPattern:
    """A measured constant-wavelength powder pattern.

    Attributes
    ----------
    two_theta : ndarray of float, shape (n,)
        Scattering angle in degrees, strictly increasing, inside (0, 180).
    intensity : ndarray of float, shape (n,)
        Counts (or counts per monitor, as the file gives them).
    sigma : ndarray of float, shape (n,)
        Standard uncertainty of each intensity, > 0 everywhere. Where the file gives
        none, sqrt(max(intensity, 1)) (counting statistics); where it gives zero or
        a zero weight, :data:`MIN_SIGMA` and the point is masked.
    wavelength : float or None
        Angstrom, from the file or the instrument parameter file it names (or that
        the caller passed); None where neither carries one.
    mask : ndarray of bool, shape (n,)
        True for points to use; False for points the file excludes (zero weight,
        zero esd, non-finite).
    source : str
        The file read.
    format : str
        ``"xye"``, ``"gsas"`` or ``"pdcif"``.
    title : str
        The file's title line or data block name, if any.
    wavelength_source : str
        Where the wavelength came from (``"file"``, a parameter-file path, ``"caller"``), or "".
    meta : dict
        Format-specific extras (GSAS bank number and layout, parameter-file values, ...).
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    wavelength: float | None
    source: str
    mask: np.ndarray
    format: str = ""
    title: str = ""
    wavelength_source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.two_theta.shape[0])

    @property
    def step(self) -> float:
        """Median 2theta step (degrees)."""
        return float(np.median(np.diff(self.two_theta)))

    @property
    def uniform(self) -> bool:
        """True when every 2theta step equals the first to 1e-6 deg."""
        d = np.diff(self.two_theta)
        return bool(np.allclose(d, d[0], rtol=0, atol=1e-6))

    @property
    def d_spacing(self) -> np.ndarray:
        """d = lambda / (2 sin theta) in angstrom; needs a wavelength."""
        if self.wavelength is None:
            raise InputError("no wavelength: pass one (--wavelength) or an instrument parameter file",
                             self.source, "wavelength")
        return self.wavelength / (2 * np.sin(np.radians(self.two_theta) / 2))


def finish(path: str | os.PathLike, fmt: str, two_theta, intensity, sigma, *, wavelength: float | None = None,
           wavelength_source: str = "", mask=None, title: str = "", lines=None, meta: dict | None = None
           ) -> MeasuredPattern:
    """Checks every reader shares, then the :class:`MeasuredPattern`.

    ``sigma`` may be None (counting statistics). ``lines`` (optional, one 1-based line
    number per point) lets an error name the line of the offending point.
    """
    src = str(path)
    tt = np.asarray(two_theta, dtype=float)
    y = np.asarray(intensity, dtype=float)
    if tt.size == 0:
        raise PatternFileError("no data points", src)
    if y.shape != tt.shape:
        raise PatternFileError(f"{y.size} intensities for {tt.size} 2theta values", src)

    def where(i: int) -> int | None:
        return None if lines is None else int(lines[i])

    bad = np.flatnonzero(~np.isfinite(tt))
    if bad.size:
        raise PatternFileError(f"2theta {tt[bad[0]]} is not a finite number", src, where(bad[0]), "2theta")
    bad = np.flatnonzero((tt <= 0) | (tt >= 180))
    if bad.size:
        raise PatternFileError(f"2theta {tt[bad[0]]:g} deg is outside (0, 180); constant-wavelength data in "
                               "degrees are expected (time-of-flight or Q data are not read here)",
                               src, where(bad[0]), "2theta")
    if tt.size > 1:
        bad = np.flatnonzero(np.diff(tt) <= 0)
        if bad.size:
            i = bad[0] + 1
            raise PatternFileError(f"2theta {tt[i]:g} does not increase (previous {tt[i - 1]:g}); points must be "
                                   "in increasing 2theta", src, where(i), "2theta")
    if sigma is None:
        s = np.sqrt(np.clip(y, 1.0, None))
    else:
        s = np.asarray(sigma, dtype=float)
        neg = np.flatnonzero(s < 0)
        if neg.size:
            raise PatternFileError(f"negative uncertainty {s[neg[0]]:g}", src, where(neg[0]), "sigma")
    m = np.isfinite(y) & np.isfinite(s) & (s > 0)
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    if not m.any():
        raise PatternFileError("no usable point (every point has zero weight, zero uncertainty or no value)", src)
    if wavelength is not None and not (math.isfinite(wavelength) and 0.01 < wavelength < 100):
        raise PatternFileError(f"wavelength {wavelength} A is outside (0.01, 100)", src, None, "wavelength")
    s = np.where(m, s, MIN_SIGMA)
    return MeasuredPattern(tt, np.where(np.isfinite(y), y, 0.0), s, None if wavelength is None else float(wavelength),
                           src, m, fmt, title, wavelength_source if wavelength is not None else "", meta or {})


def read_lines(path: str | os.PathLike) -> list[str]:
    """The file's lines (latin-1: never fails; old GSAS titles hold binary junk), without line ends.

    Raises
    ------
    PatternFileError
        Missing, a directory, or empty.
    """
    p = Path(path)
    if p.is_dir():
        raise PatternFileError("is a directory, not a pattern file", p)
    if not p.exists():
        raise PatternFileError("no such file", p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PatternFileError(f"cannot be read ({exc.strerror})", p) from None
    if not raw.strip():
        raise PatternFileError("file is empty", p)
    # A NUL past the title line means a binary file (old GSAS titles may hold a few).
    if b"\x00" in raw[:65536].split(b"\n", 1)[-1] or raw[:65536].count(b"\x00") > 16:
        raise PatternFileError("binary file (NUL bytes); text patterns are expected (Bruker .raw binaries are "
                               "not read: export them as .xy)", p)
    text = raw.decode("latin-1")
    return [ln.rstrip("\r\x1a") for ln in text.split("\n")]
