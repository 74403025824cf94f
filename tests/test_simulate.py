"""The simulator's own invariants: profile integrals and shapes, chunked == one-by-one, bad input.

Physics against independent codes is in test_physics_reference.py; this module checks what no
other code can: that the rendered pattern keeps the integrated intensities of the reflection
list, that peak widths follow the instrument's Caglioti/Lorentzian parameters, that batching
and chunking change no bit, and that bad input fails with the project's errors naming the
source and field while the rest of a batch still computes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import xtalhpc.simulate as sim
from xtalhpc.crystal import Crystal
from xtalhpc.errors import InputError, InstrumentError, ScatteringError, StructureError
from xtalhpc.instruments import Instrument, get_instrument, load_instruments
from xtalhpc.simulate import simulate, simulate_batch

#: sum(pattern) * step vs the summed integrated intensities (issue 2: 1e-3). Each profile is
#: normalised to unit area over its window analytically (kernels' window_area) while the pattern
#: is its sampled sum: measured 1.4e-7 (BT-1 widths) and 1.2e-5 (lab Cu K-alpha, FWHM ~4 steps).
PROFILE_INTEGRAL_TOL = 1e-3
#: Rendered peak shape vs a NumPy pseudo-Voigt, relative to the peak height. The kernel cuts the
#: Gaussian part at 2.5 FWHM (3e-8 of its height) and sums it by a multiplicative recurrence.
PROFILE_SHAPE_TOL = 1e-6
#: Measured FWHM of a rendered peak (linear interpolation at half maximum on a 0.0005 deg grid)
#: vs the FWHM from U, V, W, X; interpolation error is ~(step / FWHM)^2 ~ 1e-5.
FWHM_TOL = 1e-3


def _crystal(cell, frac, species, occ=None, b=None, name="test"):
    n = len(species)
    return Crystal(np.asarray(cell, float), np.asarray(frac, float), species,
                   np.ones(n) if occ is None else occ, np.full(n, 0.5) if b is None else b,
                   source=f"{name}.cif", name=name)


def nacl() -> Crystal:
    fcc = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return _crystal([5.64, 5.64, 5.64, 90, 90, 90], np.vstack([fcc, fcc + [.5, 0, 0]]), ["Na"] * 4 + ["Cl"] * 4,
                    name="NaCl")


def random_crystal(rng: np.random.Generator, n_atoms: int, name: str) -> Crystal:
    abc = rng.uniform(3.0, 11.0, 3)
    while True:
        ang = rng.uniform(70.0, 110.0, 3)
        if rng.random() < 0.5:
            ang[:] = [90.0, rng.uniform(90, 115), 90.0]
        from xtalhpc.crystal import cell_volume

        if cell_volume(np.r_[abc, ang]) > 0.5 * np.prod(abc):
            break
    sp = list(rng.choice(["H", "D", "C", "N", "O", "Na", "Si", "Fe", "Ba", "7Li"], n_atoms))
    return Crystal(np.r_[abc, ang], rng.random((n_atoms, 3)), sp, rng.uniform(0.5, 1.0, n_atoms),
                   rng.uniform(0.1, 2.0, n_atoms), source=f"random:{name}", name=name)


# ---- profiles -------------------------------------------------------------------------------
def _tch(theta, U, V, W, X, Y):
    """Thompson-Cox-Hastings FWHM (deg) and eta from GSAS parameters, in NumPy (the test's oracle)."""
    t = np.tan(theta)
    fg = np.sqrt(8 * np.log(2) * max(U * t * t + V * t + W, 0.0) * 1e-4)
    fl = (X / np.cos(theta) + Y * t) * 1e-2
    f = (fg ** 5 + 2.69269 * fg ** 4 * fl + 2.42843 * fg ** 3 * fl ** 2 + 4.47163 * fg ** 2 * fl ** 3
         + 0.07842 * fg * fl ** 4 + fl ** 5) ** 0.2
    q = fl / f
    return f, 1.36603 * q - 0.47719 * q ** 2 + 0.11116 * q ** 3


def _instrument_with_gap(crystal, base: Instrument, lo_max=100.0, hi_max=170.0) -> Instrument:
    """``base`` with 2theta_max in a gap between peaks, so every peak's window lies on the grid.

    The kernel enumerates reflections down to the d of 2theta_max, so a peak just below the
    upper end would have its window cut; choosing the end in a wide gap avoids that.
    """
    probe = Instrument(**{**base.to_dict(), "two_theta_max": 179.0, "name": "probe"})
    tt = np.unique(simulate(crystal, probe).reflections.two_theta)
    lo_half = []
    for x in tt:
        f, _ = _tch(math.radians(x / 2), base.U, base.V, base.W, base.X, base.Y)
        lo_half.append(base.profile_cutoff * max(f, sim.MIN_FWHM_STEPS * base.two_theta_step) + 1.0)
    lo_half = np.array(lo_half)
    for k in range(len(tt) - 1):
        top = tt[k] + lo_half[k]
        nxt = tt[k + 1]
        if top < lo_max or top > hi_max or nxt <= top + base.two_theta_step:
            continue
        hi = round(min(hi_max, 0.5 * (top + nxt)), 2)
        if hi > top:
            return Instrument(**{**base.to_dict(), "two_theta_max": hi, "name": f"{base.name}-gap"})
    pytest.fail(f"no gap between peaks of {crystal.name} wide enough for a window-free upper end")


@pytest.mark.parametrize("which", ["neutron-bt1", "xray-doublet"])
def test_profile_integral_equals_integrated_intensities(which):
    """sum(pattern) * step == sum of m |F|^2 L over every wavelength, when every window lies on the grid."""
    c = nacl()
    base = get_instrument("bt1-cu311" if which == "neutron-bt1" else "lab-cuka")
    base = Instrument(**{**base.to_dict(), "two_theta_min": 1.0})  # NaCl's first peak is far above 1 deg
    inst = _instrument_with_gap(c, base)
    pat = simulate(c, inst)
    r = pat.reflections
    assert np.all(np.isfinite(r.two_theta))
    # Every window is inside the grid: the test premise, checked rather than assumed.
    for lam in inst.wavelengths:
        for x in 2 * np.degrees(np.arcsin(lam / (2 * r.d))):
            f, _ = _tch(math.radians(x / 2), inst.U, inst.V, inst.W, inst.X, inst.Y)
            half = inst.profile_cutoff * max(f, sim.MIN_FWHM_STEPS * inst.two_theta_step)
            assert inst.two_theta_min < x - half and x + half < inst.two_theta_max, (lam, x, half)
    expected = 0.0
    xray = inst.radiation == "xray"
    for lam, w in zip(inst.wavelengths, inst.wavelength_weights):
        th = np.arcsin(lam / (2 * r.d))
        lp = 1.0 / (np.sin(th) ** 2 * np.cos(th))
        if xray:
            lp *= (1 + np.cos(2 * th) ** 2) / 2
        expected += w * np.sum(r.multiplicity * r.F2 * lp)
    # The reflection list's intensity is m |F|^2 L at the first wavelength.
    th0 = np.arcsin(inst.wavelengths[0] / (2 * r.d))
    lp0 = 1.0 / (np.sin(th0) ** 2 * np.cos(th0)) * ((1 + np.cos(2 * th0) ** 2) / 2 if xray else 1.0)
    np.testing.assert_allclose(r.intensity, r.multiplicity * r.F2 * lp0, rtol=1e-12)
    got = pat.intensity.sum() * inst.two_theta_step
    rel = abs(got - expected) / expected
    print(f"{which}: 2theta max {inst.two_theta_max}, {len(r)} families, rel diff of the integral {rel:.2e}")
    assert rel <= PROFILE_INTEGRAL_TOL


@pytest.mark.parametrize("U,V,W,X", [(239.7, -298.2, 180.8, 0.0), (0.0, 0.0, 0.0, 5.0), (239.7, -298.2, 180.8, 5.0),
                                     (2.0, -2.0, 5.0, 2.0)])
def test_peak_width_and_shape_follow_the_instrument(U, V, W, X):
    """One isolated peak: FWHM from Caglioti U, V, W (centideg^2) and X / cos(theta) (centideg); pV shape."""
    c = _crystal([4.0, 4.0, 4.0, 90, 90, 90], [[0, 0, 0]], ["Ni"], name="sc-Ni")  # (100) at d = 4
    inst = Instrument(name="fine", radiation="neutron", wavelengths=(1.5403,), two_theta_min=10.0,
                      two_theta_max=30.0, two_theta_step=0.0005, U=U, V=V, W=W, X=X)
    pat = simulate(c, inst)
    r = pat.reflections
    assert len(r) == 1 and tuple(np.abs(r.hkl[0])) in {(1, 0, 0), (0, 1, 0), (0, 0, 1)} and r.multiplicity[0] == 6
    tt0 = float(r.two_theta[0])
    np.testing.assert_allclose(tt0, 2 * math.degrees(math.asin(1.5403 / 8.0)), rtol=0, atol=1e-12)
    fwhm, eta = _tch(math.radians(tt0 / 2), U, V, W, X, 0.0)
    y, x = pat.intensity, pat.two_theta
    k = int(np.argmax(y))
    half = y[k] / 2
    left = np.flatnonzero(y[:k] < half)[-1]
    right = k + np.flatnonzero(y[k:] < half)[0]
    xl = x[left] + (half - y[left]) / (y[left + 1] - y[left]) * (x[left + 1] - x[left])
    xr = x[right - 1] + (half - y[right - 1]) / (y[right] - y[right - 1]) * (x[right] - x[right - 1])
    measured = xr - xl
    print(f"U V W X = {U} {V} {W} {X}: FWHM expected {fwhm:.6f} deg, measured {measured:.6f}, eta {eta:.4f}")
    assert abs(measured - fwhm) / fwhm <= FWHM_TOL
    # Shape: a unit-area pseudo-Voigt (NumPy) renormalised over the same window, times the intensity.
    hw = fwhm / 2
    dx = x - tt0
    pv = eta / (math.pi * hw * (1 + (dx / hw) ** 2)) + (1 - eta) * 2 * math.sqrt(math.log(2) / math.pi) / fwhm * \
        np.exp(-4 * math.log(2) * (dx / fwhm) ** 2)
    win = np.abs(dx) <= inst.profile_cutoff * fwhm
    model = np.where(win, pv, 0.0) * r.intensity[0] / (pv[win].sum() * inst.two_theta_step)
    err = np.abs(model - y).max() / y.max()
    print(f"  max shape deviation {err:.2e} of the peak height")
    assert err <= PROFILE_SHAPE_TOL


# ---- batching and chunking ------------------------------------------------------------------
def _mixed(rng) -> list[Crystal]:
    sizes = [1, 3, 40, 2, 17, 64, 5, 1, 29, 8]
    return [nacl()] + [random_crystal(rng, n, f"r{i}-{n}") for i, n in enumerate(sizes)]


def _assert_same(res, i, pat):
    """Structure i of a batch result is bit-for-bit the pattern and reflections of ``pat``."""
    r = res.reflections(i)
    assert np.array_equal(res.patterns[i], pat.intensity), i
    for name in ("hkl", "d", "two_theta", "multiplicity", "F2", "intensity"):
        a, b = getattr(r, name), getattr(pat.reflections, name)
        assert np.array_equal(a, b, equal_nan=True), (i, name)


@pytest.mark.parametrize("chunk", [1, 3000])
def test_chunked_batch_equals_unchunked(rng, monkeypatch, chunk):
    """Small CHUNK_REFLECTIONS (one structure per kernel call, or a few) changes no bit."""
    crystals = _mixed(rng)
    inst = get_instrument("bt1-cu311")
    whole = simulate_batch(crystals, inst)
    monkeypatch.setattr(sim, "CHUNK_REFLECTIONS", chunk)
    chunked = simulate_batch(crystals, inst)
    assert chunked.ok.all() and not chunked.errors
    assert np.array_equal(whole.patterns, chunked.patterns)
    assert np.array_equal(whole.peak_offsets, chunked.peak_offsets)
    for name in ("peak_hkl", "peak_d", "peak_two_theta", "peak_multiplicity", "peak_F2", "peak_intensity"):
        assert np.array_equal(getattr(whole, name), getattr(chunked, name), equal_nan=True), name


@pytest.mark.parametrize("chunk", [None, 1, 3000])
def test_batch_equals_one_by_one(rng, monkeypatch, chunk):
    """simulate_batch of a mixed list == simulate() of each alone, bit for bit, chunked or not.

    (This once failed in the last bits: scattering types were ordered by a batch-wide id, so a
    structure's sum over types ran in another order inside a batch. Fixed in e23cd53.)
    """
    crystals = _mixed(rng)
    inst = get_instrument("bt1-cu311")
    alone = [simulate(c, inst) for c in crystals]
    if chunk is not None:
        monkeypatch.setattr(sim, "CHUNK_REFLECTIONS", chunk)
    res = simulate_batch(crystals, inst)
    assert res.ok.all() and not res.errors
    for i, p in enumerate(alone):
        _assert_same(res, i, p)


def test_batch_order_does_not_matter(rng):
    crystals = _mixed(rng)
    inst = get_instrument("bt1-cu311-highres")
    fwd = simulate_batch(crystals, inst)
    perm = rng.permutation(len(crystals))
    back = simulate_batch([crystals[i] for i in perm], inst)
    for j, i in enumerate(perm):
        assert np.array_equal(back.patterns[j], fwd.patterns[i])
        assert np.array_equal(back.reflections(j).F2, fwd.reflections(i).F2)


# ---- bad input ------------------------------------------------------------------------------
def _names(exc: InputError, source: str, field: str):
    msg = str(exc)
    assert isinstance(exc, InputError)
    assert source in msg and f"field '{field}'" in msg, msg
    assert exc.source and source in exc.source and exc.field == field


def test_unknown_element():
    with pytest.raises(ScatteringError) as ei:
        _crystal([4, 4, 4, 90, 90, 90], [[0, 0, 0]], ["Xx"], name="bad-element")
    _names(ei.value, "bad-element.cif", "species")
    assert "Xx" in str(ei.value)


def test_element_without_neutron_length():
    """Po is an element, but periodictable has no bound coherent length for it: fails at simulate time."""
    c = _crystal([4, 4, 4, 90, 90, 90], [[0, 0, 0]], ["Po"], name="polonium")
    with pytest.raises(ScatteringError) as ei:
        simulate(c, "bt1-cu311")
    _names(ei.value, "polonium.cif", "species")
    assert "Po" in str(ei.value)


@pytest.mark.parametrize("cell", [
    [4, 4, 4, 120, 120, 120],  # alpha + beta + gamma = 360: flat (float64 leaves V ~ 2e-6 A^3; once accepted)
    [4, 4, 4, 30, 30, 90],     # gamma > alpha + beta: impossible, det(G) < 0
    [4, 4, 4, 0, 90, 90],      # angle 0
    [4, -1, 4, 90, 90, 90],    # negative length
    [0, 4, 4, 90, 90, 90]])    # zero length
def test_zero_or_negative_volume(cell):
    with pytest.raises(StructureError) as ei:
        _crystal(cell, [[0, 0, 0]], ["Fe"], name="flat-cell")
    _names(ei.value, "flat-cell.cif", "cell")


@pytest.mark.parametrize("occ", [1.2, 0.0, -0.5, float("nan")])
def test_occupancy_outside_0_1(occ):
    with pytest.raises(StructureError) as ei:
        _crystal([4, 4, 4, 90, 90, 90], [[0, 0, 0], [.5, .5, .5]], ["Fe", "Al"], occ=np.array([1.0, occ]),
                 name="overfull")
    _names(ei.value, "overfull.cif", "occupancy")


def test_reflection_cap():
    big = _crystal([60, 60, 60, 90, 90, 90], [[0, 0, 0]], ["Fe"], name="huge-cell")
    with pytest.raises(InputError) as ei:
        simulate_batch([big], "bt1-cu311", max_reflections=10_000)
    _names(ei.value, "huge-cell.cif", "cell")
    assert "10,000" in str(ei.value)
    # The default cap is documented and large enough for real cells.
    assert sim.MAX_REFLECTIONS >= 1_000_000


@pytest.mark.parametrize("kw,field", [({"wavelengths": (0.0,)}, "wavelength"),
                                      ({"wavelengths": (-1.54,)}, "wavelength"),
                                      ({"wavelengths": (float("nan"),)}, "wavelength"),
                                      ({"two_theta_min": 0.0}, "two_theta"),
                                      ({"two_theta_min": -5.0}, "two_theta"),
                                      ({"two_theta_max": 180.0}, "two_theta"),
                                      ({"two_theta_max": 190.0}, "two_theta")])
def test_bad_instrument(kw, field):
    base = dict(name="mybeamline", radiation="neutron", wavelengths=(1.54,), two_theta_min=5.0,
                two_theta_max=160.0, two_theta_step=0.05, U=100.0, V=-100.0, W=100.0, X=1.0)
    with pytest.raises(InstrumentError) as ei:
        Instrument(**{**base, **kw})
    _names(ei.value, "mybeamline", field)


def test_bad_instrument_toml_names_the_file(tmp_path):
    p = tmp_path / "beamline.toml"
    p.write_text('[mine]\nradiation = "neutron"\nwavelength = -1.5\ntwo_theta = [5.0, 150.0, 0.05]\n'
                 'U = 100.0\nV = -100.0\nW = 100.0\n')
    with pytest.raises(InstrumentError) as ei:
        load_instruments(p)
    _names(ei.value, str(p), "wavelength")
    p.write_text('[mine]\nradiation = "neutron"\nwavelength = 1.5\ntwo_theta = [5.0, 181.0, 0.05]\n'
                 'U = 100.0\nV = -100.0\nW = 100.0\n')
    with pytest.raises(InstrumentError) as ei:
        get_instrument(f"{p}:mine")
    _names(ei.value, str(p), "two_theta")


def test_batch_collect_lists_failures_and_computes_the_rest(rng):
    good = [nacl(), random_crystal(rng, 7, "g1"), random_crystal(rng, 20, "g2")]
    po = _crystal([4, 4, 4, 90, 90, 90], [[0, 0, 0]], ["Po"], name="polonium")
    big = _crystal([60, 60, 60, 90, 90, 90], [[0, 0, 0]], ["Fe"], name="huge-cell")
    batch = [good[0], po, good[1], big, good[2]]
    inst = get_instrument("bt1-cu311")
    cap = 50_000
    res = simulate_batch(batch, inst, on_error="collect", max_reflections=cap)
    assert res.ok.tolist() == [True, False, True, False, True]
    assert sorted(res.errors) == [1, 3]
    assert "polonium.cif" in res.errors[1] and "species" in res.errors[1] and "Po" in res.errors[1]
    assert "huge-cell.cif" in res.errors[3] and "cell" in res.errors[3]
    for i in (1, 3):
        assert not res.patterns[i].any() and len(res.reflections(i)) == 0
    for i, c in ((0, good[0]), (2, good[1]), (4, good[2])):
        _assert_same(res, i, simulate(c, inst))
    # on_error='raise' stops at the first bad structure with the project's error.
    with pytest.raises(ScatteringError) as ei:
        simulate_batch(batch, inst, on_error="raise", max_reflections=cap)
    _names(ei.value, "polonium.cif", "species")
    with pytest.raises(InputError) as ei:
        simulate_batch(batch, inst, on_error="ignore")
    assert ei.value.field == "on_error"


def test_patterns_only_batch_equals_full(rng):
    """peaks=False (what `xtalhpc generate` uses without --peaks) gives the same patterns
    bit for bit and no reflection lists."""
    crystals = _mixed(rng)
    inst = get_instrument("bt1-cu311")
    full = simulate_batch(crystals, inst)
    bare = simulate_batch(crystals, inst, peaks=False)
    assert np.array_equal(full.patterns, bare.patterns)
    assert np.array_equal(full.ok, bare.ok)
    assert not bare.peak_offsets.any() and len(bare.peak_d) == 0
