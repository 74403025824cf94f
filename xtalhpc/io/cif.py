"""CIF reader: every data block of a CIF file -> :class:`~xtalhpc.crystal.Crystal`.

gemmi parses the file (fast, and its parse errors carry the line number); the
crystallography is done here, so each convention is visible and tested:

* **Cell** from ``_cell_length_*`` / ``_cell_angle_*``. A missing angle takes the
  CIF dictionary default of 90 deg only where the space group forces it
  (orthorhombic, tetragonal, cubic); otherwise it is an error.
* **Symmetry**, first match wins: the symmetry-operator loop
  (``_space_group_symop_operation_xyz``, ``_symmetry_equiv_pos_as_xyz``, their
  DDL2 spellings, or the magnetic operation x centering loops of an mCIF, time
  reversal ignored), else the Hall symbol, else the Hermann-Mauguin symbol,
  else the IT number (standard setting, noted). With none of these the atoms
  are taken as the whole cell (P1) and this is noted. An operator list that is
  not a group is completed to one (noted).
* **Space-group number**: the group the operators used for the expansion form
  (gemmi's table, which knows the common non-standard settings), else spglib's
  classification of those operators with the cell, else the IT-number tag.
* **Full cell**: each site is mapped through every operator and images closer
  than :data:`MERGE_TOL` angstrom to an earlier image of the same site are
  merged (special positions). Different sites are never merged.
* **Species** from ``_atom_site_type_symbol`` (charges kept for the Crystal,
  which strips them; D and isotopes such as 7Li survive), else from the label.
* **Displacement**: anisotropic U, B or beta of ``_atom_site_aniso_*`` reduced to
  U_eq = trace(U_cart) / 3 in the Cartesian (orthogonalised) frame; else
  ``_atom_site_U_iso_or_equiv``; else ``_atom_site_B_iso_or_equiv``; else
  :data:`~xtalhpc.crystal.DEFAULT_B_ISO` (noted). B = 8 pi^2 U.
* **Occupancy** ``_atom_site_occupancy`` (CIF default 1 where absent or '?');
  sites with occupancy 0 are dropped (noted); > 1 is an error.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from ..crystal import (DEFAULT_B_ISO, METRIC_TOL, Crystal, cell_from_metric, distinct_rotations, inverse_rotations,
                       lattice_vectors, metric_deviations, parse_species, symmetry_fit, wrap_unit)
from ..errors import InputError, StructureError
from .cif_block import (CELL_TAGS, HALL_TAGS, HM_TAGS, MAGN_CEN_TAGS, MAGN_OP_TAGS, NUMBER_TAGS,  # noqa: F401
                        SYMOP_TAGS, _NULLS, _cell, _is_null, _number, _symmetry, _symmetry_arrays, _value)

#: Images of one site closer than this (angstrom) are one atom on a special
#: position. gemmi's ``get_all_unit_cell_sites`` uses 0.4 A, which also merges
#: the symmetry images of a *disordered* atom sitting 0.15-0.4 A off a symmetry
#: element (a common split-site model) and so loses part of its scattering.
#: Special positions written with 3-4 decimals (0.333 for 1/3) miss the exact
#: point by < 0.03 A in cells up to ~40 A, so 0.1 A separates the two cases.
MERGE_TOL = 0.1

_EIGHT_PI2 = 8.0 * math.pi ** 2
_EYE3 = np.eye(3)
# A duplicated tag with one of these prefixes could change the structure: never tolerated.
_STRUCTURAL_TAG_PREFIXES = ("_cell", "_atom", "_symmetry", "_space_group")
# Relative deviation of the cell metric from symmetry invariance above which a
# note is written: 1e-4 is ~0.006 deg or 1e-4 A in 1 A, well above the rounding
# of published cells, below a real metric mismatch such as 89.98 deg in a hexagonal cell.
_METRIC_TOL = 1e-4
# Above this (1 %) the operators belong to another setting or cell and the
# expanded structure would be meaningless: an error.
_METRIC_MAX = 1e-2
# Occupancies are refined numbers; 1.0 written as 1.00 or 0.9999 is fine, 1.01 is not.
_OCC_TOL = 1e-6


def read_cif(path: str | Path) -> list[Crystal | StructureError]:
    """Read every structural data block of a CIF file.

    Parameters
    ----------
    path : str or Path
        The CIF (or mCIF) file.

    Returns
    -------
    list of Crystal or StructureError
        One entry per data block that carries structure data (a cell or an
        atom-site loop), in file order: the crystal, or the error that block
        raised. Blocks with neither (publication or text blocks such as
        ``data_global``) are skipped.

    Raises
    ------
    StructureError
        The file cannot be parsed (gemmi's message with the line number), or no
        block carries structure data.
    """
    import gemmi

    path = Path(path)
    src = str(path)
    file_notes: list[str] = []
    try:
        doc = gemmi.cif.read(src)
    except (RuntimeError, ValueError, OSError) as exc:
        msg = str(exc)
        if msg.startswith(src):
            msg = msg[len(src):].lstrip(":")
        dup = re.search(r"duplicate tag (\S+)", msg)
        if dup and not dup.group(1).lower().startswith(_STRUCTURAL_TAG_PREFIXES):
            # A repeated descriptive tag (pyxtal writes _chemical_formula_sum twice) breaks the CIF
            # rules but not the structure: read leniently, first value kept, and say so.
            doc = gemmi.cif.read_file(src, check_level=0)
            file_notes.append(f"CIF rule broken and tolerated: {msg.strip()} (first value kept)")
        else:
            raise StructureError(f"cannot parse CIF: {msg.strip()}", src, "syntax") from None
    if len(doc) == 0:
        raise StructureError("no data block (a CIF needs at least one 'data_' block)", src, "data_")
    blocks = [b for b in doc if _is_structural(b)]
    if not blocks:
        names = ", ".join(f"data_{b.name}" for b in doc)
        raise StructureError(f"no data block has a cell or atom sites (blocks: {names})", src,
                             "_atom_site_fract_x")
    several = len(blocks) > 1
    out: list[Crystal | StructureError] = []
    for block in blocks:
        bsrc = f"{src}#{block.name}" if several else src
        try:
            out.append(_read_block(block, bsrc, path.stem, tuple(file_notes)))
        except StructureError as exc:
            out.append(exc)
        except InputError as exc:  # ScatteringError from the Crystal, space-group range, ...
            out.append(StructureError(exc.message, exc.source or bsrc, exc.field))
    return out


def _is_structural(block) -> bool:
    if block.find_value("_cell_length_a") is not None:
        return True
    return any(block.find_values(t) for t in ("_atom_site_fract_x", "_atom_site_label", "_atom_site_Cartn_x"))


# ---- species ------------------------------------------------------------------

def species_from_label(label: str, formula_elements: frozenset[str] | None = None) -> str | None:
    """Element (or D) at the start of an atom-site label, e.g. ``'Fe2a' -> 'Fe'``, ``'O1' -> 'O'``.

    Labels are case-insensitive in practice (``'CO(1)'`` is cobalt in a cobalt
    complex, ``'HO1'`` a hydrogen on an oxygen). With ``formula_elements``
    (from ``_chemical_formula_sum``) the two-letter reading wins only if that
    element is in the formula; without, a two-letter reading needs the
    second letter in lower case. ``'Wat'``/``'Ow'`` labels (water oxygen) -> O.
    """
    return _species_from_label(label, formula_elements)


def _species_from_label(label: str, formula_elements: frozenset[str] | None) -> str | None:
    """:func:`species_from_label`; the label's parse and the element checks are cached (labels
    such as 'O1', 'Fe2' repeat across files, formulas mostly do not)."""
    parts = _label_parts(label)
    if parts is None:
        return None
    one, two, two_lower, water, ow = parts
    if water and (formula_elements is None or "O" in formula_elements) \
            and not (formula_elements and "W" in formula_elements and not ow):
        return "O"
    cands = [c for c in (two, one) if c and c in formula_elements] if formula_elements else []
    if not cands:  # no formula, or it omits the element (minor substituents often are)
        cands = [two, one] if two and two_lower else [one]
    for c in cands:
        if _is_element(c):
            return c
    return None


@lru_cache(maxsize=65536)
def _label_parts(label: str):
    """What :func:`_species_from_label` reads from a label: (first letter upper-cased, the
    two-letter reading or None, whether its second letter was lower case, whether the label
    starts 'wat'/'ow' (water), whether it starts 'ow'); None where no letter starts it."""
    lab = label.strip()
    m = re.match(r"^\d*([A-Za-z])([A-Za-z]?)", lab)
    if not m:
        return None
    one = m.group(1).upper()
    two = one + m.group(2).lower() if m.group(2) else None
    water = re.match(r"^(wat|ow)", lab, re.IGNORECASE) is not None
    return one, two, bool(m.group(2)) and m.group(2).islower(), water, lab[:2].lower() == "ow"


@lru_cache(maxsize=512)
def _is_element(c: str) -> bool:
    """True for an element symbol of periodictable (number > 0), D and T."""
    import periodictable

    if c in ("D", "T"):
        return True
    try:
        return periodictable.elements.symbol(c).number > 0
    except ValueError:
        return False


def _formula_elements(block) -> frozenset[str] | None:
    import gemmi

    raw = block.find_value("_chemical_formula_sum")
    if _is_null(raw):
        return None
    els = frozenset(re.findall(r"[A-Z][a-z]?", gemmi.cif.as_string(raw)))
    return els or None


def _species(raw_type, label, src, tag, formula_elements=None):
    """Species string for the Crystal (charge kept) from a type symbol or label."""
    import gemmi

    if raw_type is not None and not _is_null(raw_type):
        sym = gemmi.cif.as_string(raw_type).strip()
        try:
            parse_species(sym, src, tag)
            return sym, False
        except InputError:
            pass
        m = re.match(r"^(\d*[A-Z][a-z]?)(\d*\.\d+)([+-])$", sym)
        if m:  # fractional oxidation state such as 'Mn3.5+' (mixed valence): neutral atom
            try:
                parse_species(m.group(1), src, tag)
                return m.group(1), False
            except InputError:
                pass
        # Common non-standard spellings: 'FE3+', 'O-2', 'Fe3' (oxidation state without sign)
        m = re.match(r"^(\d*)([A-Za-z]{1,2}?)(\d*[+-]?|[+-]\d*)$", sym)
        if m:
            el = m.group(2)[0].upper() + m.group(2)[1:].lower()
            charge = m.group(3)
            if charge and charge[-1] not in "+-" and charge[0] not in "+-":
                charge = ""  # digits only: an oxidation state with no sign, or a label-style suffix
            cand = f"{m.group(1)}{el}{charge}"
            try:
                parse_species(cand, src, tag)
                return cand, False
            except InputError:
                pass
        raise StructureError(f"type symbol {sym!r} (site {label!r}) is not an element; allowed: element "
                             "symbols such as 'Fe', isotopes such as 'D' or '7Li', charges such as 'O2-'",
                             src, tag)
    el = species_from_label(label, formula_elements)
    if el is None:
        raise StructureError(f"no _atom_site_type_symbol and the label {label!r} does not start with an "
                             "element symbol", src, "_atom_site_label")
    return el, True


def _species_known(raw_type, label, formula_elements):
    """:func:`_species` of a type symbol (``label`` '' where the type is given: the label then
    only names the site in a message) or of a label, cached across blocks and files; None where
    it raises (the caller then takes the path that raises it for the site)."""
    if raw_type is not None and not _is_null(raw_type):
        return _type_species_known(raw_type)  # the formula plays no part
    return _label_species_known(label, formula_elements)


@lru_cache(maxsize=65536)
def _type_species_known(raw_type):
    try:
        return _species(raw_type, "", "", "_atom_site_type_symbol")
    except (StructureError, InputError):
        return None


@lru_cache(maxsize=65536)
def _label_species_known(label, formula_elements):
    try:
        return _species(None, label, "", "_atom_site_type_symbol", formula_elements)
    except (StructureError, InputError):
        return None


# ---- displacement ---------------------------------------------------------------

def _aniso_ueq(block, cell6, src):
    """U_eq (A^2) per site label from the _atom_site_aniso_ loop (U, B or beta)."""
    import gemmi

    as_string, as_number = gemmi.cif.as_string, gemmi.cif.as_number
    out: dict[str, float] = {}
    kinds = (("U", 1.0), ("B", 1.0 / _EIGHT_PI2), ("beta", None))
    for kind, scale in kinds:
        table = block.find("_atom_site_aniso_", ["label", f"{kind}_11", f"{kind}_22", f"{kind}_33",
                                                 f"{kind}_12", f"{kind}_13", f"{kind}_23"])
        if len(table) == 0:
            continue
        L = lattice_vectors(cell6).T  # columns a, b, c (angstrom)
        recip = np.linalg.inv(L)  # rows a*, b*, c* (1/angstrom)
        nstar = np.linalg.norm(recip, axis=1)
        cols = [list(table.column(i)) for i in range(7)]
        # whole columns at once; a value that is not a plain number (a null, text) comes back NaN
        vals = np.array([[as_number(v) for v in col] for col in cols[1:]]).T  # (rows, 6)
        use = ~np.isnan(vals).any(axis=1)
        if not use.all():  # a row with a null is skipped; one with text is an error
            for r in np.flatnonzero(~use).tolist():
                if not any(col[r] in _NULLS for col in cols[1:]):
                    raise StructureError(f"anisotropic {kind} of site {as_string(cols[0][r])!r} is not a number",
                                         src, f"_atom_site_aniso_{kind}_11")
            vals = vals[use]
        if not len(vals):
            continue
        labels = [as_string(v) for v, u in zip(cols[0], use.tolist()) if u]
        m = vals[:, [0, 3, 4, 3, 1, 5, 4, 5, 2]].reshape(-1, 3, 3)  # U11 U22 U33 U12 U13 U23
        if kind == "beta":
            # beta_ij = 2 pi^2 a*_i a*_j U^ij
            m = m / (2.0 * math.pi ** 2 * np.outer(nstar, nstar))
        else:
            m = m * scale
        # CIF U^ij refer to the basis a_i / |a_i| scaled by |a*_i|:
        # U_cart = L diag(|a*|) U diag(|a*|) L^T (all rows at once)
        n = np.diag(nstar)
        ucart = L @ n @ m @ n @ L.T
        for label, t in zip(labels, np.trace(ucart, axis1=1, axis2=2).tolist()):
            out.setdefault(label, t / 3.0)
    return out


# ---- the block ----------------------------------------------------------------

def _read_block(block, src: str, stem: str, file_notes: tuple = ()) -> Crystal:
    import gemmi

    cell6, missing_angles = _cell(block, src)
    ops, number, notes, _origin, rots, trans = _symmetry_arrays(block, cell6, src)
    if missing_angles:
        if number is None or number < 16:
            raise StructureError(f"{', '.join(missing_angles)} absent and the space group "
                                 f"({number or 'unknown'}) does not fix the angles at 90 deg", src,
                                 missing_angles[0])
        if 143 <= number <= 194:
            raise StructureError(f"{', '.join(missing_angles)} absent in a trigonal/hexagonal cell", src,
                                 missing_angles[0])
        notes.append(f"{', '.join(missing_angles)} absent: 90 deg (CIF default; fixed by space group {number})")

    # the identity alone (a P1 file): no metric to check, each site its own single image
    p1 = len(rots) == 1 and not trans.any() and bool((rots[0] == _EYE3).all())
    if p1:
        dev, metrics = 0.0, None
    else:
        devs, metrics = metric_deviations(cell6, distinct_rotations(rots))
        dev = float(devs.max())
    if dev > _METRIC_MAX:
        raise StructureError(f"the symmetry operators ({_origin}) do not fit the cell "
                             f"{np.round(cell6, 4).tolist()}: the metric changes by {dev:.2g} relative under "
                             "them (wrong setting or unique axis?); allowed: a cell invariant under the group",
                             src, _origin or "_cell_angle_alpha")
    if dev > _METRIC_TOL:
        notes.append(f"cell {np.round(cell6, 4).tolist()} is not invariant under the symmetry operators "
                     f"(metric deviates by up to {dev:.1e} relative); used as given")

    table = block.find("_atom_site_", ["label", "?type_symbol", "?fract_x", "?fract_y", "?fract_z",
                                       "?U_iso_or_equiv", "?B_iso_or_equiv", "?occupancy", "?calc_flag",
                                       "?symmetry_multiplicity"])
    if len(table) == 0:
        if block.find_values("_atom_site_type_symbol") and block.find_values("_atom_site_fract_x"):
            table = block.find("_atom_site_", ["type_symbol", "?type_symbol", "?fract_x", "?fract_y",
                                               "?fract_z", "?U_iso_or_equiv", "?B_iso_or_equiv",
                                               "?occupancy", "?calc_flag", "?symmetry_multiplicity"])
        if len(table) == 0:
            if block.find_values("_atom_site_Cartn_x"):
                raise StructureError("atom sites are given only as Cartesian coordinates; allowed: "
                                     "_atom_site_fract_x/y/z", src, "_atom_site_fract_x")
            raise StructureError("no atoms: the block has no _atom_site_ loop", src, "_atom_site_fract_x")
    if not table.has_column(2):
        raise StructureError("no atom coordinates: _atom_site_fract_x/y/z absent", src, "_atom_site_fract_x")
    aniso = _aniso_ueq(block, cell6, src)
    formula_elements = _formula_elements(block)

    L = lattice_vectors(cell6)
    as_string, as_number = gemmi.cif.as_string, gemmi.cif.as_number
    nrow = len(table)
    # Whole columns at once (raw strings), numbers parsed in one pass per column; a value
    # that is not a plain CIF number comes back NaN and goes through _number (fractions such
    # as 1/4, and the error naming the field).
    cols = [list(table.column(i)) if table.has_column(i) else None for i in range(10)]
    nums = [None if cols[i] is None else [as_number(v) for v in cols[i]] for i in (2, 3, 4, 5, 6, 7)]
    xyz_cols = [(cols[i], nums[i - 2], f"_atom_site_fract_{axis}", axis) for i, axis in zip((2, 3, 4), "xyz")]
    labels_col, type_col, calc_col = cols[0], cols[1], cols[8]
    occ_col, occ_num = cols[7], nums[5]
    u_col, u_num, b_col, b_num = cols[5], nums[3], cols[6], nums[4]

    fast = _sites_fast(labels_col, type_col, calc_col, xyz_cols, occ_col, occ_num, u_col, u_num, b_col, b_num,
                       aniso, src, formula_elements)
    if fast is not None:
        sites, site_sp, site_occ, site_b, site_label, site_row, default_b, from_label = fast
        zero_occ, unknown_occ = [], []
    else:  # some site needs a closer look (a dummy, a fraction, a null, occupancy 0 or '?', an error): row by row
        sites, site_sp, site_occ, site_b, site_label, site_row = [], [], [], [], [], []
        default_b, from_label, zero_occ, unknown_occ = [], [], [], []
        species_cache: dict = {}
        for r in range(nrow):
            label = as_string(labels_col[r])
            if not label:  # '#n': n = atoms expanded so far + 1 (needs the images of the sites before)
                label = f"#{_count_images(sites, rots, trans, L) + 1}"
            if calc_col is not None and as_string(calc_col[r]).lower() in ("dum", "dummy"):
                continue
            xyz = []
            for col, num, tag, axis in xyz_cols:
                raw = col[r] if col is not None else None
                x = num[r] if num is not None else math.nan
                if x != x:
                    if _is_null(raw):
                        raise StructureError(f"site {label!r} has no {axis} coordinate ({raw or 'absent'})", src, tag)
                    x = _number(raw, src, tag)
                xyz.append(x)
            traw = type_col[r] if type_col is not None else None
            key = (traw, label if traw is None or _is_null(traw) else "")
            if key not in species_cache:
                species_cache[key] = _species(key[0], label, src, "_atom_site_type_symbol", formula_elements)
            sp, by_label = species_cache[key]
            if by_label:
                from_label.append(label)
            occ = 1.0
            if occ_col is not None:
                raw = occ_col[r]
                if _is_null(raw):
                    if raw == "?":
                        unknown_occ.append(label)
                else:
                    occ = occ_num[r]
                    if occ != occ:
                        occ = _number(raw, src, "_atom_site_occupancy")
            if occ > 1.0 + _OCC_TOL:
                raise StructureError(f"occupancy {occ:g} of site {label!r} is > 1; allowed: 0 < occupancy <= 1",
                                     src, "_atom_site_occupancy")
            if occ < 0:
                raise StructureError(f"occupancy {occ:g} of site {label!r} is negative; allowed: 0 < occupancy <= 1",
                                     src, "_atom_site_occupancy")
            if occ == 0:
                zero_occ.append(label)
                continue
            if label in aniso:
                u = aniso[label]
                utag = "_atom_site_aniso_U_11"
            elif u_col is not None and not _is_null(u_col[r]):
                u = u_num[r]
                if u != u:
                    u = _number(u_col[r], src, "_atom_site_U_iso_or_equiv")
                utag = "_atom_site_U_iso_or_equiv"
            elif b_col is not None and not _is_null(b_col[r]):
                u = b_num[r]
                if u != u:
                    u = _number(b_col[r], src, "_atom_site_B_iso_or_equiv")
                u = u / _EIGHT_PI2
                utag = "_atom_site_B_iso_or_equiv"
            else:
                u = None
            if u is None:
                b = DEFAULT_B_ISO
                default_b.append(label)
            else:
                b = _EIGHT_PI2 * u
                if not b >= 0:
                    raise StructureError(f"displacement of site {label!r} is negative (U = {u:.4g} A^2); "
                                         "allowed: U >= 0", src, utag)
            sites.append(xyz)
            site_sp.append(sp)
            site_occ.append(min(occ, 1.0))
            site_b.append(b)
            site_label.append(label)
            site_row.append(r)

    if not len(sites):
        what = "every site has occupancy 0" if zero_occ else "the _atom_site_ loop is empty"
        raise StructureError(f"no atoms: {what}", src, "_atom_site_fract_x")
    # Every site through every operator at once; images of one site closer than MERGE_TOL merged
    # (one compiled call for the whole block). Where the cell fits the group, each site is
    # symmetrised from its own images in the same call (the operators form a group, so a site's
    # partners are its own images); otherwise the general path below decides.
    fit_here = not p1 and dev <= METRIC_TOL
    if fit_here:
        images, keep, delta = _expand_symmetrised(np.asarray(sites, dtype=np.float64), rots, trans, L)
    else:
        images, keep = _expand(np.asarray(sites, dtype=np.float64), rots, trans, L, p1)
    counts = keep.sum(axis=1)
    frac = images[keep]
    mult_mismatch = []
    if cols[9] is not None:
        # Two conventions in the wild: the Wyckoff multiplicity (images in the cell), or
        # (SHELXL) the order of the site-symmetry group, i.e. len(ops) / images.
        for label, r, n in zip(site_label, site_row, counts.tolist()):
            raw = cols[9][r]
            if _is_null(raw):
                continue
            mult = as_number(raw)
            if not math.isnan(mult) and int(mult) != n and int(mult) * n != len(ops):
                mult_mismatch.append(f"{label} ({n} vs {int(mult)})")
    species = tuple(chain.from_iterable(repeat(sp, n) for sp, n in zip(site_sp, counts.tolist())))
    occ_all = np.repeat(np.array(site_occ), counts)
    b_all = np.repeat(np.array(site_b), counts)

    if default_b:
        notes.append(f"no displacement parameter for {_few(default_b)}: B = {DEFAULT_B_ISO} A^2 (default)")
    if aniso:
        notes.append("anisotropic displacements reduced to U_eq = trace(U_cart)/3")
    if from_label:
        notes.append(f"species from the labels of {_few(from_label)} (no _atom_site_type_symbol)")
    if zero_occ:
        notes.append(f"sites with occupancy 0 dropped: {_few(zero_occ)}")
    if mult_mismatch:
        notes.append(f"site multiplicity differs from _atom_site_symmetry_multiplicity: {_few(mult_mismatch)}")
    if unknown_occ:
        notes.append(f"occupancy '?' taken as 1 for {_few(unknown_occ)}")
    fields = dict(species=species, occupancy=occ_all, b_iso=b_all, space_group=number, source=src,
                  name=block.name or stem)
    what = f"CIF operators ({_origin or 'symbol'})"
    if fit_here:
        # as symmetry_fit below would, from the per-site moves: the largest shift of an atom is
        # that of its site (the rotations preserve the metric)
        fields["symmetry"] = np.concatenate([rots, trans[:, :, None]], axis=2)
        moved = float(np.sqrt((np.square(delta @ L)).sum(axis=1).max()))
        if moved > 1e-4:
            notes.append(f"positions symmetrised with the {what} (largest shift {moved:.2g} A)")
        cell6 = cell_from_metric(metrics.mean(axis=0))  # symmetrised_cell, from the metrics above
    elif len(ops) > 1:
        # The operators the atoms were expanded with, for the simulator's one-|F|^2-per-Laue-orbit
        # path; images merged within MERGE_TOL are symmetrised back onto their site. The Crystal
        # is built once, with them (the positions are checked and averaged on the arrays).
        frac = wrap_unit(frac)  # the positions as a Crystal holds them
        nuc = {sp: parse_species(sp, src, "_atom_site_type_symbol")[0] for sp in set(site_sp)}
        nuclides = [nuc[sp] for sp in species]
        got, note = symmetry_fit(cell6, frac, nuclides, occ_all, b_all, np.concatenate([rots, trans[:, :, None]], axis=2),
                                 MERGE_TOL, what, src)
        if got is not None:
            ops_arr, cell6, frac = got
            fields["symmetry"] = ops_arr
        notes.extend([note] if note else [])
    return Crystal(cell=cell6, frac=frac, notes=tuple(file_notes) + tuple(notes), **fields)


def _sites_fast(labels_col, type_col, calc_col, xyz_cols, occ_col, occ_num, u_col, u_num, b_col, b_num, aniso, src,
                formula_elements):
    """The atom-site rows of a block all at once, where every row is plain: a label, numeric
    coordinates, occupancy in (0, 1] (or none), a numeric non-negative displacement (or none)
    and a species that reads. Returns what _read_block's row loop would, or None where any row
    is not plain (that loop then runs, so every message and note stays the same)."""
    import gemmi

    as_string = gemmi.cif.as_string
    labels = [as_string(v) for v in labels_col]
    if not all(labels):
        return None
    if calc_col is not None and any(as_string(v).lower() in ("dum", "dummy") for v in calc_col):
        return None
    if any(num is None for _, num, _, _ in xyz_cols):
        return None
    xyz = np.array([num for _, num, _, _ in xyz_cols]).T
    if np.isnan(xyz).any():
        return None
    n = len(labels)
    if occ_col is None:
        occ = np.ones(n)
    else:
        occ = np.array(occ_num)
        if not ((occ > 0) & (occ <= 1.0 + _OCC_TOL)).all():  # NaN ('?', '.', text) fails too
            return None
    if type_col is None:
        keys = [(None, lab) for lab in labels]
    else:
        keys = [(t, lab if t in _NULLS else "") for t, lab in zip(type_col, labels)]
    cache: dict = {}
    for k in dict.fromkeys(keys):  # each distinct key once
        got = _species_known(k[0], k[1], formula_elements)
        if got is None:  # not a species: the row loop raises its message
            return None
        cache[k] = got
    species = [cache[k][0] for k in keys]
    by_label = any(v[1] for v in cache.values())
    from_label = [lab for k, lab in zip(keys, labels) if cache[k][1]] if by_label else []
    # displacement, first found: the aniso loop's U_eq, U_iso, B_iso, else the default
    nan = math.nan
    u = np.full(n, nan)
    given = np.zeros(n, dtype=bool)
    if b_col is not None:
        has = np.array([v not in _NULLS for v in b_col])
        u = np.where(has, np.array(b_num) / _EIGHT_PI2, u)
        given |= has
    if u_col is not None:
        has = np.array([v not in _NULLS for v in u_col])
        u = np.where(has, np.array(u_num), u)
        given |= has
    if aniso:
        has = np.array([lab in aniso for lab in labels])
        u = np.where(has, np.array([aniso.get(lab, nan) for lab in labels]), u)
        given |= has
    b = np.where(given, _EIGHT_PI2 * u, DEFAULT_B_ISO)
    if not (b >= 0).all():  # a displacement that is not a number, or negative
        return None
    default_b = [] if given.all() else [lab for lab, g in zip(labels, given.tolist()) if not g]
    return xyz, species, np.minimum(occ, 1.0), b, labels, range(n), default_b, from_label


def _expand(sites: np.ndarray, rots: np.ndarray, trans: np.ndarray, lattice: np.ndarray, identity: bool = False):
    """Images (s, m, 3) of every site under every operator, wrapped into [0, 1), and the mask
    (s, m) of those kept: the first of each group closer than MERGE_TOL (minimum image) within
    a site (``xtalhpc_kernels.sites.unique_images``). ``identity``: the operators are the
    identity alone (each site is its one image, kept)."""
    from xtalhpc_kernels.sites import unique_images

    if identity:  # what the einsum gives for x -> 1 x + 0 (finite x), without it
        images = (sites + trans)[:, None, :]
        images -= np.floor(images)
        return images, np.ones(images.shape[:2], dtype=np.bool_)
    images = np.einsum("kij,sj->ski", rots, sites) + trans
    images -= np.floor(images)
    keep = np.empty(images.shape[:2], dtype=np.bool_)
    unique_images(np.ascontiguousarray(images), np.ascontiguousarray(lattice, dtype=np.float64), MERGE_TOL, keep)
    return images, keep


def _expand_symmetrised(sites: np.ndarray, rots: np.ndarray, trans: np.ndarray, lattice: np.ndarray):
    """:func:`_expand` with every site symmetrised from its own images
    (``xtalhpc_kernels.sites.symmetrised_images``): images (s, m, 3) of the moved sites, the
    mask (s, m) of those kept (as :func:`_expand`'s), and the moves (s, 3) (fractional)."""
    from xtalhpc_kernels.sites import symmetrised_images

    s, m = len(sites), len(rots)
    images = np.empty((s, m, 3))
    keep = np.empty((s, m), dtype=np.bool_)
    delta = np.empty((s, 3))
    rot = np.ascontiguousarray(rots, dtype=np.float64)
    symmetrised_images(np.ascontiguousarray(sites), rot, np.ascontiguousarray(trans, dtype=np.float64),
                       inverse_rotations(rot.tobytes(), m), np.ascontiguousarray(lattice, dtype=np.float64),
                       MERGE_TOL, images, keep, delta)
    return images, keep, delta


def _count_images(sites, rots, trans, lattice) -> int:
    """Atoms the sites expand to (for the '#n' name of a site without a label)."""
    return int(_expand(np.array(sites), rots, trans, lattice)[1].sum()) if sites else 0


def _few(labels, n=6):
    s = ", ".join(labels[:n])
    return s + (f" (+{len(labels) - n} more)" if len(labels) > n else "")
