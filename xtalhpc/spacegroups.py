"""Labels derived from a space-group number: crystal system and Bravais lattice.

The space group number (1-230, International Tables) is the primary label; the
crystal system (7 classes) and Bravais lattice (14 classes, ``hR`` for the
rhombohedral groups) follow from it. The centering letter comes from the
standard-setting Hermann-Mauguin symbol (gemmi's table).
"""
from __future__ import annotations

from functools import lru_cache

from .errors import InputError

CRYSTAL_SYSTEMS: tuple[str, ...] = (
    "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic",
)
BRAVAIS_LATTICES: tuple[str, ...] = (
    "aP", "mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hR", "hP", "cP", "cI", "cF",
)
# First space-group number of each crystal system (International Tables order).
_SYSTEM_STARTS = (1, 3, 16, 75, 143, 168, 195, 231)
_RHOMBOHEDRAL = frozenset({146, 148, 155, 160, 161, 166, 167})


def check_space_group(number: int, source: str | None = None, field: str | None = None) -> int:
    """Return ``number`` as int if it is a space-group number 1-230, else raise InputError."""
    try:
        n = int(number)
    except (TypeError, ValueError):
        raise InputError(f"space group {number!r} is not an integer; allowed: 1-230", source, field) from None
    if n != number and not isinstance(number, str):
        raise InputError(f"space group {number!r} is not an integer; allowed: 1-230", source, field)
    if not 1 <= n <= 230:
        raise InputError(f"space group {n} is outside 1-230", source, field)
    return n


def crystal_system(number: int) -> str:
    """Crystal system (one of :data:`CRYSTAL_SYSTEMS`) of space group ``number``."""
    n = check_space_group(number)
    for i in range(7):
        if _SYSTEM_STARTS[i] <= n < _SYSTEM_STARTS[i + 1]:
            return CRYSTAL_SYSTEMS[i]
    raise AssertionError("unreachable")


@lru_cache(maxsize=None)
def centering(number: int) -> str:
    """Centering letter (P, A, B, C, I, F, R) of the standard setting of space group ``number``."""
    import gemmi

    n = check_space_group(number)
    return gemmi.find_spacegroup_by_number(n).hm[0]


def bravais_lattice(number: int) -> str:
    """Bravais lattice symbol (one of :data:`BRAVAIS_LATTICES`) of space group ``number``."""
    n = check_space_group(number)
    system = crystal_system(n)
    c = centering(n)
    if system == "triclinic":
        return "aP"
    if system == "monoclinic":
        return "mP" if c == "P" else "mC"
    if system == "orthorhombic":
        return {"P": "oP", "I": "oI", "F": "oF"}.get(c, "oC")
    if system == "tetragonal":
        return "tP" if c == "P" else "tI"
    if system in ("trigonal", "hexagonal"):
        return "hR" if n in _RHOMBOHEDRAL else "hP"
    return {"P": "cP", "I": "cI", "F": "cF"}[c]


def operations_array(ops):
    """gemmi operations as an (m, 3, 4) float64 array of [R | t] (fractions), the layout of
    ``Crystal.symmetry``."""
    import numpy as np

    ops = list(ops)
    if not ops:
        return np.zeros((0, 3, 4))
    den = ops[0].DEN
    return np.concatenate([np.array([op.rot for op in ops], dtype=float) / den,
                           np.array([op.tran for op in ops], dtype=float)[:, :, None] / den], axis=2)


def standard_operations(number: int):
    """The operations of space group ``number`` in its standard setting (gemmi's table), (m, 3, 4)."""
    return _standard_operations(check_space_group(number)).copy()


@lru_cache(maxsize=None)
def _standard_operations(number: int):
    import gemmi

    out = operations_array(gemmi.find_spacegroup_by_number(number).operations())
    out.flags.writeable = False
    return out


def labels(number: int) -> tuple[int, str, str]:
    """``(space_group, crystal_system, bravais_lattice)`` for space group ``number``."""
    n = check_space_group(number)
    return n, crystal_system(n), bravais_lattice(n)


# ---------------------------------------------------------------------------- extinction groups
#: Largest |h|, |k|, |l| probed when comparing systematic absences. Every reflection condition
#: of the 230 groups is a congruence modulo 2, 3, 4 or 6 on hkl, 0kl-type zones or h00-type rows,
#: so indices up to 6 tell them all apart (tested: 4, 6 and 8 give the same partition).
EXTINCTION_HKL_MAX = 6

#: Crystal family of each crystal system: trigonal and hexagonal share the hexagonal
#: metric (and a powder pattern cannot tell their Laue classes apart), so they form one family.
_FAMILY = {"triclinic": "a", "monoclinic": "m", "orthorhombic": "o", "tetragonal": "t",
           "trigonal": "h", "hexagonal": "h", "cubic": "c"}


def _absent_set(number: int, hkl) -> frozenset:
    import gemmi

    ops = gemmi.find_spacegroup_by_number(number).operations()
    return frozenset(h for h in hkl if ops.is_systematically_absent(list(h)))


@lru_cache(maxsize=None)
def _extinction_partition(hmax: int = EXTINCTION_HKL_MAX) -> tuple[tuple[int, ...], ...]:
    import itertools

    rng = range(-hmax, hmax + 1)
    hkl = [h for h in itertools.product(rng, rng, rng) if h != (0, 0, 0)]
    perms = list(itertools.permutations(range(3)))
    classes: dict[tuple, list[int]] = {}
    for n in range(1, 231):
        family = _FAMILY[crystal_system(n)]
        absent = _absent_set(n, hkl)
        if family == "o":
            # Powder diffraction cannot tell which orthorhombic axis is a, b or c (their lengths are
            # whatever the crystal has): absences equal up to an axis permutation are one class.
            key = min(tuple(sorted(tuple(h[p[i]] for i in range(3)) for h in absent)) for p in perms)
        else:
            key = tuple(sorted(absent))
        lattice = "R" if n in _RHOMBOHEDRAL else "-"
        classes.setdefault((family, lattice, key), []).append(n)
    return tuple(sorted((tuple(v) for v in classes.values()), key=lambda members: members[0]))


def extinction_groups() -> tuple[tuple[int, ...], ...]:
    """The extinction groups: space groups a powder pattern cannot tell apart by its absences.

    Two space groups are in one extinction group when they belong to the same crystal family
    (triclinic, monoclinic, orthorhombic, tetragonal, hexagonal = trigonal + hexagonal, cubic;
    rhombohedral lattices apart from primitive hexagonal ones) and extinguish the same
    reflections: the sets {hkl : |h|,|k|,|l| <= :data:`EXTINCTION_HKL_MAX`} that gemmi's
    ``GroupOps.is_systematically_absent`` marks for the standard setting are equal, for
    orthorhombic groups up to a permutation of the axes (which axis of a powder's cell is
    called a, b or c is a convention, not something the pattern shows). Laue classes of one
    family are merged (4/m with 4/mmm, -3 with 6/mmm, m-3 with m-3m): in a powder pattern hkl
    and its Laue-equivalents fall on the same 2theta, so the Laue class is not observable.

    The result has **97** groups. Baggett et al. (arXiv:2604.23811, 2026) classify into 99:
    their table follows the extinction symbols of International Tables A, which list two pairs
    of rows apart although their reflection conditions are identical: ``P 3_1 - -`` (00l: l = 3n;
    P3_1, P3_2, P3_112, ...) and ``P 6_2 - -`` (00l: l = 3n; P6_2, P6_4, ...); and cubic
    ``P 2_1 - -`` (P2_13, h00: h = 2n) and ``P 4_2 - -`` (P4_232, h00: h = 2n). Here each pair is
    one class (a head asked to separate them could only learn the prior); every other class
    is one of theirs (tested against the class table published with their code). Enantiomorphs (P4_1/P4_3, ...) and the
    centrosymmetric/non-centrosymmetric pairs (P1/P-1, ...) share their absences and so one class.

    Returns
    -------
    tuple of tuples of int
        The member space-group numbers of each class, ascending; classes ordered by their
        smallest member (deterministic: the index of a class is its label).
    """
    return _extinction_partition()


#: Number of extinction groups (see :func:`extinction_groups`).
N_EXTINCTION_GROUPS = 97


@lru_cache(maxsize=None)
def _extinction_index() -> tuple[int, ...]:
    index = [0] * 231
    for i, members in enumerate(extinction_groups()):
        for n in members:
            index[n] = i
    return tuple(index)


def extinction_group(number: int) -> int:
    """Index (0-based, into :func:`extinction_groups`) of the extinction group of space group ``number``."""
    return _extinction_index()[check_space_group(number)]


def extinction_group_names() -> tuple[str, ...]:
    """Vocabulary of the extinction-group head: each class named by its member space groups, e.g. ``"14"``,
    ``"7,13"`` (stable, machine-readable, and says exactly what the class holds)."""
    return tuple(",".join(str(n) for n in members) for members in extinction_groups())
