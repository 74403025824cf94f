"""Readers of measured constant-wavelength patterns (xtalhpc.io.measured) on the real files of
../shared/data, and their refusal of corrupt files (each error names the file and the line).

Expected values come from the files themselves (BANK records, pdCIF ranges, first/last rows)
and from ../shared/data/inventory.csv; see benchmarks/measured.csv for the full list."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from xtalhpc.errors import InputError
from xtalhpc.io.measured import (MeasuredPattern, PatternFileError, detect_measured_format, read_gsas_prm,
                                 read_gsas_raw, read_instprm, read_measured, read_pdcif, read_xye)
from xtalhpc.io_patterns import read_xye as read_xye_tuple, write_xye
from xtalhpc.spacegroups import labels

REPO = Path(__file__).resolve().parents[1]
G2 = "patterns/gsas2_tutorials"
ED = "patterns/easydiffraction_app/examples/PdCw1d"

#: (path under shared/data, format, layout, points, first 2theta, last 2theta, wavelength the file carries or None)
CASES = [
    (f"{G2}/Magnetic-I/data/LaMnO3_50k.gsas", "gsas", "ESD", 3296, 3.0, 167.75, None),
    (f"{G2}/CWCombined/data/PBSO4.CWN", "gsas", "STD", 2919, 10.0, 155.9, None),
    (f"{G2}/CWNeutron/data/garnet.raw", "gsas", "STD", 2679, 24.0, 157.9, None),
    (f"{G2}/MDtutorials/k_vec_tutorial/data/Er2Ge2O7_op2112_Ge113_2K.gss", "gsas", "ESD", 2459, 2.025, 124.925, None),
    # announces 2415 points in 242 records, holds 2395 in 240 (GSAS-II reads the same 2395)
    (f"{G2}/Magnetic-IV/data/PrSrMnO.gda", "gsas", "STD", 2395, 6.0, 125.7, None),
    (f"{G2}/FitPeaks/data/11bmb_6231.fxye", "gsas", "FXYE", 49497, 0.5, 49.996, 0.413529),  # X-ray, "# Calibrated wavelength"
    (f"{G2}/Magnetic-II/data/Cr2WO6_T150K.dat", "xye", None, 1860, 8.0, 129.919, None),
    (f"{G2}/Magnetic-III/data/Ba6Co6.xye", "xye", None, 3120, 4.0, 159.95, None),
    (f"{ED}/Co2SiO4/experiments/D20@ILL.xye", "xye", None, 1218, 8.0953, 130.0953, None),
    ("patterns/easydiffraction_lib/examples/data/hrpt.xye", "xye", None, 3098, 10.0, 164.85, None),
    (f"{ED}/Dy3Al5O12/experiments/G41@LLB.xye", "xye", None, 800, 13.6, 93.5, None),
    ("patterns/pdcifplotter/data/ALUMINA.cif", "pdcif", None, 3300, 3.0, 167.95, 1.5402),
    (f"{ED}/La0.5Ba0.5CoO3/experiments/HRPT@PSI.cif", "pdcif", None, 3098, 10.0, 164.85, 1.494),
    (f"{ED}/Co2SiO4/experiments/D20@ILL.cif", "pdcif", None, 1418, 8.0953, 150.0953, 1.87),
]
READERS = {"gsas": read_gsas_raw, "xye": read_xye, "pdcif": read_pdcif}


@pytest.mark.parametrize("rel,fmt,layout,n,first,last,wl", CASES, ids=[Path(c[0]).name for c in CASES])
def test_reader_parses_real_file(shared_data, rel, fmt, layout, n, first, last, wl):
    path = shared_data / rel
    pat = READERS[fmt](path)
    assert isinstance(pat, MeasuredPattern) and pat.format == fmt and pat.source == str(path)
    assert len(pat) == n and pat.intensity.shape == pat.sigma.shape == pat.mask.shape == (n,)
    assert pat.two_theta[0] == pytest.approx(first, abs=1e-9) and pat.two_theta[-1] == pytest.approx(last, abs=1e-6)
    assert np.all(np.diff(pat.two_theta) > 0) and np.all(pat.sigma > 0) and pat.mask.sum() >= n - 2
    if layout:
        assert pat.meta["layout"] == layout
    if wl is None:
        assert pat.wavelength is None
    else:
        assert pat.wavelength == pytest.approx(wl) and pat.wavelength_source == "file"
    # the dispatcher picks the same reader from the name/content
    assert detect_measured_format(path) == fmt
    again = read_measured(path)
    assert np.array_equal(again.intensity, pat.intensity) and np.array_equal(again.two_theta, pat.two_theta)


def test_values_of_known_rows(shared_data):
    """Values read against the file text: STD variance y / n (scale factor n), ESD pairs, s.u. in
    parentheses, zero weight masked."""
    m = read_gsas_raw(shared_data / f"{G2}/Magnetic-IV/data/PrSrMnO.gda")  # STD with n = 3 then 1
    assert m.intensity[0] == 29.0 and m.sigma[0] == pytest.approx(np.sqrt(29.0 / 3))
    assert m.meta["announced_points"] == 2415
    e = read_gsas_raw(shared_data / f"{G2}/MDtutorials/k_vec_tutorial/data/Er2Ge2O7_op2112_Ge113_2K.gss")
    assert e.intensity[:2].tolist() == [927.65, 866.33] and e.sigma[:2].tolist() == [29.15, 28.27]
    a = read_pdcif(shared_data / "patterns/pdcifplotter/data/ALUMINA.cif")
    assert a.intensity[0] == 119.0 and not a.mask[0]  # 119(17) with _pd_proc_ls_weight 0.0
    assert a.intensity[1] == 149.0 and a.sigma[1] == 19.0 and a.mask[1]
    assert not a.mask[-1]  # weight "."
    d = read_xye(shared_data / f"{G2}/Magnetic-III/data/Ba6Co6.xye")  # 2 columns: counting statistics
    assert d.intensity[0] == 90.0 and d.sigma[0] == pytest.approx(np.sqrt(90.0))


def test_wavelength_from_parameter_files(shared_data):
    d = shared_data / G2
    p = read_measured(d / "CWCombined/data/PBSO4.CWN", instrument_file=d / "CWCombined/data/inst_d1a.prm")
    assert p.wavelength == pytest.approx(1.909) and p.wavelength_source.endswith("inst_d1a.prm")
    q = read_measured(d / "Magnetic-IV/data/PrSrMnO.gda", instrument_file=d / "Magnetic-IV/data/Saclay 3T2.instprm")
    assert q.wavelength == pytest.approx(1.227)
    r = read_measured(d / "Magnetic-II/data/Cr2WO6_T150K.dat", instrument_file=d / "Magnetic-II/data/Cr2WO6_T4K_dat.prm")
    assert r.wavelength == pytest.approx(2.4067)
    assert read_measured(d / "Magnetic-III/data/Ba6Co6.xye", instrument_file=d / "Magnetic-III/data/D1B.PRM"
                         ).wavelength == pytest.approx(2.394)
    assert read_measured(d / "Magnetic-III/data/Ba6Co6.xye", wavelength=2.5).wavelength == 2.5  # caller wins
    assert read_gsas_prm(d / "Magnetic-I/data/BT1_Cu311.inst")["wavelength"] == pytest.approx(1.5403)
    assert read_instprm(d / "MDtutorials/k_vec_tutorial/data/HB2A_ge113_op2112_Si_cycle866.instprm")[
        "wavelength"] == pytest.approx(2.4063, abs=1e-3)


def test_named_parameter_file_line(tmp_path, shared_data):
    """Line 2 'Instrument parameter file: NAME' of a GSAS raw file names the .prm beside it."""
    src = shared_data / f"{G2}/CWCombined/data/PBSO4.CWN"
    lines = src.read_text(encoding="latin-1").split("\n")
    (tmp_path / "x.gsa").write_text("\n".join([lines[0], "Instrument parameter file:d1a.prm"] + lines[1:]),
                                    encoding="latin-1")
    shutil.copy(shared_data / f"{G2}/CWCombined/data/inst_d1a.prm", tmp_path / "d1a.prm")
    p = read_measured(tmp_path / "x.gsa")
    assert len(p) == 2919 and p.wavelength == pytest.approx(1.909) and p.wavelength_source.endswith("d1a.prm")


def test_benchmark_table_rows_read(shared_data):
    """Every row of benchmarks/measured.csv reads with the readers and matches its point count
    and wavelength (where the file or its parameter file carries one)."""
    with open(REPO / "benchmarks" / "measured.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 12
    for r in rows:
        inst = shared_data / r["instrument_file"] if r["instrument_file"] else None
        p = read_measured(shared_data / r["file"], instrument_file=inst)
        assert p.format == r["format"], r["file"]
        assert len(p) == int(r["n_points"]), r["file"]
        if p.wavelength is not None:
            assert p.wavelength == pytest.approx(float(r["wavelength"]), abs=2e-3), r["file"]
        assert labels(int(r["space_group"])) == (int(r["space_group"]), r["crystal_system"], r["bravais_lattice"])


# --------------------------------------------------------------------------- corrupt files

def _corrupt(src: Path, dst: Path, lineno: int, old: str, new: str) -> Path:
    lines = src.read_bytes().decode("latin-1").split("\n")
    assert old in lines[lineno - 1], (old, lines[lineno - 1])
    lines[lineno - 1] = lines[lineno - 1].replace(old, new, 1)
    dst.write_bytes("\n".join(lines).encode("latin-1"))
    return dst


def _raises_at(path: Path, line: int | None, *fragments: str, **kw) -> PatternFileError:
    with pytest.raises(PatternFileError) as ei:
        read_measured(path, **kw)
    err = ei.value
    assert isinstance(err, InputError) and err.path == str(path) and str(path) in str(err)
    if line is not None:
        assert err.line == line and f"line {line}" in str(err)
    for f in fragments:
        assert f in str(err), str(err)
    return err


def test_corrupt_gsas_std(shared_data, tmp_path):
    bad = _corrupt(shared_data / f"{G2}/CWCombined/data/PBSO4.CWN", tmp_path / "bad.CWN", 40, " 4   212", " 4  x212")
    _raises_at(bad, 40, "not a number")


def test_corrupt_gsas_esd(shared_data, tmp_path):
    bad = _corrupt(shared_data / f"{G2}/Magnetic-I/data/LaMnO3_50k.gsas", tmp_path / "bad.gsas", 100, "    ", "  ##")
    _raises_at(bad, 100, "not a number")


def test_corrupt_gsas_fxye_and_bank(tmp_path):
    body = "title\nBANK 1 3 3 CONST 1000 5 0 0 FXYE\n1000 10 3\n1005 ab 3\n1010 12 3\n"
    (tmp_path / "a.fxye").write_text(body)
    _raises_at(tmp_path / "a.fxye", 4, "not numeric")
    (tmp_path / "b.gsa").write_text("title\nBANK 1 3 3 RALF 1000 5 0 0 ALT\n")
    _raises_at(tmp_path / "b.gsa", 2, "time-of-flight")
    (tmp_path / "c.gsa").write_text("title\nBANK 1 x 3 CONST 1000 5 0 0 ESD\n")
    _raises_at(tmp_path / "c.gsa", 2, "integers")
    (tmp_path / "d.gss").write_text("title\n 1   220 1   214\n")
    _raises_at(tmp_path / "d.gss", None, "no BANK record")
    (tmp_path / "e.gsa").write_text("title\nBANK 1 3 1 CONST 1000 5 0 0 ESD\n")
    _raises_at(tmp_path / "e.gsa", 2, "no ESD record")
    body = "title\nBANK 1 3 3 CONST 1000 5 0 0 FXYE\n1000 10 3\n1005 11 3\n1005 12 3\n"
    (tmp_path / "f.fxye").write_text(body)  # 2theta repeats
    _raises_at(tmp_path / "f.fxye", 5, "does not increase")
    with pytest.raises(PatternFileError, match="no BANK 2; the file has bank"):
        read_gsas_raw(tmp_path / "a.fxye", bank=2)


def test_corrupt_xye(shared_data, tmp_path):
    src = shared_data / "patterns/easydiffraction_lib/examples/data/hrpt.xye"
    bad = _corrupt(src, tmp_path / "bad.xye", 57, "1", "x", )
    _raises_at(bad, 57, "not a number")
    bad = _corrupt(src, tmp_path / "bad4.xye", 300, "   ", "  1.0   ")
    _raises_at(bad, 300, "4 columns")
    (tmp_path / "tof.xye").write_text("# TOF\n7004.4 1 1\n7010.0 2 1\n")
    _raises_at(tmp_path / "tof.xye", 2, "outside (0, 180)")
    (tmp_path / "words.dat").write_text("# nothing\nhello world\n")
    _raises_at(tmp_path / "words.dat", None, "no numeric data")


def test_corrupt_pdcif(shared_data, tmp_path):
    src = shared_data / "patterns/pdcifplotter/data/ALUMINA.cif"
    bad = _corrupt(src, tmp_path / "bad.cif", 600, "(", "x(")
    _raises_at(bad, 600, "_pd_meas_intensity_total", "not a number")
    lines = src.read_text(encoding="latin-1").split("\n")
    del lines[700]  # a row gone: the loop is no longer a multiple of its 4 tags ... unless 4 values vanish
    lines[699] = lines[699] + " 1.0"  # one extra value
    (tmp_path / "short.cif").write_text("\n".join(lines), encoding="latin-1")
    _raises_at(tmp_path / "short.cif", None, "not a multiple of 4")
    bad = _corrupt(src, tmp_path / "range.cif", 506, "167.95", "160.00")
    _raises_at(bad, 506, "_pd_meas_2theta_range_max")
    (tmp_path / "open.cif").write_text("data_x\n_title 'never closed\n")
    _raises_at(tmp_path / "open.cif", 2, "never closed")
    _raises_at(shared_data / "patterns/gsas2_tutorials/Magnetic-I/data/LaMnO3.cif", None, "no powder profile loop")


def test_unreadable_paths(tmp_path, shared_data):
    _raises_at(tmp_path / "nope.xye", None, "no such file")
    (tmp_path / "empty.gsas").write_text("")
    _raises_at(tmp_path / "empty.gsas", None, "empty")
    _raises_at(tmp_path, None, "directory")
    _raises_at(shared_data / f"{G2}/MDtutorials/CWInstDemo/data/LaB6_Jan2018.raw", None, "binary")
    _raises_at(shared_data / f"{G2}/RMCProfile-II/data/gem05984.gss", 2, "time-of-flight")


def test_write_read_round_trip(tmp_path):
    tt = np.linspace(5, 120, 50)
    y = 100 + 50 * np.sin(tt)
    write_xye(tmp_path / "s.xye", tt, y, header="xtalhpc simulated | instrument bt1-cu311 lambda 1.5403 A")
    p = read_measured(tmp_path / "s.xye")
    assert np.allclose(p.two_theta, tt, atol=1e-5) and np.allclose(p.intensity, y, rtol=1e-7)
    assert p.wavelength == pytest.approx(1.5403)
    a, b, c = read_xye_tuple(tmp_path / "s.xye")
    assert np.array_equal(a, p.two_theta) and c is not None
