"""Writing and checking one shard file.

A shard holds the results of K consecutive input items: the patterns that
were generated and the items that were rejected, so ``n_patterns +
n_rejected == n_items`` for every shard. It is written to
``part-XXXXX.h5.tmp``, its completeness attributes are written last, and only
then is it renamed to ``part-XXXXX.h5``: a shard under its final name is
complete unless the file system lost data afterwards (which the per-dataset
SHA-256 checksums catch).
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import XtalhpcError
from . import schema

#: Largest chunk of pattern rows when a filter is on (unfiltered patterns are contiguous).
#: 16 rows of the 3296-point BT-1 grid are 211 kB uncompressed: big enough for gzip to see
#: structure across patterns (shuffle filter), small enough that random access to one
#: pattern decompresses little. Measured in benchmarks/bench_generate.py (see docs/dataset.md).
PATTERN_CHUNK_ROWS = 16
#: Pattern blocks at least this large are hashed on a helper thread while the shard's
#: HDF5 objects are written (hashlib releases the GIL), when the caller has a core for it
#: (``hash_thread``): SHA-256 of a 256-pattern BT-1 shard takes ~2 ms of the ~6 ms a
#: shard's writing costs. Smaller ones, or any without a spare core, are hashed inline.
THREAD_HASH_BYTES = 1 << 20


class ShardError(XtalhpcError):
    """A shard file that is missing, incomplete, corrupt or from another run."""


@dataclass
class ShardData:
    """Everything one shard stores, as in-memory arrays.

    ``patterns`` is (n, n_points) float32, normalised to max 1 per row;
    ``per_pattern`` maps each name of :data:`schema.PER_PATTERN` to an array of
    length n; ``peaks`` maps each name of :data:`schema.PER_PEAK` to an array of
    length ``peak_count.sum()`` (empty dict when peaks are not stored);
    ``rejects`` maps ``item_index``, ``source``, ``reason`` to arrays.
    """

    index: int
    item_start: int
    item_stop: int
    patterns: np.ndarray
    per_pattern: dict[str, np.ndarray]
    peaks: dict[str, np.ndarray] = field(default_factory=dict)
    rejects: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_patterns(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def n_rejected(self) -> int:
        return int(len(self.rejects.get("item_index", ())))


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's values in a canonical byte form (strings UTF-8, NUL separated)."""
    h = hashlib.sha256()
    if a.dtype == object or a.dtype.kind in "US":
        items = a.reshape(-1).tolist()
        if items:
            try:
                # every string followed by NUL, hashed in one call (the same bytes as one update per string)
                h.update("\0".join(items).encode("utf-8") + b"\0")
            except TypeError:  # not all str (bytes, NumPy scalars): one at a time
                for s in items:
                    h.update(s.encode("utf-8") if isinstance(s, str) else bytes(s))
                    h.update(b"\0")
    else:
        # the array's own buffer (C order), no copy when it is already contiguous
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return h.hexdigest()


class _Sha256Job:
    """:func:`array_sha256` of an array, on a helper thread when ``thread`` (else at once).

    The array must not change until :meth:`result` returns. The digest is the same
    either way; only the wall time differs, when a core is free to overlap it.
    """

    def __init__(self, a: np.ndarray, thread: bool) -> None:
        self._a = a
        self._digest = self._error = None
        self._thread = None
        if thread:
            self._thread = threading.Thread(target=self._run, name="xtalhpc-sha256", daemon=True)
            self._thread.start()
        else:
            self._run()

    def _run(self) -> None:
        try:
            self._digest = array_sha256(self._a)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc

    def result(self) -> str:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


def compression_kwargs(compression: str, level: int | None) -> dict:
    """h5py filter keywords for ``--compression`` (gzip, lzf or none)."""
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4 if level is None else int(level), "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if compression == "none":
        return {}
    raise ValueError(f"compression {compression!r}; allowed: gzip, lzf, none")


def write_shard(directory: str | Path, data: ShardData, *, config_digest: str,
                compression: str = "none", compression_level: int | None = None) -> Path:
    """Write ``data`` as ``DIR/shards/part-XXXXX.h5`` (via ``.tmp`` and an atomic rename); return the final path.

    See :func:`write_shard_info`, which also returns what :func:`shard_info` would read back.
    """
    return write_shard_info(directory, data, config_digest=config_digest, compression=compression,
                            compression_level=compression_level).path


def write_shard_info(directory: str | Path, data: ShardData, *, config_digest: str,
                     compression: str = "none", compression_level: int | None = None,
                     hash_thread: bool = True) -> "ShardInfo":
    """Write ``data`` as ``DIR/shards/part-XXXXX.h5`` (via ``.tmp`` and an atomic rename).

    ``hash_thread``: hash a large pattern block on a helper thread while the other objects
    are written (give False where no core is free for it). Returns the :class:`ShardInfo`
    of the new file, equal to what :func:`shard_info`
    reads back from it (so ``xtalhpc generate`` need not reopen the shards it wrote
    to build the master file). The root attributes ``complete`` (True) and the item
    counts are written after every dataset, so a crash leaves either no final
    file or a ``.tmp`` that the next run deletes.

    The small per-pattern datasets and the attributes go through h5py's low-level
    API (:func:`_small_dataset`, :func:`_attr`): the same HDF5 objects and properties
    as ``create_dataset``/``attrs[...]``, at about half the cost per object, which is
    what a shard of ~30 objects spends most of its writing time on.
    """
    import h5py

    directory = Path(directory)
    final = directory / schema.shard_name(data.index)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + schema.TMP_SUFFIX)
    n, n_points = data.patterns.shape
    comp = compression_kwargs(compression, compression_level)
    sums: dict[str, str] = {}
    with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
        fid = f.id
        pat = np.ascontiguousarray(data.patterns, dtype=np.float32)
        pat_sum = _Sha256Job(pat, thread=hash_thread and pat.nbytes >= THREAD_HASH_BYTES)
        rows = max(1, min(PATTERN_CHUNK_ROWS, n))
        # Unfiltered patterns are stored contiguously (one write; a pattern is one hyperslab read);
        # a filter needs chunks.
        f.create_dataset("patterns", data=pat, **({"chunks": (rows, n_points), **comp} if n and comp else {}))
        for name, (dtype, tail, _) in schema.PER_PATTERN.items():
            arr = np.asarray(data.per_pattern[name])
            if dtype != schema.STR:
                arr = arr.astype(dtype, copy=False)
            if arr.shape != (n, *tail):
                raise ValueError(f"shard {data.index}: {name} has shape {arr.shape}, expected {(n, *tail)}")
            _small_dataset(fid, name, arr, dtype)
            sums[name] = array_sha256(arr)
        if data.peaks:
            g = f.create_group("peaks")
            m = int(np.sum(data.per_pattern["peak_count"]))
            for name, (dtype, tail, _) in schema.PER_PEAK.items():
                arr = np.ascontiguousarray(data.peaks[name], dtype=dtype)
                if arr.shape != (m, *tail):
                    raise ValueError(f"shard {data.index}: peaks/{name} has shape {arr.shape}, expected {(m, *tail)}")
                kw = {"chunks": True, **comp} if m else {}
                g.create_dataset(name, data=arr, **kw)
                sums[f"peaks/{name}"] = array_sha256(arr)
        g = f.create_group("rejects")
        for name in schema.REJECT_FIELDS:
            arr = np.asarray(data.rejects.get(name, np.zeros(0, dtype=np.int64 if name == "item_index" else object)))
            if name == "item_index":
                _small_dataset(g.id, name, arr, np.int64)
            else:
                _small_dataset(g.id, name, arr, schema.STR)
        sums["patterns"] = pat_sum.result()
        for k, v in (("schema", schema.SCHEMA_NAME), ("schema_version", schema.SCHEMA_VERSION),
                     ("shard_index", data.index), ("item_start", data.item_start), ("item_stop", data.item_stop),
                     ("n_points", n_points), ("config_digest", config_digest), ("has_peaks", bool(data.peaks)),
                     ("sha256", schema.canonical_json(sums)), ("n_items", data.item_stop - data.item_start),
                     ("n_patterns", n), ("n_rejected", data.n_rejected),
                     # Written last: readers treat a shard without it as incomplete.
                     ("complete", True)):
            _attr(fid, k, v)
    if n + data.n_rejected != data.item_stop - data.item_start:
        tmp.unlink()
        raise ValueError(f"shard {data.index}: {n} patterns + {data.n_rejected} rejects != "
                         f"{data.item_stop - data.item_start} items")
    os.replace(tmp, final)
    return ShardInfo(path=final, index=int(data.index), item_start=int(data.item_start),
                     item_stop=int(data.item_stop), n_patterns=int(n), n_rejected=int(data.n_rejected),
                     n_points=int(n_points), has_peaks=bool(data.peaks), n_peaks=m if data.peaks else 0,
                     config_digest=str(config_digest), sha256=_json_loads(schema.canonical_json(sums)))


@lru_cache(maxsize=None)
def _file_type(dtype):
    """HDF5 file type of a schema dtype (as ``create_dataset(dtype=...)`` makes it)."""
    from h5py import h5t

    return h5t.py_create(schema.h5_dtype(dtype), logical=True)


@lru_cache(maxsize=1)
def _dcpl():
    """Dataset creation properties of h5py's ``create_dataset`` without chunks or filters."""
    import h5py
    from h5py import h5p

    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # h5py's default track_times=False
    if h5py.get_config().track_order is False:
        dcpl.set_attr_creation_order(0)
    elif h5py.get_config().track_order is True:
        dcpl.set_attr_creation_order(h5p.CRT_ORDER_TRACKED | h5p.CRT_ORDER_INDEXED)
    return dcpl


def _small_dataset(parent_id, name: str, arr: np.ndarray, dtype) -> None:
    """``parent.create_dataset(name, data=arr, dtype=h5_dtype(dtype))`` (contiguous, unfiltered), low level."""
    from h5py import h5d, h5s

    if dtype == schema.STR:
        arr = np.asarray(arr.astype(object, copy=False), dtype=_str_dtype(), order="C")
    else:
        arr = np.ascontiguousarray(arr, dtype=dtype)
    dsid = h5d.create(parent_id, name.encode("ascii"), _file_type(dtype), h5s.create_simple(arr.shape),
                      dcpl=_dcpl())
    dsid.write(h5s.ALL, h5s.ALL, arr)
    dsid.close()


def _attr(obj_id, name: str, value) -> None:
    """``obj.attrs[name] = value`` for a new attribute (str, bool or int), low level.

    Same types as h5py's: a str becomes a scalar variable-length UTF-8 string, a bool
    h5py's enum, an int an 8-byte integer.
    """
    from h5py import h5a

    is_str = isinstance(value, str)
    data = np.asarray(value, dtype=_str_dtype(None) if is_str else None, order="C")
    ftype, mtype, space = _attr_types(is_str, data.dtype, data.shape)
    attr = h5a.create(obj_id, name.encode("ascii"), ftype, space)
    attr.write(data, mtype=mtype)
    attr.close()


@lru_cache(maxsize=None)
def _str_dtype(encoding="utf-8"):
    """h5py's variable-length string dtype (``string_dtype()`` when ``encoding`` is None, as ``attrs`` uses)."""
    import h5py

    return h5py.string_dtype() if encoding is None else h5py.string_dtype(encoding)


@lru_cache(maxsize=None)
def _attr_types(is_str: bool, dtype, shape):
    """File type, memory type and dataspace of an attribute, as ``AttributeManager.create`` makes them.

    ``is_str`` is part of the key: NumPy compares h5py's string dtype equal to a plain object dtype.
    """
    from h5py import h5s, h5t

    return h5t.py_create(dtype, logical=True), h5t.py_create(dtype), h5s.create_simple(shape)


@dataclass(frozen=True)
class ShardInfo:
    """What a shard's root attributes say about it."""

    path: Path
    index: int
    item_start: int
    item_stop: int
    n_patterns: int
    n_rejected: int
    n_points: int
    has_peaks: bool
    n_peaks: int
    config_digest: str
    sha256: dict


def shard_info(path: str | Path, *, expect_digest: str | None = None, expect_index: int | None = None) -> ShardInfo:
    """Open a shard and check it is complete; raise :class:`ShardError` otherwise.

    Checks: the file opens as HDF5, has the schema name, ``complete`` is set,
    ``n_patterns + n_rejected == n_items``, dataset lengths match the counts,
    and (when given) the config digest and shard index match. Checksums are
    not recomputed here (see :func:`check_shard_checksums`).
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise ShardError(f"shard file {p} is missing")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise ShardError(f"shard {p} cannot be opened as HDF5 (truncated or corrupt?): {exc}") from None
    with f:
        a = f.attrs
        if a.get("schema") != schema.SCHEMA_NAME:
            raise ShardError(f"shard {p} has schema {a.get('schema')!r}, expected {schema.SCHEMA_NAME!r}")
        if not bool(a.get("complete", False)):
            raise ShardError(f"shard {p} is incomplete (no 'complete' attribute)")
        try:
            info = ShardInfo(
                path=p, index=int(a["shard_index"]), item_start=int(a["item_start"]),
                item_stop=int(a["item_stop"]), n_patterns=int(a["n_patterns"]), n_rejected=int(a["n_rejected"]),
                n_points=int(a["n_points"]), has_peaks=bool(a["has_peaks"]),
                n_peaks=int(f["peaks/two_theta"].shape[0]) if "peaks" in f else 0,
                config_digest=str(a["config_digest"]), sha256=_json_loads(a["sha256"]))
            if info.n_patterns + info.n_rejected != info.item_stop - info.item_start \
                    or int(a["n_items"]) != info.item_stop - info.item_start:
                raise ShardError(f"shard {p}: {info.n_patterns} patterns + {info.n_rejected} rejects "
                                 f"!= {info.item_stop - info.item_start} items")
            lengths = {"patterns": f["patterns"].shape[0], "rejects": f["rejects/item_index"].shape[0]}
            lengths.update({k: f[k].shape[0] for k in schema.per_pattern_fields(a.get("schema_version", 1))})
            bad = {k: v for k, v in lengths.items()
                   if v != (info.n_rejected if k == "rejects" else info.n_patterns)}
            if bad:
                raise ShardError(f"shard {p}: dataset lengths {bad} disagree with the counts in its attributes")
            if info.has_peaks and info.n_peaks != int(np.sum(f["peak_count"][:])):
                raise ShardError(f"shard {p}: {info.n_peaks} peak rows but peak_count sums to "
                                 f"{int(np.sum(f['peak_count'][:]))}")
        except KeyError as exc:
            raise ShardError(f"shard {p} lacks {exc}") from None
    if expect_index is not None and info.index != expect_index:
        raise ShardError(f"shard {p} says it is shard {info.index}, expected {expect_index}")
    if expect_digest is not None and info.config_digest != expect_digest:
        raise ShardError(f"shard {p} was written with another generation config "
                         f"(digest {info.config_digest[:12]}, expected {expect_digest[:12]})")
    return info


def _json_loads(s):
    import json

    return json.loads(s)


def check_shard_checksums(path: str | Path) -> list[str]:
    """Recompute every dataset's SHA-256; return a list of mismatches (empty if all match)."""
    import h5py

    problems = []
    try:
        with h5py.File(path, "r") as f:
            sums = _json_loads(f.attrs["sha256"])
            for name, want in sums.items():
                try:
                    arr = f[name][()]
                except (OSError, KeyError) as exc:
                    problems.append(f"{path}: {name} cannot be read: {exc}")
                    continue
                if isinstance(arr, np.ndarray) and arr.dtype == object:
                    arr = np.array([s.decode("utf-8") if isinstance(s, bytes) else s for s in arr], dtype=object)
                got = array_sha256(np.asarray(arr))
                if got != want:
                    problems.append(f"{path}: {name} checksum {got[:12]} != stored {want[:12]}")
    except (OSError, KeyError) as exc:
        problems.append(f"{path}: cannot be read: {exc}")
    return problems
