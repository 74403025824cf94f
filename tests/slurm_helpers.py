"""What the Slurm tests share (tests/test_slurm*.py): finding a cluster, the job environment.

A cluster is one that ``bash slurm/local-cluster.sh start`` brings up (CI does that in ``.ci/run``).
Without one the tests skip, naming why, unless XTALHPC_REQUIRE_SLURM is set: then they fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
START_HINT = "bash slurm/local-cluster.sh start"


def no_cluster(reason: str):
    """Skip with the reason, or fail where XTALHPC_REQUIRE_SLURM says a cluster must be there."""
    if "XTALHPC_REQUIRE_SLURM" in os.environ:
        pytest.fail(f"XTALHPC_REQUIRE_SLURM is set but {reason} (start one: {START_HINT})")
    pytest.skip(f"{reason}; start one with `{START_HINT}` (as root)")


def job_env() -> dict:
    """The submitting environment: this venv's bin first, nothing from an enclosing Slurm job or MPI launcher."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_",
                                                                    "PMI_", "PMIX_", "OMPI_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("XTALHPC_VENV", None)
    return env


def require_cluster(accounting: bool = False) -> None:
    """Skip (or fail) unless a Slurm controller answers with an idle node -- and, with
    ``accounting``, unless ``sacct`` answers too (slurmdbd behind it)."""
    commands = ["sinfo", "sbatch", "srun", "scontrol", "scancel"] + (["sacct"] if accounting else [])
    for cmd in commands:
        if shutil.which(cmd) is None:
            no_cluster(f"`{cmd}` is not on PATH")
    try:
        r = subprocess.run(["sinfo", "--noheader", "--format=%P %T %c"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        no_cluster("`sinfo` got no answer in 30 s")
    if r.returncode != 0:
        no_cluster(f"no Slurm controller answers (`sinfo`: {r.stderr.strip() or r.returncode})")
    usable = [line.split() for line in r.stdout.splitlines() if line.split()[1] in ("idle", "mixed")]
    if not usable:
        no_cluster(f"no idle node in `sinfo`: {r.stdout.strip() or '(no nodes)'}")
    if accounting:
        try:
            r = subprocess.run(["sacct", "--noheader", "--allocations", "--starttime=now-1minutes"],
                               capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            no_cluster("`sacct` got no answer in 30 s (slurmdbd down?)")
        if r.returncode != 0:
            no_cluster(f"the cluster has no job accounting (`sacct`: {r.stderr.strip() or r.returncode})")
