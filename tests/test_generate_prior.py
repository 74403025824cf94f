"""`xtalhpc generate --synthetic N --synthetic-prior TABLE`: synthetic space groups follow a
table's class frequencies (issue 5: weights from a prior such as an ICSD export)."""
from __future__ import annotations

import numpy as np
import pytest

from xtalhpc.cli import main
from xtalhpc.dataset.reader import open_dataset
from xtalhpc.errors import InputError
from xtalhpc.generate import Manifest, space_group_prior


def _table(tmp_path, rows, header="chemsys,reduced_formula,icsd_id,spacegroup_number"):
    p = tmp_path / "prior.csv"
    p.write_text(header + "\n" + "\n".join(f"A-B,AB,{i},{sg}" for i, sg in enumerate(rows)) + "\n")
    return p


def test_prior_frequencies_are_followed(tmp_path):
    # a skewed prior: 14 (P2_1/c) 60 %, 62 (Pnma) 30 %, 225 (Fm-3m) 10 %
    counts = space_group_prior(_table(tmp_path, [14] * 6 + [62] * 3 + [225]))
    assert counts[13] == 6 and counts[61] == 3 and counts[224] == 1 and counts.sum() == 10
    man = Manifest([], [], [], synthetic=1000, prior_cdf=(np.cumsum(counts) / counts.sum()).tolist())
    sgs = [man.locate(i)[1] for i in range(1000)]
    freq = {sg: sgs.count(sg) / 1000 for sg in set(sgs)}
    assert set(freq) == {14, 62, 225}
    assert freq[14] == pytest.approx(0.6, abs=0.01) and freq[62] == pytest.approx(0.3, abs=0.01)
    assert len(set(sgs[:10])) == 3  # interleaved, not sorted runs


def test_generate_with_a_prior(tmp_path, capsys):
    table = _table(tmp_path, [14] * 3 + [62] * 1)
    out = tmp_path / "ds"
    rc = main(["generate", "--synthetic", "12", "--synthetic-prior", str(table), "--output", str(out), "--quiet",
               "--seed", "3"])
    assert rc == 0
    with open_dataset(out) as ds:
        sg = ds.read("space_group")
    assert sorted(set(sg.tolist())) == [14, 62] and 8 <= (sg == 14).sum() <= 10  # 75 % of 12, low-discrepancy


@pytest.mark.parametrize("header,rows,needle", [
    ("chemsys,formula,id", ["14"], "no space-group column"),
    ("chemsys,reduced_formula,icsd_id,spacegroup_number", ["x14"], "row 2"),
    ("chemsys,reduced_formula,icsd_id,spacegroup_number", ["231"], "outside 1-230"),
])
def test_bad_prior_tables(tmp_path, header, rows, needle):
    p = tmp_path / "bad.csv"
    p.write_text(header + "\n" + "\n".join(f"A-B,AB,1,{r}" if header.count(",") == 3 else f"A-B,AB,{r}"
                                          for r in rows) + "\n")
    with pytest.raises(InputError) as ei:
        space_group_prior(p)
    assert needle in str(ei.value) and "bad.csv" in str(ei.value)


def test_prior_needs_synthetic(tmp_path):
    assert main(["generate", str(tmp_path), "--synthetic-prior", str(_table(tmp_path, [14])), "--output",
                 str(tmp_path / "x")]) == 2


def test_tempered_prior(tmp_path):
    from xtalhpc.generate import GenerateConfig, tempered_prior

    counts = space_group_prior(_table(tmp_path, [14] * 16 + [62] * 4 + [225]))
    w = tempered_prior(counts, 0.5)
    assert w[13] == 4 and w[61] == 2 and w[224] == 1 and w.sum() == 7  # sqrt of 16, 4, 1; absent groups stay 0
    assert np.array_equal(tempered_prior(counts, 1.0), counts)
    w0 = tempered_prior(counts, 0.0)
    assert w0.sum() == 3 and w0[13] == w0[61] == w0[224] == 1
    base = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_prior="p.csv")
    # the default power leaves the digest fields of datasets made before the option unchanged
    assert "synthetic_prior_power" not in base.digest_fields()
    half = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_prior="p.csv", synthetic_prior_power=0.5)
    assert half.digest_fields()["synthetic_prior_power"] == 0.5
    with pytest.raises(InputError, match="--synthetic-prior-power"):
        GenerateConfig(sources=(), output="x", synthetic=5, synthetic_prior="p.csv", synthetic_prior_power=2)
    with pytest.raises(InputError, match="needs --synthetic-prior"):
        GenerateConfig(sources=(), output="x", synthetic=5, synthetic_prior_power=0.5)


def test_synthetic_special_share(tmp_path):
    """``--synthetic-special F``: the share of synthetic crystals on special positions
    (``SynthConfig.special_fraction``) reaches the crystals, the digest and an MPI re-launch."""
    from xtalhpc.cli import build_parser
    from xtalhpc.commands.generate import config_from_args
    from xtalhpc.generate import GenerateConfig
    from xtalhpc.generate.config import config_to_argv

    base = GenerateConfig(sources=(), output="x", synthetic=5)
    assert "synthetic_special" not in base.digest_fields()  # 0: digests of older datasets unchanged
    sp = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_special=0.5)
    assert sp.digest_fields()["synthetic_special"] == 0.5
    # the argv that re-launches a run under mpiexec gives back the same config
    back = config_from_args(build_parser().parse_args(["generate", *config_to_argv(sp)]))
    assert back == sp
    for bad, match in [(dict(synthetic=5, synthetic_special=1.5), "--synthetic-special"),
                       (dict(synthetic=5, synthetic_special=True), "--synthetic-special"),
                       (dict(synthetic=0, sources=("a.cif",), synthetic_special=0.5), "needs --synthetic")]:
        with pytest.raises(InputError, match=match):
            GenerateConfig(**{"sources": (), "output": "x", **bad})
    # the crystals: item i of a run with the option is generate_crystal(..., special_fraction=F)
    table = _table(tmp_path, [225] * 3 + [221])
    out = {}
    for share in ("0", "1"):
        out[share] = tmp_path / f"ds{share}"
        assert main(["generate", "--synthetic", "8", "--synthetic-prior", str(table), "--synthetic-special", share,
                     "--output", str(out[share]), "--quiet", "--seed", "4", "--split", "none"]) == 0
    with open_dataset(out["0"]) as d0, open_dataset(out["1"]) as d1:
        assert np.array_equal(d0.read("space_group"), d1.read("space_group"))
        n0, n1 = d0.read("n_atoms"), d1.read("n_atoms")
        assert d0.attrs["config_digest"] != d1.attrs["config_digest"]
    assert n1.sum() < n0.sum()  # small special orbits instead of the default's free orbits


def test_synthetic_formulas_share(tmp_path, capsys):
    """``--synthetic-formulas F``: compositions from the prior table's formula column reach the
    crystals (1 rank and 2 MPI ranks alike), the digest and the re-launch argv; bad use is refused."""
    from xtalhpc.cli import build_parser
    from xtalhpc.commands.generate import config_from_args
    from xtalhpc.generate import GenerateConfig
    from xtalhpc.generate.config import config_to_argv

    table = tmp_path / "formulas.csv"
    table.write_text("chemsys,reduced_formula,icsd_id,spacegroup_number\n"
                     "Ca-O-Ti,CaTiO3,1,62\nMg-O-Si,Mg2SiO4,2,62\nCl-Na,NaCl,3,225\nF-Ca,CaF2,4,225\n")
    base = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_prior=str(table))
    assert "synthetic_formulas" not in base.digest_fields()  # 0: digests of older datasets unchanged
    sf = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_prior=str(table), synthetic_formulas=0.5)
    assert sf.digest_fields()["synthetic_formulas"] == 0.5
    assert config_from_args(build_parser().parse_args(["generate", *config_to_argv(sf)])) == sf
    for bad, match in [(dict(synthetic=5, synthetic_prior=str(table), synthetic_formulas=1.5), "--synthetic-formulas"),
                       (dict(synthetic=5, synthetic_formulas=0.5), "needs --synthetic N and --synthetic-prior")]:
        with pytest.raises(InputError, match=match):
            GenerateConfig(**{"sources": (), "output": "x", **bad})
    out = {}
    for name, extra in (("off", ["--synthetic-formulas", "0"]), ("on", ["--synthetic-formulas", "1"]),
                        ("on2", ["--synthetic-formulas", "1", "--ranks", "2"])):
        out[name] = tmp_path / name
        assert main(["generate", "--synthetic", "12", "--synthetic-prior", str(table), *extra, "--output",
                     str(out[name]), "--quiet", "--seed", "4", "--split", "none", "--shard-size", "4"]) == 0
    with open_dataset(out["off"]) as d0, open_dataset(out["on"]) as d1, open_dataset(out["on2"]) as d2:
        assert np.array_equal(d0.read("space_group"), d1.read("space_group"))
        assert d0.attrs["config_digest"] != d1.attrs["config_digest"]
        f0, f1 = list(d0.read("formula")), list(d1.read("formula"))
        assert np.array_equal(d1.read("pattern"), d2.read("pattern")) and list(d2.read("formula")) == f1
    f0 = [x.decode() if isinstance(x, bytes) else str(x) for x in f0]
    f1 = [x.decode() if isinstance(x, bytes) else str(x) for x in f1]
    allowed = {_reduced(f) for f in ("CaTiO3", "Mg2SiO4", "NaCl", "CaF2")}
    assert sum(_reduced(f) in allowed for f in f1) >= 9, f1
    assert sum(_reduced(f) in allowed for f in f0) <= 2, f0
    # a table without a formula column is refused before any crystal is made, naming the file
    bad = tmp_path / "noformula.csv"
    bad.write_text("icsd_id,spacegroup_number\n1,62\n")
    assert main(["generate", "--synthetic", "4", "--synthetic-prior", str(bad), "--synthetic-formulas", "1",
                 "--output", str(tmp_path / "bad"), "--quiet", "--split", "none"]) == 2
    err = capsys.readouterr().err
    assert "noformula.csv" in err and "formula column" in err, err
    assert not (tmp_path / "bad" / "dataset.h5").exists()


def _reduced(formula: str) -> frozenset:
    """The composition of a formula with the counts divided by their gcd."""
    import math

    from xtalhpc.synth.formulas import parse_formula

    comp = {e: int(round(v)) for e, v in parse_formula(formula).items()}
    g = 0
    for v in comp.values():
        g = math.gcd(g, v)
    return frozenset((e, v // g) for e, v in comp.items())


def test_synthetic_pseudo_share(tmp_path):
    """``--synthetic-pseudo F`` reaches the config digest, the re-launch argv and the crystals."""
    from xtalhpc.cli import build_parser
    from xtalhpc.commands.generate import config_from_args
    from xtalhpc.generate import GenerateConfig
    from xtalhpc.generate.config import config_to_argv

    assert "synthetic_pseudo" not in GenerateConfig(sources=(), output="x", synthetic=5).digest_fields()
    ps = GenerateConfig(sources=(), output="x", synthetic=5, synthetic_pseudo=0.25)
    assert ps.digest_fields()["synthetic_pseudo"] == 0.25
    assert config_from_args(build_parser().parse_args(["generate", *config_to_argv(ps)])) == ps
    for bad, match in [(dict(synthetic=5, synthetic_pseudo=2.0), "--synthetic-pseudo"),
                       (dict(synthetic=0, sources=("a.cif",), synthetic_pseudo=0.5), "needs --synthetic")]:
        with pytest.raises(InputError, match=match):
            GenerateConfig(**{"sources": (), "output": "x", **bad})
    table = _table(tmp_path, [14])
    out = tmp_path / "ds"
    assert main(["generate", "--synthetic", "6", "--synthetic-prior", str(table), "--synthetic-pseudo", "1",
                 "--output", str(out), "--quiet", "--seed", "4", "--split", "none"]) == 0
    from xtalhpc.generate.items import _synth_config
    from xtalhpc.synth import generate_crystal

    with open_dataset(out) as d:
        n_atoms = d.read("n_atoms")
    assert list(n_atoms) == [generate_crystal(14, 4, i, _synth_config(0.0, 0.0, None, 1.0)).n_atoms for i in range(6)]
