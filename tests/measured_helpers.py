"""A linear nuisance fit for comparing simulated patterns with MEASURED ones.

Used by ``tests/test_measured.py``. Nothing here refines a structure or a peak shape:
the simulated pattern is fixed, and only a scale, a Chebyshev background and (optionally)
a zero shift found by a 1-D scan are fitted, so Rwp measures the simulator plus the
instrument preset against real data.

The file readers (GSAS raw, pdCIF, column text, GSAS/GSAS-II instrument parameter files,
EasyDiffraction experiment CIFs) live in :mod:`xtalhpc.io.measured`; they are re-exported
here for the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xtalhpc.io.measured import (MeasuredPattern, read_easydiffraction_instrument, read_gsas_prm,  # noqa: F401
                                 read_gsas_raw, read_instprm, read_pdcif, read_xye)


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


def fit_linear(meas: MeasuredPattern, sim: np.ndarray, n_bkg: int) -> Fit:
    """Weighted least squares of y ~ scale * sim + Chebyshev(n_bkg); Rwp = sqrt(sum w r^2 / sum w y^2)."""
    m = meas.mask
    w = 1.0 / meas.sigma[m] ** 2
    sw = np.sqrt(w)
    bas = chebyshev_basis(meas.two_theta, n_bkg)
    a = np.column_stack([sim, bas])
    coef, *_ = np.linalg.lstsq(a[m] * sw[:, None], meas.intensity[m] * sw, rcond=None)
    yc = a @ coef
    r = meas.intensity[m] - yc[m]
    rwp = math.sqrt(np.sum(w * r * r) / np.sum(w * meas.intensity[m] ** 2))
    rexp = math.sqrt((m.sum() - a.shape[1]) / np.sum(w * meas.intensity[m] ** 2))
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


def peak_offsets(meas: MeasuredPattern, fit: Fit, refl_tt: np.ndarray, refl_int: np.ndarray, inst,
                 n_peaks: int, isolation: float = 1.5, min_snr: float = 0.0) -> list[tuple[float, float, float]]:
    """For the ``n_peaks`` strongest isolated simulated peaks: (2theta_sim, 2theta_meas, FWHM).

    A peak is isolated when no other reflection carrying >= 10% of its intensity lies within
    ``isolation`` FWHM, and it is used only when its fitted height is at least ``min_snr`` times
    the measured sigma there (a weaker peak's maximum is placed by the noise, not by the peak).
    The measured position is the highest background-subtracted point within +-1 FWHM of the
    simulated one, refined by a parabola through it and its neighbours.
    """
    bkg = chebyshev_basis(meas.two_theta, len(fit.background)) @ fit.background
    ynet = meas.intensity - bkg
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
