"""``xtalhpc generate``: simulate patterns for many structures into a sharded HDF5 dataset.

How the work is cut and shared (DESIGN.md section 5), and which module owns each part:

* **Config** (:mod:`.config`). :class:`GenerateConfig`, typed and self-validating; its digest
  fields (everything that changes the bytes) identify the dataset.
* **Items** (:mod:`.items`). The inputs are enumerated deterministically before any work:
  the structure files (sorted by path) and, inside each file, its structure blocks in file
  order (CSV structure lists name files and may give labels); then the synthetic crystals,
  if asked for (optionally following a space-group prior). Each block is one *item* with a
  global index; a file that cannot be read at all is one item (rejected). Anything random
  about item i derives from ``(seed, i)``.
* **Shards** (:mod:`.shard`). Shard s holds items ``[s*K, (s+1)*K)``: shard count and content
  depend on the inputs and the shard size K only, never on the number of ranks.
* **Scheduling** (:mod:`.schedule`). Dynamic: rank 0 keeps the queue of shards still to do
  and answers requests from the other ranks between its own sub-batches, so one slow shard
  (structure costs differ 1000x) never holds up the rest. With one rank it is a plain loop.
* **Writing** (:mod:`.writer`). Shard s + 1 computes while shard s is written on a background
  thread, where the rank has a core to spare.
* **The run** (:mod:`.run`). Rank 0 checks and locks the output (:class:`xtalhpc.job.OutputDir`),
  writes the resolved config ``generate.json``, and after the loop the master file and
  ``last-run.json``. **Resume:** a shard is written as ``part-XXXXX.h5.tmp`` and renamed when
  complete; rerunning the same command computes only the shards missing under their final
  names; a different config is refused.
* **Launching** (:mod:`.mpi`). ``xtalhpc generate --ranks N`` outside any MPI world re-launches
  itself under ``mpiexec -n N``; under ``srun --mpi=pmi2`` it uses the world it finds; ``srun``
  without a PMI plugin (N singletons) is detected and refused.
"""
from __future__ import annotations

from .config import (DEFAULT_SHARD_SIZE, FILE_CACHE, JOB, LOCK_NAME, META_MEMO, POLL_INTERVAL_S, RUN_STATS_NAME,
                     SYNC_WRITE_ENV, THROTTLE_ENV, GenerateConfig, config_to_argv, resolve_instrument)
from .items import (CSV_LABEL_COLUMNS, CSV_PATH_COLUMNS, PRIOR_COLUMNS, Manifest, count_items, enumerate_items,
                    item_source_id, list_files, load_item, read_file_items, read_structure_list, space_group_prior,
                    tempered_prior)
from .mpi import (MPIEnvironmentError, SerialComm, get_comm, in_mpi_world, mpiexec_path, relaunch, slurm_ntasks,
                  stop_all_ranks)
from .run import RunPlan, RunSummary, ShardLoop, plan_run, prepare_output, run_generate
from .schedule import Coordinator, ShardProgress, Worker, first_shard
from .shard import ShardTimes, compute_shard, group_key_fn, warm_up
from .writer import (MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD, ShardWriter, background_writes, spare_cores,
                     tune_malloc, write_threads)

# The names the tests have used since generate was one module.
_enumerate = enumerate_items
_group_key_fn = group_key_fn
_tune_malloc = tune_malloc

__all__ = [
    "CSV_LABEL_COLUMNS", "CSV_PATH_COLUMNS", "DEFAULT_SHARD_SIZE", "FILE_CACHE", "JOB", "LOCK_NAME",
    "MALLOC_MMAP_THRESHOLD", "MALLOC_TRIM_THRESHOLD", "META_MEMO", "MPIEnvironmentError", "Manifest",
    "POLL_INTERVAL_S", "PRIOR_COLUMNS", "RUN_STATS_NAME", "SYNC_WRITE_ENV", "THROTTLE_ENV", "Coordinator",
    "GenerateConfig", "RunPlan", "RunSummary", "SerialComm", "ShardLoop", "ShardProgress", "ShardTimes",
    "ShardWriter", "Worker", "background_writes", "compute_shard", "config_to_argv", "count_items",
    "enumerate_items", "first_shard", "get_comm", "group_key_fn", "in_mpi_world", "item_source_id", "list_files",
    "load_item", "mpiexec_path", "plan_run", "prepare_output", "read_file_items", "read_structure_list",
    "relaunch", "resolve_instrument", "run_generate", "slurm_ntasks", "space_group_prior", "spare_cores",
    "stop_all_ranks", "tempered_prior", "tune_malloc", "warm_up", "write_threads",
]
