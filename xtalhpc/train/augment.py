"""On-the-fly augmentation of a batch of training patterns (NumPy, vectorised over the batch).

The physics and parameter conventions are those of :mod:`xtalhpc.curate.pattern_aug`
(Lorentzian broadening conserving area, a 2theta zero error shifting peaks to
2theta_0 + shift, a Chebyshev background relative to the pattern maximum, Poisson counting
noise at ``peak_counts`` counts at the strongest point); here they act on a whole batch at
once so the loader keeps up with the network (~0.1 ms per pattern instead of ~10-20 ms
for the per-pattern reference functions; agreement with them is tested). Order: broadening,
zero shift, impurity peaks, background, counting noise, crop (blanked ends, returned as a
mask for :func:`xtalhpc.preprocess.normalise`).

Broadening uses a constant FWHM across the pattern per draw (an extra instrument or size
term); the reference's 1/cos(theta) Scherrer growth is not modelled. Peak asymmetry is not
augmented.
"""
from __future__ import annotations

import numpy as np

from ..curate.pattern_aug import chebyshev_background
from .config import AugmentConfig


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
        self.nfft = 1 << int(np.ceil(np.log2(2 * self.n)))
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

        # Lorentzian broadening by FFT (area conserving; FT of a Lorentzian of FWHM w points is exp(-pi w |f|))
        w = fwhm / self.step
        rows = np.flatnonzero(w > 1e-3)
        if rows.size:
            spec = np.fft.rfft(x[rows], n=self.nfft, axis=1)
            spec *= np.exp(-np.pi * w[rows, None] * self.freq[None, :])
            x[rows] = np.fft.irfft(spec, n=self.nfft, axis=1)[:, :n]
        # zero shift: the value at 2theta comes from 2theta - shift (linear interpolation, edges held)
        s = shift / self.step
        rows = np.flatnonzero(np.abs(s) > 1e-6)
        if rows.size:
            src = np.clip(np.arange(n)[None, :] - s[rows, None], 0, n - 1)
            i0 = np.minimum(src.astype(np.int64), n - 2)
            t = (src - i0).astype(np.float32)
            xr = x[rows]
            x[rows] = np.take_along_axis(xr, i0, 1) * (1 - t) + np.take_along_axis(xr, i0 + 1, 1) * t
        np.clip(x, 0.0, None, out=x)
        top = x.max(axis=1)
        # impurity peaks: Gaussians of relative height imp_h
        if cfg.impurity_peaks:
            for j in range(cfg.impurity_peaks):
                rows = np.flatnonzero(n_imp > j)
                if rows.size:
                    sig = imp_w[rows, j, None] / 2.3548
                    x[rows] += (top[rows, None] * imp_h[rows, j, None] *
                                np.exp(-0.5 * ((self.tt[None, :] - imp_pos[rows, j, None]) / sig) ** 2)
                                ).astype(np.float32)
        # background: level * (T_0 + sum c_k T_k) relative to the maximum, kept >= 0
        rows = np.flatnonzero(has_bg & (level > 0))
        if rows.size:
            c = coeffs[rows].copy()
            c[:, 0] = 1.0
            bg = (c.astype(np.float32) @ self.cheb) * (level[rows] * top[rows])[:, None].astype(np.float32)
            x[rows] = np.clip(x[rows] + bg, 0.0, None)
        # counting noise (Poisson at `counts` counts at the maximum)
        rows = np.flatnonzero(has_noise & (top > 0))
        if rows.size:
            scale = (counts[rows] / top[rows])[:, None]
            x[rows] = (rng.poisson(x[rows] * scale) / scale).astype(np.float32)
        mask = None
        rows = np.flatnonzero(crop)
        if rows.size:
            mask = np.ones((b, n), dtype=bool)
            mask[rows] = ((self.tt[None, :] >= self.tt[0] + crop_lo[rows, None]) &
                          (self.tt[None, :] <= self.tt[-1] - crop_hi[rows, None]))
        return x, mask
