"""CUDA kernels: |F|^2 over reflections x atoms, reflection families and profile rendering,
for a ragged batch of structures.

The kernels call the scalar functions of ``kernels/physics.py`` (``inv_d2``,
``scattering_amplitude``, ``scattering_amplitude_imag``, ``powder_f2``, ``debye_waller``, ``bragg_theta``, ``lorentz_factor``,
``peak_fwhm``, ``pseudo_voigt_parts``, ``window_area``) and ``cpu.orbit_representative``:
numba-cuda compiles an ``njit`` function for the device when a kernel calls it, so each
formula has one definition for both targets. Host-side work (column enumeration,
batching, streams, pinned buffers) lives in ``cuda_launch.py``; nothing here allocates
on the host, reads files or logs. docs/gpu.md has the design and the throughput model.

Work decomposition
------------------
|F|^2: the CPU enumerates the reflections of a structure column by column, an
(h, k) column being the run of l it computes, and walks the phase
exp(2 pi i l z) along l by one complex multiply per step. On the GPU a *work
item* is a block of ``L_BLOCK`` consecutive l of one column: the thread takes
one sincos per atom for the first l of its block and the recurrence for the
rest, so sincos is amortised over ``L_BLOCK`` reflections while every thread
stays independent (no dynamic per-thread arrays). Columns are enumerated on
the host (``cuda_launch.enumerate_columns``: tens to hundreds per structure,
28 bytes each); they fix each reflection's output row, the row the CPU writes.

Families: per structure a bitonic sort by Q (one block per structure), then one
thread per structure groups the sorted reflections by the rules of
``cpu.reflection_families``; dense offsets and a compaction pass make the dense
family rows the renderer and the copy back read.

Profiles: one thread per family (the first family of each group of equal d
renders the summed peak, as the CPU does), a serial walk over the on-grid part
of its window, scaled by the profile's analytic area over the window
(``physics.window_area``), and ``atomic.add`` into the pattern row: neighbouring
peaks overlap only over a few points, so contention is low.

Everything is float64 (see docs/gpu.md): families are formed by comparing
|F|^2 to a relative 1e-6, which float32 sums over hundreds of atoms do not
keep, and an H100 has half its FP32 rate in FP64.
"""
from __future__ import annotations

import math

from numba import config, cuda, float32, float64, int8, int32, int64, njit, types

from . import cpu, physics
from .reflections import MIN_LAUE_ORDER
from .physics import GAUSS_HALF_WIDTH


def _device_fn(f):
    """An ``njit`` function as the kernels call it.

    On a GPU (and for ``cuda.compile_ptx``) the njit dispatcher itself: numba-cuda compiles
    it for the device. Under the CUDA simulator its Python source (``py_func``), because the
    simulator's fake device arrays cannot be passed to compiled CPU code. Either way the
    formula is the one written in ``physics.py``.
    """
    return f.py_func if config.ENABLE_CUDASIM else f


inv_d2 = _device_fn(physics.inv_d2)
scattering_amplitude = _device_fn(physics.scattering_amplitude)
scattering_amplitude_imag = _device_fn(physics.scattering_amplitude_imag)
powder_f2 = _device_fn(physics.powder_f2)
debye_waller = _device_fn(physics.debye_waller)
bragg_theta = _device_fn(physics.bragg_theta)
lorentz_factor = _device_fn(physics.lorentz_factor)
peak_fwhm = _device_fn(physics.peak_fwhm)
pseudo_voigt_parts = _device_fn(physics.pseudo_voigt_parts)
window_area = _device_fn(physics.window_area)
orbit_representative = _device_fn(cpu.orbit_representative)
writes_better = _device_fn(cpu.writes_better)
texture_factor = _device_fn(physics.texture_factor)

TWO_PI = 2.0 * math.pi
RAD2DEG = 180.0 / math.pi
#: Reflections along l handled by one thread: one sincos per atom per block, then the
#: phase recurrence (one complex multiply per reflection per atom). With 8, the sm_90 PTX
#: keeps the running sums in registers through the atom loop (the four 8-double arrays
#: touch local memory only once per scattering type).
L_BLOCK = 8


def _find_segment(off, x):
    """Largest c with off[c] <= x, for a non-decreasing ``off`` whose last entry exceeds x."""
    lo = 0
    hi = off.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if off[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


find_segment = _device_fn(njit(inline="always")(_find_segment))


def _type_phase_sums(h, k, l0, frac, occ, step_c, step_s, j0, j1, sr, si):
    """sr[m] + i si[m] = sum over atoms j0..j1-1 (one scattering type) of occ exp(2 pi i (h x + k y + (l0 + m) z)),
    m = 0..L_BLOCK-1: one sincos per atom, then the phase recurrence along l."""
    for m in range(L_BLOCK):
        sr[m] = 0.0
        si[m] = 0.0
    for j in range(j0, j1):
        p = h * frac[j, 0] + k * frac[j, 1] + l0 * frac[j, 2]
        # Subtracting the nearest integer is exact and keeps sin/cos on their short path.
        p -= math.floor(p + 0.5)
        ph = TWO_PI * p
        o = occ[j]
        cr = o * math.cos(ph)
        ci = o * math.sin(ph)
        zc = step_c[j]
        zs = step_s[j]
        for m in range(L_BLOCK):
            sr[m] += cr
            si[m] += ci
            r = cr * zc - ci * zs
            ci = cr * zs + ci * zc
            cr = r


def _write_reflection(o, h, k, l, q, f2, laue_rot, r0, r1, out_hkl, out_q, out_f2, out_mult):
    """Row ``o`` of the outputs: Q = 1/d^2, |F|^2, and the multiplicity and written hkl (the
    orbit's representative and size for a Laue group of order >= MIN_LAUE_ORDER, else the
    Friedel pair as computed)."""
    out_q[o] = q
    out_f2[o] = f2
    if r1 - r0 >= MIN_LAUE_ORDER:
        stab, rh, rk, rl = orbit_representative(h, k, l, laue_rot, r0, r1)
        out_mult[o] = (r1 - r0) // stab
        out_hkl[o, 0] = rh
        out_hkl[o, 1] = rk
        out_hkl[o, 2] = rl
    else:
        out_mult[o] = 2
        out_hkl[o, 0] = h
        out_hkl[o, 1] = k
        out_hkl[o, 2] = l


type_phase_sums = _device_fn(njit(inline="always")(_type_phase_sums))
write_reflection = _device_fn(njit(inline="always")(_write_reflection))


def _structure_factor_kernel(recip, col_struct, col_h, col_k, col_l0, col_nl, col_out, col_item_off, type_off,
                             type_atom_off, type_coef, type_b, frac, occ, step_c, step_s, laue_off, laue_rot,
                             out_hkl, out_q, out_f2, out_mult):
    """|F(hkl)|^2 and multiplicity of every reflection of every column (see the module docstring).

    Column c of structure ``col_struct[c]`` holds l = col_l0[c] .. col_l0[c] + col_nl[c] - 1 at
    (h, k) = (col_h[c], col_k[c]); its reflections go to output rows col_out[c] + (l - col_l0[c]).
    Work item g belongs to the column c with col_item_off[c] <= g < col_item_off[c + 1].
    ``step_c``, ``step_s``: cos and sin of 2 pi z per atom (the step of the l recurrence).
    For a structure whose Laue group (laue_rot[laue_off[i]:laue_off[i + 1]]) has order >=
    cpu.MIN_LAUE_ORDER the columns hold only canonical reflections (one per orbit, a run of
    consecutive l) and the multiplicity is the orbit size; otherwise it is 2 (Friedel pair).
    """
    sr = cuda.local.array(L_BLOCK, float64)
    si = cuda.local.array(L_BLOCK, float64)
    fr = cuda.local.array(L_BLOCK, float64)
    fi = cuda.local.array(L_BLOCK, float64)
    n_items = col_item_off[col_item_off.shape[0] - 1]
    for item in range(cuda.grid(1), n_items, cuda.gridsize(1)):
        c = find_segment(col_item_off, item)
        blk = item - col_item_off[c]
        i = col_struct[c]
        h = col_h[c]
        k = col_k[c]
        l0 = col_l0[c] + blk * L_BLOCK
        nl = min(L_BLOCK, col_nl[c] - blk * L_BLOCK)
        g11, g22, g33 = recip[i, 0], recip[i, 1], recip[i, 2]
        g12, g13, g23 = recip[i, 3], recip[i, 4], recip[i, 5]
        for m in range(L_BLOCK):
            fr[m] = 0.0
            fi[m] = 0.0
        for t in range(type_off[i], type_off[i + 1]):
            type_phase_sums(h, k, l0, frac, occ, step_c, step_s, type_atom_off[t], type_atom_off[t + 1], sr, si)
            for m in range(L_BLOCK):
                if m < nl:
                    s2 = 0.25 * inv_d2(h, k, l0 + m, g11, g22, g33, g12, g13, g23)
                    wgt = scattering_amplitude(type_coef, t, s2) * debye_waller(type_b[t], s2)
                    fr[m] += wgt * sr[m]
                    fi[m] += wgt * si[m]
        o0 = col_out[c] + blk * L_BLOCK
        for m in range(L_BLOCK):
            if m < nl:
                write_reflection(o0 + m, h, k, l0 + m, inv_d2(h, k, l0 + m, g11, g22, g33, g12, g13, g23),
                                 fr[m] * fr[m] + fi[m] * fi[m], laue_rot, laue_off[i], laue_off[i + 1], out_hkl,
                                 out_q, out_f2, out_mult)


def _structure_factor_absorbing_kernel(recip, col_struct, col_h, col_k, col_l0, col_nl, col_out, col_item_off,
                                       type_off, type_atom_off, type_coef, type_b, frac, occ, step_c, step_s, laue_off,
                                       laue_rot, out_hkl, out_q, out_f2, out_mult):
    """:func:`_structure_factor_kernel` for batches holding absorbing nuclides (complex lengths).

    Also sums F'' = sum_t c''_t DW_t S_t over the types whose imaginary amplitude c''
    (physics.scattering_amplitude_imag) is non-zero and stores physics.powder_f2, the mean
    |F|^2 of the Friedel pair. A kernel of its own, launched only for such batches, so the
    two extra running sums cost nothing (registers, occupancy) where no atom absorbs. The
    phase sums and the outputs are the plain kernel's (the same device functions).
    """
    sr = cuda.local.array(L_BLOCK, float64)
    si = cuda.local.array(L_BLOCK, float64)
    fr = cuda.local.array(L_BLOCK, float64)
    fi = cuda.local.array(L_BLOCK, float64)
    gr = cuda.local.array(L_BLOCK, float64)
    gi = cuda.local.array(L_BLOCK, float64)
    n_items = col_item_off[col_item_off.shape[0] - 1]
    for item in range(cuda.grid(1), n_items, cuda.gridsize(1)):
        c = find_segment(col_item_off, item)
        blk = item - col_item_off[c]
        i = col_struct[c]
        h = col_h[c]
        k = col_k[c]
        l0 = col_l0[c] + blk * L_BLOCK
        nl = min(L_BLOCK, col_nl[c] - blk * L_BLOCK)
        g11, g22, g33 = recip[i, 0], recip[i, 1], recip[i, 2]
        g12, g13, g23 = recip[i, 3], recip[i, 4], recip[i, 5]
        for m in range(L_BLOCK):
            fr[m] = 0.0
            fi[m] = 0.0
            gr[m] = 0.0
            gi[m] = 0.0
        for t in range(type_off[i], type_off[i + 1]):
            type_phase_sums(h, k, l0, frac, occ, step_c, step_s, type_atom_off[t], type_atom_off[t + 1], sr, si)
            bim = scattering_amplitude_imag(type_coef, t)
            for m in range(L_BLOCK):
                if m < nl:
                    s2 = 0.25 * inv_d2(h, k, l0 + m, g11, g22, g33, g12, g13, g23)
                    dw = debye_waller(type_b[t], s2)
                    wgt = scattering_amplitude(type_coef, t, s2) * dw
                    fr[m] += wgt * sr[m]
                    fi[m] += wgt * si[m]
                    if bim != 0.0:
                        gr[m] += bim * dw * sr[m]
                        gi[m] += bim * dw * si[m]
        o0 = col_out[c] + blk * L_BLOCK
        for m in range(L_BLOCK):
            if m < nl:
                write_reflection(o0 + m, h, k, l0 + m, inv_d2(h, k, l0 + m, g11, g22, g33, g12, g13, g23),
                                 powder_f2(fr[m], fi[m], gr[m], gi[m]), laue_rot, laue_off[i], laue_off[i + 1],
                                 out_hkl, out_q, out_f2, out_mult)


def _family_sort_kernel(refl_off, key_off, q, sort_q, sort_i):
    """Sort each structure's reflections by Q ascending (ties by position): one block per
    structure (grid-stride over structures), a bitonic network over its slot
    key_off[s]:key_off[s + 1] of ``sort_q``/``sort_i`` (a power of two >= its count, padded
    with +inf). Leaves in sort_i[key_off[s] + r] the position (from refl_off[s]) of rank r.
    """
    tid = cuda.threadIdx.x
    nth = cuda.blockDim.x
    for s in range(cuda.blockIdx.x, refl_off.shape[0] - 1, cuda.gridDim.x):
        r0 = refl_off[s]
        n = refl_off[s + 1] - r0
        k0 = key_off[s]
        size = key_off[s + 1] - k0
        for t in range(tid, size, nth):
            sort_q[k0 + t] = q[r0 + t] if t < n else math.inf
            sort_i[k0 + t] = t
        cuda.syncthreads()
        k = 2
        while k <= size:
            j = k // 2
            while j > 0:
                for t in range(tid, size, nth):
                    u = t ^ j
                    if u > t:
                        qa = sort_q[k0 + t]
                        qb = sort_q[k0 + u]
                        ia = sort_i[k0 + t]
                        ib = sort_i[k0 + u]
                        a_after_b = qa > qb or (qa == qb and ia > ib)
                        if a_after_b == ((t & k) == 0):
                            sort_q[k0 + t] = qb
                            sort_q[k0 + u] = qa
                            sort_i[k0 + t] = ib
                            sort_i[k0 + u] = ia
                cuda.syncthreads()
                j //= 2
            k *= 2
        cuda.syncthreads()


def _family_scan_kernel(refl_off, key_off, hkl, q, f2, mult, sort_i, used, d_tol, f2_tol, absent_tol, fam_hkl,
                        fam_q, fam_f2, fam_mult, fam_count):
    """Group each structure's reflections into families, one thread per structure.

    The same rules, in the same order, as ``cpu.reflection_families`` (see its docstring):
    d-groups of Q within d_tol of the group's first (smallest) Q, families of equal |F|^2
    within a group, absences (|F|^2 <= absent_tol * max) dropped, multiplicities summed,
    representative = fewest negative indices, then largest (h, k, l). Families of structure s
    go to rows refl_off[s]:refl_off[s] + fam_count[s], d descending. ``used`` is scratch.
    """
    for s in range(cuda.grid(1), refl_off.shape[0] - 1, cuda.gridsize(1)):
        r0 = refl_off[s]
        n = refl_off[s + 1] - r0
        k0 = key_off[s]
        f2max = 0.0
        for j in range(n):
            used[r0 + j] = 0
            if f2[r0 + j] > f2max:
                f2max = f2[r0 + j]
        floor = absent_tol * f2max
        nf = 0
        g0 = 0
        while g0 < n:
            qg = q[r0 + sort_i[k0 + g0]]
            g1 = g0 + 1
            while g1 < n and q[r0 + sort_i[k0 + g1]] - qg <= d_tol * qg:
                g1 += 1
            for a in range(g0, g1):
                if used[r0 + a]:
                    continue
                ja = r0 + sort_i[k0 + a]
                fa = f2[ja]
                m = 0
                f2sum = 0.0
                bh = hkl[ja, 0]
                bk = hkl[ja, 1]
                bl = hkl[ja, 2]
                for b in range(a, g1):
                    if used[r0 + b]:
                        continue
                    jb = r0 + sort_i[k0 + b]
                    fb = f2[jb]
                    if abs(fb - fa) <= f2_tol * max(fa, fb) + 1e-300 + floor * 1e-3:
                        used[r0 + b] = 1
                        m += mult[jb]
                        f2sum += mult[jb] * fb
                        h2 = hkl[jb, 0]
                        k2 = hkl[jb, 1]
                        l2 = hkl[jb, 2]
                        if writes_better(h2, k2, l2, bh, bk, bl):
                            bh = h2
                            bk = k2
                            bl = l2
                if fa > floor:
                    o = r0 + nf
                    fam_hkl[o, 0] = bh
                    fam_hkl[o, 1] = bk
                    fam_hkl[o, 2] = bl
                    fam_q[o] = qg
                    fam_f2[o] = f2sum / m  # the members' mean, as on the CPU
                    fam_mult[o] = m
                    nf += 1
            g0 = g1
        fam_count[s] = nf


def _family_offsets_kernel(fam_count, dense_off):
    """dense_off[0] = 0, dense_off[s + 1] = dense_off[s] + fam_count[s] (one thread: a batch
    has at most a few thousand structures)."""
    if cuda.grid(1) == 0:
        acc = 0
        dense_off[0] = 0
        for s in range(fam_count.shape[0]):
            acc += fam_count[s]
            dense_off[s + 1] = acc


def _family_compact_kernel(refl_off, fam_count, dense_off, fam_hkl, fam_q, fam_f2, fam_mult, d_hkl, d_q, d_f2,
                           d_mult):
    """Copy each structure's families from its reflection rows to dense rows dense_off[s]:..."""
    for f in range(cuda.grid(1), fam_q.shape[0], cuda.gridsize(1)):
        s = find_segment(refl_off, f)
        loc = f - refl_off[s]
        if loc < fam_count[s]:
            o = dense_off[s] + loc
            d_hkl[o, 0] = fam_hkl[f, 0]
            d_hkl[o, 1] = fam_hkl[f, 1]
            d_hkl[o, 2] = fam_hkl[f, 2]
            d_q[o] = fam_q[f]
            d_f2[o] = fam_f2[f]
            d_mult[o] = fam_mult[f]


def _zero_kernel(pattern):
    """pattern[:] = 0 (grid-stride over all points)."""
    n = pattern.shape[0] * pattern.shape[1]
    npts = pattern.shape[1]
    for g in range(cuda.grid(1), n, cuda.gridsize(1)):
        pattern[g // npts, g % npts] = 0.0


def _window(tt, fwhm, cutoff, tt_min, step, npts):
    """Grid-index window [i0, i1] of a peak at ``tt`` (degrees): +-cutoff FWHM, as the CPU
    renderer cuts it (i0 may be < 0 and i1 >= npts). Returns i0 > i1 when it misses the grid."""
    half = cutoff * fwhm
    i0 = int(math.ceil((tt - half - tt_min) / step))
    i1 = int(math.floor((tt + half - tt_min) / step))
    if i1 < 0 or i0 >= npts or i1 < i0:
        return 1, 0
    return i0, i1


peak_window = _device_fn(njit(inline="always")(_window))


def _profile_point(p, tt, tt_min, step, ic, gw, d0, al, inv_hw, ag, a_g):
    """Scaled pseudo-Voigt at grid index p: the Lorentzian (amplitude ``al``) everywhere in the
    window, the Gaussian (amplitude ``ag``) within gw points of the centre index ic (beyond,
    it is below 3e-8 of its height), as the CPU renderer draws it."""
    z = ((tt_min + step * p) - tt) * inv_hw
    v = al / (1.0 + z * z)
    j = p - ic
    if ag > 0.0 and j >= -gw and j <= gw:
        dx = d0 + j * step
        v += ag * math.exp(-a_g * dx * dx)
    return v


profile_point = _device_fn(njit(inline="always")(_profile_point))


def _render_kernel(fam_off, fam_q, fam_f2, fam_mult, wavelengths, wweights, tt_min, step, u, v, w, x, y, zero,
                   cutoff, min_fwhm, xray, pattern, fam_tt, fam_int):
    """Add every family's peak to its structure's row of ``pattern`` (which starts zeroed).

    Families are dense: structure i owns fam_off[i]:fam_off[i + 1], sorted by d descending,
    families of one d sharing one Q value exactly. Also writes 2theta (degrees, first
    wavelength) and integrated intensity m |F|^2 L of every family, as the CPU does.
    """
    npts = pattern.shape[1]
    nfam = fam_off[fam_off.shape[0] - 1]
    for f in range(cuda.grid(1), nfam, cuda.gridsize(1)):
        i = find_segment(fam_off, f)
        qg = fam_q[f]
        th0 = bragg_theta(wavelengths[0], qg)
        if th0 > 0.0:
            fam_tt[f] = 2.0 * th0 * RAD2DEG + zero
            fam_int[f] = fam_mult[f] * fam_f2[f] * lorentz_factor(th0, xray)
        else:
            fam_tt[f] = math.nan
            fam_int[f] = 0.0
        if f > fam_off[i] and fam_q[f - 1] == qg:
            continue  # the group's first family renders the summed peak
        msum = 0.0
        e = fam_off[i + 1]
        jj = f
        while jj < e and fam_q[jj] == qg:
            msum += fam_mult[jj] * fam_f2[jj]
            jj += 1
        for wl in range(wavelengths.shape[0]):
            th = bragg_theta(wavelengths[wl], qg)
            if th <= 0.0:
                continue
            fwhm, eta = peak_fwhm(th, u, v, w, x, y, min_fwhm)
            tt = 2.0 * th * RAD2DEG + zero
            inten = wweights[wl] * msum * lorentz_factor(th, xray)
            i0, i1 = peak_window(tt, fwhm, cutoff, tt_min, step, npts)
            if i0 > i1:
                continue
            amp_l, inv_hw, amp_g, a_g = pseudo_voigt_parts(fwhm, eta)
            # Scaled by the profile's area over its window (edges half a step beyond the outer
            # points), so the peak keeps its integrated intensity.
            scale = inten / window_area(fwhm, eta, tt - (tt_min + i0 * step) + 0.5 * step,
                                        tt_min + i1 * step - tt + 0.5 * step)
            ic = int(round((tt - tt_min) / step))
            gw = int(GAUSS_HALF_WIDTH * fwhm / step) + 1
            d0 = tt_min + ic * step - tt
            al = amp_l * scale
            ag = amp_g * scale
            for p in range(max(i0, 0), min(i1, npts - 1) + 1):
                cuda.atomic.add(pattern, (i, p),
                                float32(profile_point(p, tt, tt_min, step, ic, gw, d0, al, inv_hw, ag, a_g)))


def _texture_kernel(loc_off, s0, recip, laue_off, laue_rot, axis, r, hkl, f2):
    """Preferred orientation, as ``cpu.texture_factors``: one block per structure of the batch
    (batch structure i is chunk structure s0 + i, whose reflections are rows loc_off[i]:loc_off[i
    + 1] of the batch's ``hkl`` and ``f2``), its threads striding over the reflections; each
    |F|^2 times :func:`physics.texture_factor` for the structure's axis and r (1: untouched)."""
    i = cuda.blockIdx.x
    if i >= loc_off.shape[0] - 1:
        return
    g = s0 + i
    rg = r[g]
    if rg == 1.0:
        return
    lo, hi = laue_off[g], laue_off[g + 1]
    for j in range(loc_off[i] + cuda.threadIdx.x, loc_off[i + 1], cuda.blockDim.x):
        f2[j] *= texture_factor(float64(hkl[j, 0]), float64(hkl[j, 1]), float64(hkl[j, 2]), recip[g, 0], recip[g, 1],
                                recip[g, 2], recip[g, 3], recip[g, 4], recip[g, 5], axis[g, 0], axis[g, 1], axis[g, 2],
                                laue_rot, lo, hi, rg)


structure_factor_kernel = cuda.jit(_structure_factor_kernel)
structure_factor_absorbing_kernel = cuda.jit(_structure_factor_absorbing_kernel)
family_sort_kernel = cuda.jit(_family_sort_kernel)
family_scan_kernel = cuda.jit(_family_scan_kernel)
family_offsets_kernel = cuda.jit(_family_offsets_kernel)
family_compact_kernel = cuda.jit(_family_compact_kernel)
zero_kernel = cuda.jit(_zero_kernel)
render_kernel = cuda.jit(_render_kernel)
texture_kernel = cuda.jit(_texture_kernel)

_i32 = int32[::1]
_i64 = int64[::1]
_f64 = float64[::1]
_f64_2d = float64[:, ::1]
_pattern = float32[:, ::1]  # cpu.PATTERN_DTYPE rows

#: Kernel name -> (Python function, the one signature the launchers call it with). The
#: launchers pass exactly these dtypes and layouts, so the PTX test compiles what runs.
SIGNATURES = {
    "structure_factor": (_structure_factor_kernel, (
        _f64_2d, _i32, _i32, _i32, _i32, _i32, _i64, _i64, _i64, _i64, _f64_2d, _f64, _f64_2d, _f64, _f64, _f64,
        _i64, int64[:, :, ::1], int32[:, ::1], _f64, _f64, _i32)),
    "structure_factor_absorbing": (_structure_factor_absorbing_kernel, (
        _f64_2d, _i32, _i32, _i32, _i32, _i32, _i64, _i64, _i64, _i64, _f64_2d, _f64, _f64_2d, _f64, _f64, _f64,
        _i64, int64[:, :, ::1], int32[:, ::1], _f64, _f64, _i32)),
    "family_sort": (_family_sort_kernel, (_i64, _i64, _f64, _f64, _i32)),
    "family_scan": (_family_scan_kernel, (
        _i64, _i64, int32[:, ::1], _f64, _f64, _i32, _i32, int8[::1], float64, float64, float64, int32[:, ::1], _f64,
        _f64, _i32, _i64)),
    "family_offsets": (_family_offsets_kernel, (_i64, _i64)),
    "family_compact": (_family_compact_kernel, (
        _i64, _i64, _i64, int32[:, ::1], _f64, _f64, _i32, int32[:, ::1], _f64, _f64, _i32)),
    "zero": (_zero_kernel, (_pattern,)),
    "texture": (_texture_kernel, (_i64, int64, _f64_2d, _i64, int64[:, :, ::1], _f64_2d, _f64, int32[:, ::1], _f64)),
    "render": (_render_kernel, (
        _i64, _f64, _f64, _i32, _f64, _f64, float64, float64, float64, float64, float64, float64, float64,
        float64, float64, float64, types.boolean, _pattern, _f64, _f64)),
}
