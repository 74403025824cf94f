"""Preferred orientation (March-Dollase texture) in the simulator.

The symmetry-unique path computes one reflection per Laue orbit and must average the factor
over the orbit; the plain path (no operations) lists every reflection of the half sphere and
applies it to each. The two must give the same intensity per d, for every Laue class: that is
the check of the orbit average against a computation that does not use it. The cubic {100},
{110}, {111} factors are also checked against their closed forms.
"""
from __future__ import annotations

import numpy as np
import pytest

from xtalhpc import Crystal
from xtalhpc.errors import InputError
from xtalhpc.simulate import simulate, simulate_batch
from xtalhpc.texture import Texture

from test_symmetry import CELLS, _expand, _ops, _peaks_by_d

#: Both paths sum the same terms in another order: float64 rounding.
PATH_TOL = 1e-10


def _symmetric_crystal(number, cell, rng):
    ops = _ops(number)
    frac, sps = _expand(ops, rng.random((3, 3)), ["Fe", "O", "Si"])
    order = np.argsort([("Fe", "O", "Si").index(s) for s in sps], kind="stable")
    n = len(sps)
    return Crystal(CELLS[cell], frac[order], [sps[i] for i in order], np.ones(n), np.full(n, 0.5), symmetry=ops)


@pytest.mark.parametrize("number,cell", [(225, "cubic"), (206, "cubic"), (62, "ort"), (14, "mon"), (88, "tet"),
                                         (139, "tet"), (167, "hex"), (148, "hex"), (186, "hex")])
@pytest.mark.parametrize("axis,r", [((0, 0, 1), 0.6), ((1, 1, 0), 1.4), ((1, 2, 3), 0.8)])
def test_orbit_average_equals_the_plain_sum(number, cell, axis, r, rng):
    c = _symmetric_crystal(number, cell, rng)
    t = Texture(axis, r)
    on_sym = simulate_batch([c], "bt1-cu311", texture=t)
    on_plain = simulate_batch([c.replace(symmetry=None)], "bt1-cu311", texture=t)
    off = simulate_batch([c], "bt1-cu311")
    pa, pb, p0 = _peaks_by_d(on_plain, 0), _peaks_by_d(on_sym, 0), _peaks_by_d(off, 0)
    assert pa.keys() == pb.keys() == p0.keys()
    top = max(pa.values())
    for k in pa:
        assert abs(pa[k] - pb[k]) <= PATH_TOL * top, (k, pa[k], pb[k])
    # and the texture did change the pattern (a cubic group averages much of it out: 2 %)
    ratios = np.array([pb[k] / p0[k] for k in p0 if p0[k] > 1e-6 * top])
    assert np.ptp(ratios) > 0.02
    np.testing.assert_allclose(on_sym.patterns[0], on_plain.patterns[0], rtol=0,
                               atol=4 * float(np.finfo(np.float32).eps) * on_plain.patterns[0].max())


def test_cubic_orbits_have_the_closed_form_factors(rng):
    """Axis [001]: P = r^-3 along it and r^1.5 across; {100} = (2 r^-3 + 4 r^1.5) / 6,
    {111} all at cos^2 = 1/3, {110}: 4 across (cos^2 0) and 8 at cos^2 1/2."""
    r = 0.7

    def p(cos2):
        return (r * r * cos2 + (1 - cos2) / r) ** -1.5

    c = _symmetric_crystal(221, "cubic", rng)
    a = simulate(c, "bt1-cu311").reflections
    b = simulate(c, "bt1-cu311", texture=Texture((0, 0, 1), r)).reflections
    want = {(1, 0, 0): (2 * p(1.0) + 4 * p(0.0)) / 6, (1, 1, 1): p(1 / 3), (1, 1, 0): (4 * p(0.0) + 8 * p(0.5)) / 12}
    seen = 0
    for i, h in enumerate(map(tuple, np.abs(a.hkl))):
        key = tuple(sorted(h, reverse=True))
        if key in want and a.multiplicity[i] == {(1, 0, 0): 6, (1, 1, 1): 8, (1, 1, 0): 12}[key]:
            j = int(np.flatnonzero(np.all(b.hkl == a.hkl[i], axis=1))[0])
            assert b.F2[j] / a.F2[i] == pytest.approx(want[key], rel=1e-12)
            seen += 1
    assert seen == 3


def test_random_powder_changes_nothing(rng):
    c = _symmetric_crystal(62, "ort", rng)
    base = simulate_batch([c, c], "bt1-cu311")
    for tex in (Texture((1, 0, 0), 1.0), [None, None], [Texture((0, 1, 1), 1.0), None]):
        got = simulate_batch([c, c], "bt1-cu311", texture=tex)
        np.testing.assert_array_equal(got.patterns, base.patterns)
        np.testing.assert_array_equal(got.peak_F2, base.peak_F2)


def test_one_texture_per_crystal(rng):
    c = _symmetric_crystal(139, "tet", rng)
    t = Texture((0, 0, 1), 0.6)
    both = simulate_batch([c, c], "bt1-cu311", texture=[None, t])
    np.testing.assert_array_equal(both.patterns[0], simulate_batch([c], "bt1-cu311").patterns[0])
    np.testing.assert_array_equal(both.patterns[1], simulate_batch([c], "bt1-cu311", texture=t).patterns[0])


@pytest.mark.parametrize("kwargs,field", [({"axis": (0, 0, 0)}, "texture.axis"), ({"axis": (1, 0)}, "texture.axis"),
                                          ({"axis": (1, np.nan, 0)}, "texture.axis"), ({"r": 0.0}, "texture.r"),
                                          ({"r": -1.0}, "texture.r"), ({"r": float("inf")}, "texture.r"),
                                          ({"r": "strong"}, "texture.r")])
def test_bad_texture_is_refused(kwargs, field):
    with pytest.raises(InputError) as e:
        Texture(**kwargs)
    assert e.value.field == field


def test_texture_list_must_match_the_crystals(rng):
    c = _symmetric_crystal(225, "cubic", rng)
    with pytest.raises(InputError, match="2 textures for 1 crystals") as e:
        simulate_batch([c], "bt1-cu311", texture=[Texture(), Texture()])
    assert e.value.field == "texture"
    with pytest.raises(InputError, match="not a Texture") as e:
        simulate_batch([c], "bt1-cu311", texture=[(0, 0, 1)])
    assert e.value.field == "texture"


def test_generate_texture_share(tmp_path):
    """``generate --texture F``: in the config digest and the re-launch argv; each item's pattern is
    simulated with :func:`item_texture` of the seed and its index, the others are unchanged."""
    from test_generate_prior import _table

    from xtalhpc.cli import build_parser, main
    from xtalhpc.commands.generate import config_from_args
    from xtalhpc.dataset.reader import open_dataset
    from xtalhpc.generate import GenerateConfig
    from xtalhpc.generate.config import config_to_argv
    from xtalhpc.synth import generate_crystal
    from xtalhpc.texture import item_texture

    assert "texture" not in GenerateConfig(sources=(), output="x", synthetic=5).digest_fields()
    tx = GenerateConfig(sources=(), output="x", synthetic=5, texture=0.25)
    assert tx.digest_fields()["texture"] == 0.25
    assert config_from_args(build_parser().parse_args(["generate", *config_to_argv(tx)])) == tx
    for bad, match in [(dict(texture=1.5), "--texture"), (dict(texture=-0.1), "--texture"),
                       (dict(texture=True), "--texture")]:
        with pytest.raises(InputError, match=match) as e:
            GenerateConfig(**{"sources": (), "output": "x", "synthetic": 5, **bad})
        assert e.value.field == "--texture"
    table = _table(tmp_path, [14])
    args = ["--synthetic", "10", "--synthetic-prior", str(table), "--seed", "4", "--split", "none", "--quiet",
            "--no-h-background"]
    assert main(["generate", *args, "--texture", "0.5", "--output", str(tmp_path / "on")]) == 0
    assert main(["generate", *args, "--output", str(tmp_path / "off")]) == 0
    with open_dataset(tmp_path / "on") as d:
        on = d.read("pattern")
    with open_dataset(tmp_path / "off") as d:
        off = d.read("pattern")
    textured = [i for i in range(10) if item_texture(4, i, 0.5) is not None]
    assert 0 < len(textured) < 10
    for i in range(10):
        if i not in textured:
            np.testing.assert_array_equal(on[i], off[i])
            continue
        assert np.abs(on[i] - off[i]).max() > 1e-3
        want = simulate(generate_crystal(14, 4, i), "bt1-cu311", texture=item_texture(4, i, 0.5)).intensity
        np.testing.assert_allclose(on[i], want / want.max(), rtol=0, atol=1e-6)
