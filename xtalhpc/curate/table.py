"""Reading ICSD-style structure tables (CSV/TSV exports) into validated records.

Header spellings accepted (case, spaces, underscores, dots, dashes and
brackets are ignored when matching; the first matching column wins):

======================  =====================================================
field                   accepted headers
======================  =====================================================
formula (required)      chemical name, chemical formula, formula, sum formula,
                        structured formula, reduced formula, composition
id                      icsd code, icsd id, coll code, collection code, cod id,
                        mp id, material id, database id, entry id, id, code
year                    publication year, pub year, year (a leading 4-digit
                        year is read: "2006 4/1/2007" -> 2006)
space group (required)  space group, space group number, spacegroup number,
                        sg, sg number, sg no, it number, space group symbol
                        (a number 1-230 or a Hermann-Mauguin symbol)
a, b, c                 a, b, c, cell a, cell length a, length a (angstrom)
alpha, beta, gamma      alpha, beta, gamma, cell alpha, cell angle alpha (degrees)
volume                  volume, cell volume (angstrom^3; read, not used for matching)
crystal system          crystal system (kept as written, not used)
======================  =====================================================

Without an id column the 1-based data-row number is the id. Cells are
required only when lattice parameters are compared (``require_cell=True``).
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import InputError
from .formula import canonical_formula

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "formula": ("chemicalname", "chemicalformula", "formula", "sumformula", "structuredformula",
                "reducedformula", "composition", "prettyformula"),
    "id": ("icsdcode", "icsdid", "collcode", "collectioncode", "codid", "mpid", "materialid",
           "databaseid", "entryid", "id", "code"),
    "year": ("publicationyear", "pubyear", "year"),
    "space_group": ("spacegroup", "spacegroupnumber", "sg", "sgnumber", "sgno", "spacegroupno",
                    "itnumber", "spacegroupsymbol", "sgsymbol", "hmsymbol"),
    "a": ("a", "cella", "celllengtha", "lengtha"),
    "b": ("b", "cellb", "celllengthb", "lengthb"),
    "c": ("c", "cellc", "celllengthc", "lengthc"),
    "alpha": ("alpha", "cellalpha", "cellanglealpha", "anglealpha"),
    "beta": ("beta", "cellbeta", "cellanglebeta", "anglebeta"),
    "gamma": ("gamma", "cellgamma", "cellanglegamma", "anglegamma"),
    "volume": ("volume", "cellvolume", "vol"),
    "crystal_system": ("crystalsystem",),
}
CELL_FIELDS = ("a", "b", "c", "alpha", "beta", "gamma")


def _norm_header(h: str) -> str:
    h = h.strip().lower()
    h = re.sub(r"\(.*?\)|\[.*?\]", "", h)  # drop units such as "a (A)"
    return re.sub(r"[^a-z0-9]", "", h)


@dataclass
class Record:
    """One structure entry: from a table row or a structure file.

    ``row`` is the 1-based data-row number in ``source`` (the header is row 0),
    or the index of the structure in a structure file.
    """

    id: str
    formula: str              # canonical reduced formula (Hill order)
    space_group: int
    source: str
    row: int
    formula_as_written: str = ""
    year: int | None = None
    cell: tuple[float, ...] | None = None
    raw: list[str] | None = field(default=None, repr=False)
    structure_type: str | None = None  # set for crystals (from their sites), see curate.splits


@lru_cache(maxsize=4096)
def _space_group_from_text(text: str) -> int | str:
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        import gemmi

        sg = gemmi.find_spacegroup_by_name(t.replace("_", ""))
        if sg is None:
            return f"space group {text!r} is neither a number 1-230 nor a Hermann-Mauguin symbol"
        return int(sg.number)
    if not v.is_integer() or not 1 <= v <= 230:
        return f"space group {text!r} is outside 1-230"
    return int(v)


def parse_space_group(text: str, source: str | None = None, field_name: str | None = None) -> int:
    """Space-group number from a table cell (number 1-230 or Hermann-Mauguin symbol)."""
    r = _space_group_from_text(str(text))
    if isinstance(r, str):
        raise InputError(r, source, field_name)
    return r


_YEAR_RE = re.compile(r"^\s*(\d{4})(?!\d)")


def _sniff_dialect(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in ("\t", ",", ";")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def read_table(path: str | Path, *, require_cell: bool = False) -> tuple[list[str], list[Record]]:
    """Read an ICSD/COD/MP-style table.

    Parameters
    ----------
    path : path to a CSV (comma, tab or semicolon separated; the delimiter is
        taken from the header line).
    require_cell : if True the six lattice-parameter columns must exist and
        hold numbers (lengths > 0 angstrom, angles in (0, 180) degrees).

    Returns
    -------
    header, records : the header as written and one :class:`Record` per data row
        (blank lines skipped).

    Raises
    ------
    InputError
        naming the file, the row and the column: missing columns, empty or
        non-numeric cells, unreadable formulas, space groups outside 1-230.
    """
    path = Path(path)
    src = str(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot open table: {exc.strerror}", src) from None
    with fh:
        first = fh.readline()
        if not first.strip():
            raise InputError("the table is empty (no header line)", src)
        delim = _sniff_dialect(first)
        fh.seek(0)
        reader = csv.reader(fh, delimiter=delim)
        header = next(reader)
        normed = [_norm_header(h) for h in header]
        col: dict[str, int] = {}
        for fname, aliases in FIELD_ALIASES.items():
            for alias in aliases:
                if alias in normed:
                    col[fname] = normed.index(alias)
                    break
        missing = [f for f in ("formula", "space_group") if f not in col]
        if require_cell:
            missing += [f for f in CELL_FIELDS if f not in col]
        if missing:
            allowed = "; ".join(f"{m}: {', '.join(FIELD_ALIASES[m])}" for m in missing)
            raise InputError(f"missing column(s) {', '.join(missing)} (header: {header}); "
                             f"accepted header spellings (case/space/punctuation ignored): {allowed}",
                             src, missing[0])
        name = {f: header[i] for f, i in col.items()}
        records: list[Record] = []
        ncol = len(header)
        for rowno, row in enumerate(reader, start=1):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) < ncol:
                row = row + [""] * (ncol - len(row))

            def cell_text(f: str) -> str:
                return row[col[f]].strip()

            ftext = cell_text("formula")
            if not ftext:
                raise InputError(f"row {rowno}: empty formula", src, name["formula"])
            try:
                formula = canonical_formula(ftext, strict=False)
            except InputError as exc:
                raise InputError(f"row {rowno}: {exc.message}", src, name["formula"]) from None
            sgt = cell_text("space_group")
            if not sgt:
                raise InputError(f"row {rowno}: empty space group; allowed: 1-230", src, name["space_group"])
            sg = _space_group_from_text(sgt)
            if isinstance(sg, str):
                raise InputError(f"row {rowno}: {sg}", src, name["space_group"])
            rid = cell_text("id") if "id" in col else ""
            if not rid:
                rid = str(rowno)
            year = None
            if "year" in col and cell_text("year"):
                m = _YEAR_RE.match(cell_text("year"))
                if not m:
                    raise InputError(f"row {rowno}: year {cell_text('year')!r} does not start with a "
                                     "4-digit year", src, name["year"])
                year = int(m.group(1))
            cell = None
            if all(f in col for f in CELL_FIELDS) and (require_cell or any(cell_text(f) for f in CELL_FIELDS)):
                vals = []
                for f in CELL_FIELDS:
                    t = cell_text(f)
                    try:
                        v = float(t)
                    except ValueError:
                        raise InputError(f"row {rowno}: {f} = {t!r} is not a number", src, name[f]) from None
                    if not math.isfinite(v) or v <= 0 or (f in ("alpha", "beta", "gamma") and v >= 180):
                        allowed = "> 0 angstrom" if f in ("a", "b", "c") else "in (0, 180) degrees"
                        raise InputError(f"row {rowno}: {f} = {t!r} is outside the allowed range ({allowed})",
                                         src, name[f])
                    vals.append(v)
                cell = tuple(vals)
            records.append(Record(id=rid, formula=formula, space_group=sg, source=src, row=rowno,
                                  formula_as_written=ftext, year=year, cell=cell, raw=row))
    return header, records


TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def is_table(path: str | Path) -> bool:
    """True for paths read as tables (``.csv``, ``.tsv``, ``.txt``); others are structure files."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def records_from_structures(path: str | Path, skipped: list | None = None) -> list[Record]:
    """Records of every structure in a structure file or folder (via ``xtalhpc.io``).

    A folder is scanned with ``xtalhpc.io.iter_structure_files``. A crystal
    without a space-group number gets the one spglib finds (symprec
    :data:`xtalhpc.curate.augment.SYMPREC`). With a ``skipped`` list, files or
    blocks that cannot be read are appended to it as errors instead of raising.
    """
    from .. import io as xio  # lazy: the readers are another module's business

    from .augment import detect_space_group

    files = list(xio.iter_structure_files(path)) if Path(path).is_dir() else [Path(path)]
    out = []
    for f in files:
        try:
            crystals = xio.read_structures(f)
        except InputError as exc:
            if skipped is None:
                raise
            skipped.append(exc)
            continue
        for i, crystal in enumerate(crystals, start=1):
            sg = crystal.space_group
            if sg is None:
                sg = detect_space_group(crystal)
                if sg is None:
                    exc = InputError(f"structure {i} ({crystal.name}): no space group given and spglib finds "
                                     "none", str(f), "space_group")
                    if skipped is None:
                        raise exc
                    skipped.append(exc)
                    continue
            from .splits import structure_type_key

            out.append(Record(id=crystal.name or f"{f.name}#{i}", formula=crystal.formula,
                              space_group=int(sg), source=crystal.source or str(f), row=i,
                              formula_as_written=crystal.formula,
                              cell=tuple(float(x) for x in crystal.cell),
                              structure_type=structure_type_key(crystal.replace(space_group=int(sg)))))
    return out


def read_records(path: str | Path, *, require_cell: bool = False,
                 skipped: list | None = None) -> tuple[list[str] | None, list[Record]]:
    """Table or structure file/folder -> (header or None, records); ``skipped`` as in
    :func:`records_from_structures` (tables are all-or-nothing)."""
    if is_table(path):
        return read_table(path, require_cell=require_cell)
    return None, records_from_structures(path, skipped)


def load_inputs(paths, *, require_cell: bool = False):
    """Read several inputs: ``(headers, records, skipped)``; unreadable structure files are skipped."""
    headers, records, skipped = [], [], []
    for p in paths:
        h, recs = read_records(p, require_cell=require_cell, skipped=skipped)
        headers.append(h)
        records.extend(recs)
    return headers, records, skipped


def report_skipped(skipped, command: str, limit: int = 5) -> None:
    """Print how many structure files were skipped, and the first few reasons."""
    import sys

    if skipped:
        print(f"xtalhpc {command}: skipped {len(skipped)} unreadable structure file(s)/block(s):", file=sys.stderr)
        for exc in skipped[:limit]:
            print(f"  {exc}", file=sys.stderr)
        if len(skipped) > limit:
            print(f"  ... and {len(skipped) - limit} more", file=sys.stderr)
