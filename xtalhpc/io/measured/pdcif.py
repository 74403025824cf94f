"""Powder CIF (pdCIF) measured profiles, and the EasyDiffraction/cryspy experiment CIF variant.

Read
----
* The first data block holding a loop with a measured or processed intensity column:
  ``_pd_meas_counts_total``, ``_pd_meas_intensity_total``, ``_pd_proc_intensity_total``,
  ``_pd_proc_intensity_net`` (in that order of preference), or EasyDiffraction's
  ``_pd_meas_intensity``.
* 2theta from a column (``_pd_meas_2theta_scan``, ``_pd_meas_angle_2theta``,
  ``_pd_proc_2theta_corrected``, EasyDiffraction's ``_pd_meas_2theta``) or, without one, from
  ``_pd_meas_2theta_range_min/max/inc`` (``_pd_proc_2theta_range_*`` for processed intensities).
* Uncertainty from the value's s.u. in parentheses (``119(17)``), else an ``*_su`` column
  (EasyDiffraction: ``_pd_meas_intensity_sigma``), else sqrt(counts).
* Points whose ``_pd_proc_ls_weight`` is 0, or whose intensity is ``.``/``?``, are masked.
* Wavelength from ``_diffrn_radiation_wavelength`` (the first, for a doublet loop), else
  ``_setup_wavelength`` (EasyDiffraction), looked up in the data block first, then any block.

The tokenizer is CIF 1.1 (quoted strings, ``;`` text fields, ``#`` comments) and keeps
line numbers, so every error names the line of the bad value.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from .base import MeasuredPattern, PatternFileError, finish, read_lines

SUFFIXES: tuple[str, ...] = (".cif", ".pdcif", ".rcif")

_INTENSITY = ("_pd_meas_counts_total", "_pd_meas_intensity_total", "_pd_proc_intensity_total",
              "_pd_proc_intensity_net", "_pd_meas_intensity")
_SU = {"_pd_meas_counts_total": ("_pd_meas_counts_total_su",),
       "_pd_meas_intensity_total": ("_pd_meas_intensity_total_su",),
       "_pd_proc_intensity_total": ("_pd_proc_intensity_total_su",),
       "_pd_proc_intensity_net": ("_pd_proc_intensity_net_su",),
       "_pd_meas_intensity": ("_pd_meas_intensity_sigma", "_pd_meas_intensity_su")}
_TWO_THETA = ("_pd_meas_2theta_scan", "_pd_meas_angle_2theta", "_pd_proc_2theta_corrected", "_pd_meas_2theta")
_WAVELENGTH = ("_diffrn_radiation_wavelength", "_diffrn_radiation.wavelength", "_setup_wavelength")
_NUM_SU = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((\d+)\))?$")


def _tokens(lines: list[str], src: str):
    """(line number, token, quoted) for every CIF token."""
    i = 0
    n = len(lines)
    while i < n:
        ln = lines[i]
        lineno = i + 1
        if ln.startswith(";"):
            buf = [ln[1:]]
            i += 1
            while i < n and not lines[i].startswith(";"):
                buf.append(lines[i])
                i += 1
            if i == n:
                raise PatternFileError("text field opened with ';' is never closed", src, lineno)
            yield lineno, "\n".join(buf), True
            i += 1
            continue
        k = 0
        L = len(ln)
        while k < L:
            c = ln[k]
            if c.isspace():
                k += 1
            elif c == "#":
                break
            elif c in "'\"":
                j = k + 1
                while j < L and not (ln[j] == c and (j + 1 == L or ln[j + 1].isspace())):
                    j += 1
                if j >= L:
                    raise PatternFileError(f"quoted string opened with {c} is never closed", src, lineno)
                yield lineno, ln[k + 1:j], True
                k = j + 1
            else:
                j = k
                while j < L and not ln[j].isspace():
                    j += 1
                yield lineno, ln[k:j], False
                k = j
        i += 1


def _blocks(lines: list[str], src: str) -> list[dict]:
    """Data blocks: {"name", "line", "items": {tag: (line, value)}, "loops": [(tags, rows of (line, value))]}."""
    blocks: list[dict] = []
    cur = None
    toks = list(_tokens(lines, src))
    i = 0
    while i < len(toks):
        lineno, t, quoted = toks[i]
        low = t.lower()
        if not quoted and low.startswith("data_"):
            cur = {"name": t[5:], "line": lineno, "items": {}, "loops": []}
            blocks.append(cur)
            i += 1
        elif not quoted and low == "loop_":
            if cur is None:
                raise PatternFileError("loop_ before any data_ block", src, lineno)
            i += 1
            tags = []
            while i < len(toks) and not toks[i][2] and toks[i][1].startswith("_"):
                tags.append(toks[i][1].lower())
                i += 1
            if not tags:
                raise PatternFileError("loop_ without tags", src, lineno)
            vals = []
            while i < len(toks):
                lt, tt, q = toks[i]
                if not q and (tt.startswith("_") or tt.lower() in ("loop_", "stop_") or tt.lower().startswith(
                        ("data_", "save_", "global_"))):
                    break
                vals.append((lt, tt))
                i += 1
            if len(vals) % len(tags):
                last = vals[-1][0] if vals else lineno
                raise PatternFileError(f"loop of {len(tags)} tags ({', '.join(tags[:4])}{', ...' if len(tags) > 4 else ''})"
                                       f" holds {len(vals)} values, not a multiple of {len(tags)}: a row is short or "
                                       "has an extra value", src, last, tags[0])
            cur["loops"].append((tags, [vals[r:r + len(tags)] for r in range(0, len(vals), len(tags))]))
        elif not quoted and t.startswith("_"):
            if cur is None:
                raise PatternFileError(f"tag {t} before any data_ block", src, lineno)
            if i + 1 >= len(toks):
                raise PatternFileError(f"tag {t} has no value", src, lineno, t)
            cur["items"][low] = (toks[i + 1][0], toks[i + 1][1])
            i += 2
        elif not quoted and low.startswith(("save_", "global_", "stop_")):
            i += 1
        else:
            raise PatternFileError(f"value {t[:40]!r} without a tag", src, lineno)
    return blocks


def num_su(tok: str) -> tuple[float, float]:
    """``119(17)`` -> (119, 17); ``4.76(3)`` -> (4.76, 0.03); ``.``/``?`` -> (nan, nan).

    Raises ValueError for anything else.
    """
    if tok in (".", "?"):
        return math.nan, math.nan
    m = _NUM_SU.match(tok)
    if not m:
        raise ValueError(tok)
    val, su = m.group(1), m.group(2)
    if su is None:
        return float(val), math.nan
    mant = val.lower().split("e")[0]
    dec = len(mant.split(".")[1]) if "." in mant else 0
    exp = int(val.lower().split("e")[1]) if "e" in val.lower() else 0
    return float(val), int(su) * 10.0 ** (exp - dec)


def _column(rows, k: int, tag: str, src: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    v = np.empty(len(rows))
    s = np.empty(len(rows))
    at = []
    for r, row in enumerate(rows):
        lineno, tok = row[k]
        try:
            v[r], s[r] = num_su(tok)
        except ValueError:
            raise PatternFileError(f"{tok!r} is not a number (with optional s.u. in parentheses)", src, lineno,
                                   tag) from None
        at.append(lineno)
    return v, s, at


def _scalar(blocks: list[dict], first: dict, tags, src: str) -> tuple[float, int] | None:
    for blk in [first] + [b for b in blocks if b is not first]:
        for tag in tags:
            if tag in blk["items"]:
                lineno, tok = blk["items"][tag]
                try:
                    return num_su(tok)[0], lineno
                except ValueError:
                    raise PatternFileError(f"{tok!r} is not a number", src, lineno, tag) from None
            for ltags, rows in blk["loops"]:
                if tag in ltags and rows:
                    lineno, tok = rows[0][ltags.index(tag)]
                    try:
                        return num_su(tok)[0], lineno
                    except ValueError:
                        raise PatternFileError(f"{tok!r} is not a number", src, lineno, tag) from None
    return None


def read_pdcif(path: str | os.PathLike, *, wavelength: float | None = None) -> MeasuredPattern:
    """Read the measured (or processed) profile of a pdCIF.

    Parameters
    ----------
    path : str or PathLike
    wavelength : float, optional
        Angstrom; overrides ``_diffrn_radiation_wavelength``.

    Raises
    ------
    PatternFileError
        CIF syntax errors, no intensity loop, a non-numeric value, no 2theta column or
        range, a range that does not match the point count (each naming the line).
    """
    src = str(path)
    lines = read_lines(path)
    blocks = _blocks(lines, src)
    if not blocks:
        raise PatternFileError("no data_ block: not a CIF", src)
    found = None
    for blk in blocks:
        for tags, rows in blk["loops"]:
            col = next((t for t in _INTENSITY if t in tags), None)
            if col is not None:
                found = (blk, tags, rows, col)
                break
        if found:
            break
    if found is None:
        raise PatternFileError("no powder profile loop (one of " + ", ".join(_INTENSITY) + "): a structure-only or "
                               "time-of-flight CIF?", src, None, "_pd_meas_intensity_total")
    blk, tags, rows, col = found
    if not rows:
        raise PatternFileError(f"the {col} loop has no rows", src, blk["line"], col)
    y, s, at = _column(rows, tags.index(col), col, src)
    if np.isnan(s).all():
        su = next((t for t in _SU[col] if t in tags), None)
        if su is not None:
            s = _column(rows, tags.index(su), su, src)[0]
        elif col == "_pd_meas_counts_total":
            s = np.full(len(y), np.nan)  # counting statistics below
    mask = np.isfinite(y)
    if "_pd_proc_ls_weight" in tags:
        w = _column(rows, tags.index("_pd_proc_ls_weight"), "_pd_proc_ls_weight", src)[0]
        mask &= np.nan_to_num(w) > 0
    if np.isnan(s).all():
        s = np.sqrt(np.clip(np.nan_to_num(y), 1.0, None))
    s = np.where(np.isnan(s) & mask, np.sqrt(np.clip(np.nan_to_num(y), 1.0, None)), s)
    s = np.nan_to_num(s)
    tcol = next((t for t in _TWO_THETA if t in tags), None)
    if tcol is not None:
        tt, _, _ = _column(rows, tags.index(tcol), tcol, src)
        if np.isnan(tt).any():
            r = int(np.flatnonzero(np.isnan(tt))[0])
            raise PatternFileError("2theta is missing ('.' or '?')", src, at[r], tcol)
    else:
        kind = "proc" if col.startswith("_pd_proc") else "meas"
        rng = {}
        for part in ("min", "max", "inc"):
            tag = f"_pd_{kind}_2theta_range_{part}"
            got = _scalar(blocks, blk, (tag,), src)
            if got is None:
                raise PatternFileError(f"no 2theta column ({', '.join(_TWO_THETA)}) and no {tag}", src, blk["line"],
                                       tag)
            rng[part] = got
        lo, hi, inc = (rng[p][0] for p in ("min", "max", "inc"))
        if not inc > 0:
            raise PatternFileError(f"2theta step {inc} must be > 0", src, rng["inc"][1], f"_pd_{kind}_2theta_range_inc")
        tt = lo + inc * np.arange(len(y))
        if abs(tt[-1] - hi) > 0.5 * inc:
            raise PatternFileError(f"{len(y)} points from {lo} in steps of {inc} end at {tt[-1]:g}, not at the stated "
                                   f"maximum {hi}", src, rng["max"][1], f"_pd_{kind}_2theta_range_max")
    if wavelength is not None:
        wl, wsrc = wavelength, "caller"
    else:
        got = _scalar(blocks, blk, _WAVELENGTH, src)
        wl, wsrc = (got[0], "file") if got is not None and math.isfinite(got[0]) else (None, "")
    return finish(src, "pdcif", tt, y, s, wavelength=wl, wavelength_source=wsrc, mask=mask, lines=at,
                  title=blk["name"], meta={"intensity": col, "two_theta": tcol or "range"})


def read_easydiffraction_instrument(path: str | os.PathLike) -> dict:
    """Wavelength, 2theta offset and resolution of an EasyDiffraction (cryspy) experiment CIF,
    converted to GSAS units.

    cryspy/FullProf: Gaussian FWHM^2 = u tan^2 + v tan + w (deg^2), Lorentzian FWHM = x tan + y / cos
    (deg). GSAS: sigma^2 = U tan^2 + V tan + W (centideg^2), gamma = X / cos + Y tan (centideg).
    So U = u * 1e4 / (8 ln 2) (same for V, W), X = 100 y, Y = 100 x. The offset is returned as
    ``zero`` (cryspy shifts peaks to 2theta_hkl + offset, the sign xtalhpc uses).
    """
    src = str(path)
    blocks = _blocks(read_lines(path), src)
    items: dict[str, float] = {}
    for blk in blocks:
        for tag, (lineno, tok) in blk["items"].items():
            if tag.startswith(("_setup_", "_pd_instr_resolution_")):
                try:
                    items[tag] = num_su(tok)[0]
                except ValueError:
                    raise PatternFileError(f"{tok!r} is not a number", src, lineno, tag) from None
    r = "_pd_instr_resolution_"
    missing = [t for t in ("_setup_wavelength", r + "u", r + "v", r + "w") if t not in items]
    if missing:
        raise PatternFileError(f"missing {', '.join(missing)}", src, None, missing[0])
    k = 1e4 / (8 * math.log(2))
    return {"wavelength": items["_setup_wavelength"], "zero": items.get("_setup_offset_2theta", 0.0),
            "U": items[r + "u"] * k, "V": items[r + "v"] * k, "W": items[r + "w"] * k,
            "X": 100 * items.get(r + "y", 0.0), "Y": 100 * items.get(r + "x", 0.0)}
