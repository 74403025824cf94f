"""The on-disk schema of an xtalhpc powder-pattern dataset: names, dtypes, vocabularies.

A dataset is a directory::

    DIR/dataset.h5            master file: Virtual Datasets over the shards + metadata
    DIR/generate.json         the resolved generation config (also inside dataset.h5)
    DIR/shards/part-00000.h5  shard 0: items [0, K) of the input
    DIR/shards/part-00001.h5  ...

Every name, dtype and vocabulary of the format lives here so that the writer
(:mod:`.shard`, :mod:`.master`), the reader (:mod:`.reader`) and ``xtalhpc
verify`` cannot drift apart. ``docs/dataset.md`` describes the same schema
for people; bump :data:`SCHEMA_VERSION` on any incompatible change.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from ..spacegroups import BRAVAIS_LATTICES, CRYSTAL_SYSTEMS

SCHEMA_NAME = "xtalhpc.powder-dataset"
#: 2: per-pattern ``absorption`` (barn per formula unit), issue 17.
#: 3: per-pattern ``space_group_declared`` and ``space_group_found`` (issue 18).
SCHEMA_VERSION = 3

MASTER_NAME = "dataset.h5"
CONFIG_NAME = "generate.json"
SHARD_DIR = "shards"
SHARD_PATTERN = "part-{:05d}.h5"
TMP_SUFFIX = ".tmp"

#: Split vocabulary; ``split`` datasets hold indices into it.
SPLITS: tuple[str, ...] = ("train", "val", "test", "unassigned")
#: Default split fractions (train, val, test) assigned by hashing the structure-type
#: group key, so every member of a group lands in the same split (no leakage).
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)

#: Per-pattern datasets of a shard: name -> (dtype, trailing shape, fill value in the
#: master's Virtual Dataset). The fill values are impossible values, so a reader
#: that ever sees one knows a shard was missing behind the VDS.
STR = "str"
PER_PATTERN: dict[str, tuple[object, tuple[int, ...], object]] = {
    "item_index": (np.int64, (), -1),
    "space_group": (np.int16, (), -1),
    "space_group_declared": (np.int16, (), -1),
    "space_group_found": (np.int16, (), -1),
    "crystal_system": (np.int8, (), -1),
    "bravais_lattice": (np.int8, (), -1),
    "split": (np.int8, (), -1),
    "scale": (np.float64, (), np.nan),
    "lattice": (np.float64, (6,), np.nan),
    "n_atoms": (np.int32, (), -1),
    "absorption": (np.float64, (), np.nan),
    "peak_count": (np.int32, (), -1),
    "source_id": (STR, (), None),
    "formula": (STR, (), None),
    "group_key": (STR, (), None),
}
#: Per-peak (ragged) datasets; pattern i owns rows
#: ``offsets[i]:offsets[i+1]`` with ``offsets = concat([0], cumsum(peak_count))``.
PER_PEAK: dict[str, tuple[object, tuple[int, ...], object]] = {
    "two_theta": (np.float32, (), np.nan),
    "intensity": (np.float32, (), np.nan),
    "d": (np.float32, (), np.nan),
    "F2": (np.float32, (), np.nan),
    "hkl": (np.int16, (3,), -32768),
    "multiplicity": (np.int16, (), -1),
}
REJECT_FIELDS = ("item_index", "source", "reason")
#: Schema version that added each per-pattern dataset (absent: version 1). Readers of
#: an older dataset skip the fields it cannot have: shared datasets stay readable.
ADDED_IN = {"absorption": 2, "space_group_declared": 3, "space_group_found": 3}


def per_pattern_fields(version: int | None = None) -> dict[str, tuple[object, tuple[int, ...], object]]:
    """The per-pattern datasets a dataset of schema ``version`` holds (None: the current one)."""
    v = SCHEMA_VERSION if version is None else int(version)
    return {k: spec for k, spec in PER_PATTERN.items() if ADDED_IN.get(k, 1) <= v}

#: Where each per-pattern dataset sits in the master file.
MASTER_GROUP = {
    "space_group": "entry/labels", "crystal_system": "entry/labels",
    "space_group_declared": "entry/labels", "space_group_found": "entry/labels",
    "bravais_lattice": "entry/labels", "split": "entry/labels",
    "item_index": "entry/items", "scale": "entry/items", "lattice": "entry/items",
    "n_atoms": "entry/items", "absorption": "entry/items", "peak_count": "entry/peaks", "source_id": "entry/items",
    "formula": "entry/items", "group_key": "entry/items",
}
UNITS = {
    "pattern": "1 (normalised: max = 1; raw = pattern * scale)",
    "scale": "fm^2 (max of the raw pattern: m |F|^2 L summed over profiles, b in fm)",
    "lattice": "angstrom, angstrom, angstrom, degree, degree, degree",
    "absorption": ("barn per formula unit: neutron absorption cross-section at the first wavelength "
                   "(2200 m/s value x lambda / 1.798 A); NaN for X-rays"),
    "two_theta": "degree",
    "peaks/two_theta": "degree",
    "peaks/intensity": "fm^2 (integrated: m |F|^2 L; same units as scale)",
    "peaks/d": "angstrom",
    "peaks/F2": "fm^2 (|F|^2 per reflection of the family, neutron)",
}
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "crystal_system": CRYSTAL_SYSTEMS,
    "bravais_lattice": BRAVAIS_LATTICES,
    "split": SPLITS,
}


def shard_name(index: int) -> str:
    """Relative path of shard ``index`` inside a dataset directory."""
    return f"{SHARD_DIR}/{SHARD_PATTERN.format(index)}"


def h5_dtype(dtype):
    """The h5py dtype of a schema dtype (UTF-8 variable-length for strings)."""
    import h5py

    return h5py.string_dtype("utf-8") if dtype == STR else np.dtype(dtype)


def fallback_group_key(formula: str, space_group: int) -> str:
    """Structure-type group key used while ``xtalhpc.curate.structure_type_key`` is absent.

    Reduced formula plus space group: polymorphs stay apart, the same compound
    in the same group (duplicates, different temperatures) stays together.
    """
    return f"{formula}|{space_group}"


def assign_split(group_key: str, fractions: tuple[float, float, float] | None) -> int:
    """Index into :data:`SPLITS` for a group key.

    The first 8 bytes of SHA-256(group key) give a uniform number u in [0, 1);
    u < train -> train, u < train + val -> val, else test. The same key always
    lands in the same split, independent of order, ranks or the rest of the data.
    ``fractions=None`` gives ``unassigned``.
    """
    if fractions is None:
        return SPLITS.index("unassigned")
    u = int.from_bytes(hashlib.sha256(group_key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    train, val, _ = fractions
    if u < train:
        return 0
    if u < train + val:
        return 1
    return 2


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace: the form digests are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def digest(obj) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
