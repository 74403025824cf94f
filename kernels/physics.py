"""Scalar physics, written once, compiled for two targets.

Every formula of the simulator lives here as a small ``numba.njit`` function
on scalars. The CPU launchers (``kernels/cpu.py``) call them from ``njit``
code; the CUDA launchers (``kernels/cuda.py``) call the very same functions
from ``cuda.jit`` kernels (numba-cuda compiles an ``njit`` function for the
device when a kernel calls it). Nothing here allocates, reads files or logs.

Units: angles in radians unless a name says ``deg``; Q = 1/d^2 (angstrom^-2);
s = sin(theta)/lambda = 1/(2d) so s^2 = Q/4; peak widths in degrees.
"""
from __future__ import annotations

import math

from numba import njit

#: 8 ln 2: Gaussian FWHM^2 = 8 ln2 sigma^2.
EIGHT_LN2 = 5.545177444479562
#: Centidegree^2 -> degree^2 and centidegree -> degree (GSAS profile units).
CENTI2 = 1.0e-4
CENTI = 1.0e-2


@njit(cache=True, error_model="numpy", inline="always")
def inv_d2(h, k, l, g11, g22, g33, g12, g13, g23):
    """Q = 1/d^2 = h^T G* h for the reciprocal metric G* (angstrom^-2)."""
    return (h * h * g11 + k * k * g22 + l * l * g33
            + 2.0 * (h * k * g12 + h * l * g13 + k * l * g23))


@njit(cache=True, error_model="numpy", inline="always")
def scattering_amplitude(coef, t, s2):
    """f(s) = c + sum_i a_i exp(-b_i s^2) for row ``t`` of the (T, 12) coefficient table.

    Neutron rows have a_i = 0 (f = b' in fm); the exponentials are skipped then. This is the
    real part; :func:`scattering_amplitude_imag` the imaginary part.
    """
    f = coef[t, 0]
    for i in range(5):
        a = coef[t, 1 + i]
        if a != 0.0:
            f += a * math.exp(-coef[t, 6 + i] * s2)
    return f


@njit(cache=True, error_model="numpy", inline="always")
def weight_terms(coef, t, b_iso, amp, beta, row):
    """The scattering weight w(s) = scattering_amplitude(coef, t, s^2) * debye_waller(b_iso, s^2)
    as a sum of Gaussians in s^2: w = sum_m amp_m exp(-beta_m s^2). Writes the terms into
    amp[row, :], beta[row, :] and returns their number (1 for neutrons, up to 6 for X-rays).
    Kernels that step s^2 along a line of reflections advance each term by recurrence."""
    amp[row, 0] = coef[t, 0]
    beta[row, 0] = b_iso
    m = 1
    for g in range(5):
        if coef[t, 1 + g] != 0.0:
            amp[row, m] = coef[t, 1 + g]
            beta[row, m] = coef[t, 6 + g] + b_iso
            m += 1
    return m


#: Column of a coefficient row holding c'', the imaginary part of the amplitude (neutrons: b''
#: of an absorbing nuclide; 0 otherwise). Mirrors xtalhpc.scattering.IMAG.
IMAG = 11


@njit(cache=True, error_model="numpy", inline="always")
def scattering_amplitude_imag(coef, t):
    """Imaginary part c'' of f for row ``t``: constant in s (b'' of an absorbing nuclide).

    Its scattering weight is c'' debye_waller(B, s^2): the same Gaussian in s^2 as the first
    term of :func:`weight_terms`, so kernels stepping s^2 by recurrence advance it with that term.
    """
    return coef[t, IMAG]


@njit(cache=True, error_model="numpy", inline="always")
def powder_f2(fr, fi, gr, gi):
    """|F|^2 of a reflection as a powder measures it, for complex scattering lengths.

    With F' = fr + i fi = sum_t w'_t S_t and F'' = gr + i gi = sum_t w''_t S_t (w' + i w'' the
    complex weight of type t, S_t = sum_j occ_j exp(2 pi i h.x_j)), F(h) = F' + i F'' and,
    since S_t(-h) = conj(S_t(h)), F(-h) = conj(F') + i conj(F''). A powder ring holds h and
    -h alike, and (|F(h)|^2 + |F(-h)|^2) / 2 = |F'|^2 + |F''|^2 exactly: the mean over the
    Friedel pair, which a non-centrosymmetric crystal with absorbers splits (Bijvoet
    differences). Without absorbers (gr = gi = 0) this is |F|^2 bit for bit.
    """
    return fr * fr + fi * fi + (gr * gr + gi * gi)


@njit(cache=True, error_model="numpy", inline="always")
def debye_waller(b_iso, s2):
    """Isotropic Debye-Waller factor exp(-B s^2) (B in angstrom^2, s^2 in angstrom^-2)."""
    return math.exp(-b_iso * s2)


@njit(cache=True, error_model="numpy", inline="always")
def bragg_theta(wavelength, q):
    """Bragg angle theta (radians) for Q = 1/d^2; -1 if the reflection is beyond 2theta = 180."""
    x = 0.5 * wavelength * math.sqrt(q)
    if x >= 1.0:
        return -1.0
    return math.asin(x)


@njit(cache=True, error_model="numpy", inline="always")
def lorentz_factor_sc(s, c, xray):
    """Powder Lorentz factor 1/(sin^2 th cos th) from s = sin th, c = cos th; X-ray adds the
    polarisation factor (1 + cos^2 2th)/2 (cos 2th = 1 - 2 s^2)."""
    lf = 1.0 / (s * s * c)
    if xray:
        c2 = 1.0 - 2.0 * s * s
        lf *= 0.5 * (1.0 + c2 * c2)
    return lf


@njit(cache=True, error_model="numpy", inline="always")
def lorentz_factor(theta, xray):
    """:func:`lorentz_factor_sc` at Bragg angle ``theta`` (radians)."""
    return lorentz_factor_sc(math.sin(theta), math.cos(theta), xray)


@njit(cache=True, error_model="numpy", inline="always")
def peak_fwhm_sc(c, t, u, v, w, x, y, min_fwhm):
    """TCH pseudo-Voigt (FWHM in degrees, Lorentzian fraction eta) from c = cos th, t = tan th.

    Gaussian: sigma^2 = U tan^2 + V tan + W (centideg^2), FWHM_G = sqrt(8 ln2 sigma^2).
    Lorentzian: FWHM_L = X / cos + Y tan (centideg). Combined by Thompson, Cox &
    Hastings (1987): the FWHM polynomial and eta(q = FWHM_L / FWHM).
    ``min_fwhm`` (degrees) keeps a peak resolvable on the grid where U, V, W dip to zero.
    """
    sig2 = (u * t * t + v * t + w) * CENTI2
    if sig2 < 0.0:
        sig2 = 0.0
    fg = math.sqrt(EIGHT_LN2 * sig2)
    fl = (x / c + y * t) * CENTI
    fg2 = fg * fg
    fl2 = fl * fl
    f5 = (fg2 * fg2 * fg + 2.69269 * fg2 * fg2 * fl + 2.42843 * fg2 * fg * fl2
          + 4.47163 * fg2 * fl2 * fl + 0.07842 * fg * fl2 * fl2 + fl2 * fl2 * fl)
    fwhm = f5 ** 0.2 if f5 > 0.0 else 0.0
    if fwhm < min_fwhm:
        # Broaden both parts alike so eta is kept.
        if fwhm > 0.0:
            fl *= min_fwhm / fwhm
        fwhm = min_fwhm
    q = fl / fwhm
    eta = q * (1.36603 - q * (0.47719 - q * 0.11116))
    if eta > 1.0:
        eta = 1.0
    return fwhm, eta


@njit(cache=True, error_model="numpy", inline="always")
def peak_fwhm(theta, u, v, w, x, y, min_fwhm):
    """:func:`peak_fwhm_sc` at Bragg angle ``theta`` (radians)."""
    return peak_fwhm_sc(math.cos(theta), math.tan(theta), u, v, w, x, y, min_fwhm)


#: Gaussian part of a peak is rendered out to this many FWHM either side
#: (exp(-4 ln2 * 2.5^2) = 3e-8 of its height); the Lorentzian part to the instrument's cutoff.
GAUSS_HALF_WIDTH = 2.5


@njit(cache=True, error_model="numpy", inline="always")
def pseudo_voigt_parts(fwhm, eta):
    """Constants of a unit-area pseudo-Voigt of total ``fwhm`` (degrees) and Lorentzian fraction ``eta``.

    Returns ``(amp_l, inv_hw, amp_g, a_g)`` such that
    pV(dx) = amp_l / (1 + (dx * inv_hw)^2) + amp_g * exp(-a_g * dx^2).
    """
    hw = 0.5 * fwhm
    amp_l = eta / (math.pi * hw)
    amp_g = (1.0 - eta) * 0.9394372786996513 / fwhm  # 2 sqrt(ln2 / pi) / FWHM
    a_g = 2.772588722239781 / (fwhm * fwhm)  # 4 ln2 / FWHM^2
    return amp_l, 1.0 / hw, amp_g, a_g


@njit(cache=True, error_model="numpy", inline="always")
def window_area(fwhm, eta, w_lo, w_hi):
    """Area of the unit-area pseudo-Voigt between -w_lo and +w_hi (degrees).

    The Lorentzian part exactly, eta/pi (atan(x) + atan(y)) with x = w_lo/hw, y = w_hi/hw,
    evaluated as one atan2: atan x + atan y is the argument of (1 + ix)(1 + iy) =
    (1 - xy) + i(x + y), which lies in (0, pi) for x, y > 0. The Gaussian part as 1 - eta
    (windows span at least GAUSS_HALF_WIDTH FWHM, where its loss is < 1e-8). A rendered
    peak is scaled by 1 / window_area so its integrated intensity is kept.
    """
    x = 2.0 * w_lo / fwhm
    y = 2.0 * w_hi / fwhm
    return eta / math.pi * math.atan2(x + y, 1.0 - x * y) + (1.0 - eta)


@njit(cache=True, error_model="numpy", inline="always")
def pseudo_voigt(dx, fwhm, eta):
    """Unit-area pseudo-Voigt at offset ``dx`` (degrees) from the peak centre."""
    amp_l, inv_hw, amp_g, a_g = pseudo_voigt_parts(fwhm, eta)
    z = dx * inv_hw
    return amp_l / (1.0 + z * z) + amp_g * math.exp(-a_g * dx * dx)


@njit(cache=True, error_model="numpy", inline="always")
def march_dollase(cos2, r):
    """March-Dollase preferred-orientation factor P = (r^2 cos^2 a + sin^2 a / r)^(-3/2).

    ``cos2`` the squared cosine of the angle between a reflection's scattering vector and the
    preferred-orientation axis; ``r`` > 0 the March coefficient (1: random powder, P = 1;
    < 1 platelets whose axis lines up with the scattering vector, those reflections grow;
    > 1 needles). P averages to 1 over the sphere (Dollase, J. Appl. Cryst. 19, 267 (1986)).
    Scalars or NumPy arrays of ``cos2``.
    """
    return (r * r * cos2 + (1.0 - cos2) / r) ** -1.5


@njit(cache=True, error_model="numpy", inline="always")
def texture_factor(h, k, l, g11, g22, g33, g12, g13, g23, p0, p1, p2, laue_rot, lo, hi, r):
    """:func:`march_dollase` of reflection (h, k, l) averaged over its Laue orbit, for the
    preferred plane (p0, p1, p2) and coefficient ``r``: the mean of P(h R) over the rotations
    ``laue_rot[lo:hi]`` (the group acting on row vectors of Miller indices, h' = h R; each orbit
    member is hit equally often; 1 and -1 alone give P(h)). G* as in :func:`inv_d2`.
    """
    gp0 = g11 * p0 + g12 * p1 + g13 * p2
    gp1 = g12 * p0 + g22 * p1 + g23 * p2
    gp2 = g13 * p0 + g23 * p1 + g33 * p2
    pp = p0 * gp0 + p1 * gp1 + p2 * gp2
    hh = inv_d2(h, k, l, g11, g22, g33, g12, g13, g23)
    acc = 0.0
    for o in range(lo, hi):
        a0 = h * laue_rot[o, 0, 0] + k * laue_rot[o, 1, 0] + l * laue_rot[o, 2, 0]
        a1 = h * laue_rot[o, 0, 1] + k * laue_rot[o, 1, 1] + l * laue_rot[o, 2, 1]
        a2 = h * laue_rot[o, 0, 2] + k * laue_rot[o, 1, 2] + l * laue_rot[o, 2, 2]
        hp = a0 * gp0 + a1 * gp1 + a2 * gp2
        cos2 = hp * hp / (hh * pp) if hh > 0.0 else 1.0
        if cos2 > 1.0:
            cos2 = 1.0
        acc += march_dollase(cos2, r)
    return acc / (hi - lo)
