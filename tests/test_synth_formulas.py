"""Synthetic crystals with real compositions (``SynthConfig(formula_fraction=F, formulas=...)``,
``xtalhpc generate --synthetic-formulas F``): the formula parser, the table reader, the crystals'
stoichiometry and symmetry, and the errors."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from xtalhpc.errors import InputError
from xtalhpc.synth import DEFAULT_WEIGHTS, SynthConfig, generate_crystal, spglib_number
from xtalhpc.synth.formulas import FormulaTable, parse_formula

pytest.importorskip("spglib")

ROWS = [  # (formula, space group): real compositions, one unusable of each kind
    ("CaTiO3", 62), ("Mg2SiO4", 62), ("NaCl", 225), ("CaF2", 225), ("MgAl2O4", 227), ("BaTiO3", 99),
    ("CaMg(SiO3)2", 15), ("KAlSi3O8", 2), ("TiO2", 136), ("ZnS", 216),
    ("NaCl", 225),            # duplicate
    ("La6F17.6", 164),        # non-stoichiometric
    ("NaPH4O5", 2),           # hydrogen: not in the default pool
    ("LiNaKRbCsMgCaSrBaO9", 2),  # 10 elements
    ("Ca(OH", 2),             # unbalanced
]


def _table(tmp_path, rows=ROWS, header="chemsys,reduced_formula,icsd_id,spacegroup_number"):
    p = tmp_path / "formulas.csv"
    p.write_text(header + "\n" + "\n".join(f"X,{f},{i},{sg}" for i, (f, sg) in enumerate(rows)) + "\n")
    return p


def test_parse_formula():
    assert parse_formula("CaMg(SiO3)2") == {"Ca": 1, "Mg": 1, "Si": 2, "O": 6}
    assert parse_formula("Na5P3(H3O4)4") == {"Na": 5, "P": 3, "H": 12, "O": 16}
    assert parse_formula("K2(Fe(CN)6)") == {"K": 2, "Fe": 1, "C": 6, "N": 6}
    assert parse_formula("La6F17.6") == {"La": 6, "F": pytest.approx(17.6)}
    for bad in ("", "Ca(OH", "CaO)2", "ca", "Ca-O", "()"):
        with pytest.raises(ValueError):
            parse_formula(bad)


def test_table_keeps_distinct_integer_compositions_of_pool_elements(tmp_path):
    t = FormulaTable.from_csv(_table(tmp_path), DEFAULT_WEIGHTS)
    assert t.rows == len(ROWS)
    assert t.skipped == {"duplicate": 1, "element_outside_pool": 1, "non_integer": 1, "too_many_elements": 1,
                         "unparsable": 1}
    assert t.n_compositions == 10
    assert t.compositions(62) == ((("Ca", "O", "Ti"), (1, 3, 1)), (("Mg", "O", "Si"), (2, 4, 1)))
    assert t.compositions(1) == ()
    assert len(t.sha256) == 64 and "H" not in t.elements


def test_table_errors_name_file_and_field(tmp_path):
    with pytest.raises(InputError, match="formula column") as e:
        FormulaTable.from_csv(_table(tmp_path, header="chemsys,name,icsd_id,spacegroup_number"), DEFAULT_WEIGHTS)
    assert "formulas.csv" in str(e.value)
    with pytest.raises(InputError, match="row 3: space group 231"):
        FormulaTable.from_csv(_table(tmp_path, rows=[("NaCl", 225), ("NaCl", 231)]), DEFAULT_WEIGHTS)
    with pytest.raises(InputError, match="cannot read"):
        FormulaTable.from_csv(tmp_path / "missing.csv", DEFAULT_WEIGHTS)
    with pytest.raises(InputError, match="no rows"):
        FormulaTable.from_csv(_table(tmp_path, rows=[]), DEFAULT_WEIGHTS)


@pytest.mark.parametrize("sg", [62, 225, 227, 99, 15, 2, 136, 216])
def test_formula_crystals_have_the_formula_and_exactly_their_group(tmp_path, sg):
    t = FormulaTable.from_csv(_table(tmp_path), DEFAULT_WEIGHTS)
    cfg = SynthConfig(formula_fraction=1.0, formulas=t)
    wanted = [dict(zip(els, cnt)) for els, cnt in t.compositions(sg)]
    reduced = [_reduce(w) for w in wanted]
    used = 0
    for i in range(6):
        c = generate_crystal(sg, 3, i, cfg)
        assert spglib_number(c, 1e-3) == sg, c.notes
        note = [x for x in c.notes if x.startswith("composition ")]
        if note:  # else the fallback: no occupation of the drawn composition fitted
            used += 1
            comp = _reduce(Counter(c.species))
            assert comp in reduced, (comp, c.notes)
            z = int(note[0].split("Z=")[1].split()[0])
            formula_atoms = sum(next(w for w in wanted if _reduce(w) == comp).values())
            assert c.n_atoms == z * formula_atoms
        assert generate_crystal(sg, 3, i, cfg).notes == c.notes  # reproducible
    assert used >= 4, used


def _reduce(w):
    g = 0
    for v in w.values():
        g = math.gcd(g, v)
    return {e: v // g for e, v in w.items()}


def test_formula_fraction_off_leaves_every_crystal_as_before(tmp_path):
    from test_synth import DEFAULT_CRYSTALS_SHA256, _crystals_digest

    t = FormulaTable.from_csv(_table(tmp_path), DEFAULT_WEIGHTS)
    assert _crystals_digest(SynthConfig(formula_fraction=0.0, formulas=t)) == DEFAULT_CRYSTALS_SHA256


def test_group_without_compositions_falls_back(tmp_path):
    t = FormulaTable.from_csv(_table(tmp_path), DEFAULT_WEIGHTS)
    cfg = SynthConfig(formula_fraction=1.0, formulas=t)
    for i in range(4):
        c = generate_crystal(14, 1, i, cfg)
        assert not any(x.startswith("composition ") for x in c.notes)
        assert spglib_number(c, 1e-3) == 14


def test_share_of_formula_crystals(tmp_path):
    t = FormulaTable.from_csv(_table(tmp_path, rows=[("CaTiO3", 62), ("Mg2SiO4", 62), ("NaCl", 225)]),
                              DEFAULT_WEIGHTS)
    cfg = SynthConfig(formula_fraction=0.5, formulas=t)
    n = sum(any(x.startswith("composition ") for x in generate_crystal(62, 2, i, cfg).notes) for i in range(40))
    assert 10 <= n <= 30, n


def test_config_errors(tmp_path):
    t = FormulaTable.from_csv(_table(tmp_path), DEFAULT_WEIGHTS)
    with pytest.raises(InputError, match="needs a formula table"):
        SynthConfig(formula_fraction=0.5)
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(InputError, match="formula_fraction"):
            SynthConfig(formula_fraction=bad, formulas=t)
    from xtalhpc.synth import ElementPool

    with pytest.raises(InputError, match="outside the element pool"):
        SynthConfig(formula_fraction=0.5, formulas=t, pool=ElementPool.from_weights({"Na": 1, "Cl": 1}))


def test_single_element_compositions_keep_their_group(tmp_path):
    """An element (Fe) in a low-symmetry group: two equal atoms alone are centrosymmetric, so such a
    crystal is checked and redrawn (P2 and P3 gave P2/m and P-3 before the check)."""
    groups = (1, 2, 3, 4, 143, 146, 195)
    t = FormulaTable.from_csv(_table(tmp_path, rows=[("Fe", g) for g in groups]), DEFAULT_WEIGHTS)
    cfg = SynthConfig(formula_fraction=1.0, formulas=t)
    for sg in groups:
        for i in range(10):
            c = generate_crystal(sg, 5, i, cfg)
            assert spglib_number(c, 1e-3) == sg, (sg, i, c.notes)
