"""Simulated patterns against MEASURED constant-wavelength neutron patterns of known structures.

Data: ../shared/data/patterns (GSAS-II tutorials, pdCIFplotter); testing only, never tuning.
Each dataset is simulated on its measured 2theta points with an instrument preset (or the
data's own GSAS parameter file) taken as is; then ONLY linear nuisance parameters are fitted
by weighted least squares: one scale and a Chebyshev background, plus a zero shift found by a
1-D scan. No peak shape, cell, position or ADP refinement. What remains (asymmetry,
absorption, unrefined structures, magnetic scattering, texture) is what Rwp measures; the
figures are in docs/validation.md.

Every test prints its numbers (run with ``-s`` to see them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import xtalhpc
from xtalhpc.instruments import Instrument, get_instrument
from xtalhpc.io import read_structures

from measured_helpers import (MeasuredPattern, fit_linear, peak_offsets, read_easydiffraction_instrument, read_gsas_prm,
                              read_gsas_raw, read_instprm, read_pdcif, read_xye)

REPO = Path(__file__).resolve().parents[1]
G2 = "patterns/gsas2_tutorials"

#: Chebyshev background terms (T0..T5). The measured backgrounds are smooth and GSAS-II's own
#: refinements of these data use 6-12 terms; 6 is enough without absorbing Bragg intensity.
N_BKG = 6
#: Zero-shift scan: coarse grid over +-0.3 deg (about one FWHM at these instruments' narrowest),
#: then a fine grid around the best coarse value. A 1-D scan, not a refinement.
ZERO_COARSE = np.arange(-0.30, 0.30001, 0.02)
ZERO_FINE = np.arange(-0.02, 0.02001, 0.002)
#: Largest believable zero shift for a calibrated instrument (deg); a larger best value means the
#: scan is compensating for something else (a wrong wavelength, a wrong grid).
ZERO_MAX = 0.25
#: Peak positions: the strongest isolated simulated peaks (no other reflection carrying >= 10% of
#: a peak's intensity within ISOLATION FWHM) are compared with the measured local maxima.
N_PEAKS = 10
ISOLATION = 2.5
#: Only peaks whose fitted height is >= MIN_PEAK_SNR sigma: with 5-10 points per FWHM the noise
#: then moves the maximum by well under 0.1 FWHM; weaker peaks would test the noise.
MIN_PEAK_SNR = 10.0
#: Measured (after the zero scan), |offset| in FWHM: median 0.03-0.15 over the datasets, largest
#: 0.37 (D1A PbSO4 at 30.6 deg; before the 10-sigma filter a weaker D1A peak at 20.5 deg was at
#: 0.49). The offsets are negative at low angle: axial-divergence asymmetry (not modelled) pulls
#: the measured maximum to lower 2theta, most below ~30 deg; the rest comes from cells not
#: refined to these samples.
#: A 0.5% wavelength error or a wrong structure moves peaks by >= 1 FWHM, so these still catch
#: real errors.
PEAK_MEDIAN_TOL = 0.25
PEAK_MAX_TOL = 0.5
ASYMMETRY_BELOW = 30.0    # deg 2theta
PEAK_MAX_TOL_LOW = 0.75   # FWHM, for peaks below ASYMMETRY_BELOW


def check_offsets(offs, min_count: int = N_PEAKS // 2) -> np.ndarray:
    """Offsets (measured - simulated) / FWHM; asserts the median and per-peak bounds."""
    assert len(offs) >= min_count, f"only {len(offs)} isolated strong peaks found"
    rel = np.array([(m - s) / w for s, m, w in offs])
    tt = np.array([s for s, _, _ in offs])
    print(f"  {len(offs)} peaks: median |offset| {np.median(np.abs(rel)):.3f} FWHM, largest "
          f"{np.max(np.abs(rel)):.3f} FWHM at {tt[int(np.argmax(np.abs(rel)))]:.2f} deg")
    tol = np.where(tt < ASYMMETRY_BELOW, PEAK_MAX_TOL_LOW, PEAK_MAX_TOL)
    assert np.median(np.abs(rel)) < PEAK_MEDIAN_TOL
    bad = np.abs(rel) >= tol
    assert not bad.any(), f"peaks at {tt[bad].round(2).tolist()} deg are {rel[bad].round(2).tolist()} FWHM off"
    return rel
#: Negative control: the same measured pattern fitted (same nuisances) with a structure of another
#: material must give an Rwp at least this many times worse. Measured ratios are 2.3-7.3.
WRONG_RATIO = 1.8


@dataclass(frozen=True)
class Case:
    key: str
    data: str            # path under shared/data
    fmt: str             # gsas | pdcif | xye
    structure: str       # path under shared/data (for the pdCIF: the same file)
    instrument: str      # preset name, or "prm:<path>" to build it from a GSAS .prm
    wrong: str           # a structure of another material (negative control)
    #: Rwp threshold (fraction). Each is the Rwp measured here (docs/validation.md) plus about
    #: 4 percentage points of headroom for harmless simulator changes (profile cut-off, family
    #: merging). Unrefined simulations of real data give 15-25%; a wrong structure gives 45-78%.
    rwp_max: float
    note: str = ""
    #: half-range (deg) of the zero-shift scan about the instrument's own zero
    zero_range: float = 0.3
    #: for "ed:" instruments, the |offset| stated in the experiment file (checked against the scan)
    stated_offset: float | None = None


CASES = [
    Case("bt1-lamno3-50k", f"{G2}/Magnetic-I/data/LaMnO3_50k.gsas", "gsas", f"{G2}/Magnetic-I/data/LaMnO3.cif",
         "bt1-cu311", f"{G2}/PythonScript/data/PbSO4-Wyckoff.cif", rwp_max=0.20,
         note="measured 15.8%; 50 K is below T_N ~ 140 K: A-type magnetic peaks not modelled"),
    Case("d1a-pbso4", f"{G2}/CWCombined/data/PBSO4.CWN", "gsas", f"{G2}/PythonScript/data/PbSO4-Wyckoff.cif",
         "d1a", f"{G2}/Magnetic-I/data/LaMnO3.cif", rwp_max=0.24,
         note="measured 19.3%; Wyckoff's unrefined coordinates with a generic Uiso 0.01"),
    Case("bt1-alumina", "patterns/pdcifplotter/data/ALUMINA.cif", "pdcif", "patterns/pdcifplotter/data/ALUMINA.cif",
         "bt1-cu311", f"{G2}/Magnetic-I/data/LaMnO3.cif", rwp_max=0.26,
         note="measured 21.3%; GSAS refined it with profile 1 asymmetry 8.7 (not modelled)"),
    Case("hb2a-cr2wo6-150k", f"{G2}/Magnetic-II/data/Cr2WO6_T150K.dat", "xye", f"{G2}/Magnetic-II/data/Cr2WO6.cif",
         f"prm:{G2}/Magnetic-II/data/Cr2WO6_T4K_dat.prm", f"{G2}/Magnetic-I/data/LaMnO3.cif", rwp_max=0.24,
         note="measured 19.4% after a +0.14 deg zero scan; 150 K is paramagnetic; 1966 structure, no ADPs"),
]
ED = "patterns/easydiffraction_app/examples/PdCw1d"
#: EasyDiffraction examples: the instrument resolution AND the structures were refined by
#: EasyDiffraction against these same data, so a low Rwp here tests the simulator's physics
#: (structure factors, Lorentz factor, pseudo-Voigt, unit conversion) given right inputs; it is
#: not an independent prediction like the cases above. The files' 2theta offset is not used: its
#: sign convention is ambiguous (cryspy subtracts it from the measured angles), so the zero is
#: scanned over +-0.7 deg and its magnitude compared with the stated one.
CASES += [
    Case("d20-co2sio4", f"{ED}/Co2SiO4/experiments/D20@ILL.xye", "xye", f"{ED}/Co2SiO4/samples/Co2SiO4.cif",
         f"ed:{ED}/Co2SiO4/experiments/D20@ILL.cif", f"{ED}/La0.5Ba0.5CoO3/samples/LBCO.cif", rwp_max=0.07,
         note="measured 4.0%; resolution and structure refined by EasyDiffraction on these data",
         zero_range=0.7, stated_offset=0.30),
    Case("hrpt-lbco", f"{ED}/La0.5Ba0.5CoO3/experiments/HRPT@PSI.cif", "pdcif", f"{ED}/La0.5Ba0.5CoO3/samples/LBCO.cif",
         f"ed:{ED}/La0.5Ba0.5CoO3/experiments/HRPT@PSI.cif", f"{ED}/Co2SiO4/samples/Co2SiO4.cif", rwp_max=0.10,
         note="measured 7.4%; resolution and structure refined by EasyDiffraction; asymmetry p1 0.5 not modelled",
         zero_range=0.7, stated_offset=0.60306),
]
IDS = [c.key for c in CASES]


def _read(case: Case, root: Path) -> MeasuredPattern:
    p = root / case.data
    return {"gsas": read_gsas_raw, "pdcif": read_pdcif, "xye": read_xye}[case.fmt](p)


def _instrument(case: Case, root: Path) -> Instrument:
    if case.instrument.startswith("prm:"):
        prm = read_gsas_prm(root / case.instrument[4:])
        return Instrument(name=Path(case.instrument).stem, radiation="neutron", wavelengths=(prm["wavelength"],),
                          two_theta_min=10.0, two_theta_max=150.0, two_theta_step=0.05, U=prm["U"], V=prm["V"],
                          W=prm["W"], X=prm["X"], Y=prm["Y"], zero=prm["zero"],
                          provenance=f"read from {case.instrument[4:]}")
    if case.instrument.startswith("ed:"):
        ed = read_easydiffraction_instrument(root / case.instrument[3:])
        return Instrument(name=Path(case.instrument).stem, radiation="neutron", wavelengths=(ed["wavelength"],),
                          two_theta_min=10.0, two_theta_max=150.0, two_theta_step=0.05, U=ed["U"], V=ed["V"],
                          W=ed["W"], X=ed["X"], Y=ed["Y"], zero=0.0,
                          provenance=f"resolution read from {case.instrument[3:]} (offset not used)")
    return get_instrument(case.instrument)


def on_grid(inst: Instrument, meas: MeasuredPattern, zero: float) -> Instrument:
    """The instrument unchanged except its 2theta grid (the file's) and zero shift.

    A non-uniform measured grid (HB-2A .dat) is simulated on a 0.005 deg grid and interpolated.
    """
    kw = inst.to_dict()
    step = meas.step if meas.uniform else 0.005
    kw.update(two_theta_min=float(meas.two_theta[0]), two_theta_max=float(meas.two_theta[-1]),
              two_theta_step=step, zero=float(zero))
    return Instrument(**kw)


def simulate_on(crystal, inst: Instrument, meas: MeasuredPattern, zero: float):
    i2 = on_grid(inst, meas, zero)
    pat = xtalhpc.simulate(crystal, i2)
    if meas.uniform:
        assert pat.intensity.shape == meas.intensity.shape and np.allclose(pat.two_theta, meas.two_theta, atol=1e-6)
        y = pat.intensity
    else:
        y = np.interp(meas.two_theta, pat.two_theta, pat.intensity)
    return y, pat, i2


def zero_scan(crystal, inst: Instrument, meas: MeasuredPattern, half_range: float = 0.3):
    """Best zero shift (deg) by a coarse then fine 1-D scan of Rwp; returns (zero, fit)."""
    def rwp_at(z):
        return fit_linear(meas, simulate_on(crystal, inst, meas, inst.zero + z)[0], N_BKG)

    coarse = np.arange(-half_range, half_range + 1e-9, ZERO_COARSE[1] - ZERO_COARSE[0])
    best = min(((rwp_at(z).rwp, z) for z in coarse))
    best = min(((rwp_at(best[1] + z).rwp, best[1] + z) for z in ZERO_FINE))
    return inst.zero + best[1], rwp_at(best[1])


@lru_cache(maxsize=None)
def evaluate(key: str, root: str) -> dict:
    case = next(c for c in CASES if c.key == key)
    root_p = Path(root)
    meas = _read(case, root_p)
    inst = _instrument(case, root_p)
    crystal = read_structures(root_p / case.structure)[0]
    fit0 = fit_linear(meas, simulate_on(crystal, inst, meas, inst.zero)[0], N_BKG)
    zero, fitz = zero_scan(crystal, inst, meas, case.zero_range)
    _, pat, i2 = simulate_on(crystal, inst, meas, zero)
    offs = peak_offsets(meas, fitz, pat.reflections.two_theta, pat.reflections.intensity, i2, N_PEAKS, ISOLATION,
                         MIN_PEAK_SNR)
    wrong = read_structures(root_p / case.wrong)[0]
    fitw = fit_linear(meas, simulate_on(wrong, inst, meas, zero)[0], N_BKG)
    return dict(case=case, meas=meas, inst=inst, crystal=crystal, fit0=fit0, fitz=fitz, zero=zero, offsets=offs,
                wrong=wrong, fitw=fitw)


@pytest.mark.parametrize("key", IDS)
def test_rwp_below_threshold(shared_data, key):
    r = evaluate(key, str(shared_data))
    case, meas = r["case"], r["meas"]
    print(f"\n{key}: {meas.mask.sum()} points {meas.two_theta[0]:.3f}-{meas.two_theta[-1]:.3f} deg, "
          f"{r['crystal'].formula} sg {r['crystal'].space_group} on {r['inst'].name} "
          f"(lambda {r['inst'].wavelength:.5f} A)\n"
          f"  Rwp (instrument zero {r['inst'].zero:+.4f}) = {100 * r['fit0'].rwp:.2f}%  "
          f"Rwp (zero scan {r['zero']:+.4f} deg) = {100 * r['fitz'].rwp:.2f}%  Rexp = {100 * r['fitz'].rexp:.2f}%  "
          f"[threshold {100 * case.rwp_max:.0f}%; {case.note}]")
    assert r["fitz"].scale > 0, "the fitted scale of the right structure must be positive"
    if case.stated_offset is None:
        assert abs(r["zero"]) <= ZERO_MAX, f"zero shift {r['zero']:+.3f} deg exceeds {ZERO_MAX}"
    else:  # the scan must recover the offset the refinement stated (to about 1/10 FWHM)
        assert abs(abs(r["zero"]) - case.stated_offset) < 0.05, f"zero {r['zero']:+.3f} vs stated {case.stated_offset}"
    assert r["fitz"].rwp <= r["fit0"].rwp + 1e-12
    assert r["fitz"].rwp < case.rwp_max, f"{key}: Rwp {100 * r['fitz'].rwp:.2f}% >= {100 * case.rwp_max:.0f}%"


@pytest.mark.parametrize("key", IDS)
def test_strong_peaks_at_measured_maxima(shared_data, key):
    r = evaluate(key, str(shared_data))
    offs = r["offsets"]
    rel = np.array([(m - s) / w for s, m, w in offs])
    print(f"\n{key}: peak offsets (measured - simulated) / FWHM at "
          + ", ".join(f"{s:.2f}:{x:+.2f}" for (s, _, _), x in zip(offs, rel)))
    check_offsets(offs)


@pytest.mark.parametrize("key", IDS)
def test_wrong_structure_fits_much_worse(shared_data, key):
    r = evaluate(key, str(shared_data))
    right, wrong = r["fitz"].rwp, r["fitw"].rwp
    print(f"\n{key}: Rwp right {r['crystal'].formula} {100 * right:.2f}%  wrong {r['wrong'].formula} "
          f"{100 * wrong:.2f}%  ratio {wrong / right:.2f}")
    assert wrong > WRONG_RATIO * right
    assert wrong > r["case"].rwp_max


# --------------------------------------------------------------------------- readers and presets

def test_gsas_readers_match_headers(shared_data):
    """Point counts and grids of the GSAS files agree with their BANK records and the presets' grids."""
    m = read_gsas_raw(shared_data / f"{G2}/Magnetic-I/data/LaMnO3_50k.gsas")  # ESD format
    assert len(m) == 3296 and m.two_theta[0] == pytest.approx(3.0) and m.two_theta[-1] == pytest.approx(167.75)
    assert m.intensity[:3].tolist() == [523.0, 442.0, 527.0] and m.sigma[:3].tolist() == [48.0, 44.0, 48.0]
    bt1 = get_instrument("bt1-cu311")
    assert bt1.n_points == 3296 and bt1.two_theta_min == pytest.approx(3.0)
    p = read_gsas_raw(shared_data / f"{G2}/CWCombined/data/PBSO4.CWN")  # STD format: variance = y / n
    assert len(p) == 2919 and p.two_theta[-1] == pytest.approx(155.9)
    assert p.intensity[0] == 220.0 and p.sigma[0] == pytest.approx(math.sqrt(220.0))
    d1a = get_instrument("d1a")
    assert d1a.n_points == 2919 and d1a.two_theta_min == pytest.approx(10.0)
    a = read_pdcif(shared_data / "patterns/pdcifplotter/data/ALUMINA.cif")
    assert len(a) == 3300 and a.intensity[1] == 149.0 and a.sigma[1] == 19.0
    assert not a.mask[0]  # zero _pd_proc_ls_weight: excluded


def test_presets_match_parameter_files(shared_data):
    """bt1-cu311 and d1a equal the GSAS parameter files they cite (report, never adjust)."""
    bt1 = get_instrument("bt1-cu311")
    p1 = read_gsas_prm(shared_data / f"{G2}/Magnetic-I/data/BT1_Cu311.inst", table=1)
    p2 = read_gsas_prm(shared_data / f"{G2}/Magnetic-I/data/BT1_Cu311.inst", table=2)
    assert bt1.wavelength == pytest.approx(p1["wavelength"])
    assert (bt1.U, bt1.V, bt1.W) == pytest.approx((p1["U"], p1["V"], p1["W"]))
    # X = 5.0 is LX of the file's profile type 2 table (PRCF2); in the type 1 table 5.0 is the
    # asymmetry parameter As, and the type 3 table has LX = 0 with S/L, H/L asymmetry.
    assert bt1.X == pytest.approx(p2["X"]) and p2["profile_type"] == 2
    # ICONS zero 0.04 centidegrees = 0.0004 deg: negligible next to a 0.26 deg FWHM.
    assert abs(bt1.zero - p1["zero"]) < 0.001
    for folder in ("CWNeutron", "CWCombined"):
        pd = read_gsas_prm(shared_data / f"{G2}/{folder}/data/inst_d1a.prm")
        d1a = get_instrument("d1a")
        assert d1a.wavelength == pytest.approx(pd["wavelength"])
        assert (d1a.U, d1a.V, d1a.W, d1a.X) == pytest.approx((pd["U"], pd["V"], pd["W"], pd["X"]))


# --------------------------------------------------------------------------- HFIR HB-2A job file

def test_hb2a_toml_is_the_instprm(shared_data):
    """jobs/hfir-hb2a.toml carries the instprm's values and the .gss files' grid, and simulates."""
    inst = get_instrument(str(REPO / "jobs" / "hfir-hb2a.toml"))
    d = shared_data / f"{G2}/MDtutorials/k_vec_tutorial/data"
    ip = read_instprm(d / "HB2A_ge113_op2112_Si_cycle866.instprm")
    assert inst.radiation == "neutron"
    assert inst.wavelength == pytest.approx(ip["Lam"], abs=1e-9)
    assert inst.zero == pytest.approx(ip["Zero"], abs=1e-9)
    assert (inst.U, inst.V, inst.W, inst.X, inst.Y) == pytest.approx((ip["U"], ip["V"], ip["W"], ip["X"], ip["Y"]))
    for f in ("Er2Ge2O7_op2112_Ge113_2K.gss", "Er2Ge2O7_op2112_Ge113_0p5K.gss"):
        m = read_gsas_raw(d / f)
        assert inst.n_points == len(m) and np.allclose(inst.two_theta, m.two_theta, atol=1e-9)
    c = read_structures(d / "ErGeO_distbase.cif")[0]
    pat = xtalhpc.simulate(c, inst)
    assert pat.intensity.shape == (2459,) and np.all(np.isfinite(pat.intensity)) and pat.intensity.max() > 0
    assert len(pat.reflections) > 50


def test_hb2a_er2ge2o7_peak_positions(shared_data):
    """Er2Ge2O7 at 2 K (above T_N ~ 1.1 K) on jobs/hfir-hb2a.toml as is (its own zero, no scan):
    the strongest isolated nuclear peaks sit at measured maxima. Rwp is NOT asserted: the data
    hold strong aluminium peaks of the sample environment (Al 111, 200, 220 at 61.9, 72.9,
    114.3 deg; textured, not at the sample position) and paramagnetic diffuse scattering of Er."""
    inst = get_instrument(str(REPO / "jobs" / "hfir-hb2a.toml"))
    d = shared_data / f"{G2}/MDtutorials/k_vec_tutorial/data"
    m = read_gsas_raw(d / "Er2Ge2O7_op2112_Ge113_2K.gss")
    c = read_structures(d / "ErGeO_distbase.cif")[0]
    pat = xtalhpc.simulate(c, inst)
    fit = fit_linear(m, pat.intensity, N_BKG)
    al = read_structures(shared_data / "structures/ncrystal/data/Al_sg225.ncmat")[0]
    al_tt = xtalhpc.simulate(al, inst).reflections.two_theta
    r = pat.reflections
    keep = np.array([np.all(np.abs(al_tt - t) > 2.0) for t in r.two_theta])
    offs = peak_offsets(m, fit, r.two_theta[keep], r.intensity[keep], inst, N_PEAKS, ISOLATION, MIN_PEAK_SNR)
    rel = np.array([(mm - s) / w for s, mm, w in offs])
    print(f"\nhb2a-er2ge2o7-2k: Rwp {100 * fit.rwp:.2f}% (not asserted), Rexp {100 * fit.rexp:.2f}%; offsets / FWHM "
          + ", ".join(f"{s:.2f}:{x:+.2f}" for (s, _, _), x in zip(offs, rel)))
    # Er2Ge2O7 (421 families) has only 4 peaks that are >= 10 sigma, isolated by 2.5 FWHM and
    # 2 deg away from the Al lines; 4 positions still fix the wavelength and zero to << 1 FWHM.
    check_offsets(offs, min_count=4)


def test_wrong_wavelength_is_detected(shared_data):
    """Negative control for the instrument: bt1-cu311 with its wavelength 0.5% long must fail the
    Rwp or zero-shift checks on the BT-1 alumina data (measured: Rwp 21% -> 77%, zero scan pinned
    at its -0.32 deg edge), so a mis-transcribed preset cannot pass."""
    case = next(c for c in CASES if c.key == "bt1-alumina")
    meas = _read(case, shared_data)
    inst = _instrument(case, shared_data)
    kw = inst.to_dict()
    kw["wavelengths"] = (inst.wavelength * 1.005,)
    crystal = read_structures(shared_data / case.structure)[0]
    zero, fit = zero_scan(crystal, Instrument(**kw), meas)
    print(f"\nbt1-alumina, lambda x 1.005: zero {zero:+.3f} deg, Rwp {100 * fit.rwp:.2f}%")
    assert fit.rwp > case.rwp_max or abs(zero) > ZERO_MAX
