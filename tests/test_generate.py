"""``xtalhpc generate`` end to end: real structures, real HDF5, real MPI ranks.

Inputs: 28 small real CIFs from ../shared/data (Dans_Diffraction and COD test
inputs, 1-5 atom sites) plus a two-block CIF written here (each block is an
item), and four planted bad inputs: a truncated CIF, an unknown element, an
empty file and a directory named ``dir.cif``. 34 items, shard size 5 -> 7 shards.

MPI runs are subprocesses of the ``mpiexec`` beside the venv's Python (the
``mpich`` wheel); every such run pays MPI start-up plus loading the Numba
cache, a few seconds each.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from xtalhpc import cli
from xtalhpc.dataset import open_dataset, schema, verify_dataset

DANS = ("Aluminium BCC Beryllium Cobalt Copper Cubic Diamond FCC Gold Graphite HCP Iron KCl Niobium Ruthenium "
        "Rutile Silicon Silver ZnO triclinic").split()
COD = ("1000026-MgB2 10010 1501508 1557929 1009031 1011060-graphite-atom-label 2101499-diamond "
       "9012939-with-T-in-deg-C").split()
SHARD = 5
MULTI_CIF = """data_cscl
_cell_length_a 4.12
_cell_length_b 4.12
_cell_length_c 4.12
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Cs1 Cs 0 0 0
Cl1 Cl 0.5 0.5 0.5

data_nacl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
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
BAD = {"zz_truncated.cif", "unknown_element.cif", "empty.cif", "dir.cif"}
MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpi = pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec beside {sys.executable} (pip install mpich)")


@pytest.fixture(scope="session")
def inputs(shared_data, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    for name in DANS:
        shutil.copy(shared_data / "structures/dans_diffraction/Dans_Diffraction/Structures" / f"{name}.cif", d)
    for name in COD:
        shutil.copy(shared_data / "structures/cod/cifs" / f"tests__inputs__{name}.cif", d)
    (d / "multi.cif").write_text(MULTI_CIF)
    # planted bad inputs
    text = (d / "Rutile.cif").read_text()
    (d / "zz_truncated.cif").write_text(text[: len(text) // 3])
    (d / "unknown_element.cif").write_text(MULTI_CIF.split("\n\n")[0].replace("Cl1 Cl", "Xq1 Xq"))
    (d / "empty.cif").write_text("")
    (d / "dir.cif").mkdir()
    return d


N_GOOD = len(DANS) + len(COD) + 2
N_ITEMS = N_GOOD + len(BAD)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_", "OMPI_"))}
    env.setdefault("NUMBA_NUM_THREADS", "1")
    env.update(extra)
    return env


def _generate_cmd(inputs: Path, out: Path, *extra: str) -> list[str]:
    # peaks and gzip are off by default; the tests exercise them
    return ["generate", str(inputs), "--output", str(out), "--shard-size", str(SHARD), "--peaks",
            "--compression", "gzip", *extra]


@pytest.fixture(scope="session")
def reference(inputs, tmp_path_factory) -> Path:
    """One rank, in-process through the CLI: the dataset every other run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    rc = cli.main(_generate_cmd(inputs, out, "--quiet"))
    assert rc == 0  # the 4 planted rejects of 34 items are within --max-reject-fraction 0.20
    return out


def _arrays(path: Path) -> dict:
    with open_dataset(path) as ds:
        out = ds.read_all()
        out["rejects"] = ds.rejects()
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "rejects":
            for c in ("item_index", "source", "reason"):
                np.testing.assert_array_equal(a[k][c], b[k][c], err_msg=f"rejects/{c}")
        else:
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_every_input_is_a_pattern_or_a_reject(reference, inputs):
    with open_dataset(reference) as ds:
        rej = ds.rejects()
        assert ds.attrs["n_items"] == N_ITEMS
        assert len(ds) == N_GOOD
        assert len(ds) + len(rej["item_index"]) == N_ITEMS
        names = {Path(s).name for s in rej["source"]}
        assert names == BAD, dict(zip(rej["source"], rej["reason"]))
        reasons = dict(zip((Path(s).name for s in rej["source"]), rej["reason"]))
        assert "directory" in reasons["dir.cif"]
        assert "empty" in reasons["empty.cif"]
        assert "Xq" in reasons["unknown_element.cif"]
        assert "parse" in reasons["zz_truncated.cif"] or "CIF" in reasons["zz_truncated.cif"]
        # items are numbered over the sorted file list, blocks in file order
        items = np.sort(np.concatenate([ds.read("item_index"), rej["item_index"]]))
        np.testing.assert_array_equal(items, np.arange(N_ITEMS))
        sid = list(ds.read("source_id"))
        multi = [s for s in sid if "multi.cif#" in s]
        assert [s.rsplit("#", 1)[1] for s in multi] == ["0", "1"]
        assert ds.attrs["n_shards"] == -(-N_ITEMS // SHARD)


def test_labels_and_metadata_are_self_describing(reference):
    import json

    with open_dataset(reference) as ds:
        a = ds.attrs
        assert a["schema"] == schema.SCHEMA_NAME and a["schema_version"] == schema.SCHEMA_VERSION
        assert a["instrument"]["name"] == "bt1-cu311" and a["radiation"] == "neutron"
        assert a["config"]["shard_size"] == SHARD and a["seed"] == 0
        assert json.loads(a["vocabularies"])["bravais_lattice"][9] == "hR"
        np.testing.assert_allclose(ds.two_theta[[0, -1]], [3.0, 167.75])
        pat = ds.patterns[()]
        assert pat.dtype == np.float32 and pat.shape == (N_GOOD, 3296)
        np.testing.assert_allclose(pat.max(axis=1), 1.0, rtol=0, atol=0)  # normalised: max exactly 1
        sg = ds.read("space_group")
        by_source = dict(zip((Path(s).name for s in ds.read("source_id")), sg))
        assert by_source["Aluminium.cif"] == 225 and by_source["BCC.cif"] == 229
        assert by_source["multi.cif#0"] == 221 and by_source["multi.cif#1"] == 225
        cs = dict(zip((Path(s).name for s in ds.read("source_id")), ds.labels("crystal_system")))
        bl = dict(zip((Path(s).name for s in ds.read("source_id")), ds.labels("bravais_lattice")))
        assert (cs["ZnO.cif"], bl["ZnO.cif"], cs["triclinic.cif"], bl["triclinic.cif"]) == \
            ("hexagonal", "hP", "triclinic", "aP")
        lat = ds.read("lattice")
        i = list(by_source).index("Aluminium.cif")
        np.testing.assert_allclose(lat[i], [4.04958, 4.04958, 4.04958, 90, 90, 90])
        assert set(ds.labels("split")) <= {"train", "val", "test"}
        # the peak list belongs to this pattern: Al (111) at 2theta = 2 asin(lambda / 2d), d = a / sqrt(3)
        pk = ds.peaks(i)
        first = np.argmin(pk["two_theta"])
        assert sorted(np.abs(pk["hkl"][first])) == [1, 1, 1]
        expect = 2 * np.degrees(np.arcsin(1.5403 / (2 * 4.04958 / np.sqrt(3))))
        assert abs(pk["two_theta"][first] - expect) < 1e-4
        assert np.min(np.abs(pk["two_theta"] - ds.two_theta[np.argmax(pat[i])])) < 0.1


def test_info_and_verify_commands(reference, capsys):
    assert cli.main(["verify", str(reference)]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli.main(["info", str(reference)]) == 0
    out = capsys.readouterr().out
    assert f"{N_ITEMS} inputs = {N_GOOD} patterns + {len(BAD)} rejected" in out
    assert "cubic" in out and "bt1-cu311" in out


def test_rerun_is_a_no_op_and_other_config_is_refused(reference, tmp_path, inputs, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    before = (copy / "shards" / "part-00000.h5").stat().st_mtime_ns
    assert cli.main(_generate_cmd(inputs, copy)) == 0
    err = capsys.readouterr().err
    assert "7 already complete, 0 to compute" in err
    assert (copy / "shards" / "part-00000.h5").stat().st_mtime_ns == before
    assert cli.main(_generate_cmd(inputs, copy, "--seed", "7")) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "seed 0 -> 7" in err


@needs_mpi
@pytest.mark.mpi
def test_three_ranks_give_the_same_arrays_as_one(reference, inputs, tmp_path):
    out = tmp_path / "ds3"
    cmd = [str(MPIEXEC), "-n", "3", sys.executable, "-m", "xtalhpc.cli", *_generate_cmd(inputs, out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # rank 0's status through mpiexec: rejects within the allowed share
    ranks_used = set(re.findall(r"shard \d+ rank (\d+):", r.stderr))
    assert len(ranks_used) >= 2, r.stderr  # dynamic scheduling really shared the work
    assert f"generated {N_GOOD} + rejected {len(BAD)} = {N_ITEMS} of {N_ITEMS} inputs (OK)" in r.stderr
    _assert_same(_arrays(reference), _arrays(out))
    assert verify_dataset(out).ok


@needs_mpi
@pytest.mark.mpi
def test_resume_after_sigkill_of_one_rank_equals_uninterrupted(reference, inputs, tmp_path):
    out = tmp_path / "ds2"
    cmd = [sys.executable, "-m", "xtalhpc.cli", *_generate_cmd(inputs, out, "--ranks", "2")]
    # 1.5 s per shard: 7 shards over 2 ranks take >= 5 s, plenty of time to kill one rank mid-run.
    env = _env(XTALHPC_GENERATE_SHARD_DELAY="1.5")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids = {}
    deadline = time.monotonic() + 120
    try:
        for line in proc.stderr:  # "[generate] rank R/2 pid P host H"
            m = re.search(r"rank (\d+)/2 pid (\d+)", line)
            if m:
                pids[int(m.group(1))] = int(m.group(2))
            if len(pids) == 2:
                break
            assert time.monotonic() < deadline
        while not list((out / "shards").glob("part-*.h5")):
            assert time.monotonic() < deadline and proc.poll() is None, "no shard appeared"
            time.sleep(0.05)
        os.kill(pids[1], signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    done = sorted(p.name for p in (out / "shards").glob("part-*.h5"))
    assert 1 <= len(done) < 7, done
    assert not (out / "dataset.h5").exists()
    assert not verify_dataset(out).ok  # no master yet: verify says so

    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) already complete, (\d+) to compute", r.stderr)
    assert m and int(m.group(1)) >= len(done) and int(m.group(1)) + int(m.group(2)) == 7, r.stderr
    computed = set(re.findall(r"shard (\d+) rank", r.stderr))
    assert not computed & {n[5:10] for n in done}  # finished shards were not recomputed
    _assert_same(_arrays(reference), _arrays(out))
    assert verify_dataset(out).ok
    assert not list((out / "shards").glob("*.tmp"))


@needs_mpi
@pytest.mark.mpi
def test_sigterm_to_the_launcher_stops_the_ranks_and_a_rerun_resumes(reference, inputs, tmp_path):
    """`kill` of `generate --ranks 2` (SIGTERM to the process that started mpiexec) stops both ranks
    (none is left running), exits 130, and the same command then resumes to the reference arrays."""
    out = tmp_path / "ds3"
    cmd = [sys.executable, "-m", "xtalhpc.cli", *_generate_cmd(inputs, out, "--ranks", "2")]
    env = _env(XTALHPC_GENERATE_SHARD_DELAY="1.5")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    pids, err = {}, []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stderr:
            err.append(line)
            m = re.search(r"rank (\d+)/2 pid (\d+)", line)
            if m:
                pids[int(m.group(1))] = int(m.group(2))
            if len(pids) == 2:
                break
            assert time.monotonic() < deadline
        while not list((out / "shards").glob("part-*.h5")):
            assert time.monotonic() < deadline and proc.poll() is None, "no shard appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        err.append(proc.communicate(timeout=60)[1])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    text = "".join(err)
    assert proc.returncode == 130, text[-2000:]
    assert "SIGTERM received; the 2 MPI ranks were stopped" in text

    def running(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in pids.values()), f"ranks {pids} still running"
    assert not (out / "dataset.h5").exists()
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same(_arrays(reference), _arrays(out))
    assert verify_dataset(out).ok


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("missing", [1, 2])
def test_fewer_shards_to_compute_than_ranks(reference, inputs, tmp_path, missing):
    """Ranks start on todo[rank] without asking; ranks beyond the shards left have none and stop.
    Resuming with 1 or 2 missing shards on 3 ranks finishes (no rank waits for an answer that
    never comes) and gives the reference arrays."""
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    (out / "dataset.h5").unlink()
    gone = sorted((out / "shards").glob("part-*.h5"))[-missing:]
    for p in gone:
        p.unlink()
    cmd = [str(MPIEXEC), "-n", "3", sys.executable, "-m", "xtalhpc.cli", *_generate_cmd(inputs, out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{7 - missing} already complete, {missing} to compute" in r.stderr, r.stderr
    assert sorted(set(re.findall(r"shard (\d+) rank", r.stderr))) == sorted(p.name[5:10] for p in gone)
    _assert_same(_arrays(reference), _arrays(out))
    assert verify_dataset(out).ok


@needs_mpi
@pytest.mark.mpi
def test_cuda_without_gpu_stops_every_rank_before_any_shard(inputs, tmp_path, capsys):
    """--device cuda on a machine without a GPU: the warm-up on every rank raises the device
    error before the enumeration, so one rank or two all stop with exit 1 (an environment error,
    docs/exit-status.md) and no shard; under MPI the first rank to fail ends the others."""
    from xtalhpc.backend import cuda_available

    if cuda_available():
        pytest.skip("a CUDA device (or the simulator) is visible")
    out = tmp_path / "one"
    assert cli.main(_generate_cmd(inputs, out, "--device", "cuda", "--quiet")) == 1
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not list(out.glob("shards/*"))
    out = tmp_path / "two"
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "xtalhpc.cli", *_generate_cmd(inputs, out, "--device", "cuda")]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert 1 <= r.stderr.count("no CUDA GPU is visible") <= 2, r.stderr  # the failing rank says why
    assert not list(out.glob("shards/*"))


def test_srun_without_pmi_is_refused(inputs, tmp_path):
    """srun without --mpi=pmi2 starts singletons: Slurm says 2 tasks, MPI says 1 rank. An MPI
    world that is not the one the job needs is an environment error: exit 1."""
    out = tmp_path / "ds"
    env = _env(SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID="1", SLURM_JOB_ID="1")
    r = subprocess.run([sys.executable, "-m", "xtalhpc.cli", *_generate_cmd(inputs, out)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "srun --mpi=pmi2" in r.stderr
    assert not (out / "shards").exists()


def test_bad_options_name_the_flag(inputs, tmp_path, capsys):
    assert cli.main([*_generate_cmd(inputs, tmp_path / "x"), "--compression-level", "5", "--compression", "lzf"]) == 2
    assert "--compression-level" in capsys.readouterr().err
    assert cli.main(["generate", str(tmp_path / "nothing*.cif"), "--output", str(tmp_path / "y")]) == 2
    assert "matched no files" in capsys.readouterr().err


def test_help_default_shard_size_matches_the_code():
    from xtalhpc.commands.generate import DEFAULT_SHARD_SIZE_TEXT
    from xtalhpc.generate import DEFAULT_SHARD_SIZE

    assert int(DEFAULT_SHARD_SIZE_TEXT) == DEFAULT_SHARD_SIZE


def test_defaults_store_patterns_unfiltered_and_no_peaks(inputs, tmp_path):
    import h5py

    src = tmp_path / "in"
    src.mkdir()
    for name in ("Aluminium.cif", "ZnO.cif", "multi.cif"):
        shutil.copy(inputs / name, src)
    out = tmp_path / "ds"
    assert cli.main(["generate", str(src), "--output", str(out), "--quiet"]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 4 and not ds.has_peaks
        with pytest.raises(Exception, match="no peak lists"):
            ds.peaks(0)
    with h5py.File(out / "shards" / "part-00000.h5", "r") as f:
        assert f["patterns"].compression is None
    assert verify_dataset(out).ok


def test_sbatch_script_is_site_neutral():
    """slurm/generate.sbatch: valid bash, launches with a PMI plugin, no partition/account/paths baked in."""
    script = Path(__file__).resolve().parents[1] / "slurm" / "generate.sbatch"
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    header = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    assert header and not any(k in ln for ln in header for k in ("--partition", "--account", "-p ", "-A "))
    assert 'srun --mpi="${XTALHPC_MPI:-pmi2}" xtalhpc generate' in text
    assert "/home/" not in text and "/work/" not in text
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.parametrize("name,args", [("generate.sbatch", ["OUT", "SRC"]),
                                       ("train.sbatch", ["CFG.toml", "DS", "RUN"]),
                                       ("evaluate.sbatch", ["MODEL", "DS", "OUT"])])
def test_sbatch_scripts_missing_environment_is_a_failure(tmp_path, name, args):
    """A missing environment is the job's failure (exit 1: rerun once it is there), not a usage
    error (2), so an afterok chain reads it right; both causes are said."""
    script = Path(__file__).resolve().parents[1] / "slurm" / name
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XTALHPC_VENV": str(tmp_path / "novenv")}
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 1 and "novenv is not a virtual environment" in r.stderr
    del env["XTALHPC_VENV"]
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 1 and "xtalhpc is not on PATH" in r.stderr


def test_synthetic_items_are_a_function_of_seed_and_item_index(tmp_path):
    """--synthetic: item i is generate_crystal(space group, seed, i); its pattern is that crystal's."""
    synth = pytest.importorskip("xtalhpc.synth")
    from xtalhpc.simulate import simulate_batch

    out = tmp_path / "syn"
    assert cli.main(["generate", "--synthetic", "2", "--seed", "3", "--output", str(out), "--quiet"]) == 0
    with open_dataset(out) as ds:
        assert list(ds.read("source_id")) == ["synthetic:sg1:seed3:item0", "synthetic:sg2:seed3:item1"]
        assert list(ds.read("space_group")) == [1, 2]
        pat = ds.patterns[1]
    c = synth.generate_crystal(2, 3, 1)
    raw = simulate_batch([c], "bt1-cu311").patterns[0]
    np.testing.assert_array_equal(pat, (raw / raw.max()).astype(np.float32))


def test_csv_structure_list_with_labels(inputs, tmp_path):
    """A CSV list names files (relative to the CSV) and may give the space-group label, which wins."""
    lst = tmp_path / "list.csv"
    rel = os.path.relpath(inputs, tmp_path)
    lst.write_text("path,space_group,comment\n"
                   f"{rel}/Aluminium.cif,225,as in the file\n"
                   f"{rel}/Copper.cif,229,relabelled on purpose\n"
                   f"{rel}/ZnO.cif,,no label: the file's\n"
                   "missing.cif,1,no such file\n")
    out = tmp_path / "ds"
    assert cli.main(["generate", str(lst), "--output", str(out), "--quiet"]) == 3  # 1 reject of 4 > 0.20
    with open_dataset(out) as ds:
        sg = dict(zip((Path(s).name for s in ds.read("source_id")), ds.read("space_group")))
        assert sg == {"Aluminium.cif": 225, "Copper.cif": 229, "ZnO.cif": 186}
        rej = ds.rejects()
        assert [Path(s).name for s in rej["source"]] == ["missing.cif"]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,sg\nx.cif,12\n")
    assert cli.main(["generate", str(bad), "--output", str(tmp_path / "ds2")]) == 2


MULTI_BLOCK_COD = ("cif_molecule__various-sg-number-sources", "cif2cod__various-sg-number-sources", "Cottone",
                   "bs5069-estimated-sg", "cif_fillcell__platon-squeeze-void", "aiida_exported", "polymers__1523050",
                   "1000054")


def test_cheap_item_count_agrees_with_the_reader(inputs, shared_data):
    """Enumeration counts blocks from gemmi's parse only; it must match what the reader returns."""
    from xtalhpc.generate import count_items, read_file_items

    paths = [str(p) for p in sorted(inputs.iterdir())]
    paths += [str(shared_data / "structures/cod/cifs" / f"tests__inputs__{n}.cif") for n in MULTI_BLOCK_COD]
    counts = {p: (count_items(p), len(read_file_items(p))) for p in paths}
    assert all(a == b for a, b in counts.values()), {p: c for p, c in counts.items() if c[0] != c[1]}
    assert max(a for a, _ in counts.values()) >= 5  # multi-block files were really exercised


def test_block_count_mismatch_rejects_the_whole_file(inputs, tmp_path, monkeypatch):
    """If the cheap count and the reader ever disagree, the file's items become rejects, never vanish."""
    from xtalhpc.generate import items as gen  # the module whose enumeration calls count_items

    src = tmp_path / "in"
    src.mkdir()
    for name in ("Aluminium.cif", "multi.cif"):
        shutil.copy(inputs / name, src)
    real = gen.count_items
    monkeypatch.setattr(gen, "count_items", lambda p: 3 if p.endswith("multi.cif") else real(p))
    out = tmp_path / "ds"
    assert cli.main(["generate", str(src), "--output", str(out), "--quiet"]) == 3  # 3 rejects of 4
    with open_dataset(out) as ds:
        rej = ds.rejects()
        assert len(ds) == 1 and list(rej["item_index"]) == [1, 2, 3]
        assert all("enumeration counted 3" in r for r in rej["reason"])


def test_a_second_run_on_the_same_output_is_refused_while_one_runs(reference, tmp_path, inputs, capsys):
    import fcntl

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    with open(copy / "generate.lock", "a+") as fh:  # stands in for a running generate
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.main(_generate_cmd(inputs, copy)) == 2
        assert "another `xtalhpc generate` is writing" in capsys.readouterr().err
    assert cli.main(_generate_cmd(inputs, copy, "--quiet")) == 0  # lock released: resumes (nothing to do)


def test_cli_flags_are_frozen():
    """Changing a flag of generate/info/verify breaks users' sbatch scripts: do it on purpose, here."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {name: sorted(o for a in p._actions for o in a.option_strings)
             for name, p in sub.choices.items() if name in ("generate", "info", "verify")}
    assert flags == {
        "generate": sorted(["-h", "--help", "-o", "--output", "-i", "--instrument", "-n", "--ranks", "-k",
                            "--shard-size", "--seed", "--device", "--compression", "--compression-level", "--peaks",
                            "--no-peaks", "--split", "--synthetic", "--per-space-group", "--cycle-to", "-q",
                            "--quiet", "--radiation", "--deuterate", "--h-background", "--no-h-background", "--synthetic-prior", "--synthetic-prior-power",
                            "--synthetic-special", "--synthetic-formulas", "--synthetic-pseudo", "--synthetic-hydrogen",
                            "--texture",
                            "--max-reject-fraction", "--max-absorption", "--find-symmetry", "--no-find-symmetry"]),
        "info": sorted(["-h", "--help", "--json", "--top", "--class-report", "--before"]),
        "verify": sorted(["-h", "--help", "--no-checksums"]),
    }


def test_info_json(reference, capsys):
    import json

    assert cli.main(["info", str(reference), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_items"] == N_ITEMS and s["n_patterns"] == N_GOOD and s["complete"]
    assert sum(s["crystal_system"].values()) == N_GOOD
    assert s["instrument"]["name"] == "bt1-cu311" and s["provenance"]["ranks"] == 1


def test_radiation_override_is_recorded_and_changes_the_patterns(inputs, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(inputs / "Aluminium.cif", src)
    outs = {}
    for rad in ("neutron", "xray"):
        outs[rad] = tmp_path / rad
        assert cli.main(["generate", str(src), "--output", str(outs[rad]), "--radiation", rad, "--quiet"]) == 0
    with open_dataset(outs["neutron"]) as n, open_dataset(outs["xray"]) as x:
        assert (n.attrs["radiation"], x.attrs["radiation"]) == ("neutron", "xray")
        assert x.attrs["instrument"]["radiation"] == "xray"
        assert not np.array_equal(n.patterns[0], x.patterns[0])


def test_malloc_tuning_applies_on_glibc_and_leaves_user_settings_alone(monkeypatch):
    import platform

    from xtalhpc import generate as gen

    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(k, raising=False)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert gen._tune_malloc() is True
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert gen._tune_malloc() is False


def test_stored_patterns_are_the_raw_rows_divided_by_their_max_in_float64(inputs, tmp_path):
    """The normalisation's bits: float64 division of the simulator's rows by their max, rounded to float32."""
    from xtalhpc.generate import (GenerateConfig, SerialComm, _enumerate, _group_key_fn, compute_shard, load_item,
                                  resolve_instrument)
    from xtalhpc.simulate import simulate_batch

    cfg = GenerateConfig(sources=(str(inputs),), output=str(tmp_path / "ds"), shard_size=8, h_background=False)
    inst = resolve_instrument(cfg)
    man = _enumerate(SerialComm(), cfg)
    for shard in range(2):
        data, _ = compute_shard(shard, cfg, man, inst, key_fn=_group_key_fn()[1])
        assert data.n_patterns >= 4
        crystals = [load_item(man, int(i), cfg.seed) for i in data.per_pattern["item_index"]]
        raw = simulate_batch(crystals, inst, on_error="collect", peaks=False).patterns
        scale = raw.max(axis=1).astype(np.float64)
        np.testing.assert_array_equal(data.per_pattern["scale"], scale)
        want = (raw.astype(np.float64) / scale[:, None]).astype(np.float32)
        assert data.patterns.dtype == np.float32
        assert np.array_equal(data.patterns.view(np.uint32), want.view(np.uint32))


def test_background_writer_gives_the_same_shards_and_follows_the_core_policy(reference, inputs, tmp_path,
                                                                              monkeypatch):
    """Shards written on the background thread equal those written on the computing thread
    (the in-process reference run used whichever the policy picked: force the other one), and
    the policy takes the thread only where a core is left over."""
    from xtalhpc import generate as g

    monkeypatch.setenv(g.SYNC_WRITE_ENV, "0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    import numba

    threads = numba.get_num_threads()
    assert g.background_writes(g.SerialComm()) == (4 > threads)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(threads)), raising=False)
    assert not g.background_writes(g.SerialComm())  # no core left over
    # the SHA-256 helper thread takes the core after the writer's
    for extra, sync, want in ((0, "0", (False, False)), (1, "0", (True, False)), (2, "0", (True, True)),
                              (1, "1", (False, True)), (0, "1", (False, False))):
        monkeypatch.setenv(g.SYNC_WRITE_ENV, sync)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(threads + extra)), raising=False)
        assert g.write_threads(g.SerialComm()) == want, (extra, sync)
    monkeypatch.setenv(g.SYNC_WRITE_ENV, "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(threads + 8)), raising=False)
    assert not g.background_writes(g.SerialComm())  # forced off

    ref_background = json.loads((reference / g.RUN_STATS_NAME).read_text())["times"]["per_rank"][0]["background_writes"]
    monkeypatch.setenv(g.SYNC_WRITE_ENV, "1" if ref_background else "0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(threads + 8)), raising=False)
    out = tmp_path / "ds"
    assert cli.main(_generate_cmd(inputs, out, "--quiet")) == 0
    run = json.loads((out / g.RUN_STATS_NAME).read_text())["times"]["per_rank"][0]
    assert run["background_writes"] != ref_background
    _assert_same(_arrays(reference), _arrays(out))
    shards = sorted(reference.glob(schema.shard_name(0).replace("00000", "*")))
    assert shards
    for shard in shards:
        with h5py.File(shard) as a, h5py.File(out / shard.relative_to(reference)) as b:
            assert a.attrs["sha256"] == b.attrs["sha256"], shard.name
