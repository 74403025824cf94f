"""Leakage-free train / validation / test splits grouped by structure type.

The **structure-type key** of an entry is ``"<anonymous formula>|<space group>"``,
e.g. ``"ABC3|221"`` for cubic perovskites (SrTiO3, BaZrO3, KMgF3, ...) and
``"AB|225"`` for rock salt. The anonymous formula is computed after merging
solid-solution sites (:func:`xtalhpc.curate.formula.site_counts` for formulas,
mixed-occupancy sites for crystals), so doped variants and substitution
augmentations fall in the same group as their parent. Every entry of one group
gets the same split, so near-duplicates and isostructural analogues never
straddle train and test.

Assignment is deterministic and written out so results can be reproduced:

* ``method="hash"`` (default): a group's split depends only on
  ``sha256(f"{seed}:{key}")`` mapped to [0, 1) and the cumulative fractions. It
  does not depend on which other groups exist or their order, so adding data
  never moves an existing group. Fractions hold for *groups* in expectation.
* ``method="greedy"``: groups, largest first (ties by the same hash), go to
  the split furthest below its target share of *rows*; row fractions come out
  close to the targets even with a few very large groups.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from .formula import anonymous_formula, anonymous_formula_from_counts, parse_formula

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, ...] = (0.8, 0.1, 0.1)
#: Atoms closer than this (angstrom) are one site (mixed occupancy).
SITE_TOL = 0.05


def _crystal_site_counts(crystal) -> list[float]:
    """Per-species counts of a Crystal with mixed-occupancy sites merged into one pseudo-species.

    Atoms within :data:`SITE_TOL` of a site's first atom share it (compiled greedy scan,
    ``xtalhpc_kernels.sites.merge_sites_binned``); a site's label is the set of elements on it,
    and sites with the same label pool their occupancies, in site order.
    """
    from xtalhpc_kernels.sites import merge_sites_binned

    from ..crystal import element_of, lattice_vectors

    n = crystal.n_atoms
    site = np.empty(n, dtype=np.int64)
    nsite = merge_sites_binned(np.ascontiguousarray(crystal.frac, dtype=np.float64),
                        np.ascontiguousarray(lattice_vectors(crystal.cell), dtype=np.float64), SITE_TOL, site)
    # occupancy per site, summed in atom order
    occ = np.bincount(site, weights=np.asarray(crystal.occupancy, dtype=np.float64), minlength=nsite)
    element = {sp: element_of(sp) for sp in set(crystal.species)}
    counts: Counter[str] = Counter()
    if nsite == n:  # no mixed site (the usual case): each atom's site holds its element alone
        for sp, o in zip(crystal.species, occ.tolist()):
            counts[element[sp]] += o
        return list(counts.values())
    members: list[set[str]] = [set() for _ in range(nsite)]
    for s_, sp in zip(site.tolist(), crystal.species):
        members[s_].add(element[sp])
    for s_ in range(nsite):
        counts["+".join(sorted(members[s_]))] += float(occ[s_])
    # sites of a mixed set that also hold a pure element of the set are kept apart on purpose
    return list(counts.values())


def structure_type_key(item) -> str:
    """Structure-type group key ``"<anonymous formula>|<space group>"``.

    Parameters
    ----------
    item : a :class:`xtalhpc.crystal.Crystal` (space group from the crystal, or
        spglib if it has none), a :class:`xtalhpc.curate.table.Record`, or a
        mapping with a formula (``formula``/``reduced_formula``/``formula_as_written``)
        and ``space_group``.
    """
    from ..crystal import Crystal

    if isinstance(item, Crystal):
        sg = item.space_group
        if sg is None:
            from .augment import detect_space_group

            sg = detect_space_group(item)
        return f"{anonymous_formula_from_counts(_crystal_site_counts(item))}|{sg}"
    if getattr(item, "structure_type", None):
        return str(item.structure_type)
    if isinstance(item, dict):
        text = item.get("formula_as_written") or item.get("formula") or item.get("reduced_formula")
        sg = item.get("space_group")
    else:
        text = getattr(item, "formula_as_written", "") or getattr(item, "formula", "")
        sg = getattr(item, "space_group", None)
    if not text or sg is None:
        raise InputError(f"cannot form a structure-type key from {item!r}: needs a formula and a space group")
    return f"{anonymous_formula(parse_formula(str(text), strict=False))}|{int(sg)}"


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> np.ndarray:
    f = np.asarray(list(fractions), dtype=float)
    if f.ndim != 1 or f.size != len(names) or np.any(~np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1) > 1e-6:
        raise InputError(f"split fractions {list(fractions)} must be {len(names)} numbers >= 0 summing to 1 "
                         f"(for {', '.join(names)})", field="fractions")
    return f


def key_hash(key: str, seed: int) -> float:
    """Deterministic number in [0, 1) from ``sha256(f"{seed}:{key}")``."""
    h = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign_splits(keys: Iterable[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                  *, method: str = "hash", names: Sequence[str] = SPLIT_NAMES) -> list[str]:
    """Split name per entry; all entries with the same key get the same split.

    Parameters
    ----------
    keys : structure-type key per entry (:func:`structure_type_key`).
    fractions : target share per split (same length as ``names``, sum 1).
    seed : integer seed; the same keys, fractions, seed and method give the same result.
    method : ``"hash"`` or ``"greedy"`` (module docstring).
    """
    keys = [str(k) for k in keys]
    f = _check_fractions(fractions, names)
    if method not in ("hash", "greedy"):
        raise InputError(f"split method {method!r}; allowed: hash, greedy", field="method")
    sizes = Counter(keys)
    hashes = {k: key_hash(k, seed) for k in sizes}
    choice: dict[str, str] = {}
    if method == "hash":
        edges = np.cumsum(f)
        edges[-1] = 1.0 + 1e-12
        for k, u in hashes.items():
            choice[k] = names[int(np.searchsorted(edges, u, side="right"))]
    else:
        total = len(keys)
        filled = np.zeros(len(names))
        for k in sorted(sizes, key=lambda k: (-sizes[k], hashes[k])):
            deficit = f * total - filled
            deficit[f == 0] = -np.inf
            j = int(np.argmax(deficit))
            choice[k] = names[j]
            filled[j] += sizes[k]
    return [choice[k] for k in keys]
