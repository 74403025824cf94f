"""Readers and a linear nuisance fit for comparing simulated patterns with MEASURED ones.

Used by ``tests/test_measured.py``. Nothing here refines a structure or a peak shape:
the simulated pattern is fixed, and only a scale, a Chebyshev background and (optionally)
a zero shift found by a 1-D scan are fitted, so Rwp measures the simulator plus the
instrument preset against real data.

Formats read (written from the GSAS manual's description, checked against GSAS-II's reader):

* GSAS raw bank files, constant-step (``CONST``) bins: ``STD`` (10 fields of I2,F6.0 per
  80-column record: counter count n and intensity y, variance y/n), ``ESD`` (5 pairs of
  F8.0 intensity, esd), ``FXYE`` (free-format 2theta in centidegrees, y, esd).
* pdCIF (``_pd_meas_intensity_total`` loop with s.u. in parentheses, 2theta from
  ``_pd_meas_2theta_range_*``; points of zero ``_pd_proc_ls_weight`` are excluded).
* GSAS instrument parameter files (``.prm``/``.inst``: ICONS wavelength/zero and the first
  PRCF profile table) and GSAS-II ``.instprm`` (key:value).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: sigma floor for a point whose stated esd is zero but intensity is not (counts ~ 1).
MIN_SIGMA = 1.0


@dataclass
class Measured:
    """A measured CW pattern: 2theta (deg), intensity and its standard uncertainty.

    ``mask`` is False for points to leave out (zero weight in the file, zero esd).
    """

    two_theta: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    title: str = ""
    source: str = ""

    @property
    def step(self) -> float:
        return float(np.median(np.diff(self.two_theta)))

    @property
    def uniform(self) -> bool:
        d = np.diff(self.two_theta)
        return bool(np.allclose(d, d[0], rtol=0, atol=1e-6))


# --------------------------------------------------------------------------- GSAS raw

def _records(path: Path) -> list[str]:
    # Latin-1 never fails: some titles hold binary junk from old VAX/PC writers.
    text = path.read_bytes().decode("latin-1")
    return [ln.rstrip("\r\n\x1a") for ln in text.split("\n")]


def read_gsas_raw(path: str | Path, bank: int = 1) -> Measured:
    """Read one CONST bank of a GSAS raw file (STD, ESD or FXYE); 2theta in degrees."""
    path = Path(path)
    lines = _records(path)
    title = lines[0].strip() if lines else ""
    for i, ln in enumerate(lines):
        if ln.startswith("BANK"):
            tok = ln.split()
            if int(tok[1]) == bank:
                break
    else:
        raise ValueError(f"{path}: no BANK {bank}")
    nchan = int(tok[2])
    bintyp = tok[4].upper()
    if bintyp != "CONST":
        raise ValueError(f"{path}: only CONST bins are read here, got {bintyp}")
    start, step = float(tok[5]) / 100.0, float(tok[6]) / 100.0  # centidegrees -> degrees
    fmt = tok[9].upper() if len(tok) > 9 else "STD"
    body = []
    for ln in lines[i + 1:]:
        if ln.startswith("BANK"):
            break
        body.append(ln)
    y: list[float] = []
    s: list[float] = []
    x: list[float] = []
    if fmt == "STD":
        for ln in body:
            ln = ln.ljust(80)
            for k in range(0, 80, 8):
                fld = ln[k:k + 8]
                if not fld.strip():
                    continue
                n = int(fld[:2]) if fld[:2].strip() else 1
                yi = float(fld[2:8]) if fld[2:8].strip() else 0.0
                y.append(max(yi, 0.0))
                s.append(math.sqrt(yi / max(n, 1)) if yi > 0 else 0.0)
        y, s = y[:nchan], s[:nchan]
    elif fmt == "ESD":
        vals: list[float] = []
        for ln in body:
            ln = ln.ljust(80)
            vals.extend(float(ln[k:k + 8]) for k in range(0, 80, 8) if ln[k:k + 8].strip())
        vals = vals[:2 * nchan]
        y, s = vals[0::2], vals[1::2]
    elif fmt in ("FXYE", "FXY"):
        for ln in body:
            t = ln.split()
            if len(t) >= 2:
                x.append(float(t[0]) / 100.0)
                y.append(float(t[1]))
                s.append(float(t[2]) if len(t) > 2 else math.sqrt(max(float(t[1]), 0.0)))
        x, y, s = x[:nchan], y[:nchan], s[:nchan]
    else:
        raise ValueError(f"{path}: data type {fmt} not read here")
    if len(y) != nchan:
        raise ValueError(f"{path}: header says {nchan} points, read {len(y)}")
    yv = np.asarray(y, dtype=float)
    sv = np.asarray(s, dtype=float)
    tt = np.asarray(x, dtype=float) if x else start + step * np.arange(nchan)
    mask = sv > 0
    return Measured(tt, yv, np.where(mask, sv, MIN_SIGMA), mask, title, str(path))


# --------------------------------------------------------------------------- pdCIF

_NUM_SU = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((\d+)\))?$")


def _num_su(tok: str) -> tuple[float, float]:
    """``119(17)`` -> (119, 17); ``4.76(3)`` -> (4.76, 0.03); ``.``/``?`` -> (nan, nan)."""
    m = _NUM_SU.match(tok)
    if not m:
        return math.nan, math.nan
    val, su = m.group(1), m.group(2)
    if su is None:
        return float(val), math.nan
    dec = len(val.split(".")[1]) if "." in val and "e" not in val.lower() else 0
    return float(val), int(su) * 10.0 ** (-dec)


#: Tag spellings used by EasyDiffraction/cryspy experiment files, mapped to the pdCIF names used here.
_PDCIF_ALIASES = {"_pd_meas_intensity": "_pd_meas_intensity_total",
                  "_pd_meas_intensity_sigma": "_pd_meas_intensity_total_su"}


def read_pdcif(path: str | Path) -> Measured:
    """The measured profile of a pdCIF with a constant 2theta step (``_pd_meas_2theta_range_*``)."""
    path = Path(path)
    lines = _records(path)
    rng = {}
    for ln in lines:
        t = ln.split()
        if len(t) >= 2 and t[0].startswith("_pd_meas_2theta_range_"):
            rng[t[0].rsplit("_", 1)[1]] = float(t[1])
    cols: list[str] = []
    rows: list[list[str]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "loop_":
            j = i + 1
            names = []
            while j < len(lines) and lines[j].strip().startswith("_"):
                names.append(lines[j].split()[0])
                j += 1
            names = [_PDCIF_ALIASES.get(nm, nm) for nm in names]
            if "_pd_meas_intensity_total" in names:
                cols = names
                while j < len(lines):
                    t = lines[j].split()
                    if not t or t[0].startswith(("_", "#")) or t[0] in ("loop_",) or t[0].startswith("data_"):
                        break
                    rows.append(t)
                    j += 1
                break
            i = j
        else:
            i += 1
    if not cols:
        raise ValueError(f"{path}: no _pd_meas_intensity_total loop")
    if "_pd_meas_2theta" in cols:  # explicit 2theta, intensity, sigma columns (EasyDiffraction style)
        tt = np.array([float(r[cols.index("_pd_meas_2theta")]) for r in rows])
        y = np.array([float(r[cols.index("_pd_meas_intensity_total")]) for r in rows])
        s = np.array([float(r[cols.index("_pd_meas_intensity_total_su")]) for r in rows])
        mask = s > 0
        return Measured(tt, y, np.where(mask, s, MIN_SIGMA), mask, "", str(path))
    iy = cols.index("_pd_meas_intensity_total")
    iw = cols.index("_pd_proc_ls_weight") if "_pd_proc_ls_weight" in cols else None
    y = np.array([_num_su(r[iy])[0] for r in rows])
    s = np.array([_num_su(r[iy])[1] for r in rows])
    if np.isnan(s).all():
        s = np.sqrt(np.clip(y, 0, None))
    mask = np.isfinite(y) & np.isfinite(s) & (s > 0)
    if iw is not None:
        w = np.array([_num_su(r[iw])[0] for r in rows])
        mask &= np.nan_to_num(w) > 0
    n = len(y)
    tt = rng["min"] + rng["inc"] * np.arange(n)
    if abs(tt[-1] - rng["max"]) > 0.5 * rng["inc"]:
        raise ValueError(f"{path}: {n} points do not span {rng}")
    return Measured(tt, np.nan_to_num(y), np.where(mask, np.nan_to_num(s, nan=MIN_SIGMA), MIN_SIGMA), mask,
                    "", str(path))


def read_xye_measured(path: str | Path) -> Measured:
    """Plain 2theta, y, esd columns (``#`` comments)."""
    d = np.loadtxt(path, comments=("#", "!"), ndmin=2)
    s = d[:, 2] if d.shape[1] > 2 else np.sqrt(np.clip(d[:, 1], 0, None))
    mask = s > 0
    return Measured(d[:, 0], d[:, 1], np.where(mask, s, MIN_SIGMA), mask, "", str(path))


# --------------------------------------------------------------------------- instrument files

def read_gsas_prm(path: str | Path, bank: int = 1, table: int = 1) -> dict:
    """Wavelength, zero (deg) and profile table ``table`` (PRCF1, PRCF2, ...) of a GSAS ``.prm``/``.inst``.

    GSAS CW profile types: 1 = U V W As F1 F2 (Gaussian only); 2 = U V W As F1 F2 LX LY ...;
    3 and 4 = U V W P LX LY S/L H/L ... . ICONS holds lambda1, lambda2, zero (centidegrees).
    """
    rec: dict[str, list[str]] = {}
    for ln in _records(Path(path)):
        if ln.startswith("INS"):
            key = ln[:12].strip()
            rec[re.sub(r"\s+", " ", key)] = ln[12:].split()
    pre = f"INS {bank}"
    icons = rec.get(f"{pre} ICONS") or rec.get(f"{pre}ICONS")
    ptype = int(rec[f"{pre}PRCF{table}"][0])
    nterm = int(rec[f"{pre}PRCF{table}"][1])
    vals: list[float] = []
    k = 1
    while len(vals) < nterm and f"{pre}PRCF{table}{k}" in rec:
        vals.extend(float(v) for v in rec[f"{pre}PRCF{table}{k}"])
        k += 1
    vals += [0.0] * max(0, 8 - len(vals))
    out = {"wavelength": float(icons[0]), "zero": float(icons[2]) / 100.0, "profile_type": ptype,
           "U": vals[0], "V": vals[1], "W": vals[2], "X": 0.0, "Y": 0.0}
    if ptype == 2:
        out.update(X=vals[6], Y=vals[7])
    elif ptype in (3, 4):
        out.update(X=vals[4], Y=vals[5], SL=vals[6], HL=vals[7])
    return out


def read_easydiffraction_instrument(path: str | Path) -> dict:
    """Wavelength, 2theta offset and resolution of an EasyDiffraction (cryspy) experiment CIF,
    converted to GSAS units.

    cryspy/FullProf: Gaussian FWHM^2 = u tan^2 + v tan + w (deg^2), Lorentzian FWHM = x tan + y / cos
    (deg). GSAS: sigma^2 = U tan^2 + V tan + W (centideg^2), gamma = X / cos + Y tan (centideg).
    So U = u * 1e4 / (8 ln 2) (same for V, W), X = 100 y, Y = 100 x. The offset is returned as
    ``zero`` (cryspy shifts peaks to 2theta_hkl + offset, the sign xtalhpc uses).
    """
    tags: dict[str, float] = {}
    for ln in _records(Path(path)):
        t = ln.split()
        if len(t) == 2 and t[0].startswith(("_setup_", "_pd_instr_resolution_")):
            tags[t[0]] = float(t[1])
    k = 1e4 / (8 * math.log(2))
    r = "_pd_instr_resolution_"
    return {"wavelength": tags["_setup_wavelength"], "zero": tags.get("_setup_offset_2theta", 0.0),
            "U": tags[r + "u"] * k, "V": tags[r + "v"] * k, "W": tags[r + "w"] * k,
            "X": 100 * tags.get(r + "y", 0.0), "Y": 100 * tags.get(r + "x", 0.0)}


def read_instprm(path: str | Path) -> dict:
    """GSAS-II ``.instprm``: ``key:value`` lines (``#`` comments)."""
    out: dict = {}
    for ln in Path(path).read_text().splitlines():
        if ln.startswith("#") or ":" not in ln:
            continue
        k, v = ln.split(":", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            out[k.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------- fitting

def chebyshev_basis(x: np.ndarray, n: int) -> np.ndarray:
    """Chebyshev polynomials T_0..T_{n-1} of x mapped onto [-1, 1], shape (len(x), n)."""
    t = 2 * (x - x.min()) / (x.max() - x.min()) - 1
    return np.polynomial.chebyshev.chebvander(t, n - 1)


@dataclass
class Fit:
    scale: float
    background: np.ndarray
    ycalc: np.ndarray
    rwp: float
    rexp: float
    zero: float = 0.0


def fit_linear(meas: Measured, sim: np.ndarray, n_bkg: int) -> Fit:
    """Weighted least squares of y ~ scale * sim + Chebyshev(n_bkg); Rwp = sqrt(sum w r^2 / sum w y^2)."""
    m = meas.mask
    w = 1.0 / meas.sigma[m] ** 2
    sw = np.sqrt(w)
    bas = chebyshev_basis(meas.two_theta, n_bkg)
    a = np.column_stack([sim, bas])
    coef, *_ = np.linalg.lstsq(a[m] * sw[:, None], meas.y[m] * sw, rcond=None)
    yc = a @ coef
    r = meas.y[m] - yc[m]
    rwp = math.sqrt(np.sum(w * r * r) / np.sum(w * meas.y[m] ** 2))
    rexp = math.sqrt((m.sum() - a.shape[1]) / np.sum(w * meas.y[m] ** 2))
    return Fit(float(coef[0]), coef[1:], yc, rwp, rexp)


def fwhm_deg(inst, two_theta: np.ndarray) -> np.ndarray:
    """Pseudo-Voigt FWHM (deg) from the instrument's GSAS terms (Thompson-Cox-Hastings combination)."""
    th = np.radians(np.asarray(two_theta) / 2)
    t = np.tan(th)
    sig2 = np.clip(inst.U * t * t + inst.V * t + inst.W, 1e-9, None)
    g = math.sqrt(8 * math.log(2)) * np.sqrt(sig2) / 100.0
    lo = (inst.X / np.cos(th) + inst.Y * t) / 100.0
    return (g ** 5 + 2.69269 * g ** 4 * lo + 2.42843 * g ** 3 * lo ** 2 + 4.47163 * g ** 2 * lo ** 3
            + 0.07842 * g * lo ** 4 + lo ** 5) ** 0.2


def peak_offsets(meas: Measured, fit: Fit, refl_tt: np.ndarray, refl_int: np.ndarray, inst,
                 n_peaks: int, isolation: float = 1.5, min_snr: float = 0.0) -> list[tuple[float, float, float]]:
    """For the ``n_peaks`` strongest isolated simulated peaks: (2theta_sim, 2theta_meas, FWHM).

    A peak is isolated when no other reflection carrying >= 10% of its intensity lies within
    ``isolation`` FWHM, and it is used only when its fitted height is at least ``min_snr`` times
    the measured sigma there (a weaker peak's maximum is placed by the noise, not by the peak).
    The measured position is the highest background-subtracted point within +-1 FWHM of the
    simulated one, refined by a parabola through it and its neighbours.
    """
    bkg = chebyshev_basis(meas.two_theta, len(fit.background)) @ fit.background
    ynet = meas.y - bkg
    x = meas.two_theta
    inside = (refl_tt > x[0] + 2) & (refl_tt < x[-1] - 2)
    tt, ii = refl_tt[inside], refl_int[inside]
    fw = fwhm_deg(inst, tt)
    iso = np.array([not np.any((np.abs(tt - tt[j]) < isolation * fw[j]) & (ii >= 0.1 * ii[j])
                               & (np.arange(len(tt)) != j)) for j in range(len(tt))], dtype=bool)
    at = np.clip(np.searchsorted(x, tt), 0, len(x) - 1)
    snr = (fit.ycalc[at] - bkg[at]) / meas.sigma[at]
    order = [j for j in np.argsort(-ii) if iso[j] and snr[j] >= min_snr][:n_peaks]
    out = []
    for j in order:
        sel = np.flatnonzero((np.abs(x - tt[j]) <= fw[j]) & meas.mask)
        if len(sel) < 3:
            continue
        k = sel[np.argmax(ynet[sel])]
        if 0 < k < len(x) - 1:
            y0, y1, y2 = ynet[k - 1], ynet[k], ynet[k + 1]
            den = y0 - 2 * y1 + y2
            h = 0.5 * (y0 - y2) / den if den < 0 else 0.0
            h = float(np.clip(h, -1, 1))
            xm = x[k] + h * 0.5 * (x[k + 1] - x[k - 1])
        else:
            xm = x[k]
        out.append((float(tt[j]), float(xm), float(fw[j])))
    return out
