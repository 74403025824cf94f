"""Write a crystal of known space group as a CIF file (symmetry operations + asymmetric unit).

The file lists the space group's operations in its standard setting (the
general position of the Wyckoff tables, centring included), the
International Tables number and the extended Hermann-Mauguin symbol gemmi gives
to those operations, and one site per orbit. Any CIF reader that applies the
listed operations gets back exactly the crystal's atoms.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..crystal import Crystal, element_of
from ..errors import InputError, StructureError
from .wyckoff import wyckoff_table

#: Two fractional positions closer than this (in each coordinate, after wrapping)
#: are the same atom when orbits are matched; coordinates are written with 8 decimals.
_MATCH_TOL = 1e-5


def asymmetric_unit(crystal: Crystal) -> list[int]:
    """Indices of one atom per orbit of ``crystal.space_group`` (standard setting).

    Raises StructureError if the atoms are not invariant under the space group's
    operations (a crystal in another setting, or one that lacks the symmetry).
    """
    if crystal.space_group is None:
        raise StructureError("the crystal has no space group", crystal.source or crystal.name, "space_group")
    t = wyckoff_table(crystal.space_group)
    ops = t.ops[: int(t.multiplicity[0])]
    frac = crystal.frac
    spec = np.asarray(crystal.species)
    done = np.zeros(len(frac), dtype=bool)
    reps: list[int] = []
    for i in range(len(frac)):
        if done[i]:
            continue
        imgs = ops[:, :, :3] @ frac[i] + ops[:, :, 3]
        d = imgs[:, None, :] - frac[None, :, :]
        d -= np.round(d)
        hit = (np.abs(d).max(axis=2) < _MATCH_TOL) & (spec[None, :] == spec[i])
        if not hit.any(axis=1).all():
            raise StructureError(
                f"atom {i} ({spec[i]}) is not mapped onto an atom of its species by every operation of "
                f"space group {crystal.space_group} (standard setting)", crystal.source or crystal.name, "atoms")
        done |= hit.any(axis=0)
        reps.append(i)
    return reps


def cif_text(crystal: Crystal) -> str:
    """CIF 1.1 text of ``crystal`` (symmetry operations + asymmetric unit)."""
    import gemmi

    sg = crystal.space_group
    t = wyckoff_table(sg)
    found = gemmi.find_spacegroup_by_ops(gemmi.GroupOps([gemmi.Op(s) for s in t.symops]))
    hm = found.xhm() if found is not None else gemmi.find_spacegroup_by_number(sg).xhm()
    reps = asymmetric_unit(crystal)
    a, b, c, al, be, ga = crystal.cell
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (crystal.name or "crystal"))
    lines = [
        f"data_{name}",
        f"_audit_creation_method 'xtalhpc.synth ({crystal.source})'",
        f"_chemical_formula_sum '{crystal.formula}'",
        f"_cell_length_a {a:.8f}", f"_cell_length_b {b:.8f}", f"_cell_length_c {c:.8f}",
        f"_cell_angle_alpha {al:.8f}", f"_cell_angle_beta {be:.8f}", f"_cell_angle_gamma {ga:.8f}",
        f"_cell_volume {crystal.volume:.6f}",
        f"_symmetry_Int_Tables_number {sg}",
        f"_space_group_IT_number {sg}",
        f"_symmetry_space_group_name_H-M '{hm}'",
        f"_space_group_name_H-M_alt '{hm}'",
        "loop_", "_space_group_symop_id", "_space_group_symop_operation_xyz",
    ]
    lines += [f"{k + 1} '{op}'" for k, op in enumerate(t.symops)]
    lines += ["loop_", "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x",
              "_atom_site_fract_y", "_atom_site_fract_z", "_atom_site_occupancy", "_atom_site_B_iso_or_equiv"]
    counter: dict[str, int] = {}
    for i in reps:
        el = element_of(crystal.species[i])
        counter[el] = counter.get(el, 0) + 1
        x, y, z = crystal.frac[i]
        lines.append(f"{el}{counter[el]} {crystal.species[i]} {x:.8f} {y:.8f} {z:.8f} "
                     f"{crystal.occupancy[i]:.6f} {crystal.b_iso[i]:.6f}")
    return "\n".join(lines) + "\n"


def write_cif(crystal: Crystal, path: str | os.PathLike) -> Path:
    """Write ``crystal`` to ``path`` (see :func:`cif_text`); returns the path."""
    p = Path(path)
    text = cif_text(crystal)
    try:
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, p)
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc.strerror or exc}", str(p), "output") from None
    return p
