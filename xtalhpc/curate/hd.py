"""Hydrogen and deuterium: deuteration and the incoherent background of H.

Neutron scattering lengths (periodictable): b_H = -3.74 fm, b_D = +6.67 fm
(bound coherent). Bound incoherent cross-sections: sigma_inc(H) = 80.26 barn,
sigma_inc(D) = 2.05 barn. Hydrogen's negative b weakens and reshapes Bragg
intensities, and its huge incoherent cross-section adds a flat background that
buries weak peaks; deuteration fixes both, which is why neutron
crystallographers deuterate.

Units: the coherent scale of the simulator is |F|^2 in fm^2 per unit cell
(F = sum_j occ_j b_j exp(2 pi i h.x_j) ..., b in fm). A cross-section sigma in
barn is 100 sigma fm^2, and sigma = 4 pi b^2 for a single nucleus, so b^2 (fm^2)
= 100 sigma (barn) / (4 pi).
"""
from __future__ import annotations

import math

import numpy as np

from ..crystal import Crystal, element_of
from ..errors import InputError
from ..scattering import neutron_incoherent_xs

#: 1 barn = 100 fm^2.
FM2_PER_BARN = 100.0
_HYDROGEN = ("H", "1H", "D", "2H", "T", "3H")


def deuterate(crystal: Crystal) -> Crystal:
    """Replace hydrogen (``"H"``, ``"1H"``) by deuterium (``"D"``).

    Returns
    -------
    Crystal
        A copy with every H atom turned into D; scattering-length overrides of
        those atoms are cleared (NaN) so the tables' b_D = 6.67 fm applies, and
        a note records how many H per cell were replaced. A crystal without
        hydrogen is returned unchanged (the same object).
    """
    hit = np.array([s in ("H", "1H") for s in crystal.species])
    if not hit.any():
        return crystal
    bl = None
    if crystal.scattering_length is not None:
        bl = crystal.scattering_length.copy()
        bl[hit] = np.nan
        if np.all(np.isnan(bl)):
            bl = None
    species = tuple("D" if h else s for s, h in zip(crystal.species, hit))
    n_h = float(crystal.occupancy[hit].sum())
    return crystal.replace(species=species, scattering_length=bl,
                           notes=crystal.notes + (f"deuterated: {n_h:g} H per cell replaced by D",))


def incoherent_cross_section(nuclide: str) -> float:
    """Bound incoherent cross-section (barn) of a nuclide (see xtalhpc.scattering)."""
    return neutron_incoherent_xs(nuclide)


def incoherent_background(crystal: Crystal, *, all_elements: bool = False) -> float:
    """Flat incoherent scattering per unit cell, in the units of |F|^2 (fm^2 per steradian).

    dsigma/dOmega_inc per cell = sum_j occ_j sigma_inc,j / (4 pi),
    with sigma_inc in fm^2 (= 100 x barn). The sum runs over the hydrogen
    isotopes (H: 80.26 barn, D: 2.05 barn, T: 0.14 barn), or over every atom
    with ``all_elements=True``. It is proportional to the H content: about
    80.26 * 100 / (4 pi) = 638.7 fm^2 per H atom, against b_H^2 = 14.0 fm^2 of
    coherent |F|^2 at zero angle per H.

    To place it under a powder pattern whose reflections have integrated areas
    m |F|^2 L(theta) (L = 1 / (sin^2 theta cos theta), areas over 2theta in
    degrees) use :func:`incoherent_background_level`.
    """
    # one look-up per distinct species, the occupancies summed with NumPy (this runs for every
    # H-containing pattern of a generated dataset)
    species = np.asarray(crystal.species)
    total = 0.0
    for s in set(crystal.species):
        if all_elements or s in _HYDROGEN or element_of(s) == "H":
            total += float(crystal.occupancy[species == s].sum()) * incoherent_cross_section(s)
    return total * FM2_PER_BARN / (4.0 * math.pi)


def incoherent_background_level(crystal: Crystal, wavelength: float, *, all_elements: bool = False) -> float:
    """Flat background on the scale of a simulated powder pattern (per degree of 2theta).

    Derivation (Squires, *Introduction to the theory of thermal neutron
    scattering*, powder cross-section; Debye-Scherrer geometry with a detector
    strip of fixed height): a reflection family of a powder of N cells of
    volume v0 scatters sigma_hkl = N lambda^3 m |F|^2 / (4 v0 sin theta) into a
    cone of solid angle 2 pi sin(2theta) d(2theta), so the area (2theta in
    radians) recorded per unit detector height is
    N lambda^3 m |F|^2 L(theta) / (16 pi v0); the incoherent scattering gives
    N dsigma/dOmega_inc per radian. On a pattern scaled so that reflection
    areas are m |F|^2 L(theta) with 2theta in degrees, the flat level is

        B = (pi / 180) * 16 pi v0 / lambda^3 * dsigma/dOmega_inc
          = (4 pi / 180) * (v0 / lambda^3) * sum_j occ_j sigma_inc,j  [fm^2 per degree]

    with v0 in angstrom^3, lambda in angstrom, sigma in fm^2. Bound
    cross-sections, no absorption, self-shielding or inelastic (Placzek)
    corrections, no Debye-Waller factor on the Bragg side: an order-of-magnitude
    model of the H background, as the poster's H/D question needs.
    """
    if not wavelength > 0:
        raise InputError(f"wavelength {wavelength} A must be > 0", field="wavelength")
    per_sr = incoherent_background(crystal, all_elements=all_elements)
    return (math.pi / 180.0) * 16.0 * math.pi * crystal.volume / wavelength**3 * per_sr
