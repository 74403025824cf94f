"""``xtalhpc generate``: structures -> sharded HDF5 dataset, on N MPI ranks."""
from __future__ import annotations

import argparse
import os
import platform

from ..dataset import schema
from ..job import DEFAULT_MAX_REJECT_FRACTION

#: Shown in --help without importing the generator (kept equal to generate.DEFAULT_SHARD_SIZE by a test).
DEFAULT_SHARD_SIZE_TEXT = "256"
#: Rejects listed in the closing summary (all of them are in the master file's /entry/rejects).
SUMMARY_REJECTS = 20


def _split(text: str):
    if text.lower() in ("none", "unassigned"):
        return None
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 'TRAIN,VAL,TEST' fractions or 'none'") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three fractions TRAIN,VAL,TEST")
    return parts


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate", help="simulate patterns for many structures into a sharded HDF5 dataset (MPI)",
        description="Simulate powder patterns for every input structure into DIR/shards/part-*.h5 and a master "
                    "DIR/dataset.h5 (Virtual Datasets). Rerunning the same command resumes an interrupted run. "
                    "On a workstation --ranks N re-launches under mpiexec; under Slurm use "
                    "`srun --mpi=pmi2 xtalhpc generate ...` (see slurm/generate.sbatch).")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="structure files, directories or globs (CIF, .ncmat, POSCAR, CSV structure lists)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset directory (created)")
    p.add_argument("-i", "--instrument", default="bt1-cu311",
                   help="instrument preset, TOML file or file.toml:name (default: bt1-cu311)")
    p.add_argument("--radiation", default=None, choices=("neutron", "xray"),
                   help="override the instrument's radiation (default: the instrument's)")
    p.add_argument("-n", "--ranks", type=int, default=None, metavar="N",
                   help="MPI ranks; outside an MPI world N > 1 re-launches under mpiexec (default: the world found, "
                        "else 1)")
    p.add_argument("-k", "--shard-size", type=int, default=None, metavar="K",
                   help=f"input items per shard (default {DEFAULT_SHARD_SIZE_TEXT})")
    p.add_argument("--seed", type=int, default=0, help="root seed; item i uses (seed, i) (default 0)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="simulation backend")
    p.add_argument("--compression", default="none", choices=("none", "gzip", "lzf"),
                   help="filter for patterns and peak lists, with byte shuffle (default none: gzip saves ~27%% "
                        "of the bytes for 35-50%% more time; see docs/dataset.md)")
    p.add_argument("--compression-level", type=int, default=None, metavar="L", help="gzip level 1-9 (default 4)")
    p.add_argument("--peaks", action=argparse.BooleanOptionalAction, default=False,
                   help="store ragged reflection lists so patterns can be re-rendered (default: no; they "
                        "take more room than the patterns)")
    p.add_argument("--split", type=_split, default=schema.DEFAULT_SPLIT_FRACTIONS, metavar="TRAIN,VAL,TEST",
                   help="split fractions assigned by hashing the structure-type group key, or 'none' "
                        "(default 0.8,0.1,0.1)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="add N synthetic crystals (xtalhpc.synth), spread over space groups 1-230")
    p.add_argument("--per-space-group", action="store_true", help="with --synthetic: N per space group")
    p.add_argument("--synthetic-prior", metavar="CSV", default=None,
                   help="with --synthetic N: draw the space groups with the frequencies of this table's "
                        "space-group column (e.g. an ICSD export), instead of cycling through 1-230")
    p.add_argument("--synthetic-prior-power", type=float, default=1.0, metavar="P",
                   help="with --synthetic-prior: draw group g with weight count_g**P (1: the table's frequencies, "
                        "0.5: square root, 0: every group of the table equally; default 1)")
    p.add_argument("--synthetic-special", type=float, default=0.0, metavar="F",
                   help="with --synthetic N: draw this share of the crystals with atoms on special Wyckoff "
                        "positions (small orbits more likely, the general position not preferred), as most real "
                        "high-symmetry structures are; each is checked to have exactly its group "
                        "(docs/synthetic.md; default 0)")
    p.add_argument("--synthetic-formulas", type=float, default=0.0, metavar="F",
                   help="with --synthetic-prior: draw this share of the crystals with one of the real compositions "
                        "the table lists for their space group (its formula column; elements and atom ratios "
                        "only, no positions), on Wyckoff orbits that give the formula times Z "
                        "(docs/synthetic.md; default 0)")
    p.add_argument("--synthetic-pseudo", type=float, default=0.0, metavar="F",
                   help="with --synthetic N: draw this share of the crystals with a cell close to a metric of "
                        "higher symmetry (monoclinic beta near 90, orthorhombic axes near 1:1 or 1:sqrt(3), ...), "
                        "as pseudo-symmetric real structures have (docs/synthetic.md; default 0)")
    p.add_argument("--synthetic-hydrogen", type=float, default=0.0, metavar="F",
                   help="with --synthetic N: draw this share of the crystals as molecular crystals with hydrogen "
                        "(compositions such as C8H9NO2, Kempster-Lipson volume, the hydrogen incoherent "
                        "background), and keep the --synthetic-prior table's hydrogen-bearing compositions "
                        "(docs/synthetic.md; default 0)")
    p.add_argument("--texture", type=float, default=0.0, metavar="F",
                   help="simulate this share of the patterns with a preferred orientation (March-Dollase, axis "
                        "among <100>, <110>, <111>, r log-uniform in 0.6-1.67; each item's from the seed and its "
                        "index: xtalhpc.texture.item_texture; default 0)")
    p.add_argument("--cycle-to", type=int, default=None, metavar="N",
                   help="reuse the inputs cyclically until N items (benchmarks)")
    p.add_argument("--deuterate", action="store_true",
                   help="replace H by D in every structure (b_H -3.74 fm -> b_D 6.67 fm)")
    p.add_argument("--h-background", action=argparse.BooleanOptionalAction, default=True,
                   help="neutrons: add the flat incoherent background of H/D/T (~80 barn per H) to each pattern "
                        "(default: on)")
    p.add_argument("--max-reject-fraction", type=float, default=None, metavar="F",
                   help="exit status 3 (docs/exit-status.md) when more than this share of the input items is "
                        "rejected; the dataset is written and complete either way (default "
                        f"{DEFAULT_MAX_REJECT_FRACTION:.2f}: a real ICSD or Materials Project export with a few "
                        "percent of bad entries passes, a run where everything fails does not)")
    p.add_argument("--max-absorption", type=float, default=None, metavar="BARN",
                   help="neutrons: reject items whose absorption cross-section per formula unit at the "
                        "instrument's wavelength exceeds BARN (the per-pattern 'absorption' field; default: off)")
    p.add_argument("--find-symmetry", action=argparse.BooleanOptionalAction, default=True,
                   help="find the space group of inputs given without symmetry operations (P1 CIFs, POSCARs) "
                        "with spglib-equivalent tolerance 1e-3 A: stored as space_group_found and used as the "
                        "label of P1/undeclared inputs; exact operations speed up simulation (default: on)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-shard log lines")
    return p



def config_from_args(args):
    from ..generate import DEFAULT_SHARD_SIZE, GenerateConfig

    return GenerateConfig(
        sources=tuple(args.sources), output=args.output, instrument=args.instrument,
        shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size, seed=args.seed,
        device=args.device, compression=args.compression, compression_level=args.compression_level,
        peaks=args.peaks, split=args.split, synthetic=args.synthetic, per_space_group=args.per_space_group,
        cycle_to=args.cycle_to, radiation=args.radiation, deuterate=args.deuterate, h_background=args.h_background,
        synthetic_prior=args.synthetic_prior, synthetic_prior_power=args.synthetic_prior_power,
        max_absorption=args.max_absorption, find_symmetry=getattr(args, "find_symmetry", True),
        synthetic_special=getattr(args, "synthetic_special", 0.0),
        synthetic_formulas=getattr(args, "synthetic_formulas", 0.0),
        synthetic_pseudo=getattr(args, "synthetic_pseudo", 0.0),
        synthetic_hydrogen=getattr(args, "synthetic_hydrogen", 0.0), texture=getattr(args, "texture", 0.0))


def run(args) -> int:
    from ..errors import InputError
    from ..generate import JOB, get_comm, in_mpi_world, relaunch, run_generate, slurm_ntasks
    from ..job import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_REJECTS, EXIT_USAGE, Log, reject_status

    cfg = config_from_args(args)
    if args.ranks is not None and args.ranks < 1:
        raise InputError(f"--ranks {args.ranks} must be >= 1", field="--ranks")
    max_rej = DEFAULT_MAX_REJECT_FRACTION if args.max_reject_fraction is None else args.max_reject_fraction
    if not 0.0 <= max_rej <= 1.0:
        raise InputError(f"{max_rej!r} must be a fraction in [0, 1]", field="--max-reject-fraction")
    if args.ranks and args.ranks > 1 and not in_mpi_world() and slurm_ntasks() <= 1:
        extra = ["--quiet"] if args.quiet else []
        extra += ["--max-reject-fraction", repr(max_rej)]
        status = relaunch(cfg, args.ranks, extra)
        # mpiexec passes on rank 0's status (0, 2, 3) or an aborted rank's; anything else (a rank
        # killed by a signal, the launcher's own failure) is a failed job.
        known = (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS, EXIT_INTERRUPTED)
        return status if status in known else EXIT_FAILED
    comm = get_comm(args.ranks)
    if comm.size > 1:
        # Every rank says who it is (tests read the pid to kill a rank); Log writes one line at a time.
        log = Log(JOB)
        log(f"rank {comm.rank}/{comm.size} pid {os.getpid()} host {platform.node()}")
        if args.ranks is not None and args.ranks != comm.size and comm.rank == 0:
            log(f"--ranks {args.ranks} ignored: running on the MPI world of {comm.size} ranks")
    summary = run_generate(cfg, comm, quiet=args.quiet)
    if summary is None:
        return 0
    sums = summary.times["sum"]
    busy = sum(r["compute_wall"] for r in summary.times["per_rank"])
    print(f"{summary.n_patterns} patterns + {summary.n_rejected} rejected = "
          f"{summary.n_patterns + summary.n_rejected} of {summary.n_items} inputs; "
          f"{summary.shards_computed} of {summary.n_shards} shards computed on {summary.ranks} rank(s) in "
          f"{summary.wall_s:.1f} s; simulate_batch {100 * sums['simulate'] / busy if busy else 0:.0f}% of rank time; "
          f"{summary.master}")
    status = reject_status(summary.n_rejected, summary.n_items, max_rej)
    if summary.n_rejected:
        _list_rejects(summary.master, summary.n_rejected)
        share = summary.n_rejected / summary.n_items
        verdict = "exit status 3" if status == EXIT_REJECTS else "within"
        print(f"rejected {summary.n_rejected} of {summary.n_items} items ({100 * share:.1f}%): {verdict} "
              f"--max-reject-fraction {max_rej:g}")
    return status


def _list_rejects(master: str, n: int) -> None:
    """Print the first :data:`SUMMARY_REJECTS` reject rows of the finished dataset."""
    from ..dataset import open_dataset

    with open_dataset(master, check=False) as ds:
        rej = ds.rejects()
    shown = min(n, SUMMARY_REJECTS)
    print(f"rejected items ({'all ' + str(n) if shown == n else f'first {shown} of {n}'}; all in {master} "
          "/entry/rejects, `xtalhpc info` groups the reasons):")
    for i, src, reason in list(zip(rej["item_index"].tolist(), rej["source"], rej["reason"]))[:shown]:
        print(f"  item {i}: {reason if reason.startswith(src) else f'{src}: {reason}'}")
