"""Host side of the CUDA backend: batches, pinned buffers, streams.

:func:`run_packed` takes one packed chunk (``xtalhpc.simulate.PackedBatch``, the
reflection count of each structure and the instrument) and returns exactly what
the CPU path (``xtalhpc.simulate._run_cpu``) returns, in the same layout.

Pipeline, per device batch b (a run of whole structures sized from free device memory),
on one of two streams:

1. host: enumerate the (h, k) columns of the batch (O(columns), a few hundred per
   structure: ~8 us per pattern) and copy them up;
2. device: ``structure_factor_kernel`` (hkl, Q, |F|^2, multiplicity), then the families:
   a bitonic sort by Q per structure (one block each), the grouping scan (one thread
   per structure, the rules of ``cpu.reflection_families``), their dense offsets; only
   the offsets (8 bytes per structure) come down;
3. host: reads the batch's family count (the one synchronisation per batch, while the
   device already runs step 2 of batch b + 1 on the other stream) and queues
4. device: compaction of the families into dense rows, ``render_kernel`` (peaks into the
   zeroed pattern rows), and one async copy down of the dense families (hkl, Q, |F|^2,
   multiplicity, 2theta, intensity) and the patterns into pinned buffers;
5. host: places them in the CPU path's layout (families of structure i at
   refl_off[i]:refl_off[i] + fam_count[i]).

Why families on the device: on the host, ``cpu.reflection_families`` costs ~75-140 us per
pattern per core (mean over spglib's test set, measured; 0.1-0.2 us per reflection), more
as much as all the other host work of this path together, and it needs every reflection copied
down (32 bytes each: 29 kB for the mean pattern, more than the pattern itself). On the
device it is a per-structure sort plus a serial scan that many structures run side by
side. The scan repeats the CPU's rules line by line (logic, not a physics formula: there
is nothing in physics.py to share); the tests check that both backends give the same
families.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
from numba import njit

from .cpu import PATTERN_DTYPE
from .reflections import MIN_LAUE_ORDER, column_run, index_bounds

#: Fraction of the free device memory one run may hold; up to three batches are alive at
#: once (|F|^2 of b + 1, profiles of b, results of b - 1 being copied).
MEMORY_FRACTION = 0.6
LIVE_BATCHES = 3
#: Device bytes per reflection in a batch: hkl, Q, |F|^2, multiplicity (32), sort slots (<= 2 x 12),
#: scratch flag (1), families in reflection rows (32) and dense (<= 48), its share of the column
#: table (<= 28); rounded up.
BYTES_PER_REFLECTION = 170
#: A chunk is split into at least this many batches (when big enough) so that the host's
#: wait for one batch's family offsets, and that batch's copy back, overlap the device's
#: work on the next.
PIPELINE_BATCHES = 4
#: ... but a batch below this many reflections is not worth a launch of its own.
MIN_BATCH_REFLECTIONS = 1 << 17
#: Threads per block: the |F|^2 kernel holds 64 doubles of accumulators per thread.
SF_BLOCK = 128
RENDER_BLOCK = 128
#: Threads per block of the per-structure bitonic sort (one block per structure) and of the
#: family scan (one thread per structure).
SORT_BLOCK = 256
SCAN_BLOCK = 32
#: Threads per block of the texture kernel (one block per structure, striding over its reflections).
TEXTURE_BLOCK = 64


@njit(cache=True)
def enumerate_columns(recip, cell_len, qmax, laue_off, laue_rot, tab_off, tab_k, tab_l, table, refl_off, s0, s1,
                      l_block):
    """The (h, k) columns of structures s0..s1-1 in the CPU's enumeration order.

    A column is the run of l whose reflections the CPU computes: 0 < Q <= qmax and, for a
    structure whose Laue group has order >= MIN_LAUE_ORDER, canonical (one per orbit, see
    ``cpu.canonical_stabiliser``). Both conditions give an interval of l for fixed (h, k):
    Q is convex in l, and "no rotation maps (h, k, l) to a lexicographically larger member"
    is, rotation by rotation, a half-line in l (:func:`canonical_l_interval`), read from the
    Laue group's table (``simulate.column_tables``) as the CPU count reads it. The exact
    0 < Q <= qmax test trims the two ends (``cpu.column_run``, shared with the CPU count).

    Returns ``col_struct, col_h, col_k, col_l0, col_nl`` (int32), ``col_out`` (int64, the
    output row of the column's first reflection, from ``refl_off``), ``col_item_off``
    (int64, prefix sum of ceil(nl / l_block) work items) and the per-structure reflection
    totals (int64), which the caller checks against the CPU count.

    l_range bounds l with a 1e-9 slack; the exact tests are applied at both ends.
    """
    ncol = 0
    col_struct = np.empty(0, np.int32)
    col_h = np.empty(0, np.int32)
    col_k = np.empty(0, np.int32)
    col_l0 = np.empty(0, np.int32)
    col_nl = np.empty(0, np.int32)
    col_out = np.empty(0, np.int64)
    col_item_off = np.zeros(1, np.int64)
    totals = np.zeros(s1 - s0, np.int64)
    for pass_ in range(2):  # count, then fill
        if pass_ == 1:
            col_struct = np.empty(ncol, np.int32)
            col_h = np.empty(ncol, np.int32)
            col_k = np.empty(ncol, np.int32)
            col_l0 = np.empty(ncol, np.int32)
            col_nl = np.empty(ncol, np.int32)
            col_out = np.empty(ncol, np.int64)
            col_item_off = np.zeros(ncol + 1, np.int64)
            totals = np.zeros(s1 - s0, np.int64)
        c = 0
        for i in range(s0, s1):
            g11, g22, g33 = recip[i, 0], recip[i, 1], recip[i, 2]
            g12, g13, g23 = recip[i, 3], recip[i, 4], recip[i, 5]
            hmax, kmax, lmax = index_bounds(cell_len[i, 0], cell_len[i, 1], cell_len[i, 2], qmax)
            r0, r1 = laue_off[i], laue_off[i + 1]
            sym = r1 - r0 >= MIN_LAUE_ORDER
            pos = refl_off[i]
            for h in range(0, hmax + 1):
                k0 = 0 if h == 0 else -kmax
                for k in range(k0, kmax + 1):
                    lo, hi, _ = column_run(i, h, k, g11, g22, g33, g12, g13, g23, qmax, sym, kmax, lmax, laue_rot,
                                           r0, r1, tab_off, tab_k, tab_l, table)
                    if lo > hi:
                        continue
                    if pass_ == 1:
                        nl = hi - lo + 1
                        col_struct[c] = i
                        col_h[c] = h
                        col_k[c] = k
                        col_l0[c] = lo
                        col_nl[c] = nl
                        col_out[c] = pos
                        col_item_off[c + 1] = col_item_off[c] + (nl + l_block - 1) // l_block
                        pos += nl
                        totals[i - s0] += nl
                    c += 1
        ncol = c
    return col_struct, col_h, col_k, col_l0, col_nl, col_out, col_item_off, totals


def _simulator() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def _grid(n_work: int, block: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride kernel over ``n_work`` items."""
    if _simulator():
        # The simulator runs each thread as a Python thread: a handful, striding, is fastest.
        return 1, min(block, 32)
    from numba import cuda

    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return max(1, min(-(-n_work // block), sms * 16)), block


def _free_device_bytes() -> float:
    from numba import cuda

    free, _ = cuda.current_context().get_memory_info()
    free = float(free)
    return free if math.isfinite(free) else 4.0 * 2 ** 30  # the simulator reports inf


class _PinnedPool:
    """Grow-only page-locked host buffers, reused across calls.

    Page-locking costs milliseconds per hundred MB, more than a batch's compute, so the
    buffers are kept; results handed back to the caller are always fresh arrays.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        from numba import cuda

        dtype = np.dtype(dtype)
        n = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = cuda.pinned_array(max(n, 1 if buf is None else int(buf.size * 1.5) + 1), dtype=dtype)
            self._bufs[name] = buf
        return buf[:n].reshape(shape)


@functools.lru_cache(maxsize=8)
def _pool(device_id: int) -> _PinnedPool:
    """One pool per device (an lru_cache rather than a module global: see release_pinned)."""
    return _PinnedPool()


def release_pinned() -> None:
    """Free the pinned host buffers kept between calls."""
    _pool.cache_clear()


def _split(counts: np.ndarray, npts: int) -> list[tuple[int, int]]:
    """Contiguous structure ranges, each small enough for the device and the pipeline."""
    m = int(counts.sum())
    budget = MEMORY_FRACTION * _free_device_bytes() / LIVE_BATCHES
    per_struct = np.dtype(PATTERN_DTYPE).itemsize * npts + 64
    cap = max(1, int(budget // BYTES_PER_REFLECTION))
    target = min(cap, max(MIN_BATCH_REFLECTIONS, -(-m // PIPELINE_BATCHES)))
    out = []
    s = 0
    n = len(counts)
    while s < n:
        e = s
        refl = 0
        byt = 0
        while e < n and (e == s or (refl + counts[e] <= target
                                    and byt + counts[e] * BYTES_PER_REFLECTION + per_struct <= budget)):
            refl += int(counts[e])
            byt += int(counts[e]) * BYTES_PER_REFLECTION + per_struct
            e += 1
        if byt > budget:
            raise MemoryError(f"one structure needs {byt / 2**20:.0f} MiB of device memory; "
                              f"{budget / 2**20:.0f} MiB are available per batch")
        out.append((s, e))
        s = e
    return out


def _sort_slots(counts: np.ndarray) -> np.ndarray:
    """Offsets of each structure's sort slot: the next power of two >= its reflection count."""
    size = np.where(counts > 0, 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64), 0)
    size = np.where(size < counts, size * 2, size)  # guard log2 rounding
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(size, out=off[1:])
    return off


def run_packed(p, counts, inst, timings: dict, texture: tuple | None = None) -> tuple:
    """One packed chunk on the GPU; returns what ``xtalhpc.simulate._run_cpu`` returns.

    Runs on numba's current device (a multi-GPU rank selects its own with
    ``cuda.select_device`` first). Calls from several threads at once on one device share the
    pinned buffers and must be serialised by the caller.

    Parameters
    ----------
    p : xtalhpc.simulate.PackedBatch
    counts : ndarray of int64
        Reflections per structure that the CPU path computes (``cpu.count_reflections``).
    inst : xtalhpc.instruments.Instrument
    timings : dict
        Accumulates seconds: ``structure_factors``, ``families`` and ``profiles`` (device
        kernel time, from CUDA events), ``cuda_wall`` (the whole call) and ``cuda_batches``.
    texture : (axis (n, 3), r (n,)) or None
        Preferred orientation per structure (``xtalhpc.texture``), applied to |F|^2 before
        the families as the CPU path does (``texture_kernel``).
    """
    from numba import cuda

    from xtalhpc.simulate import ABSENT_TOL, D_TOL, F2_TOL, MIN_FWHM_STEPS, qmax_of

    from .cuda import (L_BLOCK, family_compact_kernel, family_offsets_kernel, family_scan_kernel,
                       family_sort_kernel, render_kernel, structure_factor_absorbing_kernel, structure_factor_kernel,
                       texture_kernel, zero_kernel)
    from .physics import IMAG

    t_start = time.perf_counter()
    counts = np.asarray(counts, dtype=np.int64)
    n = p.recip.shape[0]
    npts = inst.n_points
    qmax = qmax_of(inst)
    refl_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=refl_off[1:])
    m = int(refl_off[-1])

    recip = np.ascontiguousarray(p.recip, dtype=np.float64)
    cell_len = np.ascontiguousarray(p.cell_len, dtype=np.float64)
    frac = np.ascontiguousarray(p.frac, dtype=np.float64)
    laue_off = np.ascontiguousarray(p.laue_off, dtype=np.int64)
    laue_rot = np.ascontiguousarray(p.laue_rot, dtype=np.int64).reshape(-1, 3, 3)
    # the Laue groups' canonical-column tables (simulate.column_tables), if attached; else the
    # enumeration searches each column (tab_k = -1)
    if getattr(p, "tab_off", None) is not None:
        tabs = (p.tab_off, p.tab_k, p.tab_l, p.table)
    else:
        tabs = (np.zeros(n, np.int64), np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.zeros((1, 3), np.int64))
    z = 2.0 * math.pi * frac[:, 2]
    # Results: fresh arrays in the CPU path's layout (families at refl_off[i]:+fam_count[i]).
    fam_hkl = np.empty((m, 3), dtype=np.int32)
    fam_q = np.empty(m)
    fam_f2 = np.empty(m)
    fam_mult = np.empty(m, dtype=np.int32)
    fam_count = np.zeros(n, dtype=np.int64)
    fam_tt = np.empty(m)
    fam_int = np.empty(m)
    patterns = np.zeros((n, npts), dtype=PATTERN_DTYPE)
    if m == 0:
        timings["cuda_wall"] = timings.get("cuda_wall", 0.0) + time.perf_counter() - t_start
        return refl_off, fam_count, fam_hkl, fam_q, fam_f2, fam_mult, fam_tt, fam_int, patterns

    dev_id = 0 if _simulator() else cuda.get_current_device().id
    pool = _pool(dev_id)
    # Dense families of the whole chunk (at most one per reflection) and the patterns come
    # down into page-locked buffers; batch b owns rows dense_off..., of them.
    pin_hkl = pool.get("hkl", (m, 3), np.int32)
    pin_q = pool.get("q", (m,), np.float64)
    pin_f2 = pool.get("f2", (m,), np.float64)
    pin_mult = pool.get("mult", (m,), np.int32)
    pin_tt = pool.get("fam_tt", (m,), np.float64)
    pin_int = pool.get("fam_int", (m,), np.float64)
    pin_pat = pool.get("pattern", (n, npts), PATTERN_DTYPE)
    pin_doff = pool.get("dense_off", (n + len(counts) + 2,), np.int64)
    streams = (cuda.stream(), cuda.stream())

    # Structure-level inputs: small (atoms and types), uploaded once per chunk.
    st = streams[0]
    d_recip = cuda.to_device(recip, stream=st)
    d_type_off = cuda.to_device(np.ascontiguousarray(p.type_off, dtype=np.int64), stream=st)
    d_type_atom_off = cuda.to_device(np.ascontiguousarray(p.type_atom_off, dtype=np.int64), stream=st)
    d_type_coef = cuda.to_device(np.ascontiguousarray(p.type_coef, dtype=np.float64), stream=st)
    # complex lengths (absorbing nuclides) anywhere in the chunk: the kernel that sums F'' too
    sf_kernel = (structure_factor_absorbing_kernel if np.any(p.type_coef[:, IMAG] != 0.0)
                 else structure_factor_kernel)
    d_type_b = cuda.to_device(np.ascontiguousarray(p.type_b, dtype=np.float64), stream=st)
    d_frac = cuda.to_device(frac, stream=st)
    d_occ = cuda.to_device(np.ascontiguousarray(p.occ, dtype=np.float64), stream=st)
    d_step_c = cuda.to_device(np.cos(z), stream=st)
    d_step_s = cuda.to_device(np.sin(z), stream=st)
    d_laue_off = cuda.to_device(laue_off, stream=st)
    d_laue_rot = cuda.to_device(laue_rot if len(laue_rot) else np.zeros((1, 3, 3), np.int64), stream=st)
    d_wl = cuda.to_device(np.asarray(inst.wavelengths, dtype=np.float64), stream=st)
    d_ww = cuda.to_device(np.asarray(inst.wavelength_weights, dtype=np.float64), stream=st)
    if texture is not None:
        d_tex_axis = cuda.to_device(np.ascontiguousarray(texture[0], dtype=np.float64), stream=st)
        d_tex_r = cuda.to_device(np.ascontiguousarray(texture[1], dtype=np.float64), stream=st)
    st.synchronize()  # the other stream reads these too
    # Scalars as float64 / bool, the types of the compiled (and PTX-tested) signature.
    prof = tuple(float(v) for v in (inst.two_theta_min, inst.two_theta_step, inst.U, inst.V, inst.W, inst.X, inst.Y,
                                    inst.zero, inst.profile_cutoff, MIN_FWHM_STEPS * inst.two_theta_step))
    xray = bool(inst.radiation == "xray")

    batches = _split(counts, npts)
    kernel_events: list[tuple[str, object, object]] = []

    def timed(key, stream, launch):
        e0, e1 = cuda.event(), cuda.event()
        e0.record(stream)
        launch()
        e1.record(stream)
        kernel_events.append((key, e0, e1))

    def enqueue_front(b: int) -> dict:
        """|F|^2, sort, families and their dense offsets of batch b; the offsets come down."""
        s0, s1 = batches[b]
        r0, r1 = int(refl_off[s0]), int(refl_off[s1])
        nb = s1 - s0
        stream = streams[b % 2]
        (c_struct, c_h, c_k, c_l0, c_nl, c_out, c_items,
         totals) = enumerate_columns(recip, cell_len, qmax, laue_off, laue_rot, *tabs, refl_off, s0, s1, L_BLOCK)
        if not np.array_equal(totals, counts[s0:s1]):
            bad = int(np.flatnonzero(totals != counts[s0:s1])[0])
            raise RuntimeError(f"column enumeration found {int(totals[bad])} reflections for structure "
                               f"{s0 + bad}, the CPU count {int(counts[s0 + bad])}")
        c_out -= r0
        nref = r1 - r0
        loc_off = refl_off[s0:s1 + 1] - r0
        key_off = _sort_slots(counts[s0:s1])
        d_cols = [cuda.to_device(a, stream=stream) for a in (c_struct, c_h, c_k, c_l0, c_nl, c_out, c_items)]
        d_loc_off = cuda.to_device(loc_off, stream=stream)
        d_key_off = cuda.to_device(key_off, stream=stream)
        d_hkl = cuda.device_array((nref, 3), dtype=np.int32, stream=stream)
        d_q = cuda.device_array(nref, dtype=np.float64, stream=stream)
        d_f2 = cuda.device_array(nref, dtype=np.float64, stream=stream)
        d_mult = cuda.device_array(nref, dtype=np.int32, stream=stream)
        nslot = int(key_off[-1])
        d_sq = cuda.device_array(nslot, dtype=np.float64, stream=stream)
        d_si = cuda.device_array(nslot, dtype=np.int32, stream=stream)
        d_used = cuda.device_array(nref, dtype=np.int8, stream=stream)
        f_hkl = cuda.device_array((nref, 3), dtype=np.int32, stream=stream)
        f_q = cuda.device_array(nref, dtype=np.float64, stream=stream)
        f_f2 = cuda.device_array(nref, dtype=np.float64, stream=stream)
        f_mult = cuda.device_array(nref, dtype=np.int32, stream=stream)
        f_count = cuda.device_array(nb, dtype=np.int64, stream=stream)
        d_doff = cuda.device_array(nb + 1, dtype=np.int64, stream=stream)
        n_items = int(c_items[-1])
        if n_items:
            blocks, threads = _grid(n_items, SF_BLOCK)
            timed("structure_factors", stream, lambda: sf_kernel[blocks, threads, stream](
                d_recip, *d_cols, d_type_off, d_type_atom_off, d_type_coef, d_type_b, d_frac, d_occ, d_step_c,
                d_step_s, d_laue_off, d_laue_rot, d_hkl, d_q, d_f2, d_mult))
            if texture is not None:  # |F|^2 times the orbit-averaged March-Dollase factor, before the families
                timed("structure_factors", stream, lambda: texture_kernel[nb, TEXTURE_BLOCK, stream](
                    d_loc_off, s0, d_recip, d_laue_off, d_laue_rot, d_tex_axis, d_tex_r, d_hkl, d_f2))
        # The kernels index structures from 0: views of the chunk-wide structure arrays would
        # need an offset, so the batch's structures come with their own offsets (loc_off).
        sb, st_ = _grid(nb * SORT_BLOCK, SORT_BLOCK)
        scb, sct = _grid(nb, SCAN_BLOCK)

        def families():
            family_sort_kernel[min(nb, sb), st_, stream](d_loc_off, d_key_off, d_q, d_sq, d_si)
            family_scan_kernel[scb, sct, stream](d_loc_off, d_key_off, d_hkl, d_q, d_f2, d_mult, d_si, d_used,
                                                 float(D_TOL), float(F2_TOL), float(ABSENT_TOL), f_hkl, f_q, f_f2,
                                                 f_mult, f_count)
            family_offsets_kernel[1, 1, stream](f_count, d_doff)
        timed("families", stream, families)
        d_doff.copy_to_host(pin_doff[s0 + b:s1 + b + 1], stream=stream)
        ev = cuda.event()
        ev.record(stream)
        return {"b": b, "s": (s0, s1), "r": (r0, r1), "stream": stream, "event": ev,
                "keep": (d_cols, d_hkl, d_q, d_f2, d_mult, d_sq, d_si, d_used, d_key_off),
                "fam": (d_loc_off, f_count, d_doff, f_hkl, f_q, f_f2, f_mult)}

    def enqueue_back(st: dict) -> dict:
        """Dense families, profiles, and one copy down of the batch's results."""
        b = st["b"]
        s0, s1 = st["s"]
        r0, r1 = st["r"]
        stream = st["stream"]
        st["event"].synchronize()
        doff = pin_doff[s0 + b:s1 + b + 1].copy()
        nd = int(doff[-1])
        d_loc_off, f_count, d_doff, f_hkl, f_q, f_f2, f_mult = st.pop("fam")
        st.pop("keep")
        # Dense rows of this batch start at r0 in the chunk-wide pinned buffers (nd <= r1 - r0).
        d_pat = cuda.device_array((s1 - s0, npts), dtype=PATTERN_DTYPE, stream=stream)
        blocks, threads = _grid((s1 - s0) * npts, 256)
        zero_kernel[blocks, threads, stream](d_pat)
        keep = [d_pat, d_loc_off, f_count, d_doff, f_hkl, f_q, f_f2, f_mult]
        if nd:
            g_hkl = cuda.device_array((nd, 3), dtype=np.int32, stream=stream)
            g_q = cuda.device_array(nd, dtype=np.float64, stream=stream)
            g_f2 = cuda.device_array(nd, dtype=np.float64, stream=stream)
            g_mult = cuda.device_array(nd, dtype=np.int32, stream=stream)
            g_tt = cuda.device_array(nd, dtype=np.float64, stream=stream)
            g_int = cuda.device_array(nd, dtype=np.float64, stream=stream)
            cb, ct = _grid(r1 - r0, RENDER_BLOCK)
            family_compact_kernel[cb, ct, stream](d_loc_off, f_count, d_doff, f_hkl, f_q, f_f2, f_mult, g_hkl, g_q,
                                                  g_f2, g_mult)
            rb, rt = _grid(nd, RENDER_BLOCK)
            timed("profiles", stream, lambda: render_kernel[rb, rt, stream](
                d_doff, g_q, g_f2, g_mult, d_wl, d_ww, *prof, xray, d_pat, g_tt, g_int))
            g_hkl.copy_to_host(pin_hkl[r0:r0 + nd], stream=stream)
            g_q.copy_to_host(pin_q[r0:r0 + nd], stream=stream)
            g_f2.copy_to_host(pin_f2[r0:r0 + nd], stream=stream)
            g_mult.copy_to_host(pin_mult[r0:r0 + nd], stream=stream)
            g_tt.copy_to_host(pin_tt[r0:r0 + nd], stream=stream)
            g_int.copy_to_host(pin_int[r0:r0 + nd], stream=stream)
            keep += [g_hkl, g_q, g_f2, g_mult, g_tt, g_int]
        d_pat.copy_to_host(pin_pat[s0:s1], stream=stream)
        ev = cuda.event()
        ev.record(stream)
        st.update(event=ev, keep=keep, doff=doff)
        return st

    def finish(st: dict) -> None:
        """Wait for batch b's copy and place its results in the CPU path's layout."""
        s0, s1 = st["s"]
        r0, _ = st["r"]
        st["event"].synchronize()
        st.pop("keep")
        doff = st["doff"]
        fc = np.diff(doff)
        nd = int(doff[-1])
        fam_count[s0:s1] = fc
        rows = np.repeat(refl_off[s0:s1], fc) + (np.arange(nd) - np.repeat(doff[:-1], fc))
        src = slice(r0, r0 + nd)
        fam_hkl[rows] = pin_hkl[src]
        fam_q[rows] = pin_q[src]
        fam_f2[rows] = pin_f2[src]
        fam_mult[rows] = pin_mult[src]
        fam_tt[rows] = pin_tt[src]
        fam_int[rows] = pin_int[src]
        patterns[s0:s1] = pin_pat[s0:s1]

    # Two streams: while the host waits for batch b's family offsets and queues its profiles,
    # the device already computes |F|^2 and families of batch b + 1.
    front = enqueue_front(0)
    back = None
    for b in range(len(batches)):
        nxt = enqueue_front(b + 1) if b + 1 < len(batches) else None
        cur = enqueue_back(front)
        if back is not None:
            finish(back)
        back, front = cur, nxt
    finish(back)

    for key, e0, e1 in kernel_events:
        try:
            timings[key] = timings.get(key, 0.0) + cuda.event_elapsed_time(e0, e1) / 1e3
        except Exception:  # the simulator's events carry no times
            pass
    timings["cuda_batches"] = timings.get("cuda_batches", 0) + len(batches)
    timings["cuda_wall"] = timings.get("cuda_wall", 0.0) + time.perf_counter() - t_start
    return refl_off, fam_count, fam_hkl, fam_q, fam_f2, fam_mult, fam_tt, fam_int, patterns
