"""Sharded, self-describing HDF5 datasets of powder patterns (DESIGN.md section 4).

Write shards with :func:`write_shard`, tie them together with
:func:`build_master`, read with :func:`open_dataset`, check with
:func:`verify_dataset`. The schema (names, dtypes, vocabularies) is in
:mod:`xtalhpc.dataset.schema` and described for people in docs/dataset.md.
"""
from __future__ import annotations

from .master import build_master
from .reader import Dataset, open_dataset
from .schema import SCHEMA_NAME, SCHEMA_VERSION
from .shard import ShardData, ShardError, ShardInfo, shard_info, write_shard, write_shard_info
from .verify import VerifyReport, verify_dataset

__all__ = ["Dataset", "SCHEMA_NAME", "SCHEMA_VERSION", "ShardData", "ShardError", "ShardInfo", "VerifyReport",
           "build_master", "open_dataset", "shard_info", "verify_dataset", "write_shard",
           "write_shard_info"]
