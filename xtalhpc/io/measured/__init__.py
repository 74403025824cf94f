"""Readers for measured constant-wavelength powder patterns -> :class:`MeasuredPattern`.

One module per format, each returning the same type (2theta in degrees, intensity,
sigma, wavelength or None, source, mask):

==========================  ==========================================  ==============================
format                      files                                       reader
==========================  ==========================================  ==============================
column text                 ``.xy .xye .dat .txt .csv``                 :func:`~.xye.read_xye`
GSAS raw (CONST banks)      ``.gsa .gsas .gss .fxye .raw .cwn .gda``    :func:`~.gsas.read_gsas_raw`
powder CIF                  ``.cif .pdcif .rcif``                       :func:`~.pdcif.read_pdcif`
==========================  ==========================================  ==============================

:func:`read_measured` picks the reader by suffix, else by content (a ``BANK`` record,
a ``data_`` block, numeric columns). Formats and conventions: docs/measured.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import MIN_SIGMA, MeasuredPattern, PatternFileError, read_lines
from .gsas import read_gsas_prm, read_gsas_raw, read_instprm, read_instrument_parameters
from .pdcif import read_easydiffraction_instrument, read_pdcif
from .xye import read_xye, write_xye
from . import gsas as _gsas, pdcif as _pdcif, xye as _xye

__all__ = ["MIN_SIGMA", "MEASURED_SUFFIXES", "MeasuredPattern", "PatternFileError", "detect_measured_format",
           "read_easydiffraction_instrument", "read_gsas_prm", "read_gsas_raw", "read_instprm",
           "read_instrument_parameters", "read_measured", "read_pdcif", "read_xye", "write_xye"]

#: Suffix (lower case) -> format.
MEASURED_SUFFIXES: dict[str, str] = {**{s: "xye" for s in _xye.SUFFIXES}, **{s: "gsas" for s in _gsas.SUFFIXES},
                                     **{s: "pdcif" for s in _pdcif.SUFFIXES}}
_FORMATS = ("column text (.xy .xye .dat), GSAS raw (.gsa .gsas .gss .fxye .raw .CWN .gda), "
            "pdCIF (.cif)")


def detect_measured_format(path: str | os.PathLike) -> str:
    """``"gsas"``, ``"pdcif"`` or ``"xye"``: by content where it is unambiguous, else by suffix.

    Content wins over the suffix for GSAS (a ``BANK`` record) and CIF (a ``data_`` line),
    because ``.dat`` and ``.raw`` are used by several formats.

    Raises
    ------
    PatternFileError
        Missing, empty, binary, or no format matches.
    """
    lines = read_lines(path)
    head = lines[:2000]
    if any(ln.startswith("BANK") for ln in head):
        return "gsas"
    if any(ln.lstrip().lower().startswith("data_") for ln in head):
        return "pdcif"
    suffix = Path(path).suffix.lower()
    fmt = MEASURED_SUFFIXES.get(suffix)
    if fmt == "xye" or fmt is None:
        for ln in head:
            s = ln.strip()
            if not s or s.startswith(("#", "!", "//")):
                continue
            parts = s.replace(",", " ").split()
            try:
                [float(t) for t in parts]
            except ValueError:
                continue
            if len(parts) in (2, 3):
                return "xye"
            break
    if fmt is None:
        raise PatternFileError(f"unrecognised pattern format; allowed: {_FORMATS}", path, None, "format")
    if fmt == "gsas":
        raise PatternFileError("no BANK record: not a GSAS raw file (expected 'BANK ibank nchan nrec CONST start "
                               "step ...')", path, None, "BANK")
    if fmt == "pdcif":
        raise PatternFileError("no data_ block: not a CIF", path, None, "data_")
    raise PatternFileError("no numeric data lines (expected 2theta, intensity[, sigma] columns)", path)


def read_measured(path: str | os.PathLike, *, wavelength: float | None = None,
                  instrument_file: str | os.PathLike | None = None, bank: int | None = None,
                  format: str | None = None) -> MeasuredPattern:
    """Read a measured constant-wavelength pattern in any supported format.

    Parameters
    ----------
    path : str or PathLike
    wavelength : float, optional
        Angstrom; overrides the file's.
    instrument_file : path, optional
        GSAS ``.prm``/``.inst`` or GSAS-II ``.instprm``: its wavelength is used when neither
        the caller nor the data file gives one (for every format).
    bank : int, optional
        GSAS bank number (default the first).
    format : {"xye", "gsas", "pdcif"}, optional
        Skip detection.

    Raises
    ------
    PatternFileError
        The file cannot be read; the message names the file and line.
    """
    fmt = format or detect_measured_format(path)
    if fmt == "gsas":
        return read_gsas_raw(path, bank, wavelength=wavelength, instrument_file=instrument_file)
    if fmt == "pdcif":
        pat = read_pdcif(path, wavelength=wavelength)
    elif fmt == "xye":
        pat = read_xye(path, wavelength=wavelength)
    else:
        raise PatternFileError(f"format {fmt!r} unknown; allowed: xye, gsas, pdcif", path, None, "format")
    if pat.wavelength is None and instrument_file is not None:
        prm = read_instrument_parameters(instrument_file)
        pat.wavelength = float(prm["wavelength"])
        pat.wavelength_source = str(instrument_file)
        pat.meta["instrument"] = prm
    return pat
