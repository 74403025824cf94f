"""Where a PyTorch job runs: the submitit launcher shared by ``xtalhpc train`` and ``xtalhpc evaluate``.

Nothing here trains or evaluates; it decides where a job's task (a picklable callable:
:class:`xtalhpc.train.task.TrainTask`, :class:`xtalhpc.evaluate.run.EvaluateTask`) runs:

* ``local``: real processes on this machine (submitit's LocalExecutor: one process per task,
  logs in ``OUTPUT/logs``);
* ``slurm``: a Slurm job (submitit's SlurmExecutor through AutoExecutor): ``--nodes`` x
  tasks per node, one task per GPU (``--gpus`` per node) or ``--procs`` CPU tasks per node;
* ``debug``: in this process (submitit's DebugExecutor), for a debugger; one process.

Pieces: :class:`LaunchSpec` (where and how wide), :func:`check_spec` (refuse impossible
requests before anything is written or submitted, naming the flag), :func:`build_executor`,
:func:`wait_for_job` (follow rank 0's log, map the outcome to an exit status) and, inside
the task, :func:`init_distributed` (rank and world from submitit's or srun's environment,
``init_process_group``). The job-specific checks and outputs stay with each job
(:mod:`xtalhpc.train.launch`, :mod:`xtalhpc.evaluate.run`).
"""
from __future__ import annotations


import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

LOG_DIR = "logs"


@dataclass(frozen=True)
class LaunchSpec:
    """Where and how wide to run. ``time_min``: the job's time limit in minutes (None: the cluster's
    default on Slurm, no limit locally)."""

    cluster: str = "local"
    gpus: int = 0
    procs: int = 1
    nodes: int = 1
    partition: str | None = None
    time_min: int | None = None
    cpus_per_task: int | None = None

    @property
    def tasks_per_node(self) -> int:
        return self.gpus if self.gpus > 0 else self.procs

    @property
    def world_size(self) -> int:
        return self.tasks_per_node * self.nodes

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without a CUDA build of torch or a GPU)."""
    import torch

    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


def check_spec(spec: LaunchSpec, gpus_visible=visible_gpus) -> None:
    """Refuse impossible requests before anything is submitted (flags named in the message)."""
    if spec.cluster not in ("local", "slurm", "debug"):
        raise InputError(f"--cluster {spec.cluster!r}; allowed: local, slurm, debug", field="--cluster")
    if spec.gpus < 0:
        raise InputError(f"--gpus {spec.gpus} must be >= 0", field="--gpus")
    if spec.procs < 1:
        raise InputError(f"--procs {spec.procs} must be >= 1", field="--procs")
    if spec.nodes < 1:
        raise InputError(f"--nodes {spec.nodes} must be >= 1", field="--nodes")
    if spec.gpus > 0 and spec.procs > 1 and spec.procs != spec.gpus:
        raise InputError(f"--procs {spec.procs} with --gpus {spec.gpus}: with GPUs there is one process per GPU; "
                         "leave out --procs", field="--procs")
    if spec.cluster != "slurm" and spec.nodes > 1:
        raise InputError(f"--nodes {spec.nodes} needs --cluster slurm ({spec.cluster} runs on this machine only)",
                         field="--nodes")
    if spec.cluster == "debug" and spec.tasks_per_node > 1:
        raise InputError(f"--cluster debug runs one process in this one; got {spec.tasks_per_node} "
                         f"({'--gpus' if spec.gpus else '--procs'})", field="--gpus" if spec.gpus else "--procs")
    if spec.cluster in ("local", "debug") and spec.gpus > 0:
        n = gpus_visible()
        if n == 0:
            raise InputError(f"--gpus {spec.gpus}: no CUDA GPU is visible on this machine (torch.cuda.device_count() "
                             "= 0; a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES empty); run on CPUs with "
                             "--gpus 0 --procs K", field="--gpus")
        if spec.gpus > n:
            raise InputError(f"--gpus {spec.gpus}: only {n} GPU(s) visible on this machine", field="--gpus")
    if spec.time_min is not None and spec.time_min < 1:
        raise InputError(f"--time {spec.time_min} minutes must be >= 1", field="--time")


def build_executor(spec: LaunchSpec, folder: Path, workers: int = 1, name: str = "xtalhpc-train"):
    """The submitit executor for ``spec``, writing its logs under ``folder``; ``name`` is the Slurm job name."""
    import submitit

    if spec.cluster == "debug":
        return submitit.DebugExecutor(folder=str(folder))
    if spec.cluster == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(tasks_per_node=spec.tasks_per_node, gpus_per_node=spec.gpus,
                             timeout_min=spec.time_min or 60 * 24 * 365, signal_delay_s=90)
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = dict(nodes=spec.nodes, tasks_per_node=spec.tasks_per_node, cpus_per_task=spec.cpus_per_task or
                  max(1, workers + 1), name=name, slurm_signal_delay_s=120)
    if spec.gpus:
        params["gpus_per_node"] = spec.gpus
    if spec.time_min:
        params["timeout_min"] = spec.time_min
    if spec.partition:
        params["slurm_partition"] = spec.partition
    ex.update_parameters(**params)
    return ex


def rank0_stderr(job, spec: LaunchSpec) -> Path | None:
    """Rank 0's stderr file of a submitted job (None under ``debug``: it runs in this process)."""
    return Path(str(job.paths.stderr).replace("%t", "0")) if spec.cluster != "debug" else None


def follow(path: Path | None, pos: int, stream=None) -> int:
    """Copy what ``path`` gained since ``pos`` to ``stream`` (stderr); returns the new position."""
    if path is None:
        return pos
    try:
        with open(path, "rb") as fh:
            fh.seek(pos)
            chunk = fh.read()
    except OSError:
        return pos
    if chunk:
        out = stream or sys.stderr
        out.write(chunk.decode("utf-8", "replace"))
        out.flush()
    return pos + len(chunk)


def wait_for_job(job, spec: LaunchSpec, log, *, what: str, logs: Path, resume_hint: str = "") -> tuple[int, list]:
    """Wait for ``job``, copying rank 0's log to stderr; returns ``(exit status, results of every task)``.

    Statuses (:mod:`xtalhpc.job`): 0 done; 130 interrupted (the job is cancelled); 2 the task
    refused its input (an InputError or ShardError in its traceback); 1 any other failure,
    with the traceback's tail logged.

    For a local job (task processes started by this one) SIGTERM and SIGHUP while waiting
    (``kill``, a closed terminal, a batch system ending the launcher) are an interruption like
    Ctrl-C: the job is cancelled, so that no task process is left running without the launcher
    that owns it. A Slurm job is the scheduler's: those signals end the launcher as before and
    the job runs on (Ctrl-C still cancels it).
    """
    import contextlib

    from .job import interrupt_on_termination

    err0 = rank0_stderr(job, spec)
    with interrupt_on_termination() if spec.cluster == "local" else contextlib.nullcontext():
        return _wait(job, spec, log, what=what, logs=logs, resume_hint=resume_hint, err0=err0)


def _wait(job, spec: LaunchSpec, log, *, what: str, logs: Path, resume_hint: str, err0) -> tuple[int, list]:
    from .job import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, interruption

    try:
        if spec.cluster == "debug":
            results = [job.result()]
        else:
            pos = 0
            while not job.done():
                pos = follow(err0, pos)
                time.sleep(1.0)
            follow(err0, pos)
            results = job.results()
    except KeyboardInterrupt as exc:
        if spec.cluster != "debug":
            cancel_job(job, spec)
        log(f"{interruption(exc)}; the job was cancelled.{(' ' + resume_hint) if resume_hint else ''}")
        return EXIT_INTERRUPTED, []
    except Exception as exc:  # submitit's FailedJobError/UncompletedJobError carry the task's traceback
        text = str(exc)
        tail = "\n".join(text.strip().splitlines()[-12:])
        log(f"the {what} job failed (logs in {logs}/):\n{tail}")
        if "InputError" in text or "ShardError" in text or "PatternFileError" in text:
            return EXIT_USAGE, []
        return EXIT_FAILED, []
    return EXIT_OK, results


def cancel_job(job, spec: LaunchSpec, grace_s: float = 10.0) -> None:
    """Cancel ``job``; for a local job, make sure its task processes are gone.

    submitit cancels a local job with SIGINT to its controller process, which then stops the
    tasks (SIGINT, SIGKILL a second later). A process started in the background by a
    non-interactive shell (``xtalhpc train ... &`` in a script, ``nohup``) inherits SIGINT
    *ignored*, and so do the controller and the tasks it starts: the SIGINT does nothing and
    the tasks train on. So when the controller is still there after ``grace_s`` seconds, its
    descendants and then the controller get SIGKILL, as submitit's own escalation would.
    A Slurm job is cancelled with ``scancel`` by submitit and left to the scheduler.
    """
    import signal

    job.cancel()
    proc = getattr(job, "_process", None) if spec.cluster == "local" else None
    if proc is None:
        return
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is not None:
        return
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.kill()
    try:
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 - nothing more to do for a process that SIGKILL did not end
        pass


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc, or ``ps`` where there is no /proc."""
    parent: dict[int, int] = {}
    proc_dir = Path("/proc")
    if proc_dir.is_dir():
        for d in proc_dir.iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    else:
        import subprocess

        try:
            out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                parent[int(fields[0])] = int(fields[1])
    children: dict[int, list[int]] = {}
    for child, par in parent.items():
        children.setdefault(par, []).append(child)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def init_distributed(device: str) -> tuple[int, int, int, bool]:
    """Inside a task: ``(rank, world_size, local_rank, distributed?)`` from submitit's environment (or
    plain srun's RANK/WORLD_SIZE variables), with ``torch.distributed`` initialised when world > 1
    (NCCL on GPUs, gloo on CPUs) and this process's GPU selected."""
    import torch

    world = 1
    rank = local_rank = 0
    try:
        import submitit

        env = submitit.JobEnvironment()
        world = env.num_tasks
    except RuntimeError:  # not under submitit (plain srun entry sets the variables itself)
        env = None
    if env is not None and world > 1:
        dist_env = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=device == "cuda", overwrite=True)
        rank, world, local_rank = dist_env.rank, dist_env.world_size, dist_env.local_rank
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    else:
        os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    if device == "cuda":
        # under submitit export() left this process one visible GPU; under plain srun all the node's are visible
        torch.cuda.set_device(0 if env is not None and world > 1 else local_rank)
    if world > 1:
        import datetime

        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank,
                                             world_size=world, timeout=datetime.timedelta(minutes=30))
    return rank, world, local_rank, world > 1
