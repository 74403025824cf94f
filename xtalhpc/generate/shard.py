"""Computing one shard: load its items, simulate them, decide which rows are kept, compute the
labels, normalise each pattern by its maximum, and gather the per-pattern and peak arrays.

Shard s holds items ``[s*K, (s+1)*K)``: shard count and content depend on the inputs and the shard
size K only, never on the number of ranks or on how rank 0 cuts its shards into sub-batches.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ..dataset import schema
from ..errors import XtalhpcError
from .config import META_MEMO, POLL_INTERVAL_S, GenerateConfig
from .items import Manifest, item_source_id, load_item, reject_text

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


def group_key_fn():
    """``xtalhpc.curate.structure_type_key`` if installed, else the formula|space-group fallback."""
    try:
        from ..curate.splits import structure_type_key  # noqa: F401

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
                schema.assign_split(key, split), c.space_group_declared or 0, c.space_group_found or 0)
    except Exception as exc:  # noqa: BLE001 - one structure's problem becomes its reject row (reject_text)
        return reject_text(exc, "computing the labels and structure-type key")


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
    from ..dataset import ShardData

    k = cfg.shard_size
    start, stop = index * k, min((index + 1) * k, man.n_items)
    times = ShardTimes()
    t = time.perf_counter()
    crystals, items, rejects = _load_items(cfg, man, start, stop, between, sub_batch_s)
    times.read = time.perf_counter() - t
    results = _simulate_sub_batches(crystals, items, cfg, instrument, times, between, sub_batch_s, sub_state)

    t = time.perf_counter()
    if memo is None:
        memo = {}  # still shared by the sub-batches of this shard
    recs, kept_items, kept = _keep_rows(results, crystals, items, cfg, man, instrument, key_fn, memo, rejects)
    per_arr = _per_pattern_arrays(recs, kept_items, kept, cfg.peaks)
    peaks = _peak_arrays(kept) if cfg.peaks else {}
    rejects.sort()
    data = ShardData(
        index=index, item_start=start, item_stop=stop, patterns=_normalise(kept, len(recs), instrument.n_points),
        per_pattern=per_arr, peaks=peaks,
        rejects={"item_index": np.array([r[0] for r in rejects], dtype=np.int64),
                 "source": np.array([r[1] for r in rejects], dtype=object),
                 "reason": np.array([r[2] for r in rejects], dtype=object)})
    times.post = time.perf_counter() - t
    return data, times


def _load_items(cfg: GenerateConfig, man: Manifest, start: int, stop: int, between, sub_batch_s):
    """The crystals of items ``[start, stop)`` (deuterated if asked), their item indices, and the
    reject rows ``(item, file, reason)`` of those that could not be read or have no space group."""
    from ..curate.hd import deuterate

    crystals, items, rejects = [], [], []
    last_poll = time.perf_counter()
    for i in range(start, stop):
        if between is not None and time.perf_counter() - last_poll > (sub_batch_s or POLL_INTERVAL_S):
            between()  # reading structures can take as long as simulating them: keep answering
            last_poll = time.perf_counter()
        obj = load_item(man, i, cfg.seed, cfg.find_symmetry, cfg.synthetic_special, cfg.synthetic_formulas,
                        cfg.synthetic_prior, cfg.synthetic_pseudo, cfg.synthetic_hydrogen)
        if isinstance(obj, str):
            rejects.append((i, item_source_id(man, i, cfg.seed)[1], obj))
        elif obj.space_group is None:
            rejects.append((i, item_source_id(man, i, cfg.seed)[1],
                            f"{obj.source or obj.name}: no space group (the label); the reader could not determine it"))
        else:
            crystals.append(deuterate(obj) if cfg.deuterate else obj)
            items.append(i)
    return crystals, items, rejects


def _simulate_sub_batches(crystals, items, cfg: GenerateConfig, instrument, times: ShardTimes, between, sub_batch_s,
                          sub_state) -> list:
    """``[(positions in crystals, BatchResult), ...]``: one batch, unless rank 0 must poll
    (``between``), which then simulates in sub-batches of about ``sub_batch_s`` seconds. ``items``: the
    crystals' item indices (their textures with ``--texture``)."""
    from ..simulate import simulate_batch
    from ..texture import item_texture

    k = cfg.shard_size
    results = []
    pos = 0
    # Rank 0 with workers: start from the sub-batch size that fitted the last shard.
    step = len(crystals) if not sub_batch_s else (sub_state or {}).get("step", 1)
    while pos < len(crystals):
        sel = list(range(pos, min(len(crystals), pos + step)))
        t = time.perf_counter()
        tex = [item_texture(cfg.seed, items[j], cfg.texture) for j in sel] if cfg.texture else None
        res = simulate_batch([crystals[j] for j in sel], instrument, device=cfg.device, on_error="collect",
                             peaks=cfg.peaks, texture=tex)
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
    return results


def _records(sel, items, crystals, man: Manifest, seed: int, memo: dict) -> list:
    """The :class:`_ItemRecord` of each simulated crystal of a sub-batch, from ``memo`` where known."""
    n_file, n_base = man.n_file_items, man.n_base
    rec_of = []
    for j in sel:
        i = items[j]
        b = i % n_base  # file blocks recur when cycled; synthetic crystals depend on i itself
        mkey = b if b < n_file else ("synthetic", i)
        rec = memo.get(mkey)
        if rec is None:
            rec = _ItemRecord(man, i, seed, crystals[j])
            if len(memo) >= META_MEMO:
                memo.pop(next(iter(memo)))
            memo[mkey] = rec
        rec_of.append(rec)
    return rec_of


def _keep_rows(results, crystals, items, cfg: GenerateConfig, man: Manifest, instrument, key_fn, memo: dict,
               rejects: list):
    """Decide, row by row, which simulated patterns the shard keeps (adding the H background where
    asked); the others become reject rows. Returns the kept rows' records and item indices, and
    per sub-batch ``(result, rows kept, their scales)``."""
    from ..curate.hd import incoherent_background_level

    h_bg = cfg.h_background and instrument.radiation == "neutron"
    recs: list[_ItemRecord] = []  # per kept pattern
    kept_items: list[int] = []
    kept: list[tuple[object, list[int], np.ndarray]] = []
    for sel, res in results:
        ok = np.asarray(res.ok, dtype=bool)
        rec_of = _records(sel, items, crystals, man, cfg.seed, memo)
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
            why = _row_reject(rec, crystals[sel[r]], bool(ok[r]), good[r], res.errors.get(r, "simulation failed"),
                              cfg, instrument, key_fn)
            if why is not None:
                rejects.append((i, rec.fname, why))
                continue
            rows.append(r)
            recs.append(rec)
            kept_items.append(i)
        kept.append((res, rows, row_max[rows]))
    return recs, kept_items, kept


def _row_reject(rec: _ItemRecord, c, ok: bool, good: bool, error: str, cfg: GenerateConfig, instrument,
                key_fn) -> str | None:
    """The reject reason of one simulated row, or None to keep it (filling its record's
    absorption and labels on first need)."""
    if not good:
        if not ok:
            return error
        return f"{rec.sid}: {_no_intensity_reason(instrument)}"
    why = _absorption_reject(rec, c, instrument, cfg.max_absorption)
    if why:
        return f"{rec.sid}: {why}"
    if rec.meta is None:
        rec.meta = _item_meta(c, key_fn, cfg.split)
    if isinstance(rec.meta, str):
        return f"{rec.sid}: no structure-type key: {rec.meta}"
    return None


def _normalise(kept, n: int, n_points: int) -> np.ndarray:
    """The kept rows divided by their maxima, as the shard's ``(n, n_points)`` float32 block.

    Each sub-batch in one pass, straight into the shard's float32 rows, in the rows' own
    precision: float64 rows give the bits of "divide in float64, then astype(float32)"; float32
    rows (the simulator's) give the same bits too, since a float32 quotient equals the float64
    quotient of the same operands rounded to float32 (double rounding is innocuous for division:
    53 >= 2*24+2), at a third of the cost of dividing by the float64 scales.
    """
    patterns = np.empty((n, n_points), dtype=np.float32)
    pos = 0
    for res, rows, sc in kept:
        if rows:
            p = res.patterns if len(rows) == len(res.patterns) else res.patterns[rows]
            np.divide(p, sc[:, None], out=patterns[pos:pos + len(rows)], casting="unsafe")
            pos += len(rows)
    return patterns


def _per_pattern_arrays(recs, kept_items, kept, peaks: bool) -> dict:
    """The schema's per-pattern arrays (:data:`xtalhpc.dataset.schema.PER_PATTERN`) of the kept rows."""
    n = len(recs)
    metas = [rec.meta for rec in recs]
    per_arr = {
        "item_index": np.array(kept_items, dtype=np.int64),
        "space_group": np.array([m[0] for m in metas], dtype=np.int16),
        "space_group_declared": np.array([m[6] for m in metas], dtype=np.int16),
        "space_group_found": np.array([m[7] for m in metas], dtype=np.int16),
        "crystal_system": np.array([m[1] for m in metas], dtype=np.int8),
        "bravais_lattice": np.array([m[2] for m in metas], dtype=np.int8),
        "split": np.array([m[5] for m in metas], dtype=np.int8),
        "scale": (np.concatenate([sc for _, _, sc in kept]) if kept else np.zeros(0)).astype(np.float64, copy=False),
        "lattice": np.array([rec.cell for rec in recs], dtype=np.float64).reshape(n, 6),
        "n_atoms": np.array([rec.n_atoms for rec in recs], dtype=np.int32),
        "absorption": np.array([rec.absorption for rec in recs], dtype=np.float64).reshape(n),
        "peak_count": (np.concatenate([np.diff(res.peak_offsets)[rows] for res, rows, _ in kept]).astype(np.int32)
                       if peaks and kept else np.zeros(n, dtype=np.int32)),
        "source_id": np.array([rec.sid for rec in recs], dtype=object).reshape(n),
        "formula": np.array([m[3] for m in metas], dtype=object).reshape(n),
        "group_key": np.array([m[4] for m in metas], dtype=object).reshape(n),
    }
    if per_arr.keys() != schema.PER_PATTERN.keys():  # the schema grew a field this writer does not fill
        raise XtalhpcError(f"compute_shard fills {sorted(per_arr)}, the schema has {sorted(schema.PER_PATTERN)}")
    return per_arr


def _peak_arrays(kept) -> dict:
    """The ragged reflection lists of the kept rows (:data:`xtalhpc.dataset.schema.PER_PEAK`)."""
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
    peaks = {}
    for name, (dtype, tail, _) in schema.PER_PEAK.items():
        parts = pk[name]
        peaks[name] = (np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *tail), dtype=dtype))
    return peaks


def _no_intensity_reason(instrument) -> str:
    """The reject reason of a pattern without coherent intensity on the grid."""
    return (f"no intensity on the 2theta grid: no reflection with |F|^2 > 0 in "
            f"{instrument.two_theta_min}-{instrument.two_theta_max} deg (d >= {instrument.d_min:.4f} A)")


def _absorption_reject(rec: _ItemRecord, c, instrument, max_absorption: float | None) -> str | None:
    """Fill ``rec.absorption`` (barn per formula unit at the instrument's wavelength; NaN for
    X-rays) and return the reject reason when it exceeds ``max_absorption`` (None: no limit)."""
    from ..scattering import absorption_per_formula_unit

    if rec.absorption is None:
        rec.absorption = (absorption_per_formula_unit(c, instrument.wavelength) if instrument.radiation == "neutron"
                          else float("nan"))
    if max_absorption is not None and rec.absorption > max_absorption:
        return (f"absorption cross-section {rec.absorption:.6g} barn per formula unit ({c.formula}) at "
                f"{instrument.wavelength:g} A exceeds --max-absorption {max_absorption:g}")
    return None


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
    from ..crystal import Crystal, symmetrize
    from ..simulate import simulate_batch
    from ..spacegroups import standard_operations

    c = symmetrize(Crystal([4.0, 4.0, 4.0, 90.0, 90.0, 90.0], [[0.0, 0.0, 0.0]], ["Fe"], [1.0], [0.5], name="warm-up"),
                   standard_operations(221))
    simulate_batch([c], instrument, device=device, on_error="raise", peaks=peaks)

