"""The project's own exception classes, and the one rule that tells a bad item from a failed job.

Every error raised for bad user input names *where* the bad value came from
(file, line or field) and *what is allowed*, so a batch job can record it in a
rejects table and a person can fix the input without reading the code.

Batch jobs (``generate``, ``simulate``, ``synthesize``) handle each item's failure
through :func:`reject_reason`: an error caused by the item itself (unreadable file,
unknown element, no occupancy, too many reflections, cell too large, ...) becomes the
item's reject row; an error that would fail every item (a missing dependency, a Numba
compile error, out of memory, a CUDA driver error, ...) raises :class:`JobError` at
the first occurrence, so the job stops with one message instead of rejecting every
item. The CLI maps :class:`InputError` to exit status 2 and every other error to 1
(docs/exit-status.md).
"""
from __future__ import annotations

import errno
import sys


class XtalhpcError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(XtalhpcError):
    """Bad user input: a file, a field or a value outside what is allowed.

    Parameters
    ----------
    message : str
        What is wrong and what is allowed.
    source : str, optional
        The file (or other origin, such as ``"instrument 'bt1'"``) the value came from.
    field : str, optional
        The field, CIF tag, TOML key or column that holds the bad value.
    """

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(f"field {field!r}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StructureError(InputError):
    """A structure file that cannot be read or describes no valid crystal."""


class InstrumentError(InputError):
    """An instrument definition outside what the simulator can handle."""


class ScatteringError(InputError):
    """A species with no scattering length or form factor."""


class DeviceError(XtalhpcError):
    """A compute backend that was asked for but is not available."""


class JobError(XtalhpcError):
    """The job itself failed: an environment, code or resource error that would fail every item.

    Parameters
    ----------
    what : str
        What failed (the step, and the original error's type and text).
    cause : str
        The likely cause.
    fix : str
        What to do about it.
    """

    def __init__(self, what: str, cause: str, fix: str):
        self.what, self.cause, self.fix = what, cause, fix
        super().__init__(f"{what}\n  likely cause: {cause}\n  fix: {fix}")


#: errno values of an OSError that no single input causes: the machine is out of a resource.
_RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EROFS})


def _from_numba(exc: BaseException) -> bool:
    return any(k.__module__.split(".")[0] in ("numba", "numba_cuda", "llvmlite") for k in type(exc).__mro__)


def _is_cuda(exc: BaseException) -> bool:
    mod = type(exc).__module__
    return "cuda" in mod or "cudadrv" in mod or type(exc).__name__.startswith("Cuda")


def is_item_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised while processing one item, is that item's fault (a reject).

    Not the item's fault, whatever the item: :class:`JobError`, :class:`DeviceError`, an
    ImportError, any Numba/llvmlite or CUDA error (typing, lowering, driver), MemoryError,
    RecursionError, an OSError for an exhausted resource (disk full, quota, open files),
    NameError or SyntaxError (code errors), and anything that is not an ``Exception``
    (KeyboardInterrupt, SystemExit). Everything else, the project's own errors first
    (:class:`InputError` and its kind), and the assorted ValueError, KeyError, RuntimeError,
    OSError a reader raises for one bad file, is the item's.
    """
    if isinstance(exc, (JobError, DeviceError)):
        return False
    if isinstance(exc, XtalhpcError):
        return True
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, (ImportError, MemoryError, RecursionError, NameError, SyntaxError, SystemError)):
        return False
    if _from_numba(exc) or _is_cuda(exc):
        return False
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return False
    return True


def job_error(exc: BaseException, doing: str) -> JobError:
    """The :class:`JobError` for an error that is not an item's fault, with its likely cause and fix.

    ``doing`` says what the job was doing (``"simulating shard 3"``, ``"reading
    structures"``); the message names it, the original error's type and text, the likely
    cause and the fix.
    """
    if isinstance(exc, JobError):
        return exc
    text = str(exc).strip() or "(no message)"
    what = f"{doing} failed: {type(exc).__name__}: {text}"
    if isinstance(exc, DeviceError):
        return JobError(what, "the compute device asked for is not usable here",
                        "use --device cpu, or check the GPU (nvidia-smi, CUDA_VISIBLE_DEVICES, numba-cuda installed)")
    if isinstance(exc, ImportError):
        name = getattr(exc, "name", None) or "a module"
        if "scipy" in text.lower():
            return JobError(what, "compiled code needs SciPy's BLAS/LAPACK (Numba linear algebra), which the core "
                                  "install does not bring",
                            "pip install scipy, or report it: xtalhpc's kernels must not need it")
        return JobError(what, f"{name} is missing or broken in this Python environment ({sys.executable})",
                        "reinstall xtalhpc with its dependencies in this environment (pip install xtalhpc, or "
                        "pip install -e . in a checkout) and check `python -c 'import <module>'`")
    if _is_cuda(exc):
        return JobError(what, "the CUDA driver or GPU failed (driver/toolkit mismatch, GPU busy or lost, "
                              "out of GPU memory)",
                        "check nvidia-smi and the numba-cuda install (python -c 'from numba import cuda; "
                        "cuda.detect()'), or rerun with --device cpu; a rerun of generate resumes")
    if _from_numba(exc):
        return JobError(what, "a compiled kernel failed to compile or load: Numba/NumPy versions outside what "
                              "pyproject.toml allows, or a stale on-disk cache",
                        "install the versions pyproject.toml allows, delete the __pycache__ folders of "
                        "xtalhpc_kernels and xtalhpc/synth (or NUMBA_CACHE_DIR), and rerun; report it if it persists")
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return JobError(what, "the process ran out of memory",
                        "give the job more memory (sbatch --mem), run fewer ranks per node, or a smaller "
                        "--shard-size; a rerun of generate resumes")
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return JobError(what, f"the machine ran out of a resource ({errno.errorcode.get(exc.errno, exc.errno)}: "
                              "disk full, quota, read-only file system or too many open files)",
                        "free space or raise the limit (df -h, quota, ulimit -n), then rerun")
    return JobError(what, "an error in xtalhpc itself or in a dependency (it is not specific to one input)",
                    "report it with the command and this message; rerun after a fix (generate resumes)")


def reject_reason(exc: BaseException, doing: str) -> str:
    """The reject-row text for ``exc``, raised while processing one item; raises :class:`JobError`
    (see :func:`is_item_error`) when the error is not the item's fault.

    Every batch job's per-item ``except`` goes through here, so the rule lives in one place.
    """
    if not is_item_error(exc):
        raise job_error(exc, doing) from exc
    if isinstance(exc, XtalhpcError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
