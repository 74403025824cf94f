"""CPU launchers: batched over structures with ``prange``, pure compute.

The batch layout (ragged, CSR-style) shared with the CUDA launchers:

* ``recip``      (n, 6)   reciprocal metric g11, g22, g33, g12, g13, g23 (angstrom^-2)
* ``cell_len``   (n, 3)   a, b, c (angstrom), bounds the index search
* ``type_off``   (n+1,)   structure i owns scattering types type_off[i]:type_off[i+1]
* ``type_atom_off`` (T+1,) type t owns atoms type_atom_off[t]:type_atom_off[t+1]
  (atoms of one structure are contiguous and grouped by type)
* ``type_coef``  (T, 12)  f(s) coefficients, column 11 the imaginary part c'' (see xtalhpc.scattering);
  ``type_b`` (T,) B (angstrom^2)
* ``frac`` (N, 3), ``occ`` (N,) fractional coordinates and occupancies

Reflections are enumerated on the half sphere (h > 0, or h = 0 and k > 0, or
h = k = 0 and l > 0) and each counts twice in the multiplicity: its |F|^2 is the mean
over the Friedel pair (physics.powder_f2), which equals either mate's |F|^2 unless
absorbing nuclides (complex lengths) sit in a non-centrosymmetric crystal.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .physics import (GAUSS_HALF_WIDTH, bragg_theta, inv_d2, lorentz_factor_sc, peak_fwhm_sc, powder_f2,
                      pseudo_voigt_parts, scattering_amplitude_imag, weight_terms, window_area)

#: Patterns are float32 (n, npts) rows: 7 significant digits, far finer than any counting
#: statistics, half the memory traffic of float64, and what datasets store. Everything
#: before the rows (|F|^2, positions, widths, window areas) is float64.
PATTERN_DTYPE = np.float32

TWO_PI = 2.0 * math.pi
RAD2DEG = 180.0 / math.pi


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


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _sf_one(i, recip, cell_len, qmax, refl_off, type_off, type_atom_off, type_coef, type_b, frac, occ,
            laue_off, laue_rot, tab_off, tab_k, tab_l, table, orbit, out_hkl, out_q, out_f2, out_mult):
    """The reflections of structure ``i`` in (h, k) columns of consecutive l: every half-sphere
    reflection (multiplicity 2, itself and its Friedel mate) or, when its Laue group has order
    >= MIN_LAUE_ORDER, the canonical member of each Laue orbit (multiplicity = orbit size).
    Canonical members of a column form one l interval (canonical_l_interval), so both cases
    run the same recurrences over a contiguous range of l.

    Evaluates F = sum_t w_t(s) sum_{j in t} occ_j exp(2 pi i h.x_j) with
    w_t = scattering_amplitude * debye_waller (physics.py), cheaply:
    * exp(2 pi i (h x + k y + l0 z)) per atom from per-axis tables (one complex product
      per atom per column), then one complex multiply per atom per step in l;
    * each Gaussian term of w_t (the Debye-Waller factor, and the X-ray form-factor
      Gaussians) along a column by the exact recurrence of a Gaussian in l: Q(l) is
      quadratic in l, so v(l+1) = v(l) r(l), r(l+1) = r(l) exp(-beta C / 2).
    Both recurrences are exact up to rounding (~1e-14 over a column).
    A structure with an absorbing type (imaginary amplitude c'' != 0) also sums
    F'' = sum_t c''_t DW_t S_t, its weight stepped with the Debye-Waller term's recurrence,
    and stores physics.powder_f2; the others never touch that path.
    """
    g11, g22, g33, g12, g13, g23 = recip[i, 0], recip[i, 1], recip[i, 2], recip[i, 3], recip[i, 4], recip[i, 5]
    hmax, kmax, lmax = index_bounds(cell_len[i, 0], cell_len[i, 1], cell_len[i, 2], qmax)
    t0 = type_off[i]
    nt = type_off[i + 1] - t0
    a0 = type_atom_off[t0]
    na = type_atom_off[t0 + nt] - a0
    # Per-axis phase tables, occupancy folded into the h table.
    exr = np.empty((hmax + 1, na))
    exi = np.empty((hmax + 1, na))
    eyr = np.empty((2 * kmax + 1, na))
    eyi = np.empty((2 * kmax + 1, na))
    ezr = np.empty((2 * lmax + 2, na))
    ezi = np.empty((2 * lmax + 2, na))
    for j in range(na):
        # exp(2 pi i n x) for n = 0, 1, ... by powers of exp(2 pi i x) (one sincos per axis
        # per atom; rounding grows ~n eps, ~1e-14 at the largest index), negative n by conjugates.
        o = occ[a0 + j]
        cx, sx = math.cos(TWO_PI * frac[a0 + j, 0]), math.sin(TWO_PI * frac[a0 + j, 0])
        cy, sy = math.cos(TWO_PI * frac[a0 + j, 1]), math.sin(TWO_PI * frac[a0 + j, 1])
        cz, sz = math.cos(TWO_PI * frac[a0 + j, 2]), math.sin(TWO_PI * frac[a0 + j, 2])
        pr, pi = o, 0.0
        for h in range(hmax + 1):
            exr[h, j] = pr
            exi[h, j] = pi
            pr, pi = pr * cx - pi * sx, pr * sx + pi * cx
        pr, pi = 1.0, 0.0
        for k in range(kmax + 1):
            eyr[kmax + k, j] = pr
            eyi[kmax + k, j] = pi
            eyr[kmax - k, j] = pr
            eyi[kmax - k, j] = -pi
            pr, pi = pr * cy - pi * sy, pr * sy + pi * cy
        pr, pi = 1.0, 0.0
        for l in range(lmax + 2):
            ezr[lmax + l, j] = pr
            ezi[lmax + l, j] = pi
            if l <= lmax:
                ezr[lmax - l, j] = pr
                ezi[lmax - l, j] = -pi
            pr, pi = pr * cz - pi * sz, pr * sz + pi * cz
    stc = ezr[lmax + 1]
    sts = ezi[lmax + 1]
    # Gaussian terms of w_t(s) = sum_m amp_m exp(-beta_m s^2) (physics.weight_terms); the
    # recurrence runs in Q = 4 s^2, so beta is divided by 4.
    nterm = np.zeros(nt, dtype=np.int64)
    amp = np.empty((nt, 6))
    beta = np.empty((nt, 6))
    for tt in range(nt):
        nterm[tt] = weight_terms(type_coef, t0 + tt, type_b[t0 + tt], amp, beta, tt)
        for m in range(nterm[tt]):
            beta[tt, m] *= 0.25
    cc = np.empty((nt, 6))
    for tt in range(nt):
        for m in range(nterm[tt]):
            cc[tt, m] = math.exp(-2.0 * beta[tt, m] * g33)
    # Absorbing types: imaginary weight c'' exp(-B s^2), stepped like the first term (same beta).
    cplx = False
    for tt in range(nt):
        if scattering_amplitude_imag(type_coef, t0 + tt) != 0.0:
            cplx = True
    vim = np.zeros(nt)
    val = np.empty((nt, 6))
    rat = np.empty((nt, 6))
    re = np.empty(na)
    im = np.empty(na)
    r0, r1 = laue_off[i], laue_off[i + 1]
    sym = r1 - r0 >= MIN_LAUE_ORDER
    order = r1 - r0
    pos = refl_off[i]
    for h in range(0, hmax + 1):
        k0 = 0 if h == 0 else -kmax
        for k in range(k0, kmax + 1):
            lo, hi, eb = column_interval(i, h, k, g11, g22, g33, g12, g13, g23, qmax, sym, kmax, lmax, laue_rot, r0,
                                         r1, tab_off, tab_k, tab_l, table)
            if lo > hi:
                continue
            bq = 2.0 * (g13 * h + g23 * k)
            q0 = inv_d2(h, k, lo, g11, g22, g33, g12, g13, g23)
            for tt in range(nt):
                for m in range(nterm[tt]):
                    val[tt, m] = amp[tt, m] * math.exp(-beta[tt, m] * q0)
                    rat[tt, m] = math.exp(-beta[tt, m] * (bq + g33 * (2 * lo + 1)))
            if cplx:
                for tt in range(nt):
                    vim[tt] = scattering_amplitude_imag(type_coef, t0 + tt) * math.exp(-beta[tt, 0] * q0)
            ky = k + kmax
            lz = lo + lmax
            for j in range(na):
                ar = exr[h, j] * eyr[ky, j] - exi[h, j] * eyi[ky, j]
                ai = exr[h, j] * eyi[ky, j] + exi[h, j] * eyr[ky, j]
                re[j] = ar * ezr[lz, j] - ai * ezi[lz, j]
                im[j] = ar * ezi[lz, j] + ai * ezr[lz, j]
            for l in range(lo, hi + 1):
                q = inv_d2(h, k, l, g11, g22, g33, g12, g13, g23)
                if q > 0.0 and q <= qmax:
                    fr = 0.0
                    fi = 0.0
                    gr = 0.0
                    gi = 0.0
                    for tt in range(nt):
                        t = t0 + tt
                        sr = 0.0
                        si = 0.0
                        for j in range(type_atom_off[t] - a0, type_atom_off[t + 1] - a0):
                            sr += re[j]
                            si += im[j]
                        wgt = 0.0
                        for m in range(nterm[tt]):
                            wgt += val[tt, m]
                        fr += wgt * sr
                        fi += wgt * si
                        if cplx:
                            gr += vim[tt] * sr
                            gi += vim[tt] * si
                    out_q[pos] = q
                    out_f2[pos] = powder_f2(fr, fi, gr, gi)
                    if eb != NO_ORBIT:  # the orbit from the group's table
                        e = eb + l
                        out_mult[pos] = orbit[e, 0]
                        out_hkl[pos, 0] = orbit[e, 1]
                        out_hkl[pos, 1] = orbit[e, 2]
                        out_hkl[pos, 2] = orbit[e, 3]
                    elif sym:
                        stab, rh, rk, rl = orbit_representative(h, k, l, laue_rot, r0, r1)
                        out_mult[pos] = order // stab
                        out_hkl[pos, 0] = rh
                        out_hkl[pos, 1] = rk
                        out_hkl[pos, 2] = rl
                    else:
                        out_mult[pos] = 2
                        out_hkl[pos, 0] = h
                        out_hkl[pos, 1] = k
                        out_hkl[pos, 2] = l
                    pos += 1
                if l < hi:
                    for tt in range(nt):
                        if cplx:
                            vim[tt] *= rat[tt, 0]
                        for m in range(nterm[tt]):
                            val[tt, m] *= rat[tt, m]
                            rat[tt, m] *= cc[tt, m]
                    for j in range(na):
                        r = re[j] * stc[j] - im[j] * sts[j]
                        im[j] = re[j] * sts[j] + im[j] * stc[j]
                        re[j] = r


@njit(parallel=True, cache=True, error_model="numpy")
def structure_factors(recip, cell_len, qmax, refl_off, type_off, type_atom_off, type_coef, type_b, frac, occ,
                      laue_off, laue_rot, tab_off, tab_k, tab_l, table, orbit, out_hkl, out_q, out_f2, out_mult):
    """|F(hkl)|^2 (units of coef^2: fm^2 for neutrons) and multiplicity per computed reflection.

    Structures whose Laue group has order >= MIN_LAUE_ORDER get one reflection per orbit
    with the orbit size as multiplicity; the others every half-sphere reflection with
    multiplicity 2 (itself and its Friedel mate). Canonical intervals come from the
    structure's Laue-group table (see count_reflections).
    """
    for i in prange(recip.shape[0]):
        _sf_one(i, recip, cell_len, qmax, refl_off, type_off, type_atom_off, type_coef, type_b, frac, occ,
                laue_off, laue_rot, tab_off, tab_k, tab_l, table, orbit, out_hkl, out_q, out_f2, out_mult)


#: Bits per pass of stable_argsort_positive (6 passes cover a float64).
RADIX_BITS = 11
#: _families_one sorts this many reflections or more by radix, fewer by merge sort.
RADIX_MIN = 1024


@njit(cache=True, error_model="numpy")
def stable_argsort_positive(q, s, e):
    """np.argsort(q[s:e], kind="stable") for q > 0 (Q = 1/d^2), as an LSD radix sort on the
    float64 bit patterns, which order like the numbers for positive values: O(n), 2.2x
    faster than numba's merge sort on 9000 reflections, but with ~5 us of fixed cost.
    Passes in which every key has the same digit (the exponent bits, mostly) are skipped."""
    n = e - s
    keys = q[s:e].copy().view(np.uint64)
    idx = np.arange(n)
    k2 = np.empty(n, dtype=np.uint64)
    i2 = np.empty(n, dtype=np.int64)
    nb = 1 << RADIX_BITS
    mask = np.uint64(nb - 1)
    count = np.empty(nb + 1, dtype=np.int64)
    for p in range(0, 64, RADIX_BITS):
        shift = np.uint64(p)
        count[:] = 0
        for i in range(n):
            count[np.int64((keys[i] >> shift) & mask) + 1] += 1
        if count.max() == n:
            continue
        for b in range(nb):
            count[b + 1] += count[b]
        for i in range(n):
            d = np.int64((keys[i] >> shift) & mask)
            j = count[d]
            count[d] = j + 1
            k2[j] = keys[i]
            i2[j] = idx[i]
        keys, k2 = k2, keys
        idx, i2 = i2, idx
    return idx


@njit(cache=True, error_model="numpy")
def _families_one(s, e, hkl, q, f2, mult, d_tol, f2_tol, absent_tol, fam_hkl, fam_q, fam_f2, fam_mult):
    n = e - s
    if n == 0:
        return 0
    # stable: the same order as the GPU sort; the radix sort's fixed cost (~5 us: 6 passes
    # over 2048 buckets) pays off from ~1000 reflections (measured: NCrystal crystals of
    # 100-600 reflections sort 2x faster by merge sort, P-1 crystals of 9000 2.2x by radix)
    order = stable_argsort_positive(q, s, e) if n >= RADIX_MIN else np.argsort(q[s:e], kind="mergesort")
    f2max = 0.0
    for j in range(s, e):
        if f2[j] > f2max:
            f2max = f2[j]
    floor = absent_tol * f2max
    used = np.zeros(n, dtype=np.bool_)
    nf = 0
    g0 = 0
    while g0 < n:
        qg = q[s + order[g0]]
        g1 = g0 + 1
        while g1 < n and q[s + order[g1]] - qg <= d_tol * qg:
            g1 += 1
        # Within one d-group, reflections of equal |F|^2 form a family (symmetry-equivalent
        # reflections have equal |F|^2; unrelated ones of equal d are kept apart).
        for a in range(g0, g1):
            if used[a]:
                continue
            ja = s + order[a]
            fa = f2[ja]
            m = 0
            f2sum = 0.0
            bh, bk, bl = hkl[ja, 0], hkl[ja, 1], hkl[ja, 2]
            for b in range(a, g1):
                if used[b]:
                    continue
                jb = s + order[b]
                if abs(f2[jb] - fa) <= f2_tol * max(fa, f2[jb]) + 1e-300 + floor * 1e-3:
                    used[b] = True
                    m += mult[jb]
                    f2sum += mult[jb] * f2[jb]
                    h2, k2, l2 = hkl[jb, 0], hkl[jb, 1], hkl[jb, 2]
                    if writes_better(h2, k2, l2, bh, bk, bl):
                        bh, bk, bl = h2, k2, l2
            if fa > floor:
                o = s + nf
                fam_hkl[o, 0] = bh
                fam_hkl[o, 1] = bk
                fam_hkl[o, 2] = bl
                fam_q[o] = qg
                # the members' mean |F|^2, so m * F2 is their exact sum whatever F2_TOL merged
                fam_f2[o] = f2sum / m
                fam_mult[o] = m
                nf += 1
        g0 = g1
    return nf


@njit(parallel=True, cache=True, error_model="numpy")
def reflection_families(refl_off, hkl, q, f2, mult, d_tol, f2_tol, absent_tol, fam_hkl, fam_q, fam_f2, fam_mult,
                        fam_count):
    """Group reflections into families (equal d and |F|^2), sorted by d descending.

    Families of structure i are written at refl_off[i]:refl_off[i] + fam_count[i]; families
    of one d-group share the same Q value exactly. Families with |F|^2 <= absent_tol * max
    (systematic absences, numerically ~1e-30 of the maximum) are dropped.
    """
    for i in prange(refl_off.shape[0] - 1):
        fam_count[i] = _families_one(refl_off[i], refl_off[i + 1], hkl, q, f2, mult, d_tol, f2_tol, absent_tol,
                                     fam_hkl, fam_q, fam_f2, fam_mult)


@njit(cache=True, fastmath=True, error_model="numpy")
def _add_peak(row, grid, tt_min, step, tt, inten, fwhm, eta, cutoff):
    """Add one pseudo-Voigt of integrated intensity ``inten`` centred at ``tt`` to ``row``.

    The profile is physics.pseudo_voigt cut at +-cutoff FWHM and scaled by 1 / window_area
    so that its integral over the window is ``inten``. Evaluated fast: the Lorentzian part
    by one division per point in a vectorisable loop over the grid values, the Gaussian
    part over +-GAUSS_HALF_WIDTH FWHM by the exact multiplicative recurrence
    g(x + step) = g(x) r, r <- r exp(-2 a step^2) (three exps per peak, not one per point).
    The Lorentzian is evaluated in float32 (the rows' precision) from a float64 offset.
    """
    npts = row.shape[0]
    half = cutoff * fwhm
    inv_step = 1.0 / step
    i0 = int(math.ceil((tt - half - tt_min) * inv_step))
    i1 = int(math.floor((tt + half - tt_min) * inv_step))
    if i1 < 0 or i0 >= npts or i1 < i0:
        return
    amp_l, inv_hw, amp_g, a_g = pseudo_voigt_parts(fwhm, eta)
    # window edges as the discrete sum sees them: half a step beyond the outer points
    area = window_area(fwhm, eta, tt - (tt_min + i0 * step) + 0.5 * step, tt_min + i1 * step - tt + 0.5 * step)
    scale = inten / area
    lo = max(i0, 0)
    hi = min(i1, npts - 1)
    al = np.float32(amp_l * scale)
    one = np.float32(1.0)
    # Slices and a loop from 0 let LLVM drop negative-index handling and vectorise. The offset
    # z is formed in float64 (positions exact) and the Lorentzian evaluated in float32, the
    # rows' precision: twice the lanes per vector division.
    rw = row[lo:hi + 1]
    gr = grid[lo:hi + 1]
    for p in range(hi + 1 - lo):
        z = np.float32((gr[p] - tt) * inv_hw)
        rw[p] += al / (one + z * z)
    if amp_g > 0.0:
        ic = int(round((tt - tt_min) * inv_step))
        gw = int(GAUSS_HALF_WIDTH * fwhm * inv_step) + 1
        d0 = tt_min + ic * step - tt
        # g(d0 + j step) = g0 u^(j^2) v^(+-j) with u = exp(-a step^2), v = exp(-2 a d0 step):
        # ratios u v (upwards) and u / v (downwards), each multiplied by c = u^2 per step. The
        # two chains run in one loop, so their multiplications overlap.
        u = math.exp(-a_g * step * step)
        v = math.exp(-2.0 * a_g * d0 * step)
        c = u * u
        g0 = amp_g * scale * math.exp(-a_g * d0 * d0)
        if ic >= lo and ic <= hi:
            row[ic] += g0
        gu = g0
        ru = u * v
        gd = g0
        rd = u / v
        for j in range(1, gw + 1):
            gu *= ru
            ru *= c
            gd *= rd
            rd *= c
            if ic + j >= lo and ic + j <= hi:
                row[ic + j] += gu
            if ic - j >= lo and ic - j <= hi:
                row[ic - j] += gd


@njit(cache=True, error_model="numpy")
def _render_one(i, s, nfam, fam_q, fam_f2, fam_mult, wavelengths, wweights, tt_min, step, npts, u, v, w, x, y,
                zero, cutoff, min_fwhm, xray, pattern, fam_tt, fam_int, grid):
    row = pattern[i]
    j = 0
    while j < nfam:
        qg = fam_q[s + j]
        jj = j
        msum = 0.0
        while jj < nfam and fam_q[s + jj] == qg:
            msum += fam_mult[s + jj] * fam_f2[s + jj]
            jj += 1
        th0 = bragg_theta(wavelengths[0], qg)
        if th0 > 0.0:
            s0 = 0.5 * wavelengths[0] * math.sqrt(qg)
            lf0 = lorentz_factor_sc(s0, math.sqrt(1.0 - s0 * s0), xray)
            for f in range(j, jj):
                fam_tt[s + f] = 2.0 * th0 * RAD2DEG + zero
                fam_int[s + f] = fam_mult[s + f] * fam_f2[s + f] * lf0
        else:
            for f in range(j, jj):
                fam_tt[s + f] = np.nan
                fam_int[s + f] = 0.0
        for wl in range(wavelengths.shape[0]):
            th = th0 if wl == 0 else bragg_theta(wavelengths[wl], qg)
            if th <= 0.0:
                continue
            # sin th = lambda sqrt(Q) / 2 exactly; cos and tan from it, one asin per peak
            sn = 0.5 * wavelengths[wl] * math.sqrt(qg)
            cs = math.sqrt(1.0 - sn * sn)
            fwhm, eta = peak_fwhm_sc(cs, sn / cs, u, v, w, x, y, min_fwhm)
            _add_peak(row, grid, tt_min, step, 2.0 * th * RAD2DEG + zero,
                      wweights[wl] * msum * lorentz_factor_sc(sn, cs, xray), fwhm, eta, cutoff)
        j = jj


@njit(parallel=True, cache=True, error_model="numpy")
def render_patterns(fam_off, fam_count, fam_q, fam_f2, fam_mult, wavelengths, wweights, tt_min, step, u, v, w,
                    x, y, zero, cutoff, min_fwhm, xray, pattern, fam_tt, fam_int):
    """Sum pseudo-Voigt peaks onto each structure's row of ``pattern`` (n, npts), PATTERN_DTYPE.

    Also fills 2theta (degrees, first wavelength) and integrated intensity m |F|^2 L of every family.
    """
    npts = pattern.shape[1]
    grid = tt_min + step * np.arange(npts)
    for i in prange(pattern.shape[0]):
        _render_one(i, fam_off[i], fam_count[i], fam_q, fam_f2, fam_mult, wavelengths, wweights, tt_min, step,
                    npts, u, v, w, x, y, zero, cutoff, min_fwhm, xray, pattern, fam_tt, fam_int, grid)
