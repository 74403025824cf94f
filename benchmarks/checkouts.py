"""Running a benchmark's inner part in fresh processes of several checkouts, alternating.

A checkout is imported from its own root (``PYTHONPATH=ROOT/.pth:ROOT``, where
``.pth/xtalhpc_kernels`` links to ``ROOT/kernels``; without ``.pth`` the root must be the
venv's editable install): a "before" copy is ``git archive COMMIT | tar -x -C DIR`` plus that
link. Used by bench_read.py, bench_read_files.py and bench_single_call.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def checkout_env(root: Path, threads: int | None = 1) -> dict:
    """The environment that makes ``python`` import ``root``'s code, with NUMBA_NUM_THREADS
    set to ``threads`` (None: Numba's default, as a user gets it)."""
    pth = root / ".pth"
    env = dict(os.environ, PYTHONPATH=f"{pth}:{root}" if pth.is_dir() else str(root))
    env.pop("NUMBA_NUM_THREADS", None)
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    return env


def run_inner(script: str | Path, root: Path, args: list[str], threads: int | None = 1) -> dict:
    """Run ``script args`` in a fresh process importing ``root``; its last stdout line, as JSON."""
    r = subprocess.run([sys.executable, str(Path(script).resolve()), *args], env=checkout_env(root, threads),
                       cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{root}: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def alternate(script: str | Path, roots: list[Path], repeats: int, args: list[str],
              threads: int | None = 1) -> list[dict]:
    """:func:`run_inner` for every checkout, ``repeats`` times, the order reversed every other
    repeat (a drifting machine load then favours neither); each result printed as it comes and
    tagged with its root, repeat and the load average after it."""
    runs = []
    for rep in range(repeats):
        for root in roots if rep % 2 == 0 else roots[::-1]:
            res = run_inner(script, root, args, threads)
            res.update(root=str(root), repeat=rep, loadavg=os.getloadavg()[0])
            runs.append(res)
            print(json.dumps(res), flush=True)
    return runs
