"""Writing shards: the background writer thread and the policy that decides, from the cores
this rank may use, whether it gets one (and a SHA-256 helper thread); the process's memory
settings and the resource figures each rank reports.
"""
from __future__ import annotations

import os
import sys

from .config import SYNC_WRITE_ENV

def spare_cores(comm) -> int:
    """Cores this rank may run on beyond (ranks on this node) x (Numba threads per rank), >= 0."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = 1
    if comm.size > 1:
        from mpi4py import MPI

        node = comm.comm.Split_type(MPI.COMM_TYPE_SHARED)
        local = node.Get_size()
        node.Free()
    import numba

    return max(0, cores - local * numba.get_num_threads())


def write_threads(comm) -> tuple[bool, bool]:
    """(background shard writer, SHA-256 on a helper thread): each only where a core is left
    over for it. The writer thread takes the first spare core, the hash thread the next: on a
    full node either would only take time from the kernels (or from the rank's own writes).
    ``XTALHPC_SYNC_WRITE=1`` forces writes onto the computing thread."""
    spare = spare_cores(comm)
    background = spare >= 1 and os.environ.get(SYNC_WRITE_ENV, "0") in ("", "0")
    return background, spare >= 1 + int(background)


def background_writes(comm) -> bool:
    """Whether this rank writes its shards on a background thread (see :func:`write_threads`)."""
    return write_threads(comm)[0]


class ShardWriter:
    """Writes a rank's shards on one background thread, so shard s + 1 computes while shard s
    goes to disk (the kernels release the GIL; HDF5 and SHA-256 run beside them where a core
    is free). At most one shard is in flight: ``submit`` first waits for the previous one.
    Without ``background`` it writes on the calling thread. The output is the same either
    way (the same bytes, written by the same function)."""

    def __init__(self, write, background: bool):
        self.write = write
        self.pool = None
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xtalhpc-shard-writer")
        self.inflight = None  # (tag, future or result)

    def submit(self, tag, data):
        """Queue ``data``'s write; returns (tag, info) of the previous write, if any, once done."""
        prev = self.wait()
        if self.pool is None:
            self.inflight = (tag, self.write(data))
        else:
            self.inflight = (tag, self.pool.submit(self.write, data))
        return prev

    def wait(self):
        """(tag, result) of the shard in flight (raising its error), or None; nothing is left in flight."""
        if self.inflight is None:
            return None
        tag, fut = self.inflight
        self.inflight = None
        return tag, (fut if self.pool is None else fut.result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


#: glibc malloc settings for a generating process (see :func:`tune_malloc`): blocks up to 32 MB
#: (glibc's largest threshold on 64-bit) come from the heap, and up to 256 MB of freed heap is kept.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20


def tune_malloc() -> bool:
    """Keep the shard-sized arrays' memory in the process instead of mapping fresh pages for each one.

    Every shard allocates the same few arrays of megabytes (the simulator's float64 rows,
    its reflection lists, the float32 shard block). glibc serves such blocks with mmap and
    returns them with munmap (its threshold adapts only up to the largest block freed so far,
    and free memory at the heap's top is trimmed), so the kernel faults in and zeroes fresh
    pages shard after shard: on the BT-1 benchmark that cost ~8% of the run, kernels included.
    Raising both thresholds lets the same heap memory be reused; the footprint stays bounded
    by one shard's working set. Linux/glibc only (anything else: no-op, returns False), and
    left alone when the user set glibc's malloc tunables.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ \
            or "MALLOC_TRIM_THRESHOLD_" in os.environ or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)) & bool(mallopt(m_trim_threshold,
                                                                                 MALLOC_TRIM_THRESHOLD))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (what the OS actually gave the rank)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return float(r.ru_utime + r.ru_stime)


def peak_rss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

