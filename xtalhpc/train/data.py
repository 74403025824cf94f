"""Training data: labels and split from the master file, batches streamed from the shards.

* :func:`load_training_data` opens a dataset (refusing missing or incomplete shards, like
  every reader), checks it has what training needs (space-group labels 1-230, a split with
  train and validation rows) and keeps the small per-pattern arrays in memory: labels of
  each head and the split (a few bytes per pattern). Patterns stay on disk.
* :class:`EpochPlan`: which rows each rank reads at each step of an epoch.
  The rows of a split are cut into *chunks* of ``read_chunk`` consecutive rows (one
  contiguous HDF5 read each); an epoch is a permutation of the chunks, seeded by
  (seed, epoch), flattened to a sequence of rows; step g takes the next
  world_size x batch_size rows of that sequence and gives rank r the r-th of
  world_size near-equal parts. Every row of the split is read exactly once per epoch
  across the ranks (the last step is short), every rank runs the same number of steps
  (DDP needs that), and the plan depends only on (seed, epoch, world size, batch size),
  so a resumed run reads what an uninterrupted one would have read (DistributedSampler
  semantics without its padding).
* :class:`StepDataset`: a map-style torch Dataset whose item (epoch, step) is this rank's
  whole batch: it reads the rows in contiguous runs through the master's Virtual Dataset
  (each DataLoader worker opens its own h5py handle; a fresh dataset handle per batch, so
  HDF5 does not keep every shard it ever touched open), refuses fill values (a shard that
  vanished after the start), augments training batches (:mod:`.augment`, seeded by
  (seed, epoch, step, rank)) and normalises them with :func:`xtalhpc.preprocess.prepare_input`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import schema
from ..dataset.reader import open_dataset, resolve_master
from ..dataset.shard import ShardError
from ..errors import InputError
from ..preprocess import Normalisation, prepare_input
from ..spacegroups import BRAVAIS_LATTICES, CRYSTAL_SYSTEMS, extinction_group_names, extinction_groups
from .config import HEADS, AugmentConfig

SPLIT_CODES = {name: i for i, name in enumerate(schema.SPLITS)}


def head_vocabularies() -> dict[str, list[str]]:
    """Class names of each head, in label-index order."""
    return {"space_group": [str(n) for n in range(1, 231)], "crystal_system": list(CRYSTAL_SYSTEMS),
            "bravais_lattice": list(BRAVAIS_LATTICES), "extinction_group": list(extinction_group_names())}


def _extinction_lookup() -> np.ndarray:
    table = np.full(231, -1, dtype=np.int64)
    for i, members in enumerate(extinction_groups()):
        table[list(members)] = i
    return table


@dataclass
class TrainingData:
    """What training needs from a dataset, in memory (patterns stay on disk).

    Attributes
    ----------
    master : Path of ``dataset.h5``. n : patterns. two_theta : the grid (degrees).
    wavelength : angstrom. instrument : the instrument record (dict). digest : config and
    manifest digests and counts (the model file's ``dataset`` entry).
    labels : head -> int64 class indices (n,). split : int8 split codes (n,).
    """

    master: Path
    n: int
    two_theta: np.ndarray
    wavelength: float
    instrument: dict
    digest: dict
    labels: dict[str, np.ndarray]
    split: np.ndarray

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLIT_CODES[split]).astype(np.int64)

    def class_counts(self, head: str, split: str = "train") -> np.ndarray:
        return np.bincount(self.labels[head][self.rows(split)], minlength=HEADS[head])


def load_training_data(path: str | Path, require_split: bool = True) -> TrainingData:
    """Open ``DIR`` (or ``DIR/dataset.h5``) for training; InputError naming the file and field if unusable.

    ``require_split=False`` (evaluation) accepts a dataset without train or validation rows
    (one generated with ``--split none`` holds only ``unassigned`` ones)."""
    master = resolve_master(path)
    try:
        ds = open_dataset(master)
    except ShardError as exc:
        raise InputError(f"cannot train on it: {exc}", str(master)) from None
    except OSError as exc:
        raise InputError(f"cannot open it as HDF5: {exc}", str(master)) from None
    with ds:
        n = len(ds)
        if n == 0:
            raise InputError("the dataset holds no patterns", str(master), "entry/data/pattern")
        try:
            sg = ds.read("space_group").astype(np.int64)
            split = ds.read("split").astype(np.int8)
        except KeyError as exc:
            raise InputError(f"no labels: {exc}", str(master), "entry/labels") from None
        except ShardError as exc:
            raise InputError(str(exc), str(master), "entry/labels") from None
        bad = np.flatnonzero((sg < 1) | (sg > 230))
        if bad.size:
            raise InputError(f"{bad.size} patterns have no space-group label in 1-230 (row {int(bad[0])}: "
                             f"{int(sg[bad[0]])}); training needs every pattern labelled",
                             str(master), "entry/labels/space_group")
        counts = {name: int(np.sum(split == code)) for name, code in SPLIT_CODES.items()}
        if require_split and (counts["train"] == 0 or counts["val"] == 0):
            raise InputError(f"the split has {counts['train']} train and {counts['val']} val patterns; training "
                             "needs both (generate with --split TRAIN,VAL,TEST, or `xtalhpc split`)",
                             str(master), "entry/labels/split")
        from ..spacegroups import bravais_lattice, crystal_system

        cs_of = np.array([0] + [CRYSTAL_SYSTEMS.index(crystal_system(k)) for k in range(1, 231)], dtype=np.int64)
        bl_of = np.array([0] + [BRAVAIS_LATTICES.index(bravais_lattice(k)) for k in range(1, 231)], dtype=np.int64)
        labels = {"space_group": sg - 1, "crystal_system": cs_of[sg], "bravais_lattice": bl_of[sg],
                  "extinction_group": _extinction_lookup()[sg]}
        a = ds.attrs
        inst = a.get("instrument", {})
        wl = a.get("wavelength_angstrom")
        digest = {"config_digest": str(a.get("config_digest", "")), "manifest_digest": str(a.get("manifest_digest", "")),
                  "n_patterns": n, "splits": counts, "path": str(master.resolve())}
        return TrainingData(master=master, n=n, two_theta=np.asarray(ds.two_theta, dtype=np.float64),
                            wavelength=float(wl) if wl is not None else float("nan"),
                            instrument=inst if isinstance(inst, dict) else {}, digest=digest,
                            labels=labels, split=split)


def class_weights(counts: np.ndarray, power: float, cap: float) -> np.ndarray:
    """Per-class loss weights (n_c / mean n)^-power, capped at ``cap`` and scaled so that the
    average weight over the training patterns is 1; classes absent from training get 0."""
    counts = np.asarray(counts, dtype=float)
    present = counts > 0
    w = np.zeros_like(counts)
    if power == 0 or not present.any():
        w[present] = 1.0
        return w
    mean = counts[present].mean()
    w[present] = np.minimum((counts[present] / mean) ** (-power), cap)
    w *= counts.sum() / float((w * counts).sum())
    return w


class EpochPlan:
    """The rows each rank reads at each step of an epoch (see the module docstring)."""

    def __init__(self, rows: np.ndarray, *, chunk: int, batch_size: int, world_size: int, seed: int,
                 shuffle: bool):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.chunk = int(chunk)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        ids = self.rows // self.chunk
        self._starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1, [len(self.rows)]])
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.rows) / self.global_batch))

    def order(self, epoch: int) -> np.ndarray:
        """All rows of the split in the order epoch ``epoch`` reads them."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if not self.shuffle:
            out = self.rows
        else:
            n_chunks = len(self._starts) - 1
            perm = np.random.default_rng([self.seed, int(epoch), 0x5EED]).permutation(n_chunks)
            lens = np.diff(self._starts)[perm]
            starts = self._starts[:-1][perm]
            idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
            out = self.rows[idx]
        self._cache = (int(epoch), out)
        return out

    def batch(self, epoch: int, step: int, rank: int) -> np.ndarray:
        """Rows of rank ``rank`` at step ``step`` of epoch ``epoch`` (may be short or empty at the last step)."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside 0..{self.steps_per_epoch - 1}")
        order = self.order(epoch)
        g = order[step * self.global_batch:(step + 1) * self.global_batch]
        return np.array_split(g, self.world_size)[rank]


class StepDataset:
    """Map-style dataset: item ``(epoch, step)`` is this rank's whole batch as a dict of arrays:
    ``x`` (b, channels, n) float32, ``rows`` (b,) int64, and one int64 label array per head."""

    def __init__(self, data: TrainingData, plan: EpochPlan, *, rank: int, heads, normalisation: Normalisation,
                 augment: AugmentConfig | None, seed: int):
        self.master = str(data.master)
        self.two_theta = data.two_theta
        self.labels = {h: data.labels[h] for h in heads}
        self.plan = plan
        self.rank = int(rank)
        self.normalisation = normalisation
        self.augment_cfg = augment if (augment is not None and augment.enabled) else None
        self.seed = int(seed)
        self._augmenter = None
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return self.plan.steps_per_epoch

    def _handle(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            # one handle per process: a handle inherited through fork is not safe to use
            self._file = h5py.File(self.master, "r")
            self._pid = os.getpid()
        return self._file

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Patterns of ``rows`` (any order), read in contiguous runs; ShardError on fill values."""
        n_points = self.two_theta.size
        out = np.empty((len(rows), n_points), dtype=np.float32)
        if len(rows) == 0:
            return out
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        ds = self._handle()["entry/data/pattern"]  # fresh dataset handle per batch
        pos = 0
        buf = np.empty((len(rows), n_points), dtype=np.float32)
        for run in np.split(srt, breaks):
            a, b = int(run[0]), int(run[-1]) + 1
            ds.read_direct(buf, np.s_[a:b], np.s_[pos:pos + (b - a)])
            pos += b - a
        del ds
        out[order] = buf
        if np.isnan(out).any():
            bad = rows[np.flatnonzero(np.isnan(out).any(axis=1))[0]]
            raise ShardError(f"{self.master}: pattern row {int(bad)} read as the VDS fill value: a shard is "
                             "missing or could not be opened (run `xtalhpc verify`; too many open files?)")
        return out

    def __getitem__(self, key):
        epoch, step = key
        rows = self.plan.batch(epoch, step, self.rank)
        x = self.read_rows(rows)
        mask = None
        if self.augment_cfg is not None:
            if self._augmenter is None:
                from .augment import BatchAugmenter

                self._augmenter = BatchAugmenter(self.augment_cfg, self.two_theta)
            rng = np.random.default_rng([self.seed, int(epoch), int(step), self.rank, 0xA06])
            x, mask = self._augmenter(x, rng)
        inp = prepare_input(x, self.two_theta, self.normalisation, mask)
        out = {"x": inp, "rows": rows}
        for h, lab in self.labels.items():
            out[h] = lab[rows]
        return out

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_file"] = None
        d["_pid"] = None
        return d


class StepSampler:
    """Yields ``(epoch, step)`` from a start position for ``total`` steps, epoch after epoch."""

    def __init__(self, steps_per_epoch: int, start_epoch: int, start_step: int, total: int):
        self.spe = int(steps_per_epoch)
        self.start_epoch = int(start_epoch)
        self.start_step = int(start_step)
        self.total = int(total)

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        e, s = self.start_epoch, self.start_step
        for _ in range(self.total):
            yield (e, s)
            s += 1
            if s == self.spe:
                e, s = e + 1, 0


def make_loader(dataset: StepDataset, sampler, workers: int):
    """A DataLoader over whole batches (``batch_size=None``), ``workers`` processes each with its own h5py handle."""
    import torch

    kw = {}
    if workers > 0:
        kw = {"num_workers": workers, "prefetch_factor": 2, "persistent_workers": False}
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, **kw)
