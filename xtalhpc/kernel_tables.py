"""What the CPU kernels read besides the packed batch, built once per batch in Python: the
canonical-column and orbit tables of its Laue groups, and the inversion pairs of its
centrosymmetric structures. Called by :mod:`xtalhpc.simulate` (where these names stay
importable) before the structure-factor kernel.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .simulate import PackedBatch

#: Canonical-column tables are built for index ranges rounded up to this, so a few sizes serve
#: a whole dataset.
_TABLE_ROUND = 16
#: Orbits are tabulated for a group's box only up to this many canonical reflections
#: (16 bytes each); larger boxes (huge cells) apply the rotations per reflection instead.
MAX_ORBIT_ENTRIES = 1 << 21
#: The process keeps the tables of recently used groups and sizes up to this many bytes.
_TABLE_CACHE_BYTES = 256 << 20
_table_cache: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()


def _group_table(rot: np.ndarray, hmax: int, kmax: int, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, orbits) of one Laue group over the box h <= hmax, |k| <= kmax, |l| <= lmax:
    kernels/cpu.canonical_table and orbit_table, cached per process (least recently used
    dropped past _TABLE_CACHE_BYTES)."""
    from xtalhpc_kernels.cpu import canonical_table, orbit_table

    key = (rot.tobytes(), hmax, kmax, lmax)
    hit = _table_cache.get(key)
    if hit is not None:
        _table_cache.move_to_end(key)
        return hit
    cols = np.empty(((hmax + 1) * (2 * kmax + 1), 3), dtype=np.int64)
    n = canonical_table(rot, 0, len(rot), hmax, kmax, lmax, cols)
    if n <= MAX_ORBIT_ENTRIES:
        orbit = np.empty((max(n, 1), 4), dtype=np.int32)
        orbit_table(rot, 0, len(rot), hmax, kmax, cols, orbit)
    else:
        cols[:, 2] = -1
        orbit = np.zeros((1, 4), dtype=np.int32)
    cols.flags.writeable = False
    orbit.flags.writeable = False
    _table_cache[key] = (cols, orbit)
    size = sum(a.nbytes + b.nbytes for a, b in _table_cache.values())
    while size > _TABLE_CACHE_BYTES and len(_table_cache) > 1:
        a, b = _table_cache.popitem(last=False)[1]
        size -= a.nbytes + b.nbytes
    return cols, orbit


def column_tables(p: PackedBatch, qmax: float) -> None:
    """Attach to ``p`` the canonical l interval of every (h, k) column and the orbit of every
    canonical reflection for each Laue group in the batch (order >= MIN_LAUE_ORDER). They
    depend on the group alone, so they are computed once per group and size class per
    process (cached) and shared by all its structures; the kernels then need no per-column
    search of the group and no per-reflection pass over its rotations."""
    from xtalhpc_kernels.cpu import MIN_LAUE_ORDER

    n = p.recip.shape[0]
    if p.laue_gid is None:  # a batch packed by hand: find its distinct groups
        gids: dict[bytes, int] = {}
        p.laue_gid = np.array([gids.setdefault(p.laue_rot[p.laue_off[i]:p.laue_off[i + 1]].tobytes(), len(gids))
                               for i in range(n)], dtype=np.int64)
        p.laue_groups = [np.frombuffer(key, dtype=np.int64).reshape(-1, 3, 3) for key in gids]
    s = np.sqrt(qmax)
    bounds = (p.cell_len * s + 1e-9).astype(np.int64)  # hmax, kmax, lmax (cpu.index_bounds)
    ng = len(p.laue_groups)
    need = np.zeros((ng, 3), dtype=np.int64)
    np.maximum.at(need, p.laue_gid, bounds)
    need = -(-need // _TABLE_ROUND) * _TABLE_ROUND
    g_off = np.zeros(ng, dtype=np.int64)
    g_k = np.full(ng, -1, dtype=np.int64)
    g_l = np.full(ng, -1, dtype=np.int64)
    cols_parts, orb_parts, start, ostart = [], [], 0, 0
    used = np.zeros(ng, dtype=bool)
    used[p.laue_gid] = True
    for g in np.flatnonzero(used):
        rot = p.laue_groups[g]
        if len(rot) < MIN_LAUE_ORDER:
            continue
        hm, km, lm = (int(x) for x in need[g])
        cols, orbit = _group_table(rot, hm, km, lm)
        if ostart:
            cols = cols.copy()
            cols[:, 2] += np.where(cols[:, 2] >= 0, ostart, 0)
        cols_parts.append(cols)
        orb_parts.append(orbit)
        g_off[g], g_k[g], g_l[g] = start, km, lm
        start += len(cols)
        ostart += len(orbit)
    p.tab_off, p.tab_k, p.tab_l = g_off[p.laue_gid], g_k[p.laue_gid], g_l[p.laue_gid]
    p.table = np.concatenate(cols_parts) if cols_parts else np.zeros((1, 3), dtype=np.int64)
    p.orbit = np.concatenate(orb_parts) if orb_parts else np.zeros((1, 4), dtype=np.int32)


def pair_atoms(p: PackedBatch) -> None:
    """Attach to ``p`` the atoms the CPU structure factors read (kernels/cpu.inversion_pairs):
    a structure with an inversion whose every atom has its partner (same type and occupancy,
    at the exact image) is summed over one atom per pair, cosines only, half the work of the
    full complex sum and the same |F|^2; the others keep their atoms (``sf_centro`` False)."""
    from xtalhpc_kernels.cpu import PAIR_TOL, inversion_pairs

    n = p.recip.shape[0]
    inv_t = p.inv_t if p.inv_t is not None else np.full((n, 3), np.nan)
    p.sf_frac = np.empty_like(p.frac)
    p.sf_occ = np.empty_like(p.occ)
    p.sf_type_atom_off = np.empty_like(p.type_atom_off)
    p.sf_centro = np.zeros(n, dtype=np.bool_)
    inversion_pairs(p.type_off, p.type_atom_off, p.frac, p.occ, p.cell_len, inv_t, PAIR_TOL, p.sf_frac, p.sf_occ,
                    p.sf_type_atom_off, p.sf_centro)
