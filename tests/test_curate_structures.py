"""Structure-level augmentation (space group kept, reproducible), H/D, structure-type keys of crystals."""
from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest

from xtalhpc.crystal import Crystal, cell_metric
from xtalhpc.curate import (StructureAugmentConfig, StructureAugmenter, deuterate, detect_space_group,
                            execute_plan, incoherent_background, incoherent_background_level, plan_balance,
                            structure_type_key)
from xtalhpc.scattering import neutron_b


def expand(name, sg, cell, sites, b_iso=0.5):
    """Full unit cell from an asymmetric unit [(species, (x, y, z), occupancy)] with gemmi's operations."""
    ops = list(gemmi.find_spacegroup_by_number(sg).operations())
    frac, species, occ = [], [], []
    for sp, xyz, o in sites:
        pts = []
        for op in ops:
            p = np.mod(np.array(op.apply_to_xyz(list(map(float, xyz)))), 1.0)
            if not any(np.max(np.abs((p - q + 0.5) % 1.0 - 0.5)) < 1e-5 for q in pts):
                pts.append(p)
        frac += pts
        species += [sp] * len(pts)
        occ += [o] * len(pts)
    return Crystal(cell=cell, frac=frac, species=species, occupancy=occ, b_iso=[b_iso] * len(frac),
                   space_group=sg, name=name)


HAND_BUILT = {
    "NaCl": (225, [5.64, 5.64, 5.64, 90, 90, 90], [("Na", (0, 0, 0), 1), ("Cl", (0.5, 0.5, 0.5), 1)]),
    "rutile": (136, [4.594, 4.594, 2.959, 90, 90, 90], [("Ti", (0, 0, 0), 1), ("O", (0.305, 0.305, 0), 1)]),
    "monoclinic P21/c": (14, [5.1, 8.2, 7.3, 90, 103.5, 90],
                         [("Zn", (0.12, 0.23, 0.34), 1), ("O", (0.41, 0.07, 0.18), 1), ("S", (0.73, 0.61, 0.9), 1)]),
    "wurtzite": (186, [3.25, 3.25, 5.21, 90, 90, 120], [("Zn", (1 / 3, 2 / 3, 0), 1), ("O", (1 / 3, 2 / 3, 0.382), 1)]),
    "Bi2Te3": (166, [4.38, 4.38, 30.5, 90, 90, 120],
               [("Bi", (0, 0, 0.4), 1), ("Te", (0, 0, 0), 1), ("Se", (0, 0, 0.21), 1)]),
    "Pnma": (62, [5.5, 7.8, 5.5, 90, 90, 90],
             [("La", (0.05, 0.25, 0.99), 1), ("Mn", (0, 0, 0.5), 1), ("O", (0.49, 0.25, 0.07), 1),
              ("O", (0.28, 0.04, 0.72), 1)]),
    "triclinic": (2, [5.0, 6.0, 7.0, 80, 85, 95], [("K", (0.1, 0.2, 0.3), 1), ("Br", (0.6, 0.4, 0.1), 1)]),
    "mixed-site perovskite": (221, [3.88, 3.88, 3.88, 90, 90, 90],
                              [("La", (0, 0, 0), 0.5), ("Sr", (0, 0, 0), 0.5), ("Mn", (0.5, 0.5, 0.5), 1),
                               ("O", (0.5, 0.5, 0), 1)]),
}


def built(name):
    sg, cell, sites = HAND_BUILT[name]
    return expand(name, sg, cell, sites)


def same_crystal(a, b):
    return (np.array_equal(a.cell, b.cell) and np.array_equal(a.frac, b.frac) and a.species == b.species)


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_augmentation_keeps_space_group_and_is_reproducible(name):
    c = built(name)
    assert detect_space_group(c) == c.space_group
    aug = StructureAugmenter(c)
    outs = [aug.sample(seed=7, index=i) for i in range(4)]
    for new, rec in outs:
        assert detect_space_group(new) == c.space_group == rec["space_group"]
        assert new.space_group == c.space_group and new.n_atoms == c.n_atoms
        assert {o["op"] for o in rec["ops"]} >= {"strain", "jitter"}
    # same (seed, index) -> identical crystal and record, also from a fresh augmenter
    new2, rec2 = StructureAugmenter(c).sample(seed=7, index=2)
    assert same_crystal(new2, outs[2][0]) and rec2 == outs[2][1]
    assert not same_crystal(outs[0][0], outs[1][0])
    assert not same_crystal(aug.sample(seed=8, index=2)[0], outs[2][0])


def test_strain_respects_the_crystal_system():
    for name, check in [("NaCl", lambda c: np.allclose(c[:3], c[0], rtol=1e-12) and np.allclose(c[3:], 90)),
                        ("wurtzite", lambda c: math.isclose(c[0], c[1], rel_tol=1e-12)
                         and np.allclose(c[3:], [90, 90, 120])),
                        ("monoclinic P21/c", lambda c: np.allclose(c[[3, 5]], 90))]:
        aug = StructureAugmenter(built(name), StructureAugmentConfig(substitute=False, jitter_sigma=0,
                                                                     strain_sigma=0.02))
        for i in range(3):
            new, _ = aug.sample(1, i)
            assert check(new.cell), (name, new.cell)
            assert not np.allclose(new.cell, built(name).cell)


def test_jitter_moves_only_wyckoff_free_coordinates():
    cfg = StructureAugmentConfig(substitute=False, strain_sigma=0, jitter_sigma=0.05)
    nacl = built("NaCl")
    new, rec = StructureAugmenter(nacl, cfg).sample(3, 0)
    assert rec["ops"][0]["max_A"] < 1e-12 and np.allclose(new.frac, nacl.frac)   # no free parameter
    wz = built("wurtzite")
    new, rec = StructureAugmenter(wz, cfg).sample(3, 0)
    d = (new.frac - wz.frac + 0.5) % 1.0 - 0.5
    assert np.allclose(d[:, :2], 0, atol=1e-12)                    # x, y fixed at 1/3, 2/3
    assert np.abs(d[:, 2]).max() > 1e-4                             # z is free
    mixed = built("mixed-site perovskite")
    new, _ = StructureAugmenter(mixed, StructureAugmentConfig(strain_sigma=0)).sample(5, 1)
    la = [i for i, s in enumerate(new.species) if s not in ("Mn", "O")]
    assert len({tuple(np.round(new.frac[i], 12)) for i in la}) == 1   # both halves of the mixed site together


def test_substitution_uses_the_table_and_clears_overrides():
    c = built("NaCl").replace(scattering_length=np.full(8, 1.0))
    new, rec = StructureAugmenter(c, StructureAugmentConfig(strain_sigma=0, jitter_sigma=0)).sample(0, 0)
    sub = rec["ops"][0]
    assert sub["op"] == "substitute" and (sub["from"], sub["to"]) == ("Cl", "Br")
    assert new.formula == "BrNa" and new.cell[0] > c.cell[0]
    br = np.array([s == "Br" for s in new.species])
    assert np.all(np.isnan(new.scattering_length[br])) and np.all(new.scattering_length[~br] == 1.0)
    assert structure_type_key(new) == structure_type_key(c) == "AB|225"


def test_structure_type_key_of_crystal_matches_its_formula():
    assert structure_type_key(built("mixed-site perovskite")) == structure_type_key(
        {"formula": "La0.5Sr0.5MnO3", "space_group": 221}) == "ABC3|221"
    assert structure_type_key(built("rutile")) == "AB2|136"


def test_execute_plan_yields_members_and_augmented_variants():
    crystals = [built("NaCl"), built("rutile"), built("wurtzite")]
    plan = plan_balance([c.space_group for c in crystals] + [225], target=3, seed=4)
    crystals.append(built("NaCl"))
    out = list(execute_plan(plan, crystals))
    assert len(out) == 9
    for item, crystal, rec in out:
        assert crystal is not None and detect_space_group(crystal) == item.label
        assert (item.variant == 0) == (rec["ops"] == [])


@pytest.mark.parametrize("relpath", [
    "structures/pyxtal/examples/tutorials_notebook/lt_quartz.cif",
    "structures/pyxtal/examples/tutorials_notebook/aspirin.cif",
    "structures/pyxtal/pyxtal/database/cifs/BTO.cif",
    "structures/pyxtal/pyxtal/database/cifs/4-G225.cif",
])
def test_augmentation_of_real_structures(shared_data, relpath):
    path = shared_data / relpath
    if not path.exists():
        pytest.skip(f"{path} is absent")
    try:
        from xtalhpc.io import read_structures
        crystal = read_structures(path)[0]
    except ImportError:  # readers not there yet: gemmi directly
        st = gemmi.read_small_structure(str(path))
        sites = st.get_all_unit_cell_sites()
        uc = st.cell
        crystal = Crystal(cell=[uc.a, uc.b, uc.c, uc.alpha, uc.beta, uc.gamma],
                          frac=[[s.fract.x, s.fract.y, s.fract.z] for s in sites],
                          species=[s.element.name for s in sites], occupancy=[s.occ for s in sites],
                          b_iso=[0.5] * len(sites), name=path.stem)
    sg = detect_space_group(crystal)
    assert sg is not None
    aug = StructureAugmenter(crystal)
    for i in range(2):
        new, rec = aug.sample(11, i)
        assert detect_space_group(new) == sg
    assert same_crystal(StructureAugmenter(crystal).sample(11, 1)[0], new)


# ---- H/D --------------------------------------------------------------------------------------------

def nh4cl():
    # CsCl-type NH4Cl, P-43m, H on 4e (x, x, x)
    return expand("NH4Cl", 215, [3.87, 3.87, 3.87, 90, 90, 90],
                  [("N", (0, 0, 0), 1), ("H", (0.15, 0.15, 0.15), 1), ("Cl", (0.5, 0.5, 0.5), 1)])


def structure_factor(crystal, hkl):
    """F(h) = sum_j occ_j b_j exp(2 pi i h.x_j) exp(-B_j s^2) (fm): the oracle of DESIGN.md section 3."""
    b = np.array([neutron_b(s) for s in crystal.species])
    if crystal.scattering_length is not None:
        b = np.where(np.isnan(crystal.scattering_length), b, crystal.scattering_length)
    g_star = np.linalg.inv(cell_metric(crystal.cell))
    h = np.asarray(hkl, dtype=float)
    s2 = np.einsum("ij,jk,ik->i", h, g_star, h) / 4.0
    phase = np.exp(2j * np.pi * h @ crystal.frac.T)
    dw = np.exp(-np.outer(s2, crystal.b_iso))
    return (phase * dw * (crystal.occupancy * b)).sum(axis=1)


def test_deuteration_changes_F2_as_the_scattering_lengths_predict():
    assert neutron_b("H") == pytest.approx(-3.74, abs=0.01) and neutron_b("D") == pytest.approx(6.67, abs=0.01)
    c = nh4cl()
    d = deuterate(c)
    assert d.species.count("D") == 4 and "H" not in d.species and d.n_atoms == c.n_atoms
    assert np.array_equal(d.frac, c.frac) and d.formula == c.formula and "deuterated" in d.notes[-1]
    hkl = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 0, 0], [2, 1, 0], [2, 1, 1], [3, 1, 0]])
    f_h, f_d = structure_factor(c, hkl), structure_factor(d, hkl)
    is_h = np.array([s == "H" for s in c.species])
    s2 = np.einsum("ij,jk,ik->i", hkl, np.linalg.inv(cell_metric(c.cell)), hkl) / 4.0
    s_h = (np.exp(2j * np.pi * hkl @ c.frac[is_h].T) * np.exp(-np.outer(s2, c.b_iso[is_h]))).sum(axis=1)
    expected = f_h + (neutron_b("D") - neutron_b("H")) * s_h
    np.testing.assert_allclose(np.abs(f_d) ** 2, np.abs(expected) ** 2, rtol=1e-12, atol=1e-9)
    # at h = 0: |F|^2 = (sum b)^2
    b_sum = neutron_b("N") + neutron_b("Cl")
    assert abs(f_h[0]) ** 2 == pytest.approx((b_sum + 4 * neutron_b("H")) ** 2, rel=1e-12)
    assert abs(f_d[0]) ** 2 == pytest.approx((b_sum + 4 * neutron_b("D")) ** 2, rel=1e-12)
    assert not np.allclose(np.abs(f_h[1:]) ** 2, np.abs(f_d[1:]) ** 2)
    # no hydrogen: unchanged object
    nacl = built("NaCl")
    assert deuterate(nacl) is nacl


def test_deuteration_clears_hydrogen_overrides_only():
    c = nh4cl()
    c = c.replace(scattering_length=np.where([s == "N" for s in c.species], 9.0, -3.0))
    d = deuterate(c)
    is_d = np.array([s == "D" for s in d.species])
    assert np.all(np.isnan(d.scattering_length[is_d])) and np.all(d.scattering_length[~is_d] != 0)


def test_incoherent_background_of_hydrogen():
    c = nh4cl()
    per_h = 80.26 * 100 / (4 * math.pi)   # fm^2 per steradian per H
    assert incoherent_background(c) == pytest.approx(4 * per_h, rel=2e-3)
    assert incoherent_background(deuterate(c)) == pytest.approx(4 * 2.05 * 100 / (4 * math.pi), rel=2e-3)
    assert incoherent_background(built("NaCl")) == 0.0
    assert incoherent_background(c, all_elements=True) > incoherent_background(c)
    # proportional to the H content: a doubled cell has twice the H and twice the background
    doubled = Crystal(cell=c.cell * [2, 1, 1, 1, 1, 1],
                      frac=np.vstack([c.frac * [0.5, 1, 1], c.frac * [0.5, 1, 1] + [0.5, 0, 0]]),
                      species=c.species * 2, occupancy=np.tile(c.occupancy, 2), b_iso=np.tile(c.b_iso, 2))
    assert incoherent_background(doubled) == pytest.approx(2 * incoherent_background(c), rel=1e-12)
    lam = 1.5403
    level = incoherent_background_level(c, lam)
    assert level == pytest.approx(4 * math.pi / 180 * c.volume / lam**3 * 4 * 80.26 * 100, rel=2e-3)
    assert incoherent_background_level(c, 2 * lam) == pytest.approx(level / 8, rel=1e-12)


def _sites_reference(frac, lat, tol):
    """The greedy site merge written plainly: atom i opens a site unless taken; later free atoms
    within ``tol`` (Cartesian, fractional difference reduced per axis) join it."""
    n = len(frac)
    site = np.full(n, -1)
    nsite = 0
    for i in range(n):
        if site[i] >= 0:
            continue
        d = frac[i + 1:] - frac[i]
        d -= np.round(d)
        close = np.flatnonzero(np.linalg.norm(d @ lat, axis=1) < tol) + i + 1
        site[i] = nsite
        site[close[site[close] < 0]] = nsite
        nsite += 1
    return site, nsite


def test_site_merging_kernel_matches_the_plain_greedy_scan(rng):
    from xtalhpc.crystal import lattice_vectors
    from xtalhpc_kernels.sites import merge_sites

    for cell in ([4.0, 5.0, 6.0, 90, 90, 90], [5.1, 5.1, 7.3, 90, 90, 120], [4.2, 5.3, 6.1, 81, 97, 104]):
        lat = lattice_vectors(cell)
        for n in (1, 7, 60):
            frac = rng.random((n, 3))
            # clusters: copies within a few hundredths of an angstrom, some across the cell edge
            dup = rng.integers(0, n, n // 2)
            frac = np.vstack([frac, (frac[dup] + rng.normal(0, 0.004, (len(dup), 3))) % 1.0])
            for tol in (0.05, 0.3):
                site = np.empty(len(frac), dtype=np.int64)
                nsite = merge_sites(frac, lat, tol, site)
                ref, nref = _sites_reference(frac, lat, tol)
                assert nsite == nref
                np.testing.assert_array_equal(site, ref)


def test_mixed_sites_count_once_in_the_structure_type_key():
    # (Fe, Mg) sharing the octahedral site of a rock-salt oxide: one cation site, "AB"
    c = Crystal([4.2] * 3 + [90] * 3, [[0, 0, 0], [0, 0, 1e-4], [0.5, 0.5, 0.5]], ["Fe", "Mg", "O"], [0.5, 0.5, 1.0],
                [0.5, 0.5, 0.5], space_group=221)
    assert structure_type_key(c) == "AB|221"
    apart = c.replace(frac=np.array([[0, 0, 0], [0, 0, 0.1], [0.5, 0.5, 0.5]]))  # 0.42 A apart: two sites
    assert structure_type_key(apart) != "AB|221"
