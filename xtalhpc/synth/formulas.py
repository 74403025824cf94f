"""Compositions of real compounds per space group, for synthetic crystals with real stoichiometries.

A table such as ../shared/data/metadata/icsd_filtered_info_2025_v3.csv (one row per database
entry: a reduced formula and a space-group number) says which compositions crystallise in which
group: CaTiO3 in Pnma, NaCl in Fm-3m, Fe2SiO4 in Pnma. :class:`FormulaTable` reads such a table
into the distinct (group, composition) pairs; :class:`~xtalhpc.synth.SynthConfig` with
``formula_fraction > 0`` then draws that share of crystals with one of the group's compositions
(element set and atom ratios) instead of a random one, and finds Wyckoff orbits whose
multiplicities give the formula times Z. Only compositions are taken from the table, never
positions: the table holds no structure.

Kept: formulas whose counts are integers (non-stoichiometric entries such as La6F17.6 are
skipped), whose elements are all in the element pool (the default pool has no hydrogen) and
that have at most :data:`MAX_ELEMENTS` elements. Every skipped row is counted by reason.
"""
from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

#: Most distinct elements of a composition (one orbit each at least; crystals have at most 8 orbits).
MAX_ELEMENTS = 8
#: Column names accepted for the formula and the space group (case-insensitive).
FORMULA_COLUMNS = ("reduced_formula", "formula", "pretty_formula")
GROUP_COLUMNS = ("spacegroup_number", "space_group_number", "space_group", "spacegroup", "sg")

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?|\.\d+)?|(\()|(\))(\d+(?:\.\d+)?|\.\d+)?|(\s+)")


def parse_formula(text: str) -> dict[str, float]:
    """``{element: count}`` of a chemical formula with nested parentheses ("CaMg(SiO3)2").

    Raises ValueError for anything else (unbalanced parentheses, unknown characters, empty).
    """
    stack: list[Counter] = [Counter()]
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:
            raise ValueError(f"unexpected {text[pos:m.start()]!r} at position {pos}")
        pos = m.end()
        el, n, opening, closing, n2, _space = m.groups()
        if el:
            stack[-1][el] += float(n) if n else 1.0
        elif opening:
            stack.append(Counter())
        elif closing:
            if len(stack) == 1:
                raise ValueError(f"unbalanced ')' at position {m.start()}")
            inner = stack.pop()
            k = float(n2) if n2 else 1.0
            for e, v in inner.items():
                stack[-1][e] += v * k
    if pos != len(text):
        raise ValueError(f"unexpected {text[pos:]!r} at position {pos}")
    if len(stack) != 1:
        raise ValueError("unbalanced '('")
    if not stack[0] or any(v <= 0 for v in stack[0].values()):
        raise ValueError("no element with a positive count")
    return dict(stack[0])


@dataclass(frozen=True)
class FormulaTable:
    """Distinct compositions per space group.

    Attributes
    ----------
    by_group : dict
        ``{space_group: ((elements, counts), ...)}``: ``elements`` a tuple of symbols, ``counts``
        the atoms of each per formula unit (integers), sorted by element; distinct per group.
    source : str
        The file read.
    sha256 : str
        SHA-256 of the file's bytes (recorded with the datasets made from it).
    rows, skipped : int, dict
        Rows read, and rows not used by reason (``non_integer``, ``element_outside_pool``,
        ``too_many_elements``, ``unparsable``, ``duplicate``).
    """

    by_group: dict = field(repr=False)
    source: str
    sha256: str
    rows: int
    skipped: dict

    @classmethod
    def from_csv(cls, path: str | Path, elements) -> "FormulaTable":
        """Read ``path`` (CSV with a formula and a space-group column), keeping compositions
        whose elements are all in ``elements`` (an iterable of symbols, e.g. a pool's)."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the formula table: {exc.strerror}", str(p), "--synthetic-prior") from None
        allowed = set(elements)
        text = raw.decode("utf-8", errors="replace").splitlines()
        reader = csv.DictReader(text)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        fcol = next((cols[c] for c in FORMULA_COLUMNS if c in cols), None)
        gcol = next((cols[c] for c in GROUP_COLUMNS if c in cols), None)
        if fcol is None or gcol is None:
            missing = "formula" if fcol is None else "space-group"
            allowed_names = FORMULA_COLUMNS if fcol is None else GROUP_COLUMNS
            raise InputError(f"no {missing} column; allowed names: {', '.join(allowed_names)}", str(p), "header")
        skipped: Counter = Counter()
        groups: dict[int, dict] = {}
        rows = 0
        for row_no, row in enumerate(reader, start=2):
            rows += 1
            g_raw = (row.get(gcol) or "").strip()
            try:
                sg = int(g_raw)
            except ValueError:
                raise InputError(f"row {row_no}: space group {g_raw!r} is not an integer 1-230", str(p), gcol) from None
            if not 1 <= sg <= 230:
                raise InputError(f"row {row_no}: space group {sg} is outside 1-230", str(p), gcol)
            try:
                comp = parse_formula((row.get(fcol) or "").strip())
            except ValueError:
                skipped["unparsable"] += 1
                continue
            if any(abs(v - round(v)) > 1e-9 for v in comp.values()):
                skipped["non_integer"] += 1
                continue
            if any(e not in allowed for e in comp):
                skipped["element_outside_pool"] += 1
                continue
            if len(comp) > MAX_ELEMENTS:
                skipped["too_many_elements"] += 1
                continue
            els = tuple(sorted(comp))
            key = (els, tuple(int(round(comp[e])) for e in els))
            seen = groups.setdefault(sg, {})
            if key in seen:
                skipped["duplicate"] += 1
                continue
            seen[key] = None
        if rows == 0:
            raise InputError("the formula table has no rows", str(p), fcol)
        by_group = {g: tuple(v) for g, v in sorted(groups.items())}
        return cls(by_group, str(p), hashlib.sha256(raw).hexdigest(), rows, dict(sorted(skipped.items())))

    @property
    def elements(self) -> frozenset:
        """Every element of the kept compositions."""
        return frozenset(e for comps in self.by_group.values() for els, _ in comps for e in els)

    @property
    def n_compositions(self) -> int:
        return sum(len(v) for v in self.by_group.values())

    def compositions(self, space_group: int) -> tuple:
        """The compositions of ``space_group`` (empty tuple if the table has none)."""
        return self.by_group.get(int(space_group), ())
