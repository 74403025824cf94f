"""On-the-fly augmentation of a batch of training patterns (NumPy, vectorised over the batch).

The physics and parameter conventions are those of :mod:`xtalhpc.curate.pattern_aug`
(Lorentzian broadening conserving area, a 2theta zero error shifting peaks to
2theta_0 + shift, a Chebyshev background relative to the pattern maximum, counting noise
at ``peak_counts`` counts at the strongest point); here they act on a whole batch at once
so the loader keeps up with the network (~0.2 ms per pattern on the BT-1 grid instead of
~10-20 ms for the per-pattern reference functions; agreement with them and with Voigt
profiles is tested). Order: broadening and zero shift (one FFT: the Lorentzian's transform
exp(-pi w |f|) times the shift's phase exp(-2 pi i f s), on a grid padded beyond the
Lorentzian tails so nothing wraps around), impurity peaks, background, counting noise, crop
(blanked ends, returned as a mask for :func:`xtalhpc.preprocess.normalise`).

Approximations, each a deliberate trade for speed: broadening has a constant FWHM across
the pattern per draw (an extra instrument or size term; the reference's 1/cos(theta)
Scherrer growth is not modelled); the shift interpolates band-limited (sinc) rather than
linearly; counting noise is Gaussian with the Poisson variance (the same mean and variance;
it differs from Poisson only where a point holds a few counts, and is clipped at 0).

Two parts (off unless their probability is set; they draw no random numbers when off) reshape
the peaks as other instruments do, after the broadening and shift:

* resolution: an extra Gaussian whose FWHM varies over the pattern by the Caglioti law
  (``w90 * sqrt(a + (1 - a) tan^2 theta)``). A width that varies along the pattern is no single
  convolution; the pattern is blurred at a few fixed widths (one FFT each, geometric in width)
  and each point takes the blend of the two blurs whose widths bracket its own, linear in log
  width (the blend of two Gaussians a factor sqrt(2) apart is within ~1 % of the Gaussian of the
  interpolated width in FWHM).
* asymmetry (axial divergence): the pattern convolved with a one-sided exponential tail towards
  low angles and, separately, towards high angles (both exact), each taking the share
  ``min(1, |cot 2theta| / 2)`` of the intensity on its side of 90 degrees: low-angle peaks
  tail to lower angles, back-scattering peaks to higher, peaks near 90 degrees stay symmetric.
  The share is taken where the intensity comes from, so each peak keeps its area.

Preferred orientation (an hkl-dependent intensity change) needs the reflections, which a
pattern no longer carries; it is not augmented.
"""
from __future__ import annotations

import numpy as np

from ..curate.pattern_aug import chebyshev_background
from .config import AugmentConfig


def coverage_limits(ratio, two_theta_min, two_theta_max):
    """The model grid's 2theta range (degrees) that a measurement covers once converted through
    d-spacing: measured from ``two_theta_min`` to ``two_theta_max`` at ``ratio`` times the model's
    wavelength, a point at 2theta_m lands at ``2 asin(sin(theta_m) / ratio)`` (beyond the model's
    reach, sin > 1, at 180)."""
    r = np.asarray(ratio, dtype=float)

    def conv(tt):
        s = np.sin(np.radians(np.asarray(tt, dtype=float)) / 2.0) / r
        return np.where(s >= 1.0, 180.0, 2.0 * np.degrees(np.arcsin(np.clip(s, 0.0, 1.0))))

    return conv(two_theta_min), conv(two_theta_max)


def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (a fast FFT length)."""
    best = 1 << int(np.ceil(np.log2(n)))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _geometric(r: np.ndarray, m: int, block: int = 64) -> np.ndarray:
    """``r[:, None] ** arange(m)`` for complex ``r`` with one multiply per element (no exp per element):
    r^(block q + j) = (r^block)^q r^j, both factors from direct powers (no accumulated rounding)."""
    j = np.arange(block)
    q = np.arange(-(-m // block))
    low = r[:, None] ** j[None, :]
    high = r[:, None] ** (block * q)[None, :]
    return (high[:, :, None] * low[:, None, :]).reshape(len(r), -1)[:, :m]


class BatchAugmenter:
    """Augments ``(b, n)`` patterns on the grid ``two_theta`` (degrees) as ``cfg`` says."""

    def __init__(self, cfg: AugmentConfig, two_theta):
        self.cfg = cfg
        self.tt = np.asarray(two_theta, dtype=float)
        self.n = self.tt.size
        self.step = float((self.tt[-1] - self.tt[0]) / (self.n - 1))
        # Chebyshev basis T_0..T_order on the grid, through the reference function
        order = cfg.background_order
        self.cheb = np.array([chebyshev_background(self.tt, np.eye(order + 1)[k]) for k in range(order + 1)],
                             dtype=np.float32)
        # pad beyond the widest Lorentzian's tails (20 FWHM hold all but 1.6 % of its area) and the shift
        half = np.radians(self.tt / 2)
        self.tan_theta = np.tan(np.clip(half, 0.0, np.radians(89.0)))
        cot2 = np.abs(1.0 / np.tan(np.clip(2 * half, np.radians(0.5), np.radians(179.5))))
        self.asym_low = np.where(self.tt < 90.0, np.minimum(1.0, cot2 / 2), 0.0)[None, :]
        self.asym_high = np.where(self.tt > 90.0, np.minimum(1.0, cot2 / 2), 0.0)[None, :]
        # (parts switched off add no padding: older recipes keep their FFT length, hence their bits)
        widest = (cfg.resolution_deg[1] * float(np.max(np.sqrt(1.0 + self.tan_theta ** 2)))
                  if cfg.resolution_probability > 0 else 0.0)
        tail = cfg.asymmetry_deg[1] if cfg.asymmetry_probability > 0 else 0.0
        pad = int(np.ceil((20 * cfg.broadening_deg[1] + cfg.zero_shift_deg + 4 * widest + 25 * tail)
                          / self.step)) + 16
        self.nfft = _fast_length(self.n + pad)
        self.freq = np.fft.rfftfreq(self.nfft)  # cycles per grid point

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (augmented float32 patterns, mask or None). ``x`` is not changed."""
        cfg = self.cfg
        x = np.array(x, dtype=np.float32, copy=True)
        b, n = x.shape
        if not cfg.enabled or b == 0:
            return x, None
        # draw everything in a fixed order, whether used or not
        fwhm = rng.uniform(cfg.broadening_deg[0], cfg.broadening_deg[1], b)
        shift = rng.uniform(-cfg.zero_shift_deg, cfg.zero_shift_deg, b)
        has_bg = rng.random(b) < cfg.background_probability
        level = rng.uniform(cfg.background_fraction[0], cfg.background_fraction[1], b)
        coeffs = rng.normal(0.0, 0.3, (b, cfg.background_order + 1))
        n_imp = rng.integers(0, cfg.impurity_peaks + 1, b)
        imp_pos = rng.uniform(self.tt[0], self.tt[-1], (b, max(1, cfg.impurity_peaks)))
        imp_h = rng.uniform(cfg.impurity_intensity[0], cfg.impurity_intensity[1], (b, max(1, cfg.impurity_peaks)))
        imp_w = rng.uniform(0.1, 0.4, (b, max(1, cfg.impurity_peaks)))
        has_noise = rng.random(b) < cfg.noise_probability
        lo, hi = np.log(cfg.peak_counts[0]), np.log(cfg.peak_counts[1])
        counts = np.exp(rng.uniform(lo, hi, b))
        crop = rng.random(b) < cfg.crop_probability
        crop_lo = rng.uniform(0, cfg.crop_max_deg, b) * (rng.random(b) < 0.5)
        crop_hi = rng.uniform(0, cfg.crop_max_deg, b) * (rng.random(b) < 0.5)
        # parts added later draw only when switched on (older recipes keep their random stream)
        has_res = np.zeros(b, dtype=bool)
        if cfg.resolution_probability > 0:
            has_res = rng.random(b) < cfg.resolution_probability
            w90 = rng.uniform(cfg.resolution_deg[0], cfg.resolution_deg[1], b)
            res_a = rng.random(b)
        has_asym = np.zeros(b, dtype=bool)
        if cfg.asymmetry_probability > 0:
            has_asym = rng.random(b) < cfg.asymmetry_probability
            tau = rng.uniform(cfg.asymmetry_deg[0], cfg.asymmetry_deg[1], b)
        has_cov = np.zeros(b, dtype=bool)
        if cfg.coverage_probability > 0:
            has_cov = rng.random(b) < cfg.coverage_probability
            cov_r = rng.uniform(cfg.coverage_wavelength_ratio[0], cfg.coverage_wavelength_ratio[1], b)
            cov_hi = rng.uniform(cfg.coverage_two_theta_max[0], cfg.coverage_two_theta_max[1], b)
            cov_lo = rng.uniform(cfg.coverage_two_theta_min[0], cfg.coverage_two_theta_min[1], b)

        # Lorentzian broadening and zero shift in one FFT: the value at 2theta comes from 2theta - shift
        w = fwhm / self.step
        sh = shift / self.step
        rows = np.flatnonzero((w > 1e-3) | (np.abs(sh) > 1e-6))
        if rows.size:
            spec = np.fft.rfft(x[rows], n=self.nfft, axis=1)
            spec *= _geometric(np.exp((-np.pi * w[rows] - 2j * np.pi * sh[rows]) / self.nfft), spec.shape[1])
            x[rows] = np.fft.irfft(spec, n=self.nfft, axis=1)[:, :n]
        rows = np.flatnonzero(has_res)
        if rows.size:
            x[rows] = self._resolution(x[rows], w90[rows], res_a[rows])
        rows = np.flatnonzero(has_asym)
        if rows.size:
            x[rows] = self._asymmetry(x[rows], tau[rows])
        np.clip(x, 0.0, None, out=x)
        top = x.max(axis=1)
        # impurity peaks: Gaussians of relative height imp_h, FWHM imp_w degrees, drawn within +-4 sigma
        for i, j in zip(*np.nonzero(np.arange(max(1, cfg.impurity_peaks))[None, :] < n_imp[:, None])):
            sig = imp_w[i, j] / 2.3548
            i0 = max(0, int((imp_pos[i, j] - 4 * sig - self.tt[0]) / self.step))
            i1 = min(n, int((imp_pos[i, j] + 4 * sig - self.tt[0]) / self.step) + 2)
            x[i, i0:i1] += top[i] * imp_h[i, j] * np.exp(-0.5 * ((self.tt[i0:i1] - imp_pos[i, j]) / sig) ** 2)
        # background: level * (T_0 + sum c_k T_k) relative to the maximum, kept >= 0
        rows = np.flatnonzero(has_bg & (level > 0))
        if rows.size:
            c = coeffs[rows].copy()
            c[:, 0] = 1.0
            bg = (c.astype(np.float32) @ self.cheb) * (level[rows] * top[rows])[:, None].astype(np.float32)
            x[rows] = np.clip(x[rows] + bg, 0.0, None)
        # counting noise: Gaussian with the Poisson variance at `counts` counts at the maximum
        rows = np.flatnonzero(has_noise & (top > 0))
        if rows.size:
            scale = (counts[rows] / top[rows]).astype(np.float32)[:, None]
            xr = x[rows]
            xr += np.sqrt(xr / scale) * rng.standard_normal(xr.shape, dtype=np.float32)
            x[rows] = np.clip(xr, 0.0, None)
        mask = None
        rows = np.flatnonzero(crop)
        if rows.size:
            mask = np.ones((b, n), dtype=bool)
            mask[rows] = ((self.tt[None, :] >= self.tt[0] + crop_lo[rows, None]) &
                          (self.tt[None, :] <= self.tt[-1] - crop_hi[rows, None]))
        rows = np.flatnonzero(has_cov)
        if rows.size:
            if mask is None:
                mask = np.ones((b, n), dtype=bool)
            lo, hi = coverage_limits(cov_r[rows], cov_lo[rows], cov_hi[rows])
            mask[rows] &= (self.tt[None, :] >= lo[:, None]) & (self.tt[None, :] <= hi[:, None])
        return x, mask


    # -- peak shape of other instruments ---------------------------------------------------

    def resolution_fwhm(self, w90, a) -> np.ndarray:
        """(rows, n) extra Gaussian FWHM in degrees over the grid: ``w90 sqrt(a + (1 - a) tan^2 theta)``."""
        w90 = np.asarray(w90, dtype=float)[:, None]
        a = np.asarray(a, dtype=float)[:, None]
        return w90 * np.sqrt(a + (1.0 - a) * self.tan_theta[None, :] ** 2)

    def _resolution(self, x: np.ndarray, w90, a) -> np.ndarray:
        n = self.n
        w = self.resolution_fwhm(w90, a) / self.step  # FWHM in grid points
        spec = np.fft.rfft(x, n=self.nfft, axis=1)
        f2 = self.freq[None, :] ** 2
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            wi = w[i]
            top = float(wi.max())
            low = max(0.25, float(wi.min()))
            if top <= 0.25:
                out[i] = x[i]
                continue
            # widths top / sqrt(2)^j down to below `low`, and 0 (the pattern itself) last
            k = int(np.ceil(2 * np.log2(top / low))) + 1
            levels = top / np.sqrt(2.0) ** np.arange(k)
            sig = levels / 2.3548200450309493
            blurs = np.fft.irfft(spec[i][None, :] * np.exp(-2.0 * np.pi ** 2 * sig[:, None] ** 2 * f2),
                                 n=self.nfft, axis=1)[:, :n]
            # position of each point's width among the levels (descending), linear in log width
            t = np.clip(np.log2(top / np.maximum(wi, 1e-12)) * 2.0, 0.0, None)
            j = np.minimum(t.astype(np.int64), k - 1)
            frac = t - j
            idx = np.arange(n)
            upper = blurs[j, idx]
            below = np.where(j + 1 < k, blurs[np.minimum(j + 1, k - 1), idx], x[i])
            # below the narrowest level, blend towards the unblurred pattern (width 0) linearly in width
            lin = np.clip(wi / levels[-1], 0.0, 1.0)
            last = j >= k - 1
            out[i] = np.where(last, lin * blurs[k - 1] + (1 - lin) * x[i], (1 - frac) * upper + frac * below)
        return out

    def _asymmetry(self, x: np.ndarray, tau) -> np.ndarray:
        n = self.n
        r = np.exp(-self.step / np.maximum(np.asarray(tau, dtype=float), 1e-9))[:, None]
        phase = np.exp(2j * np.pi * self.freq)[None, :]
        # The share w(2theta) of each point's intensity is spread by the one-sided exponential
        # h[k] = (1 - r) r^k (towards lower indices, i.e. low angles, below 90 degrees and towards
        # higher above): weighting at the source keeps each peak's area.
        x_low = self.asym_low * x
        x_high = self.asym_high * x
        low = np.fft.irfft(np.fft.rfft(x_low, n=self.nfft, axis=1) * ((1 - r) / (1 - r * phase)),
                           n=self.nfft, axis=1)[:, :n]
        high = np.fft.irfft(np.fft.rfft(x_high, n=self.nfft, axis=1) * ((1 - r) / (1 - r * np.conj(phase))),
                            n=self.nfft, axis=1)[:, :n]
        return (x - x_low - x_high + low + high).astype(x.dtype, copy=False)
