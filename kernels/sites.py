"""Merging atoms that share a site (mixed occupancy), pure compute.

Structure-type keys (``xtalhpc.curate.splits``) count the atoms of a crystal by
site, so a solid solution's mixed sites (several species at one position) count
once. Atoms closer than a tolerance are one site, assigned greedily in atom
order: the first unassigned atom opens a site, and every later unassigned atom
within the tolerance of it joins. Distances are Cartesian, of the fractional
difference reduced to [-1/2, 1/2] per axis. Compiled because the all-pairs scan
in NumPy cost ~4 ms per structure of the shared test set (one NumPy call per
atom), more than simulating its pattern.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def merge_sites(frac, lat, tol, site):
    """Site index of every atom (written to ``site``); returns the number of sites.

    frac (n, 3) fractional positions; lat (3, 3) lattice vectors as rows (angstrom);
    tol the distance (angstrom) below which two atoms share a site.
    """
    n = frac.shape[0]
    for i in range(n):
        site[i] = -1
    tol2 = tol * tol
    nsite = 0
    for i in range(n):
        if site[i] >= 0:
            continue
        site[i] = nsite
        for j in range(i + 1, n):
            if site[j] >= 0:
                continue
            d0 = frac[j, 0] - frac[i, 0]
            d1 = frac[j, 1] - frac[i, 1]
            d2 = frac[j, 2] - frac[i, 2]
            d0 -= round(d0)
            d1 -= round(d1)
            d2 -= round(d2)
            x = d0 * lat[0, 0] + d1 * lat[1, 0] + d2 * lat[2, 0]
            y = d0 * lat[0, 1] + d1 * lat[1, 1] + d2 * lat[2, 1]
            z = d0 * lat[0, 2] + d1 * lat[1, 2] + d2 * lat[2, 2]
            if x * x + y * y + z * z < tol2:
                site[j] = nsite
        nsite += 1
    return nsite


@njit(cache=True, error_model="numpy", inline="always")
def mark_openers(site, keep, opener):
    """For the site indices ``site`` (m,) that :func:`merge_sites` gave a list of images: ``keep[k]``
    true where image k opened its site (site indices open in increasing order), and
    ``opener[j]`` the image that opened site j."""
    top = -1
    for k in range(site.shape[0]):
        keep[k] = site[k] > top
        if site[k] > top:
            top = site[k]
            opener[top] = k


@njit(cache=True, error_model="numpy")
def unique_images(images, lat, tol, keep):
    """Which symmetry images of each site are distinct atoms (the CIF reader's expansion).

    images (s, m, 3) the m images of each of s sites (fractional, wrapped); lat (3, 3) lattice
    vectors as rows (angstrom); tol (angstrom). Writes ``keep[i, k]`` true where image k of
    site i is no closer than ``tol`` to an earlier kept image of the same site: the site
    openers of :func:`merge_sites` run on that site's images (different sites never merge).
    """
    s_n = images.shape[0]
    m = images.shape[1]
    site = np.empty(m, np.int64)
    opener = np.empty(m, np.int64)
    for i in range(s_n):
        merge_sites(images[i], lat, tol, site)
        mark_openers(site, keep[i], opener)


@njit(cache=True, error_model="numpy")
def merge_sites_binned(frac, lat, tol, site):
    """:func:`merge_sites` with the same result in O(n) at ordinary densities: candidates are
    taken from a cell list instead of every later atom.

    A pair closer than ``tol`` (Cartesian, of the per-axis reduced fractional difference) has
    each fractional component below ``tol |b x c| / V`` (and cyclically), so bins at least that
    wide, searched with their neighbours, hold every such pair; the distance test itself and
    the greedy order are merge_sites' own. Falls back to merge_sites where a bin would span a
    third of the cell or more (small cells, few atoms).
    """
    n = frac.shape[0]
    vol = abs(lat[0, 0] * (lat[1, 1] * lat[2, 2] - lat[1, 2] * lat[2, 1])
              - lat[0, 1] * (lat[1, 0] * lat[2, 2] - lat[1, 2] * lat[2, 0])
              + lat[0, 2] * (lat[1, 0] * lat[2, 1] - lat[1, 1] * lat[2, 0]))
    nb = np.empty(3, np.int64)
    want = int(math.ceil((n / 2.0) ** (1.0 / 3.0)))
    for a in range(3):
        b_ = (a + 1) % 3
        c_ = (a + 2) % 3
        cx = lat[b_, 1] * lat[c_, 2] - lat[b_, 2] * lat[c_, 1]
        cy = lat[b_, 2] * lat[c_, 0] - lat[b_, 0] * lat[c_, 2]
        cz = lat[b_, 0] * lat[c_, 1] - lat[b_, 1] * lat[c_, 0]
        ta = tol * math.sqrt(cx * cx + cy * cy + cz * cz) / vol * (1.0 + 1e-9)
        k = int(math.floor(1.0 / ta)) if ta > 0.0 else want
        nb[a] = k if k < want else want
    if n < 64 or nb[0] < 3 or nb[1] < 3 or nb[2] < 3:
        return merge_sites(frac, lat, tol, site)
    nbin = nb[0] * nb[1] * nb[2]
    cell = np.empty((n, 3), np.int64)
    bin_of = np.empty(n, np.int64)
    start = np.zeros(nbin + 1, np.int64)
    for j in range(n):
        for a in range(3):
            u = frac[j, a] - math.floor(frac[j, a])
            c = int(u * nb[a])
            if c >= nb[a]:
                c = nb[a] - 1
            cell[j, a] = c
        bin_of[j] = (cell[j, 0] * nb[1] + cell[j, 1]) * nb[2] + cell[j, 2]
        start[bin_of[j] + 1] += 1
    for q in range(nbin):
        start[q + 1] += start[q]
    fill = start[:nbin].copy()
    order = np.empty(n, np.int64)
    for j in range(n):  # atoms in index order within each bin
        order[fill[bin_of[j]]] = j
        fill[bin_of[j]] += 1
    for i in range(n):
        site[i] = -1
    tol2 = tol * tol
    nsite = 0
    for i in range(n):
        if site[i] >= 0:
            continue
        site[i] = nsite
        for d0 in range(-1, 2):
            b0 = (cell[i, 0] + d0) % nb[0]
            for d1 in range(-1, 2):
                b1 = (cell[i, 1] + d1) % nb[1]
                for d2 in range(-1, 2):
                    q = (b0 * nb[1] + b1) * nb[2] + (cell[i, 2] + d2) % nb[2]
                    for p in range(start[q], start[q + 1]):
                        j = order[p]
                        if j <= i or site[j] >= 0:
                            continue
                        e0 = frac[j, 0] - frac[i, 0]
                        e1 = frac[j, 1] - frac[i, 1]
                        e2 = frac[j, 2] - frac[i, 2]
                        e0 -= round(e0)
                        e1 -= round(e1)
                        e2 -= round(e2)
                        x = e0 * lat[0, 0] + e1 * lat[1, 0] + e2 * lat[2, 0]
                        y = e0 * lat[0, 1] + e1 * lat[1, 1] + e2 * lat[2, 1]
                        z = e0 * lat[0, 2] + e1 * lat[1, 2] + e2 * lat[2, 2]
                        if x * x + y * y + z * z < tol2:
                            site[j] = nsite
        nsite += 1
    return nsite


@njit(cache=True, error_model="numpy")
def symmetrised_images(sites, rot, trans, rinv, lat, tol, images, keep, delta):
    """The CIF reader's expansion with each site symmetrised from its own images.

    sites (s, 3) fractional positions as given; rot (m, 3, 3), trans (m, 3) the operations
    x -> R x + t of a group; rinv (m, 3, 3) the inverse rotations; lat (3, 3) lattice vectors as
    rows (angstrom); tol (angstrom). For site x, the images w_o = R_o x + t_o (wrapped) are
    merged as :func:`unique_images` does (the openers of :func:`merge_sites` are kept: same
    ``keep``). The site moves to x + delta, delta = (1/m) sum_o R_o^-1 (w_q(o) - w_o), with
    w_q(o) the kept image that w_o merged into and the difference reduced to the nearest
    lattice translation: the projection onto the site's special position (zero for a site
    whose images are exact). ``images`` (s, m, 3) receives the images of the moved site
    (wrapped), ``delta`` (s, 3) the moves.

    Because the operations form a group, every image of a site has its partners among the
    images of the same site, so this is what the general partner search (``xtalhpc_kernels.
    symmetry.symmetry_partners``) gives atom by atom, in O(s m^2) for the merging instead of a
    search over all atoms under every operation.
    """
    s_n = sites.shape[0]
    m = rot.shape[0]
    site = np.empty(m, np.int64)
    opener = np.empty(m, np.int64)
    w = np.empty((m, 3))
    for i in range(s_n):
        x0 = sites[i, 0]
        x1 = sites[i, 1]
        x2 = sites[i, 2]
        for o in range(m):
            for a in range(3):
                y = rot[o, a, 0] * x0 + rot[o, a, 1] * x1 + rot[o, a, 2] * x2 + trans[o, a]
                w[o, a] = y - math.floor(y)
        merge_sites(w, lat, tol, site)
        mark_openers(site, keep[i], opener)
        d0 = 0.0
        d1 = 0.0
        d2 = 0.0
        for o in range(m):
            q = opener[site[o]]
            if q == o:
                continue
            e0 = w[q, 0] - w[o, 0]
            e1 = w[q, 1] - w[o, 1]
            e2 = w[q, 2] - w[o, 2]
            e0 -= round(e0)
            e1 -= round(e1)
            e2 -= round(e2)
            d0 += rinv[o, 0, 0] * e0 + rinv[o, 0, 1] * e1 + rinv[o, 0, 2] * e2
            d1 += rinv[o, 1, 0] * e0 + rinv[o, 1, 1] * e1 + rinv[o, 1, 2] * e2
            d2 += rinv[o, 2, 0] * e0 + rinv[o, 2, 1] * e1 + rinv[o, 2, 2] * e2
        delta[i, 0] = d0 / m
        delta[i, 1] = d1 / m
        delta[i, 2] = d2 / m
        x0 += delta[i, 0]
        x1 += delta[i, 1]
        x2 += delta[i, 2]
        for o in range(m):
            for a in range(3):
                y = rot[o, a, 0] * x0 + rot[o, a, 1] * x1 + rot[o, a, 2] * x2 + trans[o, a]
                u = y - math.floor(y)
                images[i, o, a] = u if u < 1.0 else 0.0
