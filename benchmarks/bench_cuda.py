#!/usr/bin/env python
"""CUDA backend throughput (patterns/s) beside the throughput model's floor (docs/gpu.md).

Structures: spglib's test set (../shared/data/structures/spglib, 222 space groups; the median
structure has ~35 atoms, ~2,500 half-sphere reflections on the BT-1 grid), else the bundled
CIFs (xtalhpc/data/structures). The batch is those structures repeated to ``--patterns``
patterns, on the NIST BT-1 Cu(311) grid (3296 points).

Prints, per pattern (median structure and batch mean): reflections, (h, k) columns, work
items, atoms, families, rendered peaks and window points; the FP64 instructions and bytes
that follow; and the floor each resource sets on an H100 SXM (FP64 issue rate, HBM, PCIe)
and on this host (the family grouping, measured here per core). With a GPU it then runs
``simulate_batch(device="cuda")`` and prints the measured patterns/s beside the floors, and
the same batch on the CPU backend (all host cores) for reference. Without a GPU it says so
and exits 0.

Usage: python benchmarks/bench_cuda.py [--patterns 20000] [--shared ../shared/data] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# ---- H100 SXM5 80 GB (NVIDIA datasheet; 132 SMs at 1.98 GHz boost) -----------------------
#: FP64 lane-instructions per second (64 FP64 lanes per SM; 33.5 TFLOPS counts an FMA as 2).
H100_FP64_INSTR = 132 * 64 * 1.98e9
#: FP32 lane-instructions per second (128 lanes per SM; 67 TFLOPS with FMA as 2).
H100_FP32_INSTR = 132 * 128 * 1.98e9
#: SFU (MUFU) operations per second: 16 per SM per clock; an FP32 __sinf + __cosf is 2.
H100_SFU = 132 * 16 * 1.98e9
H100_HBM = 3.35e12  #: bytes/s, HBM3
#: FP64 atomicAdd into L2-resident pattern rows, per second. NOT a datasheet figure: an
#: estimate of one 32-byte L2 sector operation per atomic at ~5 TB/s of L2 bandwidth. The
#: GPU run measures what it really is (the profiles kernel time).
H100_L2_ATOMICS = 1.5e11
#: L2 bandwidth, bytes/s (not a datasheet figure either; microbenchmarks report ~5-7 TB/s).
H100_L2_BW = 5e12
#: Host <-> device, PCIe Gen5 x16, pinned memory, per direction (64 GB/s raw; ~50 measured
#: on typical hosts; a Gen4 host halves it).
PCIE = 50e9

# ---- Instruction counts per unit of work (sm_90 PTX of kernels/cuda.py, float64) ---------
#: |F|^2 atom loop body per work item and atom: sin + cos of the start phase (one reduction,
#: two polynomials, ~60 FP64 ops) + L_BLOCK steps of the recurrence (6 each) + the phase.
SF_PER_ITEM_ATOM = 110
#: Per work item, type and l: inv_d2 (~10), exp for Debye-Waller (~20 incl. range
#: reduction), the accumulate (4); X-ray adds up to five more exps in scattering_amplitude.
#: (The canonical-member test of symmetric structures is integer work, ~10 per Laue rotation.)
SF_PER_REFL_TYPE_NEUTRON = 34
SF_PER_REFL_TYPE_XRAY = 34 + 5 * 22
#: Per on-grid profile point (one pass; the window's area is analytic): Lorentzian with one
#: FP64 division (~14 with its Newton steps) + ~6; points within 2.5 FWHM add an exp (~22).
#: Each point is one FP64 atomic add into the pattern row (L2).
RENDER_PER_POINT = 20
RENDER_PER_GAUSS_POINT = 22
#: Family step per reflection: the bitonic sort does log2(P)(log2(P)+1)/4 compare-exchanges
#: per slot (P = next power of two), each reading and maybe writing 2 x 12 bytes in L2;
#: the serial scan reads Q, |F|^2, hkl, multiplicity and the sorted index (~40 bytes) and
#: spends ~20 instructions per reflection, on one thread per structure.
SORT_BYTES_PER_EXCHANGE = 48
#: Bytes copied up per (h, k) column (7 fields) and per atom (x, y, z, occ, cos/sin 2 pi z);
#: copied down per family (hkl int32 x3, Q, |F|^2, multiplicity, 2theta, intensity), per
#: structure (family offset) and per pattern point (float32).
B_COL_UP = 28
B_ATOM_UP = 48
B_FAM_DOWN = 48
B_STRUCT_DOWN = 8
B_POINT_DOWN = 4  # float32 rows (cpu.PATTERN_DTYPE)


def load_crystals(shared: Path, limit: int):
    from xtalhpc.io import iter_structure_files, read_structures

    src = shared / "structures" / "spglib"
    files = list(iter_structure_files(src)) if src.is_dir() else []
    label = f"spglib test set ({src})"
    if not files:
        src = REPO / "xtalhpc" / "data" / "structures"
        files = list(iter_structure_files(src))
        label = f"bundled CIFs ({src}); ../shared/data absent"
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                out += read_structures(f)
            except Exception:  # a broken test file is skipped, as generate would
                continue
    return out[:limit] if limit else out, label


def _packed(crystals, inst):
    from xtalhpc.simulate import column_tables, pack, qmax_of
    from xtalhpc_kernels import cpu

    p, errors = pack(crystals, inst.radiation)
    if errors:
        raise SystemExit(f"{len(errors)} structures could not be packed: {next(iter(errors.values()))}")
    counts = np.zeros(p.recip.shape[0], np.int64)
    column_tables(p, qmax_of(inst))
    cpu.count_reflections(p.recip, p.cell_len, qmax_of(inst), p.laue_off, p.laue_rot, p.tab_off, p.tab_k, p.tab_l,
                          p.table, counts)
    refl_off = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=refl_off[1:])
    return p, counts, refl_off


def per_structure_work(crystals, inst):
    """Work counts per structure, from the same enumeration and families the kernels use."""
    from xtalhpc.simulate import MIN_FWHM_STEPS, qmax_of, simulate_batch
    from xtalhpc_kernels.cuda import L_BLOCK
    from xtalhpc_kernels.cuda_launch import enumerate_columns
    from xtalhpc_kernels.physics import GAUSS_HALF_WIDTH, bragg_theta, peak_fwhm

    res = simulate_batch(crystals, inst, device="cpu", on_error="collect")
    keep = np.flatnonzero(res.ok)
    crystals = [crystals[i] for i in keep]
    res = simulate_batch(crystals, inst, device="cpu")
    p, counts, refl_off = _packed(crystals, inst)
    n = p.recip.shape[0]
    cs, _, _, _, _, _, items_off, _ = enumerate_columns(p.recip, p.cell_len, qmax_of(inst), p.laue_off, p.laue_rot,
                                                        p.tab_off, p.tab_k, p.tab_l, p.table,
                                                        refl_off, 0, n, L_BLOCK)
    ncol = np.bincount(cs, minlength=n)
    items = np.bincount(cs, weights=np.diff(items_off), minlength=n)
    step, npts = inst.two_theta_step, inst.n_points
    min_fwhm = MIN_FWHM_STEPS * step
    peaks = np.zeros(n)
    pts = np.zeros(n)
    gauss = np.zeros(n)
    for i in range(n):
        s, e = res.peak_offsets[i], res.peak_offsets[i + 1]
        for qg in np.unique(1.0 / res.peak_d[s:e] ** 2):
            for wl in inst.wavelengths:
                th = bragg_theta(wl, qg)
                if th <= 0:
                    continue
                fwhm, _ = peak_fwhm(th, inst.U, inst.V, inst.W, inst.X, inst.Y, min_fwhm)
                tt = 2 * math.degrees(th) + inst.zero
                i0 = math.ceil((tt - inst.profile_cutoff * fwhm - inst.two_theta_min) / step)
                i1 = math.floor((tt + inst.profile_cutoff * fwhm - inst.two_theta_min) / step)
                lo, hi = max(i0, 0), min(i1, npts - 1)
                if hi < lo:
                    continue
                peaks[i] += 1
                pts[i] += hi - lo + 1
                ic = round((tt - inst.two_theta_min) / step)
                gw = int(GAUSS_HALF_WIDTH * fwhm / step) + 1
                gauss[i] += max(0, min(hi, ic + gw) - max(lo, ic - gw) + 1)
    ntypes = np.diff(p.type_off)
    natoms = p.type_atom_off[p.type_off[1:]] - p.type_atom_off[p.type_off[:-1]]
    laue = np.diff(p.laue_off)
    return {"atoms": natoms.astype(float), "types": ntypes.astype(float), "laue_order": laue.astype(float),
            "reflections": counts.astype(float), "columns": ncol.astype(float), "items": items,
            "families": np.diff(res.peak_offsets).astype(float), "peaks": peaks, "profile_points": pts,
            "gauss_points": gauss}, crystals


def model(w: dict, inst) -> dict:
    """FP64 instructions and bytes per pattern, and the floor (s/pattern) each resource sets."""
    from xtalhpc_kernels.cuda import L_BLOCK

    per_type = SF_PER_REFL_TYPE_XRAY if inst.radiation == "xray" else SF_PER_REFL_TYPE_NEUTRON
    sf = w["items"] * w["atoms"] * SF_PER_ITEM_ATOM + w["items"] * L_BLOCK * w["types"] * per_type
    render = w["profile_points"] * RENDER_PER_POINT + w["gauss_points"] * RENDER_PER_GAUSS_POINT
    slots = 2.0 ** np.ceil(np.log2(np.maximum(w["reflections"], 1)))
    lg = np.log2(slots)
    sort_bytes = slots * lg * (lg + 1) / 4 * SORT_BYTES_PER_EXCHANGE
    up = w["columns"] * B_COL_UP + w["atoms"] * B_ATOM_UP
    down = w["families"] * B_FAM_DOWN + B_STRUCT_DOWN + inst.n_points * B_POINT_DOWN
    # Device memory traffic outside L2 (upper bound: as if nothing stayed in L2): |F|^2 list
    # written and read twice (sort, scan), families written, compacted, read by the render and
    # the copy, pattern rows zeroed and copied. The sort's exchanges and the profile atomics
    # work on L2-resident data (a batch's slots and rows fit in 50 MB) and are counted apart.
    hbm = 3 * w["reflections"] * 32 + 4 * w["families"] * B_FAM_DOWN + 2 * inst.n_points * B_POINT_DOWN
    return {"sf_fp64_instr": sf, "render_fp64_instr": render, "sort_l2_bytes": sort_bytes,
            "pcie_up_bytes": up, "pcie_down_bytes": down, "hbm_bytes": hbm, "l2_atomics": w["profile_points"],
            "sincos_per_pattern": w["items"] * w["atoms"],
            "floor_fp64_s": (sf + render) / H100_FP64_INSTR, "floor_hbm_s": hbm / H100_HBM,
            "floor_l2_s": w["profile_points"] / H100_L2_ATOMICS + sort_bytes / H100_L2_BW,
            "floor_pcie_s": np.maximum(up, down) / PCIE}


def host_seconds(crystals, inst, repeat: int = 3) -> dict:
    """Seconds per pattern, on ONE host core, of the host work around the kernels: the column
    enumeration of the CUDA path, and, for comparison, the CPU path's family grouping
    (which the CUDA path runs on the device instead)."""
    from numba import config, set_num_threads

    from xtalhpc.simulate import ABSENT_TOL, D_TOL, F2_TOL, pair_atoms, qmax_of
    from xtalhpc_kernels import cpu
    from xtalhpc_kernels.cuda import L_BLOCK
    from xtalhpc_kernels.cuda_launch import enumerate_columns

    p, counts, refl_off = _packed(crystals, inst)
    n, m = len(counts), int(refl_off[-1])
    qmax = qmax_of(inst)
    hkl, q, f2, mult = np.empty((m, 3), np.int32), np.empty(m), np.empty(m), np.empty(m, np.int32)
    pair_atoms(p)  # the CPU path's atoms: one per inversion pair in centrosymmetric structures
    cpu.structure_factors(p.recip, p.cell_len, qmax, refl_off, p.type_off, p.sf_type_atom_off, p.type_coef,
                          p.type_b, p.sf_frac, p.sf_occ, p.sf_centro, p.laue_off, p.laue_rot, p.tab_off, p.tab_k,
                          p.tab_l, p.table, p.orbit, hkl, q, f2, mult)
    outs = (np.empty((m, 3), np.int32), np.empty(m), np.empty(m), np.empty(m, np.int32), np.zeros(n, np.int64))
    set_num_threads(1)
    best_f = best_c = np.inf
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            cpu.reflection_families(refl_off, hkl, q, f2, mult, D_TOL, F2_TOL, ABSENT_TOL, *outs)
            t1 = time.perf_counter()
            enumerate_columns(p.recip, p.cell_len, qmax, p.laue_off, p.laue_rot, p.tab_off, p.tab_k, p.tab_l, p.table,
                              refl_off, 0, n, L_BLOCK)
            t2 = time.perf_counter()
            best_f, best_c = min(best_f, t1 - t0), min(best_c, t2 - t1)
    finally:
        set_num_threads(config.NUMBA_NUM_THREADS)
    return {"columns": best_c / n, "cpu_families": best_f / n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patterns", type=int, default=20000, help="patterns per timed GPU run (default 20000)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("XTALHPC_SHARED_DATA",
                                                                       REPO.parent / "shared" / "data")))
    ap.add_argument("--limit", type=int, default=0, help="use the first N structures only")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    ap.add_argument("--simulator", action="store_true",
                    help="also run the GPU part under NUMBA_ENABLE_CUDASIM=1 (checks this script; its rates "
                         "mean nothing); use with a small --limit and --patterns")
    args = ap.parse_args(argv)

    from xtalhpc.backend import cuda_available
    from xtalhpc.instruments import get_instrument
    from xtalhpc.simulate import simulate_batch

    inst = get_instrument("bt1-cu311")
    crystals, label = load_crystals(args.shared, args.limit)
    print(f"structures: {len(crystals)} from {label}; instrument {inst.name} ({inst.n_points} points)")
    w, crystals = per_structure_work(crystals, inst)
    mod = model(w, inst)
    med = int(np.argsort(w["reflections"])[len(crystals) // 2])
    host = host_seconds(crystals, inst)
    ncores = os.cpu_count() or 1
    out = {"structures": label, "n_structures": len(crystals), "instrument": inst.name,
           "median_structure": {k: float(v[med]) for k, v in {**w, **mod}.items()},
           "mean": {k: float(np.mean(v)) for k, v in {**w, **mod}.items()},
           "host_s_per_pattern_1core": host, "host_cores": ncores}
    print("\nper pattern                    median structure   batch mean")
    for k in ("atoms", "types", "laue_order", "reflections", "columns", "items", "families", "peaks",
              "profile_points", "gauss_points", "sincos_per_pattern", "sf_fp64_instr", "render_fp64_instr",
              "sort_l2_bytes", "pcie_up_bytes", "pcie_down_bytes", "hbm_bytes", "l2_atomics"):
        print(f"  {k:28s} {out['median_structure'][k]:16,.0f} {out['mean'][k]:12,.0f}")
    print(f"\nhost, one core, per pattern: column enumeration {host['columns'] * 1e6:.1f} us (CUDA path); "
          f"family grouping {host['cpu_families'] * 1e6:.1f} us (CPU path; on the device in the CUDA path)")
    print("\nfloor on an H100 SXM (patterns/s; batch mean [median structure]):")
    floors = {"FP64 issue (kernels)": 1 / np.mean(mod["floor_fp64_s"]),
              "HBM3": 1 / np.mean(mod["floor_hbm_s"]),
              "L2 (sort exchanges + profile atomics; estimated rates)": 1 / np.mean(mod["floor_l2_s"]),
              "PCIe Gen5 (one direction)": 1 / np.mean(mod["floor_pcie_s"]),
              f"host column enumeration ({ncores} cores here)": ncores / host["columns"]}
    med_floor = {"FP64 issue (kernels)": 1 / mod["floor_fp64_s"][med], "HBM3": 1 / mod["floor_hbm_s"][med],
                 "L2 (sort exchanges + profile atomics; estimated rates)": 1 / mod["floor_l2_s"][med],
                 "PCIe Gen5 (one direction)": 1 / mod["floor_pcie_s"][med]}
    for k, v in floors.items():
        extra = f"  [{med_floor[k]:,.0f}]" if k in med_floor else ""
        print(f"  {k:60s} {v:14,.0f}{extra}")
    bound = min(floors, key=floors.get)
    print(f"  -> bound by {bound}: {floors[bound]:,.0f} patterns/s")
    out["floors_patterns_per_s"] = floors

    simulating = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if not cuda_available() or (simulating and not args.simulator):
        print("\nno CUDA GPU is visible here: nothing measured on a GPU (the model above is all this run gives)")
        out["measured"] = None
    else:
        from xtalhpc.backend import gpu_name

        name = gpu_name()
        reps = max(1, args.patterns // len(crystals))
        batch = crystals * reps
        print(f"\nGPU: {name}; batch of {len(batch):,} patterns ({reps} x {len(crystals)} structures)")
        simulate_batch(crystals[:8], inst, device="cuda")  # compile and warm up
        meas = {}
        for dev_name in ("cuda", "cpu"):
            t0 = time.perf_counter()
            res = simulate_batch(batch if dev_name == "cuda" else batch[:max(len(crystals), len(batch) // 10)],
                                 inst, device=dev_name)
            dt = time.perf_counter() - t0
            meas[dev_name] = {"patterns": len(res), "seconds": dt, "patterns_per_s": len(res) / dt,
                              "timings": {k: float(v) for k, v in res.timings.items()}}
            print(f"  {dev_name:5s} {len(res):8,d} patterns in {dt:8.2f} s: {len(res) / dt:12,.0f} patterns/s  "
                  + " ".join(f"{k}={v:.3f}" for k, v in res.timings.items()))
        meas["gpu"] = name
        out["measured"] = meas
        tc = meas["cuda"]["timings"]
        kern = sum(tc.get(k, 0.0) for k in ("structure_factors", "families", "profiles"))
        device_floor = min(v for k, v in floors.items() if not k.startswith("host"))
        print(f"  end to end: {meas['cuda']['patterns_per_s']:,.0f} patterns/s (floor {floors[bound]:,.0f}, {bound})")
        if kern > 0:
            meas["kernel_patterns_per_s"] = meas["cuda"]["patterns"] / kern
            print(f"  kernels alone (CUDA events, |F|^2 + families + profiles): "
                  f"{meas['kernel_patterns_per_s']:,.0f} patterns/s (device floor {device_floor:,.0f})")
            for k in ("structure_factors", "families", "profiles"):
                print(f"    {k:18s} {tc.get(k, 0.0) / meas['cuda']['patterns'] * 1e6:9.3f} us/pattern")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
