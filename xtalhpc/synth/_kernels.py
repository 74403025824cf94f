"""Numba kernels of the synthetic-crystal generator: placement of Wyckoff orbits.

Imported only when crystals are generated (``generator._compile``), so that
``import xtalhpc.synth`` does not import numba. Module-level functions so that
``cache=True`` can keep the compiled code on disk between processes.
"""
from __future__ import annotations

import numba
import numpy as np

#: Draws of free parameters per try until one is generic (see SynthConfig.generic_tol).
_GENERIC_DRAWS = 200

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True)
def _uniform(state):
    """Uniform double in [0, 1) from SplitMix64 (Steele, Lea & Flood 2014); ``state`` is a uint64[1].

    A 64-bit seed per crystal (numba's np.random.seed takes 32 bits, and 2^32
    seeds would repeat within a few hundred thousand crystals).
    """
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def fits(frac, n_old, m, rad, r_new, lat, spacing, factor):
    """True if atoms ``frac[n_old:n_old+m]`` (radius ``r_new``) keep their distance to
    ``frac[:n_old]`` and to each other.

    Fractional differences are wrapped to [-0.5, 0.5) and the 27 neighbouring
    images are searched, which finds every image closer than the threshold for
    the cells drawn here (angles 60-120 degrees, axis ratios <= 2.5). An image
    whose fractional offset along an axis times that axis' lattice-plane
    spacing already exceeds the threshold is skipped: the Cartesian distance is
    at least that large.
    """
    for i in range(n_old, n_old + m):
        for j in range(i):
            # rad[n_old:] is not written yet: atoms of the new orbit have radius r_new
            dmin = factor * (r_new + (rad[j] if j < n_old else r_new))
            d2 = dmin * dmin
            dx = frac[i, 0] - frac[j, 0]
            dy = frac[i, 1] - frac[j, 1]
            dz = frac[i, 2] - frac[j, 2]
            dx -= np.floor(dx + 0.5)
            dy -= np.floor(dy + 0.5)
            dz -= np.floor(dz + 0.5)
            for a in range(-1, 2):
                fa = dx + a
                if abs(fa) * spacing[0] >= dmin:
                    continue
                for b in range(-1, 2):
                    fb = dy + b
                    if abs(fb) * spacing[1] >= dmin:
                        continue
                    for c in range(-1, 2):
                        fc = dz + c
                        if abs(fc) * spacing[2] >= dmin:
                            continue
                        x = fa * lat[0, 0] + fb * lat[1, 0] + fc * lat[2, 0]
                        y = fa * lat[0, 1] + fb * lat[1, 1] + fc * lat[2, 1]
                        z = fa * lat[0, 2] + fb * lat[1, 2] + fc * lat[2, 2]
                        if x * x + y * y + z * z < d2:
                            return False
    return True

@numba.njit(cache=True, nogil=True)
def generic(ops, o0, p, combos, active, climit, cross, tol, gstar, frac, starts, n_prev):
    """False if the orbit representative x satisfies, within ``tol`` (angstrom of
    atom displacement), a relation that its Wyckoff position does not impose:
    c . x = k/24 with c a row of R - R' for two holohedry operations
    (``combos[active]``), or x_d +- r_e = k/24 (``cross[d, e]``) with r the
    representative of an orbit placed before.
    Such near-relations are how random coordinates pick up extra symmetry (an
    inversion or mirror that is almost there); the second kind matters along
    polar axes, where the origin floats and two orbits' heights can line up
    with a mirror the group does not have.

    A relation c . x = k/24 missed by ``dev`` (fractional) needs the atom to move
    ``dev / |c|*`` angstrom, |c|*^2 = c^T G* c (G* the reciprocal metric), so
    ``climit[k] = 24 tol |c_k|*``.
    """
    x0 = ops[o0, 0, 0] * p[0] + ops[o0, 0, 1] * p[1] + ops[o0, 0, 2] * p[2] + ops[o0, 0, 3]
    x1 = ops[o0, 1, 0] * p[0] + ops[o0, 1, 1] * p[1] + ops[o0, 1, 2] * p[2] + ops[o0, 1, 3]
    x2 = ops[o0, 2, 0] * p[0] + ops[o0, 2, 1] * p[1] + ops[o0, 2, 2] * p[2] + ops[o0, 2, 3]
    for k in range(combos.shape[0]):
        if not active[k]:
            continue
        v = 24.0 * (combos[k, 0] * x0 + combos[k, 1] * x1 + combos[k, 2] * x2)
        if abs(v - np.floor(v + 0.5)) < climit[k]:
            return False
    for d in range(3):
        xd = x0 if d == 0 else (x1 if d == 1 else x2)
        if abs(ops[o0, d, 0]) + abs(ops[o0, d, 1]) + abs(ops[o0, d, 2]) < 1e-9:
            continue  # this coordinate is fixed by the position
        for q in range(n_prev):
            for e in range(3):
                if not cross[d, e]:
                    continue
                re = frac[starts[q], e]
                lim = 24.0 * tol * np.sqrt(gstar[d, d] + gstar[e, e])
                for sgn in (-1.0, 1.0):
                    v = 24.0 * (xd + sgn * re)
                    if abs(v - np.floor(v + 0.5)) < lim:
                        return False
    return True

@numba.njit(cache=True, nogil=True)
def _geometry(cell, lat, spacing, combos, generic_tol, climit):
    """Fill ``lat`` (rows a, b, c in angstrom), ``spacing`` (d_100, d_010, d_001) and
    ``climit`` (see :func:`generic`) for ``cell``; return the reciprocal metric G*."""
    d2r = np.pi / 180.0
    ca = np.cos(cell[3] * d2r)
    cb = np.cos(cell[4] * d2r)
    cg = np.cos(cell[5] * d2r)
    sg = np.sin(cell[5] * d2r)
    lat[:, :] = 0.0
    lat[0, 0] = cell[0]
    lat[1, 0] = cell[1] * cg
    lat[1, 1] = cell[1] * sg
    lat[2, 0] = cell[2] * cb
    lat[2, 1] = cell[2] * (ca - cb * cg) / sg
    lat[2, 2] = np.sqrt(max(cell[2] ** 2 - lat[2, 0] ** 2 - lat[2, 1] ** 2, 0.0))
    vol = lat[0, 0] * lat[1, 1] * lat[2, 2]
    for k in range(3):
        u = lat[(k + 1) % 3]
        v = lat[(k + 2) % 3]
        cx = u[1] * v[2] - u[2] * v[1]
        cy = u[2] * v[0] - u[0] * v[2]
        cz = u[0] * v[1] - u[1] * v[0]
        spacing[k] = vol / np.sqrt(cx * cx + cy * cy + cz * cz)
    gstar = _reciprocal_metric(lat)
    for k in range(combos.shape[0]):
        c0, c1, c2 = combos[k, 0], combos[k, 1], combos[k, 2]
        q = (gstar[0, 0] * c0 * c0 + gstar[1, 1] * c1 * c1 + gstar[2, 2] * c2 * c2
             + 2.0 * (gstar[0, 1] * c0 * c1 + gstar[0, 2] * c0 * c2 + gstar[1, 2] * c1 * c2))
        climit[k] = 24.0 * generic_tol * np.sqrt(q)
    return gstar


@numba.njit(cache=True, nogil=True)
def _reciprocal_metric(lat):
    """G* = (L L^T)^-1 for the lattice rows ``lat``, written out (3x3 cofactors).

    Numba's ``@``/``np.dot``/``np.linalg.inv`` in njit code call SciPy's BLAS/LAPACK,
    which a plain ``pip install xtalhpc`` does not bring (issue 16); for a 3x3 the
    products by hand are as fast (BENCHMARKS.md, "Synthetic kernels without SciPy").
    """
    g = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            g[i, j] = lat[i, 0] * lat[j, 0] + lat[i, 1] * lat[j, 1] + lat[i, 2] * lat[j, 2]
            g[j, i] = g[i, j]
    c00 = g[1, 1] * g[2, 2] - g[1, 2] * g[1, 2]
    c01 = g[0, 2] * g[1, 2] - g[0, 1] * g[2, 2]
    c02 = g[0, 1] * g[1, 2] - g[0, 2] * g[1, 1]
    c11 = g[0, 0] * g[2, 2] - g[0, 2] * g[0, 2]
    c12 = g[0, 1] * g[0, 2] - g[0, 0] * g[1, 2]
    c22 = g[0, 0] * g[1, 1] - g[0, 1] * g[0, 1]
    inv_det = 1.0 / (g[0, 0] * c00 + g[0, 1] * c01 + g[0, 2] * c02)
    gstar = np.empty((3, 3))
    gstar[0, 0] = c00 * inv_det
    gstar[1, 1] = c11 * inv_det
    gstar[2, 2] = c22 * inv_det
    gstar[0, 1] = gstar[1, 0] = c01 * inv_det
    gstar[0, 2] = gstar[2, 0] = c02 * inv_det
    gstar[1, 2] = gstar[2, 1] = c12 * inv_det
    return gstar


@numba.njit(cache=True, nogil=True)
def _shortest_ok(lat, dself):
    """True if no lattice translation (27-neighbourhood) is shorter than ``dself``."""
    for a in range(-1, 2):
        for b in range(-1, 2):
            for c in range(-1, 2):
                if a == 0 and b == 0 and c == 0:
                    continue
                x = a * lat[0, 0] + b * lat[1, 0] + c * lat[2, 0]
                y = b * lat[1, 1] + c * lat[2, 1]
                z = c * lat[2, 2]
                if x * x + y * y + z * z < dself * dself:
                    return False
    return True


@numba.njit(cache=True, nogil=True)
def place(ops, offset, dof, wps, rads, cell, factor, tries, seed, combos, cross, generic_tol, frac, rad,
          max_grow, grow):
    """Place the orbits ``wps`` (in order) in the cell ``(a, b, c, alpha, beta, gamma)``.

    Each orbit gets ``tries`` draws of its free parameters (1 for a fixed
    position). When none fits, the cell grows by the volume factor ``grow`` and
    the same orbit is tried again: atoms already placed keep their fractional
    coordinates, so their distances only grow and stay valid. At most
    ``max_grow`` growth steps in all. Returns the atom count (``cell`` then holds
    the cell used, ``frac`` the coordinates), or -1.
    """
    state = np.empty(1, dtype=np.uint64)
    state[0] = np.uint64(seed)
    f = grow ** (1.0 / 3.0)
    nc = combos.shape[0]
    lat = np.zeros((3, 3))
    spacing = np.empty(3)
    climit = np.empty(nc)
    active = np.zeros(nc, dtype=np.bool_)
    rmax = 0.0
    for j in range(rads.shape[0]):
        rmax = max(rmax, rads[j])
    grown = 0
    gstar = _geometry(cell, lat, spacing, combos, generic_tol, climit)
    while not _shortest_ok(lat, 2.0 * factor * rmax):
        grown += 1
        if grown > max_grow:
            return -1
        cell[:3] *= f
        gstar = _geometry(cell, lat, spacing, combos, generic_tol, climit)
    n = 0
    starts = np.zeros(wps.shape[0], dtype=np.int64)
    p = np.zeros(3)
    for j in range(wps.shape[0]):
        w = wps[j]
        o0 = offset[w]
        m = offset[w + 1] - o0
        r = rads[j]
        ntry = 1 if dof[w] == 0 else tries
        # relations this position does not impose (c . A != 0); x - y is built into (x, x, z)
        for k in range(nc):
            free = 0.0
            for q in range(3):
                free += abs(combos[k, 0] * ops[o0, 0, q] + combos[k, 1] * ops[o0, 1, q]
                            + combos[k, 2] * ops[o0, 2, q])
            active[k] = free > 1e-9
        while True:
            ok = False
            for _ in range(ntry):
                # Redraws for genericity do not count as tries: a rejection here says
                # nothing about the cell being too small.
                for _ in range(_GENERIC_DRAWS):
                    p[0] = _uniform(state)
                    p[1] = _uniform(state)
                    p[2] = _uniform(state)
                    if dof[w] == 0 or generic(ops, o0, p, combos, active, climit, cross, generic_tol, gstar,
                                              frac, starts, j):
                        break
                else:
                    continue
                for k in range(m):
                    for d in range(3):
                        v = (ops[o0 + k, d, 0] * p[0] + ops[o0 + k, d, 1] * p[1]
                             + ops[o0 + k, d, 2] * p[2] + ops[o0 + k, d, 3])
                        frac[n + k, d] = v - np.floor(v)
                if fits(frac, n, m, rad, r, lat, spacing, factor):
                    ok = True
                    break
            if ok:
                break
            grown += 1
            if grown > max_grow:
                return -1
            cell[:3] *= f
            gstar = _geometry(cell, lat, spacing, combos, generic_tol, climit)
        starts[j] = n
        for k in range(m):
            rad[n + k] = r
        n += m
    return n
