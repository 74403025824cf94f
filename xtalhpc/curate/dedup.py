"""De-duplication of structure entries.

Two entries are **duplicates** when they have

1. the same canonical reduced formula (:func:`xtalhpc.curate.formula.canonical_formula`;
   D counts as H, formulas compared at 1e-3 in the counts),
2. the same space-group number, and
3. (cell mode, the default when every entry has a cell) lattice parameters
   within tolerance: for each of a, b, c the relative difference
   ``|x - y| / max(x, y) <= length_tol`` (default 0.01, i.e. 1 %), and for
   each of alpha, beta, gamma ``|x - y| <= angle_tol`` (default 1.0 degree).

``mode="formula"`` drops condition 3 (for tables without cells such as the
dara-xrd ICSD/COD/MP tables).

Grouping is **transitive** (single linkage): if A~B and B~C then A, B, C form
one group even when A and C are further apart than the tolerance. This is
what "the same structure measured several times" usually looks like (a
temperature or pressure series drifts in small steps), and it makes the result
independent of the input order. Groups are found with a sorted sweep on ``a``
inside each (formula, space group) bucket and a union-find, O(n log n) in
practice: 180k rows take about a second.

Cells are compared as written. The same structure reported with another
choice of cell (a <-> c swapped in a monoclinic cell, another triclinic cell)
is found with ``niggli=True``: then two entries also match when their
Niggli-reduced primitive cells (gemmi's ``GruberVector``; centring from the
standard setting of the space group, so rhombohedral groups must be given in
hexagonal axes) are within the same tolerances. Matching either way links them.

**Keep rule**: in each group the entry with the most recent publication year
is kept (entries without a year count as oldest); ties go to the lowest id
(numerically when both ids are integers, else as strings), then to the earliest
input position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError
from .table import Record

#: Relative tolerance on a, b, c. 1 % covers thermal expansion across
#: ambient-temperature redeterminations and typical differences between
#: refinements of the same phase, while structures of different compositions
#: or types at the same formula are usually further apart.
DEFAULT_LENGTH_TOL = 0.01
#: Absolute tolerance on alpha, beta, gamma in degrees.
DEFAULT_ANGLE_TOL = 1.0


@dataclass
class DedupResult:
    """``kept`` indices into the input list; ``dropped`` rows (index, kept index, reason)."""

    kept: list[int]
    dropped: list[tuple[int, int, str]]
    n_groups: int

    @property
    def n_before(self) -> int:
        return len(self.kept) + len(self.dropped)

    @property
    def dropped_fraction(self) -> float:
        return len(self.dropped) / self.n_before if self.n_before else 0.0


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            if ri < rj:
                self.parent[rj] = ri
            else:
                self.parent[ri] = rj


def _id_key(rid: str):
    try:
        return (0, int(rid), "")
    except ValueError:
        return (1, 0, rid)


def _keep_key(rec: Record, index: int):
    """Sort key: smallest = kept. Most recent year first, then lowest id, then input order."""
    year = rec.year if rec.year is not None else -math.inf
    return (-year, _id_key(rec.id), index)


def cells_match(c1, c2, length_tol: float = DEFAULT_LENGTH_TOL, angle_tol: float = DEFAULT_ANGLE_TOL) -> bool:
    """True if two cells (a, b, c, alpha, beta, gamma) are within the dedup tolerance."""
    for x, y in zip(c1[:3], c2[:3]):
        if abs(x - y) > length_tol * max(x, y):
            return False
    return all(abs(x - y) <= angle_tol for x, y in zip(c1[3:], c2[3:]))


def _cell_diff(c1, c2) -> tuple[float, float]:
    dl = max(abs(x - y) / max(x, y) for x, y in zip(c1[:3], c2[:3]))
    da = max(abs(x - y) for x, y in zip(c1[3:], c2[3:]))
    return dl, da


def niggli_cell(cell, space_group: int) -> tuple[float, ...]:
    """Niggli-reduced primitive cell (a, b, c in angstrom, angles in degrees) of a conventional cell."""
    import gemmi

    gv = gemmi.GruberVector(gemmi.UnitCell(*cell), gemmi.find_spacegroup_by_number(int(space_group)).centring_type(),
                            False)
    gv.niggli_reduce()
    return tuple(float(x) for x in gv.get_cell().parameters)


def _sweep(idx: list[int], cells: list, uf: "_UnionFind", length_tol: float, angle_tol: float) -> None:
    """Union every pair of ``idx`` whose cells match; sorted sweep on a."""
    stop = 1.0 / (1.0 - length_tol)
    order = sorted(range(len(idx)), key=lambda p: cells[p][0])
    for pos, p in enumerate(order):
        limit = cells[p][0] * stop
        for q in order[pos + 1:]:
            if cells[q][0] > limit:
                break
            if cells_match(cells[p], cells[q], length_tol, angle_tol):
                uf.union(idx[p], idx[q])


def find_duplicates(records: list[Record], *, mode: str = "auto",
                    length_tol: float = DEFAULT_LENGTH_TOL, angle_tol: float = DEFAULT_ANGLE_TOL,
                    niggli: bool = False) -> DedupResult:
    """Group duplicate records and choose one per group (rules in the module docstring).

    Parameters
    ----------
    records : records from :func:`xtalhpc.curate.table.read_records`.
    mode : ``"cell"`` (formula + space group + lattice within tolerance),
        ``"formula"`` (formula + space group only) or ``"auto"`` (cell if every
        record has a cell, else formula).
    length_tol : relative tolerance on a, b, c (dimensionless, 0.01 = 1 %).
    angle_tol : absolute tolerance on alpha, beta, gamma (degrees).
    niggli : cell mode only: also match Niggli-reduced primitive cells (other settings).
    """
    if mode not in ("auto", "cell", "formula"):
        raise InputError(f"dedup mode {mode!r}; allowed: auto, cell, formula", field="mode")
    if not (0 <= length_tol < 1) or not (0 <= angle_tol < 180):
        raise InputError(f"tolerances length {length_tol} (allowed [0, 1)), angle {angle_tol} deg "
                         "(allowed [0, 180))", field="tolerance")
    if mode == "auto":
        mode = "cell" if records and all(r.cell is not None for r in records) else "formula"
    if mode == "cell":
        for r in records:
            if r.cell is None:
                raise InputError(f"row {r.row} (id {r.id}) has no lattice parameters; use formula mode "
                                 "to compare by formula and space group only", r.source, "a")
    n = len(records)
    uf = _UnionFind(n)
    buckets: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(records):
        buckets.setdefault((r.formula, r.space_group), []).append(i)
    reduced: dict[int, tuple[float, ...]] = {}
    if mode == "formula":
        for idx in buckets.values():
            for j in idx[1:]:
                uf.union(idx[0], j)
    else:
        for idx in buckets.values():
            if len(idx) == 1:
                continue
            _sweep(idx, [records[i].cell for i in idx], uf, length_tol, angle_tol)
            if niggli:
                for i in idx:
                    try:
                        reduced[i] = niggli_cell(records[i].cell, records[i].space_group)
                    except (RuntimeError, ValueError) as exc:
                        raise InputError(f"row {records[i].row} (id {records[i].id}): cell {records[i].cell} "
                                         f"cannot be Niggli-reduced: {exc}", records[i].source, "a") from None
                _sweep(idx, [reduced[i] for i in idx], uf, length_tol, angle_tol)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    kept, dropped = [], []
    for members in groups.values():
        keep = min(members, key=lambda i: _keep_key(records[i], i))
        kept.append(keep)
        for i in members:
            if i == keep:
                continue
            if mode == "formula":
                reason = "same formula and space group"
            else:
                reason_cell = "cell"
                dl, da = _cell_diff(records[i].cell, records[keep].cell)
                direct = dl <= length_tol and da <= angle_tol
                if not direct and i in reduced and keep in reduced:
                    dl2, da2 = _cell_diff(reduced[i], reduced[keep])
                    if dl2 <= length_tol and da2 <= angle_tol:
                        direct, dl, da = True, dl2, da2
                        reason_cell = "Niggli-reduced cell"
                reason = (f"same formula and space group, {reason_cell} within tolerance of kept entry "
                          f"(max length diff {100 * dl:.2f} %, max angle diff {da:.2f} deg)")
                if not direct:
                    reason = (f"same formula and space group, linked to kept entry through a chain of "
                              f"entries each within tolerance (direct: length {100 * dl:.2f} %, "
                              f"angle {da:.2f} deg)")
            dropped.append((i, keep, reason))
    kept.sort()
    dropped.sort()
    return DedupResult(kept=kept, dropped=dropped, n_groups=len(groups))
