"""Random crystals for any of the 230 space groups.

One crystal is drawn as follows (all from one NumPy generator seeded by
``(seed, index, space_group)``, so item ``index`` of a batch never depends on
how the batch is split over processes):

1. a composition: 1-4 distinct elements from an :class:`ElementPool`;
2. a Wyckoff occupation of 2-8 orbits whose multiplicities fit ``max_atoms``:
   the general position first whenever it fits (special positions alone very
   often carry more symmetry than the group), otherwise at least two orbits
   with free parameters; positions without free parameters at most once; and
   no translation outside the group common to all occupied positions
   (non-characteristic orbits, :func:`~xtalhpc.synth.wyckoff.extra_translations`).
   A share ``special_fraction`` of the crystals is drawn like most real
   inorganic structures of high symmetry instead (rock salt, perovskite, spinel,
   fluorite: atoms on special positions only): each Wyckoff position that fits
   drawn with weight 1/sqrt(multiplicity), the general position not preferred; such a crystal is kept
   only when the symmetry search finds exactly the intended group's operations (``_SPECIAL_TRIES`` draws,
   then the rule above);
3. species per orbit: every chosen element on at least one orbit, orbits on
   fixed positions on distinct elements where possible (two fixed orbits of one
   element are what most often adds symmetry), never two equal atoms alone;
4. lattice parameters of the crystal system (standard setting; hexagonal axes
   for the rhombohedral groups) scaled to ``volume = f * sum(atomic volumes)``
   with ``f`` drawn from ``volume_factor``;
5. free Wyckoff parameters uniform in [0, 1), redrawn while they lie within
   ``generic_tol`` of a relation the position does not impose (how random
   coordinates pick up extra symmetry), accepted when every periodic distance
   is at least ``distance_factor * (r_cov,i + r_cov,j)``. When an orbit does not
   fit after ``_ORBIT_TRIES`` draws, the cell grows by 10 % in volume and the
   orbit is tried again (atoms already placed keep their fractional
   coordinates; their distances only grow); after 12 such steps the occupation
   is dropped and steps 1-5 start again.

Steps 4-5 run in one Numba kernel. Nothing is computed at import time;
Wyckoff tables and the kernel are built on first use.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..crystal import Crystal
from ..errors import InputError, XtalhpcError
from ..spacegroups import check_space_group, crystal_system
from .compositions import (MOLECULAR_MAX_GENERAL, decompose, formula_text, molecular_composition, molecular_orbits,
                           molecular_volume)
from .compositions import pick as _pick
from .compositions import table_lists as _table_lists
from .elements import ElementPool
from .lattice import _lattice_matrix, _pseudo_cell, _sample_cell
from .wyckoff import WyckoffTable, extra_translations, wyckoff_table

#: Probabilities of 1, 2, 3, 4 distinct elements per crystal.
_N_SPECIES_P = [0.10, 0.35, 0.35, 0.20]
#: Draws of the free parameters of one orbit before the cell grows.
_ORBIT_TRIES = 20
#: Volume factor by which the cell grows when an orbit does not fit ...
_GROW = 1.1
#: ... at most this many times (3.1x the estimated volume); beyond that the
#: occupation is dropped and a new one drawn (two 6e orbits on one 6-fold axis
#: of P6_422, say, need a very long c axis and make a crystal of low density).
_MAX_GROW = 12
#: Hard cap of orbits per crystal (keeps the asymmetric unit small, like real structures).
_MAX_ORBITS = 8
#: Occupations drawn with the special-position rule before a crystal falls back to the
#: general-position-first rule (in groups such as P222 every set of special positions
#: carries more symmetry than the group, and no draw can pass the check).
_SPECIAL_TRIES = 8
#: Occupations drawn from a real composition of the group before a crystal falls back to the
#: rules above (each draws a composition, a Z and an orbit decomposition afresh).
_FORMULA_TRIES = 8
#: Molecular compositions drawn (each tried with a few Z) before a crystal falls back to the
#: rules above.
_MOLECULAR_TRIES = 8


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic crystals are drawn. Every field is validated on construction.

    Attributes
    ----------
    max_atoms : int
        Most atoms in the conventional cell (>= 1). Each group needs at least
        :func:`min_atoms` (1 for P1, 96 for Fm-3c); below that InputError.
    distance_factor : float
        Minimum distance between atoms i and j, as a multiple of the sum of
        their covalent radii (0 < f <= 1.5). 0.75 keeps bonds plausible
        (Fe-O >= 1.49 A, Si-O >= 1.33 A) while leaving room to place atoms.
    volume_factor : (float, float)
        Range of the random factor applied to the sum of atomic volumes.
    b_iso_range : (float, float)
        Range (angstrom^2) of the isotropic displacement drawn per orbit.
    max_species : int
        Most distinct elements per crystal (1-4).
    max_attempts : int
        Occupations drawn (each placed in a cell grown at most 12 times by 10 %
        in volume, and checked with spglib if ``symprec`` is set) before giving up.
    symprec : float or None
        If set, every crystal is checked with spglib at this tolerance (angstrom)
        and redrawn when spglib finds another space group. Off by default: the
        sampling rules above already give the intended group for >= 99 % of
        crystals in every group (see docs/synthetic.md), and the check costs time.
    generic_tol : float
        Free coordinates that satisfy a small-integer relation such as
        ``c . x = k/24`` so nearly that moving the atom by less than this distance
        (angstrom) would make it exact are redrawn; 0 disables. Twice
        spglib's usual ``symprec`` of 1e-3 A.
    pool : ElementPool or None
        Elements and weights; None uses :meth:`ElementPool.default`.
    special_fraction : float
        Share (0-1) of crystals whose Wyckoff positions are drawn among those that fit
        with weight 1/sqrt(multiplicity), without preferring the general position, as in most real inorganic
        structures of high symmetry; each such crystal is checked with spglib
        (the operation search that labels P1 inputs, :func:`xtalhpc.findsym.find_operations`,
        at ``symprec``, else 1e-3 A) and redrawn until it has exactly the intended group.
        0 (default) draws every crystal with the general position first and leaves
        the random streams, hence every crystal, as they were before the option.
    formula_fraction : float
        Share (0-1) of crystals whose composition is one of the real compositions that
        ``formulas`` lists for their space group (elements and atom ratios, e.g. CaTiO3 in
        Pnma), placed on Wyckoff orbits whose multiplicities give the formula times Z
        (:func:`_formula_occupation`); such a crystal is checked like a special-position one
        when no orbit is on the general position or it has a single element. A group without a usable composition, or
        one whose compositions fit no occupation within ``max_atoms``, falls back to the
        rules above. 0 (default) leaves every crystal as before the option.
    formulas : FormulaTable or None
        The compositions (:class:`xtalhpc.synth.formulas.FormulaTable`); needed when
        ``formula_fraction > 0``. Its elements must be in the pool.
    pseudo_fraction : float
        Share (0-1) of crystals whose cell is drawn close to a metric of higher symmetry
        (:func:`_sample_cell`): monoclinic beta within 4 degrees of 90, an orthorhombic pair of
        axes within 3 % of 1:1 or 1:sqrt(3), tetragonal c/a near 1 or sqrt(2), rhombohedral c/a
        near a cubic lattice's, triclinic angles near 90. Real structures are often
        pseudo-symmetric (distorted perovskites, superstructures of simple cells): their
        patterns show split or broadened peaks where the higher symmetry has one, and
        telling the true group from the nearby one is what a powder pattern makes hard. The
        atoms keep the group's symmetry only. 0 (default) leaves every crystal as before.
    hydrogen_fraction : float
        Share (0-1) of crystals drawn as molecular crystals with hydrogen, in groups whose
        general position has at most 18 atoms (:mod:`xtalhpc.synth.compositions`): a
        composition such as C8H9NO2 or C6H6ClCuN2O, decomposed into Wyckoff orbits like a
        real composition, in a cell of Kempster and Lipson's 16-20 A^3 per non-hydrogen atom.
        Any value above 0 also adds hydrogen to the element pool (weight 0: random
        compositions never draw it; volume 5.08 A^3, Hofmann's increment, Acta Cryst. B58,
        489, 2002), so that a formula table read with :data:`HYDROGEN_POOL_ELEMENTS` keeps its
        hydroxides, hydrates and hydrides. 0 (default) leaves every crystal as before.
    """

    max_atoms: int = 160
    distance_factor: float = 0.75
    volume_factor: tuple[float, float] = (0.9, 1.4)
    b_iso_range: tuple[float, float] = (0.3, 1.5)
    max_species: int = 4
    max_attempts: int = 60
    symprec: float | None = None
    generic_tol: float = 0.002
    pool: ElementPool | None = field(default=None, compare=False)
    special_fraction: float = 0.0
    formula_fraction: float = 0.0
    formulas: object | None = field(default=None, compare=False)
    pseudo_fraction: float = 0.0
    hydrogen_fraction: float = 0.0

    def __post_init__(self) -> None:
        src = "synthetic crystal config"
        if isinstance(self.max_atoms, bool) or not isinstance(self.max_atoms, (int, np.integer)) or self.max_atoms < 1:
            raise InputError(f"max_atoms {self.max_atoms!r} must be an integer >= 1", src, "max_atoms")
        f = self.distance_factor
        if not (isinstance(f, (int, float)) and 0 < f <= 1.5):
            raise InputError(f"distance_factor {f!r} must lie in (0, 1.5]", src, "distance_factor")
        for name in ("volume_factor", "b_iso_range"):
            v = getattr(self, name)
            try:
                lo, hi = (float(x) for x in v)
            except (TypeError, ValueError):
                raise InputError(f"{name} {v!r} must be two numbers (low, high)", src, name) from None
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi) or (name == "volume_factor" and lo <= 0):
                raise InputError(f"{name} {v!r} must satisfy 0 < low <= high (finite)", src, name)
            object.__setattr__(self, name, (lo, hi))
        if not isinstance(self.max_species, (int, np.integer)) or not 1 <= self.max_species <= 4:
            raise InputError(f"max_species {self.max_species!r} must be 1-4", src, "max_species")
        if not isinstance(self.max_attempts, (int, np.integer)) or self.max_attempts < 1:
            raise InputError(f"max_attempts {self.max_attempts!r} must be an integer >= 1", src, "max_attempts")
        if not (isinstance(self.generic_tol, (int, float)) and 0 <= self.generic_tol < 0.1):
            raise InputError(f"generic_tol {self.generic_tol!r} must lie in [0, 0.1) angstrom", src, "generic_tol")
        if self.symprec is not None and not (0 < float(self.symprec) < 1):
            raise InputError(f"symprec {self.symprec!r} must lie in (0, 1) angstrom", src, "symprec")
        sf = self.special_fraction
        if isinstance(sf, bool) or not isinstance(sf, (int, float)) or not 0 <= sf <= 1:
            raise InputError(f"special_fraction {sf!r} must be a number in [0, 1]", src, "special_fraction")
        object.__setattr__(self, "special_fraction", float(sf))
        ff = self.formula_fraction
        if isinstance(ff, bool) or not isinstance(ff, (int, float)) or not 0 <= ff <= 1:
            raise InputError(f"formula_fraction {ff!r} must be a number in [0, 1]", src, "formula_fraction")
        object.__setattr__(self, "formula_fraction", float(ff))
        pf = self.pseudo_fraction
        if isinstance(pf, bool) or not isinstance(pf, (int, float)) or not 0 <= pf <= 1:
            raise InputError(f"pseudo_fraction {pf!r} must be a number in [0, 1]", src, "pseudo_fraction")
        object.__setattr__(self, "pseudo_fraction", float(pf))
        hf = self.hydrogen_fraction
        if isinstance(hf, bool) or not isinstance(hf, (int, float)) or not 0 <= hf <= 1:
            raise InputError(f"hydrogen_fraction {hf!r} must be a number in [0, 1]", src, "hydrogen_fraction")
        object.__setattr__(self, "hydrogen_fraction", float(hf))
        if ff > 0 and self.formulas is None:
            raise InputError("formula_fraction > 0 needs a formula table (formulas=FormulaTable.from_csv(...))",
                             src, "formulas")
        if self.formulas is not None:
            pool_els = set(_pool_of(self).elements)
            outside = sorted(set(self.formulas.elements) - pool_els)
            if outside:
                raise InputError(f"the formula table has elements outside the element pool: {outside[:8]}; "
                                 "read it with the pool's elements (FormulaTable.from_csv(path, pool.elements))",
                                 src, "formulas")


# ---------------------------------------------------------------------------
# Numba kernels (compiled on first call, cached on disk)


@lru_cache(maxsize=1)
def _compile():
    """The Numba placement kernel (compiled on first use, cached on disk).

    Imported lazily so that importing xtalhpc.synth does not import numba.
    """
    from ._kernels import place

    return place


#: Space group whose point group is the holohedry of each crystal system (same axes as the standard setting).
_HOLOHEDRY = {"triclinic": 2, "monoclinic": 10, "orthorhombic": 47, "tetragonal": 123, "trigonal": 191,
              "hexagonal": 191, "cubic": 221}


@lru_cache(maxsize=None)
def _relations(system: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate relations through which random coordinates can gain symmetry in ``system``.

    An extra operation (R|t) mapping an orbit onto itself needs
    (R - R_g) x = t_g - t (mod 1) for some group operation g; R and R_g both lie in
    the lattice's holohedry. Returns the distinct non-zero rows c of R - R_g (one
    of each +-c) and a (3, 3) mask of the coordinate pairs (d, e) that a
    holohedry operation mixes (R[d, e] != 0), used for relations between orbits.
    Triclinic to orthorhombic: c = 2 e_i only and d == e; cubic adds x +- y and
    permutations; hexagonal axes add combinations such as x - 2y.
    """
    t = wyckoff_table(_HOLOHEDRY[system])
    rots = np.round(t.ops[: int(t.multiplicity[0]), :, :3]).astype(int)
    rows: set[tuple[int, ...]] = set()
    for r1 in rots:
        for r2 in rots:
            for row in (r1 - r2):
                v = tuple(int(x) for x in row)
                if any(v) and tuple(-x for x in v) not in rows:
                    rows.add(v)
    combos = np.array(sorted(rows), dtype=np.float64)
    cross = np.any(rots != 0, axis=0)
    for a in (combos, cross):
        a.setflags(write=False)
    return combos, cross


# ---------------------------------------------------------------------------
# occupation


class _Uniforms:
    """Uniform draws from a NumPy Generator, fetched 32 at a time.

    The occupation takes a few dozen scalar draws; one NumPy call per draw would
    cost more than everything else it does.
    """

    __slots__ = ("rng", "buf", "pos")

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.buf: list[float] = []
        self.pos = 0

    def u(self) -> float:
        if self.pos == len(self.buf):
            self.buf = self.rng.random(32).tolist()
            self.pos = 0
        self.pos += 1
        return self.buf[self.pos - 1]

    def between(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.u()

    def below(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)

    def permutation(self, n: int) -> list[int]:
        out = list(range(n))
        for i in range(n - 1, 0, -1):  # Fisher-Yates
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out

    def geometric_half(self) -> int:
        """Trials until the first success with p = 1/2 (1, 2, ...)."""
        k = 1
        while self.u() < 0.5:
            k += 1
        return k

    def seed64(self) -> np.uint64:
        return self.rng.integers(2**63, dtype=np.uint64)


def _choose_orbits(table: WyckoffTable, max_atoms: int, n_target: int, rng: "_Uniforms",
                   special: bool = False) -> list[int]:
    """Wyckoff positions (indices into ``table``) to occupy; see the module docstring.
    ``special``: every position that fits, with weight 1/sqrt(multiplicity) (no general
    position first, no second free orbit required); the caller checks the crystal's group.

    Besides the multiplicity budget and the once-only rule for fixed positions,
    the occupied positions must not share a translation outside the group
    (:func:`~xtalhpc.synth.wyckoff.extra_translations`): in Fm-3c, for example,
    every special position but 96i has an orbit with a cell half as long.
    """
    mult, dof = _table_lists(table.space_group)
    extra = extra_translations(table.space_group)
    n_wp = len(mult)
    for _ in range(20):
        chosen: list[int] = []
        common: frozenset | None = None
        atoms = 0
        for k in range(n_target):
            budget = max_atoms - atoms
            cand = [i for i in range(n_wp) if mult[i] <= budget and not (dof[i] == 0 and i in chosen)]
            if special:
                pass
            elif k == 0:
                # The general position, whenever it fits: orbits on special positions
                # alone very often have more symmetry than the group (all special
                # positions of P222 lie on 2-fold axes and any set of them is Pmmm).
                cand = [0] if mult[0] <= budget else [i for i in cand if dof[i] > 0]
            elif k == 1 and dof[chosen[0]] < 3:
                cand = [i for i in cand if dof[i] > 0]  # no general position: a second free orbit
            if common:
                # spend the last orbits (or, by chance, earlier ones) on breaking extra translations
                breaking = [i for i in cand if not common <= extra[i]]
                if breaking and (k >= n_target - 2 or rng.u() < 0.5):
                    cand = breaking
            if not cand:
                break
            # the general position with probability ~1/3 when it is a candidate, else a special one uniformly
            if special:
                # small orbits more likely (weight 1/sqrt(multiplicity)): real structures of
                # high symmetry have small formula units on few, small orbits
                i = cand[_pick([mult[i] ** -0.5 for i in cand], rng.u())]
            else:
                w = [0.5 * (len(cand) - 1) if (i == 0 and len(cand) > 1) else 1.0 for i in cand]
                i = cand[_pick(w, rng.u())]
            chosen.append(i)
            common = extra[i] if common is None else common & extra[i]
            atoms += mult[i]
        if chosen and not common:
            return chosen
    raise InputError(f"found no Wyckoff occupation of space group {table.space_group} with at most {max_atoms} "
                     "atoms that has exactly the group's translations; raise max_atoms to at least "
                     f"{mult[0]} (the general position)", "synthetic crystal", "max_atoms")


@lru_cache(maxsize=None)
def min_atoms(space_group: int) -> int:
    """Smallest ``max_atoms`` with which ``space_group`` can be generated.

    The smallest orbit with free parameters whose position has no extra
    translation, or the smallest such pair of orbits, or the general position.
    """
    t = wyckoff_table(space_group)
    extra = extra_translations(space_group)
    mult, dof = t.multiplicity, t.dof
    best = int(mult[0])
    for i in np.flatnonzero(dof > 0):
        if not extra[i]:
            best = min(best, int(mult[i]))
        for j in range(t.n_positions):
            if (j != i or dof[j] > 0) and not (extra[i] & extra[j]):
                best = min(best, int(mult[i] + mult[j]))
    return best


# ---------------------------------------------------------------------------
# public API


def _check_seed(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} {value!r} must be an integer >= 0", "synthetic crystal", name)
    return int(value)


def generate_crystal(space_group: int, seed: int, index: int, config: SynthConfig | None = None,
                     **overrides) -> Crystal:
    """One random crystal of ``space_group``, a pure function of ``(space_group, seed, index, config)``.

    Parameters
    ----------
    space_group : int
        International Tables number 1-230 (standard setting).
    seed, index : int
        Non-negative integers; the crystal's random stream is seeded by
        ``(seed, index, space_group)``.
    config : SynthConfig, optional
        Sampling settings; keyword ``overrides`` (e.g. ``max_atoms=64``) replace fields.

    Returns
    -------
    Crystal
        Full conventional cell, named ``syn-sg{N}-{index}``, source
        ``"synthetic seed=S index=I"``, with the Wyckoff occupation in ``notes``.
    """
    sg = check_space_group(space_group, "synthetic crystal", "space_group")
    seed = _check_seed(seed, "seed")
    index = _check_seed(index, "index")
    cfg = config or _default_config()
    if overrides:
        kw = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
        unknown = sorted(set(overrides) - set(kw))
        if unknown:
            raise InputError(f"unknown option(s) {unknown}; allowed: {sorted(kw)}", "generate_crystal", unknown[0])
        kw.update(overrides)
        cfg = SynthConfig(**kw)
    pool = _pool_of(cfg)
    table = wyckoff_table(sg)
    need = min_atoms(sg)
    if cfg.max_atoms < need:
        raise InputError(f"max_atoms {cfg.max_atoms} is too small for space group {sg}: its smallest Wyckoff "
                         f"occupation with free parameters and exactly the group's translations has {need} atoms",
                         "synthetic crystal", "max_atoms")
    rng = _Uniforms(np.random.default_rng(np.random.SeedSequence([seed, index, sg])))
    place = _compile()
    system = crystal_system(sg)
    # no draw at all when the option is off: crystals stay what they were before it
    special_left = _SPECIAL_TRIES if cfg.special_fraction > 0 and rng.u() < cfg.special_fraction else 0
    pseudo = cfg.pseudo_fraction > 0 and rng.u() < cfg.pseudo_fraction
    formula_left = 0
    if cfg.formula_fraction > 0 and rng.u() < cfg.formula_fraction and cfg.formulas.compositions(sg):
        formula_left = _FORMULA_TRIES
    molecular_left = 0
    if cfg.hydrogen_fraction > 0 and rng.u() < cfg.hydrogen_fraction and int(table.multiplicity[0]) <= MOLECULAR_MAX_GENERAL:
        molecular_left = _MOLECULAR_TRIES
    for _ in range(cfg.max_attempts):
        formula = None
        molecular = molecular_left > 0
        if molecular:
            molecular_left -= 1
            formula = _molecular_occupation(table, cfg, pool, rng)
        elif formula_left > 0:
            formula_left -= 1
            formula = _formula_occupation(table, cfg, pool, rng)
        special = formula is None and special_left > 0
        special_left -= special
        if formula is not None:
            wps, sp, volume, note = formula
        else:
            wps, sp, volume = _occupation(table, cfg, pool, rng, special)
            note = None
        if not (molecular and formula is not None):  # the molecular volume is drawn already
            volume *= rng.between(*cfg.volume_factor)
        out = _place(table, system, cfg, pool, rng, place, wps, sp, volume, pseudo)
        if out is None:
            continue
        b = [rng.between(*cfg.b_iso_range) for _ in range(wps.size)]
        crystal = _to_crystal(sg, seed, index, table, pool, out, wps, sp, b)
        if note is not None:
            crystal = crystal.replace(notes=crystal.notes + (note,))
        # a real composition is checked like a special-position crystal when no orbit is on the
        # general position, or when it has one element (two equal atoms alone are centrosymmetric)
        check = special or (formula is not None and (0 not in wps.tolist() or len(set(sp.tolist())) == 1))
        if check and not _exactly_the_group(crystal, len(crystal.symmetry), cfg.symprec):
            continue
        if cfg.symprec is not None and spglib_number(crystal, cfg.symprec) != sg:
            continue
        return crystal
    raise XtalhpcError(f"no crystal of space group {sg} fitted after {cfg.max_attempts} occupations "
                       f"(seed={seed}, index={index}); raise max_attempts or lower distance_factor")


def generate_crystals(space_groups: Sequence[int] | int, n_per_group: int, seed: int,
                      config: SynthConfig | None = None, start: int = 0, stop: int | None = None,
                      **overrides) -> list[Crystal]:
    """``n_per_group`` crystals for each space group, in order.

    Item ``i`` is ``generate_crystal(space_groups[i // n_per_group], seed, i)``, so
    any slice ``[start, stop)`` can be generated on its own (one MPI rank each) and
    the union equals the whole batch.
    """
    groups = [space_groups] if isinstance(space_groups, (int, np.integer)) else list(space_groups)
    if not groups:
        raise InputError("no space groups given", "generate_crystals", "space_groups")
    groups = [check_space_group(g, "generate_crystals", "space_groups") for g in groups]
    if isinstance(n_per_group, bool) or not isinstance(n_per_group, (int, np.integer)) or n_per_group <= 0:
        raise InputError(f"n_per_group {n_per_group!r} must be an integer >= 1", "generate_crystals", "n_per_group")
    seed = _check_seed(seed, "seed")
    total = len(groups) * int(n_per_group)
    stop = total if stop is None else min(int(stop), total)
    if overrides:
        base = config or SynthConfig()
        kw = {f: getattr(base, f) for f in base.__dataclass_fields__}
        kw.update(overrides)
        config = SynthConfig(**kw)
    return [generate_crystal(groups[i // n_per_group], seed, i, config) for i in range(int(start), stop)]


def spglib_number(crystal: Crystal, symprec: float = 1e-3) -> int | None:
    """Space-group number spglib finds for ``crystal`` at ``symprec`` (angstrom); None if it finds none."""
    import spglib

    lat = _lattice_matrix(crystal.cell)
    _, numbers = np.unique(np.asarray(crystal.species), return_inverse=True)
    ds = spglib.get_symmetry_dataset((lat, crystal.frac, numbers), symprec=symprec)
    return None if ds is None else int(ds.number)


def _exactly_the_group(crystal: Crystal, order: int, symprec: float | None) -> bool:
    """True when the operations that map the crystal onto itself within ``symprec`` angstrom
    (:func:`xtalhpc.findsym.find_operations`, the search that labels P1 inputs) are exactly
    the ``order`` operations of its group in the conventional cell: those all hold, so any
    other one (a rotation or a translation the group lacks) makes the count larger. Atoms
    are compared by element alone, as spglib does: orbits that differ only in their B would
    otherwise keep a group the pattern does not show (Mg on 2c and 2d of P6_3/mmc is
    P6/mmm with half the c axis)."""
    from ..findsym import FIND_SYMPREC, find_operations

    symprec = FIND_SYMPREC if symprec is None else symprec  # the tolerance that labels P1 inputs
    same_b = crystal.replace(b_iso=np.ones(crystal.n_atoms))
    return len(find_operations(same_b, symprec)[0]) == order


# ---------------------------------------------------------------------------
# internals


@lru_cache(maxsize=1)
def _default_config() -> SynthConfig:
    return SynthConfig()


@lru_cache(maxsize=1)
def _default_pool() -> ElementPool:
    return ElementPool.default()


#: Hydrogen's volume in the pool of ``hydrogen_fraction > 0`` (Hofmann 2002: 5.08 A^3 per H).
HYDROGEN_VOLUME = 5.08
_WITH_H: dict[int, tuple[ElementPool, ElementPool]] = {}


def _pool_of(cfg: SynthConfig) -> ElementPool:
    """The configuration's pool (the default one if None), with hydrogen added at weight 0 when
    ``hydrogen_fraction > 0`` and the pool has none."""
    pool = cfg.pool or _default_pool()
    if cfg.hydrogen_fraction <= 0 or "H" in pool.elements:
        return pool
    hit = _WITH_H.get(id(pool))
    if hit is None or hit[0] is not pool:
        hit = (pool, pool.with_element("H", volume=HYDROGEN_VOLUME))
        _WITH_H[id(pool)] = hit
    return hit[1]


def _occupation(table, cfg, pool, rng, special: bool = False):
    """Orbits (placement order), element index per orbit and the sum of atomic volumes."""
    mult, dof = _table_lists(table.space_group)
    n_el = min(_pick(_N_SPECIES_P, rng.u()) + 1, cfg.max_species, len(pool.elements))
    n_orb = min(max(2, n_el + rng.geometric_half() - 1), _MAX_ORBITS)
    orbits = _choose_orbits(table, cfg.max_atoms, n_orb, rng, special)
    n_orb = len(orbits)
    if n_el == 1 and sum(mult[w] for w in orbits) == 2 and len(pool.elements) > 1:
        # Two equal atoms are always related by an inversion through their midpoint
        # (P1 with two atoms of one element is P-1): give them different elements.
        n_el = 2
    # n_el distinct elements with the pool's weights (draws of an element already
    # taken are repeated: the same law as weighted sampling without replacement)
    cum = pool.cumulative_list
    els: list[int] = []
    while len(els) < n_el:
        e = min(bisect.bisect_right(cum, rng.u() * cum[-1]), len(cum) - 1)
        if e not in els:
            els.append(e)
    # Every element on at least one orbit (when there are enough orbits) ...
    sp = [0] * n_orb
    for k, j in enumerate(rng.permutation(n_orb)):
        sp[j] = els[k] if k < n_el else els[rng.below(n_el)]
    # ... and fixed orbits on distinct elements where possible.
    fixed = [j for j in range(n_orb) if dof[orbits[j]] == 0]
    if 1 < len(fixed) <= n_el:
        for j, e in zip(fixed, rng.permutation(n_el)):
            sp[j] = els[e]
    # fixed orbits first (no freedom to adjust), then the largest orbits
    order = sorted(range(n_orb), key=lambda j: (dof[orbits[j]] != 0, -mult[orbits[j]]))
    wps = np.array([orbits[j] for j in order], dtype=np.int64)
    spa = np.array([sp[j] for j in order], dtype=np.int64)
    volume = sum(pool.volume_list[sp[j]] * mult[orbits[j]] for j in range(n_orb))
    return wps, spa, float(volume)


def _formula_occupation(table, cfg, pool, rng):
    """Orbits, element per orbit, the sum of atomic volumes and a note, for one of the group's
    real compositions (drawn uniformly among its distinct ones); None when the drawn
    composition fits no occupation (:func:`~xtalhpc.synth.compositions.decompose`)."""
    comps = cfg.formulas.compositions(table.space_group)
    els, counts = comps[rng.below(len(comps))]
    out = decompose(table.space_group, cfg.max_atoms, rng, els, counts, pool.index_of, pool.volume_list)
    if out is None:
        return None
    wps, spa, volume, z = out
    return wps, spa, volume, f"composition {formula_text(els, counts)} Z={z} (formula table)"


def _molecular_occupation(table, cfg, pool, rng):
    """Orbits, element per orbit, the cell volume and a note for a molecular composition
    (:func:`~xtalhpc.synth.compositions.molecular_composition` placed by
    :func:`~xtalhpc.synth.compositions.molecular_orbits`, the Kempster-Lipson volume); None
    when it does not fit."""
    els, counts = molecular_composition(rng, cfg.max_atoms // int(table.multiplicity[0]))
    out = molecular_orbits(table.space_group, cfg.max_atoms, rng, els, counts, pool.index_of)
    if out is None:
        return None
    wps, spa, z = out
    volume = molecular_volume(els, counts, z, rng)
    return wps, spa, volume, f"composition {formula_text(els, counts)} Z={z} (molecular)"


def _place(table, system, cfg, pool, rng, place, wps, sp, volume, pseudo: bool = False):
    """Draw a cell of ``volume`` and place the orbits, growing the cell until they fit; None if they never do."""
    cell = _sample_cell(system, volume, rng)
    if pseudo:
        cell = _pseudo_cell(cell, table.space_group, system, rng)
    mult, _ = _table_lists(table.space_group)
    n_total = sum(mult[w] for w in wps.tolist())
    frac = np.empty((n_total, 3))
    radii = np.empty(n_total)
    n = place(table.ops, table.offset, table.dof, wps, pool.radius[sp], cell, float(cfg.distance_factor),
              _ORBIT_TRIES, rng.seed64(), *_relations(system), float(cfg.generic_tol), frac,
              radii, _MAX_GROW, _GROW)
    return None if n < 0 else (cell, frac)


def _to_crystal(sg, seed, index, table, pool, out, wps, sp, b) -> Crystal:
    cell, frac = out
    mult, _ = _table_lists(sg)
    species: list[str] = []
    b_iso: list[float] = []
    sites = []
    for w, e, bj in zip(wps.tolist(), sp.tolist(), b):
        m = mult[w]
        el = pool.elements[e]
        species += [el] * m
        b_iso += [bj] * m
        sites.append(f"{el}:{m}{table.letters[w]}")
    return Crystal(cell=cell, frac=frac, species=tuple(species), occupancy=np.ones(len(species)),
                   b_iso=np.array(b_iso), space_group=sg, source=f"synthetic seed={seed} index={index}",
                   name=f"syn-sg{sg}-{index}", notes=("wyckoff " + " ".join(sites),),
                   # the general position's maps are the group's operations; every atom was
                   # placed as an image under them, so the simulator may use Laue orbits
                   symmetry=table.ops[:int(mult[0])])
