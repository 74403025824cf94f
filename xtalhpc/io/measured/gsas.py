"""GSAS raw powder files (``.gsa .gsas .gss .fxye .raw .CWN .gda``) and GSAS instrument parameter files.

Written from the GSAS manual's description of the raw file (checked against GSAS-II's
reader ``G2pwd_fxye.py``). Only constant-wavelength banks are read.

Raw file layout
---------------
* Line 1: a title (free text; may hold binary junk from old writers, hence latin-1).
* Optional line 2 ``Instrument parameter file: NAME``: the parameter file (resolved beside
  the data file) whose ``ICONS`` record gives the wavelength.
* ``#`` comment lines anywhere; a comment ``# Calibrated wavelength = 0.413529`` (APS 11-BM)
  or ``# wavelength: ...`` gives the wavelength.
* ``BANK ibank nchan nrec bintyp bcoef1 bcoef2 bcoef3 bcoef4 type`` then ``nrec`` data records.
  ``bintyp`` ``CONST`` (or ``CONS``): 2theta(i) = bcoef1 + i * bcoef2, in centidegrees.
  ``RALF``, ``SLOG``, ``TIME_MAP`` and ``LOG6`` bins are time-of-flight: refused with that reason.
* ``type`` (the layout of the records):

  ``STD`` (the default): 10 fields of (I2, F6.0) per 80-column record: a scale factor n
  (the number of counters summed; blank = 1) and the intensity y; variance = y / n.
  ``ESD``: 5 pairs of (F8.0, F8.0) per record: intensity and its esd.
  ``FXYE``: free format, one point per line: 2theta (centidegrees), intensity, esd.
  ``FXY``: as FXYE without the esd (variance = intensity).
  ``ALT``: time-of-flight only, refused.

  Points with zero intensity in STD, or zero esd, carry no weight in GSAS: they are masked.

Instrument parameter files
--------------------------
GSAS ``.prm``/``.inst`` (``INS  n ICONS lambda1 lambda2 zero ...``, ``PRCFn`` profile tables)
and GSAS-II ``.instprm`` (``key:value``: ``Lam`` or ``Lam1``, ``Zero``, ``U V W X Y``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .base import MeasuredPattern, PatternFileError, finish, read_lines
from .xye import wavelength_in

SUFFIXES: tuple[str, ...] = (".gsa", ".gsas", ".gss", ".fxye", ".raw", ".cwn", ".gda")
PARAMETER_SUFFIXES: tuple[str, ...] = (".prm", ".inst", ".instprm", ".ins", ".iparm")

_TOF_BINS = {"RALF": "RALF", "SLOG": "SLOG", "TIME_MAP": "TIME_MAP", "LOG6": "LOG6"}
_LAYOUTS = ("STD", "ESD", "FXYE", "FXY", "ALT")


def _bank_line(ln: str, src: str, lineno: int) -> dict:
    tok = ln.split()
    if len(tok) < 5:
        raise PatternFileError(f"BANK record {ln.strip()!r} has {len(tok)} fields; expected BANK ibank nchan nrec "
                               "bintyp bcoef1 bcoef2 ...", src, lineno, "BANK")
    try:
        bank, nchan, nrec = int(tok[1]), int(tok[2]), int(tok[3])
    except ValueError:
        raise PatternFileError(f"BANK record {ln.strip()!r}: bank number, point count and record count must be "
                               "integers", src, lineno, "BANK") from None
    bintyp = tok[4].upper()
    layout = next((t.upper() for t in tok[5:] if t.upper() in _LAYOUTS), "STD")
    if bintyp in _TOF_BINS or layout == "ALT":
        raise PatternFileError(f"bank {bank} has {bintyp} bins / {layout} records: time-of-flight data; only "
                               "constant-wavelength (CONST bins) banks are read", src, lineno, "BANK")
    if bintyp not in ("CONST", "CONS"):
        raise PatternFileError(f"bank {bank}: bin type {tok[4]!r} unknown; allowed: CONST (constant 2theta step)",
                               src, lineno, "BANK")
    try:
        start, step = float(tok[5]) / 100.0, float(tok[6]) / 100.0  # centidegrees -> degrees
    except (IndexError, ValueError):
        raise PatternFileError("CONST bank needs a start and a step (centidegrees) after CONST", src, lineno,
                               "BANK") from None
    if nchan <= 0 or nrec <= 0:
        raise PatternFileError(f"bank {bank}: {nchan} points in {nrec} records; both must be > 0", src, lineno,
                               "BANK")
    if layout not in ("FXYE", "FXY") and not step > 0:
        raise PatternFileError(f"bank {bank}: 2theta step {step} deg must be > 0", src, lineno, "BANK")
    return {"bank": bank, "nchan": nchan, "nrec": nrec, "bintyp": bintyp, "start": start, "step": step,
            "layout": layout}


def _field(s: str, src: str, lineno: int, col: int, what: str) -> float:
    """The number in fixed-width field ``s`` that starts at 0-based column ``col`` (blank = 0)."""
    t = s.strip()
    if not t:
        return 0.0
    try:
        return float(t)
    except ValueError:
        raise PatternFileError(f"{what} {t!r} at columns {col + 1}-{col + len(s)} is not a number", src, lineno,
                               what) from None


def read_gsas_raw(path: str | os.PathLike, bank: int | None = None, *, wavelength: float | None = None,
                  instrument_file: str | os.PathLike | None = None) -> MeasuredPattern:
    """Read one constant-wavelength bank of a GSAS raw file.

    Parameters
    ----------
    path : str or PathLike
    bank : int, optional
        The bank number (the ``ibank`` of its BANK record); default: the first bank.
    wavelength : float, optional
        Angstrom; overrides every other source.
    instrument_file : path, optional
        A GSAS ``.prm``/``.inst`` or GSAS-II ``.instprm`` whose wavelength to use when the
        caller gives none; otherwise the parameter file the data file names (line 2), then a
        wavelength stated in a comment.

    Raises
    ------
    PatternFileError
        No BANK record (or not the one asked for), a time-of-flight bank, a record that
        is not numeric or has a blank field inside it (naming the line), no data record.
        A bank holding fewer points than its BANK record announces is read as it is
        (``meta["announced_points"]`` keeps the announced count).
    """
    src = str(path)
    lines = read_lines(path)
    title = lines[0].strip()
    named_prm = None
    comment_wl = None
    banks: list[tuple[int, str]] = []
    for i, ln in enumerate(lines):
        if i == 1 and ln[:4].lower() == "inst" and ":" in ln:
            named_prm = ln.split(":", 1)[1].strip().strip("[]").strip()
        elif ln.startswith("#"):
            if comment_wl is None:
                comment_wl = wavelength_in(ln)
        elif ln.startswith("BANK"):
            banks.append((i, ln))
    if not banks:
        raise PatternFileError("no BANK record: not a GSAS raw file (expected 'BANK ibank nchan nrec CONST start "
                               "step ...')", src)
    if bank is None:
        i0, ln0 = banks[0]
    else:
        found = [(i, ln) for i, ln in banks if ln.split()[1:2] == [str(bank)]]
        if not found:
            have = ", ".join(ln.split()[1] if len(ln.split()) > 1 else "?" for _, ln in banks)
            raise PatternFileError(f"no BANK {bank}; the file has bank(s) {have}", src, None, "bank")
        i0, ln0 = found[0]
    hdr = _bank_line(ln0, src, i0 + 1)
    nchan, layout = hdr["nchan"], hdr["layout"]
    body: list[tuple[int, str]] = []
    for j in range(i0 + 1, len(lines)):
        ln = lines[j]
        if ln.startswith("BANK"):
            break
        if ln.startswith("#") or not ln.strip():
            continue
        body.append((j + 1, ln))
    x: list[float] = []
    y: list[float] = []
    e: list[float] = []
    at: list[int] = []
    if layout in ("FXYE", "FXY"):
        for lineno, ln in body[:max(hdr["nrec"], nchan)]:
            t = ln.split()
            need = 3 if layout == "FXYE" else 2
            if len(t) < need:
                raise PatternFileError(f"{layout} record has {len(t)} fields; expected 2theta (centidegrees), "
                                       f"intensity{', esd' if need == 3 else ''}", src, lineno, layout)
            try:
                v = [float(s) for s in t[:need]]
            except ValueError:
                raise PatternFileError(f"{layout} record {ln.strip()!r} is not numeric", src, lineno, layout) from None
            x.append(v[0] / 100.0)
            y.append(v[1])
            e.append(v[2] if need == 3 else float(np.sqrt(max(v[1], 0.0))))
            at.append(lineno)
            if len(y) == nchan:
                break
    else:
        width = 8 if layout == "STD" else 16  # STD: 10 (I2, F6.0) fields; ESD: 5 (F8.0, F8.0) pairs
        for lineno, ln in body[:hdr["nrec"]]:
            rec = ln.ljust(80)
            for k in range(0, 80, width):
                if len(y) == nchan:
                    break
                fld = rec[k:k + width]
                if not fld.strip():
                    if rec[k:].strip():  # a blank field before data on the same record
                        raise PatternFileError(f"blank field at columns {k + 1}-{k + width} before the end of the "
                                               f"{layout} record", src, lineno, layout)
                    break
                if layout == "STD":
                    n = _field(fld[:2], src, lineno, k, "scale factor") or 1.0
                    yi = _field(fld[2:8], src, lineno, k + 2, "intensity")
                    y.append(max(yi, 0.0))
                    e.append(float(np.sqrt(yi / n)) if yi > 0 else 0.0)
                else:
                    yi = _field(fld[:8], src, lineno, k, "intensity")
                    ei = _field(fld[8:16], src, lineno, k + 8, "esd")
                    y.append(yi)
                    e.append(ei if yi > 0 else 0.0)
                at.append(lineno)
            if len(y) == nchan:
                break
        x = list(hdr["start"] + hdr["step"] * np.arange(len(y)))
    if not y:
        raise PatternFileError(f"BANK {hdr['bank']} announces {nchan} points but no {layout} record follows", src,
                               i0 + 1, "nchan")
    # Fewer points than announced: kept, as GSAS-II keeps them (LLB's PrSrMnO.gda announces 2415
    # points in 242 records and holds 2395 in 240); the shortfall is recorded in meta.
    wl, wsrc, prm = _wavelength(src, wavelength, instrument_file, named_prm, comment_wl)
    meta = {k: hdr[k] for k in ("bank", "bintyp", "layout")}
    meta["announced_points"] = nchan
    meta["banks"] = [int(ln.split()[1]) for _, ln in banks if len(ln.split()) > 1 and ln.split()[1].isdigit()]
    if prm is not None:
        meta["instrument"] = prm
    return finish(src, "gsas", x, y, e, wavelength=wl, wavelength_source=wsrc, lines=at, title=title, meta=meta)


def _wavelength(src: str, wavelength, instrument_file, named_prm, comment_wl):
    if wavelength is not None:
        return wavelength, "caller", None
    if instrument_file is not None:
        prm = read_instrument_parameters(instrument_file)
        return prm["wavelength"], str(instrument_file), prm
    if named_prm:
        p = Path(src).parent / named_prm
        if p.is_file():
            prm = read_instrument_parameters(p)
            return prm["wavelength"], str(p), prm
    if comment_wl is not None:
        return comment_wl, "file", None
    return None, "", None


# --------------------------------------------------------------------------- parameter files

def read_instrument_parameters(path: str | os.PathLike, bank: int = 1) -> dict:
    """Wavelength, zero and CW profile terms of a GSAS ``.prm``/``.inst``, a GSAS-II ``.instprm``
    or an EasyDiffraction experiment CIF (``_setup_wavelength``).

    Returns a dict with at least ``wavelength`` (angstrom) and ``zero`` (degrees), plus
    ``U V W X Y`` (GSAS units) where the file has a constant-wavelength profile.
    """
    lines = read_lines(path)
    if any(ln.startswith("INS") for ln in lines):
        return read_gsas_prm(path, bank=bank)
    if any(ln.lstrip().lower().startswith("data_") for ln in lines):  # EasyDiffraction experiment CIF
        from .pdcif import read_easydiffraction_instrument

        return read_easydiffraction_instrument(path)
    return read_instprm(path)


def read_gsas_prm(path: str | os.PathLike, bank: int = 1, table: int = 1) -> dict:
    """Wavelength, zero (deg) and profile table ``table`` (PRCF1, PRCF2, ...) of a GSAS ``.prm``/``.inst``.

    GSAS CW profile types: 1 = U V W As F1 F2 (Gaussian only); 2 = U V W As F1 F2 LX LY ...;
    3 and 4 = U V W P LX LY S/L H/L ... . ICONS holds lambda1, lambda2, zero (centidegrees).

    Raises
    ------
    PatternFileError
        No ICONS record for the bank (a time-of-flight file has DIFC instead), a
        non-numeric value.
    """
    src = str(path)
    rec: dict[str, tuple[int, list[str]]] = {}
    for i, ln in enumerate(read_lines(path), start=1):
        if ln.startswith("INS"):
            key = re.sub(r"\s+", " ", ln[:12].strip())
            rec[key] = (i, ln[12:].split())
    pre = f"INS {bank}"
    icons = rec.get(f"{pre} ICONS") or rec.get(f"{pre}ICONS")
    if icons is None:
        raise PatternFileError(f"no 'INS {bank} ICONS' record (lambda1 lambda2 zero): not a constant-wavelength "
                               "GSAS parameter file", src, None, "ICONS")

    def num(s: str, lineno: int, fld: str) -> float:
        try:
            return float(s)
        except ValueError:
            raise PatternFileError(f"{fld} value {s!r} is not a number", src, lineno, fld) from None

    lineno, vals = icons
    if len(vals) < 1:
        raise PatternFileError("ICONS record has no wavelength", src, lineno, "ICONS")
    out: dict = {"wavelength": num(vals[0], lineno, "ICONS"),
                 "zero": num(vals[2], lineno, "ICONS") / 100.0 if len(vals) > 2 else 0.0,
                 "U": 0.0, "V": 0.0, "W": 0.0, "X": 0.0, "Y": 0.0}
    if len(vals) > 1 and num(vals[1], lineno, "ICONS") > 0:
        out["wavelength2"] = num(vals[1], lineno, "ICONS")
    key = f"{pre}PRCF{table}"
    if key in rec:
        ln_t, head = rec[key]
        ptype, nterm = int(num(head[0], ln_t, key)), int(num(head[1], ln_t, key))
        terms: list[float] = []
        k = 1
        while len(terms) < nterm and f"{key}{k}" in rec:
            ln_k, vv = rec[f"{key}{k}"]
            terms.extend(num(v, ln_k, f"{key}{k}") for v in vv)
            k += 1
        terms += [0.0] * max(0, 8 - len(terms))
        out.update(profile_type=ptype, U=terms[0], V=terms[1], W=terms[2])
        if ptype == 2:
            out.update(X=terms[6], Y=terms[7])
        elif ptype in (3, 4):
            out.update(X=terms[4], Y=terms[5], SL=terms[6], HL=terms[7])
    return out


def read_instprm(path: str | os.PathLike) -> dict:
    """GSAS-II ``.instprm``: ``key:value`` lines (``#`` comments); adds ``wavelength`` (from Lam or Lam1)
    and ``zero`` (from Zero) when present.

    Raises
    ------
    PatternFileError
        A line that is neither a comment nor ``key:value``.
    """
    src = str(path)
    out: dict = {}
    for i, ln in enumerate(read_lines(path), start=1):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        if ":" not in s:
            raise PatternFileError(f"{s!r} is not a 'key:value' line", src, i)
        k, v = s.split(":", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            out[k.strip()] = v.strip()
    lam = out.get("Lam", out.get("Lam1"))
    if isinstance(lam, float):
        out["wavelength"] = lam
    if isinstance(out.get("Zero"), float):
        out["zero"] = out["Zero"]
    if "wavelength" not in out:
        raise PatternFileError("no Lam or Lam1 (wavelength) entry: not a constant-wavelength parameter file",
                               src, None, "Lam")
    return out
