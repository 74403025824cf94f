"""Datasets written under an older schema stay readable (people share them): a shard of schema 2
lacks the fields schema 3 added, and readers, verify and the shard check skip exactly those."""
from __future__ import annotations

import h5py
import numpy as np

from xtalhpc.cli import main
from xtalhpc.dataset import schema
from xtalhpc.dataset.reader import open_dataset


def test_fields_by_version():
    assert "absorption" not in schema.per_pattern_fields(1)
    assert "absorption" in schema.per_pattern_fields(2) and "space_group_found" not in schema.per_pattern_fields(2)
    assert schema.per_pattern_fields() == schema.PER_PATTERN


def _downgrade_to_v2(ds):
    """Strip the schema-3 fields from every shard and the master, as a schema-2 writer left them."""
    for p in sorted((ds / "shards").glob("part-*.h5")):
        with h5py.File(p, "r+") as f:
            for k in ("space_group_declared", "space_group_found"):
                del f[k]
            f.attrs["schema_version"] = 2
    with h5py.File(ds / "dataset.h5", "r+") as f:
        for k in ("space_group_declared", "space_group_found"):
            del f[f"{schema.MASTER_GROUP[k]}/{k}"]
        f.attrs["schema_version"] = 2


def test_schema2_dataset_reads_and_verifies(tmp_path):
    ds = tmp_path / "ds"
    assert main(["generate", "--synthetic", "6", "--output", str(ds), "--quiet", "--shard-size", "4"]) == 0
    _downgrade_to_v2(ds)
    with open_dataset(ds) as d:
        arrays = d.read_all()
    assert "space_group_found" not in arrays and np.all(arrays["space_group"] >= 1)
    assert main(["verify", str(ds), "--no-checksums"]) == 0
