"""CPU backend vs CUDA backend on a fresh random batch (run as a script, not collected by pytest).

``python tests/cuda_compare.py --seed N [--scale small|gpu]``. Under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, which must be set before numba is imported, hence a separate
process) use ``small``: the simulator runs a few thousand threads per second. On a real GPU
``gpu`` uses more and larger structures on the BT-1 grid. Exit status 0 when every check
passes; the report (JSON, last line of stdout) lists the figures either way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

#: Pattern agreement asked for: float32-level, relative to each pattern's maximum.
PATTERN_RTOL = 1e-5
#: Both backends compute |F|^2 in float64; only the order of the sums differs (the GPU
#: restarts the l recurrence every L_BLOCK reflections), so family values agree to ~1e-13.
FAMILY_RTOL = 1e-9


def _expand(frac: np.ndarray, ops) -> np.ndarray:
    """Images of the asymmetric unit under (R, t) operators, wrapped into [0, 1), each image
    of one atom kept once (an atom on a special position has fewer images than operators)."""
    out = []
    for x in frac:
        imgs = np.array([(np.asarray(r, float) @ x + np.asarray(t, float)) % 1.0 for r, t in ops])
        # Coincident images found on rounded values; the kept ones are exact (rounding them
        # would break the symmetry at 1e-9 and split families between the backends).
        key = np.round(imgs, 9) % 1.0
        _, first = np.unique(key, axis=0, return_index=True)
        out.append(imgs[np.sort(first)])
    return out


#: Species of the absorbers case: complex lengths (Gd, Sm, Eu resonant; B, Cd thermal b'') beside real ones,
#: so non-centrosymmetric structures have Bijvoet pairs (|F(h)| != |F(-h)|).
ABSORBING_ELEMS = ("Gd", "Sm", "Eu", "B", "Cd", "O", "Fe")


def random_crystals(rng: np.random.Generator, scale: str, elems=("Fe", "O", "Si", "Mn", "La", "Li", "D", "Ca", "Al",
                                                                 "Ti")):
    """Mixed batch: triclinic (oblique), monoclinic 2_1, hexagonal 3-fold, cubic F with a 3-fold,
    cubic Pm-3m."""
    from xtalhpc.crystal import Crystal

    big = scale == "gpu"
    out = []

    def make(cell, asym, ops, kind, attach=False):
        n0 = asym.shape[0]
        species = list(rng.choice(elems, n0))
        occ = np.where(rng.random(n0) < 0.4, rng.uniform(0.2, 1.0, n0), 1.0)  # partial occupancy
        b = rng.uniform(0.0, 1.5, n0)
        images = _expand(asym, ops)
        k = np.array([len(x) for x in images])
        frac = np.concatenate(images)
        charge = [int(rng.choice([0, 0, 2, -2])) if s in ("O", "Fe", "Mn", "Ca") else 0 for s in species]
        charge = [(-2 if s == "O" and c else abs(c)) for s, c in zip(species, charge)]
        # With ``attach`` the operations go with the crystal, and both backends compute one
        # reflection per Laue orbit; without, every half-sphere reflection.
        sym = np.array([np.concatenate([np.asarray(r, float), np.asarray(t, float)[:, None]], axis=1)
                        for r, t in ops]) if attach else None
        return Crystal(cell=cell, frac=frac, species=tuple(np.repeat(species, k)), occupancy=np.repeat(occ, k),
                       b_iso=np.repeat(b, k), charge=np.repeat(charge, k), name=kind + ("+sym" if attach else ""),
                       source=f"random {kind}", symmetry=sym)

    ident = (np.eye(3), (0, 0, 0))
    n_tri = 3 if big else 2
    for _ in range(n_tri):
        lim = (4.0, 9.0) if big else (2.8, 4.2)
        cell = (*rng.uniform(*lim, 3), *rng.uniform(65, 115, 3))
        out.append(make(cell, rng.random((int(rng.integers(1, 12 if big else 9)), 3)), [ident], "triclinic"))
    two_b = (np.diag([-1.0, 1.0, -1.0]), (0, 0.5, 0))  # 2_1 along b: equal |F|^2 for (h k l), (-h k -l)
    lim = (4.0, 8.0) if big else (3.0, 4.0)
    cell = (*rng.uniform(*lim, 3), 90.0, rng.uniform(95, 118), 90.0)
    out.append(make(cell, rng.random((int(rng.integers(1, 8 if big else 3)), 3)), [ident, two_b], "monoclinic",
                    attach=True))
    r3 = np.array([[0, -1, 0], [1, -1, 0], [0, 0, 1]], float)
    a = rng.uniform(3.0, 6.0 if big else 3.6)
    cell = (a, a, rng.uniform(3.0, 7.0 if big else 4.0), 90.0, 90.0, 120.0)
    out.append(make(cell, rng.random((int(rng.integers(1, 6 if big else 3)), 3)),
                    [ident, (r3, (0, 0, 0)), (r3 @ r3, (0, 0, 0))], "hexagonal"))
    # Cubic F with the cyclic 3-fold: absences (mixed parity) and families of equal d, unequal |F|^2.
    cyc = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)
    fc = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
    ops = [(np.linalg.matrix_power(cyc, p), t) for p in range(3) for t in fc]
    a = rng.uniform(4.0, 8.0 if big else 4.4)
    out.append(make((a, a, a, 90.0, 90.0, 90.0), rng.random((int(rng.integers(1, 4 if big else 4)), 3)), ops,
                    "cubic-F", attach=True))
    # Pm-3m (Laue order 48): one atom at the origin (a special position: 1 image), one at a
    # random general position (48 images); orbits of 6, 8, 12, 24 and 48 reflections.
    import spglib

    d = spglib.get_symmetry_from_database(517)
    ops = list(zip(d["rotations"], d["translations"]))
    a = rng.uniform(3.0, 5.0 if big else 3.4)
    out.append(make((a, a, a, 90.0, 90.0, 90.0), np.vstack([[0.0, 0.0, 0.0], rng.random((1, 3))]), ops,
                    "cubic-Pm-3m", attach=True))
    order = rng.permutation(len(out))  # mixed sizes in mixed order
    return [out[i] for i in order]


def bundled_crystals():
    """The demo structures shipped in xtalhpc/data/structures (real CIFs with their symmetry)."""
    import warnings
    from pathlib import Path

    from xtalhpc.io import read_structures

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in sorted((Path(__file__).resolve().parents[1] / "xtalhpc" / "data" / "structures").glob("*.cif")):
            out += read_structures(f)
    return out


def instruments(scale: str):
    from xtalhpc.instruments import Instrument, get_instrument

    if scale == "gpu":
        bt1 = get_instrument("bt1-cu311")
        return [bt1, Instrument(name="xray-doublet", radiation="xray", wavelengths=(1.5406, 1.5444),
                                wavelength_weights=(1.0, 0.5), two_theta_min=5.0, two_theta_max=150.0,
                                two_theta_step=0.02, U=20.0, V=-5.0, W=4.0, X=2.0, Y=1.0)]
    # Coarse grids (~250 points) keep the simulator fast; narrow peaks still hit the min-FWHM rule.
    return [Instrument(name="sim-neutron", radiation="neutron", wavelengths=(1.5403,), two_theta_min=10.0,
                       two_theta_max=130.0, two_theta_step=0.5, U=239.7, V=-298.2, W=180.8, X=5.0),
            Instrument(name="sim-xray-doublet", radiation="xray", wavelengths=(1.5406, 1.5444),
                       wavelength_weights=(1.0, 0.5), two_theta_min=15.0, two_theta_max=125.0, two_theta_step=0.4,
                       U=2000.0, V=-500.0, W=400.0, X=10.0, Y=3.0, zero=0.05)]


def _by_hkl(res, seg):
    """The family arrays of a BatchResult reordered by (structure, h, k, l)."""
    import dataclasses

    order = np.lexsort((res.peak_hkl[:, 2], res.peak_hkl[:, 1], res.peak_hkl[:, 0], seg))
    return dataclasses.replace(res, **{k: getattr(res, k)[order] for k in (
        "peak_hkl", "peak_d", "peak_two_theta", "peak_multiplicity", "peak_F2", "peak_intensity")})


def compare(cpu, gpu) -> dict:
    """Figures and failures of one CPU/CUDA pair of BatchResults."""
    fails = []
    pmax = cpu.patterns.max(axis=1)
    err = np.abs(cpu.patterns - gpu.patterns).max(axis=1) / pmax
    if not np.all(pmax > 0):
        fails.append("a CPU pattern is all zero: the case tests nothing")
    if not np.all(err <= PATTERN_RTOL):
        fails.append(f"pattern error {err.max():.3g} of the maximum > {PATTERN_RTOL}")
    same = np.array_equal(cpu.peak_offsets, gpu.peak_offsets)
    if not same:
        fails.append(f"family counts differ: {np.diff(cpu.peak_offsets)} vs {np.diff(gpu.peak_offsets)}")
    f2_err = tt_err = int_err = d_err = np.inf
    if same:
        # Families of one d come in the order of an (unstable) sort of nearly equal Q values,
        # which may differ in the last bit between backends: compare them as sets, ordered
        # by (structure, hkl) on both sides, after checking that both run d-descending.
        seg = np.repeat(np.arange(len(cpu)), np.diff(cpu.peak_offsets))
        for res, nm in ((cpu, "cpu"), (gpu, "cuda")):
            dd = np.diff(res.peak_d)
            if np.any((dd > 1e-9 * res.peak_d[1:]) & (seg[1:] == seg[:-1])):
                fails.append(f"{nm} families are not sorted by d descending")
        cpu, gpu = _by_hkl(cpu, seg), _by_hkl(gpu, seg)
        if not np.array_equal(cpu.peak_hkl, gpu.peak_hkl):
            fails.append("family hkl differ")
        if not np.array_equal(cpu.peak_multiplicity, gpu.peak_multiplicity):
            fails.append("family multiplicities differ")
        f2max = np.zeros(len(cpu))
        np.maximum.at(f2max, seg, cpu.peak_F2)
        imax = np.zeros(len(cpu))
        np.maximum.at(imax, seg, cpu.peak_intensity)
        f2_err = float(np.max(np.abs(cpu.peak_F2 - gpu.peak_F2) / f2max[seg], initial=0))
        int_err = float(np.max(np.abs(cpu.peak_intensity - gpu.peak_intensity) / imax[seg], initial=0))
        d_err = float(np.max(np.abs(cpu.peak_d - gpu.peak_d) / cpu.peak_d, initial=0))
        fin = np.isfinite(cpu.peak_two_theta)
        if not np.array_equal(fin, np.isfinite(gpu.peak_two_theta)):
            fails.append("families beyond 2theta = 180 differ")
        tt_err = float(np.max(np.abs(cpu.peak_two_theta[fin] - gpu.peak_two_theta[fin]), initial=0))
        for name, v in (("F2", f2_err), ("intensity", int_err), ("d", d_err)):
            if not v <= FAMILY_RTOL:
                fails.append(f"family {name} relative error {v:.3g} > {FAMILY_RTOL}")
        if not tt_err <= 1e-9:
            fails.append(f"family 2theta differs by {tt_err:.3g} deg")
    return {"pattern_err": float(err.max()), "families": int(cpu.peak_offsets[-1]),
            "max_multiplicity": int(cpu.peak_multiplicity.max(initial=0)), "F2_err": f2_err, "d_err": d_err,
            "two_theta_err": tt_err, "intensity_err": int_err, "fails": fails}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--scale", choices=("small", "gpu"), default="small")
    ap.add_argument("--absorbers-only", action="store_true",
                    help="only the neutron batch of absorbing nuclides (complex lengths; on gpu scale it always runs)")
    ap.add_argument("--texture", action="store_true",
                    help="every case with a preferred orientation on two of three structures (random axis and r)")
    args = ap.parse_args(argv)
    watchdog = float(os.environ.get("XTALHPC_COMPARE_WATCHDOG_S", "0") or 0)
    if watchdog > 0:
        import faulthandler

        faulthandler.dump_traceback_later(watchdog, exit=True)
    from xtalhpc.crystal import laue_rotations
    from xtalhpc import simulate
    from xtalhpc.simulate import simulate_batch
    from xtalhpc_kernels import cuda_launch
    from xtalhpc_kernels.cpu import MIN_LAUE_ORDER

    rng = np.random.default_rng(args.seed)
    report = {"seed": args.seed, "scale": args.scale, "cases": []}
    ok = True
    # Random batches on each instrument, then the bundled real structures (CIF symmetry,
    # up to 192 operators) on the first.
    insts = instruments(args.scale)
    absorbing = [(insts[0], random_crystals(rng, args.scale, ABSORBING_ELEMS))]
    if args.absorbers_only:
        cases = absorbing
    else:
        cases = [(inst, random_crystals(rng, args.scale)) for inst in insts] + [(insts[0], bundled_crystals())]
        if args.scale == "gpu":
            cases += absorbing
    for inst, crystals in cases:
        tex = None
        if args.texture:
            from xtalhpc.texture import Texture

            tex = [Texture((int(rng.integers(-2, 3)), int(rng.integers(-2, 3)), int(rng.integers(1, 3))),
                           float(rng.uniform(0.5, 1.8))) if i % 3 != 2 else None for i in range(len(crystals))]
        cpu = simulate_batch(crystals, inst, device="cpu", texture=tex)
        laue_path = sum(c.symmetry is not None and len(laue_rotations(c.symmetry)) >= MIN_LAUE_ORDER
                        for c in crystals)
        # Default batching (one device batch here), then forced small batches so the two-stream
        # pipeline (families of batch b on the host while batch b + 1 runs) is exercised too.
        runs = {"one_batch": simulate_batch(crystals, inst, device="cuda", texture=tex)}
        # simulate_batch's own chunks (several run_packed calls reusing the pinned buffers,
        # which grow between calls) are exercised by a chunk size of about half the batch.
        saved = cuda_launch.MIN_BATCH_REFLECTIONS, cuda_launch.PIPELINE_BATCHES, simulate.CHUNK_REFLECTIONS
        cuda_launch.MIN_BATCH_REFLECTIONS, cuda_launch.PIPELINE_BATCHES = 1, len(crystals) - 1
        simulate.CHUNK_REFLECTIONS = max(1, int(cpu.peak_multiplicity.size))
        try:
            runs["pipelined"] = simulate_batch(crystals, inst, device="cuda", texture=tex)
        finally:
            cuda_launch.MIN_BATCH_REFLECTIONS, cuda_launch.PIPELINE_BATCHES, simulate.CHUNK_REFLECTIONS = saved
        for name, gpu in runs.items():
            rep = compare(cpu, gpu)
            rep.update(instrument=inst.name, run=name, device=gpu.device, laue_path=laue_path,
                       batches=int(gpu.timings.get("cuda_batches", 0)),
                       atoms=[c.n_atoms for c in crystals], kinds=[c.name for c in crystals])
            if gpu.device != "cuda":
                rep["fails"].append(f"ran on {gpu.device}, not cuda")
            if name == "pipelined" and rep["batches"] < 2:
                rep["fails"].append("the pipelined run used one batch")
            ok &= not rep["fails"]
            report["cases"].append(rep)
    from numba import config

    if not config.ENABLE_CUDASIM:
        # The launcher must call each kernel with the signature the PTX test compiles.
        from xtalhpc_kernels import cuda as ck

        for name, (_, sig) in ck.SIGNATURES.items():
            kern = getattr(ck, f"{name}_kernel")
            used = [tuple(k) for k in kern.overloads]
            if any(u != tuple(sig) for u in used):
                ok = False
                report.setdefault("signature_mismatch", {})[name] = [str(u) for u in used]
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
