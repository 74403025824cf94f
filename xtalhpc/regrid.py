"""Measured patterns onto a model's 2theta grid, and background estimation (NumPy only).

Another wavelength
------------------
A point measured at 2theta_m with wavelength lambda_m has d = lambda_m / (2 sin theta_m);
on a model trained at lambda_0 the same reflection sits at 2theta_0 = 2 asin(lambda_0 / 2d).
:func:`to_grid` maps every model grid cell back to the measured variable,
sin theta_m = (lambda_m / lambda_0) sin theta_0, and takes the mean of the measured
intensity over that interval (the exact cell average of the piecewise-linear interpolant
of the measured points). When the measurement is coarser than the grid this equals linear
interpolation to second order; when it is finer (synchrotron steps of 0.001 deg onto a
0.05 deg grid) it rebins instead of sampling the noise. The mean is symmetric about the
cell centre, so peak positions do not move.

No Jacobian is applied, on purpose. Carried to the model's variable, an intensity per
degree picks up J = d(2theta_m)/d(2theta_0) = (lambda_m / lambda_0) cos theta_0 / cos theta_m,
and the model's instrument would see each reflection with its own Lorentz factor
L = 1 / (sin^2 theta cos theta): L(theta_0) / L(theta_m) = (lambda_m / lambda_0)^2
cos theta_m / cos theta_0 (sin theta_m / sin theta_0 = lambda_m / lambda_0). The product is
(lambda_m / lambda_0)^3, a constant: the two angle dependences cancel exactly, so the
measured values carried to the new positions already have the relative integrated
intensities the model's instrument would record (peak widths stay those of the measuring
instrument; the constant goes in the normalisation). For X-rays the polarisation factor
(1 + cos^2 2theta) / 2 does not cancel; it is slowly varying and not corrected here.

Grid points the measurement does not reach are flagged in ``missing``: outside the
mapped range, inside a gap of the measurement (masked or absent points), and where
(lambda_m / lambda_0) sin theta_0 > 1 (the measuring wavelength cannot reach that d).

Background
----------
:func:`estimate_background` fits a low-order Chebyshev polynomial and iteratively clips
the points above it (asymmetric clipping, in the spirit of the modified-polyfit baseline
of Lieber & Mahadevan-Jansen 2003), so Bragg peaks drop out of the fit and the slow
background stays. Measured on the shared neutron patterns against the backgrounds their
own refinements report: docs/measured.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: A gap between consecutive usable measured points wider than this many median steps is a
#: hole: grid points inside it are flagged missing instead of bridged by interpolation.
HOLE_STEPS = 2.5


@dataclass
class Regridded:
    """A measured pattern on a model grid.

    Attributes
    ----------
    two_theta : ndarray, shape (n,)
        The model grid (degrees).
    intensity : ndarray, shape (n,)
        Mean measured intensity over each grid cell; ``fill`` where ``missing``.
    sigma : ndarray or None, shape (n,)
        Its standard uncertainty (None if the input had none); ``fill`` where ``missing``.
    missing : ndarray of bool, shape (n,)
        True for grid points the measurement does not cover.
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray | None
    missing: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return ~self.missing


def map_two_theta(two_theta, wavelength_from: float, wavelength_to: float) -> np.ndarray:
    """2theta (deg) at ``wavelength_to`` of the d-spacing seen at ``two_theta`` with ``wavelength_from``.

    d = lambda_from / (2 sin theta) -> 2theta' = 2 asin(lambda_to / 2d). NaN where
    lambda_to / 2d > 1 (that d is beyond reach of the new wavelength).
    """
    r = np.sin(np.radians(np.asarray(two_theta, dtype=float)) / 2) * (wavelength_to / wavelength_from)
    with np.errstate(invalid="ignore"):
        return np.where(r <= 1.0, 2 * np.degrees(np.arcsin(np.clip(r, -1.0, 1.0))), np.nan)


def _edges(g: np.ndarray) -> np.ndarray:
    mid = 0.5 * (g[1:] + g[:-1])
    return np.concatenate([[g[0] - (mid[0] - g[0])], mid, [g[-1] + (g[-1] - mid[-1])]])


def _cumulative(x: np.ndarray, y: np.ndarray):
    """C(t): integral from x[0] to t of the piecewise-linear interpolant of (x, y), t inside [x0, xN]."""
    h = np.diff(x)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * h)])
    slope = np.diff(y) / h

    def C(t: np.ndarray) -> np.ndarray:
        k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, len(x) - 2)
        u = t - x[k]
        return cum[k] + y[k] * u + 0.5 * slope[k] * u * u

    return C


def to_grid(two_theta, intensity, wavelength: float | None, grid, grid_wavelength: float, *, sigma=None, mask=None,
            zero: float = 0.0, fill: float = 0.0, source: str | None = None) -> Regridded:
    """Carry a measured pattern onto a model's 2theta grid through d-spacing.

    Parameters
    ----------
    two_theta, intensity : array_like, shape (m,)
        The measurement (degrees, increasing; counts or any intensity).
    wavelength : float
        lambda_m of the measurement (angstrom).
    grid : array_like, shape (n,)
        The model's 2theta grid (degrees, increasing).
    grid_wavelength : float
        lambda_0 of the model (angstrom).
    sigma : array_like, optional
        Standard uncertainties; propagated as the cell mean of the variance divided by the
        number of measured points per cell (independent points; approximate at the edges).
    mask : array_like of bool, optional
        True for measured points to use (:attr:`MeasuredPattern.mask`).
    zero : float
        Zero shift of the measurement (deg): the true angle is ``two_theta - zero``.
    fill : float
        Value put in ``intensity`` (and ``sigma``) at missing grid points.
    source : str, optional
        Named in errors.

    Returns
    -------
    Regridded

    Raises
    ------
    InputError
        No wavelength, fewer than 2 usable points, 2theta not increasing, a bad grid.
    """
    if wavelength is None:
        raise InputError("no wavelength for the measurement: give one (--wavelength or an instrument parameter "
                         "file) to convert it onto the model grid", source, "wavelength")
    for nm, v in (("wavelength", wavelength), ("grid_wavelength", grid_wavelength)):
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"{nm} {v} must be a positive number of angstrom", source, nm)
    x = np.asarray(two_theta, dtype=float) - zero
    y = np.asarray(intensity, dtype=float)
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or g.size < 2 or np.any(np.diff(g) <= 0) or g[0] <= 0 or g[-1] >= 180:
        raise InputError("the model grid must be >= 2 increasing 2theta values inside (0, 180) deg", source, "grid")
    use = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        use &= np.asarray(mask, dtype=bool)
    s = None
    if sigma is not None:
        s = np.asarray(sigma, dtype=float)
        use &= np.isfinite(s)
    if use.sum() < 2:
        raise InputError("fewer than 2 usable measured points", source, "intensity")
    step = float(np.median(np.diff(x[np.isfinite(x)])))
    x, y = x[use], y[use]
    if np.any(np.diff(x) <= 0):
        raise InputError("measured 2theta must increase strictly", source, "two_theta")
    s = None if s is None else s[use]

    # grid cells (edges and centres) in the measured variable
    c_m = map_two_theta(g, grid_wavelength, wavelength)
    e_m = map_two_theta(_edges(g), grid_wavelength, wavelength)
    missing = ~np.isfinite(c_m) | (c_m < x[0]) | (c_m > x[-1])
    gaps = np.flatnonzero(np.diff(x) > HOLE_STEPS * step)
    if gaps.size:
        k = np.clip(np.searchsorted(x, np.nan_to_num(c_m), side="right") - 1, 0, len(x) - 2)
        missing |= np.isin(k, gaps) & (np.nan_to_num(c_m) > x[k]) & (np.nan_to_num(c_m) < x[k + 1])
    lo = np.clip(np.nan_to_num(e_m[:-1], nan=x[-1]), x[0], x[-1])
    hi = np.clip(np.nan_to_num(e_m[1:], nan=x[-1]), x[0], x[-1])
    width = hi - lo
    ok = ~missing & (width > 0)
    out = np.full(g.shape, float(fill))
    C = _cumulative(x, y)
    out[ok] = (C(hi[ok]) - C(lo[ok])) / width[ok]
    point = ~missing & ~ok  # a cell of zero width after clipping: the value at its centre
    out[point] = np.interp(c_m[point], x, y)
    sig = None
    if s is not None:
        sig = np.full(g.shape, float(fill))
        Cv = _cumulative(x, s * s)
        var = np.empty(g.shape)
        var[ok] = (Cv(hi[ok]) - Cv(lo[ok])) / width[ok]
        var[point] = np.interp(c_m[point], x, s * s)
        local = np.interp(np.nan_to_num(c_m), 0.5 * (x[1:] + x[:-1]), np.diff(x))
        n_per_cell = np.maximum(1.0, np.where(ok, width, 0.0) / local)
        sig[~missing] = np.sqrt(var[~missing] / n_per_cell[~missing])
    return Regridded(g.copy(), out, sig, missing)


def regrid_measured(pattern, grid, grid_wavelength: float, *, wavelength: float | None = None, zero: float = 0.0,
                    fill: float = 0.0) -> Regridded:
    """:func:`to_grid` for a :class:`~xtalhpc.io.measured.MeasuredPattern` (``wavelength`` overrides its own)."""
    wl = wavelength if wavelength is not None else pattern.wavelength
    return to_grid(pattern.two_theta, pattern.intensity, wl, grid, grid_wavelength, sigma=pattern.sigma,
                   mask=pattern.mask, zero=zero, fill=fill, source=pattern.source)


# --------------------------------------------------------------------------- background

#: Default Chebyshev terms of the background (T0..T7). Measured against the refined backgrounds
#: of the shared neutron data (docs/measured.md): 6 terms miss the steep low- and high-angle rise
#: of BT-1 alumina (90th percentile error 20%), 8 follow it (8%); 10 gain nothing more.
BACKGROUND_TERMS = 8
#: Points more than this many noise sigmas above the current fit are left out of the next fit.
BACKGROUND_CLIP = 2.0


def noise_level(y: np.ndarray) -> float:
    """Robust scalar noise sigma from first differences: 1.4826 * median|dy| / sqrt(2).

    Smooth features (background, peaks many steps wide) barely enter the differences;
    white noise of sigma s gives differences of sigma s * sqrt(2).
    """
    d = np.diff(np.asarray(y, dtype=float))
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d)) / np.sqrt(2))


def estimate_background(two_theta, intensity, *, sigma=None, mask=None, n_terms: int = BACKGROUND_TERMS,
                        clip: float = BACKGROUND_CLIP, max_iter: int = 200) -> np.ndarray:
    """Slow background under a powder pattern: a clipped Chebyshev fit.

    Fit ``n_terms`` Chebyshev polynomials in 2theta (mapped onto [-1, 1]) by least squares,
    leave out every point more than ``clip`` noise sigmas above the fit, refit, and repeat
    until the set of points kept stops changing. Peaks drop out in a few iterations; the
    noise, symmetric about the background, stays (leaving out pure noise above +2 sigma
    lowers the fit by only 0.05 sigma). Where peaks overlap everywhere (dense patterns at
    high angle) their merged tails look like background and the estimate sits above a
    Rietveld-refined background, which the peak tails explain instead.

    Parameters
    ----------
    two_theta, intensity : array_like, shape (n,)
    sigma : array_like, optional
        Per-point noise sigma (the data's uncertainties); default :func:`noise_level`.
    mask : array_like of bool, optional
        True for points to fit (missing/masked points are left out but get a value).
    n_terms : int
        Chebyshev terms (polynomial degree + 1), 1-30.
    clip : float
        Clipping margin in noise sigmas, > 0.
    max_iter : int
        Iteration cap; the loop stops earlier when the kept points stop changing.

    Returns
    -------
    ndarray, shape (n,)
        The background at every point.
    """
    x = np.asarray(two_theta, dtype=float)
    y = np.asarray(intensity, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError("two_theta and intensity must be 1-D arrays of one length", None, "intensity")
    if not (1 <= int(n_terms) <= 30) or not clip > 0:
        raise InputError(f"n_terms {n_terms} must be 1-30 and clip {clip} > 0", None, "n_terms")
    use = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        use &= np.asarray(mask, dtype=bool)
    if use.sum() < n_terms + 1:
        raise InputError(f"{int(use.sum())} usable points cannot fit {n_terms} background terms", None, "intensity")
    xs, w = x[use], y[use]
    lo, hi = xs.min(), xs.max()
    t = 2 * (xs - lo) / (hi - lo) - 1 if hi > lo else np.zeros_like(xs)
    basis = np.polynomial.chebyshev.chebvander(t, int(n_terms) - 1)
    if sigma is None:
        s = np.full(xs.shape, noise_level(w))
    else:
        s = np.asarray(sigma, dtype=float)[use]
    s = np.where(np.isfinite(s) & (s > 0), s, max(noise_level(w), 1e-12))
    keep = np.ones(xs.shape, dtype=bool)
    for _ in range(max_iter):
        coef, *_ = np.linalg.lstsq(basis[keep], w[keep], rcond=None)
        fit = basis @ coef
        new = w - fit < clip * s
        if new.sum() < n_terms + 1 or np.array_equal(new, keep):
            break
        keep = new
    tall = 2 * (x - lo) / (hi - lo) - 1 if hi > lo else np.zeros_like(x)
    return np.polynomial.chebyshev.chebval(np.clip(np.nan_to_num(tall), -1, 1), coef)


def subtract_background(two_theta, intensity, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(intensity - background, background), with :func:`estimate_background`'s keywords."""
    b = estimate_background(two_theta, intensity, **kwargs)
    return np.asarray(intensity, dtype=float) - b, b
