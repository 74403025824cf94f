"""Chemical formulas as database tables write them, and structure-type keys.

Two normal forms are used by curation:

* the **canonical reduced formula** (:func:`canonical_formula`): element counts
  (D and T counted as H), divided by their greatest common divisor at 1e-3
  precision, written in Hill order, e.g. ``"CaMg(SiO3)2" -> "CaMgO6Si2"``. It is
  the same string :attr:`xtalhpc.crystal.Crystal.formula` gives for a crystal
  of that composition, so tables and structure files compare directly.
* the **anonymous prototype formula** (:func:`anonymous_formula`): the element
  symbols are dropped, the counts sorted ascending and labelled A, B, C, ...
  (pymatgen's convention), e.g. NaCl -> ``AB``, TiO2 -> ``AB2``,
  SrTiO3 -> ``ABC3``. Mixed-occupancy (solid-solution) compositions are first
  collapsed onto sites (:func:`site_counts`), so La0.7Ca0.3MnO3 -> ``ABC3``
  like its parent LaMnO3.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache, reduce
from string import ascii_uppercase

from ..crystal import reduced_formula
from ..errors import InputError

_TOKEN_RE = re.compile(r"([A-Z][a-z]?)|(\d+(?:\.\d*)?|\.\d+)|([(\[{])|([)\]}])|([\u00b7*+])|(\s+)")

#: Placeholder symbols databases use for an unspecified or mixed species
#: (ICSD/COD write "M12BaO19", "M20.23Sn14.908"). Accepted with ``strict=False``
#: as pseudo-elements, so such entries still compare with each other.
PLACEHOLDER_SYMBOLS = frozenset({"M", "X", "R", "A", "Ln", "Ad", "Me", "Ch", "E", "L", "Q", "Z"})

#: A count is "integral" when it is within this of an integer. Table formulas
#: carry at most 3-4 decimals; 0.01 separates "Cu1.98" (doped) from "Cu2".
INTEGRAL_TOL = 0.01


@lru_cache(maxsize=None)
def _element_symbols() -> frozenset[str]:
    import periodictable

    return frozenset(el.symbol for el in periodictable.elements if el.number > 0) | {"D", "T"}


_SIMPLE_RE = re.compile(r"(?:[A-Z][a-z]?(?:\d+(?:\.\d*)?|\.\d+)?)+")
_PAIR_RE = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?")


@lru_cache(maxsize=200_000)
def _parse_cached(text: str, strict: bool = True) -> tuple[tuple[str, float], ...] | str:
    """Parsed counts, or an error message string (so the cache also holds failures)."""
    symbols = _element_symbols()
    if _SIMPLE_RE.fullmatch(text):  # fast path: no brackets, spaces or adduct parts
        simple: dict[str, float] = {}
        for el, num in _PAIR_RE.findall(text):
            if el not in symbols and (strict or el not in PLACEHOLDER_SYMBOLS):
                return f"unknown element symbol {el!r}"
            el = "H" if el in ("D", "T") else el
            simple[el] = simple.get(el, 0.0) + (float(num) if num else 1.0)
        simple = {k: v for k, v in simple.items() if v > 0}
        return tuple(sorted(simple.items())) if simple else "no elements"
    pos = 0
    # stack of dicts; one frame per open bracket
    stack: list[dict[str, float]] = [{}]
    part_mult = 1.0          # leading multiplier of a hydrate part ("5H2O")
    expect_part_mult = True  # a number at the start of a part is its multiplier
    last: tuple[str, object] | None = None  # ("el", sym) or ("group", dict)
    parts: list[tuple[float, dict[str, float]]] = []

    def add(frame: dict[str, float], key: str, v: float) -> None:
        frame[key] = frame.get(key, 0.0) + v

    def flush_last(mult: float) -> None:
        nonlocal last
        if last is None:
            return
        kind, val = last
        if kind == "el":
            add(stack[-1], val, mult)  # type: ignore[arg-type]
        else:
            for k, v in val.items():  # type: ignore[union-attr]
                add(stack[-1], k, v * mult)
        last = None

    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            return f"unexpected character {text[pos]!r} at position {pos}"
        el, num, opn, cls, sep, _ws = m.groups()
        pos = m.end()
        if el is not None:
            if el not in symbols:
                if strict or el not in PLACEHOLDER_SYMBOLS:
                    return f"unknown element symbol {el!r}"
            flush_last(1.0)
            last = ("el", el)
            expect_part_mult = False
        elif num is not None:
            v = float(num)
            if last is None:
                if expect_part_mult and len(stack) == 1 and not stack[0]:
                    part_mult = v
                    expect_part_mult = False
                    continue
                return f"number {num} does not follow an element or a bracket"
            flush_last(v)
        elif opn is not None:
            flush_last(1.0)
            stack.append({})
            expect_part_mult = False
        elif cls is not None:
            flush_last(1.0)
            if len(stack) == 1:
                return "unbalanced closing bracket"
            group = stack.pop()
            last = ("group", group)
        elif sep is not None:
            flush_last(1.0)
            if len(stack) != 1:
                return "separator inside brackets"
            parts.append((part_mult, stack[0]))
            stack = [{}]
            part_mult, expect_part_mult = 1.0, True
        # whitespace separates tokens only ("C42 H26 N4" is one part)
    flush_last(1.0)
    if len(stack) != 1:
        return "unbalanced opening bracket"
    parts.append((part_mult, stack[0]))
    total: dict[str, float] = {}
    for mult, frame in parts:
        for k, v in frame.items():
            k = "H" if k in ("D", "T") else k
            total[k] = total.get(k, 0.0) + mult * v
    total = {k: v for k, v in total.items() if v > 0}
    if not total:
        return "no elements"
    return tuple(sorted(total.items()))


def parse_formula(text: str, source: str | None = None, field: str | None = None,
                  strict: bool = True) -> dict[str, float]:
    """Element counts of a formula string.

    Accepts what ICSD/COD/Materials Project exports write: element symbols with
    integer or decimal counts (``"Ag0.02Cu1.98S3Si1"``), nested brackets
    (``"CaMg(SiO3)2"``, ``"K[Fe(CN)6]"``), spaces between tokens
    (``"C42 H26 N4"``) and adduct separators ``*``, ``+`` or the middle dot with
    an optional leading multiplier (``"CuSO4*5H2O"``). D and T count as H.

    Raises
    ------
    InputError
        naming ``source`` and ``field`` if the text is not a formula.
    """
    parsed = _parse_cached(str(text).strip(), bool(strict))
    if isinstance(parsed, str):
        raise InputError(f"formula {text!r} cannot be read: {parsed}; allowed: element symbols with "
                         "optional counts, brackets, '*' or '+' between adduct parts", source, field)
    return dict(parsed)


def canonical_formula(counts_or_text, source: str | None = None, field: str | None = None,
                      strict: bool = True) -> str:
    """Hill-order reduced formula of a formula string or an element-count mapping."""
    if isinstance(counts_or_text, str):
        parsed = _parse_cached(counts_or_text.strip(), bool(strict))
        if not isinstance(parsed, str):
            return _canonical_from_items(parsed)
        parse_formula(counts_or_text, source, field, strict)  # raises with the message
    return _canonical_from_items(tuple(sorted(dict(counts_or_text).items())))


@lru_cache(maxsize=200_000)
def _canonical_from_items(items: tuple[tuple[str, float], ...]) -> str:
    return reduced_formula(dict(items))


def site_counts(counts: dict[str, float]) -> list[float]:
    """Counts per site-like group, merging solid-solution elements.

    Elements whose count is not integral (beyond :data:`INTEGRAL_TOL`) are
    assumed to share sites: their counts are summed into one pseudo-element if
    that sum is integral (``Ag0.02Cu1.98`` -> one site group of 2,
    ``La0.7Ca0.3`` -> 1). If the fractional counts do not sum to an integer,
    they are kept as written. Integral counts are kept as they are.
    """
    integral = [v for v in counts.values() if abs(v - round(v)) <= INTEGRAL_TOL]
    frac = [v for v in counts.values() if abs(v - round(v)) > INTEGRAL_TOL]
    if frac:
        s = sum(frac)
        if abs(s - round(s)) <= INTEGRAL_TOL * len(frac) and round(s) > 0:
            frac = [float(round(s))]
    return [float(round(v)) if abs(v - round(v)) <= INTEGRAL_TOL else float(v) for v in integral] + frac


def anonymous_formula_from_counts(counts: list[float]) -> str:
    """``"AB2"``-style prototype of a list of counts (reduced by their gcd at 1e-3)."""
    scaled = [int(round(v * 1000)) for v in counts if v > 0]
    if not scaled:
        return ""
    g = reduce(math.gcd, scaled)
    red = sorted(v // g for v in scaled)
    out = []
    for i, v in enumerate(red):
        letter = ascii_uppercase[i] if i < 26 else f"X{i}"
        out.append(letter if v == 1 else f"{letter}{v}")
    return "".join(out)


def anonymous_formula(counts_or_text, source: str | None = None, field: str | None = None,
                      strict: bool = True) -> str:
    """Anonymous prototype formula (``SrTiO3 -> ABC3``) after merging solid-solution sites."""
    counts = (parse_formula(counts_or_text, source, field, strict) if isinstance(counts_or_text, str)
              else dict(counts_or_text))
    return anonymous_formula_from_counts(site_counts(counts))
