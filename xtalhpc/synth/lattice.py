"""Lattice parameters of synthetic crystals: the cell of a crystal system at a given volume
(:func:`_sample_cell`) and its pseudo-symmetric variant (:func:`_pseudo_cell`,
``SynthConfig.pseudo_fraction``). Random draws come from the generator's ``_Uniforms`` stream,
in a fixed order, so a crystal stays a pure function of its seed and index."""
from __future__ import annotations

import math

import numpy as np


def _lattice_matrix(cell: np.ndarray) -> np.ndarray:
    a, b, c = cell[:3]
    ca, cb, cg = np.cos(np.radians(cell[3:]))
    sg = math.sin(math.radians(cell[5]))
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = math.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, cz]])


_LOG_HALF = math.log(0.5)


def _sample_cell(system: str, volume: float, rng) -> np.ndarray:
    """Lattice parameters of ``system`` (standard setting) with the given volume (angstrom^3).

    Axis ratios b/a and c/a are log-uniform in [1/2, 2] (c/a in [1/2, 2.5] for
    hexagonal axes); monoclinic beta is uniform in 90-120 degrees; triclinic
    angles are uniform in 60-120 degrees, redrawn while the cell is too flat.
    """
    u = (rng.u(), rng.u(), rng.u())
    al = be = ga = 90.0
    rb = rc = 1.0
    if system == "triclinic":
        while True:
            al, be, ga = (rng.between(60.0, 120.0) for _ in range(3))
            ca, cb, cg = math.cos(math.radians(al)), math.cos(math.radians(be)), math.cos(math.radians(ga))
            if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg > 0.35:  # away from flat, degenerate shapes
                break
    elif system == "monoclinic":
        be = 90.0 + 30.0 * float(u[2])
    if system in ("triclinic", "monoclinic", "orthorhombic"):
        rb = math.exp(_LOG_HALF * (1.0 - 2.0 * float(u[0])))
        rc = math.exp(_LOG_HALF * (1.0 - 2.0 * float(u[1])))
    elif system == "tetragonal":
        rc = math.exp(_LOG_HALF * (1.0 - 2.0 * float(u[1])))
    elif system in ("trigonal", "hexagonal"):
        ga = 120.0
        rc = 0.5 * math.exp(math.log(5.0) * float(u[1]))
    ca, cb, cg = math.cos(math.radians(al)), math.cos(math.radians(be)), math.cos(math.radians(ga))
    vf = math.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)
    a = (volume / (rb * rc * vf)) ** (1.0 / 3.0)
    return np.array([a, a * rb, a * rc, al, be, ga])


#: Relative distance (low, high) of a pseudo-symmetric cell's ratio from the higher metric's.
_PSEUDO_REL = (0.002, 0.03)
#: Degrees (low, high) of a pseudo-symmetric cell's angles from 90.
_PSEUDO_DEG = (0.3, 4.0)
#: c/a on hexagonal axes of a rhombohedral lattice whose primitive cell is cubic: alpha = 60 (F), 90 (P), 109.47 (I).
_RHOMB_CUBIC = (math.sqrt(6.0), math.sqrt(1.5), math.sqrt(1.5) / 2.0)
_R_GROUPS = frozenset((146, 148, 155, 160, 161, 166, 167))


def _pseudo_cell(cell: np.ndarray, space_group: int, system: str, rng) -> np.ndarray:
    """``cell`` moved close to a metric of higher symmetry, at the same volume (see ``pseudo_fraction``).

    Hexagonal and trigonal P lattices (their holohedry is maximal) and cubic cells are returned unchanged.
    """
    a, b, c, al, be, ga = (float(x) for x in cell)
    volume = _cell_volume(cell)

    def near(target: float) -> float:
        d = rng.between(*_PSEUDO_REL)
        return target * (1.0 + d if rng.u() < 0.5 else 1.0 - d)

    def near90() -> float:
        d = rng.between(*_PSEUDO_DEG)
        return 90.0 + d if rng.u() < 0.5 else 90.0 - d

    if system == "triclinic":
        if rng.u() < 0.5:          # pseudo-orthorhombic: every angle near 90
            al, be, ga = near90(), near90(), near90()
        else:                      # pseudo-monoclinic: alpha and gamma near 90, beta as drawn
            al, ga = near90(), near90()
    elif system == "monoclinic":
        be = 90.0 + rng.between(*_PSEUDO_DEG)
    elif system == "orthorhombic":
        i, j = ((0, 1), (0, 2), (1, 2))[rng.below(3)]
        axes = [a, b, c]
        axes[j] = axes[i] * near(1.0 if rng.u() < 0.6 else math.sqrt(3.0))
        a, b, c = axes
    elif system == "tetragonal":
        c = a * near(1.0 if rng.u() < 0.5 else math.sqrt(2.0))
    elif system == "trigonal" and space_group in _R_GROUPS:
        c = a * near(_RHOMB_CUBIC[rng.below(3)])
    else:
        return cell
    out = np.array([a, b, c, al, be, ga])
    return out * np.array([(volume / _cell_volume(out)) ** (1.0 / 3.0)] * 3 + [1.0] * 3)


def _cell_volume(cell) -> float:
    a, b, c = (float(x) for x in cell[:3])
    ca, cb, cg = np.cos(np.radians(np.asarray(cell[3:], dtype=float)))
    return a * b * c * math.sqrt(max(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg, 0.0))
