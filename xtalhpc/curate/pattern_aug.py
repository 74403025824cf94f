"""Pattern-level augmentation: pure NumPy functions on (two_theta, intensity).

Conventions: ``two_theta`` in degrees on a uniform, increasing grid (the
instrument grid), ``intensity`` in arbitrary but linear units (the simulator's
scale). Every function returns a new array and never changes its inputs.

Randomised use goes through :func:`sample_pattern_augmentation` (draws the
parameters from ``(seed, index)``) and :func:`apply_pattern_augmentation`
(applies a record), so the record stored with a pattern reproduces it exactly.
Crystallite size and preferred orientation act on reflections, so the record
also carries the Scherrer ``LX`` term and the March-Dollase parameters for a
simulator that applies them before rendering; on an already rendered pattern
:func:`lorentzian_broaden` is the fallback for the size term.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from .augment import item_rng

#: Scherrer constant for roughly equiaxed crystallites (integral-breadth-free
#: FWHM convention; 0.89-0.94 in the literature).
SCHERRER_K = 0.9
#: Lorentzian tails are cut at this many FWHM when convolving (the cut removes
#: 1 - 2/pi * atan(2 * 20) ~ 1.6 % of the area, which is restored by normalising the kernel).
LORENTZ_WINDOW_FWHM = 20.0


def _check_pattern(two_theta, intensity):
    tt = np.asarray(two_theta, dtype=float)
    y = np.asarray(intensity, dtype=float)
    if tt.ndim != 1 or y.shape != tt.shape:
        raise InputError(f"two_theta {tt.shape} and intensity {y.shape} must be 1-D of equal length",
                         field="pattern")
    return tt, y


def poisson_noise(intensity, peak_counts: float, rng: np.random.Generator) -> np.ndarray:
    """Counting noise: scale so the maximum is ``peak_counts`` counts, draw Poisson, scale back.

    ``peak_counts`` (counts at the strongest point, > 0) sets the statistics: the
    relative noise of the strongest point is 1/sqrt(peak_counts).
    """
    y = np.asarray(intensity, dtype=float)
    if not peak_counts > 0:
        raise InputError(f"peak_counts {peak_counts} must be > 0", field="peak_counts")
    top = float(np.max(y)) if y.size else 0.0
    if top <= 0:
        return y.copy()
    scale = peak_counts / top
    return rng.poisson(np.clip(y, 0, None) * scale).astype(float) / scale


def chebyshev_background(two_theta, coefficients) -> np.ndarray:
    """Chebyshev-polynomial background (first kind) on 2theta mapped to [-1, 1] over the grid.

    ``coefficients[k]`` multiplies T_k; the units are those of the intensity.
    """
    tt = np.asarray(two_theta, dtype=float)
    lo, hi = float(tt.min()), float(tt.max())
    x = np.zeros_like(tt) if hi == lo else 2.0 * (tt - lo) / (hi - lo) - 1.0
    return np.polynomial.chebyshev.chebval(x, np.asarray(coefficients, dtype=float))


def zero_shift(two_theta, intensity, shift_deg: float) -> np.ndarray:
    """The pattern as an instrument with a 2theta zero error ``shift_deg`` records it.

    A peak at true angle 2theta_0 appears at 2theta_0 + shift_deg; values are
    linearly interpolated, points shifted in from outside the grid take the edge value.
    """
    tt, y = _check_pattern(two_theta, intensity)
    return np.interp(tt - float(shift_deg), tt, y)


def scherrer_fwhm(two_theta, wavelength: float, size_A: float, k: float = SCHERRER_K) -> np.ndarray:
    """Extra Lorentzian FWHM (degrees 2theta) of crystallites of size ``size_A`` angstrom.

    Scherrer: beta = K lambda / (L cos theta) in radians of 2theta, with lambda
    and L in angstrom. Returned in degrees for each 2theta (degrees) given.
    """
    if not (wavelength > 0 and size_A > 0):
        raise InputError(f"wavelength {wavelength} A and size {size_A} A must be > 0", field="size")
    theta = np.radians(np.asarray(two_theta, dtype=float) / 2.0)
    return np.degrees(k * wavelength / (size_A * np.cos(theta)))


def scherrer_lx(wavelength: float, size_A: float, k: float = SCHERRER_K) -> float:
    """The same broadening as a GSAS ``LX`` term (centidegrees; FWHM_L = LX / cos theta).

    Add it to the instrument's LX to get the size-broadened Lorentzian width.
    """
    return float(scherrer_fwhm(0.0, wavelength, size_A, k)) * 100.0


def lorentzian_broaden(two_theta, intensity, fwhm_deg) -> np.ndarray:
    """Convolve a rendered pattern with a Lorentzian whose FWHM may vary with 2theta.

    Fallback when the simulator cannot add the width per reflection. Each
    input point is spread with the FWHM at its own angle (scalar or array like
    ``two_theta``, degrees), the kernel truncated at :data:`LORENTZ_WINDOW_FWHM`
    FWHM and normalised, so the integrated intensity is conserved (apart from
    what spills past the grid ends). Requires a uniform grid.
    """
    tt, y = _check_pattern(two_theta, intensity)
    if tt.size < 2:
        return y.copy()
    step = np.diff(tt)
    h = float(step.mean())
    if not h > 0 or np.max(np.abs(step - h)) > 1e-6 * max(1.0, abs(h)):
        raise InputError("lorentzian_broaden needs a uniform, increasing 2theta grid", field="two_theta")
    w = np.broadcast_to(np.asarray(fwhm_deg, dtype=float), tt.shape)
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise InputError("Lorentzian FWHM must be finite and >= 0 degrees", field="fwhm")
    if not np.any(w > 0):
        return y.copy()
    half = np.maximum(w, 1e-12) / 2.0
    kmax = int(min(tt.size - 1, math.ceil(LORENTZ_WINDOW_FWHM * float(w.max()) / h)))
    offsets = np.arange(-kmax, kmax + 1)
    # weights[k, i]: share of point i's intensity that lands at i + offsets[k]
    dx = offsets[:, None] * h
    weights = half[None, :] / (dx**2 + half[None, :] ** 2)
    weights[:, w == 0] = 0.0
    weights[kmax, w == 0] = 1.0
    cut = np.abs(dx) > LORENTZ_WINDOW_FWHM * w[None, :]
    weights[cut & (w[None, :] > 0)] = 0.0
    weights /= weights.sum(axis=0, keepdims=True)
    out = np.zeros_like(y)
    n = tt.size
    for k, off in enumerate(offsets):
        src = slice(max(0, -off), min(n, n - off))
        dst = slice(max(0, off), min(n, n + off))
        out[dst] += y[src] * weights[k, src]
    return out


def march_dollase(hkl, preferred_hkl, r: float, reciprocal_metric=None, cell=None) -> np.ndarray:
    """March-Dollase preferred-orientation factor per reflection.

    P(h) = (r^2 cos^2 alpha + sin^2 alpha / r)^(-3/2), alpha the angle between
    the scattering vector of reflection h and the preferred-orientation axis
    (the normal of plane ``preferred_hkl``, i.e. reciprocal vector
    ``preferred_hkl``). r = 1 is a random powder (P = 1); r < 1 platelets
    whose ``preferred_hkl`` normals line up with the diffraction vector
    (those reflections grow); r > 1 needles. The factor averages to 1 over the
    sphere, so it redistributes intensity without changing the total.

    For a reflection family merged over symmetry equivalents, average P over
    the equivalent hkl (weights = multiplicity) as GSAS does.

    Parameters
    ----------
    hkl : (n, 3) Miller indices.
    preferred_hkl : (3,) Miller indices of the preferred plane.
    r : March-Dollase coefficient, > 0.
    reciprocal_metric : 3x3 G* (1/angstrom^2); or give ``cell``.
    cell : (a, b, c, alpha, beta, gamma) in angstrom and degrees.
    """
    from ..texture import Texture

    tex = Texture(axis=preferred_hkl, r=r)  # the parameters' checks, written once
    if reciprocal_metric is None:
        if cell is None:
            raise InputError("march_dollase needs reciprocal_metric or cell", field="cell")
        from ..crystal import cell_metric

        reciprocal_metric = np.linalg.inv(cell_metric(cell))
    g = np.asarray(reciprocal_metric, dtype=float)
    h = np.atleast_2d(np.asarray(hkl, dtype=float))
    p = np.asarray(tex.axis, dtype=float)
    hp = h @ g @ p
    hh = np.einsum("ij,jk,ik->i", h, g, h)
    pp = float(p @ g @ p)  # > 0: the axis is not zero and G* is positive definite
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(hh > 0, hp**2 / (hh * pp), 1.0)
    cos2 = np.clip(cos2, 0.0, 1.0)
    from xtalhpc_kernels.physics import march_dollase as factor  # the formula, written once

    return factor(cos2, tex.r)


@dataclass(frozen=True)
class PatternAugmentConfig:
    """Ranges the random pattern augmentation draws from (uniform unless said).

    Attributes
    ----------
    peak_counts : (low, high) counts at the strongest point, drawn log-uniformly;
        None disables counting noise.
    background_fraction : (low, high) mean background level as a fraction of
        the pattern maximum; None disables the background.
    background_order : highest Chebyshev order (coefficients 1..order are drawn
        as N(0, 0.3) times the level, so the background stays positive-ish and smooth).
    zero_shift_deg : largest |zero shift| in degrees 2theta; 0 disables it.
    size_A : (low, high) crystallite size in angstrom (log-uniform); None disables.
    march_dollase_r : (low, high) r drawn log-uniformly; None disables.
    preferred_axes : candidate preferred planes, one drawn per pattern.
    """

    peak_counts: tuple[float, float] | None = (1e3, 1e5)
    background_fraction: tuple[float, float] | None = (0.0, 0.05)
    background_order: int = 3
    zero_shift_deg: float = 0.05
    size_A: tuple[float, float] | None = (300.0, 5000.0)
    march_dollase_r: tuple[float, float] | None = (0.8, 1.25)
    preferred_axes: tuple[tuple[int, int, int], ...] = ((0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 1), (1, 1, 0))

    def __post_init__(self) -> None:
        for name in ("peak_counts", "background_fraction", "size_A", "march_dollase_r"):
            v = getattr(self, name)
            if v is not None and (len(v) != 2 or not (0 <= v[0] <= v[1]) or not np.all(np.isfinite(v))):
                raise InputError(f"{name} {v} must be None or (low, high) with 0 <= low <= high", field=name)
        for name in ("peak_counts", "size_A", "march_dollase_r"):
            v = getattr(self, name)
            if v is not None and v[0] <= 0:
                raise InputError(f"{name} {v} must be > 0 (drawn log-uniformly)", field=name)
        if not 0 <= self.zero_shift_deg <= 1:
            raise InputError(f"zero_shift_deg {self.zero_shift_deg} outside [0, 1] deg", field="zero_shift_deg")
        if not 0 <= int(self.background_order) <= 12:
            raise InputError(f"background_order {self.background_order} outside 0-12", field="background_order")


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def sample_pattern_augmentation(seed: int, index: int, config: PatternAugmentConfig | None = None,
                                wavelength: float | None = None) -> dict:
    """Draw the pattern-augmentation parameters of item ``index`` (deterministic in seed, index).

    The stream is separate from the structure augmentation's (the seed
    sequence is ``[seed, index, 1]``). Returns the record to store with the
    pattern; with ``wavelength`` (angstrom) it also holds the Scherrer LX term.
    """
    cfg = config or PatternAugmentConfig()
    item_rng(seed, index)  # validates seed and index
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1]))
    rec: dict = {"seed": int(seed), "index": int(index), "config": asdict(cfg)}
    # draw every quantity in a fixed order, whether used or not, so that
    # disabling one augmentation does not change the others
    u_counts = rng.random()
    u_bg = rng.random()
    coeffs = rng.normal(0.0, 0.3, int(cfg.background_order))
    u_zero = rng.random()
    u_size = rng.random()
    u_r = rng.random()
    axis = int(rng.integers(len(cfg.preferred_axes))) if cfg.preferred_axes else -1
    noise_seed = int(rng.integers(2**63))
    if cfg.peak_counts is not None:
        lo, hi = cfg.peak_counts
        rec["peak_counts"] = float(math.exp(math.log(lo) + u_counts * (math.log(hi) - math.log(lo))))
        rec["noise_seed"] = noise_seed
    if cfg.background_fraction is not None:
        lo, hi = cfg.background_fraction
        level = lo + u_bg * (hi - lo)
        rec["background_chebyshev_rel"] = [float(level)] + [float(level * c) for c in coeffs]
    if cfg.zero_shift_deg > 0:
        rec["zero_shift_deg"] = float((2 * u_zero - 1) * cfg.zero_shift_deg)
    if cfg.size_A is not None:
        lo, hi = cfg.size_A
        size = float(math.exp(math.log(lo) + u_size * (math.log(hi) - math.log(lo))))
        rec["crystallite_size_A"] = size
        if wavelength is not None:
            rec["scherrer_lx_centideg"] = scherrer_lx(wavelength, size)
            rec["wavelength_A"] = float(wavelength)
    if cfg.march_dollase_r is not None and axis >= 0:
        lo, hi = cfg.march_dollase_r
        rec["march_dollase_r"] = float(math.exp(math.log(lo) + u_r * (math.log(hi) - math.log(lo))))
        rec["preferred_hkl"] = list(cfg.preferred_axes[axis])
    return rec


def apply_pattern_augmentation(two_theta, intensity, record: dict, *, wavelength: float | None = None,
                               broaden: bool = True) -> np.ndarray:
    """Apply a record from :func:`sample_pattern_augmentation` to a rendered pattern.

    Order: crystallite-size broadening (convolution fallback; skipped with
    ``broaden=False`` when the simulator already added ``scherrer_lx_centideg``),
    zero shift, background (relative to the pattern maximum), then counting
    noise. Preferred orientation is not applied here: it needs the reflection
    list (:func:`march_dollase`). The same record gives the same output.
    """
    tt, y = _check_pattern(two_theta, intensity)
    out = y.copy()
    if broaden and "crystallite_size_A" in record:
        wl = wavelength if wavelength is not None else record.get("wavelength_A")
        if wl is None:
            raise InputError("crystallite-size broadening needs the wavelength", field="wavelength")
        out = lorentzian_broaden(tt, out, scherrer_fwhm(tt, wl, record["crystallite_size_A"]))
    if "zero_shift_deg" in record:
        out = zero_shift(tt, out, record["zero_shift_deg"])
    top = float(out.max()) if out.size else 0.0
    if "background_chebyshev_rel" in record and top > 0:
        out = out + top * chebyshev_background(tt, record["background_chebyshev_rel"])
        out = np.clip(out, 0.0, None)
    if "peak_counts" in record:
        out = poisson_noise(out, record["peak_counts"], np.random.default_rng(record["noise_seed"]))
    return out
