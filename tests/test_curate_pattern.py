"""Pattern-level augmentation (pure NumPy) and the class-balance report."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from xtalhpc.curate import (PatternAugmentConfig, apply_pattern_augmentation, chebyshev_background,
                            class_balance_report, lorentzian_broaden, march_dollase, poisson_noise,
                            sample_pattern_augmentation, scherrer_fwhm, scherrer_lx, zero_shift)
from xtalhpc.errors import InputError

# the NIST BT-1 Cu(311) grid (DESIGN.md section 3)
TT = 3.0 + 0.05 * np.arange(3296)
LAMBDA = 1.5403


def gaussian_pattern(centres=(30.0, 60.0, 95.0), heights=(1.0, 0.5, 0.8), sigma=0.1):
    y = np.zeros_like(TT)
    for c, h in zip(centres, heights):
        y += h * np.exp(-0.5 * ((TT - c) / sigma) ** 2)
    return y


def fwhm_of(x, y):
    half = y.max() / 2
    above = np.flatnonzero(y >= half)
    i0, i1 = above[0], above[-1]
    left = np.interp(half, [y[i0 - 1], y[i0]], [x[i0 - 1], x[i0]])
    right = np.interp(half, [y[i1 + 1], y[i1]], [x[i1 + 1], x[i1]])
    return right - left


def test_poisson_noise_statistics_and_seed():
    y = np.full(20000, 10.0)
    noisy = poisson_noise(y, peak_counts=100.0, rng=np.random.default_rng(1))
    # scaled back to the input scale: mean kept, relative spread 1/sqrt(100)
    assert noisy.mean() == pytest.approx(10.0, rel=0.01)
    assert noisy.std() / 10.0 == pytest.approx(0.1, rel=0.05)
    assert np.array_equal(noisy, poisson_noise(y, 100.0, np.random.default_rng(1)))
    with pytest.raises(InputError):
        poisson_noise(y, 0.0, np.random.default_rng(1))


def test_background_and_zero_shift():
    bg = chebyshev_background(TT, [2.0, 1.0])
    assert bg[0] == pytest.approx(1.0) and bg[-1] == pytest.approx(3.0)
    y = gaussian_pattern()
    shifted = zero_shift(TT, y, 0.15)
    peak = TT[np.argmax(shifted[(TT > 25) & (TT < 35)]) + np.flatnonzero(TT > 25)[0]]
    assert peak == pytest.approx(30.15, abs=1e-9)


def test_scherrer_width_and_lorentzian_convolution():
    size = 500.0
    w = scherrer_fwhm(np.array([60.0]), LAMBDA, size)[0]
    assert w == pytest.approx(math.degrees(0.9 * LAMBDA / (size * math.cos(math.radians(30.0)))))
    assert scherrer_lx(LAMBDA, size) == pytest.approx(100 * math.degrees(0.9 * LAMBDA / size))
    # a narrow line broadened by a 0.5 deg Lorentzian: area kept, FWHM ~ 0.5 deg (+ the tiny line width)
    y = np.zeros_like(TT)
    y[1500] = 1.0
    b = lorentzian_broaden(TT, y, 0.5)
    assert b.sum() == pytest.approx(1.0, rel=1e-12)
    assert fwhm_of(TT, b) == pytest.approx(0.5, abs=0.02)
    assert TT[np.argmax(b)] == TT[1500]
    # angle-dependent width from the Scherrer formula
    g = gaussian_pattern()
    bb = lorentzian_broaden(TT, g, scherrer_fwhm(TT, LAMBDA, 300.0))
    assert bb.sum() == pytest.approx(g.sum(), rel=1e-6) and bb.max() < g.max()
    with pytest.raises(InputError):
        lorentzian_broaden(np.array([1.0, 2.0, 4.0]), np.ones(3), 0.1)


def test_march_dollase_factor():
    cell = (4.0, 4.0, 6.0, 90, 90, 90)
    hkl = np.array([[0, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 2]])
    r = 0.8
    p = march_dollase(hkl, (0, 0, 1), r, cell=cell)
    np.testing.assert_allclose(p, [r**-3, r**1.5, r**1.5, r**-3], rtol=1e-12)
    np.testing.assert_allclose(march_dollase(hkl, (0, 0, 1), 1.0, cell=cell), 1.0)
    # normalised: the average over random directions is 1
    v = np.random.default_rng(0).normal(size=(400_000, 3))
    assert march_dollase(v, (0, 0, 1), 0.7, reciprocal_metric=np.eye(3)).mean() == pytest.approx(1.0, abs=0.01)
    with pytest.raises(InputError, match="texture r"):
        march_dollase(hkl, (0, 0, 1), 0.0, cell=cell)
    with pytest.raises(InputError, match="not all zero"):  # the same checks as a Texture's
        march_dollase(hkl, (0, 0, 0), 0.8, cell=cell)


def test_sampled_augmentation_is_deterministic_and_recorded():
    rec = sample_pattern_augmentation(seed=5, index=17, wavelength=LAMBDA)
    assert rec == sample_pattern_augmentation(seed=5, index=17, wavelength=LAMBDA)
    assert rec != sample_pattern_augmentation(seed=5, index=18, wavelength=LAMBDA)
    json.dumps(rec)  # storable as a per-pattern JSON attribute
    for key in ("peak_counts", "background_chebyshev_rel", "zero_shift_deg", "crystallite_size_A",
                "scherrer_lx_centideg", "march_dollase_r", "preferred_hkl"):
        assert key in rec
    y = gaussian_pattern()
    a = apply_pattern_augmentation(TT, y, rec)
    assert np.array_equal(a, apply_pattern_augmentation(TT, y, json.loads(json.dumps(rec))))
    assert a.shape == y.shape and not np.allclose(a, y)
    # switching one augmentation off leaves the other draws unchanged
    cfg = PatternAugmentConfig(background_fraction=None)
    rec2 = sample_pattern_augmentation(seed=5, index=17, config=cfg, wavelength=LAMBDA)
    assert "background_chebyshev_rel" not in rec2 and rec2["zero_shift_deg"] == rec["zero_shift_deg"]
    with pytest.raises(InputError):
        PatternAugmentConfig(peak_counts=(0.0, 10.0))


def test_class_balance_report(tmp_path):
    before = [225] * 100 + [62] * 30 + [14] * 3
    after = [225] * 20 + [62] * 20 + [14] * 20
    png, csv_path, md = tmp_path / "b.png", tmp_path / "b.csv", tmp_path / "b.md"
    s = class_balance_report(before, after, png, csv_path, md)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s["before"]["imbalance"] == pytest.approx(100 / 3) and s["after"]["imbalance"] == 1.0
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 230 and rows[224]["before"] == "100" and rows[224]["after"] == "20"
    assert rows[13]["crystal_system"] == "monoclinic"
    assert md.read_text().count("\n") == 2 + 3
    with pytest.raises(InputError):
        class_balance_report([0], None, tmp_path / "x.png")
