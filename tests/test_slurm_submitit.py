"""Job accounting and submitit on a real Slurm cluster (docs/slurm.md).

What ``xtalhpc train --cluster slurm`` relies on, shown with tiny callables: ``sacct``
answers for finished jobs (slurmdbd), the ``afterok`` chains of the exit-status convention
(xtalhpc/job.py), submitit noticing a job that crashed -- by an exception, or from outside
Python where no result file is written and only ``sacct`` knows -- or was cancelled, within a
bounded time, and submitit's requeue of a ``Checkpointable`` that resumes from its checkpoint.

Needs a cluster with accounting (``bash slurm/local-cluster.sh start``, as root); without one
these tests skip naming why, unless XTALHPC_REQUIRE_SLURM is set: then they fail.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from slurm_helpers import job_env, require_cluster
from submitit.core.utils import FailedJobError, UncompletedJobError

pytestmark = pytest.mark.slurm

# The callables below live in this test module, which the job's Python cannot import
# (tests/ is not on its path): pickle them by value, as for a script's __main__.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Bounds, not timings: on the idle 2-core local cluster each job here ends in a few seconds,
# and submitit's sacct polling (every 2 s at first, backing off to half the job's age) notices
# within seconds more. Anything past these bounds is a hang, which the tests report as one.
NOTICE_TIMEOUT_S = 120
REQUEUE_TIMEOUT_S = 240
TERMINAL_SACCT = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                  "BOOT_FAIL", "DEADLINE")


@pytest.fixture(scope="module")
def cluster() -> dict:
    require_cluster(accounting=True)
    return job_env()


# ---------------------------------------------------------------------------- the job callables
def crash_by_exception(token: str) -> None:
    raise RuntimeError(f"deliberate crash {token}")


def crash_by_exit(status: int) -> None:
    os._exit(status)  # no exception, no result file: only Slurm (sacct) knows it failed


def crash_by_signal(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(60)


def sleep_after_marking(marker: str, seconds: float) -> str:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


class Counter(submitit.helpers.Checkpointable):
    """Counts to ``n``, one step every ``step_s`` seconds, writing the count to ``folder/progress``.

    Its state is the count; ``checkpoint`` (called by submitit on USR2, before requeueing the job)
    records the count it saved in ``folder/checkpointed``. ``starts`` lists the count each run began at.
    """

    def __init__(self, n: int, folder: str, step_s: float):
        self.n = n
        self.folder = folder
        self.step_s = step_s
        self.count = 0
        self.starts: list[int] = []

    def __call__(self) -> dict:
        self.starts.append(self.count)
        while self.count < self.n:
            time.sleep(self.step_s)
            self.count += 1
            (Path(self.folder) / "progress").write_text(str(self.count))
        return {"count": self.count, "starts": self.starts, "job_id": os.environ.get("SLURM_JOB_ID"),
                "restart_count": os.environ.get("SLURM_RESTART_COUNT", "0")}

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        (Path(self.folder) / "checkpointed").write_text(str(self.count))
        return super().checkpoint()


# ---------------------------------------------------------------------------- helpers
def _executor(folder: Path, name: str) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=5, nodes=1, tasks_per_node=1, cpus_per_task=1,
                         name=name)
    return ex


def _wait_done(job: submitit.Job, timeout_s: float) -> float:
    """Poll ``job.done()`` as ``job.result()`` does (sacct at submitit's own pace), but give up after
    ``timeout_s``: scancel the job and fail, so that a lost job is a failure and never a hang."""
    t0 = time.monotonic()
    while not job.done():
        if time.monotonic() - t0 > timeout_s:
            job.cancel(check=False)
            pytest.fail(f"submitit did not notice the end of job {job.job_id} in {timeout_s} s (state "
                        f"{job.state}; sacct: {_sacct([job.job_id])}); stderr:\n{job.stderr()}")
        time.sleep(0.5)
    return time.monotonic() - t0


def _final_state(job: submitit.Job, timeout_s: float = NOTICE_TIMEOUT_S) -> str:
    """The job's state in sacct once terminal (``done()`` is true as soon as the result file is
    written, while the job may still be RUNNING or COMPLETING in Slurm for a moment)."""
    t0 = time.monotonic()
    while not job.watcher.is_done(job.job_id, mode="force"):
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"job {job.job_id} still {job.state} after {timeout_s} s")
        time.sleep(0.5)
    return job.state


def _sacct(job_ids: list[str], duplicates: bool = False) -> dict[str, list[dict]]:
    """sacct's allocation records per job id (with ``duplicates``, every run of a requeued job)."""
    cmd = ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobIDRaw,State,ExitCode,Start,ElapsedRaw",
           "--jobs", ",".join(job_ids)] + (["--duplicates"] if duplicates else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    out: dict[str, list[dict]] = {}
    for line in r.stdout.splitlines():
        jid, state, exit_code, start, elapsed = line.split("|")
        out.setdefault(jid, []).append({"State": state, "ExitCode": exit_code, "Start": start,
                                        "ElapsedRaw": elapsed})
    return out


def _wait_sacct(job_ids: list[str], timeout_s: float = NOTICE_TIMEOUT_S) -> dict[str, dict]:
    """Poll sacct until every job has a terminal state there; scancel them all and fail past ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        records = _sacct(job_ids)
        last = {jid: records[jid][-1] for jid in job_ids if jid in records}
        if len(last) == len(job_ids) and all(r["State"].split()[0] in TERMINAL_SACCT for r in last.values()):
            return last
        if time.monotonic() - t0 > timeout_s:
            subprocess.run(["scancel", *job_ids], timeout=30)
            pytest.fail(f"jobs {job_ids} not all finished in sacct after {timeout_s} s: {records}")
        time.sleep(0.5)


def _sbatch(env: dict, folder: Path, wrap: str, *options: str) -> str:
    r = subprocess.run(["sbatch", "--parsable", "--partition=debug", "--time=5", "--ntasks=1",
                        f"--chdir={folder}", f"--output={folder}/slurm-%j.out", *options, "--wrap", wrap],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"sbatch {options} --wrap {wrap!r}: {r.stderr}"
    return r.stdout.strip().split(";")[0]


# ---------------------------------------------------------------------------- tests
def test_sacct_reports_exit_statuses_and_afterok_follows_them(cluster, tmp_path):
    """Each status of the convention (0 ok, 1 failed, 2 usage, 3 rejects) as sacct records it, and
    ``--dependency=afterok`` starting the next job only after a 0; with ``--kill-on-invalid-dep=yes``
    a dependent of a failed job is cancelled instead of pending forever."""
    env = cluster
    first = {status: _sbatch(env, tmp_path, f"exit {status}", f"--job-name=xtalhpc-test-exit{status}")
             for status in (0, 1, 2, 3)}
    then = {status: _sbatch(env, tmp_path, f"touch {tmp_path}/after-{status}", f"--dependency=afterok:{jid}",
                            "--kill-on-invalid-dep=yes", f"--job-name=xtalhpc-test-after{status}")
            for status, jid in first.items()}
    done = _wait_sacct(list(first.values()) + list(then.values()))
    print({f"exit {s}": done[j] for s, j in first.items()}, {f"after {s}": done[j] for s, j in then.items()})

    assert done[first[0]]["State"] == "COMPLETED" and done[first[0]]["ExitCode"] == "0:0", done
    for status in (1, 2, 3):
        assert done[first[status]]["State"] == "FAILED", (status, done)
        assert done[first[status]]["ExitCode"] == f"{status}:0", (status, done)
    assert done[then[0]]["State"] == "COMPLETED", done
    assert (tmp_path / "after-0").exists()
    for status in (1, 2, 3):
        record = done[then[status]]
        assert record["State"].startswith("CANCELLED"), (status, record)
        # it never ran: no elapsed time (sacct may give a job cancelled while pending its
        # cancel time as Start, so Start alone does not tell)
        assert record["Start"] in ("None", "Unknown") or record["ElapsedRaw"] in ("0", ""), (status, record)
        assert not (tmp_path / f"after-{status}").exists()


def test_submitit_notices_crashes(cluster, tmp_path):
    """A raised exception, a non-zero os._exit and a SIGKILL: each job ends FAILED in submitit's
    eyes within a bounded time. The last two write no result file: submitit learns it from sacct."""
    ex = _executor(tmp_path, "xtalhpc-test-crash")
    jobs = {
        "exception": ex.submit(crash_by_exception, "7d1f"),
        "exit": ex.submit(crash_by_exit, 7),
        "signal": ex.submit(crash_by_signal, int(signal.SIGKILL)),
    }
    for how, job in jobs.items():
        waited = _wait_done(job, NOTICE_TIMEOUT_S)
        state = _final_state(job)
        print(f"{how}: job {job.job_id} done after {waited:.1f} s more, {state}; "
              f"sacct {_sacct([job.job_id])[job.job_id]}")
        assert state == "FAILED", how

    with pytest.raises(FailedJobError, match="deliberate crash 7d1f"):
        jobs["exception"].result()
    assert jobs["exception"].paths.result_pickle.exists()
    for how in ("exit", "signal"):
        job = jobs[how]
        assert not job.paths.result_pickle.exists(), how
        with pytest.raises(UncompletedJobError, match=r"has not produced any output \(state: FAILED\)"):
            job.result()
    records = _sacct([jobs["exit"].job_id])[jobs["exit"].job_id]
    assert records[-1]["ExitCode"] == "7:0", records


def test_submitit_notices_cancel(cluster, tmp_path):
    marker = tmp_path / "started"
    job = _executor(tmp_path, "xtalhpc-test-cancel").submit(sleep_after_marking, str(marker), 600)
    t0 = time.monotonic()
    while not marker.exists():
        if time.monotonic() - t0 > NOTICE_TIMEOUT_S:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} did not start in {NOTICE_TIMEOUT_S} s: {_sacct([job.job_id])}")
        time.sleep(0.2)
    job.cancel()  # scancel
    waited = _wait_done(job, NOTICE_TIMEOUT_S)
    print(f"job {job.job_id} {job.state} noticed {waited:.1f} s after scancel")
    assert _final_state(job).startswith("CANCELLED"), job.state
    with pytest.raises(UncompletedJobError, match=r"state: CANCELLED"):
        job.result()


def test_submitit_requeue_resumes_from_checkpoint(cluster, tmp_path):
    """``scancel --signal=USR2`` (what Slurm sends ahead of a time limit or a preemption): submitit
    calls the Checkpointable's ``checkpoint``, requeues the job, and the second run -- same job id --
    starts from the saved count and finishes."""
    n = 40
    job = _executor(tmp_path, "xtalhpc-test-requeue").submit(Counter(n, str(tmp_path), 0.25))
    progress = tmp_path / "progress"
    t0 = time.monotonic()
    while not (progress.exists() and progress.read_text() and int(progress.read_text()) >= 3):
        if time.monotonic() - t0 > NOTICE_TIMEOUT_S:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} made no progress in {NOTICE_TIMEOUT_S} s: {_sacct([job.job_id])}")
        time.sleep(0.2)
    # To the job's steps (submitit's Python runs as an srun step), not to the batch shell, whose
    # default USR2 action would end the job.
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    t_signal = time.monotonic()
    waited = _wait_done(job, REQUEUE_TIMEOUT_S)
    out = job.result()
    state = _final_state(job)
    checkpointed = int((tmp_path / "checkpointed").read_text())
    runs = _sacct([job.job_id], duplicates=True)[job.job_id]
    print(f"job {job.job_id}: checkpointed at {checkpointed}/{n}, result {out}, finished {waited:.1f} s after "
          f"the signal ({time.monotonic() - t_signal:.1f}); sacct runs {runs}")
    assert 3 <= checkpointed < n, checkpointed
    assert out["count"] == n
    assert out["starts"] == [0, checkpointed], out
    assert out["job_id"] == job.job_id and out["restart_count"] == "1", out
    assert state == "COMPLETED"
    assert [r["State"] for r in runs] == ["REQUEUED", "COMPLETED"], runs
    log = job.stdout() or ""  # submitit's own log lines, both runs
    assert "Calling checkpoint method" in log and f"Requeued job {job.job_id}" in log, log
    assert log.count("Starting with JobEnvironment") == 2 and "Job completed successfully" in log, log
