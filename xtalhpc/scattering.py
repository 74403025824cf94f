"""Scattering amplitudes per species: neutron lengths and X-ray form factors.

Both radiations are expressed in one form that the kernels evaluate,

    f(s) = c + sum_{i<5} a_i exp(-b_i s^2),   s = sin(theta)/lambda (1/angstrom),

so that the structure-factor kernel has one code path:

* neutron: c = bound coherent scattering length b_c (fm, real part for
  absorbers) from ``periodictable`` (isotopes supported), all a_i = 0;
* X-ray: Waasmaier & Kirfel (1995) five-Gaussian coefficients as tabulated in
  ``periodictable.cromermann`` (electrons), ions where the table has them,
  else the neutral atom. No anomalous dispersion (f', f'') is applied.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import InputError, ScatteringError

RADIATIONS = ("neutron", "xray")
N_COEFF = 11  #: c, a1..a5, b1..b5


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
    """Bound coherent scattering length (fm) of a nuclide (``"Fe"``, ``"D"``, ``"7Li"``).

    The real part is used for absorbing nuclides (B, Cd, Gd, ...).
    """
    b = getattr(nuclide_atom(nuclide).neutron, "b_c", None)
    if b is None or not np.isfinite(b):
        raise ScatteringError(f"periodictable has no bound coherent scattering length for {nuclide!r}",
                              field="species")
    return float(np.real(b))


@lru_cache(maxsize=None)
def neutron_incoherent_xs(nuclide: str) -> float:
    """Bound incoherent scattering cross-section (barn) of a nuclide, from periodictable."""
    v = getattr(nuclide_atom(nuclide).neutron, "incoherent", None)
    if v is None or not np.isfinite(v):
        raise ScatteringError(f"periodictable has no incoherent cross-section for {nuclide!r}", field="species")
    return float(v)


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
                            b_override: float | None = None) -> np.ndarray:
    """The 11 coefficients of f(s) for one species (see module docstring)."""
    out = np.zeros(N_COEFF)
    if radiation == "neutron":
        out[0] = neutron_b(nuclide) if b_override is None or not np.isfinite(b_override) else float(b_override)
    else:
        out[:] = xray_coefficients(nuclide, int(charge))
    return out


def form_factor(coeffs: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Evaluate f(s) of :func:`scattering_coefficients` with NumPy (for tests and plots)."""
    s2 = np.asarray(s, dtype=float) ** 2
    return coeffs[0] + sum(coeffs[1 + i] * np.exp(-coeffs[6 + i] * s2) for i in range(5))
