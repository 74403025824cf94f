"""Enumerating reflections, pure compute: the index box of a cell, the Laue-orbit representatives
and their canonical tables, the column intervals a structure's reflections lie in, and the count
per structure (``count_reflections``, batched with ``prange``).

Reflections are enumerated on the half sphere (h > 0, or h = 0 and k > 0, or h = k = 0 and
l > 0); within a Laue group only the canonical representative of each orbit is visited, and its
multiplicity counts the rest (docs/kernels.md). The CPU launchers (``cpu.py``) and the CUDA
launchers (``cuda_launch.py``, ``cuda.py``) share these functions; ``cpu`` re-exports them.
"""
from __future__ import annotations

import math

from numba import njit, prange

from .physics import inv_d2


@njit(cache=True, error_model="numpy", inline="always")
def l_range(h, k, g11, g22, g33, g12, g13, g23, qmax):
    """Integer l interval (lo, hi) whose Q may lie in (0, qmax] for fixed h, k; lo > hi if none."""
    b = 2.0 * (g13 * h + g23 * k)
    c = g11 * h * h + g22 * k * k + 2.0 * g12 * h * k - qmax
    disc = b * b - 4.0 * g33 * c
    if disc < 0.0:
        return 1, 0
    r = math.sqrt(disc)
    lo = int(math.ceil((-b - r) / (2.0 * g33) - 1e-9))
    hi = int(math.floor((-b + r) / (2.0 * g33) + 1e-9))
    if h == 0 and k == 0 and lo < 1:
        lo = 1
    return lo, hi


@njit(cache=True, error_model="numpy", inline="always")
def index_bounds(a, b, c, qmax):
    """|h| <= a / d_min etc.: a reciprocal vector of length <= 1/d_min has |h| = |r*.a| <= a |r*|."""
    s = math.sqrt(qmax)
    return int(a * s + 1e-9), int(b * s + 1e-9), int(c * s + 1e-9)


#: Laue groups of at least this order take the symmetry-unique path (|F|^2 once per orbit);
#: -1 (order 2) is already covered by the half-sphere enumeration.
MIN_LAUE_ORDER = 4


@njit(cache=True, error_model="numpy", inline="always")
def writes_better(h2, k2, l2, bh, bk, bl):
    """True if (h2, k2, l2) is the better representative hkl than (bh, bk, bl): fewer negative
    indices, then lexicographically larger. The one rule for orbits and families on both
    backends (explicit ints: under the CUDA simulator this runs as Python, where numpy bools
    would add as OR)."""
    n2 = (1 if h2 < 0 else 0) + (1 if k2 < 0 else 0) + (1 if l2 < 0 else 0)
    nb = (1 if bh < 0 else 0) + (1 if bk < 0 else 0) + (1 if bl < 0 else 0)
    return n2 < nb or (n2 == nb and (h2 > bh or (h2 == bh and (k2 > bk or (k2 == bk and l2 > bl)))))


@njit(cache=True, error_model="numpy", inline="always")
def orbit_representative(h, k, l, rot, r0, r1):
    """(stabiliser order, rh, rk, rl) of the Laue orbit of (h, k, l): the member a
    crystallographer writes, with the fewest negative indices, then the largest (h, k, l)
    (corundum's {012}, not the lexicographic maximum 1 0 -2). The same rule picks a family's
    representative in reflection_families."""
    stab = 0
    bh, bk, bl = h, k, l
    for r in range(r0, r1):
        h2 = h * rot[r, 0, 0] + k * rot[r, 1, 0] + l * rot[r, 2, 0]
        k2 = h * rot[r, 0, 1] + k * rot[r, 1, 1] + l * rot[r, 2, 1]
        l2 = h * rot[r, 0, 2] + k * rot[r, 1, 2] + l * rot[r, 2, 2]
        if h2 == h and k2 == k and l2 == l:
            stab += 1
        if writes_better(h2, k2, l2, bh, bk, bl):
            bh, bk, bl = h2, k2, l2
    return stab, bh, bk, bl


@njit(cache=True, error_model="numpy", inline="always")
def canonical_stabiliser(h, k, l, rot, r0, r1):
    """(is_canonical, stabiliser order) of (h, k, l) under the Laue rotations rot[r0:r1].

    The canonical member of an orbit {h R} is its lexicographic maximum, which lies in
    the enumerated half sphere. Exits at the first rotation giving a larger member.
    """
    stab = 0
    for r in range(r0, r1):
        h2 = h * rot[r, 0, 0] + k * rot[r, 1, 0] + l * rot[r, 2, 0]
        k2 = h * rot[r, 0, 1] + k * rot[r, 1, 1] + l * rot[r, 2, 1]
        l2 = h * rot[r, 0, 2] + k * rot[r, 1, 2] + l * rot[r, 2, 2]
        if h2 > h or (h2 == h and (k2 > k or (k2 == k and l2 > l))):
            return False, 0
        if h2 == h and k2 == k and l2 == l:
            stab += 1
    return True, stab


#: "Unbounded" end of an l interval (Miller indices stay far below it).
_BIG = 1 << 40


@njit(cache=True, error_model="numpy", inline="always")
def _tail_allowed(l, b_, bb, c_, cc):
    """(B + b l < 0) or (B + b l == 0 and C + c l <= 0), the tie-break part of the test."""
    v = b_ + bb * l
    return v < 0 or (v == 0 and c_ + cc * l <= 0)


@njit(cache=True, error_model="numpy", inline="always")
def _not_larger_interval(a_, aa, b_, bb, c_, cc):
    """Integer l with (A + a l, B + b l, C + c l) <=lex (0, 0, 0), as an interval (lo, hi).

    For one rotation these are h' - h, k' - k, l' - l of (h, k, l) R, each linear in l, so the
    set is a half-line (or everything, or nothing).
    """
    if aa != 0:
        if aa > 0:  # A + a l < 0  <=>  l <= floor((-1 - A) / a); l0 = -A / a is the tie point
            hi = (-1 - a_) // aa
            if (-a_) % aa == 0 and _tail_allowed(hi + 1, b_, bb, c_, cc):
                hi += 1
            return -_BIG, hi
        lo = -((1 + a_) // aa)  # ceil((-1 - A) / a) for a < 0
        if (-a_) % aa == 0 and _tail_allowed(lo - 1, b_, bb, c_, cc):
            lo -= 1
        return lo, _BIG
    if a_ < 0:
        return -_BIG, _BIG
    if a_ > 0:
        return 1, 0
    if bb != 0:
        if bb > 0:
            hi = (-1 - b_) // bb
            if (-b_) % bb == 0 and c_ + cc * (hi + 1) <= 0:
                hi += 1
            return -_BIG, hi
        lo = -((1 + b_) // bb)
        if (-b_) % bb == 0 and c_ + cc * (lo - 1) <= 0:
            lo -= 1
        return lo, _BIG
    if b_ < 0:
        return -_BIG, _BIG
    if b_ > 0:
        return 1, 0
    if cc > 0:
        return -_BIG, (-c_) // cc
    if cc < 0:
        return -((c_) // cc), _BIG  # ceil(-C / c) for c < 0
    return (-_BIG, _BIG) if c_ <= 0 else (1, 0)


@njit(cache=True, error_model="numpy")
def canonical_l_interval(h, k, rot, r0, r1):
    """The l for which (h, k, l) is the canonical member of its Laue orbit (the test of
    ``cpu.canonical_stabiliser``): the intersection over the rotations of one half-line each,
    in O(group order) per (h, k) column instead of O(order) per reflection."""
    lo = -_BIG
    hi = _BIG
    for r in range(r0, r1):
        a_ = h * rot[r, 0, 0] + k * rot[r, 1, 0] - h
        b_ = h * rot[r, 0, 1] + k * rot[r, 1, 1] - k
        c_ = h * rot[r, 0, 2] + k * rot[r, 1, 2]
        rlo, rhi = _not_larger_interval(a_, rot[r, 2, 0], b_, rot[r, 2, 1], c_, rot[r, 2, 2] - 1)
        lo = max(lo, rlo)
        hi = min(hi, rhi)
    return lo, hi


@njit(cache=True, error_model="numpy", inline="always")
def column_may_hold_canonical(h, k, rot, r0, r1):
    """False when no (h, k, l) of the column can be canonical: some Laue rotation whose h' and
    k' do not depend on l maps (h, k) to a lexicographically larger (h', k'). Prunes most
    columns of high-symmetry groups before any per-reflection test."""
    for r in range(r0, r1):
        if rot[r, 2, 0] == 0 and rot[r, 2, 1] == 0:
            h2 = h * rot[r, 0, 0] + k * rot[r, 1, 0]
            k2 = h * rot[r, 0, 1] + k * rot[r, 1, 1]
            if h2 > h or (h2 == h and k2 > k):
                return False
    return True


@njit(cache=True, error_model="numpy")
def canonical_table(rot, r0, r1, hmax, kmax, lmax, out):
    """Canonical l interval of every (h, k) column, h = 0..hmax, k = -kmax..kmax, cut to
    |l| <= lmax, under the Laue rotations rot[r0:r1]:
    out[h * (2 kmax + 1) + k + kmax] = (lo, hi, start), lo > hi where the column holds no
    canonical member; ``start`` numbers the canonical reflections of the box column by column
    (the row of (h, k, lo) in orbit_table). Returns their number. Depends on the Laue group
    alone, not on the cell, so it is computed once per group and shared by every structure
    of that group."""
    w = 2 * kmax + 1
    n = 0
    for h in range(hmax + 1):
        for k in range(-kmax, kmax + 1):
            c = h * w + k + kmax
            lo, hi = 1, 0
            if not (h == 0 and k < 0) and column_may_hold_canonical(h, k, rot, r0, r1):
                lo, hi = canonical_l_interval(h, k, rot, r0, r1)
                lo = max(lo, -lmax)
                hi = min(hi, lmax)
                if lo > hi:
                    lo, hi = 1, 0
            out[c, 0] = lo
            out[c, 1] = hi
            out[c, 2] = n
            n += hi - lo + 1
    return n


@njit(cache=True, error_model="numpy")
def orbit_table(rot, r0, r1, hmax, kmax, cols, orbit):
    """orbit_representative of every canonical reflection of a canonical_table box, in its
    numbering: orbit[e] = (multiplicity = order / stabiliser, rh, rk, rl). A per-group cache
    of that function: the kernels then read a reflection's orbit instead of applying every
    rotation to it."""
    w = 2 * kmax + 1
    order = r1 - r0
    for h in range(hmax + 1):
        for k in range(-kmax, kmax + 1):
            c = h * w + k + kmax
            for l in range(cols[c, 0], cols[c, 1] + 1):
                stab, rh, rk, rl = orbit_representative(h, k, l, rot, r0, r1)
                e = cols[c, 2] + l - cols[c, 0]
                orbit[e, 0] = order // stab
                orbit[e, 1] = rh
                orbit[e, 2] = rk
                orbit[e, 3] = rl


#: column_interval's "this column's orbits are not tabulated".
NO_ORBIT = -(1 << 62)


@njit(cache=True, error_model="numpy", inline="always")
def column_interval(i, h, k, g11, g22, g33, g12, g13, g23, qmax, sym, kmax, lmax, laue_rot, r0, r1, tab_off, tab_k,
                    tab_l, table):
    """The l interval a column contributes: l_range, cut to the canonical interval when the
    structure's Laue group has order >= MIN_LAUE_ORDER (from its group's table where it has
    one large enough, else computed). Also returns ``eb``, where eb + l is the orbit_table
    row of (h, k, l), or NO_ORBIT when the orbits are not tabulated (table row start < 0)."""
    if sym:
        kt = tab_k[i]
        if kt >= kmax and tab_l[i] >= lmax:
            # the table first: most columns of a high-symmetry group hold no canonical member
            c = tab_off[i] + h * (2 * kt + 1) + k + kt
            clo, chi = table[c, 0], table[c, 1]
            if clo > chi:
                return 1, 0, NO_ORBIT
            lo, hi = l_range(h, k, g11, g22, g33, g12, g13, g23, qmax)
            return max(lo, clo), min(hi, chi), (table[c, 2] - clo if table[c, 2] >= 0 else NO_ORBIT)
        lo, hi = l_range(h, k, g11, g22, g33, g12, g13, g23, qmax)
        if lo > hi or not column_may_hold_canonical(h, k, laue_rot, r0, r1):
            return 1, 0, NO_ORBIT
        clo, chi = canonical_l_interval(h, k, laue_rot, r0, r1)
        return max(lo, clo), min(hi, chi), NO_ORBIT
    lo, hi = l_range(h, k, g11, g22, g33, g12, g13, g23, qmax)
    return lo, hi, NO_ORBIT


@njit(cache=True, error_model="numpy", inline="always")
def column_run(i, h, k, g11, g22, g33, g12, g13, g23, qmax, sym, kmax, lmax, laue_rot, r0, r1, tab_off, tab_k,
               tab_l, table):
    """column_interval cut to the l with 0 < Q <= qmax exactly, the test _sf_one applies to
    each l: Q(l) is a convex quadratic, so they form one run and trimming its ends suffices
    (Q = 0 only at l = 0 of the column h = k = 0, which l_range already starts at 1)."""
    lo, hi, eb = column_interval(i, h, k, g11, g22, g33, g12, g13, g23, qmax, sym, kmax, lmax, laue_rot, r0, r1,
                                 tab_off, tab_k, tab_l, table)
    while lo <= hi:
        q = inv_d2(h, k, lo, g11, g22, g33, g12, g13, g23)
        if q > 0.0 and q <= qmax:
            break
        lo += 1
    while hi > lo:
        q = inv_d2(h, k, hi, g11, g22, g33, g12, g13, g23)
        if q > 0.0 and q <= qmax:
            break
        hi -= 1
    return lo, hi, eb


@njit(cache=True, error_model="numpy")
def _count_one(recip, cell_len, i, qmax, laue_off, laue_rot, tab_off, tab_k, tab_l, table):
    g11, g22, g33, g12, g13, g23 = recip[i, 0], recip[i, 1], recip[i, 2], recip[i, 3], recip[i, 4], recip[i, 5]
    hmax, kmax, lmax = index_bounds(cell_len[i, 0], cell_len[i, 1], cell_len[i, 2], qmax)
    r0, r1 = laue_off[i], laue_off[i + 1]
    sym = r1 - r0 >= MIN_LAUE_ORDER
    n = 0
    for h in range(0, hmax + 1):
        k0 = 0 if h == 0 else -kmax
        for k in range(k0, kmax + 1):
            lo, hi, _ = column_run(i, h, k, g11, g22, g33, g12, g13, g23, qmax, sym, kmax, lmax, laue_rot, r0, r1,
                                   tab_off, tab_k, tab_l, table)
            if lo <= hi:
                n += hi - lo + 1
    return n


@njit(parallel=True, cache=True, error_model="numpy")
def count_reflections(recip, cell_len, qmax, laue_off, laue_rot, tab_off, tab_k, tab_l, table, counts):
    """Reflections with 0 < Q <= qmax each structure will compute: one per Laue orbit where
    its Laue group has order >= MIN_LAUE_ORDER, else every half-sphere reflection.

    ``table`` holds canonical_table() of the batch's Laue groups; structure i's starts at
    row ``tab_off[i]`` with half-widths ``tab_k[i]``, ``tab_l[i]`` (-1: none, intervals
    computed here).
    """
    for i in prange(recip.shape[0]):
        counts[i] = _count_one(recip, cell_len, i, qmax, laue_off, laue_rot, tab_off, tab_k, tab_l, table)
