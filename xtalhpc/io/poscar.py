"""VASP POSCAR/CONTCAR reader (VASP 4 and 5 layouts).

Layout: comment; scale (one number, or three per-axis factors; a negative
single number is the cell volume in angstrom^3); three lattice vectors
(angstrom, rows); species line (VASP 5) then counts; optional ``Selective
dynamics``; ``Direct`` or ``Cartesian`` (first letter D / C or K); one line of
coordinates per atom.

Species: the VASP 5 species line (POTCAR suffixes such as ``Fe_pv`` or
``Fe/1a2b`` dropped). A VASP 4 file has no species line; its species are taken
from per-atom labels written after the coordinates (``0.5 0.5 0.5 # Na1`` or
``... Na``, as spglib's and ASE's files do) when every atom has one, else the
file is an error: counts alone do not say which element is which.

A POSCAR declares no space group and carries no operations: ``read_poscar`` returns
the cell as written (``space_group`` None); :func:`xtalhpc.io.read_blocks` (and so
every reader entry point and command) then finds its symmetry with
:func:`xtalhpc.crystal.detect_symmetry` at :data:`~xtalhpc.crystal.FIND_SYMPREC`
(the found group becomes its label; positions are not moved). Occupancies are 1 and B
is :data:`~xtalhpc.crystal.DEFAULT_B_ISO` (noted).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..crystal import DEFAULT_B_ISO, Crystal, cell_from_vectors
from ..errors import InputError, StructureError
from .cif import species_from_label



def _floats(line: str, n: int | None = None) -> list[float] | None:
    toks = line.split()
    if n is not None:
        toks = toks[:n]
    try:
        vals = [float(t) for t in toks]
    except ValueError:
        return None
    return vals if (n is None or len(vals) == n) else None


def looks_like_poscar(text: str) -> bool:
    """Cheap content check: a scale line and three lattice-vector lines after a comment."""
    lines = text.splitlines()
    if len(lines) < 7:
        return False
    scale = _floats(lines[1].split("!")[0])
    if not scale or len(scale) not in (1, 3):
        return False
    if not all(_floats(lines[i], 3) is not None and len(lines[i].split()) == 3 for i in (2, 3, 4)):
        return False
    k = 6 if lines[5].split() and lines[5].split()[0][0].isalpha() else 5
    return k < len(lines) and all(re.fullmatch(r"\d+", t) for t in lines[k].split() or ["x"])


def _clean_species(tok: str) -> str:
    return re.split(r"[_/]", tok, maxsplit=1)[0]


def _coordinates_fast(block: list[str], n: int) -> np.ndarray | None:
    """The first three numbers of the n atom lines at once, or None where a line is short,
    blank or not numeric (:func:`_coordinates` then gives the message)."""
    if len(block) < n:
        return None
    try:
        vals = [float(t) for line in block for t in line.split()[:3]]
    except ValueError:
        return None
    if len(vals) != 3 * n:
        return None
    return np.array(vals).reshape(n, 3)


def _coordinates(lines: list[str], k: int, n: int, src: str):
    """Coordinates (n, 3) and per-atom labels (None where a line has none) of the n atom
    lines from line k, one by one."""
    coords, labels = [], []
    for i in range(n):
        j = k + i
        if j >= len(lines) or not lines[j].strip():
            raise StructureError(f"{n} atoms announced but only {i} coordinate lines", src, f"line {j + 1}")
        toks = lines[j].split()
        v = _floats(" ".join(toks[:3]), 3)
        if v is None:
            raise StructureError(f"coordinate line {lines[j].strip()!r} is not three numbers", src, f"line {j + 1}")
        coords.append(v)
        rest = [t for t in toks[3:] if t not in ("T", "F", "#", "!")]
        labels.append(rest[0].lstrip("#!") if rest else None)
    return np.array(coords), labels


def read_poscar(path: str | Path) -> Crystal:
    """Read a VASP POSCAR/CONTCAR file into a :class:`Crystal`.

    Raises
    ------
    StructureError
        Naming the file and the line (``line N``) that is malformed, a VASP 4 file
        without species, or a cell with zero or negative volume.
    """
    path = Path(path)
    src = str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    # Blank lines end a POSCAR's atom block (velocities may follow); keep leading content only.
    if len(lines) < 7:
        raise StructureError(f"only {len(lines)} lines; a POSCAR needs a comment, scale, 3 lattice "
                             "vectors, counts, coordinate mode and atoms", src, "line 1")
    notes: list[str] = []

    scale = _floats(lines[1].split("!")[0].split("#")[0])
    if not scale or len(scale) not in (1, 3):
        raise StructureError(f"scale line {lines[1].strip()!r} is not one or three numbers", src, "line 2")
    vecs = []
    for i in (2, 3, 4):
        v = _floats(lines[i], 3)
        if v is None:
            raise StructureError(f"lattice vector line {lines[i].strip()!r} is not three numbers", src, f"line {i + 1}")
        vecs.append(v)
    lattice = np.array(vecs)
    raw_vol = float(np.linalg.det(lattice))
    if len(scale) == 3:
        if any(s <= 0 for s in scale):
            raise StructureError(f"per-axis scale factors {scale} must be > 0", src, "line 2")
        lattice = lattice * np.array(scale)[None, :]
    elif scale[0] < 0:
        if abs(raw_vol) < 1e-12:
            raise StructureError("lattice vectors are coplanar (zero volume)", src, "lines 3-5")
        lattice = lattice * (abs(scale[0]) / abs(raw_vol)) ** (1.0 / 3.0)
    elif scale[0] == 0:
        raise StructureError("scale factor is 0", src, "line 2")
    else:
        lattice = lattice * scale[0]
    vol = float(np.linalg.det(lattice))
    if not vol > 1e-3 * float(np.prod(np.linalg.norm(lattice, axis=1))):  # flat cells are noise-positive
        what = "zero" if abs(vol) <= 1e-6 else "negative (left-handed lattice vectors)"
        raise StructureError(f"cell volume is {what} ({vol:.4g} A^3); lattice vectors must be right-handed "
                             "and not coplanar", src, "lines 3-5")

    k = 5
    species_line = None
    if lines[k].split() and lines[k].split()[0][0].isalpha():
        species_line = [_clean_species(t) for t in lines[k].split()]
        k += 1
    try:
        counts = [int(t) for t in lines[k].split()]
    except ValueError:
        raise StructureError(f"atom counts line {lines[k].strip()!r} is not integers", src, f"line {k + 1}") from None
    if not counts or any(c < 0 for c in counts) or sum(counts) == 0:
        raise StructureError(f"atom counts {counts} must be >= 0 with at least one atom", src, f"line {k + 1}")
    if species_line is not None and len(species_line) != len(counts):
        raise StructureError(f"{len(species_line)} species but {len(counts)} counts", src, f"line {k + 1}")
    k += 1
    if k < len(lines) and lines[k].strip()[:1] in ("s", "S"):
        k += 1
    if k >= len(lines):
        raise StructureError("coordinate mode line (Direct/Cartesian) missing", src, f"line {k + 1}")
    mode = lines[k].strip()[:1].lower()
    if mode not in ("d", "c", "k"):
        raise StructureError(f"coordinate mode {lines[k].strip()!r}; allowed: Direct or Cartesian",
                             src, f"line {k + 1}")
    cartesian = mode in ("c", "k")
    k += 1

    n = sum(counts)
    coords = _coordinates_fast(lines[k:k + n], n) if species_line is not None else None
    if coords is None:  # line by line, with its messages (and the VASP 4 per-atom labels)
        coords, labels = _coordinates(lines, k, n, src)

    per_atom = []
    if species_line is not None:
        for s, c in zip(species_line, counts):
            per_atom += [s] * c
        field = "line 6 (species)"
    else:
        if any(lab is None for lab in labels):
            raise StructureError("VASP 4 file without a species line (and no per-atom labels after the "
                                 "coordinates); allowed: a VASP 5 species line above the counts", src,
                                 "line 6 (species)")
        start = 0
        for c in counts:
            group = [species_from_label(lab) for lab in labels[start:start + c]]
            if any(g is None for g in group) or len(set(group)) != 1:
                raise StructureError(f"per-atom labels {sorted(set(labels[start:start + c]))} of one species "
                                     "group do not name one element", src, f"line {k + start + 1}")
            per_atom += group
            start += c
        notes.append("VASP 4 file: species from the per-atom labels after the coordinates")
        field = "atom labels"
    from ..crystal import parse_species

    for s in dict.fromkeys(per_atom):
        try:
            parse_species(s, src, field)
        except InputError as exc:
            raise StructureError(exc.message, src, field) from None

    if cartesian:
        if len(scale) == 1 and scale[0] > 0:
            coords = coords * scale[0]
        elif len(scale) == 3:
            coords = coords * np.array(scale)[None, :]
        else:
            coords = coords * (abs(scale[0]) / abs(raw_vol)) ** (1.0 / 3.0)
        frac = coords @ np.linalg.inv(lattice)
    else:
        frac = coords
    notes.append(f"no displacement parameters in a POSCAR: B = {DEFAULT_B_ISO} A^2 (default)")
    return Crystal(cell=cell_from_vectors(lattice), frac=frac, species=tuple(per_atom),
                   occupancy=np.ones(n), b_iso=np.full(n, DEFAULT_B_ISO), space_group=None,
                   source=src, name=path.stem if path.suffix.lower() in (".vasp", ".poscar") else path.name,
                   notes=tuple(notes))
