"""``xtalhpc generate``: simulate patterns for many structures into a sharded HDF5 dataset.

How the work is cut and shared (DESIGN.md section 5):

* **Items.** The inputs are enumerated deterministically before any work:
  the structure files (sorted by path) and, inside each file, its structure
  blocks in file order (CSV structure lists name files and may give labels);
  then the synthetic crystals, if asked for. Each block is one *item* with a
  global index; a file that cannot be read at all is one
  item (rejected). Anything random about item i derives from ``(seed, i)``.
* **Shards.** Shard s holds items ``[s*K, (s+1)*K)``: shard count and content
  depend on the inputs and the shard size K only, never on the number of ranks.
* **Scheduling.** Dynamic: rank 0 keeps the queue of shards still to do and
  answers requests from the other ranks between its own sub-batches, so one slow
  shard (structure costs differ 1000x) never holds up the rest. Each worker
  asks for its next shard as soon as it starts one, so the answer is waiting
  when it finishes. With one rank it is a plain loop.
* **Resume.** A shard is written as ``part-XXXXX.h5.tmp`` and renamed when
  complete. Rerunning the same command computes only the shards missing under
  their final names; a different config (digest of everything that changes the
  bytes) is refused.

MPI: ``xtalhpc generate --ranks N`` outside any MPI world re-launches itself
under ``mpiexec -n N`` (the ``mpich`` wheel's, next to the Python executable);
under ``srun --mpi=pmi2`` it uses the world it finds. ``srun`` without a PMI
plugin starts N independent singletons that would all write the same shards:
that is detected (Slurm says N tasks, MPI says world size 1) and refused.
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__
from .dataset import schema
from .errors import InputError, XtalhpcError

#: Default shard size. 256 BT-1 patterns are ~3.5 MB per shard file: few enough
#: files for parallel file systems (and for the master's Virtual Datasets, which
#: open every shard), fine-grained enough for dynamic scheduling of 100k items
#: over tens of ranks.
DEFAULT_SHARD_SIZE = 256
#: Environment variable: seconds to sleep after each shard (a test hook to make
#: runs slow enough to be killed mid-way; never set it in production).
THROTTLE_ENV = "XTALHPC_GENERATE_SHARD_DELAY"
#: Set to 1 to write each shard on the computing thread instead of a background writer.
SYNC_WRITE_ENV = "XTALHPC_SYNC_WRITE"
#: Rank 0 computes its own shards in sub-batches of about this many seconds and
#: answers other ranks' requests in between (the latency a worker can see; workers
#: ask one shard ahead, so it is hidden when a shard takes longer than this).
POLL_INTERVAL_S = 0.05
#: Structure files parsed and kept per process (consecutive items share files).
FILE_CACHE = 256
#: Base items remembered per process (their _ItemRecord: source id, labels, group key, H level).
META_MEMO = 65536
#: Lock file held by rank 0 while a run writes the dataset.
LOCK_NAME = "generate.lock"
#: Per-run statistics (timings and peak RSS per rank) written beside the dataset.
RUN_STATS_NAME = "last-run.json"
#: Environment variables by which MPI launchers announce a world to their ranks.
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE",
            "HYDI_CONTROL_FD", "PMI_FD")


class MPIEnvironmentError(XtalhpcError):
    """The MPI world is not the one the job asked for (e.g. srun without --mpi=pmi2)."""


# ---------------------------------------------------------------------------- config
@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a generated dataset (saved as ``generate.json``).

    Attributes
    ----------
    sources : tuple of str
        Structure files, directories or globs (CIF, .ncmat, POSCAR, CSV lists).
    output : str
        Dataset directory (the master file is ``OUTPUT/dataset.h5``).
    instrument : str
        Preset name, TOML path or ``path.toml:name``.
    shard_size : int
        Items per shard, K >= 1.
    seed : int
        Root seed; item i uses ``(seed, i)`` (synthetic crystals).
    device : str
        Simulation backend: cpu, cuda or auto. Not part of the digest.
    compression : {"none", "gzip", "lzf"}
        Filter of the pattern and peak datasets (with byte shuffle). Default none:
        BT-1 patterns are float32 with few exact zeros, gzip saves ~26-28% of the
        bytes at 0.16-0.24 ms per pattern, a third to a half of the kernel time
        (docs/dataset.md, BENCHMARKS.md).
    compression_level : int or None
        gzip level 1-9 (default 4).
    peaks : bool
        Store the ragged reflection-family lists (2theta, intensity, d, |F|^2, hkl, m).
        Off by default: they take more room than the patterns (~22 kB per BT-1 pattern).
    split : tuple of 3 floats or None
        Train/val/test fractions assigned by hashing the structure-type group key;
        None stores ``unassigned``.
    synthetic : int
        Synthetic crystals to add (``xtalhpc.synth``); per space group if
        ``per_space_group``, else spread over groups 1-230 in turn.
    per_space_group : bool
    cycle_to : int or None
        Reuse the enumerated inputs cyclically until there are this many items
        (benchmarks; every repeat is a separate item with its own index).
    radiation : {"neutron", "xray"} or None
        Override the instrument's radiation (None keeps it).
    deuterate : bool
        Replace H by D in every input structure (``xtalhpc.curate.deuterate``:
        b_H = -3.74 fm -> b_D = 6.67 fm), the poster's H/D question.
    synthetic_prior : str or None
        CSV table with a space-group column (e.g. an ICSD/COD export, as in
        ../shared/data/metadata): the synthetic crystals' space groups follow its class
        frequencies (deterministic low-discrepancy sampling, see ``Manifest.locate``)
        instead of cycling through 1-230.
    synthetic_prior_power : float
        Temper the prior: space group g is drawn with weight ``count_g ** power`` (1: the
        table's frequencies; 0.5: square root, a compromise between a database's imbalance
        and balanced coverage; 0: every group the table holds equally). Groups absent from the
        table are never drawn.
    h_background : bool
        Neutrons only: add the flat incoherent background of the hydrogen isotopes
        (``xtalhpc.curate.hd.incoherent_background_level``: ~80 barn per H, 2 per D) to
        each pattern before normalisation, as a real H-containing sample shows. On by
        default; ignored for X-rays.
    max_absorption : float or None
        Neutrons only: reject items whose absorption cross-section per formula unit at the
        instrument's wavelength (barn; the per-pattern ``absorption`` field,
        :func:`xtalhpc.scattering.absorption_per_formula_unit`) exceeds this. None (default):
        keep every item.
    """

    sources: tuple[str, ...]
    output: str
    instrument: str = "bt1-cu311"
    shard_size: int = DEFAULT_SHARD_SIZE
    seed: int = 0
    device: str = "cpu"
    compression: str = "none"
    compression_level: int | None = None
    peaks: bool = False
    split: tuple[float, float, float] | None = schema.DEFAULT_SPLIT_FRACTIONS
    synthetic: int = 0
    per_space_group: bool = False
    cycle_to: int | None = None
    radiation: str | None = None
    deuterate: bool = False
    h_background: bool = True
    synthetic_prior: str | None = None
    synthetic_prior_power: float = 1.0
    max_absorption: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        if not self.sources and not self.synthetic:
            raise InputError("no inputs: give structure files, directories or globs, or --synthetic N",
                             field="sources")
        if not (isinstance(self.shard_size, int) and self.shard_size >= 1):
            raise InputError(f"shard size {self.shard_size!r} must be an integer >= 1", field="--shard-size")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise InputError(f"seed {self.seed!r} must be an integer in [0, 2^63)", field="--seed")
        if self.compression not in ("gzip", "lzf", "none"):
            raise InputError(f"compression {self.compression!r}; allowed: gzip, lzf, none", field="--compression")
        if self.compression_level is not None and not (
                self.compression == "gzip" and 1 <= int(self.compression_level) <= 9):
            raise InputError(f"compression level {self.compression_level!r} needs --compression gzip and 1-9",
                             field="--compression-level")
        if self.split is not None:
            fr = tuple(float(x) for x in self.split)
            if len(fr) != 3 or any(not (0 <= x <= 1) for x in fr) or abs(sum(fr) - 1) > 1e-9:
                raise InputError(f"split fractions {self.split!r} must be three numbers in [0, 1] summing to 1 "
                                 "(train, val, test)", field="--split")
            object.__setattr__(self, "split", fr)
        if self.synthetic < 0:
            raise InputError(f"--synthetic {self.synthetic} must be >= 0", field="--synthetic")
        if self.radiation is not None:
            from .scattering import check_radiation

            object.__setattr__(self, "radiation", check_radiation(self.radiation, "--radiation"))
        if self.synthetic_prior is not None:
            if not self.synthetic or self.per_space_group:
                raise InputError("--synthetic-prior needs --synthetic N without --per-space-group",
                                 field="--synthetic-prior")
            object.__setattr__(self, "synthetic_prior", str(self.synthetic_prior))
        if not (isinstance(self.synthetic_prior_power, (int, float)) and 0 <= self.synthetic_prior_power <= 1):
            raise InputError(f"prior power {self.synthetic_prior_power!r} must be a number in [0, 1]",
                             field="--synthetic-prior-power")
        if self.synthetic_prior_power != 1 and self.synthetic_prior is None:
            raise InputError("--synthetic-prior-power needs --synthetic-prior", field="--synthetic-prior-power")
        object.__setattr__(self, "synthetic_prior_power", float(self.synthetic_prior_power))
        if self.max_absorption is not None:
            try:
                ma = float(self.max_absorption)
            except (TypeError, ValueError):
                ma = float("nan")
            if not (ma >= 0 and math.isfinite(ma)):
                raise InputError(f"--max-absorption {self.max_absorption!r} must be a number of barn >= 0",
                                 field="--max-absorption")
            object.__setattr__(self, "max_absorption", ma)
        if self.cycle_to is not None and self.cycle_to < 1:
            raise InputError(f"--cycle-to {self.cycle_to} must be >= 1", field="--cycle-to")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest_fields(self) -> dict:
        """The fields that change the bytes of the dataset (not device or output path)."""
        d = self.to_dict()
        d.pop("device")
        d.pop("output")
        if d["synthetic_prior_power"] == 1.0:
            d.pop("synthetic_prior_power")  # the default: digests of datasets made before the option stay valid
        if d["max_absorption"] is None:  # off: the digests of datasets made before the option stay
            d.pop("max_absorption")
        return d


# ---------------------------------------------------------------------------- items
@lru_cache(maxsize=FILE_CACHE)
def read_file_items(path: str) -> tuple:
    """Structures of one file: a tuple with one entry per block, a Crystal or an error text.

    A file that cannot be read at all gives a 1-tuple with its error text, so it
    counts as one (rejected) item. Cached per process: consecutive items of a
    shard usually come from the same files.
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError("is a directory, not a structure file", path)
        from . import io

        # read_blocks keeps the good blocks of a file whose other blocks are bad.
        reader = getattr(io, "read_blocks", None) or io.read_structures
        got = reader(p)
    except Exception as exc:  # noqa: BLE001 - a failure of this input is its reject row (_reason: or a JobError)
        return (_reason(exc, f"reading {path}"),)
    if not got:
        return ("no structure in the file",)
    return tuple(c if not isinstance(c, BaseException) else _reason(c, f"reading {path}") for c in got)


def count_items(path: str) -> int:
    """Number of items (structure blocks) a file contributes, without building crystals.

    Reading a CIF into crystals (symmetry expansion, spglib) costs ~15 ms; the
    item count only needs the block structure, which gemmi parses in ~0.2 ms.
    The count follows the readers' rule exactly (``xtalhpc.io.cif``'s own
    block filter; a file that cannot be read is one item). Whenever the cheap
    path is unsure it falls back to the full read, and :func:`load_item`
    rejects a file whose real block count differs, so no block can vanish.
    """
    try:
        from .io import detect_format

        if detect_format(path) != "cif":
            return 1  # .ncmat and POSCAR hold one structure (or fail as one item)
        import gemmi

        from .io.cif import _is_structural

        doc = gemmi.cif.read(path)
    except Exception:  # noqa: BLE001 - unreadable, lenient-only or unknown: ask the reader itself
        return len(read_file_items(path))
    return max(1, sum(1 for b in doc if _is_structural(b)))


def _reason(exc: BaseException, doing: str) -> str:
    """The reject-row text of one item's error, or a :class:`~xtalhpc.errors.JobError` raised for an
    error that would fail every item (a missing dependency, a kernel that does not compile, out of
    memory): the rule is :func:`xtalhpc.errors.reject_reason`'s, shared by every batch job."""
    from .errors import reject_reason

    return reject_reason(exc, doing)


@dataclass
class Manifest:
    """The deterministic list of input items.

    Items ``0 .. n_file_items-1`` are structure blocks (files sorted by path,
    blocks in file order); then ``synthetic`` synthetic crystals; the whole list
    is repeated cyclically up to ``cycle_to`` if set.
    """

    files: list[str]
    blocks: list[int]
    sizes: list[int]
    labels: list[int | None] | None = None
    synthetic: int = 0
    per_space_group: bool = False
    cycle_to: int | None = None
    prior_cdf: list[float] | None = None
    offsets: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = [0]
        for b in self.blocks:
            self.offsets.append(self.offsets[-1] + b)

    @property
    def n_file_items(self) -> int:
        return self.offsets[-1]

    @property
    def n_base(self) -> int:
        return self.n_file_items + self.synthetic

    @property
    def n_items(self) -> int:
        return self.cycle_to if self.cycle_to is not None else self.n_base

    def locate(self, i: int) -> tuple[str, object, int]:
        """``("file", file number, block)`` or ``("synthetic", space_group, item index)`` of item ``i``."""
        if not 0 <= i < self.n_items:
            raise IndexError(i)
        if self.n_base == 0:
            raise InputError("the inputs hold no structure to cycle over", field="--cycle-to")
        b = i % self.n_base
        if b < self.n_file_items:
            f = bisect.bisect_right(self.offsets, b) - 1
            return "file", f, b - self.offsets[f]
        j = b - self.n_file_items
        if self.per_space_group:
            per = self.synthetic // 230
            sg = j // per + 1
        elif self.prior_cdf is not None:
            # golden-ratio sequence: deterministic, well mixed along j, frequencies -> the prior's
            u = (0.5 + j * 0.6180339887498949) % 1.0
            sg = min(bisect.bisect_right(self.prior_cdf, u), 229) + 1
        else:
            sg = j % 230 + 1
        return "synthetic", sg, i

    def digest(self) -> str:
        return schema.digest({"files": self.files, "blocks": self.blocks, "sizes": self.sizes, "labels": self.labels,
                              "synthetic": self.synthetic, "per_space_group": self.per_space_group,
                              "cycle_to": self.cycle_to, "prior_cdf": self.prior_cdf})


#: Column names accepted in a CSV structure list (first match wins).
CSV_PATH_COLUMNS = ("path", "file", "filename", "cif")
CSV_LABEL_COLUMNS = ("space_group", "sg_number", "sg", "spacegroup")


def read_structure_list(path: str | Path) -> list[tuple[str, int | None]]:
    """A CSV structure list: ``(file, space-group label or None)`` per row.

    The header names the file column (one of :data:`CSV_PATH_COLUMNS`) and,
    optionally, a space-group column (:data:`CSV_LABEL_COLUMNS`); other columns
    are ignored. Relative paths are relative to the CSV file's folder. A label
    given here replaces the one read from the structure file.
    """
    import csv

    from .spacegroups import check_space_group

    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the structure list: {exc}", str(p)) from None
    if not rows:
        raise InputError("the structure list has no rows", str(p))
    cols = {c.strip().lower(): c for c in rows[0] if c}
    pcol = next((cols[c] for c in CSV_PATH_COLUMNS if c in cols), None)
    if pcol is None:
        raise InputError(f"no file column; columns are {list(rows[0])}, expected one of {list(CSV_PATH_COLUMNS)}",
                         str(p), "header")
    lcol = next((cols[c] for c in CSV_LABEL_COLUMNS if c in cols), None)
    out = []
    for n, row in enumerate(rows, start=2):
        f = (row.get(pcol) or "").strip()
        if not f:
            raise InputError("empty file name", f"{p}:{n}", pcol)
        fp = Path(f) if Path(f).is_absolute() else p.parent / f
        label = (row.get(lcol) or "").strip() if lcol else ""
        out.append((str(fp), check_space_group(label, f"{p}:{n}", lcol) if label else None))
    return out


def list_files(sources) -> tuple[list[str], list[int | None]]:
    """Sorted structure-file paths of the sources (directories, globs, files, CSV lists) and their labels.

    The label is the space group a CSV structure list gives for the file (None
    elsewhere). A file named by two sources with different labels is an error.
    """
    from .io import iter_structure_files

    labels: dict[str, int | None] = {}

    def add(f: str, label: int | None, where: str) -> None:
        if f in labels and labels[f] is not None and label is not None and labels[f] != label:
            raise InputError(f"{f} is labelled space group {labels[f]} and {label}", where, "space_group")
        labels[f] = label if label is not None else labels.get(f)

    plain = []
    for s in sources:
        if str(s).lower().endswith(".csv") and Path(s).is_file():
            for f, label in read_structure_list(s):
                add(f, label, str(s))
        else:
            plain.append(s)
    if plain:
        for p in iter_structure_files(plain):
            add(str(p), None, str(p))
    files = sorted(labels)
    return files, [labels[f] for f in files]


def load_item(man: Manifest, i: int, seed: int):
    """The Crystal of item ``i``, or an error text."""
    kind, where, k = man.locate(i)
    if kind == "file":
        entries = read_file_items(man.files[where])
        if len(entries) != man.blocks[where]:
            return (f"{man.files[where]}: the reader found {len(entries)} structure block(s) where the enumeration "
                    f"counted {man.blocks[where]} (file changed during the run?); every block of the file is rejected "
                    "so that none is silently dropped")
        c = entries[k]
        label = man.labels[where] if man.labels else None
        if label is not None and not isinstance(c, str) and c.space_group != label:
            c = c.replace(space_group=label)  # the structure list's label is authoritative
        return c
    try:
        from .synth import generate_crystal
    except ImportError as exc:
        raise InputError(f"--synthetic needs xtalhpc.synth.generate_crystal, not available here ({exc})",
                         field="--synthetic") from None
    try:
        return generate_crystal(int(where), seed, int(k))
    except Exception as exc:  # noqa: BLE001 - this crystal's reject row, unless it is a JobError (_reason)
        return _reason(exc, f"generating synthetic crystal {i} (space group {where})")


def item_source_id(man: Manifest, i: int, seed: int) -> tuple[str, str]:
    """``(source_id, file)`` of item ``i``.

    ``source_id`` is the file path, ``path#k`` (k-th structure block, from 0)
    for files with several blocks, or ``synthetic:sg<N>:seed<S>:item<i>``; ``file`` is the path or
    ``synthetic`` (the rejects table's ``source`` column).
    """
    kind, where, k = man.locate(i)
    if kind == "file":
        path = man.files[where]
        if man.blocks[where] > 1:
            return f"{path}#{k}", path
        return path, path
    return f"synthetic:sg{where}:seed{seed}:item{k}", "synthetic"


# ---------------------------------------------------------------------------- MPI plumbing
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


TAG_REQUEST, TAG_ASSIGN, TAG_DONE = 11, 12, 13


class _Coordinator:
    """Rank 0's side of dynamic scheduling: hands out shard indices, collects progress."""

    def __init__(self, comm, todo: list[int], progress: "Progress"):
        self.comm = comm
        # The first shards go out without a message: worker r starts on todo[r] (see
        # first_shard), so no rank waits for rank 0 to reach its first poll (rank 0's first
        # shard also loads the compiled kernels: ~0.3 s without answering).
        pre = len(todo[1:comm.size])
        self.queue = list(todo[:1]) + list(todo[comm.size:])
        self.progress = progress
        self.closed = comm.size - 1 - pre  # workers told "no more shards" (those with no first shard: implicitly)
        self.assigned = pre  # shards handed to workers
        self.reported = 0  # of those, reported done
        self.infos: dict = {}  # shard index -> ShardInfo of the shards the workers wrote

    def take(self) -> int | None:
        return self.queue.pop(0) if self.queue else None

    def poll(self) -> None:
        if self.comm.size == 1:
            return
        from mpi4py import MPI

        c = self.comm.comm
        st = MPI.Status()
        while c.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st):
            src, tag = st.Get_source(), st.Get_tag()
            msg = c.recv(source=src, tag=tag)
            if tag == TAG_REQUEST:
                nxt = self.take()
                c.send(-1 if nxt is None else nxt, dest=src, tag=TAG_ASSIGN)
                if nxt is None:
                    self.closed += 1
                else:
                    self.assigned += 1
            elif tag == TAG_DONE:
                self.reported += 1
                info = msg.pop("info", None)
                if info is not None:
                    self.infos[info.index] = info
                self.progress.shard_done(**msg)

    def drain(self) -> None:
        """Answer until every worker has been told there is nothing left (and reported its last shard)."""
        # A worker asks for its next shard before reporting the current one, so
        # "all told to stop" is not enough: wait for every report too.
        while self.closed < self.comm.size - 1 or self.reported < self.assigned:
            self.poll()
            time.sleep(0.002)


def first_shard(todo: list[int], rank: int) -> int | None:
    """The shard a rank starts on without asking (rank r: todo[r]), None when there is none."""
    return todo[rank] if rank < len(todo) else None


class _Worker:
    """A non-zero rank's side: ask early, so the next assignment is waiting when a shard finishes."""

    def __init__(self, comm, todo: list[int]):
        self.comm = comm
        self.pending = None
        self.first = first_shard(todo, comm.rank)
        self.started = False

    def request(self) -> None:
        self.comm.comm.send(None, dest=0, tag=TAG_REQUEST)
        self.pending = self.comm.comm.irecv(source=0, tag=TAG_ASSIGN)

    def next(self) -> int | None:
        if not self.started:
            self.started = True
            if self.first is None:
                return None  # no shard for this rank; the coordinator counted it as told
            self.request()  # one ahead
            return int(self.first)
        if self.pending is None:
            self.request()
        while True:
            done, val = self.pending.test()
            if done:
                break
            time.sleep(0.0005)
        self.pending = None
        if val < 0:
            return None
        self.request()
        return int(val)

    def report(self, **msg) -> None:
        self.comm.comm.send(msg, dest=0, tag=TAG_DONE)


# ---------------------------------------------------------------------------- progress
class Progress:
    """Rank 0's aggregated progress: a log line per shard and a rate line."""

    def __init__(self, n_items: int, n_shards_total: int, n_shards_todo: int, stream=None, quiet: bool = False):
        self.n_items = n_items
        self.total = n_shards_total
        self.todo = n_shards_todo
        self.done = 0
        self.items = 0
        self.patterns = 0
        self.rejected = 0
        self.t0 = time.perf_counter()
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def shard_done(self, *, shard: int, rank: int, n_patterns: int, n_rejected: int, seconds: float) -> None:
        self.done += 1
        self.items += n_patterns + n_rejected
        self.patterns += n_patterns
        self.rejected += n_rejected
        if self.quiet:
            return
        el = time.perf_counter() - self.t0
        rate = self.patterns / el if el > 0 else 0.0
        left = self.todo - self.done
        eta = left * el / self.done if self.done else float("nan")
        # One write per line: ranks share stderr under mpiexec.
        self.stream.write(f"[generate] shard {shard:05d} rank {rank}: {n_patterns} patterns, {n_rejected} rejected, "
                          f"{seconds:.2f} s | {self.done}/{self.todo} shards done, {self.patterns} patterns, "
                          f"{rate:,.1f} patterns/s, ETA {_fmt_s(eta)}\n")
        self.stream.flush()


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---------------------------------------------------------------------------- one shard
@dataclass
class ShardTimes:
    read: float = 0.0
    simulate: float = 0.0
    kernels: float = 0.0
    post: float = 0.0
    write: float = 0.0

    def add(self, other: "ShardTimes") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _group_key_fn():
    """``xtalhpc.curate.structure_type_key`` if installed, else the formula|space-group fallback."""
    try:
        from .curate.splits import structure_type_key  # noqa: F401

        return "xtalhpc.curate.structure_type_key", structure_type_key
    except Exception:  # noqa: BLE001 - absent or broken curation package: fall back, and say so in the dataset
        return "reduced formula|space group", lambda c: schema.fallback_group_key(c.formula, c.space_group)


def _item_meta(c, key_fn, split):
    """Labels, formula, group key and split of a crystal, or an error text. Computed once per
    base item and kept in its :class:`_ItemRecord`: the structure-type key costs as much as a
    pattern, and the same block recurs when inputs are cycled or resumed in one process."""
    try:
        key = key_fn(c)
        return (int(c.space_group), schema.VOCABULARIES["crystal_system"].index(c.crystal_system),
                schema.VOCABULARIES["bravais_lattice"].index(c.bravais_lattice), c.formula, key,
                schema.assign_split(key, split))
    except Exception as exc:  # noqa: BLE001 - one structure's problem becomes its reject row (_reason)
        return _reason(exc, "computing the labels and structure-type key")


class _ItemRecord:
    """What a shard row needs of a base item besides its pattern, remembered per process.

    Keyed by the file block (or the synthetic item itself) in the shard loop's memo: the
    source id, the file, the lattice, the atom count, whether it holds hydrogen isotopes, and,
    computed on first need, the flat H background level and the labels (:func:`_item_meta`).
    """

    __slots__ = ("sid", "fname", "cell", "n_atoms", "has_h", "h_level", "meta", "absorption")

    def __init__(self, man: "Manifest", i: int, seed: int, c) -> None:
        self.sid, self.fname = item_source_id(man, i, seed)
        self.cell = np.asarray(c.cell, dtype=np.float64)
        self.n_atoms = c.n_atoms
        self.has_h = "H" in c.species or "D" in c.species or "T" in c.species
        self.h_level = None
        self.meta = None
        self.absorption = None


def compute_shard(index: int, cfg: GenerateConfig, man: Manifest, instrument, *, key_fn,
                  between=None, sub_batch_s: float | None = None, memo: dict | None = None,
                  sub_state: dict | None = None) -> tuple["object", ShardTimes]:
    """Simulate items ``[index*K, (index+1)*K)`` into a :class:`~xtalhpc.dataset.ShardData`.

    ``between`` (rank 0 with workers) is called between sub-batches of about
    ``sub_batch_s`` seconds; results do not depend on the sub-batching.
    """
    from .dataset import ShardData
    from .curate.hd import deuterate, incoherent_background_level
    from .simulate import simulate_batch

    k = cfg.shard_size
    start, stop = index * k, min((index + 1) * k, man.n_items)
    times = ShardTimes()
    t = time.perf_counter()
    crystals, items, rejects = [], [], []
    last_poll = t
    for i in range(start, stop):
        if between is not None and time.perf_counter() - last_poll > (sub_batch_s or POLL_INTERVAL_S):
            between()  # reading structures can take as long as simulating them: keep answering
            last_poll = time.perf_counter()
        obj = load_item(man, i, cfg.seed)
        if isinstance(obj, str):
            rejects.append((i, item_source_id(man, i, cfg.seed)[1], obj))
        elif obj.space_group is None:
            rejects.append((i, item_source_id(man, i, cfg.seed)[1],
                            f"{obj.source or obj.name}: no space group (the label); the reader could not determine it"))
        else:
            crystals.append(deuterate(obj) if cfg.deuterate else obj)
            items.append(i)
    times.read = time.perf_counter() - t

    # Simulate in sub-batches (one batch unless rank 0 must poll).
    n_points = instrument.n_points
    results = []  # (positions in crystals, BatchResult)
    pos = 0
    # Rank 0 with workers: start from the sub-batch size that fitted the last shard.
    step = len(crystals) if not sub_batch_s else (sub_state or {}).get("step", 1)
    while pos < len(crystals):
        sel = list(range(pos, min(len(crystals), pos + step)))
        t = time.perf_counter()
        res = simulate_batch([crystals[j] for j in sel], instrument, device=cfg.device, on_error="collect",
                             peaks=cfg.peaks)
        dt = time.perf_counter() - t
        times.simulate += dt
        times.kernels += sum(v for kk, v in res.timings.items() if kk not in ("total", "pack"))
        results.append((sel, res))
        pos += len(sel)
        if between is not None:
            between()
            if sub_batch_s and dt > 0:
                step = max(1, min(k, int(step * min(4.0, sub_batch_s / dt))))
                if sub_state is not None:
                    sub_state["step"] = step

    t = time.perf_counter()
    h_bg = cfg.h_background and instrument.radiation == "neutron"
    n_file, n_base = man.n_file_items, man.n_base
    if memo is None:
        memo = {}  # still shared by the sub-batches of this shard
    recs: list[_ItemRecord] = []  # per kept pattern
    kept_items: list[int] = []
    kept: list[tuple[object, list[int], np.ndarray]] = []  # per sub-batch: result, rows kept, their scales
    for sel, res in results:
        ok = np.asarray(res.ok, dtype=bool)
        rec_of = []
        for j in sel:
            i = items[j]
            b = i % n_base  # file blocks recur when cycled; synthetic crystals depend on i itself
            mkey = b if b < n_file else ("synthetic", i)
            rec = memo.get(mkey)
            if rec is None:
                rec = _ItemRecord(man, i, cfg.seed, crystals[j])
                if len(memo) >= META_MEMO:
                    memo.pop(next(iter(memo)))
                memo[mkey] = rec
            rec_of.append(rec)
        # before any background: a pattern without coherent intensity is a reject, whatever is added
        coherent_max = res.patterns.max(axis=1) if res.patterns.size else np.zeros(len(sel))
        if h_bg:
            for r, rec in enumerate(rec_of):
                if rec.has_h and ok[r]:
                    if rec.h_level is None:
                        rec.h_level = incoherent_background_level(crystals[sel[r]], instrument.wavelength)
                    res.patterns[r] += rec.h_level
        row_max = res.patterns.max(axis=1) if res.patterns.size else np.zeros(len(sel))
        good = (ok & np.isfinite(row_max) & (row_max > 0) & (coherent_max > 0)).tolist()
        rows = []
        for r, rec in enumerate(rec_of):
            i = items[sel[r]]
            if not good[r]:
                if not ok[r]:
                    rejects.append((i, rec.fname, res.errors.get(r, "simulation failed")))
                else:
                    rejects.append((i, rec.fname, f"{rec.sid}: {_no_intensity_reason(instrument)}"))
                continue
            why = _absorption_reject(rec, crystals[sel[r]], instrument, cfg.max_absorption)
            if why:
                rejects.append((i, rec.fname, f"{rec.sid}: {why}"))
                continue
            meta = rec.meta
            if meta is None:
                meta = rec.meta = _item_meta(crystals[sel[r]], key_fn, cfg.split)
            if isinstance(meta, str):
                rejects.append((i, rec.fname, f"{rec.sid}: no structure-type key: {meta}"))
                continue
            rows.append(r)
            recs.append(rec)
            kept_items.append(i)
        kept.append((res, rows, row_max[rows]))
    n = len(recs)
    # Normalise each sub-batch in one pass, straight into the shard's float32 rows, in the rows' own
    # precision: float64 rows give the bits of "divide in float64, then astype(float32)"; float32 rows
    # (the simulator's) give the same bits too, since a float32 quotient equals the float64 quotient
    # of the same operands rounded to float32 (double rounding is innocuous for division: 53 >= 2*24+2),
    # at a third of the cost of dividing by the float64 scales.
    patterns = np.empty((n, n_points), dtype=np.float32)
    pos = 0
    for res, rows, sc in kept:
        if rows:
            p = res.patterns if len(rows) == len(res.patterns) else res.patterns[rows]
            np.divide(p, sc[:, None], out=patterns[pos:pos + len(rows)], casting="unsafe")
            pos += len(rows)
    metas = [rec.meta for rec in recs]
    per_arr = {
        "item_index": np.array(kept_items, dtype=np.int64),
        "space_group": np.array([m[0] for m in metas], dtype=np.int16),
        "crystal_system": np.array([m[1] for m in metas], dtype=np.int8),
        "bravais_lattice": np.array([m[2] for m in metas], dtype=np.int8),
        "split": np.array([m[5] for m in metas], dtype=np.int8),
        "scale": (np.concatenate([sc for _, _, sc in kept]) if kept else np.zeros(0)).astype(np.float64, copy=False),
        "lattice": np.array([rec.cell for rec in recs], dtype=np.float64).reshape(n, 6),
        "n_atoms": np.array([rec.n_atoms for rec in recs], dtype=np.int32),
        "absorption": np.array([rec.absorption for rec in recs], dtype=np.float64).reshape(n),
        "peak_count": (np.concatenate([np.diff(res.peak_offsets)[rows] for res, rows, _ in kept]).astype(np.int32)
                       if cfg.peaks and kept else np.zeros(n, dtype=np.int32)),
        "source_id": np.array([rec.sid for rec in recs], dtype=object).reshape(n),
        "formula": np.array([m[3] for m in metas], dtype=object).reshape(n),
        "group_key": np.array([m[4] for m in metas], dtype=object).reshape(n),
    }
    if per_arr.keys() != schema.PER_PATTERN.keys():  # the schema grew a field this writer does not fill
        raise XtalhpcError(f"compute_shard fills {sorted(per_arr)}, the schema has {sorted(schema.PER_PATTERN)}")
    peaks = {}
    if cfg.peaks:
        pk = {name: [] for name in schema.PER_PEAK}
        for res, rows, _ in kept:
            for r in rows:
                s0, s1 = int(res.peak_offsets[r]), int(res.peak_offsets[r + 1])
                pk["two_theta"].append(res.peak_two_theta[s0:s1])
                pk["intensity"].append(res.peak_intensity[s0:s1])
                pk["d"].append(res.peak_d[s0:s1])
                pk["F2"].append(res.peak_F2[s0:s1])
                pk["hkl"].append(res.peak_hkl[s0:s1])
                pk["multiplicity"].append(res.peak_multiplicity[s0:s1])
        for name, (dtype, tail, _) in schema.PER_PEAK.items():
            parts = pk[name]
            peaks[name] = (np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *tail), dtype=dtype))
    rejects.sort()
    data = ShardData(
        index=index, item_start=start, item_stop=stop, patterns=patterns, per_pattern=per_arr, peaks=peaks,
        rejects={"item_index": np.array([r[0] for r in rejects], dtype=np.int64),
                 "source": np.array([r[1] for r in rejects], dtype=object),
                 "reason": np.array([r[2] for r in rejects], dtype=object)})
    times.post = time.perf_counter() - t
    return data, times


def _no_intensity_reason(instrument) -> str:
    """The reject reason of a pattern without coherent intensity on the grid."""
    return (f"no intensity on the 2theta grid: no reflection with |F|^2 > 0 in "
            f"{instrument.two_theta_min}-{instrument.two_theta_max} deg (d >= {instrument.d_min:.4f} A)")


def _absorption_reject(rec: _ItemRecord, c, instrument, max_absorption: float | None) -> str | None:
    """Fill ``rec.absorption`` (barn per formula unit at the instrument's wavelength; NaN for
    X-rays) and return the reject reason when it exceeds ``max_absorption`` (None: no limit)."""
    from .scattering import absorption_per_formula_unit

    if rec.absorption is None:
        rec.absorption = (absorption_per_formula_unit(c, instrument.wavelength) if instrument.radiation == "neutron"
                          else float("nan"))
    if max_absorption is not None and rec.absorption > max_absorption:
        return (f"absorption cross-section {rec.absorption:.6g} barn per formula unit ({c.formula}) at "
                f"{instrument.wavelength:g} A exceeds --max-absorption {max_absorption:g}")
    return None


# ---------------------------------------------------------------------------- the run
@dataclass
class RunSummary:
    n_items: int
    n_patterns: int
    n_rejected: int
    n_shards: int
    shards_computed: int
    wall_s: float
    ranks: int
    times: dict
    master: str


def _enumerate(comm, cfg: GenerateConfig) -> Manifest:
    """All ranks: sorted file list (rank 0), block counts (files split over ranks)."""
    listing = None
    if comm.rank == 0:
        try:
            listing = ("ok", list_files(cfg.sources) if cfg.sources else ([], []))
        except XtalhpcError as exc:
            listing = ("error", exc)
    listing = comm.bcast(listing)
    if listing[0] == "error":
        raise listing[1]
    files, labels = listing[1]
    mine = {i: (count_items(files[i]), _size(files[i])) for i in range(comm.rank, len(files), comm.size)}
    merged: dict[int, tuple[int, int]] = {}
    for part in comm.allgather(mine):
        merged.update(part)
    blocks = [merged[i][0] for i in range(len(files))]
    sizes = [merged[i][1] for i in range(len(files))]
    syn = cfg.synthetic * 230 if cfg.per_space_group else cfg.synthetic
    cdf = None
    if cfg.synthetic_prior is not None:
        weights = tempered_prior(space_group_prior(cfg.synthetic_prior), cfg.synthetic_prior_power)
        cdf = (np.cumsum(weights) / weights.sum()).tolist()
    return Manifest(files, blocks, sizes, labels=labels, synthetic=syn, per_space_group=cfg.per_space_group,
                    cycle_to=cfg.cycle_to, prior_cdf=cdf)


#: Column names accepted for the space group of a prior table (first match wins).
PRIOR_COLUMNS = ("spacegroup_number", "space_group", "sg_number", "sg", "spacegroup", "space group")


def space_group_prior(path: str | Path) -> np.ndarray:
    """Counts per space group 1-230 (index 0 = group 1) of a CSV table with a space-group column."""
    import csv

    p = Path(path)
    try:
        fh = open(p, newline="")
    except OSError as exc:
        raise InputError(f"cannot read the prior table: {exc.strerror}", str(p), "--synthetic-prior") from None
    counts = np.zeros(230, dtype=np.int64)
    with fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        col = next((cols[c] for c in PRIOR_COLUMNS if c in cols), None)
        if col is None:
            raise InputError(f"no space-group column; allowed names: {', '.join(PRIOR_COLUMNS)}", str(p),
                             "header")
        for row_no, row in enumerate(reader, start=2):
            raw = (row.get(col) or "").strip()
            try:
                sg = int(raw)
            except ValueError:
                raise InputError(f"row {row_no}: space group {raw!r} is not an integer 1-230", str(p), col) from None
            if not 1 <= sg <= 230:
                raise InputError(f"row {row_no}: space group {sg} is outside 1-230", str(p), col)
            counts[sg - 1] += 1
    if counts.sum() == 0:
        raise InputError("the prior table has no rows", str(p), col)
    return counts


def tempered_prior(counts: np.ndarray, power: float) -> np.ndarray:
    """Weights ``counts ** power`` for the groups with counts > 0, zero elsewhere (float64)."""
    counts = np.asarray(counts, dtype=np.float64)
    if power == 1.0:
        return counts
    return np.where(counts > 0, np.power(counts, power, where=counts > 0, out=np.zeros_like(counts)), 0.0)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _prepare_output(cfg: GenerateConfig, digest: str, record: dict, n_shards: int, log) -> tuple[list[int], list, object]:
    """Rank 0: check an existing output against this config, lock it, clean leftovers, list shards still to do.

    Returns the shards to do, the :class:`~xtalhpc.dataset.ShardInfo` of those already complete, and the lock.
    """
    from .dataset import ShardError, shard_info

    out = Path(cfg.output)
    cfg_path = out / schema.CONFIG_NAME
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the existing config: {exc}", str(cfg_path)) from None
        if old.get("config_digest") != digest:
            changed = _diff(old.get("config", {}), record["config"])
            if old.get("manifest_digest") != record["manifest_digest"]:
                changed.append("the input files (list, sizes or block counts)")
            for k in ("instrument", "group_key_method", "xtalhpc_version", "schema_version"):
                if schema.canonical_json(old.get(k)) != schema.canonical_json(record[k]):
                    changed.append(k if k == "instrument" else f"{k} {old.get(k)!r} -> {record[k]!r}")
            raise InputError(
                f"{out} holds a dataset generated with another config (changed: {', '.join(changed) or 'unknown'}); "
                "rerun the same command to resume, or choose a new --output", str(cfg_path))
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists, is not empty and is not an xtalhpc dataset; choose a new --output",
                         str(out))
    (out / schema.SHARD_DIR).mkdir(parents=True, exist_ok=True)
    lock = _lock_output(out)
    tmp = cfg_path.with_name(cfg_path.name + schema.TMP_SUFFIX)
    tmp.write_text(json.dumps(record, indent=2, default=schema._json_default) + "\n")
    os.replace(tmp, cfg_path)
    for p in sorted((out / schema.SHARD_DIR).glob("*" + schema.TMP_SUFFIX)):
        log(f"removing {p.name}: left by an interrupted run")
        p.unlink()
    todo, done = [], []
    for s in range(n_shards):
        p = out / schema.shard_name(s)
        if not p.exists():
            todo.append(s)
            continue
        try:
            done.append(shard_info(p, expect_digest=digest, expect_index=s))
        except ShardError as exc:
            if "another generation config" in str(exc):
                raise InputError(str(exc) + "; choose a new --output", str(p)) from None
            log(f"recomputing {p.name}: {exc}")
            p.unlink()
            todo.append(s)
    return todo, done, lock


def _lock_output(out: Path):
    """Hold an exclusive lock on ``OUT/generate.lock`` for the run (rank 0), or refuse.

    Two runs writing the same shards would waste the machine and race on the
    master file. Returns the open lock file (kept open until the run ends), or
    None where the file system does not support locks (some network mounts).
    """
    import fcntl

    fh = open(out / LOCK_NAME, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        who = fh.read().strip()
        fh.close()
        raise InputError(f"another `xtalhpc generate` is writing to {out} ({who or 'pid unknown'}); wait for it "
                         "or choose another --output", str(out / LOCK_NAME)) from None
    except OSError:
        return fh  # no lock support here: run without the guard
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {platform.node()}\n")
    fh.flush()
    return fh


def _diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys if schema.canonical_json(a.get(k)) != schema.canonical_json(b.get(k))]


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


class _ShardWriter:
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
    from .errors import job_error
    from .job import EXIT_FAILED, EXIT_USAGE

    if isinstance(exc, InputError):
        msg, status = str(exc), EXIT_USAGE
    else:
        msg, status = str(job_error(exc, f"generate (rank {comm.rank} of {comm.size})")), EXIT_FAILED
    sys.stderr.write(f"xtalhpc generate: error: {msg}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    comm.comm.Abort(status)
    # MPICH's MPI_Abort returns while the process manager ends the ranks: stop here, not in a
    # second handler (which would print the error again).
    os._exit(status)


def run_generate(cfg: GenerateConfig, comm=None, *, log_stream=None, quiet: bool = False) -> RunSummary | None:
    """Generate (or resume) the dataset of ``cfg`` on the ranks of ``comm``.

    Every rank calls this; rank 0 returns the :class:`RunSummary`, the others None.
    An error that only some ranks meet ends every rank (:func:`stop_all_ranks`); bad
    input found before the work is decided on rank 0 and raised on every rank alike.
    """
    comm = comm or SerialComm()
    held: list = []  # the output lock, released however the run ends
    try:
        return _run_generate(cfg, comm, log_stream=log_stream, quiet=quiet, held=held)
    except InputError:
        raise
    except Exception as exc:
        stop_all_ranks(comm, exc)
        raise
    finally:
        for fh in held:
            if fh is not None:
                fh.close()


def _run_generate(cfg: GenerateConfig, comm, *, log_stream=None, quiet: bool = False,
                  held: list) -> RunSummary | None:
    from .dataset import build_master, shard_info, write_shard_info

    stream = log_stream or sys.stderr

    def log(msg: str) -> None:
        if comm.rank == 0 and not quiet:
            stream.write(f"[generate] {msg}\n")
            stream.flush()

    t_start = time.perf_counter()
    _tune_malloc()
    instrument = resolve_instrument(cfg)
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    t = time.perf_counter()
    warm_up(instrument, cfg.device, cfg.peaks)
    t_warm = time.perf_counter() - t

    # Enumerate inputs, then decide (rank 0) what is left to do; errors are broadcast so all ranks stop.
    t = time.perf_counter()
    man = _enumerate(comm, cfg)
    t_enum = time.perf_counter() - t
    key_method, key_fn = _group_key_fn()
    n_items = man.n_items
    n_shards = -(-n_items // cfg.shard_size)
    record = {
        "schema": schema.SCHEMA_NAME, "schema_version": schema.SCHEMA_VERSION, "xtalhpc_version": __version__,
        "config": cfg.digest_fields(), "instrument": instrument.to_dict(), "group_key_method": key_method,
        "manifest_digest": man.digest(), "n_items": n_items, "n_files": len(man.files), "n_shards": n_shards,
    }
    digest = schema.digest(record)
    record["config_digest"] = digest
    record["device"] = cfg.device
    decision = None
    lock = None
    known: dict = {}  # rank 0: shard index -> ShardInfo, for the master file (no need to reopen those shards)
    if comm.rank == 0:
        try:
            if n_items == 0:
                raise InputError(f"the sources {list(cfg.sources)} hold no structure file", field="sources")
            if cfg.synthetic:
                try:
                    from .synth import generate_crystal  # noqa: F401
                except ImportError as exc:
                    raise InputError(f"--synthetic needs xtalhpc.synth.generate_crystal, not available here ({exc})",
                                     field="--synthetic") from None
            todo, done, lock = _prepare_output(cfg, digest, record, n_shards, log)
            held.append(lock)
            known.update((i.index, i) for i in done)
            decision = ("ok", todo)
        except XtalhpcError as exc:
            decision = ("error", exc)
    decision = comm.bcast(decision)
    if decision[0] == "error":
        raise decision[1]
    todo = decision[1]
    log(f"{n_items} input items ({len(man.files)} files, {man.synthetic} synthetic"
        f"{', cycled' if cfg.cycle_to else ''}) -> {n_shards} shards of {cfg.shard_size}; "
        f"{n_shards - len(todo)} already complete, {len(todo)} to compute on {comm.size} rank(s); "
        f"instrument {instrument.name} ({instrument.n_points} points)")

    # Compute.
    times = ShardTimes()
    memo: dict = {}
    sub_state: dict = {}
    t_wait = 0.0
    n_mine = 0
    progress = Progress(n_items, n_shards, len(todo), stream, quiet or comm.rank != 0)
    t_loop = time.perf_counter()

    def write(data):
        """Write one shard (on the writer thread); returns (ShardInfo, seconds)."""
        t1 = time.perf_counter()
        info = write_shard_info(cfg.output, data, config_digest=digest, compression=cfg.compression,
                                compression_level=cfg.compression_level, hash_thread=hash_thread)
        return info, time.perf_counter() - t1

    background, hash_thread = write_threads(comm)
    writer = _ShardWriter(write, background)

    def do_shard(s: int, t0: float, between=None, sub_batch_s=None):
        """Compute shard s and queue its write; returns the previous shard's (tag, (info, seconds)),
        its tag being (index, patterns, rejects, compute seconds)."""
        data, tm = compute_shard(s, cfg, man, instrument, key_fn=key_fn, memo=memo,
                                 sub_state=sub_state if between is not None else None,
                                 between=between, sub_batch_s=sub_batch_s)
        times.add(tm)
        if throttle:
            time.sleep(throttle)
        return writer.submit((s, data.n_patterns, data.n_rejected, time.perf_counter() - t0), data)

    def finished(done, report) -> None:
        """Account a shard whose write has completed and report it."""
        if done is None:
            return
        (s, n_pat, n_rej, compute_s), (info, write_s) = done
        times.write += write_s
        report(s, info, dict(shard=s, rank=comm.rank, n_patterns=n_pat, n_rejected=n_rej,
                             seconds=compute_s + write_s))

    try:
        if comm.rank == 0:
            coord = _Coordinator(comm, todo, progress)

            def report0(s, info, msg):
                known[s] = info
                progress.shard_done(**msg)

            coord.poll()
            while (s := coord.take()) is not None:
                finished(do_shard(s, time.perf_counter(), between=coord.poll if comm.size > 1 else None,
                                  sub_batch_s=POLL_INTERVAL_S if comm.size > 1 else None), report0)
                n_mine += 1
                coord.poll()
            finished(writer.wait(), report0)
            t = time.perf_counter()
            coord.drain()
            t_wait += time.perf_counter() - t
            known.update(coord.infos)
        else:
            worker = _Worker(comm, todo)

            def report_w(s, info, msg):
                worker.report(info=info, **msg)

            while True:
                t = time.perf_counter()
                s = worker.next()
                t_wait += time.perf_counter() - t
                if s is None:
                    break
                finished(do_shard(s, time.perf_counter()), report_w)
                n_mine += 1
            finished(writer.wait(), report_w)
    except Exception as exc:
        stop_all_ranks(comm, exc)
        raise
    finally:
        writer.close()
    t_compute = time.perf_counter() - t_loop
    stats = comm.gather({"rank": comm.rank, "shards": n_mine, "times": dataclasses.asdict(times),
                         "background_writes": background, "hash_thread": hash_thread,
                         "wait": t_wait, "compute_wall": t_compute, "peak_rss_kb": _peak_rss_kb(),
                         "cpu_s": _cpu_seconds()})

    if comm.rank != 0:
        return None
    # Master file over every shard.
    t = time.perf_counter()
    # Shards written or checked during this run are known (their writers' ShardInfo); any other
    # shard, or one whose file has gone since, is opened and checked here.
    infos = []
    for s in range(n_shards):
        p = Path(cfg.output) / schema.shard_name(s)
        info = known.get(s)
        infos.append(info if info is not None and p.is_file()
                     else shard_info(p, expect_digest=digest, expect_index=s))
    n_pat = sum(i.n_patterns for i in infos)
    n_rej = sum(i.n_rejected for i in infos)
    if n_pat + n_rej != n_items:
        raise XtalhpcError(f"generated {n_pat} + rejected {n_rej} != inputs {n_items}: a shard lost items")
    wall = time.perf_counter() - t_start
    provenance = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "numpy": np.__version__,
        "h5py": _version("h5py"), "numba": _version("numba"), "mpi4py": _version("mpi4py"),
        "ranks": comm.size, "device": cfg.device, "command": "xtalhpc generate " + " ".join(config_to_argv(cfg)),
        "generate_wall_s_last_run": round(wall, 3),
    }
    attrs = {
        "xtalhpc_version": __version__, "config": json.dumps(record["config"], default=schema._json_default),
        "config_digest": digest, "instrument": json.dumps(instrument.to_dict()), "instrument_name": instrument.name,
        "radiation": instrument.radiation, "wavelength_angstrom": instrument.wavelength, "seed": cfg.seed,
        "n_items": n_items, "n_files": len(man.files), "manifest_digest": man.digest(),
        "group_key_method": key_method,
        "split_fractions": json.dumps(None if cfg.split is None else dict(zip(("train", "val", "test"), cfg.split))),
        "normalisation": "each pattern divided by its maximum (stored as scale), so max = 1",
        "units": json.dumps(schema.UNITS), "vocabularies": json.dumps({k: list(v) for k, v in schema.VOCABULARIES.items()}),
        "provenance": json.dumps(provenance),
    }
    build_master(cfg.output, infos, two_theta=instrument.two_theta, attrs=attrs)
    t_master = time.perf_counter() - t
    log(f"generated {n_pat} + rejected {n_rej} = {n_pat + n_rej} of {n_items} inputs "
        f"({'OK' if n_pat + n_rej == n_items else 'MISMATCH'}); master {Path(cfg.output) / schema.MASTER_NAME}")
    agg = ShardTimes()
    for st in stats:
        agg.add(ShardTimes(**st["times"]))
    summary = RunSummary(n_items=n_items, n_patterns=n_pat, n_rejected=n_rej, n_shards=n_shards,
                         shards_computed=len(todo), wall_s=time.perf_counter() - t_start, ranks=comm.size,
                         times={"warm_up": t_warm, "enumerate": t_enum, "master": t_master, "compute_wall": t_compute,
                                "per_rank": stats, "sum": dataclasses.asdict(agg)},
                         master=str(Path(cfg.output) / schema.MASTER_NAME))
    # Where the time and memory of this run went (per rank), for benchmarks and post-mortems.
    run_path = Path(cfg.output) / RUN_STATS_NAME
    run_path.write_text(json.dumps(dataclasses.asdict(summary), indent=1, default=schema._json_default) + "\n")
    if lock is not None:
        lock.close()  # releases the flock
    return summary


def warm_up(instrument, device: str, peaks: bool) -> None:
    """Load every compiled kernel a run uses, on every rank, before the ranks wait on each other.

    The first call of a cached Numba function in a process costs ~0.3 s (Numba's typing and
    code-generation set-up) and each further kernel 3-8 ms to load. Paid inside the
    enumeration (one CIF that gemmi cannot count is read in full, and reading symmetrises)
    it kept the other ranks waiting for the one rank that read it; paid here, every rank
    loads its kernels at the same time. A one-atom cubic crystal with the 48 operations of
    Pm-3m exercises the symmetry-partner kernel, the orbit tables and the four simulation
    kernels on the run's instrument and device.
    """
    from .crystal import Crystal, symmetrize
    from .simulate import simulate_batch
    from .spacegroups import standard_operations

    c = symmetrize(Crystal([4.0, 4.0, 4.0, 90.0, 90.0, 90.0], [[0.0, 0.0, 0.0]], ["Fe"], [1.0], [0.5], name="warm-up"),
                   standard_operations(221))
    simulate_batch([c], instrument, device=device, on_error="raise", peaks=peaks)


def resolve_instrument(cfg: GenerateConfig):
    """The instrument of ``cfg``, with ``--radiation`` applied."""
    from .instruments import Instrument, get_instrument

    inst = get_instrument(cfg.instrument)
    if cfg.radiation is not None and cfg.radiation != inst.radiation:
        inst = Instrument(**{**inst.to_dict(), "radiation": cfg.radiation}, source=inst.source)
    return inst


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return "absent"


#: glibc malloc settings for a generating process (see :func:`_tune_malloc`): blocks up to 32 MB
#: (glibc's largest threshold on 64-bit) come from the heap, and up to 256 MB of freed heap is kept.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20


def _tune_malloc() -> bool:
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


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (what the OS actually gave the rank)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return float(r.ru_utime + r.ru_stime)


def _peak_rss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ---------------------------------------------------------------------------- launching
def config_to_argv(cfg: GenerateConfig, ranks: int | None = None) -> list[str]:
    """The ``xtalhpc generate`` arguments that reproduce ``cfg`` (used to re-launch under mpiexec)."""
    argv = [*cfg.sources, "--output", cfg.output, "--instrument", cfg.instrument,
            "--shard-size", str(cfg.shard_size), "--seed", str(cfg.seed), "--device", cfg.device,
            "--compression", cfg.compression]
    if cfg.compression_level is not None:
        argv += ["--compression-level", str(cfg.compression_level)]
    argv.append("--peaks" if cfg.peaks else "--no-peaks")
    argv += ["--split", "none" if cfg.split is None else ",".join(repr(x) for x in cfg.split)]
    if cfg.synthetic:
        argv += ["--synthetic", str(cfg.synthetic)]
        if cfg.per_space_group:
            argv.append("--per-space-group")
    if cfg.cycle_to is not None:
        argv += ["--cycle-to", str(cfg.cycle_to)]
    if cfg.radiation is not None:
        argv += ["--radiation", cfg.radiation]
    if cfg.synthetic_prior is not None:
        argv += ["--synthetic-prior", cfg.synthetic_prior]
        if cfg.synthetic_prior_power != 1.0:
            argv += ["--synthetic-prior-power", repr(cfg.synthetic_prior_power)]
    if cfg.deuterate:
        argv.append("--deuterate")
    argv.append("--h-background" if cfg.h_background else "--no-h-background")
    if cfg.max_absorption is not None:
        argv += ["--max-absorption", repr(cfg.max_absorption)]
    if ranks is not None:
        argv += ["--ranks", str(ranks)]
    return argv


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
    print(f"[generate] launching {ranks} ranks: {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)
