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


def _train_cmd(cfg: Path, dataset: Path, run: Path, *extra: str) -> list[str]:
    return [str(slurm_helpers.VENV_BIN / "xtalhpc"), "train", str(cfg), "--dataset", str(dataset), "--output",
            str(run), "--procs", "2", "--steps", "200", "--eval-every", "200", *extra]


def test_usr2_requeues_training_which_resumes_to_the_parameters_of_an_uninterrupted_run(cluster, dataset, tmp_path):
    """Issue 13 (2): ``scancel --signal=USR2`` (what Slurm sends ahead of a time limit or a preemption) to a
    2-rank DDP training job: submitit calls ``TrainTask.checkpoint``, requeues the job, the second run
    (same job id) resumes from the newest checkpoint at its saved step, and the final parameters are
    bit-equal to those of the same training run uninterrupted (here on the local executor)."""
    cfg = tmp_path / "smoke-checkpoints.toml"
    text = SMOKE.read_text()
    assert "checkpoint_every = 60" in text
    cfg.write_text(text.replace("checkpoint_every = 60", "checkpoint_every = 10"))
    ref = tmp_path / "reference"
    r = subprocess.run(_train_cmd(cfg, dataset, ref, "--cluster", "local"), capture_output=True, text=True,
                       env=cluster, timeout=JOB_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    ref_digests = _digests("\n".join(p.read_text() for p in sorted((ref / "logs").rglob("*_log.err"))))
    assert set(ref_digests) == {0, 1} and ref_digests[0] == ref_digests[1], ref_digests

    run = tmp_path / "slurm"
    proc = subprocess.Popen(_train_cmd(cfg, dataset, run, "--cluster", "slurm", "--time", "10"), env=cluster,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while not any(int(p.stem.split("-")[1]) >= 20 for p in (run / "checkpoints").glob("step-*.pt")):
            if proc.poll() is not None or time.monotonic() - t0 > JOB_TIMEOUT_S:
                pytest.fail(f"no checkpoint of step >= 20 in {run / 'checkpoints'} (exit {proc.poll()}):\n"
                            + (proc.stdout.read()[-3000:] if proc.poll() is not None else ""))
            time.sleep(0.1)
        job_ids = {p.name.split("_")[0] for p in (run / "logs").glob("*_0_log.err")}
        assert len(job_ids) == 1, job_ids
        job = job_ids.pop()
        # to the job's steps (the srun tasks that run submitit's Python), not to the batch shell
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30, env=cluster)
        out, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "--name=xtalhpc-train"], timeout=30)
    logs = "\n".join(p.read_text() for p in sorted((run / "logs").glob("*_log.err")))
    assert proc.returncode == 0, out[-3000:] + logs[-3000:]
    resumed = re.findall(r"resumed from \S+ at step (\d+)", logs)
    assert len(resumed) == 1 and 20 <= int(resumed[0]) < 200, logs[-3000:]
    digests = _digests(logs)
    print(f"job {job}: USR2, requeued, resumed at step {resumed[0]} of 200; final sha256 {digests.get(0)}")
    assert digests == ref_digests  # the same parameters as the uninterrupted run, on both ranks
    t0 = time.monotonic()
    while True:  # the accounting record of the second run lags the job's end by a few seconds
        acct = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
                               "--format=JobIDRaw,State", "--jobs", job], capture_output=True, text=True, timeout=30)
        states = [line.split("|")[1] for line in acct.stdout.split()]
        if states[-1:] != ["RUNNING"] or time.monotonic() - t0 > 60:
            break
        time.sleep(1)
    assert states == ["REQUEUED", "COMPLETED"], acct.stdout


def test_evaluate_on_slurm_matches_local_evaluation(cluster, dataset, tmp_path):
    """``xtalhpc evaluate --cluster slurm`` (a submitit job on the cluster) writes the metrics the same
    evaluation gives in this process."""
    import json

    run = tmp_path / "run"
    r = subprocess.run([str(slurm_helpers.VENV_BIN / "xtalhpc"), "train", str(SMOKE), "--dataset", str(dataset),
                        "--output", str(run), "--steps", "20", "--eval-every", "20", "--cluster", "debug"],
                       capture_output=True, text=True, env=cluster, timeout=JOB_TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = {}
    for where in ("debug", "slurm"):
        out = tmp_path / f"eval-{where}"
        r = subprocess.run([str(slurm_helpers.VENV_BIN / "xtalhpc"), "evaluate", str(run), "--dataset", str(dataset),
                            "--split", "all", "--output", str(out), "--cluster", where, "--time", "10"],
                           capture_output=True, text=True, env=cluster, timeout=JOB_TIMEOUT_S)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        metrics[where] = json.loads((out / "metrics.json").read_text())
        if where == "slurm":
            assert "submitted job" in r.stdout + r.stderr, r.stderr[-2000:]
            assert list((out / "logs").glob("*_0_log.err")), sorted(out.rglob("*"))
    assert metrics["slurm"]["n"] == metrics["debug"]["n"] == 300
    for head, m in metrics["debug"]["heads"].items():
        for k in ("top1", "top3", "top5"):
            assert metrics["slurm"]["heads"][head][k] == m[k], (head, k)
