"""Reading a dataset through its master file, with completeness checks.

A missing shard behind a Virtual Dataset reads as fill values without any
error from HDF5, so :func:`open_dataset` checks the shard table against the
files before handing anything out: every shard listed must exist under its
final name, be complete and match the item counts recorded in the master.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import schema
from .shard import ShardError, shard_info


def resolve_master(path: str | Path) -> Path:
    """``DIR`` or ``DIR/dataset.h5`` -> the master file path."""
    p = Path(path)
    return p / schema.MASTER_NAME if p.is_dir() else p


class Dataset:
    """An open dataset. Use as a context manager or call :meth:`close`.

    Attributes
    ----------
    path : Path
        The master file.
    attrs : dict
        Root attributes (JSON attributes such as ``config`` are decoded).
    two_theta : ndarray
        The 2theta grid in degrees.
    """

    def __init__(self, path: str | Path, *, check: bool = True):
        import h5py

        self.path = resolve_master(path)
        if not self.path.is_file():
            raise ShardError(f"{self.path} does not exist (is the dataset complete? `xtalhpc generate` writes "
                             "dataset.h5 when every shard is done)")
        self._f = h5py.File(self.path, "r")
        a = dict(self._f.attrs)
        if a.get("schema") != schema.SCHEMA_NAME:
            self._f.close()
            raise ShardError(f"{self.path} is not an xtalhpc dataset (schema {a.get('schema')!r})")
        for k in ("config", "instrument", "provenance"):
            if k in a:
                a[k] = json.loads(a[k])
        self.attrs = a
        self.two_theta = self._f["entry/data/two_theta"][()]
        self._offsets = None
        if check:
            problems = self.shard_problems()
            if problems:
                self._f.close()
                raise ShardError(f"{self.path}: " + "; ".join(problems))

    # -- completeness ---------------------------------------------------------
    def shard_table(self) -> dict[str, np.ndarray]:
        t = self._f["entry/shards"]
        out = {k: t[k][()] for k in t}
        out["path"] = np.array([s.decode() for s in out["path"]], dtype=object)
        return out

    def shard_problems(self) -> list[str]:
        """Every reason the shards behind this master are not what it recorded (empty if fine)."""
        problems = []
        t = self.shard_table()
        digest = self.attrs.get("config_digest")
        for i, rel in enumerate(t["path"]):
            try:
                info = shard_info(self.path.parent / rel, expect_digest=digest, expect_index=int(t["index"][i]))
            except ShardError as exc:
                problems.append(str(exc))
                continue
            for k in ("item_start", "item_stop", "n_patterns", "n_rejected", "n_peaks"):
                if getattr(info, k) != int(t[k][i]):
                    problems.append(f"shard {rel}: {k} = {getattr(info, k)} but the master recorded {int(t[k][i])}")
        return problems

    # -- data -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._f["entry/data/pattern"].shape[0])

    @property
    def patterns(self):
        """The (n, n_points) float32 pattern dataset (an h5py Dataset; slice it)."""
        return self._f["entry/data/pattern"]

    def __getitem__(self, name: str):
        return self._f[_where(name)]

    def read(self, name: str) -> np.ndarray:
        """A whole per-pattern array by name (strings decoded to str)."""
        arr = self._f[_where(name)][()]
        if arr.dtype == object:
            arr = np.array([s.decode("utf-8") for s in arr], dtype=object)
        return arr

    def labels(self, name: str) -> np.ndarray:
        """String labels for ``crystal_system``, ``bravais_lattice`` or ``split``."""
        vocab = np.array(schema.VOCABULARIES[name], dtype=object)
        return vocab[self.read(name)]

    @property
    def has_peaks(self) -> bool:
        return bool(self.attrs.get("has_peaks", False))

    def peak_offsets(self) -> np.ndarray:
        counts = self.read("peak_count").astype(np.int64)
        return np.concatenate([[0], np.cumsum(counts)])

    def peaks(self, i: int) -> dict[str, np.ndarray]:
        """The peak list of pattern ``i`` (two_theta, intensity, d, F2, hkl, multiplicity)."""
        if not self.has_peaks:
            raise ShardError(f"{self.path} stores no peak lists (generated with --no-peaks)")
        if self._offsets is None:  # read once: n int32 values
            self._offsets = self.peak_offsets()
        if not 0 <= i < len(self._offsets) - 1:
            raise IndexError(f"pattern {i} out of range 0..{len(self._offsets) - 2}")
        g = self._f["entry/peaks"]
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        return {k: g[k][start:stop] for k in schema.PER_PEAK}

    def rejects(self) -> dict[str, np.ndarray]:
        g = self._f["entry/rejects"]
        out = {"item_index": g["item_index"][()]}
        for k in ("source", "reason"):
            out[k] = np.array([s.decode("utf-8") for s in g[k][()]], dtype=object)
        return out

    def read_all(self) -> dict[str, np.ndarray]:
        """Every per-pattern array plus ``pattern`` (and ``peaks/*``) in memory: small datasets and tests only."""
        out = {"pattern": self.patterns[()]}
        for name in schema.PER_PATTERN:
            out[name] = self.read(name)
        if self.has_peaks:
            for name in schema.PER_PEAK:
                out[f"peaks/{name}"] = self._f[f"entry/peaks/{name}"][()]
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _where(name: str) -> str:
    if name in ("pattern", "two_theta"):
        return f"entry/data/{name}"
    if name in schema.MASTER_GROUP:
        return f"{schema.MASTER_GROUP[name]}/{name}"
    if name.startswith("peaks/"):
        return f"entry/{name}"
    if name.startswith("rejects/"):
        return f"entry/{name}"
    raise KeyError(f"no per-pattern dataset {name!r}; known: pattern, two_theta, "
                   f"{', '.join(schema.MASTER_GROUP)}, peaks/<name>, rejects/<name>")


def open_dataset(path: str | Path, *, check: bool = True) -> Dataset:
    """Open ``DIR`` or ``DIR/dataset.h5``; with ``check`` (default) refuse incomplete shards."""
    return Dataset(path, check=check)
