"""The simulator's physics checked against independent codes (issue 2, "How it is checked").

References (DESIGN.md section 3):

* pymatgen ``NDCalculator`` -- integrated intensities and positions, on the NCrystal library
  crystals and on >= 100 CIFs, with identical scattering lengths and B on both sides;
* NCrystal ``Info.hklObjects()`` -- d-spacings, |F|^2 (barn) and multiplicities per family, on
  the NCrystal crystals with alpha = beta = gamma = 90 (NCrystal's oblique cells are wrong);
* cctbx (direct summation) and gemmi ``StructureFactorCalculatorN`` -- |F(hkl)|^2 per hkl on
  oblique and triclinic cells, random (seeded) and real;
* pymatgen ``XRDCalculator`` -- the X-ray mode, whose form-factor table differs from ours
  (Waasmaier-Kirfel); the difference is measured, bounded, pinned on the table alone, and
  documented in docs/physics.md; our table is also checked against gemmi's IT92;
* the simulator itself without operators -- the Laue-orbit (symmetry-unique) path;
* pymatgen's and NCrystal's readings of the same files -- ``xtalhpc.io``'s CIF and .ncmat readers.

Both sides of every comparison are built from one object (an NCrystal ``Info`` or a pymatgen
``Structure``) so they see identical atoms. Measured deviations are printed (``pytest -s``)
and recorded in docs/physics.md.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import reference_helpers as rh
from xtalhpc.crystal import Crystal
from xtalhpc.instruments import get_instrument
from xtalhpc.scattering import neutron_b, neutron_length
from xtalhpc.simulate import simulate

# ---- tolerances -----------------------------------------------------------------------------
#: Normalised integrated intensities, 20 strongest peaks (issue 2). Both codes evaluate the same
#: float64 sums; the only approximation on our side is the family tolerance F2_TOL = 1e-6
#: (reflections of one d whose |F|^2 agree to 1e-6 are one family with the first member's
#: |F|^2), which is what reaches 5.6e-7 on pseudo-symmetric cells (Li2O2_194.cif, coordinates
#: off-symmetry by ~1e-7; 2e-14 with F2_TOL = 1e-12). Everything else agrees to ~1e-13.
REL_INTENSITY_TOL = 1e-6
#: Peak positions (issue 2). Both compute 2theta = 2 asin(lambda / 2d) in float64; measured ~3e-13.
POSITION_TOL_DEG = 1e-6
#: A peak above this fraction of the strongest must exist on both sides (issue 2).
PRESENCE_FLOOR = 1e-3
#: Peaks are matched between the lists when within this distance (degrees); far above the
#: ~1e-13 deg position differences and far below the ~1e-3 deg spacing of distinct peaks.
MATCH_TOL_DEG = 1e-4
#: Number of strongest peaks compared in intensity (issue 2).
TOP_PEAKS = 20
#: |F|^2 per family vs NCrystal (issue 2: 1e-6); NCrystal sums the same float64 terms.
NCRYSTAL_F2_TOL = 1e-6
#: d-spacings vs NCrystal: both compute 1/sqrt(h^T G* h) in float64.
NCRYSTAL_D_TOL = 1e-9
#: |F(hkl)|^2 per hkl vs cctbx / gemmi direct summation (brief: 1e-9). Near-zero |F|^2 (accidental
#: near-absences) are compared absolutely against this fraction of the structure's largest |F|^2,
#: since a relative error of a number that is ~0 by cancellation is meaningless.
F2_PER_HKL_TOL = 1e-9
F2_ABS_FLOOR = 1e-12
#: Completeness vs cctbx: families above this fraction of the max |F|^2 must match in d and
#: multiplicity (ours drops absences below 1e-12 of the max; cctbx lists them as ~0).
COMPLETENESS_FLOOR = 1e-9
#: Grouping of cctbx's reflections into families: the simulator's own F2_TOL (1e-6).
FAMILY_F2_TOL = 1e-6
#: X-ray mode vs pymatgen XRDCalculator. Our f(s) is Waasmaier-Kirfel (5 Gaussians + c); pymatgen
#: uses its own 4-term fit f = Z - 41.78214 s^2 sum a exp(-b s^2). Measured on the NCrystal crystals
#: (lambda 1.540593 A, 2theta 5-120): see docs/physics.md. Bounds, with margin over the measurement:
#: normalised intensity of each of the 20 strongest peaks (absolute, in units of the strongest;
#: measured max 0.024, Sn),
XRAY_NORM_ABS_TOL = 0.03
#: the relative difference of normalised intensities of peaks >= 10% of the strongest (measured
#: max 0.147, Sn, where pymatgen's f deviates 13% from Waasmaier-Kirfel at s = 0.56), and the presence floor (a peak above 2% of the max exists in both lists).
XRAY_REL_STRONG_TOL = 0.2
XRAY_PRESENCE_FLOOR = 0.02
#: Our X-ray form factors (Waasmaier-Kirfel, periodictable) vs gemmi's IT92 table (International
#: Tables Vol. C 6.1.1.4 four-Gaussian fits), |f_ours - f_IT92| per electron of Z over
#: s = 0..1 A^-1, Z = 2..92: measured max 1.2e-3 (Mg, 0.015 e). H is left out: gemmi's IT92
#: hydrogen is the bonded (SDS) curve, ours and pymatgen's the free atom (0.089 e apart).
XRAY_IT92_TOL_PER_Z = 2e-3
#: One-element crystals: after dividing by (f_WK / f_pymatgen)^2 the intensity ratio is constant
#: to float64 rounding (measured ~1e-14): the table is the only difference.
XRAY_TABLE_ONLY_TOL = 1e-9

#: CIF sample: at most this many atoms in the unit cell and this volume (angstrom^3), so the
#: pymatgen side (a Python loop per reflection) keeps the whole module under ~1 minute.
CIF_MAX_ATOMS = 120
CIF_MAX_VOLUME = 2500.0
#: How many CIFs the deterministic stride aims at (>= 100 must compare after pymatgen's failures).
CIF_SAMPLE = 125
CIF_MIN_COMPARED = 100

BT1 = "bt1-cu311"


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bt1():
    return get_instrument(BT1)


@pytest.fixture(scope="module")
def ncrystal_cases(shared_data, bt1):
    pytest.importorskip("NCrystal")
    cases, skipped = rh.load_ncrystal_cases(shared_data / "structures" / "ncrystal" / "data", bt1.d_min * (1 - 1e-6))
    print(f"NCrystal library: {len(cases)} crystals, {len(skipped)} without a unit cell (skipped): {skipped}")
    assert len(cases) >= 100
    return cases


def _structure_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.cif") if p.is_file())


def _gemmi_size(path: Path) -> tuple[int, float]:
    """Atoms in the full unit cell and cell volume from gemmi (fast C++ parse), (0, nan) if unreadable."""
    import gemmi

    try:
        doc = gemmi.cif.read(str(path))
        ss = gemmi.make_small_structure_from_block(doc[0])
        return len(ss.get_all_unit_cell_sites()), float(ss.cell.volume)
    except Exception:  # noqa: BLE001 -- any reader failure just removes the file from the sample
        return 0, float("nan")


def select_cifs(root: Path):
    """A deterministic spread of CIFs under ``root``, loaded by pymatgen.

    Every CIF under ``root`` (sorted by path) is sized with gemmi; those with 1 to
    CIF_MAX_ATOMS atoms and at most CIF_MAX_VOLUME A^3 are candidates, and every k-th
    candidate is taken so about CIF_SAMPLE files span all sources and crystal systems.
    Files pymatgen cannot read, or with a species our table lacks, are counted and skipped.
    Returns (loaded [(path, Structure, {element: length fm})], failed [(path, why)], summary).
    """
    from pymatgen.core import Structure

    files = _structure_files(root)
    cands = []
    for p in files:
        n, v = _gemmi_size(p)
        if 0 < n <= CIF_MAX_ATOMS and np.isfinite(v) and v <= CIF_MAX_VOLUME:
            cands.append(p)
    stride = max(1, len(cands) // CIF_SAMPLE)
    chosen = cands[::stride]
    loaded, failed = [], []
    for p in chosen:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = Structure.from_file(str(p))
            els = sorted({sp.symbol for site in s for sp in site.species})
            lengths = {el: neutron_b(el) for el in els}
        except Exception as exc:  # noqa: BLE001 -- counted and reported
            failed.append((str(p.relative_to(root)), f"{type(exc).__name__}: {str(exc)[:80]}"))
            continue
        loaded.append((p, s, lengths))
    summary = (f"CIFs: {len(files)} under {root}, {len(cands)} within size limits, {len(chosen)} chosen "
               f"(stride {stride}), {len(loaded)} loaded by pymatgen, {len(failed)} skipped")
    return loaded, failed, summary


@pytest.fixture(scope="module")
def cif_sample(shared_data):
    pytest.importorskip("pymatgen")
    loaded, failed, summary = select_cifs(shared_data / "structures")
    print(summary + ":")
    for f, why in failed:
        print(f"  skipped {f}: {why}")
    return loaded, failed


# ---- 1. pymatgen NDCalculator ---------------------------------------------------------------
def _check_vs_pymatgen(name, crystal, structure, lengths, bvals, inst, failures, worst):
    pat = simulate(crystal, inst)
    lo, hi = inst.two_theta_min, inst.two_theta_max
    ref = rh.pymatgen_nd(structure, inst.wavelength, (lo, hi), lengths, bvals)
    cmp = rh.compare_peaks(*rh.our_peaks(pat, lo, hi), *rh.ref_peaks(ref, lo, hi), top=TOP_PEAKS,
                           floor=PRESENCE_FLOOR, match_tol=MATCH_TOL_DEG)
    worst["intensity"] = max(worst["intensity"], (cmp.max_rel_intensity, name))
    worst["position"] = max(worst["position"], (cmp.max_position, name))
    if (cmp.max_rel_intensity > REL_INTENSITY_TOL or cmp.max_position > POSITION_TOL_DEG or cmp.missing
            or cmp.extra):
        failures.append(f"{name}: {cmp.summary()}")
    return cmp


def test_ncrystal_crystals_vs_pymatgen_nd(ncrystal_cases, bt1):
    """All 110 crystalline NCrystal materials (oblique included), NCrystal's lengths and B on both sides."""
    failures: list[str] = []
    worst = {"intensity": (0.0, ""), "position": (0.0, "")}
    for case in ncrystal_cases:
        lengths, bvals = case.element_tables()
        _check_vs_pymatgen(case.name, case.crystal(), case.structure(), lengths, bvals, bt1, failures, worst)
    print(f"vs pymatgen NDCalculator, {len(ncrystal_cases)} NCrystal crystals: max rel intensity "
          f"{worst['intensity'][0]:.2e} ({worst['intensity'][1]}), max position {worst['position'][0]:.2e} deg "
          f"({worst['position'][1]})")
    assert not failures, "\n".join(failures)


def test_cifs_vs_pymatgen_nd(cif_sample, bt1):
    """>= 100 real CIFs (pymatgen reads them; the same Structure feeds both codes).

    Lengths: periodictable's (our table) patched into pymatgen (absorbers' real part on both sides:
    pymatgen has no complex lengths); B: a deterministic value per
    element (0.3-1.5 A^2) passed to both, so Debye-Waller is exercised.
    """
    loaded, failed = cif_sample
    failures: list[str] = []
    worst = {"intensity": (0.0, ""), "position": (0.0, "")}
    n_oblique = {0: 0, 1: 0, 2: 0, 3: 0}
    for path, s, lengths in loaded:
        bvals = rh.element_b_values(lengths)
        # pymatgen has real lengths only: absorbing elements (complex b, docs/physics.md section 6) get
        # the real length patched into pymatgen on our side too; the others come from our tables.
        real_only = {el: (lengths[el] if neutron_length(el, bt1.wavelength).imag != 0 else np.nan) for el in lengths}
        crystal = rh.crystal_from_structure(s, bvals, real_only, source=str(path), name=path.stem)
        n_oblique[int(np.sum(np.abs(np.array(s.lattice.angles) - 90.0) > 1e-6))] += 1
        _check_vs_pymatgen(path.name, crystal, s, lengths, bvals, bt1, failures, worst)
    print(f"vs pymatgen NDCalculator, {len(loaded)} CIFs (cells with 0/1/2/3 angles != 90: "
          f"{[n_oblique[i] for i in range(4)]}), {len(failed)} skipped: max rel intensity "
          f"{worst['intensity'][0]:.2e} ({worst['intensity'][1]}), max position {worst['position'][0]:.2e} deg "
          f"({worst['position'][1]})")
    assert len(loaded) >= CIF_MIN_COMPARED
    # The spread must include monoclinic-like (one oblique angle) and triclinic-like cells.
    assert n_oblique[1] >= 10 and n_oblique[3] >= 5, n_oblique
    assert not failures, "\n".join(failures)


# ---- 1b. xtalhpc.io's CIF reader vs pymatgen's, on the same files --------------------------
#: Files where pymatgen (2026.10) is the one that is wrong, checked by hand: the reader is not
#: compared there. Everything else in the sample must agree.
PYMATGEN_MISREADS = {
    "tests__inputs__2101499-diamond.cif": "pymatgen gives 1 C atom; diamond's conventional cell has 8 (the reader's)",
    "tests__inputs__AMCSD__2023-11-12__14335.cif": "pymatgen reads the H labels as holmium (Ho4); the reader's H12",
}
#: Reader vs pymatgen, normalised intensities of the 20 strongest peaks with identical lengths and
#: B: the readers round special positions differently (pymatgen snaps 0.3333 to 1/3), measured 3e-6.
READER_REL_INTENSITY_TOL = 1e-4
#: Cell parameters: both read the same CIF numbers.
READER_CELL_TOL = 1e-9


def _composition(species, occ) -> dict[str, float]:
    """Occupancy-weighted atoms per element; D counted as H (pymatgen has no deuterium)."""
    out: dict[str, float] = {}
    for sp, o in zip(species, occ):
        el = "H" if sp == "D" else rh.element_of(sp)
        out[el] = out.get(el, 0.0) + float(o)
    return out


def _distinct_sites(frac) -> int:
    f = np.round(np.asarray(frac) % 1.0, 3) % 1.0
    return len({tuple(x) for x in f})


def test_reader_matches_pymatgen_on_cif_sample(cif_sample, bt1):
    """xtalhpc.io.read_blocks vs pymatgen on the same CIFs: cell, composition, sites, and the pattern.

    The block compared is the reader's block with pymatgen's cell (a file may hold several).
    Atoms are compared as occupancy-weighted composition and distinct positions, since pymatgen
    merges two same-species atoms on one position (O 0.333 + O 0.667 -> O 1.0) where the reader
    keeps both (same scattering). Patterns are compared with the same length per element (D as H,
    as pymatgen has it) and the same B, so only the atoms differ.
    """
    io = pytest.importorskip("xtalhpc.io")
    loaded, _ = cif_sample
    failures, skipped, n, worst = [], [], 0, (0.0, "")
    for path, s, lengths in loaded:
        if path.name in PYMATGEN_MISREADS:
            skipped.append(path.name)
            continue
        lat = s.lattice
        cell = np.array([lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma])
        try:
            blocks = io.read_blocks(path)
        except Exception as exc:  # noqa: BLE001 -- reported as a failure
            failures.append(f"{path.name}: reader failed: {exc}")
            continue
        same = [c for c in blocks if isinstance(c, Crystal) and np.allclose(c.cell, cell, rtol=READER_CELL_TOL)]
        if not same:
            failures.append(f"{path.name}: no block with pymatgen's cell {cell.round(4).tolist()}: "
                            f"{[str(c)[:100] if not isinstance(c, Crystal) else c.cell.round(4).tolist() for c in blocks]}")
            continue
        c = same[0]
        n += 1
        pm_species = [sp.symbol for site in s for sp in site.species]
        pm_occ = [o for site in s for o in site.species.values()]
        pm_frac = [site.frac_coords for site in s]
        comp_io, comp_pm = _composition(c.species, c.occupancy), _composition(pm_species, pm_occ)
        dcomp = max(abs(comp_io.get(k, 0.0) - comp_pm.get(k, 0.0)) for k in set(comp_io) | set(comp_pm))
        if dcomp > 1e-3 or _distinct_sites(c.frac) != _distinct_sites(pm_frac):
            failures.append(f"{path.name}: reader {comp_io} on {_distinct_sites(c.frac)} positions, pymatgen "
                            f"{comp_pm} on {_distinct_sites(pm_frac)}")
            continue
        bvals = rh.element_b_values(lengths)
        el_of = ["H" if x == "D" else rh.element_of(x) for x in c.species]
        ours = c.replace(b_iso=np.array([bvals[e] for e in el_of]), charge=np.zeros(c.n_atoms),
                         scattering_length=np.array([lengths[e] for e in el_of]))
        ref = rh.crystal_from_structure(s, bvals, lengths)
        lo, hi = bt1.two_theta_min, bt1.two_theta_max
        cmp = rh.compare_peaks(*rh.our_peaks(simulate(ours, bt1), lo, hi), *rh.our_peaks(simulate(ref, bt1), lo, hi),
                               top=TOP_PEAKS, floor=PRESENCE_FLOOR, match_tol=MATCH_TOL_DEG)
        worst = max(worst, (cmp.max_rel_intensity, path.name))
        if cmp.max_rel_intensity > READER_REL_INTENSITY_TOL or cmp.missing or cmp.extra:
            failures.append(f"{path.name}: patterns of the two readings differ: {cmp.summary()}")
    print(f"xtalhpc.io vs pymatgen on {n} CIFs ({len(skipped)} known pymatgen misreads skipped: {skipped}): "
          f"max rel intensity {worst[0]:.2e} ({worst[1]}), {len(failures)} disagreements")
    assert n >= CIF_MIN_COMPARED - len(PYMATGEN_MISREADS) - 5
    assert not failures, "\n".join(failures)


#: NCrystal .ncmat files: the reader derives B from the Debye temperature / VDOS itself; NCrystal's
#: msd gives B within 2.8e-4 relative (GaSe's Se; mass tables and integration grids differ).
READER_NCMAT_B_TOL = 1e-3
#: Positions (fractional): the reader symmetrises positions written with 4 digits onto the
#: operators (beta-quartz O z = .8333 -> 5/6, 3.3e-5); NCrystal keeps the file's numbers.
READER_NCMAT_POS_TOL = 1e-4


def _positions_by_label(labels, frac) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for lab, x in zip(labels, np.asarray(frac) % 1.0):
        out.setdefault(lab, []).append(np.round(x, 6) % 1.0)
    return {k: np.array(sorted(map(tuple, v))) for k, v in out.items()}


def test_ncmat_reader_matches_ncrystal(ncrystal_cases, shared_data):
    """xtalhpc.io on every crystalline .ncmat vs NCrystal's own Info: cell, atoms per nuclide, positions, B."""
    io = pytest.importorskip("xtalhpc.io")
    directory = shared_data / "structures" / "ncrystal" / "data"
    failures, worst, worst_pos = [], (0.0, ""), (0.0, "")
    for case in ncrystal_cases:
        try:
            c = io.load_structure(directory / f"{case.name}.ncmat")
        except Exception as exc:  # noqa: BLE001 -- reported as a failure
            failures.append(f"{case.name}: reader failed: {exc}")
            continue
        if np.abs(c.cell - case.cell).max() > READER_CELL_TOL * 1e3:
            failures.append(f"{case.name}: cell {c.cell.tolist()} vs NCrystal {case.cell.tolist()}")
            continue
        ours, theirs = _positions_by_label(c.species, c.frac), _positions_by_label(case.labels, case.frac)
        if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
            failures.append(f"{case.name}: atoms {({k: len(v) for k, v in ours.items()})} vs NCrystal "
                            f"{({k: len(v) for k, v in theirs.items()})}")
            continue
        shift = max(float(np.abs((ours[k] - theirs[k] + 0.5) % 1.0 - 0.5).max()) for k in ours)
        worst_pos = max(worst_pos, (shift, case.name))
        if shift > READER_NCMAT_POS_TOL:
            failures.append(f"{case.name}: positions differ by up to {shift:.2g} (fractional)")
            continue
        for lab in theirs:
            b_nc = case.b_iso[case.labels.index(lab)]
            b_io = c.b_iso[list(c.species).index(lab)]
            rel = abs(b_io - b_nc) / b_nc
            worst = max(worst, (rel, f"{case.name} {lab}"))
            if rel > READER_NCMAT_B_TOL:
                failures.append(f"{case.name} {lab}: B {b_io:.6g} vs NCrystal 8 pi^2 msd {b_nc:.6g} A^2")
    print(f"xtalhpc.io vs NCrystal on {len(ncrystal_cases)} .ncmat crystals: max rel B difference {worst[0]:.2e} "
          f"({worst[1]}), max position shift {worst_pos[0]:.2e} ({worst_pos[1]}), {len(failures)} disagreements")
    assert not failures, "\n".join(failures)


# ---- 1c. the symmetry-unique path (Crystal.symmetry) vs the full sum, on the same atoms ------
#: With operators attached, |F|^2 is computed once per Laue orbit; on a Crystal whose cell fits
#: the operators exactly this is the same float64 sum reordered (measured 1e-13).
SYM_REL_TOL = 1e-9
SYM_POSITION_TOL_DEG = 1e-9
#: Presence floor for this comparison: both are our own code, so weak peaks are compared too.
SYM_PRESENCE_FLOOR = 1e-6
#: A cell "fits its operators exactly" when max |R^T G R - G| <= this times max |G|.
EXACT_METRIC = 1e-12


def _metric_misfit(c: Crystal) -> float:
    from xtalhpc.crystal import cell_metric

    g = cell_metric(c.cell)
    rot = np.round(c.symmetry[:, :, :3])
    return float(max(np.abs(r.T @ g @ r - g).max() for r in rot) / np.abs(g).max())


def _symmetrised_sample(cif_sample):
    """(name, Crystal with spglib's operators attached) for every CIF of the sample that has some."""
    from xtalhpc.crystal import find_symmetry

    out = []
    for path, s, lengths in cif_sample[0]:
        c = find_symmetry(rh.crystal_from_structure(s, rh.element_b_values(lengths), None, source=str(path)))
        if c.symmetry is not None and len(c.symmetry) > 1:
            out.append((path.name, c))
    return out


@pytest.fixture(scope="module")
def symmetrised(cif_sample):
    return _symmetrised_sample(cif_sample)


def _sym_vs_full(c: Crystal, inst, tol_deg: float = rh.PYMATGEN_TWO_THETA_TOL):
    lo, hi = inst.two_theta_min, inst.two_theta_max
    a = simulate(c, inst)
    b = simulate(c.replace(symmetry=None), inst)
    return rh.compare_peaks(*rh.our_peaks(a, lo, hi, tol_deg), *rh.our_peaks(b, lo, hi, tol_deg), top=TOP_PEAKS,
                            floor=SYM_PRESENCE_FLOOR, match_tol=MATCH_TOL_DEG)


def test_symmetry_path_equals_full_sum(symmetrised, bt1):
    """spglib's operators attached (find_symmetry): every peak as without them, on cells that fit exactly.

    Together with the full-sum path matching pymatgen above, this checks the Laue-orbit
    machinery (canonical members, orbit multiplicities) against pymatgen by transitivity.
    """
    failures, worst, worst_pos, n = [], 0.0, 0.0, 0
    for name, c in symmetrised:
        if _metric_misfit(c) > EXACT_METRIC:
            continue
        n += 1
        cmp = _sym_vs_full(c, bt1)
        worst = max(worst, cmp.max_rel_all, cmp.max_rel_intensity)
        worst_pos = max(worst_pos, cmp.max_position)
        if (cmp.max_rel_all > SYM_REL_TOL or cmp.max_rel_intensity > SYM_REL_TOL
                or cmp.max_position > SYM_POSITION_TOL_DEG or cmp.missing or cmp.extra):
            failures.append(f"{name} ({len(c.symmetry)} ops): {cmp.summary()}")
    print(f"symmetry-unique path vs full sum, {n} CIFs with operators that fit the cell exactly: "
          f"max rel intensity {worst:.2e}, max position {worst_pos:.2e} deg")
    assert n >= 100
    assert not failures, "\n".join(failures)


def test_symmetrised_cells_fit_their_operators_exactly(symmetrised, bt1):
    """symmetrize() averages the metric as well as the positions (G <- mean of R^T G R), so
    every symmetrised crystal is exactly what the Laue-orbit path assumes, including the
    CIFs whose cell fit their operators only to ~1e-7-1e-4 (ZrO2_137.cif, 4117533.cif,
    JVASP-36885.cif), where keeping the cell once merged peaks up to 2e-3 deg apart; and
    the path agrees with the full sum on all of them."""
    assert symmetrised
    failures = []
    for name, c in symmetrised:
        misfit = _metric_misfit(c)
        if misfit > EXACT_METRIC:
            failures.append(f"{name}: metric misfit {misfit:.1e} after symmetrize")
            continue
        cmp = _sym_vs_full(c, bt1)
        if (cmp.max_rel_intensity > REL_INTENSITY_TOL or cmp.max_position > POSITION_TOL_DEG
                or [m for m in cmp.missing if m[1] > PRESENCE_FLOOR] or [m for m in cmp.extra if m[1] > PRESENCE_FLOOR]):
            failures.append(f"{name}: {cmp.summary()}")
    assert not failures, "\n".join(failures)


# ---- 2. NCrystal hklObjects -----------------------------------------------------------------
@pytest.mark.parametrize("operators", ["none", "spglib"])
def test_ncrystal_hkl_families(ncrystal_cases, bt1, operators):
    """d-spacings, |F|^2 (1 barn = 100 fm^2) and multiplicities per family, alpha = beta = gamma = 90 only.

    ``spglib``: the crystal carries spglib's operators (find_symmetry), so |F|^2 comes from the
    Laue-orbit path and multiplicities from orbit sizes; ``none``: the full half-sphere sum.
    """
    from xtalhpc.crystal import find_symmetry

    failures: list[str] = []
    worst_f2, worst_d, n = 0.0, 0.0, 0
    for case in ncrystal_cases:
        if not case.orthogonal:
            continue  # NCrystal 4.4.6 gets oblique cells wrong (DESIGN.md section 3)
        n += 1
        crystal = case.crystal() if operators == "none" else find_symmetry(case.crystal())
        refl = simulate(crystal, bt1).reflections
        nc = [(h.d, h.f2 * rh.FM2_PER_BARN, h.mult) for h in case.info.hklObjects() if h.d >= bt1.d_min]
        nd, nf, nm = (np.array(x, dtype=float) for x in zip(*nc))
        fmax = max(nf.max(), refl.F2.max())
        ours = rh.group_families(refl.d, refl.F2, refl.multiplicity, PRESENCE_FLOOR * fmax, NCRYSTAL_D_TOL,
                                 NCRYSTAL_F2_TOL)
        theirs = rh.group_families(nd, nf, nm, PRESENCE_FLOOR * fmax, NCRYSTAL_D_TOL, NCRYSTAL_F2_TOL)
        ours = [g for g in ours if g[1]]
        theirs = [g for g in theirs if g[1]]
        if len(ours) != len(theirs):
            failures.append(f"{case.name}: {len(ours)} d-groups above the floor here, {len(theirs)} in NCrystal")
            continue
        for (d1, f1), (d2, f2) in zip(ours, theirs):
            worst_d = max(worst_d, abs(d1 - d2) / d2)
            if abs(d1 - d2) > NCRYSTAL_D_TOL * d2 or len(f1) != len(f2):
                failures.append(f"{case.name}: d {d1:.6f} families {f1} vs NCrystal d {d2:.6f} {f2}")
                break
            bad = False
            for (a, ma), (b, mb) in zip(f1, f2):
                rel = abs(a - b) / b
                worst_f2 = max(worst_f2, rel)
                if rel > NCRYSTAL_F2_TOL or ma != mb:
                    failures.append(f"{case.name}: d {d1:.6f}: |F|^2 {a:.10g} fm^2 x {ma:g} vs NCrystal {b:.10g} x {mb:g}")
                    bad = True
                    break
            if bad:
                break
    print(f"vs NCrystal hklObjects ({operators} operators), {n} orthogonal crystals: max rel |F|^2 {worst_f2:.2e}, max rel d {worst_d:.2e}")
    assert n >= 70
    assert not failures, "\n".join(failures)


# ---- 3. |F(hkl)|^2 per hkl on oblique and triclinic cells: cctbx and gemmi ------------------
def _need_cctbx() -> None:
    # Never import cctbx here: it segfaults once NCrystal or matplotlib is loaded (it runs in a child).
    import importlib.util

    if importlib.util.find_spec("cctbx") is None:
        pytest.skip("cctbx-base is not installed (pip install cctbx-base)")


def _lengths(crystal: Crystal) -> np.ndarray:
    sl = crystal.scattering_length
    return np.array([sl[j] if sl is not None and np.isfinite(sl[j]) else neutron_b(crystal.species[j])
                     for j in range(crystal.n_atoms)])


def _compare_cctbx(crystal: Crystal, inst, ref: dict) -> tuple[float, int, list[str]]:
    """Our reflection families vs cctbx's |F(hkl)|^2 on every hkl to the instrument's d_min.

    Per hkl: each family's |F|^2 against cctbx's value at the family's own hkl (1e-9).
    Completeness: cctbx's reflections (both Friedel mates), grouped by equal d and equal |F|^2
    like our families, must give the same d-groups, |F|^2 and multiplicities above 1e-9 of the max.
    Returns (max relative |F|^2 difference, number of families, problems).
    """
    from xtalhpc.crystal import cell_metric

    refl = simulate(crystal, inst).reflections
    refd = {}
    for k, v in ref.items():
        refd[k] = v
        refd[(-k[0], -k[1], -k[2])] = v
    problems = []
    fmax = max(refl.F2.max(), max(refd.values()))
    worst = 0.0
    for hkl, a in zip(refl.hkl, refl.F2):
        k = tuple(int(x) for x in hkl)
        b = refd.get(k)
        if b is None:
            problems.append(f"hkl {k} not in cctbx's list")
            continue
        err = abs(a - b)
        if err > F2_PER_HKL_TOL * b + F2_ABS_FLOOR * fmax:
            problems.append(f"hkl {k}: |F|^2 {a!r} vs cctbx {b!r}")
        if b > 1e-6 * fmax:
            worst = max(worst, err / b)
    hkls = np.array(list(refd), dtype=float)
    gstar = np.linalg.inv(cell_metric(crystal.cell))
    d = 1.0 / np.sqrt(np.einsum("ni,ij,nj->n", hkls, gstar, hkls))
    floor = COMPLETENESS_FLOOR * fmax
    ours = rh.group_families(refl.d, refl.F2, refl.multiplicity, floor, NCRYSTAL_D_TOL, FAMILY_F2_TOL)
    theirs = rh.group_families(d, np.array(list(refd.values())), np.ones(len(d)), floor, NCRYSTAL_D_TOL,
                               FAMILY_F2_TOL)
    ours = [(round(di, 8), [m for _, m in f]) for di, f in ours if f]
    theirs = [(round(di, 8), [m for _, m in f]) for di, f in theirs if f]
    if ours != theirs:
        diff = [(x, y) for x, y in zip(ours, theirs) if x != y][:3]
        problems.append(f"d-groups/multiplicities differ: {len(ours)} vs cctbx {len(theirs)} groups, e.g. {diff}")
    return worst, len(refl), problems


def _random_oblique_crystal(rng: np.random.Generator, i: int) -> Crystal:
    """A random P1 structure in a random oblique (mostly triclinic) cell with occupancy and B."""
    while True:
        abc = rng.uniform(3.0, 9.0, 3)
        ang = rng.uniform(60.0, 120.0, 3)
        if i % 3 == 0:
            ang[[0, 2]] = 90.0  # monoclinic (beta unique)
        try:
            from xtalhpc.crystal import cell_volume

            if cell_volume(np.r_[abc, ang]) > 0.3 * np.prod(abc):
                break
        except Exception:  # noqa: BLE001
            continue
    n = int(rng.integers(1, 13))
    species = list(rng.choice(["H", "D", "Li", "C", "O", "Si", "Fe", "Ni", "Ti", "V", "Mn", "Ba"], n))
    return Crystal(np.r_[abc, ang], rng.random((n, 3)), species, rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 3.0, n),
                   name=f"random-{i}")


def test_random_oblique_cells_vs_cctbx_and_gemmi(bt1):
    """Seeded random P1 structures in oblique cells: |F(hkl)|^2 per hkl vs cctbx and gemmi."""
    _need_cctbx()
    pytest.importorskip("gemmi")
    seed = int(os.environ.get("XTALHPC_TEST_SEED", "20261125"))
    print(f"XTALHPC_TEST_SEED={seed}")
    rng = np.random.default_rng(seed)
    worst_cctbx, worst_gemmi, nref = 0.0, 0.0, 0
    crystals = [_random_oblique_crystal(rng, i) for i in range(12)]
    refs = rh.cctbx_f2_many(crystals, [_lengths(c) for c in crystals], bt1.d_min)
    for c, ref in zip(crystals, refs):
        worst, n, problems = _compare_cctbx(c, bt1, ref)
        assert not problems, f"{c.name} cell {c.cell.round(3).tolist()}: " + "; ".join(problems[:5])
        worst_cctbx = max(worst_cctbx, worst)
        nref += n
        # gemmi: its own Neutron92 lengths given to the simulator too; a subset of hkl (Python call per hkl).
        cg = c.replace(scattering_length=rh.gemmi_lengths(c))
        refl = simulate(cg, bt1).reflections
        hkl, f2 = refl.hkl, refl.F2
        pick = np.linspace(0, len(hkl) - 1, min(len(hkl), 300)).astype(int)
        g = rh.gemmi_f2(cg, hkl[pick])
        fmax = f2.max()
        err = np.abs(f2[pick] - g)
        bad = err > F2_PER_HKL_TOL * g + F2_ABS_FLOOR * fmax
        assert not bad.any(), f"{c.name}: hkl {hkl[pick][bad][:3].tolist()} ours {f2[pick][bad][:3]} gemmi {g[bad][:3]}"
        strong = g > 1e-6 * fmax
        worst_gemmi = max(worst_gemmi, float((err[strong] / g[strong]).max(initial=0.0)))
    print(f"random oblique cells: {nref} families vs cctbx, max rel |F|^2 {worst_cctbx:.2e}; gemmi subset max rel "
          f"{worst_gemmi:.2e}")


def test_real_oblique_cifs_vs_cctbx(cif_sample, bt1):
    """Real monoclinic and triclinic CIFs: per-hkl |F|^2 of the kernel vs cctbx (same atoms and B)."""
    _need_cctbx()
    loaded, _ = cif_sample
    picked = []
    for path, s, lengths in loaded:
        n_obl = int(np.sum(np.abs(np.array(s.lattice.angles) - 90.0) > 1e-6))
        if n_obl in (1, 3) and len(s) <= 80:
            picked.append((path, s, lengths, n_obl))
    mono = [x for x in picked if x[3] == 1][:8]
    tric = [x for x in picked if x[3] == 3][:6]
    assert len(mono) >= 5 and len(tric) >= 3
    worst, nref = 0.0, 0
    crystals = [rh.crystal_from_structure(s, rh.element_b_values(lengths), None, source=str(path))
                for path, s, lengths, _ in mono + tric]
    refs = rh.cctbx_f2_many(crystals, [_lengths(c) for c in crystals], bt1.d_min)
    for (path, *_), c, ref in zip(mono + tric, crystals, refs):
        w, n, problems = _compare_cctbx(c, bt1, ref)
        assert not problems, f"{path.name}: " + "; ".join(problems[:5])
        worst, nref = max(worst, w), nref + n
    print(f"real oblique CIFs ({len(mono)} monoclinic, {len(tric)} triclinic): {nref} families vs cctbx, "
          f"max rel |F|^2 {worst:.2e}")


# ---- 4. X-ray mode vs pymatgen XRDCalculator -------------------------------------------------
XRAY_LAMBDA = 1.540593  # Cu K-alpha1 alone: XRDCalculator has one wavelength
XRAY_RANGE = (5.0, 120.0)


def _xray_pair(case):
    """(our pattern, pymatgen's pattern) of an NCrystal crystal, neutral atoms, NCrystal's B per element."""
    inst = rh.comparison_instrument(XRAY_LAMBDA, *XRAY_RANGE, radiation="xray", name="cuka1-single")
    _, bvals = case.element_tables()
    s = case.structure()
    crystal = rh.crystal_from_structure(s, bvals, None, source=case.name)
    return simulate(crystal, inst), rh.pymatgen_xrd(s, XRAY_LAMBDA, XRAY_RANGE, bvals), s


def test_xray_vs_pymatgen_xrd(ncrystal_cases):
    """Positions exact; normalised intensities within the form-factor table difference (measured, bounded)."""
    worst_abs, worst_rel, worst_pos, n = (0.0, ""), (0.0, ""), 0.0, 0
    failures = []
    for case in ncrystal_cases:
        pat, ref, _ = _xray_pair(case)
        a, b = rh.our_peaks(pat, *XRAY_RANGE), rh.ref_peaks(ref, *XRAY_RANGE)
        n += 1
        cmp = rh.compare_peaks(*a, *b, top=TOP_PEAKS, floor=XRAY_PRESENCE_FLOOR, match_tol=MATCH_TOL_DEG)
        # Absolute difference of normalised intensities (units of the strongest) over the 20 strongest.
        on, rn = a[1] / a[1].max(), b[1] / b[1].max()
        j = np.clip(np.searchsorted(a[0], b[0]), 1, len(a[0]) - 1)
        j = np.where(np.abs(a[0][j - 1] - b[0]) < np.abs(a[0][j] - b[0]), j - 1, j)
        top = np.argsort(-rn, kind="stable")[:TOP_PEAKS]
        d_abs = float(np.abs(on[j[top]] - rn[top]).max())
        strong = top[rn[top] >= 0.1]
        rel = float((np.abs(on[j[strong]] - rn[strong]) / rn[strong]).max())
        worst_abs = max(worst_abs, (d_abs, case.name))
        worst_rel = max(worst_rel, (rel, case.name))
        worst_pos = max(worst_pos, cmp.max_position)
        if (d_abs > XRAY_NORM_ABS_TOL or rel > XRAY_REL_STRONG_TOL or cmp.max_position > POSITION_TOL_DEG
                or cmp.missing or cmp.extra):
            failures.append(f"{case.name}: max |d(I/Imax)| {d_abs:.3g}, rel (>= 10%) {rel:.3g}; {cmp.summary()}")
    print(f"X-ray vs pymatgen XRDCalculator, {n} crystals: max |d(I/Imax)| (20 strongest) {worst_abs[0]:.3e} "
          f"({worst_abs[1]}), max rel for peaks >= 10% of max {worst_rel[0]:.3e} ({worst_rel[1]}), "
          f"max position {worst_pos:.2e} deg")
    assert not failures, "\n".join(failures)


def _pymatgen_f(el: str, s: np.ndarray) -> np.ndarray:
    """pymatgen's X-ray form factor f = Z - 41.78214 s^2 sum_i a_i exp(-b_i s^2) (its xrd.py)."""
    from pymatgen.analysis.diffraction.xrd import ATOMIC_SCATTERING_PARAMS
    from pymatgen.core import Element

    c = np.asarray(ATOMIC_SCATTERING_PARAMS[el])
    s2 = s[:, None] ** 2
    return Element(el).Z - 41.78214 * s[:] ** 2 * np.sum(c[:, 0] * np.exp(-c[:, 1] * s2), axis=1)


def test_xray_difference_is_only_the_form_factor_table(ncrystal_cases):
    """On one-element crystals, I_ours / I_pymatgen = const * (f_WK(s) / f_pymatgen(s))^2 for every peak.

    With a single element, F(h) = f(s) DW(s) G(h) with the same geometric sum G on both sides, so
    the ratio of the two codes' intensities must be the squared ratio of the form factors times a
    constant (the polarisation factor's 1/2 and normalisation). This pins the whole X-ray
    difference on the table, to float64 precision.
    """
    from xtalhpc.scattering import form_factor, scattering_coefficients

    worst, n = 0.0, 0
    for case in ncrystal_cases:
        els = {rh.element_of(x) for x in case.labels}
        if len(els) != 1:
            continue
        el = els.pop()
        n += 1
        pat, ref, _ = _xray_pair(case)
        a, b = rh.our_peaks(pat, *XRAY_RANGE), rh.ref_peaks(ref, *XRAY_RANGE)
        cmp = rh.compare_peaks(*a, *b, floor=PRESENCE_FLOOR, match_tol=MATCH_TOL_DEG)
        assert not cmp.missing and not cmp.extra, (case.name, cmp.summary())
        j = np.clip(np.searchsorted(a[0], b[0]), 1, len(a[0]) - 1)
        j = np.where(np.abs(a[0][j - 1] - b[0]) < np.abs(a[0][j] - b[0]), j - 1, j)
        keep = b[1] > PRESENCE_FLOOR * b[1].max()
        s = np.sin(np.radians(b[0][keep] / 2)) / XRAY_LAMBDA
        f_ours = form_factor(scattering_coefficients(el, "xray"), s)
        ratio = a[1][j[keep]] / b[1][keep] / (f_ours / _pymatgen_f(el, s)) ** 2
        dev = float(np.abs(ratio / ratio[0] - 1).max())
        worst = max(worst, dev)
        assert dev <= XRAY_TABLE_ONLY_TOL, (case.name, dev)
    print(f"X-ray, {n} one-element crystals: intensity ratio / form-factor ratio^2 constant to {worst:.2e}")
    assert n >= 15


def test_xray_form_factors_vs_gemmi_it92():
    """f(s) of every element He..U against a second, independent table (gemmi's IT92)."""
    gemmi = pytest.importorskip("gemmi")
    import periodictable

    from xtalhpc.scattering import form_factor, scattering_coefficients

    s = np.linspace(0.0, 1.0, 101)
    worst = (0.0, "")
    for z in range(2, 93):
        el = periodictable.elements[z].symbol
        ours = form_factor(scattering_coefficients(el, "xray"), s)
        it92 = np.array([gemmi.Element(el).it92.calculate_sf(stol2=float(x * x)) for x in s])
        dev = float(np.abs(ours - it92).max()) / z
        worst = max(worst, (dev, el))
        assert dev <= XRAY_IT92_TOL_PER_Z, (el, dev)
    print(f"X-ray form factors vs gemmi IT92, Z = 2..92, s <= 1/A: max |df| / Z {worst[0]:.2e} ({worst[1]})")
