"""Compositions on Wyckoff orbits: a formula times Z split into orbits, and the molecular
(hydrogen-bearing, organic-like) compositions of ``SynthConfig.hydrogen_fraction``.

:func:`decompose` is the step shared by the real compositions of a formula table
(``formula_fraction``) and the molecular ones: given elements and their atoms per formula
unit, it finds a Z and Wyckoff orbits whose multiplicities give the formula times Z.

:func:`molecular_composition` draws a composition like those of the molecular crystals that
make up a large part of any structure collection (37 % of the real structures in
``../shared/data/structures`` contain hydrogen; COD is mostly organic and metal-organic):
carbon, hydrogen about as many as carbon, a few N and O, now and then a halogen, S or P, or
one metal atom. It is a rule written here, not drawn from any database. Such crystals get the
volume of the Kempster-Lipson rule (about 18 A^3 per non-hydrogen atom in organic crystals;
Kempster & Lipson, Acta Cryst. B28, 3674, 1972), and their hydrogen atoms the neutron
incoherent background that ``xtalhpc generate`` adds to every hydrogen-bearing pattern.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .wyckoff import extra_translations, wyckoff_table

#: Random decompositions of one (composition, Z) into orbits before the next Z is tried.
DECOMPOSE_TRIES = 12
#: Values of Z tried per composition draw.
Z_TRIES = 6
#: Orbits allowed in a crystal of a real composition: real low-symmetry structures have large
#: asymmetric units (a triclinic oxide of 40 atoms has 20 orbits), which the cap of random
#: compositions (8) would exclude.
FORMULA_MAX_ORBITS = 24
#: Volume per non-hydrogen atom of a molecular crystal (Kempster & Lipson 1972), angstrom^3,
#: drawn in this range.
KEMPSTER_LIPSON = (16.0, 20.0)
#: Molecular crystals are drawn only in groups whose general position has at most this many
#: atoms (triclinic to orthorhombic, and tetragonal or trigonal groups such as I4_1/a or R-3):
#: molecules rarely sit in the cubic or hexagonal groups of high order.
MOLECULAR_MAX_GENERAL = 18
#: Heteroatoms (one kind, 1-2 atoms, in 35 % of the molecules) and metals (one atom, 20 %).
_HETERO = ("Cl", "S", "Br", "F", "P", "I")
_METALS = ("Cu", "Zn", "Co", "Ni", "Fe", "Mn", "Na", "K", "Ag", "Cd", "Ca", "Mg", "Sn", "Pt", "Pd")


def pick(weights: list[float], u: float) -> int:
    """Index drawn with probability proportional to ``weights`` for a uniform ``u`` in [0, 1)."""
    target = u * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if target < acc:
            return i
    return len(weights) - 1


@lru_cache(maxsize=None)
def table_lists(space_group: int) -> tuple[list[int], list[int]]:
    """Multiplicity and free parameters per Wyckoff position, as plain lists (the occupation
    loop touches a few numbers, where NumPy's per-call cost dominates)."""
    t = wyckoff_table(space_group)
    return t.multiplicity.tolist(), t.dof.tolist()


def decompose(space_group: int, max_atoms: int, rng, els, counts, index, volumes):
    """Orbits, element per orbit, the sum of atomic volumes and Z for the composition ``els``
    (symbols) with ``counts`` atoms per formula unit; None when no occupation fits.

    Z is drawn among 1..max_atoms // atoms per formula unit with weight 1/Z (small cells more
    likely), at most :data:`Z_TRIES` values. For each Z the atoms of every element (the largest
    count first) are split into orbits at random: a position is chosen among those whose
    multiplicity fits what is left, with weight proportional to its multiplicity (fewer, larger
    orbits, the general position where it fits), fixed positions at most once in the crystal. A
    decomposition is kept when it has at most :data:`FORMULA_MAX_ORBITS` orbits and no
    translation outside the group common to every orbit. ``index`` maps a symbol to its pool
    index, ``volumes`` is the pool's atomic volume per index.
    """
    mult, dof = table_lists(space_group)
    extra = extra_translations(space_group)
    n_fu = sum(counts)
    zmax = max_atoms // n_fu
    if zmax < 1:
        return None
    g = math.gcd(*mult)
    m0 = min(mult)
    # Z for which every element's atoms can be a sum of multiplicities (a necessary condition)
    zs = [z for z in range(1, zmax + 1) if all(c * z >= m0 and (c * z) % g == 0 for c in counts)]
    zw = [1.0 / z for z in zs]
    order = sorted(range(len(els)), key=lambda k: -counts[k])
    for _ in range(min(Z_TRIES, len(zs))):
        j = pick(zw, rng.u())
        z = zs.pop(j)
        zw.pop(j)
        need = [counts[k] * z for k in order]
        for _ in range(DECOMPOSE_TRIES):
            orbits: list[int] = []
            owner: list[int] = []
            ok = True
            for k, n in zip(order, need):
                left = n
                while left > 0 and ok:
                    cand = [i for i in range(len(mult)) if mult[i] <= left and not (dof[i] == 0 and i in orbits)]
                    if not cand or len(orbits) >= FORMULA_MAX_ORBITS:
                        ok = False
                        break
                    i = cand[pick([float(mult[i]) for i in cand], rng.u())]
                    orbits.append(i)
                    owner.append(index[els[k]])
                    left -= mult[i]
                if not ok:
                    break
            if not ok:
                continue
            common = None
            for i in orbits:
                common = extra[i] if common is None else common & extra[i]
            if common:
                continue
            ordered = sorted(range(len(orbits)), key=lambda j: (dof[orbits[j]] != 0, -mult[orbits[j]]))
            wps = np.array([orbits[j] for j in ordered], dtype=np.int64)
            spa = np.array([owner[j] for j in ordered], dtype=np.int64)
            volume = sum(volumes[owner[j]] * mult[orbits[j]] for j in range(len(orbits)))
            return wps, spa, float(volume), z
    return None


def molecular_orbits(space_group: int, max_atoms: int, rng, els, counts, index):
    """Orbits and element per orbit of a molecular crystal of the composition ``els``/``counts``
    (one molecule), and Z; None when it does not fit ``max_atoms`` or the group.

    As in most molecular crystals, the molecule sits on the general position (Z' = 1: every
    atom on its own general orbit, Z the general multiplicity), or, with probability 1/4 where
    the group has one, on a special position of half the general multiplicity (Z' = 1/2: an
    inversion centre, a 2-fold axis or a mirror, with half the molecule in the asymmetric unit:
    pairs of equal atoms on general orbits, and an odd atom of each element on the special
    position; a position without free parameters takes one atom at most).
    """
    mult, dof = table_lists(space_group)
    general = mult[0]
    half = [i for i in range(1, len(mult)) if 2 * mult[i] == general]
    n_fu = sum(counts)
    wps: list[int] = []
    owner: list[int] = []
    z = general
    if half and rng.u() < 0.25 and general // 2 * n_fu <= max_atoms:
        site = half[rng.below(len(half))]
        odd = [k for k in range(len(els)) if counts[k] % 2]
        if odd and (dof[site] > 0 or len(odd) == 1):
            for k in range(len(els)):
                if counts[k] % 2:
                    wps.append(site)
                    owner.append(index[els[k]])
                wps += [0] * (counts[k] // 2)
                owner += [index[els[k]]] * (counts[k] // 2)
            z = general // 2
    if not wps:
        if general * n_fu > max_atoms:
            return None
        for k in range(len(els)):
            wps += [0] * counts[k]
            owner += [index[els[k]]] * counts[k]
    order = sorted(range(len(wps)), key=lambda j: (dof[wps[j]] != 0, -mult[wps[j]]))
    return (np.array([wps[j] for j in order], dtype=np.int64), np.array([owner[j] for j in order], dtype=np.int64),
            z)


def formula_text(els, counts) -> str:
    """``CaTiO3``-style text of a composition (counts of 1 left out)."""
    return "".join(e + (str(c) if c != 1 else "") for e, c in zip(els, counts))


def molecular_composition(rng, max_size: int = 40) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A molecular composition (elements sorted, atoms per molecule): C 2-14, H about 0.5-1.6
    per C (at least 1), N 0-3, O 0-4; with probability 0.35 one heteroatom kind of
    :data:`_HETERO` (1-2 atoms) and with probability 0.2 one metal atom of :data:`_METALS`.
    The carbon range shrinks for groups whose cell holds fewer molecules' worth of atoms
    (``max_size``: atoms per molecule that fit; a molecule has about 2.6 atoms per carbon)."""
    n_c = 2 + rng.below(max(1, min(13, int(max_size / 2.6) - 1)))
    comp = {"C": n_c, "H": max(1, int(round(n_c * rng.between(0.5, 1.6))))}
    n_n = rng.below(4)
    n_o = rng.below(5)
    if n_n:
        comp["N"] = n_n
    if n_o:
        comp["O"] = n_o
    if rng.u() < 0.35:
        comp[_HETERO[rng.below(len(_HETERO))]] = 1 + rng.below(2)
    if rng.u() < 0.2:
        comp[_METALS[rng.below(len(_METALS))]] = 1
    els = tuple(sorted(comp))
    return els, tuple(comp[e] for e in els)


def molecular_volume(els, counts, z: int, rng) -> float:
    """Cell volume of a molecular crystal: Kempster-Lipson's volume per non-hydrogen atom
    (drawn in :data:`KEMPSTER_LIPSON`) times the non-hydrogen atoms in the cell."""
    heavy = sum(c for e, c in zip(els, counts) if e != "H") * z
    return heavy * rng.between(*KEMPSTER_LIPSON)
