"""Helpers that put the same atoms into xtalhpc and into the independent reference codes.

Every comparison in ``test_physics_reference.py`` builds both sides from one
source of truth (an NCrystal ``Info`` object or a pymatgen ``Structure``), so a
difference in the result is a difference in the physics, never in how a file
was read. Nothing here imports a reference code at module import time:
pymatgen, NCrystal, cctbx and gemmi are imported inside the functions that use
them, and the tests ``importorskip`` them.
"""
from __future__ import annotations

if __name__ == "__main__":
    # Child process of cctbx_f2_many: cctbx must be imported before anything that could load
    # NCrystal or matplotlib.
    import cctbx  # noqa: F401

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xtalhpc.crystal import Crystal, element_of
from xtalhpc.instruments import Instrument

#: NCrystal's coherent scattering lengths are in sqrt(barn); 1 sqrt(barn) = 10 fm.
FM_PER_SQRT_BARN = 10.0
#: NCrystal's |F|^2 is in barn; 1 barn = 100 fm^2.
FM2_PER_BARN = 100.0
#: B = 8 pi^2 <u^2> (angstrom^2), NCrystal's msd is <u^2> along one direction.
EIGHT_PI2 = 8.0 * math.pi ** 2
#: pymatgen merges reflections whose 2theta round to the same multiple of this (degrees).
PYMATGEN_TWO_THETA_TOL = 1e-5


# --------------------------------------------------------------------------------------------
# NCrystal -> (Crystal, Structure)
# --------------------------------------------------------------------------------------------
@dataclass
class NCrystalCase:
    """One NCrystal library crystal, with the per-atom data both codes will use."""

    name: str
    info: object
    cell: np.ndarray
    frac: np.ndarray
    labels: list[str]            # NCrystal display label per atom ('D', 'Al', ...)
    lengths_fm: np.ndarray       # coherent scattering length per atom (fm)
    b_iso: np.ndarray            # B per atom (angstrom^2)

    @property
    def orthogonal(self) -> bool:
        return bool(np.all(self.cell[3:] == 90.0))

    def crystal(self) -> Crystal:
        return Crystal(self.cell, self.frac, self.labels, np.ones(len(self.labels)), self.b_iso,
                       source=f"ncrystal:{self.name}", name=self.name, scattering_length=self.lengths_fm)

    def element_tables(self) -> tuple[dict[str, float], dict[str, float]]:
        """{pymatgen element symbol: length (fm)} and {symbol: B}; NCrystal has one atom type per element."""
        lengths, bs = {}, {}
        for lab, b, bi in zip(self.labels, self.lengths_fm, self.b_iso):
            el = element_of(lab)
            if el in lengths and (lengths[el] != b or bs[el] != bi):
                raise ValueError(f"{self.name}: element {el} has two atom types; per-element tables cannot hold it")
            lengths[el], bs[el] = float(b), float(bi)
        return lengths, bs

    def structure(self):
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice.from_parameters(*self.cell), [element_of(x) for x in self.labels], self.frac)


def load_ncrystal_cases(directory: Path, dcutoff: float) -> tuple[list[NCrystalCase], list[str]]:
    """Every crystalline .ncmat in ``directory`` (sorted), and the names of those without a structure.

    ``dcutoff`` (angstrom) is passed to NCrystal so its hkl list reaches our d_min. NCrystal
    drops families with |F|^2 below ~1e-5 barn; the tests compare only families above 1e-3
    of the strongest, far above that.
    """
    import NCrystal as NC

    cases, skipped = [], []
    for f in sorted(Path(directory).glob("*.ncmat")):
        info = NC.createInfo(f"{f};dcutoff={dcutoff!r}")
        if not (info.hasStructureInfo() and info.hasAtomInfo()):
            skipped.append(f.name)  # gases, liquids, amorphous polymers: no unit cell
            continue
        si = info.structure_info
        cell = np.array([si[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")], dtype=float)
        frac, labels, lengths, bs = [], [], [], []
        for ai in info.atominfos:
            lab = ai.atomData.displayLabel()
            for p in ai.positions:
                frac.append(p)
                labels.append(lab)
                lengths.append(ai.atomData.coherentScatLen() * FM_PER_SQRT_BARN)
                bs.append(EIGHT_PI2 * ai.msd)
        cases.append(NCrystalCase(f.stem, info, cell, np.array(frac, dtype=float), labels, np.array(lengths),
                                  np.array(bs)))
    return cases, skipped


# --------------------------------------------------------------------------------------------
# pymatgen Structure -> Crystal
# --------------------------------------------------------------------------------------------
def crystal_from_structure(structure, b_by_element: dict[str, float], length_by_element: dict[str, float] | None,
                           source: str = "", name: str = "") -> Crystal:
    """The atoms of a pymatgen Structure as a Crystal: one atom per (site, species), same order.

    Disordered sites give one atom per species with that species' occupancy, exactly as
    pymatgen's calculators sum over ``site.species.items()``.
    """
    frac, species, occ, b, lengths = [], [], [], [], []
    for site in structure:
        for sp, o in site.species.items():
            el = sp.symbol
            frac.append(site.frac_coords)
            species.append(el)
            occ.append(float(o))
            b.append(b_by_element.get(el, 0.0))
            lengths.append(np.nan if length_by_element is None else length_by_element[el])
    lat = structure.lattice
    cell = np.array([lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma])
    return Crystal(cell, np.array(frac), species, np.array(occ), np.array(b), charge=np.zeros(len(species)),
                   source=source, name=name,
                   scattering_length=None if length_by_element is None else np.array(lengths))


def element_b_values(elements) -> dict[str, float]:
    """A deterministic, element-dependent B (0.3-1.5 angstrom^2) so Debye-Waller is exercised."""
    from periodictable import elements as pt

    return {el: 0.3 + 0.2 * (pt.symbol(el).number % 7) for el in elements}


# --------------------------------------------------------------------------------------------
# pymatgen calculators with our lengths / B
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def pymatgen_lengths(table: dict[str, float]):
    """Make pymatgen's NDCalculator use ``table`` (fm per element symbol) instead of its booklet values."""
    from pymatgen.analysis.diffraction import neutron

    saved = neutron.ATOMIC_SCATTERING_LEN
    neutron.ATOMIC_SCATTERING_LEN = {**saved, **table}
    try:
        yield
    finally:
        neutron.ATOMIC_SCATTERING_LEN = saved


def pymatgen_nd(structure, wavelength: float, tt_range: tuple[float, float], lengths: dict[str, float],
                b_by_element: dict[str, float]):
    """pymatgen NDCalculator pattern (unscaled) with the given lengths and B per element."""
    from pymatgen.analysis.diffraction.neutron import NDCalculator

    with pymatgen_lengths(lengths):
        calc = NDCalculator(wavelength=wavelength, debye_waller_factors=dict(b_by_element))
        return calc.get_pattern(structure, scaled=False, two_theta_range=tt_range)


def pymatgen_xrd(structure, wavelength: float, tt_range: tuple[float, float], b_by_element: dict[str, float]):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    calc = XRDCalculator(wavelength=wavelength, debye_waller_factors=dict(b_by_element))
    return calc.get_pattern(structure, scaled=False, two_theta_range=tt_range)


# --------------------------------------------------------------------------------------------
# Peak lists: merging and comparison
# --------------------------------------------------------------------------------------------
def merge_peaks(tt: np.ndarray, inten: np.ndarray, tol: float = PYMATGEN_TWO_THETA_TOL):
    """Sum peaks into clusters whose neighbours lie within ``tol`` degrees (single linkage).

    pymatgen bins by ``round(2theta / tol)``; two reflections 1e-12 deg apart can straddle a
    bin edge there and not here, so both sides are re-clustered with this function before
    comparing. Returns (2theta of the first member, summed intensity), sorted by 2theta.
    """
    tt = np.asarray(tt, dtype=float)
    inten = np.asarray(inten, dtype=float)
    order = np.argsort(tt, kind="stable")
    tt, inten = tt[order], inten[order]
    if tt.size == 0:
        return tt, inten
    start = np.concatenate([[True], np.diff(tt) > tol])
    idx = np.cumsum(start) - 1
    return tt[start], np.bincount(idx, weights=inten)


@dataclass
class PeakComparison:
    """Result of comparing two peak lists normalised to their strongest peak."""

    n_ours: int
    n_ref: int
    max_rel_intensity: float     # over the ``top`` strongest reference peaks
    max_position: float          # degrees, over the same peaks
    missing: list                # reference peaks above ``floor`` with no partner in ours
    extra: list                  # our peaks above ``floor`` with no partner in the reference
    max_rel_all: float = 0.0     # over every matched peak above ``floor`` (normalised to the max)

    def summary(self) -> str:
        return (f"peaks ours/ref {self.n_ours}/{self.n_ref}, top-N max rel dI {self.max_rel_intensity:.2e}, "
                f"max d2theta {self.max_position:.2e} deg, all-peaks max |dI|/Imax {self.max_rel_all:.2e}, "
                f"missing {self.missing[:3]}, extra {self.extra[:3]}")


def compare_peaks(ours_tt, ours_i, ref_tt, ref_i, top: int = 20, floor: float = 1e-3,
                  match_tol: float = 1e-4) -> PeakComparison:
    """Match two merged peak lists by 2theta and compare intensities normalised to each list's max.

    ``top``: the relative intensity error |I/Imax - I_ref/Iref_max| / (I_ref/Iref_max) and the
    position error are taken over the ``top`` strongest reference peaks. ``floor``: a peak
    above ``floor`` times the maximum with no partner within ``match_tol`` degrees counts as
    missing (reference only) or extra (ours only).
    """
    ours_tt, ours_i = np.asarray(ours_tt, float), np.asarray(ours_i, float)
    ref_tt, ref_i = np.asarray(ref_tt, float), np.asarray(ref_i, float)
    on = ours_i / ours_i.max()
    rn = ref_i / ref_i.max()
    # Nearest partner for each peak (both lists sorted by 2theta).
    j = np.clip(np.searchsorted(ours_tt, ref_tt), 1, max(len(ours_tt) - 1, 1))
    cand = np.stack([j - 1, np.minimum(j, len(ours_tt) - 1)])
    dist = np.abs(ours_tt[cand] - ref_tt[None, :])
    best = cand[np.argmin(dist, axis=0), np.arange(len(ref_tt))]
    dbest = np.abs(ours_tt[best] - ref_tt)
    matched = dbest <= match_tol
    missing = [(float(ref_tt[i]), float(rn[i])) for i in np.flatnonzero(~matched & (rn > floor))]
    partner = set(best[matched].tolist())
    extra = [(float(ours_tt[i]), float(on[i])) for i in range(len(ours_tt)) if i not in partner and on[i] > floor]
    strongest = np.argsort(-rn, kind="stable")[:top]
    strongest = strongest[matched[strongest]]
    rel = np.abs(on[best[strongest]] - rn[strongest]) / rn[strongest]
    pos = dbest[strongest]
    m_all = matched & (rn > floor)
    rel_all = np.abs(on[best[m_all]] - rn[m_all])
    return PeakComparison(len(ours_tt), len(ref_tt), float(rel.max(initial=0.0)), float(pos.max(initial=0.0)),
                          missing, extra, float(rel_all.max(initial=0.0)))


def group_families(d, f2, mult, floor: float, d_tol: float, f2_tol: float):
    """[(d, sorted [(F2, summed multiplicity)])] per d-group, d descending; families above ``floor`` only.

    Entries of equal d (relative ``d_tol``) and equal |F|^2 (relative ``f2_tol``) are merged, which
    is how the simulator defines a family; NCrystal lists symmetry-equivalence groups instead
    (two unrelated groups of equal d and |F|^2 are separate there), and cctbx lists single hkl,
    so both are brought to the same definition before comparing.
    """
    d, f2, mult = (np.asarray(x, dtype=float) for x in (d, f2, mult))
    order = np.argsort(-d, kind="stable")
    groups: list[tuple[float, list[list[float]]]] = []
    for di, fi, mi in zip(d[order], f2[order], mult[order]):
        if not (groups and abs(groups[-1][0] - di) <= d_tol * di):
            groups.append((di, []))
        fams = groups[-1][1]
        for fam in fams:
            if abs(fam[0] - fi) <= f2_tol * max(fam[0], fi):
                fam[1] += mi
                break
        else:
            fams.append([fi, mi])
    return [(di, sorted((f, m) for f, m in fams if f > floor)) for di, fams in groups]


def our_peaks(pattern, tt_lo: float, tt_hi: float, tol: float = PYMATGEN_TWO_THETA_TOL):
    """Our reflection families inside (tt_lo, tt_hi), merged by 2theta like pymatgen merges."""
    r = pattern.reflections
    keep = np.isfinite(r.two_theta) & (r.two_theta >= tt_lo) & (r.two_theta <= tt_hi)
    return merge_peaks(r.two_theta[keep], r.intensity[keep], tol)


def ref_peaks(pmg_pattern, tt_lo: float, tt_hi: float, tol: float = PYMATGEN_TWO_THETA_TOL):
    x, y = np.asarray(pmg_pattern.x), np.asarray(pmg_pattern.y)
    keep = (x >= tt_lo) & (x <= tt_hi)
    return merge_peaks(x[keep], y[keep], tol)


def comparison_instrument(wavelength: float, tt_min: float, tt_max: float, radiation: str = "neutron",
                          name: str = "reference-comparison") -> Instrument:
    """A single-wavelength instrument whose grid sets the compared 2theta range (BT-1 widths)."""
    return Instrument(name=name, radiation=radiation, wavelengths=(wavelength,), two_theta_min=tt_min,
                      two_theta_max=tt_max, two_theta_step=0.05, U=239.7, V=-298.2, W=180.8, X=5.0)


# --------------------------------------------------------------------------------------------
# |F|^2 per hkl from cctbx and gemmi
# --------------------------------------------------------------------------------------------
def _cctbx_f2_worker(items: list[dict], d_min: float) -> list[list[list[float]]]:
    """Runs in a child process (see :func:`cctbx_f2_many`): [[h, k, l, |F|^2], ...] per structure."""
    from cctbx import adptbx, crystal as cctbx_crystal, miller, xray
    from cctbx.eltbx import xray_scattering

    out = []
    for it in items:
        cs = cctbx_crystal.symmetry(unit_cell=tuple(it["cell"]), space_group_symbol="P1")
        scat = xray.flex.xray_scatterer()
        custom = {}
        for j, (x, b, occ, biso) in enumerate(zip(it["frac"], it["lengths"], it["occ"], it["b_iso"])):
            # One free-form scattering type per atom whose constant "form factor" is its length,
            # so cctbx sees exactly our lengths; B enters as u_iso = B / (8 pi^2).
            st = f"Q{j}"
            custom[st] = xray_scattering.gaussian(float(b))
            scat.append(xray.scatterer(label=f"A{j}", site=tuple(x), u=adptbx.b_as_u(biso), occupancy=occ,
                                       scattering_type=st))
        xs = xray.structure(crystal_symmetry=cs, scatterers=scat)
        xs.scattering_type_registry(custom_dict=custom)
        ms = miller.build_set(cs, anomalous_flag=False, d_min=d_min)
        f = ms.structure_factors_from_scatterers(xs, algorithm="direct").f_calc()
        out.append([[*idx, abs(v) ** 2] for idx, v in zip(f.indices(), f.data())])
    return out


def cctbx_f2_many(crystals: list[Crystal], lengths: list[np.ndarray], d_min: float) -> list[dict]:
    """|F(hkl)|^2 (fm^2) from cctbx's direct summation in P1 for every hkl with d >= d_min.

    cctbx's Boost.Python extensions crash (segfault) when imported after NCrystal or
    matplotlib (DESIGN.md section 3), and other test modules import those first, so cctbx
    runs in a child Python that imports nothing else; floats travel as JSON (exact repr).
    Returns one {(h, k, l): |F|^2} per crystal (one of each Friedel pair, cctbx's choice).
    """
    import json
    import subprocess
    import sys

    items = [{"cell": [float(x) for x in c.cell], "frac": c.frac.tolist(), "lengths": [float(x) for x in b],
              "occ": c.occupancy.tolist(), "b_iso": c.b_iso.tolist()} for c, b in zip(crystals, lengths)]
    proc = subprocess.run([sys.executable, __file__, "cctbx", repr(float(d_min))], input=json.dumps(items),
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"cctbx child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout)
    return [{(int(h), int(k), int(l)): float(f2) for h, k, l, f2 in r} for r in res]


def gemmi_lengths(crystal: Crystal) -> np.ndarray:
    """gemmi's own Neutron92 length (fm) of each atom (D kept apart from H, other isotopes -> element)."""
    import gemmi

    return np.array([float(gemmi.Element(_gemmi_el(s)).neutron92.get_coefs()[0]) for s in crystal.species])


def _gemmi_el(species: str) -> str:
    return "D" if species == "D" else element_of(species)


def gemmi_f2(crystal: Crystal, hkls) -> np.ndarray:
    """|F(hkl)|^2 (fm^2) from gemmi's StructureFactorCalculatorN in P1, with gemmi's Neutron92 lengths.

    gemmi's per-element ``addends`` are single precision (a shift of a few fm carries ~1e-7 fm of
    rounding, which showed up as 1e-6 relative |F|^2 differences), so instead of shifting gemmi
    to our lengths the comparison gives the simulator gemmi's lengths
    (``crystal.replace(scattering_length=gemmi_lengths(crystal))``).
    """
    import gemmi

    ss = gemmi.SmallStructure()
    ss.cell = gemmi.UnitCell(*(float(x) for x in crystal.cell))
    ss.spacegroup_hm = "P 1"
    for j in range(crystal.n_atoms):
        el = _gemmi_el(crystal.species[j])
        site = gemmi.SmallStructure.Site()
        site.label = f"{el}{j}"
        site.type_symbol = el
        site.element = gemmi.Element(el)
        site.fract = gemmi.Fractional(*(float(x) for x in crystal.frac[j]))
        site.occ = float(crystal.occupancy[j])
        site.u_iso = float(crystal.b_iso[j]) / EIGHT_PI2
        ss.add_site(site)
    ss.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorN(ss.cell)
    return np.array([abs(calc.calculate_sf_from_small_structure(ss, [int(h), int(k), int(l)])) ** 2
                     for h, k, l in hkls])


if __name__ == "__main__":  # the cctbx child process of cctbx_f2_many
    import json
    import sys

    if sys.argv[1] == "cctbx":
        json.dump(_cctbx_f2_worker(json.load(sys.stdin), float(sys.argv[2])), sys.stdout)
