"""The master file ``DIR/dataset.h5``: Virtual Datasets over the shards plus metadata.

Shard paths inside the Virtual Datasets are relative (``shards/part-00000.h5``);
HDF5 resolves them against the master file's directory, so the dataset
directory can be moved or copied as a whole. The master also holds what is
small and global: the 2theta axis, vocabularies, configs, the rejects table
(copied, not virtual) and a table of shards with their item ranges and
checksums, which readers and ``xtalhpc verify`` use to check completeness.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import schema
from .shard import ShardInfo


def build_master(directory: str | Path, shards: list[ShardInfo], *, two_theta: np.ndarray, attrs: dict) -> Path:
    """Write ``DIR/dataset.h5`` over the complete shards ``shards`` (in shard order).

    ``attrs`` are stored on the root group (strings, numbers, or JSON text for
    nested values). Written to ``dataset.h5.tmp`` and renamed.
    """
    import h5py
    from h5py import h5d, h5p, h5s, h5t

    directory = Path(directory)
    shards = sorted(shards, key=lambda s: s.index)
    final = directory / schema.MASTER_NAME
    tmp = final.with_name(final.name + schema.TMP_SUFFIX)
    n_points = len(two_theta)
    n = sum(s.n_patterns for s in shards)
    has_peaks = bool(shards) and all(s.has_peaks for s in shards)
    n_peaks = sum(s.n_peaks for s in shards) if has_peaks else 0

    def rel(s: ShardInfo) -> str:
        return schema.shard_name(s.index)

    def virtual(group, name: str, src_name: str, dtype, tail: tuple, fill, total: int, count) -> None:
        # What h5py.VirtualLayout / VirtualSource / create_virtual_dataset make (one regular hyperslab
        # of the virtual space per shard, the whole source dataset), through the low-level calls:
        # h5py's per-mapping Python costs ~40 us, times 13 datasets x hundreds of shards.
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_layout(h5d.VIRTUAL)
        vspace = h5s.create_simple((total, *tail))
        src_bytes = src_name.encode("utf-8")
        zeros = (0,) * len(tail)
        pos = 0
        for s in shards:
            k = count(s)
            if k:
                vspace.select_hyperslab((pos, *zeros), (k, *tail))
                dcpl.set_virtual(vspace, os.fsencode(rel(s)), src_bytes, h5s.create_simple((k, *tail)))
                pos += k
        if fill is not None:
            dcpl.set_fill_value(np.array([fill]))
        h5d.create(group.id, name=name.encode("utf-8"), tid=h5t.py_create(schema.h5_dtype(dtype), logical=1),
                   space=h5s.create_simple((total, *tail)), dcpl=dcpl)

    with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["schema"] = schema.SCHEMA_NAME
        f.attrs["schema_version"] = schema.SCHEMA_VERSION
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        entry.attrs["definition"] = schema.SCHEMA_NAME

        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "pattern"
        data.attrs["axes"] = np.array([".", "two_theta"], dtype=h5py.string_dtype())
        data.attrs["two_theta_indices"] = np.int32(1)
        tt = data.create_dataset("two_theta", data=np.asarray(two_theta, dtype=np.float64))
        tt.attrs["units"] = "degree"
        tt.attrs["long_name"] = "2theta (degree)"
        virtual(data, "pattern", "patterns", np.float32, (n_points,), np.nan, n, lambda s: s.n_patterns)
        data["pattern"].attrs["units"] = schema.UNITS["pattern"]
        data["pattern"].attrs["long_name"] = "normalised intensity"

        for name, (dtype, tail, fill) in schema.PER_PATTERN.items():
            gname = schema.MASTER_GROUP[name]
            g = f.require_group(gname)
            g.attrs["NX_class"] = "NXcollection"
            virtual(g, name, name, dtype, tail, fill, n, lambda s: s.n_patterns)
            if name in schema.VOCABULARIES:
                g[name].attrs["vocabulary"] = json.dumps(list(schema.VOCABULARIES[name]))
            if name in schema.UNITS:
                g[name].attrs["units"] = schema.UNITS[name]
        if has_peaks:
            g = f["entry/peaks"]
            for name, (dtype, tail, fill) in schema.PER_PEAK.items():
                virtual(g, name, f"peaks/{name}", dtype, tail, fill, n_peaks, lambda s: s.n_peaks)
                if f"peaks/{name}" in schema.UNITS:
                    g[name].attrs["units"] = schema.UNITS[f"peaks/{name}"]
        f["entry/peaks"].attrs["stored"] = has_peaks

        vocab = entry.create_group("vocabularies")
        vocab.attrs["NX_class"] = "NXcollection"
        for name, words in schema.VOCABULARIES.items():
            vocab.create_dataset(name, data=np.array(words, dtype=object), dtype=h5py.string_dtype())

        rej = entry.create_group("rejects")
        rej.attrs["NX_class"] = "NXcollection"
        cols: dict[str, list] = {k: [] for k in schema.REJECT_FIELDS}
        for s in shards:
            if not s.n_rejected:  # its rejects table is empty (shard_info checked its length)
                continue
            with h5py.File(directory / rel(s), "r") as sf:
                for k in schema.REJECT_FIELDS:
                    v = sf[f"rejects/{k}"][()]
                    cols[k].extend(v.tolist() if k == "item_index" else [x.decode("utf-8") for x in v])
        rej.create_dataset("item_index", data=np.array(cols["item_index"], dtype=np.int64))
        for k in ("source", "reason"):
            rej.create_dataset(k, data=np.array(cols[k], dtype=object), dtype=h5py.string_dtype())

        tab = entry.create_group("shards")
        tab.attrs["NX_class"] = "NXcollection"
        tab.create_dataset("path", data=np.array([rel(s) for s in shards], dtype=object),
                           dtype=h5py.string_dtype())
        for k in ("index", "item_start", "item_stop", "n_patterns", "n_rejected", "n_peaks"):
            tab.create_dataset(k, data=np.array([getattr(s, k) for s in shards], dtype=np.int64))
        tab.create_dataset("sha256", data=np.array([schema.canonical_json(s.sha256) for s in shards], dtype=object),
                           dtype=h5py.string_dtype())

        f.attrs["n_patterns"] = n
        f.attrs["n_rejected"] = len(cols["item_index"])
        f.attrs["n_shards"] = len(shards)
        f.attrs["has_peaks"] = has_peaks
    os.replace(tmp, final)
    return final
