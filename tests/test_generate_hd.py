"""`xtalhpc generate --deuterate` and the hydrogen incoherent background (issue 5, H/D)."""
from __future__ import annotations

import numpy as np
import pytest

from xtalhpc.cli import main
from xtalhpc.curate.hd import deuterate, incoherent_background_level
from xtalhpc.dataset.reader import open_dataset
from xtalhpc.instruments import get_instrument
from xtalhpc.io import load_structure
from xtalhpc.simulate import simulate

# LiH, rock salt (Fm-3m), a = 4.083 A; hand-written test structure.
LIH = """data_LiH
_cell_length_a 4.083
_cell_length_b 4.083
_cell_length_c 4.083
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
_symmetry_Int_Tables_number 225
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_B_iso_or_equiv
Li1 Li 0 0 0 1.0
H1 H 0.5 0.5 0.5 1.0
"""


def _generate(tmp_path, name, *flags):
    cif = tmp_path / "LiH.cif"
    cif.write_text(LIH)
    out = tmp_path / name
    assert main(["generate", str(cif), "--output", str(out), "--quiet", *flags]) == 0
    with open_dataset(out) as ds:
        return ds.read("pattern")[0].astype(np.float64) * ds.read("scale")[0]


@pytest.fixture(scope="module")
def lih(tmp_path_factory):
    d = tmp_path_factory.mktemp("lih")
    (d / "LiH.cif").write_text(LIH)
    return load_structure(d / "LiH.cif")


def test_h_background_is_the_incoherent_level(tmp_path, lih):
    inst = get_instrument("bt1-cu311")
    level = incoherent_background_level(lih, inst.wavelength)
    # ~80 barn per H, 4 H per cell: far above the Bragg tails between LiH's few peaks
    bragg = simulate(lih, inst).intensity
    with_bg = _generate(tmp_path, "bg")
    without = _generate(tmp_path, "nobg", "--no-h-background")
    np.testing.assert_allclose(with_bg, bragg + level, rtol=2e-6, atol=0)  # float32 storage
    np.testing.assert_allclose(without, bragg, rtol=2e-6, atol=1e-7 * bragg.max())
    assert level > 10 * np.median(bragg)


def test_deuterate_changes_lengths_and_background(tmp_path, lih):
    inst = get_instrument("bt1-cu311")
    d = deuterate(lih)
    assert set(d.species) == {"Li", "D"}
    expected = simulate(d, inst).intensity + incoherent_background_level(d, inst.wavelength)
    got = _generate(tmp_path, "deut", "--deuterate")
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=0)
    # the incoherent level falls with sigma_inc: 80.26 barn (H) -> 2.05 barn (D)
    ratio = incoherent_background_level(d, inst.wavelength) / incoherent_background_level(lih, inst.wavelength)
    assert ratio == pytest.approx(2.05 / 80.26, rel=1e-6)
    # rock salt, equal B on both sites: |F(111)|^2 = 16 (b_Li - b_X)^2 DW^2, X = H -> D
    from xtalhpc.scattering import neutron_b

    f_h = simulate(lih, inst).reflections
    f_d = simulate(d, inst).reflections
    i111 = [int(np.flatnonzero((np.abs(r.hkl) == 1).all(axis=1))[0]) for r in (f_h, f_d)]
    expected_ratio = ((neutron_b("Li") - neutron_b("D")) / (neutron_b("Li") - neutron_b("H"))) ** 2
    assert f_d.F2[i111[1]] / f_h.F2[i111[0]] == pytest.approx(expected_ratio, rel=1e-12)
