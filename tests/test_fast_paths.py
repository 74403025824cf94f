"""The throughput paths of issue 18 give what the plain paths give.

* the CIF reader's all-rows-at-once path (``_sites_fast``) and its row loop build the same
  crystals, notes included, on the bundled and test CIFs;
* ``kernels/sites``: ``unique_images`` keeps the site openers of ``merge_sites`` run on each
  site's images, and ``merge_sites_binned`` (a cell list) gives ``merge_sites``' sites, on real
  structures and on random cells with clustered atoms;
* an operator loop gemmi's table knows, handled once per process, gives what the general path
  gives (``cif_block._known_group``);
* the reader's per-site symmetrisation (``kernels/sites.symmetrised_images``) gives the
  crystals of the partner search over all atoms (``crystal.symmetry_fit``);
* ``kernels/symmetry.symmetry_partners`` (its bin grid offset from special positions) finds the
  partners of a search over all pairs;
* symmetry finding's atom kinds (one lexsort) equal ``np.unique``'s row ids;
* the volume bound from the angles agrees with det(G) (Crystal and CIF reader skip the
  determinant far above their bounds);
* ``Crystal`` keeps positions in [0, 1) (a tiny negative coordinate wraps to 0, not 1);
* ``simulate_batch`` of one structure with several Numba threads gives the one-thread
  pattern and leaves the thread count as it was.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xtalhpc.crystal import Crystal, lattice_vectors
from xtalhpc.io import read_blocks

ROOT = Path(__file__).resolve().parents[1]
CIFS = sorted((ROOT / "xtalhpc" / "data" / "structures").glob("*.cif")) + sorted(
    (ROOT / "tests" / "data").rglob("*.cif"))


def _fields(c):
    if isinstance(c, Exception):
        return ("error", str(c))
    return {k: (v.tobytes(), v.shape) if isinstance(v, np.ndarray) else v for k, v in vars(c).items()}


_HEAD = """data_t
_cell_length_a 5.0
_cell_length_b 6.0
_cell_length_c 7.0
_cell_angle_alpha 90
_cell_angle_beta 100
_cell_angle_gamma 90
_chemical_formula_sum 'Fe2 O3 Mn'
_symmetry_space_group_name_H-M 'P 1 21/c 1'
loop_
_atom_site_label
"""
#: Blocks for both paths: plain rows (labels only, U/B/aniso mixed, no occupancy column), and
#: rows that need the loop (a fraction, occupancy '?' and 0, a dummy atom).
EXTRA = {
    "plain_labels.cif": _HEAD + """_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_U_iso_or_equiv
_atom_site_B_iso_or_equiv
Fe1 0.1 0.2 0.3 0.01 ?
O1 0.3(2) 0.4 0.1 ? 0.8
Mn1 0 0 0 ? ?
O2 0.5 0.1 0.9 0.02 1.0
loop_
_atom_site_aniso_label
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_12
_atom_site_aniso_U_13
_atom_site_aniso_U_23
O2 0.01 0.02 0.03 0.001 0.002 0.003
""",
    "needs_loop.cif": _HEAD + """_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
_atom_site_calc_flag
Fe1 Fe3+ 1/4 0.2 0.3 ? .
O1 O2- 0.3 0.4 0.1 0 .
Q1 O 0.6 0.6 0.6 1 dum
Mn1 Mn 0 0 0 0.5 .
""",
}


def test_reader_fast_rows_equal_the_row_loop(monkeypatch, tmp_path):
    import xtalhpc.io.cif as cif

    paths = list(CIFS)
    for name, text in EXTRA.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    fast = {p: [_fields(c) for c in read_blocks(p, find_symmetry=False)] for p in paths}
    used = []
    real = cif._sites_fast

    def spy(*a, **k):
        out = real(*a, **k)
        used.append(out is not None)
        return out

    monkeypatch.setattr(cif, "_sites_fast", spy)
    for p in paths:
        read_blocks(p, find_symmetry=False)
    assert any(used) and not all(used)  # both paths occur in this set
    monkeypatch.setattr(cif, "_sites_fast", lambda *a, **k: None)
    for p in paths:
        assert [_fields(c) for c in read_blocks(p, find_symmetry=False)] == fast[p], p


def test_known_operator_loops_equal_the_general_path(monkeypatch):
    """An operator loop that gemmi's table knows is handled once per process
    (``cif_block._known_group``): the crystals, notes included, are those of the general path,
    on first reading (cache filled) and on second (cache hit)."""
    from xtalhpc.io import cif_block

    cif_block._KNOWN_GROUPS.clear()
    first = {p: [_fields(c) for c in read_blocks(p, find_symmetry=False)] for p in CIFS}
    hits = len(cif_block._KNOWN_GROUPS)
    second = {p: [_fields(c) for c in read_blocks(p, find_symmetry=False)] for p in CIFS}
    assert hits and second == first
    monkeypatch.setattr(cif_block, "_known_group", lambda *a: None)
    for p in CIFS:
        assert [_fields(c) for c in read_blocks(p, find_symmetry=False)] == first[p], p


ROUNDED = """data_rounded
_cell_length_a 3.2094
_cell_length_b 3.2094
_cell_length_c 5.2108
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 120
_symmetry_space_group_name_H-M 'P 63/m m c'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Mg1 Mg 0.3333 0.6667 0.25
Zn1 Zn 0.667 0.333 0.751
O1 O 0.1 0.2 0.3
"""


def _close(a, b, tol=1e-12):
    """Crystals (fields) equal, positions and cell to ``tol`` (the two paths sum the same
    shifts in another order)."""
    if isinstance(a, Exception) or isinstance(b, Exception):
        return str(a) == str(b)
    d = a.frac - b.frac
    d -= np.round(d)
    same = {k for k in vars(a) if k not in ("frac", "cell", "symmetry", "_laue")}
    return (np.abs(d).max() < tol and np.allclose(a.cell, b.cell, rtol=0, atol=tol)
            and np.array_equal(a.symmetry, b.symmetry)
            and all(_fields_equal(getattr(a, k), getattr(b, k)) for k in same))


def _fields_equal(x, y):
    return np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y


def test_per_site_symmetrisation_equals_the_partner_search(monkeypatch, tmp_path, shared_data):
    """The reader symmetrises each site from its own images (``kernels/sites.symmetrised_images``,
    the operators form a group); the general path searches partners among all atoms
    (``crystal.symmetry_fit``). Same crystals, notes (largest shift) included, on the bundled,
    test and shared CIFs and on a block with special positions written to 3-4 decimals."""
    import xtalhpc.io.cif as cif

    (tmp_path / "rounded.cif").write_text(ROUNDED)
    paths = [tmp_path / "rounded.cif", *CIFS, *sorted((shared_data / "structures").rglob("*.cif"))[::3]]
    calls = []
    real = cif._expand_symmetrised

    def spy(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(cif, "_expand_symmetrised", spy)
    per_site = {p: read_blocks(p, find_symmetry=False) for p in paths}
    assert len(calls) > 100
    rounded = per_site[paths[0]][0]
    assert any("positions symmetrised" in n for n in rounded.notes)
    assert np.allclose(rounded.frac[rounded.species.index("Mg")][:2] % 1, [1 / 3, 2 / 3], atol=1e-12)
    monkeypatch.setattr(cif, "METRIC_TOL", -1.0)  # every block through the general path
    calls.clear()
    for p in paths:
        general = read_blocks(p, find_symmetry=False)
        assert len(general) == len(per_site[p]) and all(map(_close, per_site[p], general)), p
    assert not calls


def test_atom_kinds_equal_numpy_unique_rows(rng):
    """Symmetry finding's atom kinds (``findsym._atom_kinds``, one lexsort) are the inverse of
    ``np.unique(rows, axis=0)``, ids in the rows' lexicographic order, on the repository's
    structures and on random ones with repeated species, occupancies, B and charges."""
    from xtalhpc.findsym import _atom_kinds

    def by_unique(c):
        names = {s: i for i, s in enumerate(sorted(set(c.species)))}
        cols = [np.array([names[s] for s in c.species], dtype=float), c.charge.astype(float), c.occupancy,
                c.b_iso]
        if c.scattering_length is not None:
            cols.append(np.nan_to_num(c.scattering_length, nan=-1e300))
        return np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)[1].reshape(-1)

    cs = _structures()
    for k in range(40):
        n = int(rng.integers(1, 60))
        cs.append(Crystal(cell=[5, 6, 7, 90, 90, 90], frac=rng.random((n, 3)),
                          species=[["Fe2+", "Fe3+", "O", "Na"][i] for i in rng.integers(0, 4, n)],
                          occupancy=rng.choice([1.0, 0.5, 0.25], n), b_iso=rng.choice([0.5, 1.0, 0.0], n),
                          scattering_length=(rng.choice([np.nan, 3.0], n) if k % 3 == 0 else None)))
    for c in cs:
        assert np.array_equal(_atom_kinds(c), by_unique(c))


def test_group_arrays_equal_the_operators_arrays():
    """``_group_arrays`` (from the coset representatives and centring vectors) gives the arrays
    of the group's operators in iteration order, for every setting of gemmi's table and for
    groups built from shifted operators (translations outside [0, 1))."""
    import gemmi

    from xtalhpc.io.cif_block import _group_arrays, _op_arrays

    groups = [sg.operations() for sg in gemmi.spacegroup_table()]
    for hm in ("F m -3 m", "I a -3 d", "R -3 c:H", "C 1 2/c 1"):
        ops = list(gemmi.find_spacegroup_by_name(hm).operations())
        den = gemmi.Op.DEN
        shifted = [op.translated([-den, 2 * den, 0]) if i % 3 == 1 else op for i, op in enumerate(ops)]
        g = gemmi.GroupOps(shifted)
        g.add_missing_elements()
        groups.append(g)
    for g in groups:
        got, want = _group_arrays(g), _op_arrays([op for op in g])
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, want))


def _structures():
    out = []
    for p in CIFS:
        out += [c for c in read_blocks(p) if not isinstance(c, Exception)]
    return out


def test_unique_images_are_merge_sites_openers():
    from xtalhpc_kernels.sites import merge_sites, unique_images

    rng = np.random.default_rng(3)
    lat = np.ascontiguousarray(lattice_vectors([7.0, 8.0, 9.0, 80.0, 95.0, 110.0]))
    for m in (1, 4, 24, 48):
        images = rng.random((30, m, 3))
        images[::3, m // 2:] = images[::3, : m - m // 2] + rng.normal(0, 0.002, (10, m - m // 2, 3))
        images -= np.floor(images)
        keep = np.empty(images.shape[:2], dtype=bool)
        unique_images(np.ascontiguousarray(images), lat, 0.1, keep)
        for i in range(len(images)):
            site = np.empty(m, dtype=np.int64)
            merge_sites(np.ascontiguousarray(images[i]), lat, 0.1, site)
            opener = np.r_[True, site[1:] > np.maximum.accumulate(site)[:-1]]
            assert np.array_equal(keep[i], opener)


def test_merge_sites_binned_equals_merge_sites():
    from xtalhpc_kernels.sites import merge_sites, merge_sites_binned

    def same(frac, lat, tol):
        a = np.empty(len(frac), dtype=np.int64)
        b = np.empty(len(frac), dtype=np.int64)
        assert merge_sites(frac, lat, tol, a) == merge_sites_binned(frac, lat, tol, b)
        assert np.array_equal(a, b)

    for c in _structures():
        same(np.ascontiguousarray(c.frac), np.ascontiguousarray(lattice_vectors(c.cell)), 0.05)
    rng = np.random.default_rng(1)
    binned_used = 0
    for k in range(60):
        n = int(rng.integers(64, 600))
        frac = rng.random((n, 3)) * 3 - 1  # unwrapped coordinates too
        if k % 2:
            frac[n // 2:] = frac[: n - n // 2] + rng.normal(0, 0.004, (n - n // 2, 3))  # mixed sites
        cell = [*rng.uniform(8, 25, 3), *rng.uniform(70, 110, 3)]
        lat = np.ascontiguousarray(lattice_vectors(cell))
        for tol in (0.05, 0.3):
            same(np.ascontiguousarray(frac), lat, tol)
        binned_used += n >= 64
    assert binned_used


def _partners_by_full_search(frac, kind, occ, b_iso, rot, trans, tol):
    """The partner rule of ``symmetry_partners`` over all atom pairs (no bins): the atom of the
    same kind, occupancy and B nearest to each image (periodic Chebyshev distance < tol, ties to
    the lower index), -1 where none."""
    y = (rot[:, None, :, 0] * frac[None, :, None, 0] + rot[:, None, :, 1] * frac[None, :, None, 1]
         + rot[:, None, :, 2] * frac[None, :, None, 2] + trans[:, None, :])
    yw = y - np.floor(y)
    yw[yw >= 1.0] = 0.0
    w = frac - np.floor(frac)
    w[w >= 1.0] = 0.0
    d = yw[:, :, None, :] - w[None, None, :, :]
    dm = np.abs(d - np.floor(d + 0.5)).max(axis=3)
    same = ((kind[:, None] == kind[None, :]) & (np.abs(occ[:, None] - occ[None, :]) < 1e-6)
            & (np.abs(b_iso[:, None] - b_iso[None, :]) < 1e-6))
    dm = np.where(same[None] & (dm < tol), dm, np.inf)
    best = dm.argmin(axis=2)  # the first (lowest index) of equal minima
    return np.where(np.isfinite(dm.min(axis=2)), best, -1)


def test_symmetry_partners_equal_a_full_search():
    """The partner search bins on a grid offset to keep special positions off its faces: the
    partners are those of a search over all pairs, on the bundled and test CIFs (their own
    operators) and on random cells with atoms on special positions, at several tolerances."""
    from xtalhpc_kernels.symmetry import symmetry_partners

    def check(frac, kind, occ, b_iso, ops, tol):
        rot = np.ascontiguousarray(ops[:, :, :3])
        trans = np.ascontiguousarray(ops[:, :, 3])
        partner = np.full((len(ops), len(frac)), -1, dtype=np.int64)
        acc = np.zeros((len(frac), 3))
        bad = symmetry_partners(np.ascontiguousarray(frac), kind, occ, b_iso, rot, trans,
                                np.ascontiguousarray(np.linalg.inv(rot)), tol, partner, acc)
        want = _partners_by_full_search(frac, kind, occ, b_iso, rot, trans, tol)
        if bad < 0:
            assert (want >= 0).all() and np.array_equal(partner, want)
        else:  # the first (operation, atom) without a partner, in operation-major order
            assert bad == int(np.flatnonzero((want < 0).reshape(-1))[0])
        return bad < 0

    checked = 0
    for c in _structures():
        if c.symmetry is None:
            continue
        kind = np.unique(np.asarray(c.species), return_inverse=True)[1].reshape(-1).astype(np.int64)
        for tol in (1e-3, 0.1 / float(min(c.cell[:3])), 0.04):
            checked += check(c.frac, kind, c.occupancy, c.b_iso, c.symmetry, tol)
    assert checked
    rng = np.random.default_rng(7)
    e = np.eye(3)
    half = np.full((3, 1), 0.5)
    zero = np.zeros((3, 1))
    ops = np.array([np.hstack([e, zero]), np.hstack([-e, zero]), np.hstack([e, half]), np.hstack([-e, half])])
    found = 0
    for k in range(40):
        n = int(rng.integers(2, 80))
        den = (2, 3, 4, 6, 8, 12, 24)[k % 7]
        base = rng.integers(0, den, (n, 3)) / den  # special positions, many on bin faces
        base[::5] = rng.random((len(base[::5]), 3))
        # the orbits under the group (atoms on special positions repeated: ties to the lower index)
        frac = np.concatenate([base @ op[:, :3].T + op[:, 3] for op in ops])
        frac[1::7] += rng.normal(0, 2e-4, (len(frac[1::7]), 3))  # near, not on, the exact images
        frac -= np.floor(frac)
        kind = np.tile(rng.integers(0, 3, n), 4).astype(np.int64)
        b_iso = np.tile(rng.choice([0.5, 1.0], n), 4)
        for tol in (1e-3, 0.01, 0.03, 0.2):
            found += check(frac, kind, np.ones(len(frac)), b_iso, ops, tol)
    assert found


def test_volume_bound_from_the_angles():
    """The Crystal and the CIF reader skip det(G) where (V / abc)^2 from the angles
    (``rel_volume_sq``) is far above their bounds: it agrees with det(G) / (abc)^2 to rounding,
    so the skip never passes a cell the determinant would reject; random and nearly flat cells."""
    from xtalhpc.crystal import cell_volume, rel_volume_sq

    rng = np.random.default_rng(5)
    angles = list(rng.uniform(1, 179, (3000, 3)))
    for _ in range(3000):  # nearly flat: alpha + beta + gamma ~ 360 or one angle ~ the sum/difference of two
        al, be = rng.uniform(20, 170, 2)
        ga = (360 - al - be if rng.random() < 0.5 else abs(al - be)) + rng.normal(0, 1e-3)
        if 0 < ga < 180:
            angles.append(np.array([al, be, ga])[rng.permutation(3)])
    for ang in angles:
        lengths = rng.uniform(1e-3, 1e3, 3)
        cell = np.r_[lengths, ang]
        exact = cell_volume(cell) / float(np.prod(lengths))
        quick = rel_volume_sq(*ang)
        assert abs(quick - np.sign(exact) * exact * exact) < 1e-12
        if quick > 1e-10:
            assert exact > 1e-6
        if quick > 4e-6:
            assert exact > 1e-3


def test_crystal_positions_stay_below_one():
    c = Crystal([4.0] * 3 + [90.0] * 3, [[-1e-17, 0.5, 1.0], [0.25, -0.0, 2.0 - 1e-17]], ["Fe", "Fe"],
                [1.0, 1.0], [0.5, 0.5])
    assert c.frac.min() >= 0.0 and c.frac.max() < 1.0
    assert c.frac[0, 0] == 0.0 and c.frac[0, 2] == 0.0
    assert np.array_equal(Crystal(c.cell, c.frac, c.species, c.occupancy, c.b_iso).frac, c.frac)


def test_one_structure_with_several_threads():
    import numba

    from xtalhpc.simulate import simulate_batch

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread configured")
    c = read_blocks(ROOT / "xtalhpc" / "data" / "structures" / "Rutile.cif")[0]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        two = simulate_batch([c]).patterns
        assert numba.get_num_threads() == 2
        numba.set_num_threads(1)
        one = simulate_batch([c]).patterns
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two)
