"""The symmetry-unique |F|^2 path (one reflection per Laue orbit) against the plain
half-sphere sum over the same atoms, and the checks that guard it."""
from __future__ import annotations

import numpy as np
import pytest

from xtalhpc import Crystal
from xtalhpc.crystal import check_symmetry_metric, find_symmetry, laue_rotations, symmetrize, symmetry_maps_atoms
from xtalhpc.errors import StructureError
from xtalhpc.simulate import simulate_batch

#: Both paths sum the same terms in another order: agreement to float64 rounding.
PATH_TOL = 1e-10
#: Patterns are float32 rows (cpu.PATTERN_DTYPE): a few units in the last place of the maximum.
PATTERN_TOL = 4 * float(np.finfo(np.float32).eps)


def _ops(number: int) -> np.ndarray:
    import gemmi

    return np.array([np.hstack([np.array(o.rot, float) / o.DEN, np.array(o.tran, float)[:, None] / o.DEN])
                     for o in gemmi.find_spacegroup_by_number(number).operations()])


def _expand(ops, asu, species):
    pts, sps = [], []
    for x, s in zip(asu, species):
        for p in (ops[:, :, :3] @ x + ops[:, :, 3]) % 1.0:
            if not any(np.all(np.abs((p - q + 0.5) % 1 - 0.5) < 1e-9) for q in pts):
                pts.append(p)
                sps.append(s)
    return np.array(pts), sps


def _peaks_by_d(res, i):
    """{rounded d: sum of m |F|^2} — what both paths must agree on (family splits may differ)."""
    r = res.reflections(i)
    out: dict[float, float] = {}
    for d, m, f2 in zip(r.d, r.multiplicity, r.F2):
        k = round(float(d), 8)
        out[k] = out.get(k, 0.0) + float(m * f2)
    return out


def _assert_paths_agree(c_sym: Crystal, instrument: str) -> None:
    c_plain = c_sym.replace(symmetry=None)
    a = simulate_batch([c_plain], instrument)
    b = simulate_batch([c_sym], instrument)
    pa, pb = _peaks_by_d(a, 0), _peaks_by_d(b, 0)
    assert pa.keys() == pb.keys()
    top = max(pa.values())
    for k in pa:
        assert abs(pa[k] - pb[k]) <= PATH_TOL * top, (k, pa[k], pb[k])
    # the rows are float32: the same float64 peaks may round to neighbouring float32 values
    np.testing.assert_allclose(b.patterns[0], a.patterns[0], rtol=0, atol=PATTERN_TOL * a.patterns[0].max())


CELLS = {"cubic": [6.1] * 3 + [90] * 3, "hex": [4.3, 4.3, 7.1, 90, 90, 120], "tet": [5.2, 5.2, 7.7, 90, 90, 90],
         "ort": [5.1, 6.3, 7.7, 90, 90, 90], "mon": [5.1, 6.3, 7.7, 90, 103.0, 90]}


@pytest.mark.parametrize("number,cell", [(225, "cubic"), (227, "cubic"), (206, "cubic"), (62, "ort"), (70, "ort"),
                                         (14, "mon"), (15, "mon"), (88, "tet"), (139, "tet"), (167, "hex"),
                                         (148, "hex"), (186, "hex")])
@pytest.mark.parametrize("instrument", ["bt1-cu311", "lab-cuka"])
def test_laue_path_equals_plain_sum(number, cell, instrument, rng):
    ops = _ops(number)
    frac, sps = _expand(ops, rng.random((3, 3)), ["Fe", "O", "Si"])
    counts = [sps.count(s) for s in ("Fe", "O", "Si")]
    occ = np.repeat(rng.uniform(0.5, 1.0, 3), counts)
    b_iso = np.repeat(rng.uniform(0.2, 1.5, 3), counts)   # one B per orbit, as symmetry requires
    order = np.argsort([("Fe", "O", "Si").index(s) for s in sps], kind="stable")
    c = Crystal(CELLS[cell], frac[order], [sps[i] for i in order], occ, b_iso, symmetry=ops)
    assert symmetry_maps_atoms(c)
    _assert_paths_agree(c, instrument)


def test_real_structures_with_attached_symmetry(shared_data):
    from xtalhpc.io import read_structures

    files = ["ncrystal/data/Al2O3_sg167_Corundum.ncmat", "ncrystal/data/Ge3Bi4O12_sg220_BismuthGermanate.ncmat",
             "dans_diffraction/Dans_Diffraction/Structures/LiCoO2.cif",
             "dans_diffraction/Dans_Diffraction/Structures/Rutile.cif"]
    checked = 0
    for f in files:
        c = read_structures(shared_data / "structures" / f)[0]
        assert c.symmetry is not None, f
        assert symmetry_maps_atoms(c, tol=1e-9), f
        _assert_paths_agree(c, "bt1-cu311")
        checked += 1
    assert checked == len(files)


def test_multiplicities_of_cubic_orbits():
    c = Crystal([4.0] * 3 + [90] * 3, [[0, 0, 0]], ["Fe"], [1.0], [0.0], symmetry=_ops(221))
    r = simulate_batch([c], "bt1-cu311").reflections(0)
    mult = {tuple(int(x) for x in sorted(np.abs(h), reverse=True)): int(m) for h, m in zip(r.hkl, r.multiplicity)}
    # m-3m: {100} 6, {110} 12, {111} 8, {210} 24, {211} 24; {221} and {300} share d and F: 24 + 6 = 30
    assert mult[(1, 0, 0)] == 6 and mult[(1, 1, 0)] == 12 and mult[(1, 1, 1)] == 8
    assert mult[(2, 1, 0)] == 24 and mult[(2, 1, 1)] == 24
    assert mult.get((2, 2, 1), mult.get((3, 0, 0))) == 30
    assert len(laue_rotations(_ops(221))) == 48


def test_symmetrize_rounds_special_positions():
    # a CIF-style 0.3333 for 1/3: symmetrised onto the special position, symmetric afterwards
    ops = _ops(191)
    c = Crystal([3.0, 3.0, 4.0, 90, 90, 120], [[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]], ["B", "B"], [1, 1],
                [0.5, 0.5])
    c = c.replace(frac=np.round(c.frac, 4))
    s = symmetrize(c, ops, tol=1e-3)
    assert symmetry_maps_atoms(s, tol=1e-12)
    np.testing.assert_allclose(s.frac[0], [1 / 3, 2 / 3, 0.5], atol=1e-12)


def test_wrong_symmetry_is_refused():
    c = Crystal([5.0, 5.0, 5.0, 90, 90, 90], [[0.1, 0.2, 0.3]], ["Fe"], [1.0], [0.5], name="lonely")
    with pytest.raises(StructureError) as ei:
        symmetrize(c, _ops(221))
    assert ei.value.field == "symmetry" and "lonely" in str(ei.value)
    with pytest.raises(StructureError):  # hexagonal operators on a cubic cell change the metric
        Crystal([5.0, 5.0, 5.0, 90, 90, 90], [[0, 0, 0]], ["Fe"], [1.0], [0.5], symmetry=_ops(191))
    with pytest.raises(StructureError):
        check_symmetry_metric(np.zeros((2, 3, 3)), [5, 5, 5, 90, 90, 90])


def test_find_symmetry_on_a_p1_listing(rng):
    ops = _ops(62)
    frac, sps = _expand(ops, rng.random((2, 3)), ["Mn", "O"])
    c = Crystal(CELLS["ort"], frac, sps, np.ones(len(sps)), np.full(len(sps), 0.4))
    f = find_symmetry(c)
    assert f.space_group == 62 and f.symmetry is not None and len(f.symmetry) == 8
    _assert_paths_agree(f, "bt1-cu311")


def test_group_tables_equal_the_per_column_search(rng):
    """The cached tables of a Laue group (canonical l interval per column, orbit of every
    canonical reflection) give the kernels exactly the intervals, multiplicities and
    representative hkl that the per-column search and the per-reflection pass over the
    rotations find (tab_k = -1 makes the kernels search)."""
    from xtalhpc.instruments import get_instrument
    from xtalhpc.simulate import column_tables, pack, qmax_of
    from xtalhpc_kernels import cpu

    crystals = []
    for number, cell in [(225, "cubic"), (167, "hex"), (62, "ort"), (14, "mon"), (88, "tet"), (2, "mon")]:
        ops = _ops(number)
        frac, sps = _expand(ops, rng.random((2, 3)), ["Fe", "O"])
        crystals.append(Crystal(CELLS[cell], frac, sps, np.ones(len(sps)), np.full(len(sps), 0.5), symmetry=ops))
    qmax = qmax_of(get_instrument("bt1-cu311"))
    p, _ = pack(crystals, "neutron")
    column_tables(p, qmax)
    n = len(crystals)
    no_table = np.full(n, -1)
    results = []
    for tab_k, tab_l in ((p.tab_k, p.tab_l), (no_table, no_table)):
        counts = np.zeros(n, np.int64)
        cpu.count_reflections(p.recip, p.cell_len, qmax, p.laue_off, p.laue_rot, p.tab_off, tab_k, tab_l, p.table,
                              counts)
        off = np.concatenate([[0], np.cumsum(counts)])
        m = int(off[-1])
        out = (np.empty((m, 3), np.int32), np.empty(m), np.empty(m), np.empty(m, np.int32))
        cpu.structure_factors(p.recip, p.cell_len, qmax, off, p.type_off, p.type_atom_off, p.type_coef, p.type_b,
                              p.frac, p.occ, np.zeros(n, np.bool_), p.laue_off, p.laue_rot, p.tab_off, tab_k, tab_l,
                              p.table, p.orbit, *out)
        results.append((counts, out))
    (with_tables, a), (searched, b) = results
    assert (p.tab_k[:5] >= 0).all() and (p.tab_l[:5] >= 0).all() and p.tab_k[5] == -1
    assert np.array_equal(with_tables, searched) and with_tables.min() > 0
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert a[3].max() > 2  # orbits of more than a Friedel pair were read from the table


def _dense_partners(frac, kind, occ, b, ops, tol):
    """Reference: every (operation, atom) against every atom, periodic Chebyshev distance, O(m n^2)."""
    same = (kind[:, None] == kind[None, :]) & (np.abs(occ[:, None] - occ[None, :]) < 1e-6) \
        & (np.abs(b[:, None] - b[None, :]) < 1e-6)
    out = np.empty((len(ops), len(frac)), dtype=np.int64)
    for o, op in enumerate(ops):  # one operation at a time: (n, n) distances
        d = (frac @ op[:, :3].T + op[:, 3])[:, None, :] - frac[None, :, :]
        d = np.abs(d - np.round(d)).max(axis=2)
        d = np.where(same & (d < tol), d, np.inf)
        out[o] = np.where(np.isfinite(d.min(axis=1)), d.argmin(axis=1), -1)
    return out


@pytest.mark.parametrize("number, n_asu, n_mixed", [(221, 3, 6), (62, 6, 6), (191, 4, 6), (2, 40, 6), (227, 1, 2)])
def test_partner_kernel_matches_dense_search(rng, number, n_asu, n_mixed):
    """The cell-list partner search finds what an all-pairs search finds, including on sites
    shared by many species (a k-d tree asked for the 4 nearest atoms missed those)."""
    from xtalhpc_kernels.symmetry import symmetry_partners

    ops = _ops(number)
    species = [("Fe", "Mg", "Al", "Si", "Ti", "O")[i % 6] for i in range(n_asu)]
    while True:  # positions whose same-species images stay >= 0.01 apart (none near a special position)
        frac, sps = _expand(ops, rng.random((n_asu, 3)), species)
        # a mixed site: up to six species at one general position (as in disordered minerals)
        mixed, msp = _expand(ops, rng.random((1, 3)).repeat(n_mixed, axis=0),
                             ["Fe", "Mg", "Al", "Si", "Ti", "Mn"][:n_mixed])
        frac, sps = np.vstack([frac, mixed]), sps + msp
        kind = np.unique(sps, return_inverse=True)[1].astype(np.int64)
        d = frac[:, None, :] - frac[None, :, :]
        d = np.abs(d - np.round(d)).max(axis=2)
        d[kind[:, None] != kind[None, :]] = np.inf
        np.fill_diagonal(d, np.inf)
        if d.min() >= 0.01:
            break
    frac = frac + rng.normal(0, 2e-4, frac.shape)  # rounded coordinates: partners are near, not exact
    occ, b = np.full(len(sps), 0.5), np.full(len(sps), 0.4)
    rot, trans = np.ascontiguousarray(ops[:, :, :3]), np.ascontiguousarray(ops[:, :, 3])
    for tol in (2e-3, 0.02, 0.3):
        partner = np.empty((len(ops), len(sps)), dtype=np.int64)
        acc = np.zeros((len(sps), 3))
        bad = symmetry_partners(frac, kind, occ, b, rot, trans, np.linalg.inv(rot), tol, partner, acc)
        ref = _dense_partners(frac, kind, occ, b, ops, tol)
        assert bad == -1 and np.all(ref >= 0)
        np.testing.assert_array_equal(partner, ref)
        s = symmetrize(Crystal([7.0] * 3 + [90] * 3 if number in (221, 227) else
                               ([5.0, 5.0, 6.0, 90, 90, 120] if number == 191 else [5.0, 6.0, 7.0, 90, 90, 90]),
                               frac, sps, occ, b), ops, tol=tol)
        if tol < 0.02:  # wider tolerances may pair an image with a neighbour: the kernel and the reference agree
            assert symmetry_maps_atoms(s, tol=1e-9)  # on it (above), but the average is then no orbit
    # a displaced atom: the first (operation, atom) without partner, as the dense search says
    frac[0] += 0.05
    partner = np.empty((len(ops), len(sps)), dtype=np.int64)
    bad = symmetry_partners(frac, kind, occ, b, rot, trans, np.linalg.inv(rot), 2e-3, partner, np.zeros((len(sps), 3)))
    ref = _dense_partners(frac, kind, occ, b, ops, 2e-3)
    first = int(np.flatnonzero(ref.reshape(-1) < 0)[0])
    assert bad == first


# ---- symmetry finding for structures given without operations (issue 18) ---------------------

BUNDLED = __import__("pathlib").Path(__file__).resolve().parents[1] / "xtalhpc" / "data" / "structures"
#: What "the same pattern" means for symmetry finding: integrated intensities per d in float64.
FIND_TOL = 1e-9


def _write_p1_cif(c: Crystal, path, perturb=None):
    """``c`` as a P1 CIF with every number at full precision (repr), atom ``perturb[0]`` moved
    by ``perturb[1]`` (fractional vector)."""
    frac = c.frac.copy()
    if perturb is not None:
        frac[perturb[0]] += perturb[1]
    lines = ["data_p1", *(f"_cell_{k} {v!r}" for k, v in zip(
        ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"), c.cell.tolist())),
        "_symmetry_space_group_name_H-M 'P 1'", "loop_", "_symmetry_equiv_pos_as_xyz", "x,y,z", "loop_",
        "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
        "_atom_site_fract_z", "_atom_site_occupancy", "_atom_site_B_iso_or_equiv"]
    for i, (x, y, z) in enumerate(frac.tolist()):
        lines.append(f"A{i} {c.species[i]} {x!r} {y!r} {z!r} {float(c.occupancy[i])!r} {float(c.b_iso[i])!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _intensity_by_d(res, i):
    r = res.reflections(i)
    out: dict[float, float] = {}
    for d, inten in zip(np.round(r.d, 8), r.intensity):
        out[d] = out.get(d, 0.0) + inten
    return out


def _assert_same_pattern(a: Crystal, b: Crystal, tol=FIND_TOL):
    res = simulate_batch([a, b], "bt1-cu311")
    pa, pb = _intensity_by_d(res, 0), _intensity_by_d(res, 1)
    assert pa.keys() == pb.keys()
    top = max(pa.values())
    assert max(abs(pa[d] - pb[d]) for d in pa) <= tol * top
    assert np.max(np.abs(res.patterns[0] - res.patterns[1])) <= PATTERN_TOL * res.patterns[0].max()
    return res


@pytest.mark.parametrize("name", ["Rutile", "ZnO", "LiCoO2", "KCl", "Sapphire", "Silicon"])
def test_p1_export_gives_the_same_pattern_and_records_the_group(tmp_path, name):
    from xtalhpc.io import load_structure

    sym = load_structure(BUNDLED / f"{name}.cif")
    p1 = _write_p1_cif(sym, tmp_path / f"{name}-p1.cif")
    on, off = load_structure(p1), load_structure(p1, find_symmetry=False)
    assert off.symmetry is None and off.space_group == 1 and off.space_group_found is None
    assert on.symmetry is not None and len(laue_rotations(on.symmetry)) == len(laue_rotations(sym.symmetry))
    assert (on.space_group_declared, on.space_group_found, on.space_group) == (1, sym.space_group, sym.space_group)
    assert np.array_equal(on.frac, off.frac) and np.array_equal(on.cell, off.cell)  # nothing moved
    assert symmetry_maps_atoms(on, tol=1e-12)
    _assert_same_pattern(on, off)


def test_poscar_is_labelled_with_the_found_group(tmp_path):
    from xtalhpc.crystal import lattice_vectors
    from xtalhpc.io import load_structure

    sym = load_structure(BUNDLED / "Rutile.cif")
    lat = lattice_vectors(sym.cell)
    order = np.argsort(sym.species, kind="stable")
    text = ["rutile", "1.0", *(" ".join(repr(x) for x in row) for row in lat.tolist()), "O Ti",
            f"{sym.species.count('O')} {sym.species.count('Ti')}", "Direct",
            *(" ".join(repr(x) for x in sym.frac[i].tolist()) for i in order)]
    p = tmp_path / "POSCAR"
    p.write_text("\n".join(text) + "\n")
    on, off = load_structure(p), load_structure(p, find_symmetry=False)
    assert (on.space_group_declared, on.space_group_found, on.space_group) == (None, 136, 136)
    assert on.symmetry is not None and off.symmetry is None and off.space_group is None
    assert np.array_equal(on.frac, off.frac)
    _assert_same_pattern(on, off)


@pytest.mark.parametrize("shift", [1e-5, 3e-4])
def test_approximate_symmetry_keeps_p1(tmp_path, shift):
    """One atom 1e-5 or 3e-4 A off its site in a general direction: the group is found at
    FIND_SYMPREC (1e-3 A) and recorded, but no operation but the identity holds for the atoms as
    written: simulated as P1, unchanged. (A shift along a mirror keeps that mirror, which is then
    used: test_subgroup_that_holds_exactly_is_used.)"""
    from xtalhpc.crystal import EXACT_TOL, FIND_SYMPREC
    from xtalhpc.io import load_structure

    assert EXACT_TOL < shift < FIND_SYMPREC
    sym = load_structure(BUNDLED / "Rutile.cif")
    p1 = _write_p1_cif(sym, tmp_path / "p1.cif", perturb=(0, np.array([0.6, 0.5, 0.62]) * shift / sym.cell[:3]))
    on, off = load_structure(p1), load_structure(p1, find_symmetry=False)
    assert on.symmetry is None
    assert (on.space_group_found, on.space_group) == (136, 136)
    assert any("simulated as P1" in n for n in on.notes)
    assert np.array_equal(on.frac, off.frac) and np.array_equal(on.cell, off.cell)
    res = simulate_batch([on, off], "bt1-cu311")
    assert np.array_equal(res.patterns[0], res.patterns[1])


def test_subgroup_that_holds_exactly_is_used(tmp_path):
    """A rutile cell stretched along b by 1e-6 relative: tetragonal within FIND_SYMPREC (found 136)
    but only the orthorhombic operations keep the metric exactly: those are used, pattern unchanged."""
    from xtalhpc.crystal import detect_symmetry
    from xtalhpc.io import load_structure

    sym = load_structure(BUNDLED / "Rutile.cif")
    cell = sym.cell.copy()
    cell[1] *= 1 + 1e-6
    c = Crystal(cell, sym.frac, sym.species, sym.occupancy, sym.b_iso, space_group=1)
    on = detect_symmetry(c)
    assert on.space_group_found == 136 and on.space_group == 136
    assert on.symmetry is not None and len(laue_rotations(on.symmetry)) == 8  # mmm, not 4/mmm
    _assert_same_pattern(on, c)


def test_declared_group_is_never_relabelled():
    from xtalhpc.crystal import detect_symmetry
    from xtalhpc.io import load_structure

    sym = load_structure(BUNDLED / "Rutile.cif")
    c = detect_symmetry(Crystal(sym.cell, sym.frac, sym.species, sym.occupancy, sym.b_iso, space_group=62))
    assert (c.space_group, c.space_group_declared, c.space_group_found) == (62, 62, 136)
    assert detect_symmetry(sym) is sym  # a crystal with operations is left alone


def test_found_groups_agree_with_spglib(shared_data):
    """Every P1 CIF of the XRD-AutoAnalyzer set: the found group is spglib's at FIND_SYMPREC."""
    import spglib

    from xtalhpc.crystal import FIND_SYMPREC, _atom_kinds, lattice_vectors
    from xtalhpc.io import read_blocks

    files = sorted((shared_data / "structures/xrd_autoanalyzer").rglob("*.cif"))
    checked, differ = 0, []
    for f in files:
        for c in read_blocks(f):
            if isinstance(c, Exception) or c.space_group_declared not in (None, 1):
                continue
            ds = spglib.get_symmetry_dataset((lattice_vectors(c.cell), c.frac, _atom_kinds(c)), symprec=FIND_SYMPREC)
            checked += 1
            if c.space_group_found != ds.number:
                differ.append((f.name, c.space_group_found, ds.number))
    assert checked >= 70 and not differ, differ


def test_generate_stores_declared_and_found_groups(tmp_path):
    from xtalhpc import cli
    from xtalhpc.dataset import open_dataset
    from xtalhpc.io import load_structure

    src = tmp_path / "in"
    src.mkdir()
    sym = load_structure(BUNDLED / "Rutile.cif")
    (src / "a_sym.cif").write_text((BUNDLED / "Rutile.cif").read_text())
    _write_p1_cif(sym, src / "b_p1.cif")
    got = {}
    for flag in ("--find-symmetry", "--no-find-symmetry"):
        out = tmp_path / flag
        assert cli.main(["generate", str(src), "--output", str(out), "--quiet", flag]) == 0
        with open_dataset(out) as ds:
            got[flag] = ds.read_all()
    a = got["--find-symmetry"]
    assert a["space_group"].tolist() == [136, 136]
    assert a["space_group_declared"].tolist() == [136, 1] and a["space_group_found"].tolist() == [0, 136]
    assert np.max(np.abs(a["pattern"][0] - a["pattern"][1])) <= PATTERN_TOL
    b = got["--no-find-symmetry"]
    assert b["space_group"].tolist() == [136, 1] and b["space_group_found"].tolist() == [0, 0]


# ---- inversion pairs (issue 18): the CPU structure factors of a centrosymmetric crystal ------
#: What the paired sum must keep: |F|^2 of every family to 1e-9 of its own value (the two sums
#: differ by float64 rounding, ~1e-15), families below 1e-6 of the strongest to 1e-9 of it.
PAIR_RTOL = 1e-9


def _shifted(c: Crystal, s) -> Crystal:
    """``c`` with every atom moved by ``s`` (fractional) and its operations conjugated to match:
    x' = R (x - s) + t + s, so an inversion -x + t becomes -x + t + 2 s (centre off the origin)."""
    s = np.asarray(s, dtype=float)
    ops = c.symmetry.copy()
    ops[:, :, 3] = ops[:, :, 3] + s - ops[:, :, :3] @ s
    return c.replace(frac=c.frac + s, symmetry=ops)


def _pair_cases():
    from xtalhpc.io import read_blocks

    tests_data = __import__("pathlib").Path(__file__).resolve().parent / "data"
    mono = read_blocks(tests_data / "structures" / "monoclinic_adp.cif")[0]   # P2_1/c, a half-occupied site
    si = read_blocks(BUNDLED / "Silicon.cif")[0]                                # Fd-3m origin 1: centre at 1/8
    return {
        "monoclinic": mono,
        "monoclinic shifted": _shifted(mono, (0.1234, 0.2718, 0.3141)),
        "silicon (centre off the origin)": si,
        "sapphire": read_blocks(BUNDLED / "Sapphire.cif")[0],
        "ZnO (no inversion)": read_blocks(BUNDLED / "ZnO.cif")[0],
        "GdN (absorber)": read_blocks(tests_data / "absorbers" / "GdN.cif")[0],
        "Sm P1, found R-3m (absorber)": read_blocks(tests_data / "absorbers" / "Sm_rhombohedral_P1.cif")[0],
        "monoclinic without operations": mono.replace(symmetry=None),
    }


@pytest.mark.parametrize("instrument", ["bt1-cu311", "lab-cuka"])
def test_inversion_pairs_match_the_full_sum(monkeypatch, instrument):
    """Centrosymmetric crystals are summed over one atom per inversion pair (cosines only); the
    result equals the full complex sum over every atom, with the centre at the origin or off it,
    with absorbers (complex lengths: F' and F'' both real times one phase) and for X-rays
    (several Gaussian terms per type); a crystal without an inversion (or without operations)
    takes the full sum."""
    import xtalhpc.simulate as sim

    cases = _pair_cases()
    crystals = list(cases.values())
    p, _ = sim.pack(crystals, "neutron")
    sim.pair_atoms(p)
    paired = dict(zip(cases, p.sf_centro.tolist()))
    assert paired == {k: not ("no inversion" in k or "without operations" in k) for k in cases}, paired
    summed = np.diff(p.sf_type_atom_off[p.type_off])
    assert summed[0] == 8 and crystals[0].n_atoms == 14  # 6 pairs + the two Fe at centres
    assert np.array_equal(summed[~p.sf_centro], np.diff(p.type_atom_off[p.type_off])[~p.sf_centro])
    got = simulate_batch(crystals, instrument)
    monkeypatch.setattr(sim, "inversion_translation", lambda symmetry: None)  # every crystal: full sum
    ref = simulate_batch(crystals, instrument)
    for i, name in enumerate(cases):
        a, b = got.reflections(i), ref.reflections(i)
        assert len(a) == len(b) and np.array_equal(a.hkl, b.hkl) and np.array_equal(a.multiplicity, b.multiplicity)
        scale = np.maximum(b.F2, 1e-6 * b.F2.max())
        assert np.all(np.abs(a.F2 - b.F2) <= PAIR_RTOL * scale), name
        iscale = np.maximum(b.intensity, 1e-6 * b.intensity.max())
        assert np.all(np.abs(a.intensity - b.intensity) <= PAIR_RTOL * iscale), name
        assert np.max(np.abs(got.patterns[i] - ref.patterns[i])) <= PATTERN_TOL * ref.patterns[i].max(), name
    # the shifted crystal is the same crystal: same |F|^2 (the origin shift is a phase)
    a, b = got.reflections(0), got.reflections(1)
    assert np.array_equal(a.hkl, b.hkl)
    assert np.all(np.abs(a.F2 - b.F2) <= 1e-9 * np.maximum(b.F2, 1e-6 * b.F2.max()))


def test_inversion_pairs_need_exact_partners():
    """An atom whose partner is off its exact image (by more than PAIR_TOL), or of another
    occupancy, keeps the whole crystal on the full sum."""
    import xtalhpc.simulate as sim

    mono = _pair_cases()["monoclinic"]
    moved = mono.frac.copy()
    moved[1] += 1e-7  # one oxygen of a pair: the inversion no longer holds exactly
    occ = mono.occupancy.copy()
    occ[int(np.argmin(occ))] = 0.4  # one of the two half-occupied Li
    crystals = [mono, Crystal(mono.cell, moved, mono.species, mono.occupancy, mono.b_iso, symmetry=mono.symmetry),
                Crystal(mono.cell, mono.frac, mono.species, occ, mono.b_iso, symmetry=mono.symmetry)]
    p, _ = sim.pack(crystals, "neutron")
    sim.pair_atoms(p)
    assert p.sf_centro.tolist() == [True, False, False]
    s0, s1 = p.sf_type_atom_off[p.type_off[1]], p.sf_type_atom_off[p.type_off[-1]]
    a0 = p.type_atom_off[p.type_off[1]]
    assert s1 - s0 == len(p.frac) - a0 and np.array_equal(p.sf_frac[s0:s1], p.frac[a0:])  # copied as they are
