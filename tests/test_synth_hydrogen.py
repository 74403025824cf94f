"""Molecular crystals with hydrogen (``SynthConfig(hydrogen_fraction=F)``, ``xtalhpc generate
--synthetic-hydrogen F``): their compositions, Wyckoff orbits, volumes and symmetry, the pool
with hydrogen, the formula table's hydrogen-bearing compositions, the incoherent background of
their patterns, and the errors."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from xtalhpc.cli import main
from xtalhpc.errors import InputError
from xtalhpc.synth import DEFAULT_WEIGHTS, ElementPool, SynthConfig, generate_crystal, spglib_number
from xtalhpc.synth.compositions import KEMPSTER_LIPSON, molecular_composition
from xtalhpc.synth.elements import HYDROGEN_POOL_ELEMENTS
from xtalhpc.synth.formulas import FormulaTable
from xtalhpc.synth.generator import HYDROGEN_VOLUME, _pool_of, _Uniforms
from xtalhpc.synth.wyckoff import wyckoff_table

pytest.importorskip("spglib")

MOLECULAR = re.compile(r"composition (\S+) Z=(\d+) \(molecular\)")


def _note(c):
    return next((m for m in map(MOLECULAR.fullmatch, c.notes) if m), None)


def test_hydrogen_fraction_off_leaves_every_crystal_as_before():
    from test_synth import DEFAULT_CRYSTALS_SHA256, _crystals_digest

    assert _crystals_digest(SynthConfig(hydrogen_fraction=0.0)) == DEFAULT_CRYSTALS_SHA256


def test_pool_with_hydrogen_never_draws_it_at_random_and_keeps_the_other_elements():
    pool = _pool_of(SynthConfig(hydrogen_fraction=0.5))
    base = ElementPool.default()
    assert "H" in pool.elements and "H" not in base.elements
    k = pool.index_of["H"]
    assert pool.weights[k] == 0 and pool.volume[k] == HYDROGEN_VOLUME and abs(pool.radius[k] - 0.31) < 0.01
    for e in base.elements:  # the same probabilities, radii and volumes for every other element
        i, j = pool.index_of[e], base.index_of[e]
        assert (pool.weights[i], pool.radius[i], pool.volume[i]) == (base.weights[j], base.radius[j], base.volume[j])
    assert _pool_of(SynthConfig(hydrogen_fraction=0.5)) is pool  # built once per pool
    with pytest.raises(InputError, match="in the pool already"):
        pool.with_element("H")


@pytest.mark.parametrize("sg", [2, 14, 19, 61])
def test_molecular_crystals_have_their_molecule_z_volume_and_exactly_their_group(sg):
    cfg = SynthConfig(hydrogen_fraction=1.0)
    general = int(wyckoff_table(sg).multiplicity[0])
    seen = 0
    for i in range(6):
        c = generate_crystal(sg, 3, i, cfg)
        m = _note(c)
        if m is None:
            continue
        seen += 1
        from xtalhpc.synth.formulas import parse_formula

        comp = {e: int(v) for e, v in parse_formula(m.group(1)).items()}
        z = int(m.group(2))
        assert z in (general, general // 2)  # Z' = 1 or 1/2
        assert Counter(c.species) == Counter({e: n * z for e, n in comp.items()})
        assert "C" in comp and "H" in comp
        heavy = sum(n for e, n in comp.items() if e != "H") * z
        lo, hi = KEMPSTER_LIPSON
        # the cell grows by 10 % steps only when atoms do not fit
        assert lo * heavy * 0.999 <= c.volume <= hi * heavy * 3.2
        assert spglib_number(c, 1e-3) == sg
    assert seen >= 5, seen


def test_molecules_stay_out_of_groups_of_high_order_and_fit_max_atoms():
    cfg = SynthConfig(hydrogen_fraction=1.0)
    for i in range(4):
        assert _note(generate_crystal(225, 5, i, cfg)) is None  # Fm-3m: 192 atoms on the general position
    small = SynthConfig(hydrogen_fraction=1.0, max_atoms=40)
    for i in range(6):
        c = generate_crystal(14, 5, i, small)
        assert c.n_atoms <= 40


def test_molecular_compositions():
    rng = _Uniforms(np.random.default_rng(0))
    sizes = []
    for _ in range(300):
        els, counts = molecular_composition(rng)
        comp = dict(zip(els, counts))
        assert list(els) == sorted(els) and 2 <= comp["C"] <= 14 and comp["H"] >= 1
        assert all(e in HYDROGEN_POOL_ELEMENTS for e in els)
        sizes.append(sum(counts))
    assert 3 <= min(sizes) and max(sizes) <= 50 and 12 <= np.median(sizes) <= 30
    rng = _Uniforms(np.random.default_rng(1))
    assert all(molecular_composition(rng, 10)[1][0] <= 3 for _ in range(50))  # small cells: small molecules


def test_share_of_molecular_crystals():
    cfg = SynthConfig(hydrogen_fraction=0.4)
    n = sum(_note(generate_crystal(14, 9, i, cfg)) is not None for i in range(60))
    assert 12 <= n <= 36, n


def test_formula_table_with_hydrogen(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("reduced_formula,spacegroup_number\nNaPH4O5,2\nCaTiO3,2\n")
    without = FormulaTable.from_csv(p, DEFAULT_WEIGHTS)
    with_h = FormulaTable.from_csv(p, HYDROGEN_POOL_ELEMENTS)
    assert len(without.compositions(2)) == 1 and without.skipped == {"element_outside_pool": 1}
    assert len(with_h.compositions(2)) == 2
    with pytest.raises(InputError, match="outside the element pool"):
        SynthConfig(formula_fraction=1.0, formulas=with_h)  # hydrogen needs hydrogen_fraction > 0
    cfg = SynthConfig(formula_fraction=1.0, formulas=with_h, hydrogen_fraction=0.01)
    species = [set(generate_crystal(2, 1, i, cfg).species) for i in range(30)]
    assert any("H" in s for s in species) and any(s >= {"Ca", "Ti", "O"} for s in species)


def test_config_errors():
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(InputError, match="hydrogen_fraction"):
            SynthConfig(hydrogen_fraction=bad)


def test_generate_synthetic_hydrogen(tmp_path):
    """``--synthetic-hydrogen F`` reaches the config digest, the re-launch argv and the crystals; the
    hydrogen-bearing patterns carry the incoherent background, the others none."""
    from xtalhpc.cli import build_parser
    from xtalhpc.commands.generate import config_from_args
    from xtalhpc.dataset import open_dataset
    from xtalhpc.generate import GenerateConfig
    from xtalhpc.generate.config import config_to_argv
    from xtalhpc.generate.items import _synth_config

    assert "synthetic_hydrogen" not in GenerateConfig(sources=(), output="x", synthetic=5).digest_fields()
    hy = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_hydrogen=0.25)
    assert hy.digest_fields()["synthetic_hydrogen"] == 0.25
    assert config_from_args(build_parser().parse_args(["generate", *config_to_argv(hy)])) == hy
    for bad, match in [(dict(synthetic=5, synthetic_hydrogen=2.0), "--synthetic-hydrogen"),
                       (dict(synthetic=0, sources=("a.cif",), synthetic_hydrogen=0.5), "needs --synthetic")]:
        with pytest.raises(InputError, match=match):
            GenerateConfig(**{"sources": (), "output": "x", **bad})
    table = tmp_path / "t.csv"
    table.write_text("reduced_formula,spacegroup_number\n" + "".join(f"X,{sg}\n" for sg in (14,) * 3))
    out = tmp_path / "ds"
    assert main(["generate", "--synthetic", "8", "--synthetic-prior", str(table), "--synthetic-hydrogen", "0.5",
                 "--output", str(out), "--quiet", "--seed", "4", "--split", "none"]) == 0
    crystals = [generate_crystal(14, 4, i, _synth_config(0.0, 0.0, None, 0.0, 0.5)) for i in range(8)]
    has_h = np.array(["H" in c.species for c in crystals])
    assert 0 < has_h.sum() < 8
    with open_dataset(out) as d:
        assert list(d.read("n_atoms")) == [c.n_atoms for c in crystals]
        floor = d.read("pattern").min(axis=1)
    assert (floor[has_h] > 0.01).all() and (floor[~has_h] < 1e-6).all()
