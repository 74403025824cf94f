"""Compute-backend choice: ``auto``, ``cpu`` or ``cuda``."""
from __future__ import annotations

import sys

from .errors import DeviceError, InputError

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when numba-cuda is installed and sees a GPU (or runs its simulator)."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install reads as "no GPU"
        return False


def resolve_device(device: str, *, announce: bool = False) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is visible, else ``cpu``.

    Asking for ``cuda`` where no GPU is visible is a DeviceError, never a silent fallback.
    With ``announce``, ``auto`` says on stderr which backend it chose.
    """
    d = str(device).lower()
    if d not in DEVICES:
        raise InputError(f"device {device!r} is not one of {', '.join(DEVICES)}", field="device")
    if d == "cpu":
        return "cpu"
    has = cuda_available()
    if d == "cuda" and not has:
        raise DeviceError("device 'cuda' was asked for but no CUDA GPU is visible "
                          "(numba-cuda installed? driver loaded? CUDA_VISIBLE_DEVICES?); use --device cpu or auto")
    chosen = "cuda" if has else "cpu"
    if announce:
        what = f" ({gpu_name()})" if chosen == "cuda" else " (no CUDA GPU visible)"
        print(f"xtalhpc: device auto -> {chosen}{what}", file=sys.stderr)
    return chosen


def gpu_name() -> str:
    """Name of numba's current CUDA device ("CUDA simulator" under NUMBA_ENABLE_CUDASIM)."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return "CUDA simulator"
    try:
        name = cuda.get_current_device().name
    except Exception:  # a driver that lists a GPU but will not open it: still say what we can
        return "CUDA device"
    return name.decode() if isinstance(name, bytes) else str(name)


def run_cuda(packed, counts, instrument, timings, texture=None):
    """Run one packed chunk on the GPU (``xtalhpc_kernels.cuda_launch.run_packed``, docs/gpu.md);
    ``texture``: (axis, r) per structure of the chunk, or None."""
    try:
        from xtalhpc_kernels.cuda_launch import run_packed
    except ImportError as exc:  # pragma: no cover - present once the CUDA kernels land
        raise DeviceError(f"the CUDA kernels are not available: {exc}") from None
    return run_packed(packed, counts, instrument, timings, texture)
