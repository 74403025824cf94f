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
        self._bounds: dict[str, np.ndarray] = {}
        if check:
            problems = self.shard_problems()
            if problems:
                self._f.close()
                shown = problems[:3] + ([f"... and {len(problems) - 3} more shards like these"]
                                        if len(problems) > 3 else [])
                raise ShardError(f"{self.path}: " + "; ".join(shown))

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
        """The (n, n_points) float32 pattern dataset (an h5py Dataset; slice it).

        A slice spanning more shards than the process can open files reads fill
        values (NaN) silently, and the object keeps every shard it touched open;
        :meth:`read` splits, re-opens and checks for you.
        """
        return self._f["entry/data/pattern"]

    def __getitem__(self, name: str):
        return self._f[_where(name)]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of a per-pattern (or ``peaks/*``) array by name; strings decoded.

        Reads through the Virtual Dataset at most :data:`MAX_SHARDS_PER_READ`
        shards at a time, each block through a freshly opened dataset, and
        raises :class:`ShardError` on any fill value: when HDF5 cannot open a
        source file (e.g. one h5py read spanning 2000 shards under ``ulimit -n
        1024``, measured) it returns fill values *without an error*, and an h5py
        Dataset object keeps every shard it has read from open until it is closed.
        """
        path = _where(name)
        # No handle may stay open across the blocks: HDF5 shares one list of open
        # source files among all open handles of a VDS and closes it with the last.
        n = self._f[path].shape[0]
        stop = n if stop is None else min(stop, n)
        per_peak = name.startswith("peaks/")
        bounds = self._row_bounds(per_peak)
        span = _shards_per_read()
        parts = []
        a = start
        while a < stop:
            j = int(np.searchsorted(bounds, a, side="right"))  # first shard boundary after a
            b = min(stop, int(bounds[min(len(bounds) - 1, j - 1 + span)]))
            b = max(b, a + 1)
            # A fresh handle per block, dropped right after: HDF5 keeps every source
            # file a VDS has touched open until its last handle closes.
            parts.append(self._f[path][a:b])
            a = b
        arr = np.concatenate(parts) if parts else self._f[path][start:stop]
        short = name.split("/", 1)[1] if per_peak else name
        fill = (schema.PER_PEAK if per_peak else {"pattern": (np.float32, (), np.nan), **schema.PER_PATTERN})[short][2]
        if arr.dtype == object:
            arr = np.array([s.decode("utf-8") for s in arr], dtype=object)
            bad = np.flatnonzero(arr == "")
        elif fill is not None and isinstance(fill, float) and np.isnan(fill):
            bad = np.flatnonzero(np.isnan(arr.reshape(len(arr), -1)).any(axis=1))
        else:
            bad = np.flatnonzero((arr.reshape(len(arr), -1) == fill).any(axis=1))
        if bad.size:
            raise ShardError(f"{self.path}: {name} rows {start + int(bad[0])}.. read as the VDS fill value: a shard "
                             "is missing or could not be opened (too many open files? see `ulimit -n`)")
        return arr

    def _row_bounds(self, per_peak: bool) -> np.ndarray:
        """Row offsets where each shard's rows begin (and the end), for patterns or peak rows."""
        key = "peaks" if per_peak else "patterns"
        if key not in self._bounds:
            t = self._f["entry/shards"]
            counts = t["n_peaks" if per_peak else "n_patterns"][()]
            self._bounds[key] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._bounds[key]

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
        out = {"pattern": self.read("pattern")}
        for name in schema.per_pattern_fields(self._f.attrs.get("schema_version", 1)):
            out[name] = self.read(name)
        if self.has_peaks:
            for name in schema.PER_PEAK:
                out[f"peaks/{name}"] = self.read(f"peaks/{name}")
        return out

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Most shards one h5py read through a Virtual Dataset may span (see Dataset.read).
MAX_SHARDS_PER_READ = 64


def _shards_per_read() -> int:
    """Shards per VDS read: :data:`MAX_SHARDS_PER_READ`, fewer under a low open-file limit."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_SHARDS_PER_READ
    # keep half of what is left after the interpreter's own files (~40) for HDF5
    return max(1, min(MAX_SHARDS_PER_READ, (soft - 40) // 2))


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
