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
    """
    n = frac.shape[0]
    m = rot.shape[0]
    nb = _bins_per_axis(n, tol)
    nbin = nb * nb * nb
    # wrapped positions and their bins, atoms ordered by bin (counting sort)
    w = np.empty((n, 3))
    bin_of = np.empty(n, np.int64)
    start = np.zeros(nbin + 1, np.int64)
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
        start[bidx + 1] += 1
    for q in range(nbin):
        start[q + 1] += start[q]
    fill = start[:nbin].copy()
    order = np.empty(n, np.int64)
    for j in range(n):
        order[fill[bin_of[j]]] = j
        fill[bin_of[j]] += 1
    y = np.empty(3)
    yw = np.empty(3)
    cb = np.empty(3, np.int64)
    lo = np.zeros(3, np.int64)
    hi = np.zeros(3, np.int64)
    reach = tol * nb * (1.0 + 1e-9)  # the tolerance in bin widths (bins are >= tol wide)
    for o in range(m):
        for j in range(n):
            for a in range(3):
                y[a] = rot[o, a, 0] * frac[j, 0] + rot[o, a, 1] * frac[j, 1] + rot[o, a, 2] * frac[j, 2] + trans[o, a]
                u = y[a] - math.floor(y[a])
                if u >= 1.0:
                    u = 0.0
                yw[a] = u
                c = int(u * nb)
                if c >= nb:
                    c = nb - 1
                cb[a] = c
                # a neighbouring bin only where the image lies within tol of that side
                lo[a] = -1 if nb >= 3 and u * nb - c < reach else 0
                hi[a] = 1 if nb >= 3 and c + 1 - u * nb < reach else 0
            best = -1
            best_d = tol
            for d0 in range(lo[0], hi[0] + 1):
                b0 = (cb[0] + d0) % nb
                for d1 in range(lo[1], hi[1] + 1):
                    b1 = (cb[1] + d1) % nb
                    for d2 in range(lo[2], hi[2] + 1):
                        q = (b0 * nb + b1) * nb + (cb[2] + d2) % nb
                        for p in range(start[q], start[q + 1]):
                            k = order[p]
                            if kind[k] != kind[j] or abs(occ[k] - occ[j]) >= 1e-6 \
                                    or abs(b_iso[k] - b_iso[j]) >= 1e-6:
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
