"""Scattering amplitudes per species: neutron lengths and X-ray form factors.

Both radiations are expressed in one form that the kernels evaluate,

    f(s) = c + sum_{i<5} a_i exp(-b_i s^2),   s = sin(theta)/lambda (1/angstrom),

so that the structure-factor kernel has one code path:

* neutron: c = bound coherent scattering length b' (fm), all a_i = 0, and a twelfth
  coefficient c'' = b'', the imaginary part of the length of an absorbing nuclide
  (:func:`neutron_length`: periodictable's b_c + i b_c_i at thermal energy, or for the
  resonant nuclides of ``data/neutron_resonances.csv`` the Breit-Wigner length at the
  instrument's wavelength); the kernels form F from b' + i b'' (kernels/physics.py);
* X-ray: Waasmaier & Kirfel (1995) five-Gaussian coefficients as tabulated in
  ``periodictable.cromermann`` (electrons), ions where the table has them,
  else the neutral atom. No anomalous dispersion (f', f'') is applied.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import InputError, ScatteringError

RADIATIONS = ("neutron", "xray")
N_COEFF = 12  #: c, a1..a5, b1..b5, c'' (imaginary part of c: b'' of an absorbing nuclide, 0 otherwise)
#: Column of the imaginary part c'' in a coefficient row.
IMAG = 11
#: Wavelength (angstrom) of 2200 m/s neutrons (25.3 meV), where tables quote b and sigma_abs.
THERMAL_WAVELENGTH = 1.798
#: E (meV) = E_LAMBDA2 / lambda^2 (angstrom) for neutrons (h^2 / 2 m_n).
E_LAMBDA2 = 81.80703
RESONANCE_TABLE = "neutron_resonances.csv"


def check_radiation(radiation: str, source: str | None = None) -> str:
    r = str(radiation).lower().replace("-", "")
    if r not in RADIATIONS:
        raise InputError(f"radiation {radiation!r} is not one of {', '.join(RADIATIONS)}", source, "radiation")
    return r


def nuclide_atom(nuclide: str):
    """periodictable's element or isotope object of a nuclide (``"Fe"``, ``"D"``, ``"7Li"``)."""
    import periodictable

    from .crystal import element_of

    if nuclide in ("D", "T", "2H", "3H"):
        return periodictable.D if nuclide in ("D", "2H") else periodictable.T
    el = periodictable.elements.symbol(element_of(nuclide))
    mass = nuclide[: len(nuclide) - len(element_of(nuclide))]
    return el[int(mass)] if mass else el


@lru_cache(maxsize=None)
def neutron_b(nuclide: str) -> float:
    """Real part of the bound coherent scattering length (fm) of a nuclide (``"Fe"``, ``"D"``,
    ``"7Li"``) at thermal energy, from periodictable. :func:`neutron_length` is the complex
    length the simulator uses."""
    b = getattr(nuclide_atom(nuclide).neutron, "b_c", None)
    if b is None or not np.isfinite(b):
        raise ScatteringError(f"periodictable has no bound coherent scattering length for {nuclide!r}",
                              field="species")
    return float(np.real(b))


@lru_cache(maxsize=1)
def resonance_table() -> dict[str, tuple[float, ...]]:
    """``{nuclide: (b0, re, im, e0, gamma, a, e1, b, e2)}`` of ``data/neutron_resonances.csv``
    (lengths in 10 fm, energies in meV; provenance in the file's header)."""
    from importlib.resources import files

    rows: dict[str, tuple[float, ...]] = {}
    text = files("xtalhpc.data").joinpath(RESONANCE_TABLE).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    for ln in lines[1:]:
        name, *vals = ln.split(",")
        rows[name.strip()] = tuple(float(v) for v in vals)
    return rows


def resonant_length(params: tuple[float, ...], wavelength: float) -> complex:
    """Bound coherent length (fm) from Breit-Wigner parameters at ``wavelength`` (angstrom).

    With E = 81.80703 / lambda^2 meV and D_r = (E - E_r)^2 + gamma^2 / 4 for the resonances
    r = 0, 1, 2 (weights 1, a, b):
    b' = b0 + re (T0 / D0 + a T1 / D1 + b T2 / D2), |b''| = im (1 / D0 + a / D1 + b / D2),
    T_r = E - E_r, in 10 fm (GSAS-II's BlenResCW, Lynn & Seeger 1990). Returned as
    b' + i b'' with b'' <= 0, periodictable's sign (the sign does not change a powder |F|^2).
    """
    b0, re, im, e0, gam, a, e1, b, e2 = params
    e = E_LAMBDA2 / wavelength ** 2
    g4 = gam * gam / 4.0
    t0, t1, t2 = e - e0, e - e1, e - e2
    d0, d1, d2 = t0 * t0 + g4, t1 * t1 + g4, t2 * t2 + g4
    real = b0 + re * (t0 / d0 + a * t1 / d1 + b * t2 / d2)
    imag = im * (1.0 / d0 + a / d1 + b / d2)
    return complex(10.0 * real, -10.0 * imag)


@lru_cache(maxsize=None)
def neutron_length(nuclide: str, wavelength: float | None = None) -> complex:
    """Complex bound coherent scattering length b' + i b'' (fm) of a nuclide.

    Resonant nuclides listed in ``data/neutron_resonances.csv`` (Sm, Eu, Gd, Er, Yb and
    their resonant isotopes, 176Lu, 113Cd) take the Breit-Wigner length at ``wavelength``
    (angstrom; None: the thermal 1.798 A). Every other nuclide takes periodictable's
    thermal b_c + i b_c_i, whatever the wavelength: for Cd, Dy, B, In, Hg, Li and the
    like that is an approximation (docs/physics.md says how large).
    """
    lam = THERMAL_WAVELENGTH if wavelength is None else float(wavelength)
    if not (np.isfinite(lam) and lam > 0):
        raise ScatteringError(f"wavelength {wavelength!r} must be a positive number of angstrom", field="wavelength")
    params = resonance_table().get(nuclide)
    if params is not None:
        return resonant_length(params, lam)
    bi = getattr(nuclide_atom(nuclide).neutron, "b_c_i", None)
    bi = 0.0 if bi is None or not np.isfinite(bi) else float(bi)
    return complex(neutron_b(nuclide), bi)


@lru_cache(maxsize=None)
def absorption_xs(nuclide: str, wavelength: float | None = None) -> float:
    """Absorption cross-section (barn) of a nuclide at ``wavelength`` (angstrom; None: 1.798 A):
    periodictable's value at 2200 m/s scaled by the 1/v law, sigma(lambda) = sigma_2200 lambda / 1.798.
    (For the resonant nuclides the 1/v law is itself an approximation: docs/physics.md.)"""
    v = getattr(nuclide_atom(nuclide).neutron, "absorption", None)
    if v is None or not np.isfinite(v):
        raise ScatteringError(f"periodictable has no absorption cross-section for {nuclide!r}", field="species")
    lam = THERMAL_WAVELENGTH if wavelength is None else float(wavelength)
    return float(v) * lam / THERMAL_WAVELENGTH


@lru_cache(maxsize=None)
def neutron_incoherent_xs(nuclide: str) -> float:
    """Bound incoherent scattering cross-section (barn) of a nuclide, from periodictable."""
    v = getattr(nuclide_atom(nuclide).neutron, "incoherent", None)
    if v is None or not np.isfinite(v):
        raise ScatteringError(f"periodictable has no incoherent cross-section for {nuclide!r}", field="species")
    return float(v)


def absorption_per_formula_unit(crystal, wavelength: float | None = None) -> float:
    """Neutron absorption cross-section (barn) per formula unit of ``crystal`` at ``wavelength``.

    Sum over the cell's atoms of occupancy x :func:`absorption_xs` (each nuclide's, so 10B
    and 11B differ), divided by the formula units per cell Z of the reduced formula
    (``Crystal.formula``: element counts rounded to 1e-3, Z = their greatest common divisor).
    """
    from functools import reduce
    from math import gcd

    from .crystal import element_of

    counts: dict[str, float] = {}
    total = 0.0
    el = {s: element_of(s) for s in set(crystal.species)}
    xs = {s: absorption_xs(s, wavelength) for s in el}
    for s, o in zip(crystal.species, crystal.occupancy.tolist()):  # summed in atom order
        counts[el[s]] = counts.get(el[s], 0.0) + o
        total += o * xs[s]
    scaled = [int(round(round(c, 3) * 1000)) for c in counts.values() if c > 0]
    z = reduce(gcd, scaled) / 1000.0 if scaled else 1.0
    return total / z


@lru_cache(maxsize=None)
def xray_coefficients(nuclide: str, charge: int = 0) -> tuple[float, ...]:
    """Waasmaier-Kirfel ``(c, a1..a5, b1..b5)`` for an element (isotope ignored) and charge."""
    from periodictable import cromermann

    from .crystal import element_of

    el = element_of(nuclide)
    names = []
    if charge:
        names.append(f"{el}{abs(charge)}{'+' if charge > 0 else '-'}")
    names.append(el)
    for name in names:
        try:
            f = cromermann.getCMformula(name)
        except (KeyError, ValueError):
            continue
        return (float(f.c), *map(float, f.a), *map(float, f.b))
    raise ScatteringError(f"no X-ray form factor for {nuclide!r} (charge {charge})", field="species")


def scattering_coefficients(nuclide: str, radiation: str, charge: int = 0,
                            b_override: float | None = None, wavelength: float | None = None) -> np.ndarray:
    """The N_COEFF coefficients of f(s) for one species (see module docstring).

    A finite ``b_override`` (fm) replaces the whole neutron length by a real one (b'' = 0),
    as codes with their own real tables use it. ``wavelength`` (angstrom) selects the
    resonant lengths (:func:`neutron_length`).
    """
    out = np.zeros(N_COEFF)
    if radiation == "neutron":
        if b_override is None or not np.isfinite(b_override):
            b = neutron_length(nuclide, wavelength)
            out[0], out[IMAG] = b.real, b.imag
        else:
            out[0] = float(b_override)
    else:
        out[:IMAG] = xray_coefficients(nuclide, int(charge))  # no anomalous dispersion: c'' = 0
    return out


def form_factor(coeffs: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Evaluate the real part of f(s) of :func:`scattering_coefficients` with NumPy (tests, plots);
    the imaginary part is the constant ``coeffs[IMAG]``."""
    s2 = np.asarray(s, dtype=float) ** 2
    return coeffs[0] + sum(coeffs[1 + i] * np.exp(-coeffs[6 + i] * s2) for i in range(5))
