"""The `simulate` and `demo` commands, called in-process through xtalhpc.cli.main."""
from __future__ import annotations

import csv

import numpy as np

from xtalhpc.cli import COMMANDS, main
from xtalhpc.commands.demo import bundled_structures
from xtalhpc.io_patterns import read_xye


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_simulate_one_file_writes_xye_csv_png(tmp_path, capsys):
    cif = next(p for p in bundled_structures() if p.name == "Sapphire.cif")
    rc = main(["simulate", str(cif), "--instrument", "bt1-cu311", "--device", "cpu",
               "--xye", str(tmp_path / "a.xye"), "--reflections", str(tmp_path / "a.csv"),
               "--plot", str(tmp_path / "a.png")])
    assert rc == 0
    tt, y, e = read_xye(tmp_path / "a.xye")
    assert len(tt) == 3296 and tt[0] == 3.0 and abs(tt[-1] - 167.75) < 1e-9 and y.max() > 0
    with open(tmp_path / "a.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["h", "k", "l", "d", "two_theta", "multiplicity", "F2", "intensity"]
    d = np.array([float(r["d"]) for r in rows])
    assert np.all(np.diff(d) < 0)  # one row per family, d descending
    # corundum (012) first, at d = 3.48 A
    assert (rows[0]["h"], rows[0]["k"], rows[0]["l"]) == ("0", "1", "2") and abs(d[0] - 3.4808) < 1e-3
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 simulated, 0 with no intensity, 0 failed, of 1 inputs" in capsys.readouterr().out


def test_simulate_batch_lists_failures_and_goes_on(tmp_path, capsys):
    good = [str(p) for p in bundled_structures()[:2]]
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 4\nloop_\n_atom_site_label\n")
    unknown = tmp_path / "Xx.cif"
    unknown.write_text("data_y\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n_cell_angle_alpha 90\n"
                       "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
                       "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nQ1 Qq 0 0 0\n")
    out = tmp_path / "out"
    rc = main(["simulate", *good, str(bad), str(unknown), "--device", "cpu", "--xye", str(out) + "/"])
    assert rc == 3  # EXIT_REJECTS: simulate fails on any rejected input
    captured = capsys.readouterr()
    assert "2 simulated, 0 with no intensity, 2 failed, of 4 inputs" in captured.out
    assert "FAILED" in captured.err and "broken.cif" in captured.err and "Xx.cif" in captured.err
    assert sorted(p.name for p in out.glob("*.xye")) == sorted(f"{p.rsplit('/', 1)[1][:-4]}.xye" for p in good)


def test_cuda_without_gpu_is_a_clear_error(capsys):
    cif = str(bundled_structures()[0])
    rc = main(["simulate", cif, "--device", "cuda"])
    assert rc == 1  # an environment error (docs/exit-status.md)
    assert "cuda" in capsys.readouterr().err.lower()


def test_bundled_structures_simulate_generate_verify_info(tmp_path, capsys):
    """Patterns of the bundled structures, then a generate/verify/info round on them plus synthetic
    crystals (1 rank and few crystals here, to stay quick; the whole demo: tests/test_demo.py)."""
    files = [str(p) for p in bundled_structures()]
    d = str(tmp_path) + "/"
    assert main(["simulate", *files, "--device", "cpu", "--xye", d, "--reflections", d, "--plot", d]) == 0
    assert main(["generate", *files, "--synthetic", "12", "--output", str(tmp_path / "dataset"), "--ranks", "1",
                 "--device", "cpu", "--shard-size", "16", "--seed", "1", "--quiet"]) == 0
    assert main(["verify", str(tmp_path / "dataset")]) == 0
    n = len(files)
    assert len(list(tmp_path.glob("*.xye"))) == n and len(list(tmp_path.glob("*.png"))) == n
    out = capsys.readouterr().out
    assert f"{n + 12} patterns + 0 rejected = {n + 12} of {n + 12} inputs" in out
    assert ": OK:" in out and (tmp_path / "dataset" / "dataset.h5").is_file()
    # the class-balance report of the dataset (issue: via `xtalhpc info`)
    rep = tmp_path / "report" / "classes"
    assert main(["info", str(tmp_path / "dataset"), "--class-report", str(rep)]) == 0
    assert rep.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    with open(rep.with_suffix(".csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 230 and sum(int(r["before"]) for r in rows) == n + 12
    assert "class report" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "dataset"), "--before", str(tmp_path / "dataset")]) == 2


def test_instrument_help_names_every_preset(capsys):
    from xtalhpc.instruments import presets

    try:
        main(["simulate", "--help"])
    except SystemExit:
        pass
    out = " ".join(capsys.readouterr().out.split())
    for name in presets():
        assert name in out
