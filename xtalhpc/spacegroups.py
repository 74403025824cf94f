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

    return np.array([np.hstack([np.array(op.rot, dtype=float) / op.DEN,
                                np.array(op.tran, dtype=float)[:, None] / op.DEN]) for op in ops])


def standard_operations(number: int):
    """The operations of space group ``number`` in its standard setting (gemmi's table), (m, 3, 4)."""
    import gemmi

    return operations_array(gemmi.find_spacegroup_by_number(check_space_group(number)).operations())


def labels(number: int) -> tuple[int, str, str]:
    """``(space_group, crystal_system, bravais_lattice)`` for space group ``number``."""
    n = check_space_group(number)
    return n, crystal_system(n), bravais_lattice(n)
