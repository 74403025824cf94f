"""The inputs as a deterministic list of items: structure files and their blocks, CSV structure
lists, synthetic crystals and the space-group prior they may follow, and the :class:`Manifest`
that maps a global item index to its source.

Items ``0 .. n-1`` are the structure blocks of the files sorted by path (a file that cannot be
read is one rejected item), then the synthetic crystals; anything random about item i derives
from ``(seed, i)``, so the items never depend on the number of ranks.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..dataset import schema
from ..errors import InputError, XtalhpcError
from .config import FILE_CACHE, GenerateConfig

@lru_cache(maxsize=FILE_CACHE)
def read_file_items(path: str, find_symmetry: bool = True) -> tuple:
    """Structures of one file: a tuple with one entry per block, a Crystal or an error text
    (``find_symmetry`` as in :func:`xtalhpc.io.read_blocks`).

    A file that cannot be read at all gives a 1-tuple with its error text, so it
    counts as one (rejected) item. Cached per process: consecutive items of a
    shard usually come from the same files.
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError("is a directory, not a structure file", path)
        from .. import io

        # read_blocks keeps the good blocks of a file whose other blocks are bad.
        got = io.read_blocks(p, find_symmetry=find_symmetry)
    except Exception as exc:  # noqa: BLE001 - a failure of this input is its reject row (reject_text: or a JobError)
        return (reject_text(exc, f"reading {path}"),)
    if not got:
        return ("no structure in the file",)
    return tuple(c if not isinstance(c, BaseException) else reject_text(c, f"reading {path}") for c in got)


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
        from ..io import detect_format

        if detect_format(path) != "cif":
            return 1  # .ncmat and POSCAR hold one structure (or fail as one item)
        import gemmi

        from ..io.cif import _is_structural

        doc = gemmi.cif.read(path)
    except Exception:  # noqa: BLE001 - unreadable, lenient-only or unknown: ask the reader itself
        return len(read_file_items(path))
    return max(1, sum(1 for b in doc if _is_structural(b)))


def reject_text(exc: BaseException, doing: str) -> str:
    """The reject-row text of one item's error, or a :class:`~xtalhpc.errors.JobError` raised for an
    error that would fail every item (a missing dependency, a kernel that does not compile, out of
    memory): the rule is :func:`xtalhpc.errors.reject_reason`'s, shared by every batch job."""
    from ..errors import reject_reason

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

    from ..spacegroups import check_space_group

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
    from ..io import iter_structure_files

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


def load_item(man: Manifest, i: int, seed: int, find_symmetry: bool = True, synthetic_special: float = 0.0,
              synthetic_formulas: float = 0.0, formula_table: str | None = None, synthetic_pseudo: float = 0.0,
              synthetic_hydrogen: float = 0.0):
    """The Crystal of item ``i``, or an error text (``synthetic_special``, ``synthetic_formulas``,
    ``formula_table`` (the ``synthetic_prior`` path), ``synthetic_pseudo`` and ``synthetic_hydrogen``: see
    :class:`~xtalhpc.generate.GenerateConfig`)."""
    kind, where, k = man.locate(i)
    if kind == "file":
        entries = read_file_items(man.files[where], find_symmetry)
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
        from ..synth import generate_crystal
    except ImportError as exc:
        raise InputError(f"--synthetic needs xtalhpc.synth.generate_crystal, not available here ({exc})",
                         field="--synthetic") from None
    # a bad formula table is the run's error (InputError), not this crystal's; plan time reads it first
    cfg = _synth_config(synthetic_special, synthetic_formulas, formula_table if synthetic_formulas else None,
                        synthetic_pseudo, synthetic_hydrogen)
    try:
        return generate_crystal(int(where), seed, int(k), cfg)
    except Exception as exc:  # noqa: BLE001 - this crystal's reject row, unless it is a JobError (reject_text)
        return reject_text(exc, f"generating synthetic crystal {i} (space group {where})")


@lru_cache(maxsize=4)
def _synth_config(special: float, formulas: float = 0.0, table: str | None = None, pseudo: float = 0.0,
                  hydrogen: float = 0.0):
    """The synthetic crystals' settings of a run (defaults but for the special-position share,
    the share of real compositions from ``table``, the share of pseudo-symmetric cells and the
    share of molecular crystals with hydrogen, with which the table keeps its hydrogen-bearing
    compositions)."""
    from ..synth import DEFAULT_WEIGHTS, SynthConfig
    from ..synth.elements import HYDROGEN_POOL_ELEMENTS
    from ..synth.formulas import FormulaTable

    if not special and not formulas and not pseudo and not hydrogen:
        return None
    ft = FormulaTable.from_csv(table, HYDROGEN_POOL_ELEMENTS if hydrogen else DEFAULT_WEIGHTS) if formulas else None
    return SynthConfig(special_fraction=special, formula_fraction=formulas, formulas=ft, pseudo_fraction=pseudo,
                       hydrogen_fraction=hydrogen)


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


def enumerate_items(comm, cfg: GenerateConfig) -> Manifest:
    """All ranks: the :class:`Manifest` of ``cfg``: sorted file list (rank 0), block counts (files split
    over ranks), synthetic crystals and their prior."""
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
        if cfg.synthetic_formulas:
            # a bad table fails here, on every rank alike, before any crystal (the same cached object later)
            _synth_config(cfg.synthetic_special, cfg.synthetic_formulas, cfg.synthetic_prior, cfg.synthetic_pseudo,
                          cfg.synthetic_hydrogen)
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

