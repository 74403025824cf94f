"""What a CIF data block says besides its atom sites: values (nulls, numbers, '1/4'), the
cell, and the symmetry operators with the space-group number they form. Part of the CIF
reader (:mod:`xtalhpc.io.cif`, whose docstring gives the conventions).
"""
from __future__ import annotations

import math
import re

import numpy as np

from ..crystal import cell_volume, lattice_vectors, rel_volume_sq
from ..errors import StructureError

#: Tags holding symmetry operators, in order of preference (DDL1 and DDL2 spellings).
SYMOP_TAGS = (
    "_space_group_symop_operation_xyz",
    "_space_group_symop.operation_xyz",
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv.pos_as_xyz",
)
MAGN_OP_TAGS = ("_space_group_symop_magn_operation.xyz", "_space_group_symop.magn_operation_xyz",
                "_space_group_symop_magn_operation_xyz")
MAGN_CEN_TAGS = ("_space_group_symop_magn_centering.xyz", "_space_group_symop.magn_centering_xyz",
                 "_space_group_symop_magn_centering_xyz")
HALL_TAGS = ("_space_group_name_Hall", "_symmetry_space_group_name_Hall", "_space_group.name_Hall")
HM_TAGS = ("_space_group_name_H-M_alt", "_symmetry_space_group_name_H-M", "_space_group.name_H-M_alt")
NUMBER_TAGS = ("_space_group_IT_number", "_symmetry_Int_Tables_number", "_space_group.IT_number")
CELL_TAGS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
             "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
# Cell volume / (a b c) below this is a degenerate (flat) cell; real cells are > 0.3.
_MIN_REL_VOLUME = 1e-3


# ---- values -------------------------------------------------------------------

def _value(block, tags):
    """(tag, raw string) of the first tag present, else (tags[0], None)."""
    for t in tags:
        v = block.find_value(t)
        if v is not None:
            return t, v
    return tags[0], None


_NULLS = ("?", ".")


def _is_null(raw: str | None) -> bool:
    return raw is None or raw in _NULLS


_SIMPLE_FRACTION = re.compile(r"^[+-]?\d+/\d+$")


def _number(raw: str, src: str, tag: str) -> float:
    import gemmi

    x = gemmi.cif.as_number(raw)
    if math.isnan(x) and _SIMPLE_FRACTION.match(raw.strip()):
        num, den = raw.strip().split("/")
        if int(den) != 0:
            return int(num) / int(den)  # '1/4' for a special position: not CIF numbers, but unambiguous
    if math.isnan(x):
        raise StructureError(f"{raw!r} is not a number", src, tag)
    return x


# ---- symmetry -----------------------------------------------------------------

def _parse_ops(triplets, src, tag):
    import gemmi

    ops = []
    for t in triplets:
        t = gemmi.cif.as_string(t).strip()
        parts = [p for p in t.replace(" ", "").split(",")]
        if len(parts) == 4 and parts[3] in ("+1", "-1", "1"):  # magnetic: time reversal dropped
            parts = parts[:3]
        try:
            ops.append(gemmi.Op(",".join(parts)))
        except RuntimeError as exc:
            raise StructureError(f"symmetry operator {t!r} cannot be parsed ({exc}); "
                                 "allowed: triplets such as '-x,y+1/2,-z'", src, tag) from None
    return ops


def _symmetry(block, cell6, src):
    """Operators for the expansion, the space-group number, notes and the source tag."""
    return _symmetry_arrays(block, cell6, src)[:4]


def _symmetry_arrays(block, cell6, src):
    """:func:`_symmetry`, and the operators' rotations (m, 3, 3) and translations (m, 3) as
    floats. An operator loop whose operators form a group that gemmi's table knows (the common
    case) is handled once per distinct loop per process (:func:`_known_group`)."""
    import gemmi

    notes: list[str] = []
    ops = None
    origin = None
    for tag in SYMOP_TAGS:
        col = block.find_values(tag)
        if col:
            raws = tuple(col)
            known = _known_group(tag, raws)
            if known is not None:
                full, number, group_notes, rots, trans = known
                number_tag, raw_number = _value(block, NUMBER_TAGS)
                tag_number = _tag_number(raw_number, src, number_tag)
                notes.extend(group_notes)
                _number_notes(notes, number, number_tag, tag_number)
                return list(full), number, notes, tag, rots.copy(), trans.copy()
            ops = _parse_ops(list(raws), src, tag)
            origin = tag
            break
    if ops is None:
        for tag in MAGN_OP_TAGS:
            col = block.find_values(tag)
            if col:
                ops = _parse_ops(list(col), src, tag)
                origin = tag
                for ctag in MAGN_CEN_TAGS:
                    ccol = block.find_values(ctag)
                    if ccol:
                        cen = _parse_ops(list(ccol), src, ctag)
                        ops = [c * o for c in cen for o in ops]
                        break
                notes.append("magnetic CIF: nuclear positions from the magnetic operators, time reversal ignored")
                break
    if ops is None:
        tag, raw = _value(block, HALL_TAGS)
        if not _is_null(raw):
            hall = gemmi.cif.as_string(raw).strip()
            try:
                ops = list(gemmi.symops_from_hall(hall))
            except RuntimeError as exc:
                raise StructureError(f"Hall symbol {hall!r} cannot be parsed ({exc})", src, tag) from None
            origin = tag
    if ops is None:
        tag, raw = _value(block, HM_TAGS)
        if not _is_null(raw):
            hm = gemmi.cif.as_string(raw).strip()
            # prefer="2": origin choice 2 where a symbol leaves it open (gemmi's choice for small
            # molecules; ICSD/COD default); hexagonal vs rhombohedral axes follow the cell angles
            sg = gemmi.find_spacegroup_by_name(hm, cell6[3], cell6[5], "2")
            if sg is None:
                # common spellings: 'P2_1/n', 'P2(1)/c', 'P 21 /m'
                alt = re.sub(r"\((\d)\)", r"\1", hm.replace("_", ""))
                alt = re.sub(r"\s*/\s*", "/", alt)
                sg = gemmi.find_spacegroup_by_name(alt, cell6[3], cell6[5], "2")
            if sg is None:
                raise StructureError(f"Hermann-Mauguin symbol {hm!r} is not a known space group and the "
                                     "block has no symmetry operators", src, tag)
            ops = list(sg.operations())
            origin = tag
    number_tag, raw_number = _value(block, NUMBER_TAGS)
    tag_number = _tag_number(raw_number, src, number_tag)
    if ops is None and tag_number is not None:
        ops = list(gemmi.find_spacegroup_by_number(tag_number).operations())
        origin = number_tag
        notes.append(f"symmetry from {number_tag} = {tag_number} alone: standard setting assumed")
    if ops is None:
        notes.append("no symmetry operators, Hall/H-M symbol or IT number: atoms taken as the whole cell (P1)")
        ops = [gemmi.Op("x,y,z")]
        return ops, None, notes, None, *_op_arrays(ops)

    given = {op.wrap().triplet() for op in ops}
    identity = gemmi.Op("x,y,z")
    if identity.triplet() not in given:
        # gemmi finds the centring vectors relative to the identity; without it the group is empty
        ops = [identity] + list(ops)
        notes.append(f"identity operator missing from {origin}; added")
        given.add(identity.triplet())
    try:
        group = gemmi.GroupOps(ops)
        group.add_missing_elements()
    except RuntimeError as exc:
        raise StructureError(f"symmetry operators do not form a crystallographic group ({exc})", src, origin) from None
    full = [op for op in group]
    if len(full) != len(given):
        symbol_ops, symbol_tag = _symbol_ops(block, cell6)
        if symbol_ops is not None and origin not in HALL_TAGS + HM_TAGS:
            # a typo in one operator (COD has such entries): the symbol is the better witness
            notes.append(f"the {len(given)} operators in {origin} are not a group; using {symbol_tag} instead")
            group = gemmi.GroupOps(symbol_ops)
            full = [op for op in group]
        else:
            notes.append(f"{len(given)} symmetry operators in {origin} completed to a group of {len(full)}")
    number = _table_number(group)
    if number is None:
        number = _spglib_number(full, cell6)
    number = _number_notes(notes, number, number_tag, tag_number)
    return full, number, notes, origin, *_op_arrays(full)


def _op_arrays(ops):
    """Rotations (m, 3, 3) and translations (m, 3) of gemmi operators, as floats."""
    import gemmi

    rots = np.array([op.rot for op in ops], dtype=float) / gemmi.Op.DEN
    trans = np.array([op.tran for op in ops], dtype=float) / gemmi.Op.DEN
    return rots, trans


def _group_arrays(group):
    """:func:`_op_arrays` of the operations of a gemmi GroupOps in its iteration order (each
    centring vector over the coset representatives, translations wrapped into [0, 1)), built
    from the representatives and centring vectors (an F-centred group: 48 operators read from
    gemmi instead of 192)."""
    import gemmi

    den = gemmi.Op.DEN
    sym = group.sym_ops
    rs = np.array([op.rot for op in sym], dtype=np.int64)
    ts = np.array([op.tran for op in sym], dtype=np.int64)
    cen = np.array(group.cen_ops, dtype=np.int64).reshape(-1, 3)
    rots = np.tile(rs, (len(cen), 1, 1)).astype(float) / den
    trans = ((ts[None, :, :] + cen[:, None, :]) % den).reshape(-1, 3).astype(float) / den
    return rots, trans


def _tag_number(raw_number, src, number_tag):
    """The IT number a block's tag gives (None where absent or not a number); outside 1-230 an error."""
    tag_number = None
    if not _is_null(raw_number):
        try:
            tag_number = int(_number(raw_number, src, number_tag))
        except StructureError:
            tag_number = None
        if tag_number is not None and not 1 <= tag_number <= 230:
            raise StructureError(f"space group number {tag_number} is outside 1-230", src, number_tag)
    return tag_number


def _number_notes(notes, number, number_tag, tag_number):
    """The group number to use, given the operators' (``number``) and the tag's: notes where
    the one is missing or they differ."""
    if number is None and tag_number is not None:
        number = tag_number
        notes.append(f"space group of the operators not identified; using {number_tag} = {tag_number}")
    if number is not None and tag_number is not None and number != tag_number:
        notes.append(f"{number_tag} says {tag_number} but the symmetry operators form group {number}; "
                     f"using {number}")
    return number


#: :func:`_known_group` results by (tag, raw operator strings): a set of files repeats a few
#: hundred operator loops (every P1 export the same 'x,y,z').
_KNOWN_GROUPS: dict = {}


def _known_group(tag, raws):
    """For an operator loop (its tag and raw values) whose operators parse, form a group with
    the identity among them, and make a setting gemmi's table knows: (operators of the group,
    its number, notes, rotations, translations), computed once per process; else None (the
    caller then takes the general path, with its messages and fallbacks)."""
    key = (tag, raws)
    if key in _KNOWN_GROUPS:
        return _KNOWN_GROUPS[key]
    import gemmi

    try:
        ops = _parse_ops(list(raws), "", tag)
        given = {op.wrap().triplet() for op in ops}
        if gemmi.Op("x,y,z").triplet() not in given:
            return None
        group = gemmi.GroupOps(ops)
        group.add_missing_elements()
    except (StructureError, RuntimeError):
        return None
    full = [op for op in group]
    if len(full) != len(given):
        return None
    # the group is the given operators (as many, and it holds them): its table key is theirs
    number = _table_number(group, tuple(sorted(given)))
    if number is None:
        return None
    rots, trans = _group_arrays(group)
    rots.flags.writeable = False
    trans.flags.writeable = False
    if len(_KNOWN_GROUPS) >= 4096:
        _KNOWN_GROUPS.clear()
    _KNOWN_GROUPS[key] = got = (tuple(full), number, (), rots, trans)
    return got


#: Space-group number (or None) of each operation set seen, keyed by its sorted triplets:
#: gemmi's table search costs ~0.1 ms, and a set of files repeats a few hundred settings.
_TABLE_NUMBERS: dict[tuple[str, ...], int | None] = {}


def _table_number(group, key: tuple[str, ...] | None = None) -> int | None:
    """gemmi.find_spacegroup_by_ops(group).number (None where the table has no such setting),
    once per distinct operation set per process (``key``: the sorted triplets of the group's
    operations, where the caller has them)."""
    import gemmi

    if key is None:
        key = tuple(sorted(op.triplet() for op in group))
    if key not in _TABLE_NUMBERS:
        if len(_TABLE_NUMBERS) >= 4096:
            _TABLE_NUMBERS.clear()
        sg = gemmi.find_spacegroup_by_ops(group)
        _TABLE_NUMBERS[key] = sg.number if sg is not None else None
    return _TABLE_NUMBERS[key]


def _symbol_ops(block, cell6):
    """Operators of the Hall or H-M symbol of a block, or (None, None)."""
    import gemmi

    tag, raw = _value(block, HALL_TAGS)
    if not _is_null(raw):
        try:
            return list(gemmi.symops_from_hall(gemmi.cif.as_string(raw).strip())), tag
        except RuntimeError:
            pass
    tag, raw = _value(block, HM_TAGS)
    if not _is_null(raw):
        sg = gemmi.find_spacegroup_by_name(gemmi.cif.as_string(raw).strip(), cell6[3], cell6[5], "2")
        if sg is not None:
            return list(sg.operations()), tag
    return None, None


def _spglib_number(ops, cell6):
    try:
        import spglib
    except ImportError:  # pragma: no cover - spglib is a dependency
        return None
    rot = np.array([np.array(op.rot) // op.DEN for op in ops], dtype="intc")
    tr = np.array([np.array(op.tran, dtype=float) / op.DEN for op in ops])
    try:
        t = spglib.get_spacegroup_type_from_symmetry(rot, tr, lattice_vectors(cell6), symprec=1e-5)
    except Exception:  # noqa: BLE001 - spglib raises assorted errors for odd operator sets
        return None
    if t is None:
        return None
    n = getattr(t, "number", None)
    if n is None and isinstance(t, dict):
        n = t.get("number")
    return int(n) if n else None


# ---- cell ---------------------------------------------------------------------

def _cell(block, src):
    import gemmi

    vals = []
    missing_angles = []
    for i, tag in enumerate(CELL_TAGS):
        raw = block.find_value(tag)
        if _is_null(raw):
            if i < 3:
                what = "absent" if raw is None else f"unknown ({raw!r})"
                raise StructureError(f"no unit cell: {tag} is {what}", src, tag)
            missing_angles.append(tag)
            vals.append(90.0)
            continue
        x = gemmi.cif.as_number(raw)
        if math.isnan(x):
            raise StructureError(f"{raw!r} is not a number", src, tag)
        vals.append(x)
    cell6 = np.array(vals)
    a, b, c, al, be, ga = vals
    if not (a > 0 and b > 0 and c > 0 and 0 < al < 180 and 0 < be < 180 and 0 < ga < 180):  # else: which one
        if np.any(cell6[:3] <= 0):
            raise StructureError(f"cell lengths {cell6[:3].tolist()} must be > 0 angstrom", src, "_cell_length_a")
        if np.any(cell6[3:] <= 0) or np.any(cell6[3:] >= 180):
            raise StructureError(f"cell angles {cell6[3:].tolist()} must lie in (0, 180) degrees", src,
                                 "_cell_angle_alpha")
    # relative to a*b*c so that rounding noise of an impossible angle set (120, 120, 120) is caught;
    # (V / abc)^2 from the angles first: far above the bound (4x; lengths where G cannot overflow
    # or underflow), det(G) is not needed
    if 1e-30 < min(a, b, c) and max(a, b, c) < 1e30 and rel_volume_sq(al, be, ga) > 4.0 * _MIN_REL_VOLUME ** 2:
        return cell6, missing_angles
    vol = cell_volume(cell6)
    if not vol > _MIN_REL_VOLUME * float(np.prod(cell6[:3])):
        raise StructureError(f"cell {cell6.tolist()} has zero or negative volume ({vol:.3g} A^3); "
                             "the angles cannot close a cell", src, "_cell_angle_alpha")
    return cell6, missing_angles
