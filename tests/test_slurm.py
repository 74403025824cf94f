"""slurm/generate.sbatch on a real Slurm cluster (DESIGN.md section 5).

Start one on this machine with ``sudo bash slurm/local-cluster.sh start`` (a single
node ``localhost``, Debian's slurm-wlm + munge + slurmdbd/MariaDB); CI does that in ``.ci/run``.
These tests need no accounting (they poll ``scontrol``); tests/test_slurm_submitit.py does.
Without a cluster these tests skip, naming why, unless XTALHPC_REQUIRE_SLURM is
set (CI sets it): then they fail.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from slurm_helpers import VENV_BIN, job_env, require_cluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SBATCH_SCRIPT = REPO / "slurm" / "generate.sbatch"
CIFS = sorted((REPO / "xtalhpc" / "data" / "structures").glob("*.cif"))
SHARD = 2
NTASKS = 2
JOB_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def cluster() -> dict:
    """Skip (or, with XTALHPC_REQUIRE_SLURM, fail) unless a Slurm controller answers with a usable node."""
    require_cluster()
    env = job_env()
    xtalhpc = shutil.which("xtalhpc", path=env["PATH"])
    assert xtalhpc is not None and Path(xtalhpc).parent == VENV_BIN, \
        f"the job must run this venv's xtalhpc ({VENV_BIN}), PATH gives {xtalhpc}"
    assert len(CIFS) == 6, CIFS
    return env


def _job_fields(job_id: str) -> dict:
    r = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"scontrol show job {job_id}: {r.stderr}"
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", r.stdout))


def _wait_for_job(job_id: str, log: Path) -> dict:
    """Poll ``scontrol show job`` until the job has ended (no accounting needed); scancel it on timeout."""
    t0 = time.monotonic()
    while True:
        fields = _job_fields(job_id)
        if fields["JobState"] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING",
                                      "SUSPENDED"):
            return fields
        if time.monotonic() - t0 > JOB_TIMEOUT_S:
            subprocess.run(["scancel", job_id], timeout=30)
            pytest.fail(f"job {job_id} still {fields['JobState']} ({fields.get('Reason')}) after {JOB_TIMEOUT_S} s; "
                        f"log:\n{log.read_text() if log.exists() else '(none)'}")
        time.sleep(0.5)


def _arrays(ds: Path) -> dict:
    out = {}
    with h5py.File(ds / "dataset.h5", "r") as f:
        for group in ("entry/data", "entry/items", "entry/labels", "entry/peaks", "entry/rejects", "entry/shards"):
            for name, obj in f[group].items():
                if name != "path":  # shard paths are relative, but keep the comparison about values
                    out[f"{group}/{name}"] = obj[()]
        out["attrs"] = {k: f.attrs[k] for k in ("n_items", "n_patterns", "n_rejected", "n_shards", "config_digest")}
    return out


def test_generate_sbatch_two_ranks_matches_one_rank(cluster, tmp_path):
    env = cluster
    # The reference: one rank, no Slurm, same inputs and options.
    ref = tmp_path / "ref"
    r = subprocess.run([str(VENV_BIN / "xtalhpc"), "generate", *map(str, CIFS), "--output", str(ref),
                        "--shard-size", str(SHARD), "--ranks", "1", "--quiet"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    out = tmp_path / "slurm-ds"
    log_pattern = tmp_path / "job-%j.out"
    t0 = time.monotonic()
    # Size and log location from the command line, never by editing the script's #SBATCH header.
    r = subprocess.run(["sbatch", "--parsable", "--export=ALL", f"--ntasks={NTASKS}", f"--chdir={tmp_path}",
                        f"--output={log_pattern}", "--time=10", "--job-name=xtalhpc-test-generate",
                        str(SBATCH_SCRIPT), str(out), *map(str, CIFS), "--", "--shard-size", str(SHARD)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"sbatch failed: {r.stderr}"
    job_id = r.stdout.strip().split(";")[0]
    log = tmp_path / f"job-{job_id}.out"
    fields = _wait_for_job(job_id, log)
    wall = time.monotonic() - t0
    text = log.read_text()
    print(f"job {job_id}: {fields['JobState']} {fields.get('ExitCode')} in {wall:.1f} s\n{text}")
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (fields, text)
    assert fields["NumTasks"] == str(NTASKS), fields

    # Both MPI ranks really ran, in one world of 2 (each rank prints "rank R/SIZE pid P").
    ranks = dict(re.findall(r"\[generate\] rank (\d+)/2 pid (\d+)", text))
    assert set(ranks) == {"0", "1"} and len(set(ranks.values())) == 2, text
    assert f"on {NTASKS} rank(s)" in text, text
    assert "singletons" not in text, text
    run = json.loads((out / "last-run.json").read_text())
    assert run["ranks"] == NTASKS
    assert sorted(s["rank"] for s in run["times"]["per_rank"]) == [0, 1]
    assert sum(s["shards"] for s in run["times"]["per_rank"]) == 3
    with h5py.File(out / "dataset.h5", "r") as f:
        assert json.loads(f.attrs["provenance"])["ranks"] == NTASKS
    # The script's own `xtalhpc verify` ran, and so does ours.
    assert "OK: 3 shards, 6 patterns + 0 rejected of 6 inputs" in text, text
    v = subprocess.run([str(VENV_BIN / "xtalhpc"), "verify", str(out)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr

    got, want = _arrays(out), _arrays(ref)
    assert got["attrs"] == want["attrs"]
    assert got["attrs"]["n_items"] == 6 and got["attrs"]["n_patterns"] == 6
    assert got["attrs"]["n_rejected"] == 0 and got["attrs"]["n_shards"] == 3
    assert got["entry/data/pattern"].shape[0] == 6
    assert got.keys() == want.keys()
    for key in want:
        if key != "attrs":
            assert np.array_equal(got[key], want[key]), key
    assert got["entry/data/pattern"].tobytes() == want["entry/data/pattern"].tobytes()


def test_srun_without_pmi_is_refused(cluster, tmp_path):
    """srun without a PMI plugin starts 2 singletons: each must stop with the message naming --mpi=pmi2."""
    out = tmp_path / "ds"
    # --mpi=none is what a bare `srun` gives where MpiDefault=none (as in slurm/local-cluster.sh); spelled
    # out so the test means the same on a site whose default is a PMI plugin.
    r = subprocess.run(["srun", "--mpi=none", f"--ntasks={NTASKS}", "--export=ALL", f"--chdir={tmp_path}",
                        "--time=5", "--job-name=xtalhpc-test-singleton",
                        "xtalhpc", "generate", *map(str, CIFS), "--output", str(out), "--shard-size", str(SHARD)],
                       env=cluster, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    err = r.stdout + r.stderr
    print(err)
    assert r.returncode != 0, err
    for procid in range(NTASKS):
        assert (f"Slurm says this step has {NTASKS} tasks (SLURM_PROCID={procid}) but MPI sees a world of 1 rank"
                in err), err
    assert "srun --mpi=pmi2 xtalhpc generate" in err, err
    assert not (out / "shards").exists() and not (out / "dataset.h5").exists()
