"""Wyckoff-position tables of the 230 space groups as NumPy arrays.

The tables come from pyxtal's ``database/wyckoff_list.csv`` (MIT licence), bundled as
``xtalhpc/data/wyckoff_list.csv.gz``: for
every space group in its standard setting (International Tables, unique axis b
for monoclinic groups, origin choice 2 where there are two, hexagonal axes for
the rhombohedral groups) the list of Wyckoff positions, general position first,
each given as the coordinate triplets of *all* its points in the conventional
cell (centring translations included), e.g. ``'x, -x, z'`` or ``'0, 1/2, 1/4'``.

Each triplet is parsed once into a 3x4 affine matrix ``[A | t]``; the points of
a Wyckoff orbit are then ``A @ p + t`` for a parameter vector ``p`` (only the
free components of ``p`` matter). Tables are built on first use per space group
and cached; nothing is read at import time. The file is located without
importing pyxtal, which is not needed at all.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import XtalhpcError
from ..spacegroups import check_space_group

#: Wyckoff letters in the order of increasing multiplicity used by the tables
#: (space group 47, Pmmm, is the one group that needs the 27th letter 'A').
_LETTERS = "abcdefghijklmnopqrstuvwxyzA"
_TERM_RE = re.compile(r"[+-]?[^+-]+")


@dataclass(frozen=True)
class WyckoffTable:
    """Wyckoff positions of one space group, general position first.

    Attributes
    ----------
    space_group : int
        International Tables number.
    letters : tuple of str
        Wyckoff letter per position (``letters[0]`` is the general position).
    multiplicity : ndarray of int, shape (n_wp,)
        Points per conventional cell.
    dof : ndarray of int, shape (n_wp,)
        Free parameters (rank of the linear part); 0 for fixed positions, which
        can be occupied only once.
    offset : ndarray of int, shape (n_wp + 1,)
        Rows of ``ops`` belonging to position ``i``: ``ops[offset[i]:offset[i+1]]``.
    ops : ndarray of float, shape (sum(multiplicity), 3, 4)
        Affine maps ``[A | t]`` from a parameter vector to each point of the orbit.
    symops : tuple of str
        The general-position triplets (the space-group operations of the
        conventional cell, centring included), as written in CIF files.
    """

    space_group: int
    letters: tuple[str, ...]
    multiplicity: np.ndarray
    dof: np.ndarray
    offset: np.ndarray
    ops: np.ndarray
    symops: tuple[str, ...]

    @property
    def n_positions(self) -> int:
        return int(self.multiplicity.size)

    def label(self, i: int) -> str:
        """Wyckoff label such as ``'4a'`` of position ``i``."""
        return f"{int(self.multiplicity[i])}{self.letters[i]}"

    def orbit(self, i: int, params) -> np.ndarray:
        """Fractional coordinates (m, 3), wrapped into [0, 1), of position ``i`` for parameters ``params``."""
        ops = self.ops[self.offset[i]:self.offset[i + 1]]
        p = np.asarray(params, dtype=np.float64).reshape(3)
        x = ops[:, :, :3] @ p + ops[:, :, 3]
        return x - np.floor(x)


def parse_triplet(triplet: str) -> np.ndarray:
    """3x4 affine matrix ``[A | t]`` of a coordinate triplet such as ``'-x+y+2/3, 2x, z+1/4'``."""
    parts = [s.replace(" ", "") for s in triplet.split(",")]
    if len(parts) != 3:
        raise ValueError(f"coordinate triplet {triplet!r} does not have 3 components")
    m = np.zeros((3, 4))
    for row, expr in enumerate(parts):
        terms = _TERM_RE.findall(expr)
        if "".join(terms) != expr or not terms:
            raise ValueError(f"cannot parse {expr!r} in {triplet!r}")
        for term in terms:
            if term[-1] in "xyz":
                coef = term[:-1]
                c = {"": 1.0, "+": 1.0, "-": -1.0}.get(coef)
                if c is None:
                    c = float(Fraction(coef))
                m[row, "xyz".index(term[-1])] += c
            else:
                m[row, 3] += float(Fraction(term))
    return m


def _table_path() -> Path:
    """The bundled copy of pyxtal's Wyckoff table (xtalhpc/data/PROVENANCE.txt)."""
    from importlib import resources

    path = Path(str(resources.files("xtalhpc") / "data" / "wyckoff_list.csv.gz"))
    if not path.is_file():
        raise XtalhpcError(f"the bundled Wyckoff table {path} is missing (broken install?)")
    return path


@lru_cache(maxsize=1)
def _raw_tables() -> dict[int, list[list[str]]]:
    """Space group -> list of Wyckoff positions, each a list of triplets (read once)."""
    import csv

    out: dict[int, list[list[str]]] = {}
    import gzip

    with gzip.open(_table_path(), "rt", newline="") as fh:
        for row in csv.reader(fh):
            if len(row) < 2 or not row[0].strip().isdigit() or not row[1].strip():
                continue
            sg = int(row[0])
            if 1 <= sg <= 230:
                out[sg] = ast.literal_eval(row[1])
    missing = sorted(set(range(1, 231)) - set(out))
    if missing:
        raise XtalhpcError(f"pyxtal's Wyckoff table {_table_path()} lacks space groups {missing[:10]}")
    return out


@lru_cache(maxsize=None)
def wyckoff_table(space_group: int) -> WyckoffTable:
    """The :class:`WyckoffTable` of ``space_group`` (1-230), built on first use and cached."""
    sg = check_space_group(space_group, field="space_group")
    positions = _raw_tables()[sg]
    mats = [np.array([parse_triplet(t) for t in wp]) for wp in positions]
    mult = np.array([len(wp) for wp in positions], dtype=np.int64)
    dof = np.array([int(np.linalg.matrix_rank(m[0, :, :3])) for m in mats], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(mult)]).astype(np.int64)
    n = len(positions)
    letters = tuple(_LETTERS[n - 1 - i] for i in range(n))
    ops = np.ascontiguousarray(np.concatenate(mats, axis=0))
    for a in (mult, dof, offset, ops):
        a.setflags(write=False)
    return WyckoffTable(sg, letters, mult, dof, offset, ops,
                        tuple(t.replace(" ", "") for t in positions[0]))


def _translation_set(ops: np.ndarray) -> frozenset:
    """Translations (in 1/24 units, mod 1) that map the orbit ``ops`` onto itself for every parameter value."""
    by_linear: dict[bytes, set] = {}
    for k in range(ops.shape[0]):
        key = np.round(ops[k, :, :3], 6).tobytes()
        by_linear.setdefault(key, set()).add(tuple(int(v) % 24 for v in np.round(ops[k, :, 3] * 24)))
    t0 = np.round(ops[0, :, 3] * 24).astype(int)
    first = by_linear[np.round(ops[0, :, :3], 6).tobytes()]
    out = set()
    for tk in first:
        cand = tuple(int(v) % 24 for v in np.array(tk) - t0)
        if all({tuple((a + c) % 24 for a, c in zip(x, cand)) for x in group} == group
               for group in by_linear.values()):
            out.add(cand)
    return frozenset(out)


@lru_cache(maxsize=None)
def extra_translations(space_group: int) -> tuple[frozenset, ...]:
    """Per Wyckoff position, the translations that map its orbit onto itself but are not in the group.

    Translations are triples of integers in 1/24 units. A non-empty set marks a
    *non-characteristic orbit* (Engel, Matsumoto, Steinmann & Wondratschek 1984):
    atoms on such positions alone have a smaller cell, hence a different space
    group. A crystal has exactly the group's translations when the intersection
    of these sets over its occupied positions is empty.
    """
    t = wyckoff_table(space_group)
    own = _translation_set(t.ops[t.offset[0]:t.offset[1]])
    return tuple(_translation_set(t.ops[t.offset[i]:t.offset[i + 1]]) - own for i in range(t.n_positions))

