"""Symmetry partner search for symmetrising a crystal's positions, pure compute.

``xtalhpc.crystal.symmetrize`` averages every atom over the images of its
symmetry-equivalent partners. Finding the partner of each atom under each
operation is a fixed-radius nearest-neighbour search on the 3-torus of
fractional coordinates (per-axis periodic distance, Chebyshev norm). This kernel
does it with a cell list: the unit cube is cut into ``nb`` bins per axis with
``1 / nb >= tol``, so a partner within ``tol`` lies in the image's bin or, along an
axis where the image is within ``tol`` of a bin face, the neighbour across that
face (periodically); the search costs O(m n) for m operations and n atoms at
ordinary densities. Compiled and cached like the simulation
kernels; it replaces a SciPy k-d tree (whose import alone took ~0.3 s of every
process's start-up) and the per-operation Python around it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def _bins_per_axis(n, tol):
    """Bins per axis: at most 1/tol (so neighbours suffice), about 2 atoms per bin, 1 when < 3."""
    nb = int(math.floor(1.0 / tol)) if tol > 0.0 else 1
    want = int(math.ceil((n / 2.0) ** (1.0 / 3.0)))
    if want < nb:
        nb = want
    return nb if nb >= 3 else 1


#: Offsets of the bin grid tried by :func:`symmetry_partners`, in bin widths.
_GRID_SHIFTS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


@njit(cache=True, error_model="numpy")
def _grid_shift(frac, nb, reach):
    """Offset (bin widths) of the bin grid that puts fewest atoms within ``reach`` of a bin
    face. Atoms on special positions (0, 1/4, 1/2, 1/8, ...) sit exactly on the faces of an
    unshifted grid of 2, 4 or 8 bins per axis, and every image of such an atom then searched
    2-8 bins; the partners found do not depend on the grid (all bins within ``tol`` are
    searched), only the work does."""
    n = frac.shape[0]
    best_s = 0.0
    best_c = n * 3 + 1
    for s in _GRID_SHIFTS:
        cnt = 0
        for j in range(n):
            for a in range(3):
                u = frac[j, a] - math.floor(frac[j, a])
                if u >= 1.0:
                    u = 0.0
                v = u * nb + s
                f = v - math.floor(v)
                if f < reach or 1.0 - f < reach:
                    cnt += 1
        if cnt < best_c:
            best_c = cnt
            best_s = s
    return best_s


@njit(cache=True, error_model="numpy", inline="always")
def _counting_sort(bin_of, nbin):
    """Atoms ordered by bin (stable counting sort): (start (nbin + 1,), order (n,)); bin q holds
    order[start[q]:start[q + 1]]."""
    n = bin_of.shape[0]
    start = np.zeros(nbin + 1, np.int64)
    for j in range(n):
        start[bin_of[j] + 1] += 1
    for q in range(nbin):
        start[q + 1] += start[q]
    fill = start[:nbin].copy()
    order = np.empty(n, np.int64)
    for j in range(n):
        order[fill[bin_of[j]]] = j
        fill[bin_of[j]] += 1
    return start, order


@njit(cache=True, error_model="numpy")
def _cell_list_shifted(frac, nb, shift):
    """:func:`_cell_list` on a grid offset by ``shift`` bin widths (bin c holds
    (u nb + shift) mod nb in [c, c + 1)): (w, start, order)."""
    n = frac.shape[0]
    nbin = nb * nb * nb
    w = np.empty((n, 3))
    bin_of = np.empty(n, np.int64)
    for j in range(n):
        bidx = 0
        for a in range(3):
            u = frac[j, a] - math.floor(frac[j, a])
            if u >= 1.0:
                u = 0.0
            w[j, a] = u
            bidx = bidx * nb + _shifted_bin(u, nb, shift)
        bin_of[j] = bidx
    start, order = _counting_sort(bin_of, nbin)
    return w, start, order


@njit(cache=True, error_model="numpy", inline="always")
def _shifted_bin(u, nb, shift):
    """Bin of a wrapped coordinate u in [0, 1) on the grid offset by ``shift`` bin widths."""
    c = int(u * nb + shift)
    if c >= nb:
        c -= nb
    return c


@njit(cache=True, error_model="numpy")
def symmetry_partners(frac, kind, occ, b_iso, rot, trans, rinv, tol, partner, acc):
    """Partners of every atom under every operation, and the summed symmetrising shifts.

    frac (n, 3) fractional positions; kind (n,) species ids; occ, b_iso (n,);
    rot (m, 3, 3), trans (m, 3) the operations x -> R x + t; rinv (m, 3, 3) the
    inverse rotations; tol the per-axis fractional tolerance. For operation o and
    atom j the partner k is the atom of the same species, occupancy and B (both to
    1e-6) nearest to the image R x_j + t (periodic Chebyshev distance below ``tol``;
    ties to the lower index). Writes ``partner[o, j] = k`` and accumulates into
    ``acc[j]`` the shift R^-1 (x_k - (R x_j + t)), unwrapped to the nearest lattice
    translation, summed over operations in order. Returns -1, or ``o * n + j`` of
    the first (operation, atom) without a partner (``acc`` is then incomplete).

    The bin grid is offset (:func:`_grid_shift`) so that few atoms lie near its faces; an
    image searches its own bin and, along an axis where it lies within ``tol`` of a face,
    the neighbour across it (periodically).
    """
    n = frac.shape[0]
    m = rot.shape[0]
    nb = _bins_per_axis(n, tol)
    reach = tol * nb * (1.0 + 1e-9)  # the tolerance in bin widths (bins are >= tol wide)
    shift = _grid_shift(frac, nb, reach) if nb >= 3 else 0.0
    w, start, order = _cell_list_shifted(frac, nb, shift)
    y = np.empty(3)
    yw = np.empty(3)
    cb = np.empty(3, np.int64)
    lo = np.zeros(3, np.int64)
    hi = np.zeros(3, np.int64)
    for o in range(m):
        for j in range(n):
            for a in range(3):
                y[a] = rot[o, a, 0] * frac[j, 0] + rot[o, a, 1] * frac[j, 1] + rot[o, a, 2] * frac[j, 2] + trans[o, a]
                u = y[a] - math.floor(y[a])
                if u >= 1.0:
                    u = 0.0
                yw[a] = u
                c = _shifted_bin(u, nb, shift)
                cb[a] = c
                # a neighbouring bin only where the image lies within tol of that side
                v = u * nb + shift - c
                if v >= nb:  # wrapped past the last bin
                    v -= nb
                lo[a] = -1 if nb >= 3 and v < reach else 0
                hi[a] = 1 if nb >= 3 and 1.0 - v < reach else 0
            best = -1
            best_d = tol
            kj = kind[j]
            oj = occ[j]
            bj = b_iso[j]
            for d0 in range(lo[0], hi[0] + 1):
                b0 = cb[0] + d0
                b0 = b0 + nb if b0 < 0 else (b0 - nb if b0 >= nb else b0)
                for d1 in range(lo[1], hi[1] + 1):
                    b1 = cb[1] + d1
                    b1 = b1 + nb if b1 < 0 else (b1 - nb if b1 >= nb else b1)
                    for d2 in range(lo[2], hi[2] + 1):
                        b2 = cb[2] + d2
                        b2 = b2 + nb if b2 < 0 else (b2 - nb if b2 >= nb else b2)
                        q = (b0 * nb + b1) * nb + b2
                        for p in range(start[q], start[q + 1]):
                            k = order[p]
                            if kind[k] != kj or abs(occ[k] - oj) >= 1e-6 or abs(b_iso[k] - bj) >= 1e-6:
                                continue
                            dm = 0.0
                            for a in range(3):
                                d = yw[a] - w[k, a]
                                d = abs(d - math.floor(d + 0.5))
                                if d > dm:
                                    dm = d
                            if dm < best_d or (dm == best_d and best >= 0 and k < best):
                                best = k
                                best_d = dm
            if best < 0:
                return o * n + j
            partner[o, j] = best
            # shift of the partner back through the operation: R^-1 (x_k - y), unwrapped
            for a in range(3):
                d = frac[best, a] - y[a]
                yw[a] = d - math.floor(d + 0.5)
            for a in range(3):
                acc[j, a] += rinv[o, a, 0] * yw[0] + rinv[o, a, 1] * yw[1] + rinv[o, a, 2] * yw[2]
    return -1


# ---- finding the operations of a structure given without them (a P1 cell) ------------------

@njit(cache=True, error_model="numpy")
def lattice_rotations(g, tol, span, out):
    """Integer rotations R (in the cell's basis, x' = R x) that preserve the metric ``g`` within
    ``tol``: the lattice's point group, as seen from a basis whose symmetry-image vectors have
    indices within ``span`` (1 or 2; reduced cells need 1, skewed ones 2).

    The columns of R are the images of the basis vectors, so each is a lattice vector v with
    v^T G v = G_ii, and pairs satisfy v_i^T G v_j = G_ij. ``tol[i, j]`` is the allowed
    |difference| of those products (angstrom^2). Writes up to ``out.shape[0]`` rotations to
    ``out`` and returns how many (det = +-1 only).
    """
    nv = (2 * span + 1) ** 3
    vec = np.empty((nv, 3), np.int64)
    m = 0
    for a in range(-span, span + 1):
        for b in range(-span, span + 1):
            for c in range(-span, span + 1):
                if a == 0 and b == 0 and c == 0:
                    continue
                vec[m, 0], vec[m, 1], vec[m, 2] = a, b, c
                m += 1
    gv = np.empty((m, 3))  # G v for every vector
    for q in range(m):
        for r in range(3):
            gv[q, r] = g[r, 0] * vec[q, 0] + g[r, 1] * vec[q, 1] + g[r, 2] * vec[q, 2]
    cand = np.empty((3, m), np.int64)
    nc = np.zeros(3, np.int64)
    for q in range(m):
        vv = vec[q, 0] * gv[q, 0] + vec[q, 1] * gv[q, 1] + vec[q, 2] * gv[q, 2]
        for i in range(3):
            if abs(vv - g[i, i]) <= tol[i, i]:
                cand[i, nc[i]] = q
                nc[i] += 1
    count = 0
    for i0 in range(nc[0]):
        p = cand[0, i0]
        for i1 in range(nc[1]):
            q = cand[1, i1]
            d01 = vec[p, 0] * gv[q, 0] + vec[p, 1] * gv[q, 1] + vec[p, 2] * gv[q, 2]
            if abs(d01 - g[0, 1]) > tol[0, 1]:
                continue
            for i2 in range(nc[2]):
                r = cand[2, i2]
                d02 = vec[p, 0] * gv[r, 0] + vec[p, 1] * gv[r, 1] + vec[p, 2] * gv[r, 2]
                d12 = vec[q, 0] * gv[r, 0] + vec[q, 1] * gv[r, 1] + vec[q, 2] * gv[r, 2]
                if abs(d02 - g[0, 2]) > tol[0, 2] or abs(d12 - g[1, 2]) > tol[1, 2]:
                    continue
                det = (vec[p, 0] * (vec[q, 1] * vec[r, 2] - vec[q, 2] * vec[r, 1])
                       - vec[q, 0] * (vec[p, 1] * vec[r, 2] - vec[p, 2] * vec[r, 1])
                       + vec[r, 0] * (vec[p, 1] * vec[q, 2] - vec[p, 2] * vec[q, 1]))
                if det != 1 and det != -1:
                    continue
                if count < out.shape[0]:
                    for a in range(3):
                        out[count, a, 0] = vec[p, a]
                        out[count, a, 1] = vec[q, a]
                        out[count, a, 2] = vec[r, a]
                count += 1
    return count


@njit(cache=True, error_model="numpy")
def _cell_list(frac, nb):
    """Wrapped positions, and atoms ordered by bin (counting sort): (w, start, order)."""
    n = frac.shape[0]
    nbin = nb * nb * nb
    w = np.empty((n, 3))
    bin_of = np.empty(n, np.int64)
    for j in range(n):
        bidx = 0
        for a in range(3):
            u = frac[j, a] - math.floor(frac[j, a])
            if u >= 1.0:
                u = 0.0
            w[j, a] = u
            c = int(u * nb)
            if c >= nb:
                c = nb - 1
            bidx = bidx * nb + c
        bin_of[j] = bidx
    start, order = _counting_sort(bin_of, nbin)
    return w, start, order


@njit(cache=True, error_model="numpy", inline="always")
def _axis_bin(y, nb, reach):
    """(wrapped coordinate, bin, lowest and highest neighbouring bin offset to search)."""
    u = y - math.floor(y)
    if u >= 1.0:
        u = 0.0
    c = int(u * nb)
    if c >= nb:
        c = nb - 1
    lo = -1 if nb >= 3 and u * nb - c < reach else 0
    hi = 1 if nb >= 3 and c + 1 - u * nb < reach else 0
    return u, c, lo, hi


@njit(cache=True, error_model="numpy")
def _partner_distance(y0, y1, y2, kind_j, kind, w, start, order, nb, tol, lat):
    """Cartesian distance (angstrom) from the point (y0, y1, y2) (fractional) to the nearest atom of
    kind ``kind_j`` whose periodic per-axis fractional distance is below ``tol``; -1 if none."""
    reach = tol * nb * (1.0 + 1e-9)
    u0, c0, lo0, hi0 = _axis_bin(y0, nb, reach)
    u1, c1, lo1, hi1 = _axis_bin(y1, nb, reach)
    u2, c2, lo2, hi2 = _axis_bin(y2, nb, reach)
    best = -1.0
    for d0 in range(lo0, hi0 + 1):
        b0 = (c0 + d0) % nb
        for d1 in range(lo1, hi1 + 1):
            b1 = (c1 + d1) % nb
            for d2 in range(lo2, hi2 + 1):
                q = (b0 * nb + b1) * nb + (c2 + d2) % nb
                for p in range(start[q], start[q + 1]):
                    k = order[p]
                    if kind[k] != kind_j:
                        continue
                    e0 = u0 - w[k, 0]
                    e0 -= math.floor(e0 + 0.5)
                    e1 = u1 - w[k, 1]
                    e1 -= math.floor(e1 + 0.5)
                    e2 = u2 - w[k, 2]
                    e2 -= math.floor(e2 + 0.5)
                    if abs(e0) >= tol or abs(e1) >= tol or abs(e2) >= tol:
                        continue
                    x = e0 * lat[0, 0] + e1 * lat[1, 0] + e2 * lat[2, 0]
                    yy = e0 * lat[0, 1] + e1 * lat[1, 1] + e2 * lat[2, 1]
                    z = e0 * lat[0, 2] + e1 * lat[1, 2] + e2 * lat[2, 2]
                    dist = math.sqrt(x * x + yy * yy + z * z)
                    if best < 0.0 or dist < best:
                        best = dist
    return best


@njit(cache=True, error_model="numpy")
def find_operations(frac, kind, lat, rots, symprec, out_ops, out_dev):
    """Space-group operations x -> R x + t of a structure, for the candidate rotations ``rots``.

    frac (n, 3) fractional positions; kind (n,) atom kinds (atoms of one kind are
    interchangeable: same species, occupancy, B, ...); lat (3, 3) lattice vectors as rows
    (angstrom); rots (r, 3, 3) integer rotations preserving the metric (:func:`lattice_rotations`).
    For each rotation the candidate translations take one atom of the rarest kind onto each
    atom of that kind; an operation is kept when every atom's image lies within ``symprec``
    (angstrom, Cartesian) of an atom of its kind. Writes the kept operations to ``out_ops``
    (rows [R | t], t in [0, 1)) and the largest image-to-atom distance of each to ``out_dev``
    (angstrom); returns how many (at most ``out_ops.shape[0]``).
    """
    n = frac.shape[0]
    nk = 0
    for j in range(n):
        if kind[j] + 1 > nk:
            nk = kind[j] + 1
    cnt = np.zeros(nk, np.int64)
    for j in range(n):
        cnt[kind[j]] += 1
    kmin = 0
    for q in range(nk):
        if cnt[q] > 0 and (cnt[kmin] == 0 or cnt[q] < cnt[kmin]):
            kmin = q
    j0 = -1
    for j in range(n):
        if kind[j] == kmin:
            j0 = j
            break
    # per-axis fractional tolerance: symprec over the shortest length of the cell's rows
    lmin = 1e300
    for a in range(3):
        ln = math.sqrt(lat[a, 0] ** 2 + lat[a, 1] ** 2 + lat[a, 2] ** 2)
        if ln < lmin:
            lmin = ln
    # a Cartesian distance below symprec has every fractional component below symprec / (the
    # height of the cell along that axis) <= ... bound it by the volume: |x_a| <= d |b x c| / V
    vol = abs(lat[0, 0] * (lat[1, 1] * lat[2, 2] - lat[1, 2] * lat[2, 1])
              - lat[0, 1] * (lat[1, 0] * lat[2, 2] - lat[1, 2] * lat[2, 0])
              + lat[0, 2] * (lat[1, 0] * lat[2, 1] - lat[1, 1] * lat[2, 0]))
    tol = 0.0
    for a in range(3):
        b_ = (a + 1) % 3
        c_ = (a + 2) % 3
        cx = lat[b_, 1] * lat[c_, 2] - lat[b_, 2] * lat[c_, 1]
        cy = lat[b_, 2] * lat[c_, 0] - lat[b_, 0] * lat[c_, 2]
        cz = lat[b_, 0] * lat[c_, 1] - lat[b_, 1] * lat[c_, 0]
        ta = symprec * math.sqrt(cx * cx + cy * cy + cz * cz) / vol
        if ta > tol:
            tol = ta
    nb = _bins_per_axis(n, tol)
    w, start, order = _cell_list(frac, nb)
    # atoms of the rarest kind first: a wrong translation fails on them soonest
    check = np.empty(n, np.int64)
    q = 0
    for j in range(n):
        if kind[j] == kmin:
            check[q] = j
            q += 1
    for j in range(n):
        if kind[j] != kmin:
            check[q] = j
            q += 1
    m = 0
    for o in range(rots.shape[0]):
        r = rots[o]
        y00 = r[0, 0] * w[j0, 0] + r[0, 1] * w[j0, 1] + r[0, 2] * w[j0, 2]
        y01 = r[1, 0] * w[j0, 0] + r[1, 1] * w[j0, 1] + r[1, 2] * w[j0, 2]
        y02 = r[2, 0] * w[j0, 0] + r[2, 1] * w[j0, 1] + r[2, 2] * w[j0, 2]
        for k in range(n):
            if kind[k] != kmin:
                continue
            t0 = w[k, 0] - y00
            t0 -= math.floor(t0)
            t1 = w[k, 1] - y01
            t1 -= math.floor(t1)
            t2 = w[k, 2] - y02
            t2 -= math.floor(t2)
            t0 = 0.0 if t0 >= 1.0 else t0
            t1 = 0.0 if t1 >= 1.0 else t1
            t2 = 0.0 if t2 >= 1.0 else t2
            worst = 0.0
            ok = True
            for jj in range(n):
                j = check[jj]
                dist = _partner_distance(r[0, 0] * w[j, 0] + r[0, 1] * w[j, 1] + r[0, 2] * w[j, 2] + t0,
                                         r[1, 0] * w[j, 0] + r[1, 1] * w[j, 1] + r[1, 2] * w[j, 2] + t1,
                                         r[2, 0] * w[j, 0] + r[2, 1] * w[j, 1] + r[2, 2] * w[j, 2] + t2,
                                         kind[j], kind, w, start, order, nb, tol, lat)
                if dist < 0.0 or dist > symprec:
                    ok = False
                    break
                if dist > worst:
                    worst = dist
            if ok and m < out_ops.shape[0]:
                for a in range(3):
                    for b in range(3):
                        out_ops[m, a, b] = r[a, b]
                out_ops[m, 0, 3] = t0
                out_ops[m, 1, 3] = t1
                out_ops[m, 2, 3] = t2
                out_dev[m] = worst
                m += 1
    return m
