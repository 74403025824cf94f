"""Bad items are rejects, environment and code errors stop the job; one exit-status convention (issue 16).

* the classification (:func:`xtalhpc.errors.is_item_error`) on both sides;
* ``generate`` on 40 good CIFs (written by ``xtalhpc synthesize``) and 5 planted bad
  inputs: exit 0 with the 5 rejects listed, exit 3 with ``--max-reject-fraction 0.05``;
* a kernel whose import or call fails: ``generate`` stops at once with one message and
  exit 1, leaving a dataset directory that ``verify`` reports incomplete; under MPI the
  failing rank ends the others;
* ``synthesize`` and ``simulate`` by their own rule; the CLI's mapping (2, 1, 130) and
  the one ``--help`` epilog; docs/exit-status.md agrees with :mod:`xtalhpc.job`.
"""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numba.core.errors as nerr
import pytest

from xtalhpc import cli, job
from xtalhpc.dataset import open_dataset, verify_dataset
from xtalhpc.errors import (DeviceError, InputError, JobError, ScatteringError, StructureError, XtalhpcError,
                            is_item_error, job_error, reject_reason)

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
N_GOOD = 40
GOOD_GROUPS = "1-20"  # x 2 per group = 40 CIFs


# ---------------------------------------------------------------------------- the classification
class CudaAPIError(Exception):
    """Stands in for numba-cuda's driver error (same module and name), without needing a GPU."""


CudaAPIError.__module__ = "numba.cuda.cudadrv.driver"

ITEM_ERRORS = [
    InputError("bad value", "x.cif", "_cell_length_a"),
    StructureError("no atoms", "x.cif"),
    ScatteringError("no scattering length for Xq", "x.cif"),
    XtalhpcError("no crystal of space group 12 fitted after 20 occupations"),  # synth gives up on one item
    ValueError("could not convert string to float: '?'"),
    KeyError("_atom_site_fract_x"),
    RuntimeError("gemmi: unexpected end of file"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "x.cif"),
    IsADirectoryError(errno.EISDIR, "Is a directory", "dir.cif"),
]
FATAL_ERRORS = [
    ImportError("scipy 0.16+ is required for linear algebra"),
    ModuleNotFoundError("No module named 'xtalhpc_kernels'", name="xtalhpc_kernels"),
    nerr.TypingError("Failed in nopython mode pipeline (step: nopython frontend)"),
    nerr.LoweringError("Failed in nopython mode pipeline (step: native lowering)"),
    MemoryError(),
    CudaAPIError("[700] Call to cuMemcpyDtoH results in UNKNOWN_CUDA_ERROR"),
    DeviceError("device 'cuda' was asked for but no CUDA GPU is visible"),
    JobError("x failed", "y", "z"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EMFILE, "Too many open files"),
    NameError("name 'foo' is not defined"),
    RecursionError("maximum recursion depth exceeded"),
    KeyboardInterrupt(),
]


@pytest.mark.parametrize("exc", ITEM_ERRORS, ids=lambda e: type(e).__name__)
def test_an_items_own_error_is_a_reject(exc):
    assert is_item_error(exc)
    reason = reject_reason(exc, "reading x.cif")
    assert str(exc) in reason or reason == str(exc)


@pytest.mark.parametrize("exc", FATAL_ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_that_fails_every_item_stops_the_job(exc):
    assert not is_item_error(exc)
    with pytest.raises(JobError) as got:
        reject_reason(exc, "reading x.cif")
    err = got.value
    assert err.what and err.cause and err.fix
    text = str(err)
    assert "likely cause:" in text and "fix:" in text
    if not isinstance(exc, JobError):
        assert text.startswith("reading x.cif failed: " + type(exc).__name__)


def test_job_error_says_the_likely_cause_and_the_fix():
    e = job_error(ImportError("scipy 0.16+ is required for linear algebra"), "generating synthetic crystal 0")
    assert "SciPy" in e.cause and "pip install scipy" in e.fix
    e = job_error(nerr.TypingError("no match"), "simulating")
    assert "compile" in e.cause and "__pycache__" in e.fix
    e = job_error(MemoryError(), "simulating")
    assert "memory" in e.cause and "--shard-size" in e.fix
    e = job_error(CudaAPIError("lost"), "simulating")
    assert "CUDA" in e.cause and "--device cpu" in e.fix


@pytest.mark.parametrize("n_rej,n,frac,want", [(0, 10, 0.0, 0), (1, 10, 0.0, 3), (1, 10, 0.1, 0), (2, 10, 0.1, 3),
                                                (5, 45, 0.2, 0), (5, 45, 0.05, 3), (20, 20, 0.99, 3),
                                                (20, 20, 1.0, 0)])
def test_reject_status(n_rej, n, frac, want):
    assert job.reject_status(n_rej, n, frac) == want


# ---------------------------------------------------------------------------- 40 good + 5 bad
@pytest.fixture(scope="module")
def good_and_bad(tmp_path_factory) -> Path:
    """40 good CIFs from `xtalhpc synthesize` (exit 0) and 5 planted bad inputs."""
    d = tmp_path_factory.mktemp("inputs")
    assert cli.main(["synthesize", "--space-groups", GOOD_GROUPS, "--per-group", "2", "--output", str(d)]) == 0
    (d / "synthesize.json").unlink()
    good = sorted(d.glob("*.cif"))
    assert len(good) == N_GOOD
    text = good[0].read_text()
    (d / "bad_truncated.cif").write_text(text[: len(text) // 3])
    (d / "bad_unknown_element.cif").write_text(_with_unknown_element(text))
    (d / "bad_empty.cif").write_text("")
    (d / "bad_binary.cif").write_bytes(bytes(range(256)) * 4)
    (d / "bad_dir.cif").mkdir()
    return d


def _with_unknown_element(cif: str) -> str:
    """The CIF with every atom's type symbol replaced by 'Xq' (no such element)."""
    lines = cif.splitlines()
    cols, out, in_loop = [], [], False
    for line in lines:
        s = line.strip()
        if s == "loop_":
            cols, in_loop = [], True
        elif in_loop and s.startswith("_"):
            cols.append(s)
        elif in_loop and s and "_atom_site_type_symbol" in cols and len(s.split()) == len(cols):
            parts = s.split()
            parts[cols.index("_atom_site_type_symbol")] = "Xq"
            line = " ".join(parts)
        out.append(line)
    text = "\n".join(out) + "\n"
    assert " Xq" in text, "the synthesized CIF has no _atom_site_type_symbol loop to spoil"
    return text


def test_rejects_within_the_allowed_share_exit_0_beyond_it_exit_3(good_and_bad, tmp_path, capsys):
    out = tmp_path / "ds"
    assert cli.main(["generate", str(good_and_bad), "--output", str(out), "--shard-size", "16", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"{N_GOOD} patterns + 5 rejected = 45 of 45 inputs" in text
    listed = re.findall(r"(?m)^  item \d+: .*?(bad_\w+\.cif)", text)
    assert sorted(listed) == sorted(f"bad_{k}.cif" for k in ("truncated", "unknown_element", "empty", "binary",
                                                             "dir")), text
    assert "within --max-reject-fraction 0.2" in text
    with open_dataset(out) as ds:
        assert len(ds) == N_GOOD
        assert sorted(Path(s).name for s in ds.rejects()["source"]) == sorted(listed)
    assert verify_dataset(out).ok

    # 5 / 45 = 11% > 5%: same dataset (the fraction changes no byte; the rerun resumes), exit 3
    assert cli.main(["generate", str(good_and_bad), "--output", str(out), "--shard-size", "16", "--quiet",
                     "--max-reject-fraction", "0.05"]) == job.EXIT_REJECTS
    text = capsys.readouterr().out
    assert "exit status 3 --max-reject-fraction 0.05" in text and text.count("  item ") == 5
    assert verify_dataset(out).ok
    assert cli.main(["generate", str(good_and_bad), "--output", str(out), "--max-reject-fraction", "1.5"]) == 2
    assert "--max-reject-fraction" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fatal errors stop generate
def _no_synth_kernels(monkeypatch):
    """Make ``from xtalhpc.synth._kernels import place`` fail as a missing module does."""
    from xtalhpc.synth import generator

    generator._compile.cache_clear()
    monkeypatch.setitem(sys.modules, "xtalhpc.synth._kernels", None)
    return generator


def test_a_failing_kernel_import_stops_generate_with_one_message(tmp_path, monkeypatch, capsys):
    generator = _no_synth_kernels(monkeypatch)
    out = tmp_path / "ds"
    try:
        rc = cli.main(["generate", "--synthetic", "20", "--shard-size", "5", "--output", str(out)])
    finally:
        generator._compile.cache_clear()
    err = capsys.readouterr().err
    assert rc == job.EXIT_FAILED
    assert err.count("error:") == 1 and err.count("ModuleNotFoundError") == 1, err
    assert "generating synthetic crystal 0 (space group 1) failed" in err and "likely cause:" in err
    assert "fix:" in err and "rejected" not in err
    assert not list(out.glob("shards/*.h5"))  # stopped at the first item, not after 20 rejects
    rep = verify_dataset(out)
    assert not rep.ok and any("missing" in p for p in rep.problems)
    assert cli.main(["verify", str(out)]) == job.EXIT_FAILED
    assert "PROBLEM" in capsys.readouterr().err


def test_a_failing_kernel_call_stops_generate_from_cifs(good_and_bad, tmp_path, monkeypatch, capsys):
    """The simulation kernel raises a Numba typing error on the first real batch (the warm-up
    is skipped so the failure comes after the output directory exists)."""
    from xtalhpc.generate import run as gen  # the module whose run calls warm_up
    from xtalhpc_kernels import cpu

    def broken(*a, **k):
        raise nerr.TypingError("Failed in nopython mode pipeline (step: nopython frontend)")

    monkeypatch.setattr(gen, "warm_up", lambda *a, **k: None)
    monkeypatch.setattr(cpu, "structure_factors", broken)
    out = tmp_path / "ds"
    assert cli.main(["generate", str(good_and_bad), "--output", str(out), "--shard-size", "16"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and err.count("TypingError") == 1, err
    assert "simulating" in err and "compile" in err and "rejected" not in err
    assert (out / "generate.json").is_file() and not (out / "dataset.h5").exists()
    assert not verify_dataset(out).ok


def test_a_kernel_failing_in_the_warm_up_stops_before_any_output(good_and_bad, tmp_path, monkeypatch, capsys):
    from xtalhpc_kernels import cpu

    def broken(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(cpu, "count_reflections", broken)
    out = tmp_path / "ds"
    assert cli.main(["generate", str(good_and_bad), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "MemoryError" in err and "out of memory" in err
    assert not out.exists()


def test_simulate_batch_collect_raises_a_job_error_for_a_broken_kernel(monkeypatch):
    from xtalhpc.crystal import Crystal
    from xtalhpc.simulate import simulate_batch
    from xtalhpc_kernels import cpu

    c = Crystal(cell=(4.0, 4.0, 4.0, 90, 90, 90), frac=[[0, 0, 0]], species=("Fe",), occupancy=[1.0], b_iso=[0.5])
    assert simulate_batch([c, c], "bt1-cu311", device="cpu", on_error="collect").ok.all()

    def broken(*a, **k):
        raise nerr.LoweringError("native lowering failed")

    monkeypatch.setattr(cpu, "render_patterns", broken)
    for mode in ("collect", "raise"):
        with pytest.raises(JobError, match="LoweringError") as got:
            simulate_batch([c, c], "bt1-cu311", device="cpu", on_error=mode)
        assert "simulating 2 structure(s)" in str(got.value)


@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec beside {sys.executable} (pip install mpich)")
@pytest.mark.mpi
def test_under_mpi_one_failing_rank_stops_every_rank(tmp_path):
    """Rank 1 alone cannot import the synthetic-crystal kernel: it fails on its first shard and
    aborts the world; rank 0 does not wait for it forever, the status is 1, the dataset incomplete."""
    out = tmp_path / "ds"
    boot = ("import os, sys\n"
            "if os.environ.get('PMI_RANK') == '1':\n"
            "    sys.modules['xtalhpc.synth._kernels'] = None\n"
            "from xtalhpc.cli import entry\n"
            "entry(sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_", "OMPI_"))}
    env["NUMBA_NUM_THREADS"] = "1"
    env["XTALHPC_GENERATE_SHARD_DELAY"] = "0.5"  # rank 0 cannot finish every shard before rank 1 starts
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, "-c", boot, "generate", "--synthetic", "24", "--shard-size", "4",
           "--output", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == job.EXIT_FAILED, r.stderr
    assert r.stderr.count("xtalhpc generate: error:") == 1, r.stderr
    # rank 1 starts on shard 1 (items 4-7) and stops at its first item
    assert "generating synthetic crystal 4 (space group 5) failed: ModuleNotFoundError" in r.stderr
    assert "likely cause:" in r.stderr and "rejected" not in r.stderr
    assert not (out / "dataset.h5").exists() and not verify_dataset(out).ok


# ---------------------------------------------------------------------------- synthesize, simulate
def test_synthesize_rejects_a_crystal_it_cannot_draw_and_stops_on_an_environment_error(tmp_path, monkeypatch,
                                                                                       capsys):
    import xtalhpc.synth as synth

    real = synth.generate_crystal

    def flaky(sg, seed, index, config=None):
        if index == 1:
            raise XtalhpcError(f"no crystal of space group {sg} fitted after 20 occupations")
        return real(sg, seed, index, config)

    monkeypatch.setattr(synth, "generate_crystal", flaky)
    out = tmp_path / "syn"
    assert cli.main(["synthesize", "--space-groups", "2", "--per-group", "3", "--output", str(out)]) == 3
    assert len(list(out.glob("*.cif"))) == 2
    info = json.loads((out / "synthesize.json").read_text())
    assert info["n_rejected"] == 1 and info["rejects"][0]["item"] == 1
    assert "REJECTED item 1" in capsys.readouterr().err

    calls = []

    def broken(sg, seed, index, config=None):
        calls.append(index)
        raise ImportError("scipy 0.16+ is required for linear algebra")

    monkeypatch.setattr(synth, "generate_crystal", broken)
    assert cli.main(["synthesize", "--space-groups", "2", "--per-group", "5", "--output", str(tmp_path / "s2")]) == 1
    err = capsys.readouterr().err
    assert calls == [0] and err.count("error:") == 1 and "pip install scipy" in err


def test_simulate_stops_on_an_environment_error(tmp_path, monkeypatch, capsys):
    import xtalhpc.io as io

    cif = REPO / "xtalhpc" / "data" / "structures" / "Silicon.cif"
    calls = []

    def broken(path, **kwargs):
        calls.append(path)
        raise ImportError("cannot import name 'symmetry_partners' from 'xtalhpc_kernels.symmetry'")

    monkeypatch.setattr(io, "read_structures", broken)
    assert cli.main(["simulate", str(cif), str(cif), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert len(calls) == 1 and err.count("error:") == 1 and "FAILED" not in err


# ---------------------------------------------------------------------------- the CLI's mapping and help
@pytest.mark.parametrize("exc,status", [(InputError("bad", field="--x"), 2), (StructureError("bad", "a.cif"), 2),
                                        (JobError("w", "c", "f"), 1), (DeviceError("no GPU"), 1),
                                        (XtalhpcError("a shard lost items"), 1), (ValueError("bug"), 1),
                                        (ImportError("no module"), 1), (KeyboardInterrupt(), 130)])
def test_main_maps_errors_to_the_convention(monkeypatch, capsys, exc, status):
    from xtalhpc.commands import info

    def run(args):
        raise exc

    monkeypatch.setattr(info, "run", run)
    assert cli.main(["info", "whatever"]) == status
    err = capsys.readouterr().err
    if status == 1 and not isinstance(exc, XtalhpcError):
        assert "likely cause:" in err and "test_exit_status.py" in err  # where the unexpected error came from


def test_every_help_ends_with_the_one_exit_status_table(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in [("xtalhpc", parser), *sub.choices.items()]:
        text = p.format_help()
        assert text.rstrip().endswith(job.EXIT_STATUS_HELP.rstrip().splitlines()[-1].strip()), name
        assert "\n".join(job.EXIT_STATUS_HELP.splitlines()[:3]) in text, name  # line breaks kept


def test_docs_table_matches_the_constants():
    doc = (REPO / "docs" / "exit-status.md").read_text()
    rows = dict(re.findall(r"(?m)^\|\s*(\d+)\s*\|\s*`(EXIT_\w+)`", doc))
    assert rows == {str(getattr(job, n)): n for n in ("EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_REJECTS",
                                                      "EXIT_INTERRUPTED")}
    assert f"{job.DEFAULT_MAX_REJECT_FRACTION:.2f}" in doc
    assert "docs/exit-status.md" in (REPO / "README.md").read_text()
    assert "docs/exit-status.md" in job.__doc__
