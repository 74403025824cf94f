"""slurm/pipeline.sh and slurm/evaluate.sbatch: generate -> train -> evaluate chained with
``--dependency=afterok`` on a real Slurm cluster (slurm/local-cluster.sh; CI starts one), and the
scripts' fast refusals (these need no cluster: plain bash).

Without a cluster the pipeline tests skip, naming why, unless XTALHPC_REQUIRE_SLURM is set: then
they fail. They need accounting (sacct) to see that a cancelled job never started.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from slurm_helpers import job_env, require_cluster

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "slurm" / "pipeline.sh"
EVALUATE = REPO / "slurm" / "evaluate.sbatch"
SMOKE = REPO / "jobs" / "train-smoke.toml"
STRUCTURES = REPO / "xtalhpc" / "data" / "structures"
TIMEOUT_S = 420
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED")


# train.sbatch's header asks for 4 GPUs: on the 2-CPU test node, 2 CPU processes instead
CPU_TRAIN = "--ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0"


def _pipeline(work: Path, env: dict, *sources, **extra) -> tuple[list[str], str]:
    env = dict(env, XTALHPC_SBATCH="--time=10", XTALHPC_TRAIN_SBATCH=CPU_TRAIN, **extra)
    r = subprocess.run(["bash", str(PIPELINE), str(SMOKE), str(work), *map(str, sources)], capture_output=True,
                       text=True, env=env, cwd=work.parent, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = re.search(r"^jobs (\d+) (\d+) (\d+);", r.stdout, re.M)
    assert ids, r.stdout
    return list(ids.groups()), r.stdout


def _sacct(ids: list[str]) -> dict[str, dict]:
    r = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "-j", ",".join(ids),
                        "-o", "JobID,State,ExitCode,Start,ElapsedRaw"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        job, state, code, start, elapsed = line.split("|")
        out[job] = {"state": state.split()[0], "exit": code, "start": start, "elapsed": elapsed}
    return out


def _wait(ids: list[str], work: Path) -> dict[str, dict]:
    t0 = time.monotonic()
    while True:
        acct = _sacct(ids)
        if len(acct) == len(ids) and all(a["state"] in ENDED for a in acct.values()):
            return acct
        if time.monotonic() - t0 > TIMEOUT_S:
            subprocess.run(["scancel", *ids], timeout=30)
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").glob("*.out")))
            pytest.fail(f"jobs {ids} not finished after {TIMEOUT_S} s: {acct}\n{logs}")
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster() -> dict:
    require_cluster(accounting=True)
    return job_env()


@pytest.mark.slurm
def test_pipeline_generates_trains_on_two_ranks_and_evaluates(cluster, tmp_path):
    (tmp_path / "prior.csv").write_text("space_group\n14\n194\n225\n")
    work = tmp_path / "work"
    t0 = time.monotonic()
    ids, printed = _pipeline(
        work, cluster, STRUCTURES,
        XTALHPC_GENERATE_SBATCH="--ntasks=2",
        XTALHPC_GENERATE_ARGS=f"--synthetic 600 --synthetic-prior {tmp_path / 'prior.csv'} --shard-size 100 --quiet",
        XTALHPC_TRAIN_ARGS="--steps 120 --eval-every 60",
        XTALHPC_EVALUATE_SBATCH="--cpus-per-task=1 --mem=2G")
    for step, job in zip(("generate", "train", "evaluate"), ids):
        assert re.search(rf"^{step}\s+job {job}:", printed, re.M), printed
    acct = _wait(ids, work)
    wall = time.monotonic() - t0
    logs = {p.name: p.read_text() for p in (work / "logs").glob("*.out")}
    assert all(acct[j]["state"] == "COMPLETED" and acct[j]["exit"] == "0:0" for j in ids), (acct, logs)
    print(f"pipeline (generate 2 ranks -> train 2 DDP ranks -> evaluate) wall time {wall:.0f} s")
    # the dataset verifies, written by 2 ranks
    gen_log = logs[f"xtalhpc-generate-{ids[0]}.out"]
    assert "rank 0/2" in gen_log and "rank 1/2" in gen_log, gen_log
    r = subprocess.run(["xtalhpc", "verify", str(work / "dataset")], capture_output=True, text=True, env=cluster,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # training ran as 2 DDP ranks, both named in the job's log
    train_log = logs[f"xtalhpc-train-{ids[1]}.out"]
    assert "rank 0 of world_size=2" in train_log and "rank 1 of world_size=2" in train_log, train_log[-3000:]
    assert (work / "run" / "model.pt").stat().st_size > 0
    # evaluated, better than chance (three space groups dominate the dataset)
    metrics = json.loads((work / "evaluate" / "metrics.json").read_text())
    sg = metrics["heads"]["space_group"]
    assert metrics["n"] > 0 and sg["top1"] > 0.5 and sg["top3"] > 0.9, {k: sg[k] for k in ("top1", "top3")}


@pytest.mark.slurm
def test_failed_generate_keeps_training_and_evaluation_from_starting(cluster, tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a nonsense\n")
    work = tmp_path / "work"
    ids, _ = _pipeline(work, cluster, bad, XTALHPC_GENERATE_SBATCH="--ntasks=1")
    acct = _wait(ids, work)
    gen, train, ev = (acct[j] for j in ids)
    # every input rejected: generate exits 3 (docs/exit-status.md), afterok is never satisfied
    assert gen["state"] == "FAILED" and gen["exit"] == "3:0", acct
    for dep in (train, ev):
        # never ran: no run time (sacct may give a job cancelled while pending its cancel time as
        # Start, so Start alone does not tell)
        assert dep["state"] == "CANCELLED" and dep["elapsed"] in ("0", ""), acct
    assert not (work / "run").exists()


def _bash(script: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True,
                          env=env or job_env(), timeout=60)


def test_evaluate_sbatch_refuses_missing_paths_and_venv(tmp_path):
    """Plain bash, no cluster needed: the checks run before anything else."""
    r = _bash(EVALUATE)
    assert r.returncode == 2 and "usage:" in r.stderr
    r = _bash(EVALUATE, tmp_path / "no-run", tmp_path, tmp_path / "eval")
    assert r.returncode == 2 and "no-run does not exist" in r.stderr, r.stderr
    (tmp_path / "run").mkdir()
    r = _bash(EVALUATE, tmp_path / "run", tmp_path / "no-dataset", tmp_path / "eval")
    assert r.returncode == 2 and "has no dataset.h5" in r.stderr, r.stderr
    r = _bash(EVALUATE, tmp_path / "run", tmp_path, tmp_path / "eval", env=dict(job_env(), XTALHPC_VENV=str(tmp_path)))
    assert r.returncode == 1 and "is not a virtual environment" in r.stderr, r.stderr
    assert not (tmp_path / "eval").exists()


def test_pipeline_refuses_bad_arguments_before_submitting(tmp_path):
    r = _bash(PIPELINE, SMOKE)
    assert r.returncode == 2 and "usage:" in r.stderr
    r = _bash(PIPELINE, SMOKE, tmp_path / "w", STRUCTURES, env=dict(job_env(), XTALHPC_VENV=str(tmp_path)))
    assert r.returncode == 1 and "is not a virtual environment" in r.stderr, r.stderr
    r = _bash(PIPELINE, tmp_path / "no.toml", tmp_path / "w", STRUCTURES)
    if "sbatch is not on PATH" in r.stderr:  # no Slurm client here: the environment check comes first
        assert r.returncode == 1
    else:
        assert r.returncode == 2 and "no.toml does not exist" in r.stderr, r.stderr
        r = _bash(PIPELINE, SMOKE, tmp_path / "w", tmp_path / "missing-cifs")
        assert r.returncode == 2 and "missing-cifs does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slurm
def test_refused_submission_cancels_the_steps_already_submitted(cluster, tmp_path):
    """The train script's own header (4 GPUs) on a node without GPUs: sbatch refuses the train job,
    pipeline.sh exits 1 and cancels the generate job it had submitted."""
    work = tmp_path / "work"
    env = dict(cluster, XTALHPC_SBATCH="--time=10", XTALHPC_GENERATE_SBATCH="--ntasks=1 --begin=now+60")
    r = subprocess.run(["bash", str(PIPELINE), str(SMOKE), str(work), str(STRUCTURES)], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)
    if r.returncode == 0:  # a cluster with GPUs takes the header as it is
        ids = re.search(r"^jobs (\d+) (\d+) (\d+);", r.stdout, re.M).groups()
        subprocess.run(["scancel", *ids], timeout=30)
        pytest.skip("this cluster accepts train.sbatch's GPU header; nothing refused")
    assert r.returncode == 1 and "sbatch refused the train job" in r.stderr, r.stdout + r.stderr
    gen = re.search(r"^generate\s+job (\d+):", r.stdout, re.M).group(1)
    assert f"cancelled the jobs already submitted: {gen}" in r.stderr, r.stderr
    t0 = time.monotonic()
    while (state := _sacct([gen]).get(gen, {}).get("state")) != "CANCELLED" and time.monotonic() - t0 < 30:
        time.sleep(1)
    # (sacct gives a job cancelled while pending its cancel time as Start: the log shows it never ran)
    assert state == "CANCELLED", _sacct([gen])
    assert not (work / "logs" / f"xtalhpc-generate-{gen}.out").exists()
