"""CUDA backend: simulator equivalence with the CPU backend, PTX for real GPUs, device choice.

The simulator must be switched on before numba is imported, and this process has numba
imported already, so the equivalence checks run ``tests/cuda_compare.py`` in a subprocess
with ``NUMBA_ENABLE_CUDASIM=1``. Everything else runs in-process on the ordinary numba.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xtalhpc.backend import cuda_available, resolve_device
from xtalhpc.errors import DeviceError

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "tests" / "cuda_compare.py"
SIMULATING = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
#: A real GPU (the simulator also answers cuda.is_available()).
HAS_GPU = cuda_available() and not SIMULATING


def _seed() -> int:
    return int(os.environ.get("XTALHPC_TEST_SEED", np.random.SeedSequence().entropy % 2**32))


def _one_cpu() -> None:
    """Pin the (child) process to one CPU.

    The simulator runs every CUDA thread of a block as a Python thread and its block manager
    busy-polls them for ``syncthreads``: with the threads spread over several cores they fight
    for the GIL, and the run gets slower the more cores the machine has (the same compare took
    14 s on one core of this 2-core machine, 41 s on both, and ran past 600 s on a CI machine).
    """
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _run_compare(seed: int, scale: str, simulator: bool, extra: tuple[str, ...] = ()) -> dict:
    env = dict(os.environ)
    env["NUMBA_ENABLE_CUDASIM"] = "1" if simulator else "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # A hang shows where it is: the child dumps its threads' stacks before the timeout kills it.
    env["XTALHPC_COMPARE_WATCHDOG_S"] = "540"
    proc = subprocess.run([sys.executable, str(COMPARE), "--seed", str(seed), "--scale", scale, *extra],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
                          preexec_fn=_one_cpu if simulator else None)
    if proc.returncode != 0 and not proc.stdout.strip():
        pytest.fail(f"cuda_compare.py exited {proc.returncode} without a report:\n{proc.stderr[-6000:]}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"cuda_compare.py printed nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(lines[-1])
    for case in report["cases"]:
        print(f"  {case['instrument']:18s} {case['run']:9s} batches={case['batches']} atoms={case['atoms']} "
              f"pattern_err={case['pattern_err']:.2e} F2_err={case['F2_err']:.2e} "
              f"families={case['families']} max_mult={case['max_multiplicity']} fails={case['fails']}")
    assert proc.returncode == 0, (f"seed {seed}: CUDA and CPU differ:\n"
                                  + "\n".join(f"{c['instrument']} {c['run']}: {c['fails']}"
                                              for c in report["cases"] if c["fails"]) + proc.stderr[-2000:])
    return report


@pytest.mark.skipif(SIMULATING, reason="compares in a subprocess that switches the simulator on itself")
def test_simulator_cuda_matches_cpu():
    """Random mixed batch (triclinic, monoclinic, hexagonal, cubic F with absences; with and
    without symmetry attached, i.e. one reflection per Laue orbit or the whole half sphere;
    partial occupancy; neutron and X-ray doublet; one and several device batches): same
    patterns to 1e-5 of the maximum and the same reflection families."""
    seed = _seed()
    print(f"XTALHPC_TEST_SEED={seed}")
    report = _run_compare(seed, "small", simulator=True)
    assert report["ok"]
    cases = report["cases"]
    assert {c["device"] for c in cases} == {"cuda"}
    assert max(c["max_multiplicity"] for c in cases) > 2, "no symmetry-merged family was tested"
    assert any(c["batches"] >= 2 for c in cases), "the multi-batch pipeline was not exercised"
    assert min(c["laue_path"] for c in cases) >= 1, "no structure took the one-reflection-per-orbit path"


@pytest.mark.skipif(SIMULATING, reason="compares in a subprocess that switches the simulator on itself")
def test_simulator_cuda_matches_cpu_absorbers():
    """Complex scattering lengths (Gd, Sm, Eu, B, Cd with O, Fe; non-centrosymmetric cells
    among them): the CUDA kernel for absorbing batches gives the CPU's families and patterns."""
    seed = _seed()
    print(f"XTALHPC_TEST_SEED={seed}")
    report = _run_compare(seed, "small", simulator=True, extra=("--absorbers-only",))
    assert report["ok"]
    assert len(report["cases"]) == 2 and {c["device"] for c in report["cases"]} == {"cuda"}


@pytest.mark.skipif(SIMULATING, reason="compares in a subprocess that switches the simulator on itself")
def test_simulator_cuda_matches_cpu_texture():
    """Preferred orientation on two of three structures of every case (random axis and r, both
    device-batch layouts): the CUDA texture kernel gives the CPU's families and patterns."""
    seed = _seed()
    print(f"XTALHPC_TEST_SEED={seed}")
    report = _run_compare(seed, "small", simulator=True, extra=("--texture",))
    assert report["ok"] and {c["device"] for c in report["cases"]} == {"cuda"}


@pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU visible (the simulator test covers the logic)")
def test_gpu_cuda_matches_cpu():
    """On a real GPU: larger random structures on the BT-1 grid and an X-ray doublet."""
    seed = _seed()
    print(f"XTALHPC_TEST_SEED={seed}")
    assert _run_compare(seed, "gpu", simulator=False)["ok"]


@pytest.mark.skipif(SIMULATING, reason="cuda.compile_ptx is not available under the simulator")
@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
def test_kernels_compile_to_ptx(cc):
    """Every kernel, with the exact signature the launcher calls it with, compiles for A100/H100.

    NVRTC (numba-cuda[cu13]) does this without a GPU or driver.
    """
    from numba import cuda

    from xtalhpc_kernels.cuda import SIGNATURES

    target = f".target sm_{cc[0]}{cc[1]}"
    for name, (func, sig) in SIGNATURES.items():
        ptx, resty = cuda.compile_ptx(func, sig, cc=cc)
        assert target in ptx, f"{name}: no '{target}' in the PTX"
        assert ".entry" in ptx, f"{name}: no kernel entry point"
        assert str(resty) == "none", f"{name}: a kernel must return nothing, got {resty}"
        if name == "structure_factor":
            # The atom loop uses the device's own sin/cos (no call back into Python or libm).
            assert "__cudart_sin_cos_coeffs" in ptx


def test_kernels_call_the_shared_physics():
    """One definition of each formula: the kernels' scalar functions are physics.py's."""
    from xtalhpc_kernels import cuda as ck
    from xtalhpc_kernels import physics

    for name in ("inv_d2", "scattering_amplitude", "debye_waller", "bragg_theta", "lorentz_factor", "peak_fwhm",
                 "pseudo_voigt_parts"):
        assert getattr(ck, name) is getattr(physics, name), name


@pytest.mark.skipif(SIMULATING, reason="compiled host code; the simulator test covers it end to end")
def test_canonical_l_interval_matches_the_cpu_test():
    """The per-column interval of canonical l (both paths) equals cpu.canonical_stabiliser's
    per-reflection answer, for the Laue group of every Hall setting in spglib's database."""
    import spglib

    from xtalhpc.crystal import laue_rotations
    from xtalhpc_kernels.cpu import canonical_stabiliser
    from xtalhpc_kernels.cpu import canonical_l_interval

    groups = {}
    for hall in range(1, 531):
        d = spglib.get_symmetry_from_database(hall)
        ops = np.concatenate([d["rotations"].astype(float), d["translations"][:, :, None]], axis=2)
        r = np.ascontiguousarray(laue_rotations(ops), dtype=np.int64)
        groups[r.tobytes()] = r
    assert len(groups) >= 11  # every Laue class, in several settings
    checked = 0
    for r in groups.values():
        for h in range(0, 6):
            for k in range(-6 if h else 0, 7):
                lo, hi = canonical_l_interval(h, k, r, 0, len(r))
                for l in range(-8, 9):
                    if h == 0 and k == 0 and l <= 0:
                        continue
                    canon = canonical_stabiliser(h, k, l, r, 0, len(r))[0]
                    assert canon == (lo <= l <= hi), (r.tolist(), h, k, l, lo, hi)
                    checked += 1
    assert checked > 10_000


def test_device_batches_cover_the_chunk_within_the_memory_budget(monkeypatch, rng):
    from xtalhpc_kernels import cuda_launch as cl

    free = 8e6
    monkeypatch.setattr(cl, "_free_device_bytes", lambda: free)
    budget = cl.MEMORY_FRACTION * free / cl.LIVE_BATCHES
    npts = 300
    counts = rng.integers(0, 4000, 200)
    batches = cl._split(counts, npts)
    assert batches[0][0] == 0 and batches[-1][1] == len(counts)
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(batches, batches[1:]))
    for s0, s1 in batches:
        need = counts[s0:s1].sum() * cl.BYTES_PER_REFLECTION + (s1 - s0) * (np.dtype(cl.PATTERN_DTYPE).itemsize * npts + 64)
        assert need <= budget
    with pytest.raises(MemoryError, match="MiB"):
        cl._split(np.array([10, int(budget // cl.BYTES_PER_REFLECTION) + 1]), npts)
    # A chunk big enough for the pipeline is cut into several batches even with memory to spare.
    monkeypatch.setattr(cl, "_free_device_bytes", lambda: 80e9)
    many = np.full(1000, 2000)
    assert len(cl._split(many, npts)) >= cl.PIPELINE_BATCHES


def test_sort_slots_are_powers_of_two():
    from xtalhpc_kernels.cuda_launch import _sort_slots

    counts = np.array([0, 1, 2, 3, 4, 5, 1023, 1024, 1025, 70000])
    size = np.diff(_sort_slots(counts))
    assert size[0] == 0
    assert np.all(size[1:] >= counts[1:]) and np.all(size[1:] < 2 * np.maximum(counts[1:], 1))
    assert np.all((size[1:] & (size[1:] - 1)) == 0)


@pytest.mark.skipif(HAS_GPU or SIMULATING, reason="a CUDA device (or the simulator) is visible")
def test_cuda_without_gpu_is_a_clear_error(capsys):
    with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto", announce=True) == "cpu"
    assert "device auto -> cpu" in capsys.readouterr().err


@pytest.mark.skipif(HAS_GPU or SIMULATING, reason="a CUDA device (or the simulator) is visible")
def test_simulate_and_cli_refuse_cuda_without_gpu(tmp_path, capsys):
    from xtalhpc.cli import main
    from xtalhpc.crystal import Crystal
    from xtalhpc.simulate import simulate_batch

    c = Crystal(cell=(4.0, 4.0, 4.0, 90, 90, 90), frac=[[0, 0, 0]], species=("Fe",), occupancy=[1.0], b_iso=[0.5])
    with pytest.raises(DeviceError, match="device 'cuda'"):
        simulate_batch([c], "bt1-cu311", device="cuda")
    res = simulate_batch([c], "bt1-cu311", device="auto")
    assert res.device == "cpu" and res.patterns.max() > 0
    cif = REPO / "xtalhpc" / "data" / "structures" / "Silicon.cif"
    assert main(["simulate", str(cif), "--device", "cuda"]) == 1  # environment error: docs/exit-status.md
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "--device cpu" in err


def test_auto_picks_cuda_when_a_gpu_is_visible(monkeypatch, capsys):
    import xtalhpc.backend as backend

    monkeypatch.setattr(backend, "cuda_available", lambda: True)
    assert backend.resolve_device("auto", announce=True) == "cuda"
    assert "device auto -> cuda" in capsys.readouterr().err
    assert backend.resolve_device("cpu") == "cpu"
    with pytest.raises(Exception, match="not one of auto, cpu, cuda"):
        backend.resolve_device("gpu")
