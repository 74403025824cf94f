"""De-duplication, table reading, splits and balance plans (xtalhpc.curate)."""
from __future__ import annotations

import argparse
import csv
import importlib
import json

import pytest

from xtalhpc.curate import (anonymous_formula, assign_splits, canonical_formula, find_duplicates, plan_balance,
                            read_table, structure_type_key)
from xtalhpc.curate.dedup import cells_match
from xtalhpc.errors import InputError

POSTER_HEADER = ["Chemical Name", "ICSD Code", "PubYear", "Crystal System", "Space Group",
                 "a", "b", "c", "alpha", "beta", "gamma", "Volume"]


def write_table(path, rows, header=POSTER_HEADER, delimiter=","):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        for r in rows:
            w.writerow(r)
    return path


def cubic(name, code, year, sg, a):
    return [name, code, year, "cubic", sg, a, a, a, 90, 90, 90, round(a**3, 2) if isinstance(a, float) else ""]


# Planted duplicates. Expected groups (1 % on lengths, 1 deg on angles):
PLANTED = [
    cubic("NaCl", 1, "1990", 225, 5.640),          # G1
    cubic("NaCl", 2, "2001 4/1/2007", 225, 5.640), # G1 exact duplicate, newest -> kept
    cubic("NaCl", 3, "1985", 225, 5.660),          # G1 within tolerance (0.35 %)
    cubic("Na1Cl1", 5, "2001", 225, 5.641),        # G1 same formula written differently; year tie -> id 2 kept
    cubic("NaCl", 4, "1999", 225, 5.750),          # G2 just outside (1.6 % from 5.660)
    cubic("KCl", 20, "1970", 225, 6.290),          # G3
    cubic("KCl", 21, "1971", 225, 6.350),          # G3 inside (0.945 %)
    cubic("KCl", 22, "1972", 225, 6.420),          # G4 just outside (1.09 % from 6.350)
    cubic("KCl", 23, "1973", 221, 6.290),          # G5 other space group
    ["CuS3Si2", 30, "2006", "monoclinic", 9, 6.3405, 11.257, 6.2812, 90, 107.464, 90, 427.66],  # G6
    ["CuS3Si2", 31, "2007", "monoclinic", 9, 6.3405, 11.257, 6.2812, 90, 108.300, 90, 427.66],  # G6 beta +0.84
    ["CuS3Si2", 32, "2008", "monoclinic", 9, 6.3405, 11.257, 6.2812, 90, 109.450, 90, 427.66],  # G7 beta +1.15
    cubic("Si", 40, "1980", 227, 5.400),           # G8 chain: 5.40 ~ 5.45 ~ 5.50 but 5.40 !~ 5.50
    cubic("Si", 41, "1981", 227, 5.450),
    cubic("Si", 42, "1982", 227, 5.500),
    ["TiO2", 50, "", "tetragonal", 136, 4.594, 4.594, 2.959, 90, 90, 90, 62.4],                 # G9 no year
    ["TiO2", 51, "", "tetragonal", 136, 4.594, 4.594, 2.959, 90, 90, 90, 62.4],                 # G9 -> id 50 kept
    ["TiO2", 52, "", "tetragonal", 141, 3.785, 3.785, 9.514, 90, 90, 90, 136.3],                # G10 anatase
]


def test_tolerance_edges_match_the_documented_rule():
    base = (5.0, 5.0, 5.0, 90.0, 90.0, 90.0)
    assert cells_match(base, (5.05, 5.0, 5.0, 90, 90, 90))            # 0.990 %
    assert not cells_match(base, (5.052, 5.0, 5.0, 90, 90, 90))       # 1.03 %
    assert cells_match(base, (5.0, 5.0, 5.0, 90, 91.0, 90))
    assert not cells_match(base, (5.0, 5.0, 5.0, 90, 91.01, 90))


def test_planted_duplicates_dedup_to_expected_count(tmp_path):
    path = write_table(tmp_path / "icsd.csv", PLANTED)
    header, recs = read_table(path, require_cell=True)
    assert header == POSTER_HEADER and len(recs) == len(PLANTED)
    res = find_duplicates(recs)
    assert res.n_before == 18
    assert len(res.kept) == 10
    kept_ids = sorted(int(recs[i].id) for i in res.kept)
    assert kept_ids == [2, 4, 21, 22, 23, 31, 32, 42, 50, 52]
    drop = {recs[i].id: (recs[k].id, why) for i, k, why in res.dropped}
    assert drop["1"][0] == drop["3"][0] == drop["5"][0] == "2"
    assert drop["20"][0] == "21"
    # the chain 5.40 ~ 5.45 ~ 5.50 is one group (transitive), reported as a chain for 5.40
    assert drop["40"][0] == drop["41"][0] == "42"
    assert "chain" in drop["40"][1] and "chain" not in drop["41"][1]


def test_formula_mode_and_tab_separated_dara_style_table(tmp_path):
    header = ["chemsys", "reduced_formula", "icsd_id", "spacegroup_number", "e_above_hull"]
    rows = [["Ca-Mg-O-Si", "CaMg(SiO3)2", 9, 15, 0.0],
            ["Ca-Mg-O-Si", "CaMgSi2O6", 7, 15, 0.0],
            ["Ca-Mg-O-Si", "CaMgSi2O6", 8, 12, ""],
            ["Ba-M-O", "M12BaO19", 3, 194, ""],   # placeholder symbol M, as in the ICSD table
            ["Ba-M-O", "BaM12O19", 4, 194, ""]]
    path = write_table(tmp_path / "dara.tsv", rows, header, delimiter="\t")
    _, recs = read_table(path)
    assert all(r.cell is None for r in recs)
    res = find_duplicates(recs)  # auto -> formula mode
    assert len(res.kept) == 3
    assert {recs[i].id for i in res.kept} == {"7", "8", "3"}  # no years: lowest id kept
    with pytest.raises(InputError):
        find_duplicates(recs, mode="cell")


def _run_command(name, argv):
    mod = importlib.import_module(f"xtalhpc.commands.{name}")
    parser = argparse.ArgumentParser()
    mod.add_parser(parser.add_subparsers(dest="command"))
    return mod.run(parser.parse_args([name, *argv]))


def test_commands_are_registered():
    from xtalhpc.cli import COMMANDS

    assert {"dedup", "split", "balance"} <= set(COMMANDS)


def test_dedup_command_writes_kept_and_dropped(tmp_path, capsys):
    path = write_table(tmp_path / "icsd.csv", PLANTED)
    assert _run_command("dedup", [str(path), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "before 18, after 10" in out
    with open(tmp_path / "out" / "kept.csv", newline="") as fh:
        kept = list(csv.reader(fh))
    assert kept[0] == POSTER_HEADER and len(kept) == 11  # original columns, unchanged
    with open(tmp_path / "out" / "dropped.csv", newline="") as fh:
        dropped = list(csv.DictReader(fh))
    assert len(dropped) == 8 and {"id", "kept_id", "reason"} <= set(dropped[0])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mode"] == "cell" and summary["after"] == 10
    # looser tolerance merges the just-outside pairs (and the angle pair at 2 deg)
    assert _run_command("dedup", [str(path), "-o", str(tmp_path / "o2"), "--tolerance", "2",
                                  "--angle-tolerance", "2"]) == 0
    assert "after 7" in capsys.readouterr().out


@pytest.mark.parametrize("row, column, fragment", [
    (cubic("NaCl", 1, "1990", 225, "5.6x"), "a", "not a number"),
    (["NaCl", 1, "1990", "cubic", 225, 5.6, "", 5.6, 90, 90, 90, 1], "b", "not a number"),
    (cubic("NaCl", 1, "1990", 0, 5.6), "Space Group", "outside 1-230"),
    (cubic("NaCl", 1, "1990", 231, 5.6), "Space Group", "outside 1-230"),
    (cubic("NaCl", 1, "1990", "Xy-9", 5.6), "Space Group", "Hermann-Mauguin"),
    (cubic("NaCl", 1, "1990", 225, -5.6), "a", "outside the allowed range"),
    (cubic("NaCl", 1, "1990", 225, 5.6)[:8] + [190, 90, 90, 1], "alpha", "outside the allowed range"),
    (cubic("NaZz3", 1, "1990", 225, 5.6), "Chemical Name", "unknown element"),
    (cubic("NaCl", 1, "MCMXC", 225, 5.6), "PubYear", "4-digit year"),
])
def test_bad_cells_name_file_row_and_column(tmp_path, row, column, fragment):
    good = cubic("KCl", 9, "2000", 225, 6.29)
    path = write_table(tmp_path / "bad.csv", [good, good, row])
    with pytest.raises(InputError) as ei:
        read_table(path, require_cell=True)
    exc = ei.value
    assert exc.source == str(path) and exc.field == column
    assert "row 3" in exc.message and fragment in exc.message


def test_missing_columns_are_named(tmp_path):
    header = [h for h in POSTER_HEADER if h != "Space Group"]
    path = write_table(tmp_path / "nosg.csv", [cubic("NaCl", 1, "1990", 225, 5.6)[:4] + [5.6] * 3 + [90] * 3 + [1]],
                       header)
    with pytest.raises(InputError) as ei:
        read_table(path)
    assert ei.value.source == str(path) and ei.value.field == "space_group" and "missing column" in ei.value.message
    header = [h for h in POSTER_HEADER if h not in ("beta", "gamma")]
    path = write_table(tmp_path / "nocell.csv", [], header)
    read_table(path)  # cells are optional unless required
    with pytest.raises(InputError, match="beta, gamma"):
        read_table(path, require_cell=True)
    # the command reports it as an input error too
    with pytest.raises(InputError):
        _run_command("dedup", [str(path), "-o", str(tmp_path / "x"), "--by", "cell"])


def test_formula_normal_forms():
    assert canonical_formula("CaMg(SiO3)2") == canonical_formula("CaMgSi2O6") == "CaMgO6Si2"
    assert canonical_formula("D2O") == canonical_formula("H2O")
    assert canonical_formula("CuSO4*5H2O") == canonical_formula("CuH10O9S")
    assert anonymous_formula("SrTiO3") == anonymous_formula("BaZrO3") == "ABC3"
    assert anonymous_formula("La0.7Ca0.3MnO3") == "ABC3"      # solid solution -> parent prototype
    assert anonymous_formula("Ag0.02Cu1.98S3Si1") == anonymous_formula("Cu2SiS3")
    with pytest.raises(InputError):
        canonical_formula("Na(Cl")


def test_structure_type_keys_never_straddle_splits():
    rows = [("NaCl", 225), ("KBr", 225), ("MgO", 225), ("CsCl", 221), ("SrTiO3", 221), ("BaZrO3", 221),
            ("La0.7Ca0.3MnO3", 62), ("LaMnO3", 62), ("TiO2", 136), ("SnO2", 136), ("Si", 227), ("C", 227)]
    rows += [(f"Li{n}Fe{n + 1}O{2 * n + 7}", 2) for n in range(1, 200)]
    keys = [structure_type_key({"formula": f, "space_group": sg}) for f, sg in rows]
    assert keys[0] == keys[1] == keys[2] == "AB|225" and keys[6] == keys[7] == "ABC3|62"
    for method in ("hash", "greedy"):
        splits = assign_splits(keys, (0.8, 0.1, 0.1), seed=3, method=method)
        seen = {}
        for k, s in zip(keys, splits):
            assert seen.setdefault(k, s) == s
        assert splits == assign_splits(keys, (0.8, 0.1, 0.1), seed=3, method=method)
        assert set(splits) == {"train", "val", "test"}
        frac = splits.count("train") / len(splits)
        assert 0.65 < frac < 0.92
    # hash assignment is per group: order and the presence of other groups do not matter
    a = assign_splits(keys, seed=5)
    b = assign_splits(keys[::-1], seed=5)[::-1]
    assert a == b and assign_splits(keys[:5], seed=5) == a[:5]
    assert a != assign_splits(keys, seed=6)


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)])
def test_bad_fractions(fractions):
    with pytest.raises(InputError):
        assign_splits(["a"], fractions)


def test_split_command_reproducible(tmp_path, capsys):
    path = write_table(tmp_path / "icsd.csv", PLANTED)
    out1, out2 = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _run_command("split", [str(path), "-o", str(out1), "--seed", "11"]) == 0
    assert _run_command("split", [str(path), "-o", str(out2), "--seed", "11"]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    with open(out1, newline="") as fh:
        rows = list(csv.DictReader(fh))
    groups = {}
    for r in rows:
        assert groups.setdefault(r["structure_type"], r["split"]) == r["split"]
    assert json.loads((tmp_path / "a.csv.json").read_text())["seed"] == 11


def test_balance_plan():
    labels = [225] * 50 + [14] * 7 + [2] * 1
    plan = plan_balance(labels, target=20, seed=1, classes=[2, 14, 225, 230])
    assert plan.empty == [230]
    from collections import Counter

    assert Counter(plan.labels()) == {225: 20, 14: 20, 2: 20}
    big = [it for it in plan.items if it.label == 225]
    assert all(it.variant == 0 for it in big) and len({it.member for it in big}) == 20
    small = [it for it in plan.items if it.label == 14]
    per_member = Counter(it.member for it in small)
    assert set(per_member) == set(range(50, 57)) and max(per_member.values()) - min(per_member.values()) <= 1
    assert [it.item for it in plan.items] == list(range(60))
    again = plan_balance(labels, target=20, seed=1, classes=[2, 14, 225, 230])
    assert again.items == plan.items
    assert plan_balance(labels, target=20, seed=2).items != plan.items
    with pytest.raises(InputError):
        plan_balance(labels, target=0)
    capped = plan_balance(labels, target=20, seed=1, max_variants=2)
    assert capped.short == {2: 3} and Counter(capped.labels()) == {225: 20, 14: 20, 2: 3}
    assert plan_balance(labels, target=20, seed=1, max_variants=1).short == {14: 14, 2: 2}


def test_balance_command_with_split_and_report(tmp_path, capsys):
    path = write_table(tmp_path / "icsd.csv", PLANTED)
    assign = tmp_path / "assign.csv"
    assert _run_command("split", [str(path), "-o", str(assign), "--fractions", "1", "0", "0"]) == 0
    plan = tmp_path / "plan.csv"
    png = tmp_path / "balance.png"
    assert _run_command("balance", [str(path), "-o", str(plan), "--target", "4", "--assignment", str(assign),
                                    "--report", str(png)]) == 0
    with open(plan, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * len({r[4] for r in PLANTED})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".csv").exists()


NACL_CIF = """data_{name}
_cell_length_a {a}
_cell_length_b {a}
_cell_length_c {a}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_IT_number 225
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na1 Na 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""


def test_dedup_structure_files_together_with_a_table(tmp_path, capsys):
    pytest.importorskip("xtalhpc.io")  # the structure readers belong to another module
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, a in [("nacl_a", 5.640), ("nacl_b", 5.655), ("nacl_c", 5.900)]:
        (folder / f"{name}.cif").write_text(NACL_CIF.format(name=name, a=a))
    table = write_table(tmp_path / "t.csv", [cubic("NaCl", 7, "2010", 225, 5.650), cubic("KCl", 8, "2010", 225, 6.29)])
    assert _run_command("dedup", [str(folder), str(table), "-o", str(tmp_path / "out")]) == 0
    assert "before 5, after 3" in capsys.readouterr().out
    with open(tmp_path / "out" / "kept.csv", newline="") as fh:
        kept = {r["id"]: r for r in csv.DictReader(fh)}
    # the table row has a year, the CIFs none: the 2010 entry is kept for the 5.64-5.655 group
    assert set(kept) == {"7", "8", "nacl_c"} and kept["7"]["reduced_formula"] == "ClNa"


# The rows printed on the poster (reference/poster.md, "De-Duplicating"), tab separated as there,
# with the header spelled out (the poster's header line is truncated).
POSTER_ROWS = """\
Ag0.02Cu1.98S3Si1\t155130\t2006 4/1/2007\tmonoclinic\t9\t6.3405\t11.257\t6.2812\t90\t107.464\t90\t427.66
Ag0.02Li0.98\t58311\t1969 4/1/2004\tcubic\t229\t3.4913\t3.4913\t3.4913\t90\t90\t90\t42.56
Ag0.034In0.037Sb0.764Te0.165\t94288\t2001 #####\thexagonal\t166\t4.347\t4.347\t11.2415\t90\t90\t120\t183.96
Ag0.034In0.037Sb0.764Te0.165\t94289\t2001 #####\thexagonal\t166\t4.3553\t4.3553\t11.276\t90\t90\t120\t185.23
Ag0.034In0.037Sb0.764Te0.165\t94290\t2001 #####\thexagonal\t166\t4.3696\t4.3696\t11.5759\t90\t90\t120\t191.41
Ag0.034In0.037Sb0.764Te0.165\t94291\t2001 #####\thexagonal\t166\t4.3747\t4.3747\t5.8087\t90\t90\t120\t96.27
Ag0.034In0.037Sb0.764Te0.165\t426574\t2013 2/1/2014\thexagonal\t166\t4.338\t4.338\t11.004\t90\t90\t120\t179.33
Ag0.034In0.037Sb0.764Te0.165\t426575\t2013 2/1/2014\thexagonal\t166\t4.3032\t4.3032\t11.2623\t90\t90\t120\t180.61
Ag0.03Cd0.98SO1\t29297\t1960 1/1/1980\tcubic\t225\t4.69385\t4.69385\t4.69385\t90\t90\t90\t103.42
Ag0.03Mg0.97\t58325\t1950 4/1/2004\thexagonal\t194\t3.1936\t3.1936\t5.1769\t90\t90\t120\t45.73
Ag0.04Cu3.96\t604103\t1993 8/1/2008\tcubic\t225\t3.62\t3.62\t3.62\t90\t90\t90\t47.44
"""


def test_poster_rows(tmp_path):
    path = tmp_path / "poster.tsv"
    path.write_text("\t".join(POSTER_HEADER) + "\n" + POSTER_ROWS)
    _, recs = read_table(path, require_cell=True)
    assert len(recs) == 11 and recs[0].year == 2006 and recs[2].year == 2001
    res = find_duplicates(recs)
    # only 94288 ~ 94289 (a 0.19 %, c 0.31 %); 426575 is 1.008 % from 94288 in a: just outside
    assert [(recs[i].id, recs[k].id) for i, k, _ in res.dropped] == [("94289", "94288")]
    assert len(res.kept) == 10
    # at formula + space-group level the six Ag-In-Sb-Te entries are one
    assert len(find_duplicates(recs, mode="formula").kept) == 6
    keys = {structure_type_key(r) for r in recs[2:8]}
    assert keys == {"A|166"}  # the dilute alloy joins the A7 (elemental Sb) structure type


def test_niggli_option_finds_other_cell_choices(tmp_path):
    rows = [["ZnOS", 1, "2000", "monoclinic", 14, 5.1, 8.2, 7.3, 90, 103.5, 90, 0],
            ["ZnOS", 2, "2001", "monoclinic", 14, 7.32, 8.2, 5.1, 90, 103.5, 90, 0],   # a <-> c swapped
            ["ZnOS", 3, "2002", "monoclinic", 14, 5.1, 8.2, 7.3, 90, 107.0, 90, 0]]    # really different
    _, recs = read_table(write_table(tmp_path / "m.csv", rows), require_cell=True)
    assert len(find_duplicates(recs).kept) == 3
    res = find_duplicates(recs, niggli=True)
    assert len(res.kept) == 2 and [(recs[i].id, recs[k].id) for i, k, _ in res.dropped] == [("1", "2")]
    assert "Niggli" in res.dropped[0][2]
    # the planted set is unchanged by the option (all in standard settings)
    _, planted = read_table(write_table(tmp_path / "p.csv", PLANTED), require_cell=True)
    assert len(find_duplicates(planted, niggli=True).kept) == 10
