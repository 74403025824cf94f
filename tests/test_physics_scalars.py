"""The scalar physics functions agree with each other where two of them describe one thing
(kernels/physics.py), and with their textbook forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from xtalhpc.scattering import scattering_coefficients
from xtalhpc_kernels import physics


@pytest.mark.parametrize("radiation,species,charge", [("neutron", "Fe", 0), ("neutron", "D", 0),
                                                      ("xray", "O", -2), ("xray", "Fe", 3), ("xray", "Si", 0)])
def test_weight_terms_sum_to_form_factor_times_debye_waller(radiation, species, charge):
    coef = scattering_coefficients(species, radiation, charge)[None, :]
    amp, beta = np.zeros((1, 6)), np.zeros((1, 6))
    b_iso = 0.73
    m = physics.weight_terms(coef, 0, b_iso, amp, beta, 0)
    assert m == (1 if radiation == "neutron" else 6)
    for s2 in (0.0, 0.05, 0.3, 1.2):
        direct = physics.scattering_amplitude(coef, 0, s2) * physics.debye_waller(b_iso, s2)
        terms = sum(amp[0, j] * math.exp(-beta[0, j] * s2) for j in range(m))
        assert terms == pytest.approx(direct, rel=1e-14, abs=1e-14)


def test_theta_and_sin_cos_forms_agree():
    for th in np.radians([2.0, 17.0, 45.0, 80.0, 89.0]):
        s, c = math.sin(th), math.cos(th)
        for xray in (False, True):
            assert physics.lorentz_factor(th, xray) == pytest.approx(physics.lorentz_factor_sc(s, c, xray), rel=1e-13)
        assert physics.lorentz_factor(th, False) == pytest.approx(1 / (s * s * c), rel=1e-13)
        a = physics.peak_fwhm(th, 239.7, -298.2, 180.8, 5.0, 1.0, 0.0)
        b = physics.peak_fwhm_sc(c, s / c, 239.7, -298.2, 180.8, 5.0, 1.0, 0.0)
        assert a == pytest.approx(b, rel=1e-13)


def test_pseudo_voigt_is_unit_area_and_window_area_is_exact():
    from scipy.integrate import quad

    for fwhm, eta in ((0.3, 0.0), (0.3, 0.25), (1.1, 0.6), (0.2, 1.0)):
        total, _ = quad(lambda x: physics.pseudo_voigt(x, fwhm, eta), -np.inf, np.inf, limit=400)
        assert total == pytest.approx(1.0, abs=1e-9)
        w_lo, w_hi = 3 * fwhm, 5 * fwhm
        part, _ = quad(lambda x: physics.pseudo_voigt(x, fwhm, eta), -w_lo, w_hi, limit=400)
        # the Gaussian part's loss beyond 2.5 FWHM (< 1e-8) is the only difference
        assert physics.window_area(fwhm, eta, w_lo, w_hi) == pytest.approx(part, abs=2e-8)


def test_radix_argsort_is_numpys_stable_argsort(rng):
    """cpu.stable_argsort_positive (the families' sort) equals np.argsort(kind="stable") on
    positive values with many ties, on sub-ranges, empty and single-element ones included."""
    from xtalhpc_kernels.cpu import stable_argsort_positive

    for n in (0, 1, 2, 3, 17, 1000, 20000):
        q = rng.uniform(1e-4, 3.0, n)
        if n > 3:
            q[rng.integers(0, n, n // 3)] = q[0]  # exact ties keep their order
            q[: n // 10] = np.round(q[: n // 10], 2)
        pad = np.concatenate([[5.0, 0.5], q, [0.1]])
        np.testing.assert_array_equal(stable_argsort_positive(pad, 2, 2 + n), np.argsort(q, kind="stable"))
