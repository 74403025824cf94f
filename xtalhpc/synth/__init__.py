"""Synthetic crystals for every space group (issue 5, item 1).

``generate_crystal(space_group, seed, index)`` draws one random crystal with a
random Wyckoff occupation of the space group's standard setting;
``generate_crystals(groups, n_per_group, seed)`` draws a batch whose item ``i``
depends only on ``(seed, i)``; ``write_cif`` writes one as a CIF file with the
space group's symmetry operations and the asymmetric unit. See docs/synthetic.md.
"""
from __future__ import annotations

from .cif import write_cif
from .elements import DEFAULT_WEIGHTS, ElementPool
from .generator import SynthConfig, generate_crystal, generate_crystals, min_atoms, spglib_number
from .wyckoff import WyckoffTable, wyckoff_table

__all__ = [
    "DEFAULT_WEIGHTS", "ElementPool", "SynthConfig", "WyckoffTable", "generate_crystal",
    "generate_crystals", "min_atoms", "spglib_number", "wyckoff_table", "write_cif",
]
