"""`xtalhpc train --cluster slurm` and slurm/train.sbatch on a real Slurm cluster.

Needs a cluster (``bash slurm/local-cluster.sh start``, as root; accounting for submitit to
notice the end of the job); without one these tests skip naming why, unless
XTALHPC_REQUIRE_SLURM is set: then they fail (tests/slurm_helpers.py).
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("submitit")
slurm_helpers = pytest.importorskip("slurm_helpers")

from xtalhpc.cli import main  # noqa: E402

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "jobs" / "train-smoke.toml"
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster():
    slurm_helpers.require_cluster(accounting=True)
    return slurm_helpers.job_env()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-train")
    (root / "prior.csv").write_text("space_group\n14\n194\n225\n")
    out = root / "ds"
    assert main(["generate", "--synthetic", "300", "--synthetic-prior", str(root / "prior.csv"), "--output",
                 str(out), "--quiet"]) in (0, 1)
    return out


def _digests(text: str) -> dict[int, str]:
    return {int(r): d for r, d in re.findall(r"rank (\d) of world_size=2: step \d+, parameters sha256 (\w+)", text)}


def test_submitit_slurm_and_plain_sbatch_train_the_same_model(cluster, dataset, tmp_path, monkeypatch):
    import torch

    for k, v in cluster.items():
        monkeypatch.setenv(k, v)
    run = tmp_path / "submitit"
    rc = main(["train", str(SMOKE), "--dataset", str(dataset), "--output", str(run), "--procs", "2", "--steps", "6",
               "--eval-every", "6", "--cluster", "slurm", "--time", "10"])
    logs = "\n".join(p.read_text() for p in sorted((run / "logs").glob("*_log.err")))
    assert rc == 0, logs[-3000:]
    d1 = _digests(logs)
    assert set(d1) == {0, 1} and d1[0] == d1[1]
    torch.load(run / "model.pt", weights_only=True)
    # the same run through slurm/train.sbatch (header overridden for a 2-CPU node without GPUs)
    run2 = tmp_path / "sbatch"
    out = tmp_path / "sbatch.out"
    r = subprocess.run(["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0",
                        "--time=10", f"--output={out}", str(REPO / "slurm" / "train.sbatch"), str(SMOKE), str(dataset),
                        str(run2), "--", "--steps", "6", "--eval-every", "6"],
                       capture_output=True, text=True, env=cluster, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    t0 = time.monotonic()
    while True:
        q = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True, timeout=30)
        state = re.search(r"JobState=(\w+)", q.stdout)
        if state and state.group(1) not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            break
        if time.monotonic() - t0 > JOB_TIMEOUT_S:
            subprocess.run(["scancel", job], timeout=30)
            pytest.fail(f"sbatch job {job} still {state.group(1) if state else '?'} after {JOB_TIMEOUT_S} s")
        time.sleep(2)
    text = out.read_text()
    assert state.group(1) == "COMPLETED", text[-3000:]
    d2 = _digests(text)
    assert d2 == d1  # the same seed, data, processes: the same parameters
    torch.load(run2 / "model.pt", weights_only=True)
