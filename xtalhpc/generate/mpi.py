"""The launcher side of generate: MPI communicators, the srun-singleton guard, the relaunch
under ``mpiexec``, and ending every rank when one fails.

``xtalhpc generate --ranks N`` outside any MPI world re-launches itself under ``mpiexec -n N``
(the ``mpich`` wheel's, next to the Python executable); under ``srun --mpi=pmi2`` it uses the
world it finds. ``srun`` without a PMI plugin starts N independent singletons that would all
write the same shards: that is detected (Slurm says N tasks, MPI says world size 1) and refused.
One rank needs no MPI at all (:class:`SerialComm`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import InputError, XtalhpcError
from ..job import Log
from .config import JOB, GenerateConfig, config_to_argv

#: Environment variables by which MPI launchers announce a world to their ranks.
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE",
            "HYDI_CONTROL_FD", "PMI_FD")


class MPIEnvironmentError(XtalhpcError):
    """The MPI world is not the one the job asked for (e.g. srun without --mpi=pmi2)."""


class SerialComm:
    """The one-rank stand-in for an mpi4py communicator (no MPI needed)."""

    rank = 0
    size = 1

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj]

    def gather(self, obj, root=0):
        return [obj]

    def barrier(self):
        pass


def in_mpi_world() -> bool:
    """Whether an MPI launcher (mpiexec, srun --mpi=...) started this process."""
    return any(k in os.environ for k in _MPI_ENV)


def slurm_ntasks() -> int:
    """Tasks of the current Slurm step (1 outside Slurm or in a 1-task step)."""
    if "SLURM_PROCID" not in os.environ:
        return 1
    for k in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"):
        v = os.environ.get(k, "")
        if v.isdigit():
            return int(v)
    return 1


def get_comm(ranks: int | None):
    """The communicator to use, after the srun-singleton check."""
    n_slurm = slurm_ntasks()
    if n_slurm > 1 or in_mpi_world() or (ranks or 1) > 1:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise MPIEnvironmentError(f"more than one rank needs mpi4py (pip install 'xtalhpc[mpi]'): {exc}") from None
        comm = MPI.COMM_WORLD
        if n_slurm > 1 and comm.Get_size() == 1:
            raise MPIEnvironmentError(
                f"Slurm says this step has {n_slurm} tasks (SLURM_PROCID={os.environ.get('SLURM_PROCID')}) but MPI "
                "sees a world of 1 rank: srun started independent singletons that would all write the same shards "
                "(or the command ran inside a multi-task allocation without srun). Launch with "
                "`srun --mpi=pmi2 xtalhpc generate ...` (`srun --mpi=list` shows the plugins), or use one task.")
        if comm.Get_size() == 1:
            return SerialComm()
        return _MPIComm(comm)
    return SerialComm()


class _MPIComm:
    """Thin wrapper: lower-case collectives, plus waiting without spinning a core."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def bcast(self, obj, root=0):
        self._quiet_barrier()
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj):
        self._quiet_barrier()
        return self.comm.allgather(obj)

    def gather(self, obj, root=0):
        self._quiet_barrier()
        return self.comm.gather(obj, root=root)

    def barrier(self):
        self._quiet_barrier()

    def _quiet_barrier(self):
        # MPICH's blocking calls poll a core at 100%; a rank that waits for rank 0
        # (building the master, computing a slow shard) should leave the core to it.
        req = self.comm.Ibarrier()
        while not req.Test():
            time.sleep(0.002)


def stop_all_ranks(comm, exc: BaseException) -> None:
    """Under MPI, end every rank when this one fails (the others would wait for it forever).

    Prints the error once, as the CLI would (:func:`xtalhpc.errors.job_error` for anything but
    bad input), and aborts the MPI world with the exit status of docs/exit-status.md
    (:data:`~xtalhpc.job.EXIT_USAGE` for an :class:`InputError`, else
    :data:`~xtalhpc.job.EXIT_FAILED`). The dataset keeps no master file, so ``xtalhpc verify``
    reports it incomplete and a rerun resumes. One rank: returns, and the caller raises.
    """
    if comm.size <= 1:
        return
    from ..errors import job_error
    from ..job import EXIT_FAILED, EXIT_USAGE

    if isinstance(exc, InputError):
        msg, status = str(exc), EXIT_USAGE
    else:
        msg, status = str(job_error(exc, f"{JOB} (rank {comm.rank} of {comm.size})")), EXIT_FAILED
    sys.stderr.write(f"xtalhpc {JOB}: error: {msg}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # MPICH's process manager forwards a rank's stderr through its proxy; MPI_Abort tears the
    # proxies down at once, and the message just written was sometimes lost (1 run in 5 here).
    time.sleep(0.3)
    comm.comm.Abort(status)
    # MPICH's MPI_Abort returns while the process manager ends the ranks: stop here, not in a
    # second handler (which would print the error again).
    os._exit(status)


def mpiexec_path() -> str:
    """The mpiexec beside the running Python (the ``mpich`` wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        raise MPIEnvironmentError("--ranks > 1 needs mpiexec: pip install 'xtalhpc[mpi]' (mpi4py + mpich), "
                                  f"none found beside {sys.executable} or on PATH")
    return found


def relaunch(cfg: GenerateConfig, ranks: int, extra: list[str] | None = None) -> int:
    """Run ``xtalhpc generate`` under ``mpiexec -n ranks`` and return its exit status."""
    env = dict(os.environ)
    # One rank per core: Numba's thread pool would otherwise oversubscribe the machine.
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks)))
    cmd = [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "xtalhpc.cli", "generate",
           *config_to_argv(cfg, ranks), *(extra or [])]
    log = Log(JOB)
    log(f"launching {ranks} ranks: {' '.join(cmd)}")
    from ..job import EXIT_INTERRUPTED, interrupt_on_termination, interruption

    proc = subprocess.Popen(cmd, env=env)
    try:
        with interrupt_on_termination():
            return proc.wait()
    except KeyboardInterrupt as exc:  # Ctrl-C (which reached mpiexec too), SIGTERM, SIGHUP: stop the ranks
        import signal

        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # mpiexec passes it to every rank
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log(f"{interruption(exc)}; the {ranks} MPI ranks were stopped (a rerun of the same command resumes)")
        return EXIT_INTERRUPTED
