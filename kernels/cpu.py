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
                      pseudo_voigt_parts, scattering_amplitude_imag, texture_factor, weight_terms, window_area)
# Reflection enumeration lives in reflections.py; its names stay reachable as cpu.<name>.
from .reflections import (MIN_LAUE_ORDER, NO_ORBIT, canonical_l_interval,  # noqa: F401
                          canonical_stabiliser, canonical_table, column_interval, column_may_hold_canonical,
                          column_run, count_reflections, index_bounds, l_range, orbit_representative, orbit_table,
                          writes_better)

#: Patterns are float32 (n, npts) rows: 7 significant digits, far finer than any counting
#: statistics, half the memory traffic of float64, and what datasets store. Everything
#: before the rows (|F|^2, positions, widths, window areas) is float64.
PATTERN_DTYPE = np.float32

TWO_PI = 2.0 * math.pi
RAD2DEG = 180.0 / math.pi


#: Largest deviation (angstrom, per axis) of an atom's inversion partner from the exact image
#: for the paired sum (inversion_pairs); the same bound as the operations the simulator uses
#: (xtalhpc.crystal.EXACT_TOL). Partners are represented by their midpoint, so the error in F
#: is second order in the deviation.
PAIR_TOL = 1e-9
#: Occupancies of inversion partners must agree to this (absolute).
PAIR_OCC_TOL = 1e-12


@njit(cache=True, error_model="numpy")
def inversion_pairs(type_off, type_atom_off, frac, occ, cell_len, inv_t, tol, out_frac, out_occ, out_tao,
                    centro):
    """Pair the atoms of every centrosymmetric structure for the real (cosine) structure factor.

    ``inv_t[i]`` is the translation tau of an inversion -x + tau among structure i's operations
    (NaN: none). Each atom at x of a type (same scattering and B) must have a partner of the
    same type and occupancy (within PAIR_OCC_TOL) at tau - x (mod 1, within ``tol`` angstrom
    per axis); an atom may be its own partner (at a centre). When every atom is paired,
    structure i gets one atom per pair at u = x - tau / 2 (the pair's midpoint image) with
    occupancy occ_a + occ_b (self-paired: occ_a), and centro[i] = True: then
    F(h) = exp(2 pi i h.tau/2) sum_t w_t sum_pairs occ cos(2 pi h.u), whose |F|^2 is that of the
    real sum (structure_factors sums only cosines). Otherwise the structure's atoms are copied
    as they are (centro[i] = False, the full complex sum). Types keep their order and
    boundaries (out_tao); returns the number of output atoms.
    """
    n = type_off.shape[0] - 1
    pos = 0
    for i in range(n):
        t0 = type_off[i]
        t1 = type_off[i + 1]
        start = pos
        ok = not math.isnan(inv_t[i, 0])
        if ok:
            tx = tol / cell_len[i, 0]
            ty = tol / cell_len[i, 1]
            tz = tol / cell_len[i, 2]
            for t in range(t0, t1):
                out_tao[t] = pos
                a0 = type_atom_off[t]
                a1 = type_atom_off[t + 1]
                used = np.zeros(a1 - a0, dtype=np.bool_)
                for a in range(a0, a1):
                    if used[a - a0]:
                        continue
                    found = -1
                    d0 = 0.0
                    d1 = 0.0
                    d2 = 0.0
                    for b in range(a, a1):
                        if used[b - a0] or abs(occ[a] - occ[b]) > PAIR_OCC_TOL:
                            continue
                        d0 = frac[a, 0] + frac[b, 0] - inv_t[i, 0]
                        d0 -= math.floor(d0 + 0.5)
                        if abs(d0) > tx:
                            continue
                        d1 = frac[a, 1] + frac[b, 1] - inv_t[i, 1]
                        d1 -= math.floor(d1 + 0.5)
                        if abs(d1) > ty:
                            continue
                        d2 = frac[a, 2] + frac[b, 2] - inv_t[i, 2]
                        d2 -= math.floor(d2 + 0.5)
                        if abs(d2) > tz:
                            continue
                        found = b
                        break
                    if found < 0:
                        ok = False
                        break
                    used[a - a0] = True
                    used[found - a0] = True
                    # x_b = tau - x_a + d (mod 1): the pair's midpoint image about tau / 2 is
                    # u = x_a - tau / 2 - d / 2, and its partner -u.
                    out_frac[pos, 0] = frac[a, 0] - 0.5 * inv_t[i, 0] - 0.5 * d0
                    out_frac[pos, 1] = frac[a, 1] - 0.5 * inv_t[i, 1] - 0.5 * d1
                    out_frac[pos, 2] = frac[a, 2] - 0.5 * inv_t[i, 2] - 0.5 * d2
                    out_occ[pos] = occ[a] if found == a else occ[a] + occ[found]
                    pos += 1
                if not ok:
                    break
        centro[i] = ok
        if not ok:
            pos = start
            for t in range(t0, t1):
                out_tao[t] = pos
                for a in range(type_atom_off[t], type_atom_off[t + 1]):
                    out_frac[pos, 0] = frac[a, 0]
                    out_frac[pos, 1] = frac[a, 1]
                    out_frac[pos, 2] = frac[a, 2]
                    out_occ[pos] = occ[a]
                    pos += 1
    out_tao[type_off[n]] = pos
    return pos


@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _sf_one(i, recip, cell_len, qmax, refl_off, type_off, type_atom_off, type_coef, type_b, frac, occ, centro,
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
      quadratic in l, so v(l+1) = v(l) r(l), r(l+1) = r(l) exp(-beta C / 2). The
      Debye-Waller factor (neutrons without absorbers: the whole weight b' DW) is carried
      and stepped per atom, with its phase; X-ray form factors and the lengths b', b'' of
      absorbers are applied per group of types with the same coefficients (see "fold" and
      "split" below).
    Both recurrences are exact up to rounding (~1e-14 over a column).
    A structure with an absorbing type (imaginary amplitude c'' != 0) also sums
    F'' = sum_t c''_t DW_t S_t and stores physics.powder_f2; the others never touch that path.
    A centrosymmetric structure packed by inversion_pairs (``centro[i]``: one atom per
    inversion pair, about the centre) sums the real parts only: F' and F'' are then real
    times one common phase, so |F|^2 = powder_f2(F', 0, F'', 0) exactly.
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
    cplx = False
    for tt in range(nt):
        if scattering_amplitude_imag(type_coef, t0 + tt) != 0.0:
            cplx = True
    # Each type's weight is carried by its atoms and stepped per atom, a(l+1) = a(l) exp(2 pi i z) r(l),
    # r(l+1) = r(l) c, so the sum over l is a vectorised pass over the atoms with no per-type
    # work (a crystal refined with a B per site has about as many types as sites, and per-type
    # loops had been most of its time):
    # * fold (neutrons without absorbers, one term per type): the whole weight b' exp(-B s^2);
    #   F is the plain sum over the atoms;
    # * split (X-rays, absorbers): the Debye-Waller factor exp(-B s^2) only; the amplitude
    #   f(s) (X-ray form factor, or b' and b'') is applied per *group* of consecutive types
    #   with the same coefficients (one per species), its Gaussian terms stepped per group.
    fold = not cplx
    for tt in range(nt):
        if nterm[tt] != 1:
            fold = False
    aamp = np.empty(nt)
    abeta = np.empty(nt)
    for tt in range(nt):
        aamp[tt] = amp[tt, 0] if fold else 1.0
        abeta[tt] = beta[tt, 0]  # B / 4
    atype = np.empty(na, dtype=np.int64)
    acc = np.empty(na)
    for tt in range(nt):
        c = math.exp(-2.0 * abeta[tt] * g33)
        for j in range(type_atom_off[t0 + tt] - a0, type_atom_off[t0 + tt + 1] - a0):
            atype[j] = tt
            acc[j] = c
    # groups (split): runs of types with identical coefficient rows
    gfirst = np.empty(nt + 1, dtype=np.int64)
    ng = 0
    if not fold:
        for tt in range(nt):
            new = tt == 0
            if not new:
                for col in range(type_coef.shape[1]):
                    if type_coef[t0 + tt, col] != type_coef[t0 + tt - 1, col]:
                        new = True
                        break
            if new:
                gfirst[ng] = tt
                ng += 1
    gfirst[ng] = nt
    gnterm = np.zeros(ng, dtype=np.int64)
    gamp = np.empty((ng, 6))
    gbeta = np.empty((ng, 6))
    gcc = np.empty((ng, 6))
    gim = np.empty(ng)
    ga0 = np.empty(ng, dtype=np.int64)
    ga1 = np.empty(ng, dtype=np.int64)
    for g in range(ng):
        t = t0 + gfirst[g]
        gnterm[g] = weight_terms(type_coef, t, 0.0, gamp, gbeta, g)  # f(s) alone: B is the atoms'
        for m in range(gnterm[g]):
            gbeta[g, m] *= 0.25
            gcc[g, m] = math.exp(-2.0 * gbeta[g, m] * g33)
        gim[g] = scattering_amplitude_imag(type_coef, t)
        ga0[g] = type_atom_off[t] - a0
        ga1[g] = type_atom_off[t0 + gfirst[g + 1]] - a0
    gval = np.empty((ng, 6))
    grat = np.empty((ng, 6))
    av = np.empty(nt)
    ar_ = np.empty(nt)
    re = np.empty(na)
    im = np.empty(na)
    ra = np.empty(na)
    r0, r1 = laue_off[i], laue_off[i + 1]
    sym = r1 - r0 >= MIN_LAUE_ORDER
    order = r1 - r0
    real = centro[i]
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
                av[tt] = aamp[tt] * math.exp(-abeta[tt] * q0)
                ar_[tt] = math.exp(-abeta[tt] * (bq + g33 * (2 * lo + 1)))
            for g in range(ng):
                for m in range(gnterm[g]):
                    gval[g, m] = gamp[g, m] * math.exp(-gbeta[g, m] * q0)
                    grat[g, m] = math.exp(-gbeta[g, m] * (bq + g33 * (2 * lo + 1)))
            ky = k + kmax
            lz = lo + lmax
            for j in range(na):
                ar = exr[h, j] * eyr[ky, j] - exi[h, j] * eyi[ky, j]
                ai = exr[h, j] * eyi[ky, j] + exi[h, j] * eyr[ky, j]
                re[j] = ar * ezr[lz, j] - ai * ezi[lz, j]
                im[j] = ar * ezi[lz, j] + ai * ezr[lz, j]
            for j in range(na):
                wv = av[atype[j]]
                re[j] *= wv
                im[j] *= wv
                ra[j] = ar_[atype[j]]
            for l in range(lo, hi + 1):
                q = inv_d2(h, k, l, g11, g22, g33, g12, g13, g23)
                if q > 0.0 and q <= qmax:
                    fr = 0.0
                    fi = 0.0
                    gr = 0.0
                    gi = 0.0
                    if fold:
                        if real:
                            for j in range(na):
                                fr += re[j]
                        else:
                            for j in range(na):
                                fr += re[j]
                                fi += im[j]
                    for g in range(ng):
                        sr = 0.0
                        si = 0.0
                        if real:
                            for j in range(ga0[g], ga1[g]):
                                sr += re[j]
                        else:
                            for j in range(ga0[g], ga1[g]):
                                sr += re[j]
                                si += im[j]
                        wgt = 0.0
                        for m in range(gnterm[g]):
                            wgt += gval[g, m]
                        fr += wgt * sr
                        fi += wgt * si
                        if cplx:
                            gr += gim[g] * sr
                            gi += gim[g] * si
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
                    # weights and phases together: a(l+1) = a(l) exp(2 pi i z) r(l), r(l+1) = r(l) c
                    for j in range(na):
                        r = ra[j]
                        x = re[j] * stc[j] - im[j] * sts[j]
                        im[j] = r * (re[j] * sts[j] + im[j] * stc[j])
                        re[j] = r * x
                        ra[j] = r * acc[j]
                    for g in range(ng):
                        for m in range(gnterm[g]):
                            gval[g, m] *= grat[g, m]
                            grat[g, m] *= gcc[g, m]


@njit(parallel=True, cache=True, error_model="numpy")
def structure_factors(recip, cell_len, qmax, refl_off, type_off, type_atom_off, type_coef, type_b, frac, occ, centro,
                      laue_off, laue_rot, tab_off, tab_k, tab_l, table, orbit, out_hkl, out_q, out_f2, out_mult):
    """|F(hkl)|^2 (units of coef^2: fm^2 for neutrons) and multiplicity per computed reflection.

    Structures whose Laue group has order >= MIN_LAUE_ORDER get one reflection per orbit
    with the orbit size as multiplicity; the others every half-sphere reflection with
    multiplicity 2 (itself and its Friedel mate). Canonical intervals come from the
    structure's Laue-group table (see count_reflections). ``centro[i]``: structure i's atoms
    are inversion pairs as packed by inversion_pairs (real sum); False: the atoms as they are.
    """
    for i in prange(recip.shape[0]):
        _sf_one(i, recip, cell_len, qmax, refl_off, type_off, type_atom_off, type_coef, type_b, frac, occ, centro,
                laue_off, laue_rot, tab_off, tab_k, tab_l, table, orbit, out_hkl, out_q, out_f2, out_mult)


@njit(parallel=True, cache=True, error_model="numpy")
def texture_factors(recip, refl_off, hkl, laue_off, laue_rot, axis, r, f2):
    """Preferred orientation: multiply ``f2`` of structure i's reflections in place by
    :func:`physics.texture_factor` for axis ``axis[i]`` (the reciprocal-lattice vector of the
    preferred plane, (h, k, l) reals) and coefficient ``r[i]`` (1: untouched).

    A computed reflection stands for its whole orbit (its multiplicity: the orbit under the
    structure's Laue group on the symmetry-unique path, h and -h on the half-sphere path), and
    the orbit's members make different angles with the axis, so the factor is averaged over
    the Laue group's rotations.
    """
    for i in prange(recip.shape[0]):
        ri = r[i]
        if ri == 1.0:
            continue
        lo, hi = laue_off[i], laue_off[i + 1]
        for j in range(refl_off[i], refl_off[i + 1]):
            f2[j] *= texture_factor(float(hkl[j, 0]), float(hkl[j, 1]), float(hkl[j, 2]), recip[i, 0], recip[i, 1],
                                    recip[i, 2], recip[i, 3], recip[i, 4], recip[i, 5], axis[i, 0], axis[i, 1],
                                    axis[i, 2], laue_rot, lo, hi, ri)


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
