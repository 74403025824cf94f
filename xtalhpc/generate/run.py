"""The generate job on every rank: plan the run, prepare and lock the output (rank 0), compute
the shards (:mod:`.schedule`, :mod:`.shard`, :mod:`.writer`), then build the master file and the
summary (rank 0).

**Resume.** A shard is written as ``part-XXXXX.h5.tmp`` and renamed when complete. Rerunning the
same command computes only the shards missing under their final names; a different config
(digest of everything that changes the bytes) is refused, naming what changed. The resolved
config is ``OUTPUT/generate.json``; ``OUTPUT/generate.lock`` guards against a second run.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..dataset import schema
from ..errors import InputError, XtalhpcError
from ..job import Log, OutputDir, write_atomic
from .config import JOB, POLL_INTERVAL_S, RUN_STATS_NAME, THROTTLE_ENV, GenerateConfig, config_to_argv, \
    resolve_instrument
from .items import Manifest, enumerate_items
from .mpi import SerialComm, stop_all_ranks
from .schedule import Coordinator, ShardProgress, Worker
from .shard import ShardTimes, compute_shard, group_key_fn, warm_up
from .writer import ShardWriter, cpu_seconds, peak_rss_kb, tune_malloc, write_threads


@dataclass
class RunSummary:
    n_items: int
    n_patterns: int
    n_rejected: int
    n_shards: int
    shards_computed: int
    wall_s: float
    ranks: int
    times: dict
    master: str


@dataclass
class RunPlan:
    """What every rank knows before the work: the instrument, the items, the record whose digest
    identifies the dataset (``generate.json``), and the set-up times."""

    instrument: object
    man: Manifest
    key_method: str
    key_fn: object
    record: dict
    digest: str
    throttle: float
    t_warm: float
    t_enum: float

    @property
    def n_items(self) -> int:
        return self.man.n_items

    @property
    def n_shards(self) -> int:
        return self.record["n_shards"]


def run_generate(cfg: GenerateConfig, comm=None, *, log_stream=None, quiet: bool = False) -> RunSummary | None:
    """Generate (or resume) the dataset of ``cfg`` on the ranks of ``comm``.

    Every rank calls this; rank 0 returns the :class:`RunSummary`, the others None.
    An error that only some ranks meet ends every rank (:func:`stop_all_ranks`); bad
    input found before the work is decided on rank 0 and raised on every rank alike.
    """
    comm = comm or SerialComm()
    held: list[OutputDir] = []  # the locked output, released however the run ends
    log = Log(JOB, log_stream or sys.stderr, enabled=comm.rank == 0 and not quiet)
    try:
        return _run(cfg, comm, log, held)
    except InputError:
        raise
    except Exception as exc:
        stop_all_ranks(comm, exc)
        raise
    finally:
        for out in held:
            out.unlock()


def _run(cfg: GenerateConfig, comm, log: Log, held: list) -> RunSummary | None:
    t_start = time.perf_counter()
    plan = plan_run(cfg, comm)
    todo, known = _decide(cfg, comm, plan, log, held)
    log(f"{plan.n_items} input items ({len(plan.man.files)} files, {plan.man.synthetic} synthetic"
        f"{', cycled' if cfg.cycle_to else ''}) -> {plan.n_shards} shards of {cfg.shard_size}; "
        f"{plan.n_shards - len(todo)} already complete, {len(todo)} to compute on {comm.size} rank(s); "
        f"instrument {plan.instrument.name} ({plan.instrument.n_points} points)")
    loop = ShardLoop(cfg, comm, plan, ShardProgress(len(todo), log))
    stats = loop.run(todo, known)
    if comm.rank != 0:
        return None
    summary = _finish(cfg, comm, plan, known, stats, len(todo), t_start, loop.t_compute, log)
    for out in held:
        out.unlock()
    return summary


def plan_run(cfg: GenerateConfig, comm) -> RunPlan:
    """All ranks: load the kernels, enumerate the items, and compute the dataset's record and digest."""
    tune_malloc()
    instrument = resolve_instrument(cfg)
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    t = time.perf_counter()
    warm_up(instrument, cfg.device, cfg.peaks)
    t_warm = time.perf_counter() - t
    t = time.perf_counter()
    man = enumerate_items(comm, cfg)
    t_enum = time.perf_counter() - t
    key_method, key_fn = group_key_fn()
    n_items = man.n_items
    record = {
        "schema": schema.SCHEMA_NAME, "schema_version": schema.SCHEMA_VERSION, "xtalhpc_version": __version__,
        "config": cfg.digest_fields(), "instrument": instrument.to_dict(), "group_key_method": key_method,
        "manifest_digest": man.digest(), "n_items": n_items, "n_files": len(man.files),
        "n_shards": -(-n_items // cfg.shard_size),
    }
    digest = schema.digest(record)
    record["config_digest"] = digest
    record["device"] = cfg.device
    return RunPlan(instrument, man, key_method, key_fn, record, digest, throttle, t_warm, t_enum)


def _decide(cfg: GenerateConfig, comm, plan: RunPlan, log: Log, held: list) -> tuple[list[int], dict]:
    """Rank 0 checks the inputs and prepares the output; the shards to do (or the error) go to every
    rank, so all stop alike. Returns them and, on rank 0, the ShardInfo of the complete ones."""
    decision = None
    known: dict = {}  # rank 0: shard index -> ShardInfo, for the master file (no need to reopen those shards)
    if comm.rank == 0:
        try:
            if plan.n_items == 0:
                raise InputError(f"the sources {list(cfg.sources)} hold no structure file", field="sources")
            if cfg.synthetic:
                try:
                    from ..synth import generate_crystal  # noqa: F401
                except ImportError as exc:
                    raise InputError(f"--synthetic needs xtalhpc.synth.generate_crystal, not available here ({exc})",
                                     field="--synthetic") from None
            out = OutputDir(cfg.output, JOB, holds="a dataset generated with another config")
            held.append(out)
            todo, done = prepare_output(out, plan.digest, plan.record, plan.n_shards, log)
            known.update((i.index, i) for i in done)
            decision = ("ok", todo)
        except XtalhpcError as exc:
            decision = ("error", exc)
    decision = comm.bcast(decision)
    if decision[0] == "error":
        raise decision[1]
    return decision[1], known


def prepare_output(out: OutputDir, digest: str, record: dict, n_shards: int, log) -> tuple[list[int], list]:
    """Rank 0: check an existing output against this config, lock it, write the resolved config,
    clean leftovers, list shards still to do.

    Returns the shards to do and the :class:`~xtalhpc.dataset.ShardInfo` of those already complete.
    """
    if out.check_empty_or_ours(schema.CONFIG_NAME):
        old = out.read_json(schema.CONFIG_NAME)
        extra = []
        if old.get("manifest_digest") != record["manifest_digest"]:
            extra.append("the input files (list, sizes or block counts)")
        for k in ("instrument", "group_key_method", "xtalhpc_version", "schema_version"):
            if schema.canonical_json(old.get(k)) != schema.canonical_json(record[k]):
                extra.append(k if k == "instrument" else f"{k} {old.get(k)!r} -> {record[k]!r}")
        out.refuse_other_config(schema.CONFIG_NAME, old.get("config", {}), record["config"], extra=extra,
                                differ=old.get("config_digest") != digest)
    (out.path / schema.SHARD_DIR).mkdir(parents=True, exist_ok=True)
    out.lock()
    out.write_text(schema.CONFIG_NAME, json.dumps(record, indent=2, default=schema._json_default) + "\n")
    for p in sorted((out.path / schema.SHARD_DIR).glob("*" + schema.TMP_SUFFIX)):
        log(f"removing {p.name}: left by an interrupted run")
        p.unlink()
    return _shards_to_do(out.path, n_shards, digest, log)


def _shards_to_do(out: Path, n_shards: int, digest: str, log) -> tuple[list[int], list]:
    """The shards missing (or damaged: removed) under their final names, and the infos of the others."""
    from ..dataset import ShardError, shard_info

    todo, done = [], []
    for s in range(n_shards):
        p = out / schema.shard_name(s)
        if not p.exists():
            todo.append(s)
            continue
        try:
            done.append(shard_info(p, expect_digest=digest, expect_index=s))
        except ShardError as exc:
            if "another generation config" in str(exc):
                raise InputError(str(exc) + "; choose a new --output", str(p)) from None
            log(f"recomputing {p.name}: {exc}")
            p.unlink()
            todo.append(s)
    return todo, done


class ShardLoop:
    """One rank's part of the work: compute its shards (rank 0 coordinating the others between its
    own sub-batches), hand each to the writer, report it, and gather every rank's statistics."""

    def __init__(self, cfg: GenerateConfig, comm, plan: RunPlan, progress: ShardProgress):
        self.cfg, self.comm, self.plan, self.progress = cfg, comm, plan, progress
        self.times = ShardTimes()
        self.memo: dict = {}
        self.sub_state: dict = {}
        self.t_wait = 0.0
        self.t_compute = 0.0
        self.n_mine = 0
        self.background, self.hash_thread = write_threads(comm)
        self.writer = ShardWriter(self._write, self.background)

    def _write(self, data):
        """Write one shard (on the writer thread); returns (ShardInfo, seconds)."""
        from ..dataset import write_shard_info

        cfg = self.cfg
        t1 = time.perf_counter()
        info = write_shard_info(cfg.output, data, config_digest=self.plan.digest, compression=cfg.compression,
                                compression_level=cfg.compression_level, hash_thread=self.hash_thread)
        return info, time.perf_counter() - t1

    def _do_shard(self, s: int, t0: float, between=None, sub_batch_s=None):
        """Compute shard s and queue its write; returns the previous shard's (tag, (info, seconds)),
        its tag being (index, patterns, rejects, compute seconds)."""
        plan = self.plan
        data, tm = compute_shard(s, self.cfg, plan.man, plan.instrument, key_fn=plan.key_fn, memo=self.memo,
                                 sub_state=self.sub_state if between is not None else None,
                                 between=between, sub_batch_s=sub_batch_s)
        self.times.add(tm)
        if plan.throttle:
            time.sleep(plan.throttle)
        return self.writer.submit((s, data.n_patterns, data.n_rejected, time.perf_counter() - t0), data)

    def _finished(self, done, report) -> None:
        """Account a shard whose write has completed and report it."""
        if done is None:
            return
        (s, n_pat, n_rej, compute_s), (info, write_s) = done
        self.times.write += write_s
        report(s, info, dict(shard=s, rank=self.comm.rank, n_patterns=n_pat, n_rejected=n_rej,
                             seconds=compute_s + write_s))

    def _coordinate(self, todo: list[int], known: dict) -> None:
        """Rank 0: compute shards from the queue, answering the workers between sub-batches."""
        comm = self.comm
        coord = Coordinator(comm, todo, self.progress)

        def report0(s, info, msg):
            known[s] = info
            self.progress.shard_done(**msg)

        coord.poll()
        while (s := coord.take()) is not None:
            self._finished(self._do_shard(s, time.perf_counter(), between=coord.poll if comm.size > 1 else None,
                                          sub_batch_s=POLL_INTERVAL_S if comm.size > 1 else None), report0)
            self.n_mine += 1
            coord.poll()
        self._finished(self.writer.wait(), report0)
        t = time.perf_counter()
        coord.drain()
        self.t_wait += time.perf_counter() - t
        known.update(coord.infos)

    def _work(self, todo: list[int]) -> None:
        """Ranks > 0: compute the shards rank 0 assigns until it says there are none left."""
        worker = Worker(self.comm, todo)

        def report_w(s, info, msg):
            worker.report(info=info, **msg)

        while True:
            t = time.perf_counter()
            s = worker.next()
            self.t_wait += time.perf_counter() - t
            if s is None:
                break
            self._finished(self._do_shard(s, time.perf_counter()), report_w)
            self.n_mine += 1
        self._finished(self.writer.wait(), report_w)

    def run(self, todo: list[int], known: dict) -> list | None:
        """Every rank: do its shards; returns every rank's statistics on rank 0 (None elsewhere)."""
        comm = self.comm
        t_loop = time.perf_counter()
        try:
            if comm.rank == 0:
                self._coordinate(todo, known)
            else:
                self._work(todo)
        except Exception as exc:
            stop_all_ranks(comm, exc)
            raise
        finally:
            self.writer.close()
        self.t_compute = time.perf_counter() - t_loop
        return comm.gather({"rank": comm.rank, "shards": self.n_mine, "times": dataclasses.asdict(self.times),
                            "background_writes": self.background, "hash_thread": self.hash_thread,
                            "wait": self.t_wait, "compute_wall": self.t_compute, "peak_rss_kb": peak_rss_kb(),
                            "cpu_s": cpu_seconds()})


def _finish(cfg: GenerateConfig, comm, plan: RunPlan, known: dict, stats: list, n_todo: int, t_start: float,
            t_compute: float, log: Log) -> RunSummary:
    """Rank 0: the master file over every shard, the closing log line, and ``last-run.json``."""
    from ..dataset import build_master, shard_info

    t = time.perf_counter()
    # Shards written or checked during this run are known (their writers' ShardInfo); any other
    # shard, or one whose file has gone since, is opened and checked here.
    infos = []
    for s in range(plan.n_shards):
        p = Path(cfg.output) / schema.shard_name(s)
        info = known.get(s)
        infos.append(info if info is not None and p.is_file()
                     else shard_info(p, expect_digest=plan.digest, expect_index=s))
    n_pat = sum(i.n_patterns for i in infos)
    n_rej = sum(i.n_rejected for i in infos)
    n_items = plan.n_items
    if n_pat + n_rej != n_items:
        raise XtalhpcError(f"generated {n_pat} + rejected {n_rej} != inputs {n_items}: a shard lost items")
    wall = time.perf_counter() - t_start
    build_master(cfg.output, infos, two_theta=plan.instrument.two_theta,
                 attrs=_master_attrs(cfg, plan, comm.size, wall))
    t_master = time.perf_counter() - t
    master = Path(cfg.output) / schema.MASTER_NAME
    log(f"generated {n_pat} + rejected {n_rej} = {n_pat + n_rej} of {n_items} inputs "
        f"({'OK' if n_pat + n_rej == n_items else 'MISMATCH'}); master {master}")
    agg = ShardTimes()
    for st in stats:
        agg.add(ShardTimes(**st["times"]))
    summary = RunSummary(n_items=n_items, n_patterns=n_pat, n_rejected=n_rej, n_shards=plan.n_shards,
                         shards_computed=n_todo, wall_s=time.perf_counter() - t_start, ranks=comm.size,
                         times={"warm_up": plan.t_warm, "enumerate": plan.t_enum, "master": t_master,
                                "compute_wall": t_compute, "per_rank": stats, "sum": dataclasses.asdict(agg)},
                         master=str(master))
    # Where the time and memory of this run went (per rank), for benchmarks and post-mortems.
    write_atomic(Path(cfg.output) / RUN_STATS_NAME,
                 json.dumps(dataclasses.asdict(summary), indent=1, default=schema._json_default) + "\n")
    return summary


def _master_attrs(cfg: GenerateConfig, plan: RunPlan, ranks: int, wall: float) -> dict:
    """The master file's attributes: config, digest, instrument, vocabularies, provenance."""
    instrument, man = plan.instrument, plan.man
    provenance = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(), "numpy": np.__version__,
        "h5py": _version("h5py"), "numba": _version("numba"), "mpi4py": _version("mpi4py"),
        "ranks": ranks, "device": cfg.device, "command": f"xtalhpc {JOB} " + " ".join(config_to_argv(cfg)),
        "generate_wall_s_last_run": round(wall, 3),
    }
    return {
        "xtalhpc_version": __version__, "config": json.dumps(plan.record["config"], default=schema._json_default),
        "config_digest": plan.digest, "instrument": json.dumps(instrument.to_dict()),
        "instrument_name": instrument.name, "radiation": instrument.radiation,
        "wavelength_angstrom": instrument.wavelength, "seed": cfg.seed,
        "n_items": plan.n_items, "n_files": len(man.files), "manifest_digest": man.digest(),
        "group_key_method": plan.key_method,
        "split_fractions": json.dumps(None if cfg.split is None else dict(zip(("train", "val", "test"), cfg.split))),
        "normalisation": "each pattern divided by its maximum (stored as scale), so max = 1",
        "units": json.dumps(schema.UNITS),
        "vocabularies": json.dumps({k: list(v) for k, v in schema.VOCABULARIES.items()}),
        "provenance": json.dumps(provenance),
    }


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return "absent"
