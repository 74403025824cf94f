"""What defines a generated dataset: :class:`GenerateConfig` (typed, self-validating), its
digest fields, the instrument it resolves to, and the command line that reproduces it.

The resolved config is written beside the outputs as ``generate.json`` (``run.prepare_output``);
:func:`config_to_argv` is what the launcher (``mpi.relaunch``) passes to every rank.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..dataset import schema
from ..errors import InputError

#: The job's name: log tag ``[generate]``, lock file ``generate.lock`` (:class:`xtalhpc.job.OutputDir`).
JOB = "generate"
#: Default shard size. 256 BT-1 patterns are ~3.5 MB per shard file: few enough
#: files for parallel file systems (and for the master's Virtual Datasets, which
#: open every shard), fine-grained enough for dynamic scheduling of 100k items
#: over tens of ranks.
DEFAULT_SHARD_SIZE = 256
#: Environment variable: seconds to sleep after each shard (a test hook to make
#: runs slow enough to be killed mid-way; never set it in production).
THROTTLE_ENV = "XTALHPC_GENERATE_SHARD_DELAY"
#: Set to 1 to write each shard on the computing thread instead of a background writer.
SYNC_WRITE_ENV = "XTALHPC_SYNC_WRITE"
#: Rank 0 computes its own shards in sub-batches of about this many seconds and
#: answers other ranks' requests in between (the latency a worker can see; workers
#: ask one shard ahead, so it is hidden when a shard takes longer than this).
POLL_INTERVAL_S = 0.05
#: Structure files parsed and kept per process (consecutive items share files).
FILE_CACHE = 256
#: Base items remembered per process (their _ItemRecord: source id, labels, group key, H level).
META_MEMO = 65536
#: Lock file held by rank 0 while a run writes the dataset.
LOCK_NAME = f"{JOB}.lock"
#: Per-run statistics (timings and peak RSS per rank) written beside the dataset.
RUN_STATS_NAME = "last-run.json"


# ---------------------------------------------------------------------------- config
@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a generated dataset (saved as ``generate.json``).

    Attributes
    ----------
    sources : tuple of str
        Structure files, directories or globs (CIF, .ncmat, POSCAR, CSV lists).
    output : str
        Dataset directory (the master file is ``OUTPUT/dataset.h5``).
    instrument : str
        Preset name, TOML path or ``path.toml:name``.
    shard_size : int
        Items per shard, K >= 1.
    seed : int
        Root seed; item i uses ``(seed, i)`` (synthetic crystals).
    device : str
        Simulation backend: cpu, cuda or auto. Not part of the digest.
    compression : {"none", "gzip", "lzf"}
        Filter of the pattern and peak datasets (with byte shuffle). Default none:
        BT-1 patterns are float32 with few exact zeros, gzip saves ~26-28% of the
        bytes at 0.16-0.24 ms per pattern, a third to a half of the kernel time
        (docs/dataset.md, BENCHMARKS.md).
    compression_level : int or None
        gzip level 1-9 (default 4).
    peaks : bool
        Store the ragged reflection-family lists (2theta, intensity, d, |F|^2, hkl, m).
        Off by default: they take more room than the patterns (~22 kB per BT-1 pattern).
    split : tuple of 3 floats or None
        Train/val/test fractions assigned by hashing the structure-type group key;
        None stores ``unassigned``.
    synthetic : int
        Synthetic crystals to add (``xtalhpc.synth``); per space group if
        ``per_space_group``, else spread over groups 1-230 in turn.
    per_space_group : bool
    cycle_to : int or None
        Reuse the enumerated inputs cyclically until there are this many items
        (benchmarks; every repeat is a separate item with its own index).
    radiation : {"neutron", "xray"} or None
        Override the instrument's radiation (None keeps it).
    deuterate : bool
        Replace H by D in every input structure (``xtalhpc.curate.deuterate``:
        b_H = -3.74 fm -> b_D = 6.67 fm), the poster's H/D question.
    synthetic_prior : str or None
        CSV table with a space-group column (e.g. an ICSD/COD export, as in
        ../shared/data/metadata): the synthetic crystals' space groups follow its class
        frequencies (deterministic low-discrepancy sampling, see ``Manifest.locate``)
        instead of cycling through 1-230.
    synthetic_prior_power : float
        Temper the prior: space group g is drawn with weight ``count_g ** power`` (1: the
        table's frequencies; 0.5: square root, a compromise between a database's imbalance
        and balanced coverage; 0: every group the table holds equally). Groups absent from the
        table are never drawn.
    h_background : bool
        Neutrons only: add the flat incoherent background of the hydrogen isotopes
        (``xtalhpc.curate.hd.incoherent_background_level``: ~80 barn per H, 2 per D) to
        each pattern before normalisation, as a real H-containing sample shows. On by
        default; ignored for X-rays.
    max_absorption : float or None
        Neutrons only: reject items whose absorption cross-section per formula unit at the
        instrument's wavelength (barn; the per-pattern ``absorption`` field,
        :func:`xtalhpc.scattering.absorption_per_formula_unit`) exceeds this. None (default):
        keep every item.
    synthetic_special : float
        Share (0-1) of the synthetic crystals drawn with atoms on special positions as
        most real high-symmetry structures have (``SynthConfig.special_fraction``;
        docs/synthetic.md). 0 (default) leaves every crystal as before the option.
    synthetic_formulas : float
        Share (0-1) of the synthetic crystals drawn with one of the real compositions that the
        ``synthetic_prior`` table lists for their space group (``SynthConfig.formula_fraction``,
        :class:`xtalhpc.synth.formulas.FormulaTable`). 0 (default) leaves every crystal as before.
    synthetic_pseudo : float
        Share (0-1) of the synthetic crystals drawn with a cell close to a metric of higher
        symmetry (``SynthConfig.pseudo_fraction``). 0 (default) leaves every crystal as before.
    synthetic_hydrogen : float
        Share (0-1) of the synthetic crystals drawn as molecular crystals with hydrogen
        (``SynthConfig.hydrogen_fraction``; their patterns get the hydrogen incoherent
        background like any hydrogen-bearing item); above 0 the ``synthetic_prior`` table's
        hydrogen-bearing compositions are kept too. 0 (default) leaves every crystal as before.
    texture : float
        Share (0-1) of the patterns simulated with a preferred orientation (March-Dollase: an
        axis among the low-index directions, r log-uniform in 0.6-1.67; each item's is
        :func:`xtalhpc.texture.item_texture` of the seed and its index). Any item, file or
        synthetic. 0 (default) leaves every pattern a random powder.
    find_symmetry : bool
        Find the symmetry of input structures given without operations (P1 CIFs, POSCARs:
        :func:`xtalhpc.crystal.detect_symmetry`): the found group is stored
        (``space_group_found``) and becomes the label of a structure declared P1 or
        undeclared; operations that hold exactly speed up its simulation. On by default.
    """

    sources: tuple[str, ...]
    output: str
    instrument: str = "bt1-cu311"
    shard_size: int = DEFAULT_SHARD_SIZE
    seed: int = 0
    device: str = "cpu"
    compression: str = "none"
    compression_level: int | None = None
    peaks: bool = False
    split: tuple[float, float, float] | None = schema.DEFAULT_SPLIT_FRACTIONS
    synthetic: int = 0
    per_space_group: bool = False
    cycle_to: int | None = None
    radiation: str | None = None
    deuterate: bool = False
    h_background: bool = True
    synthetic_prior: str | None = None
    synthetic_prior_power: float = 1.0
    max_absorption: float | None = None
    find_symmetry: bool = True
    synthetic_special: float = 0.0
    synthetic_formulas: float = 0.0
    synthetic_pseudo: float = 0.0
    synthetic_hydrogen: float = 0.0
    texture: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        if not self.sources and not self.synthetic:
            raise InputError("no inputs: give structure files, directories or globs, or --synthetic N",
                             field="sources")
        if not (isinstance(self.shard_size, int) and self.shard_size >= 1):
            raise InputError(f"shard size {self.shard_size!r} must be an integer >= 1", field="--shard-size")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise InputError(f"seed {self.seed!r} must be an integer in [0, 2^63)", field="--seed")
        if self.compression not in ("gzip", "lzf", "none"):
            raise InputError(f"compression {self.compression!r}; allowed: gzip, lzf, none", field="--compression")
        if self.compression_level is not None and not (
                self.compression == "gzip" and 1 <= int(self.compression_level) <= 9):
            raise InputError(f"compression level {self.compression_level!r} needs --compression gzip and 1-9",
                             field="--compression-level")
        if self.split is not None:
            fr = tuple(float(x) for x in self.split)
            if len(fr) != 3 or any(not (0 <= x <= 1) for x in fr) or abs(sum(fr) - 1) > 1e-9:
                raise InputError(f"split fractions {self.split!r} must be three numbers in [0, 1] summing to 1 "
                                 "(train, val, test)", field="--split")
            object.__setattr__(self, "split", fr)
        if self.synthetic < 0:
            raise InputError(f"--synthetic {self.synthetic} must be >= 0", field="--synthetic")
        if self.radiation is not None:
            from ..scattering import check_radiation

            object.__setattr__(self, "radiation", check_radiation(self.radiation, "--radiation"))
        if self.synthetic_prior is not None:
            if not self.synthetic or self.per_space_group:
                raise InputError("--synthetic-prior needs --synthetic N without --per-space-group",
                                 field="--synthetic-prior")
            object.__setattr__(self, "synthetic_prior", str(self.synthetic_prior))
        if not (isinstance(self.synthetic_prior_power, (int, float)) and 0 <= self.synthetic_prior_power <= 1):
            raise InputError(f"prior power {self.synthetic_prior_power!r} must be a number in [0, 1]",
                             field="--synthetic-prior-power")
        if self.synthetic_prior_power != 1 and self.synthetic_prior is None:
            raise InputError("--synthetic-prior-power needs --synthetic-prior", field="--synthetic-prior-power")
        object.__setattr__(self, "synthetic_prior_power", float(self.synthetic_prior_power))
        if self.max_absorption is not None:
            try:
                ma = float(self.max_absorption)
            except (TypeError, ValueError):
                ma = float("nan")
            if not (ma >= 0 and math.isfinite(ma)):
                raise InputError(f"--max-absorption {self.max_absorption!r} must be a number of barn >= 0",
                                 field="--max-absorption")
            object.__setattr__(self, "max_absorption", ma)
        sp = self.synthetic_special
        if isinstance(sp, bool) or not isinstance(sp, (int, float)) or not 0 <= sp <= 1:
            raise InputError(f"--synthetic-special {sp!r} must be a number in [0, 1]", field="--synthetic-special")
        if sp and not self.synthetic:
            raise InputError("--synthetic-special needs --synthetic N", field="--synthetic-special")
        object.__setattr__(self, "synthetic_special", float(sp))
        sf = self.synthetic_formulas
        if isinstance(sf, bool) or not isinstance(sf, (int, float)) or not 0 <= sf <= 1:
            raise InputError(f"--synthetic-formulas {sf!r} must be a number in [0, 1]", field="--synthetic-formulas")
        if sf and self.synthetic_prior is None:
            raise InputError("--synthetic-formulas needs --synthetic N and --synthetic-prior TABLE (the compositions "
                             "come from the table's formula column)", field="--synthetic-formulas")
        object.__setattr__(self, "synthetic_formulas", float(sf))
        ps = self.synthetic_pseudo
        if isinstance(ps, bool) or not isinstance(ps, (int, float)) or not 0 <= ps <= 1:
            raise InputError(f"--synthetic-pseudo {ps!r} must be a number in [0, 1]", field="--synthetic-pseudo")
        if ps and not self.synthetic:
            raise InputError("--synthetic-pseudo needs --synthetic N", field="--synthetic-pseudo")
        object.__setattr__(self, "synthetic_pseudo", float(ps))
        hy = self.synthetic_hydrogen
        if isinstance(hy, bool) or not isinstance(hy, (int, float)) or not 0 <= hy <= 1:
            raise InputError(f"--synthetic-hydrogen {hy!r} must be a number in [0, 1]", field="--synthetic-hydrogen")
        if hy and not self.synthetic:
            raise InputError("--synthetic-hydrogen needs --synthetic N", field="--synthetic-hydrogen")
        object.__setattr__(self, "synthetic_hydrogen", float(hy))
        tx = self.texture
        if isinstance(tx, bool) or not isinstance(tx, (int, float)) or not 0 <= tx <= 1:
            raise InputError(f"--texture {tx!r} must be a number in [0, 1]", field="--texture")
        object.__setattr__(self, "texture", float(tx))
        if self.cycle_to is not None and self.cycle_to < 1:
            raise InputError(f"--cycle-to {self.cycle_to} must be >= 1", field="--cycle-to")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest_fields(self) -> dict:
        """The fields that change the bytes of the dataset (not device or output path)."""
        d = self.to_dict()
        d.pop("device")
        d.pop("output")
        if d["synthetic_prior_power"] == 1.0:
            d.pop("synthetic_prior_power")  # the default: digests of datasets made before the option stay valid
        if d["max_absorption"] is None:  # off: the digests of datasets made before the option stay
            d.pop("max_absorption")
        if d["synthetic_special"] == 0.0:  # likewise
            d.pop("synthetic_special")
        if d["synthetic_formulas"] == 0.0:  # likewise
            d.pop("synthetic_formulas")
        if d["synthetic_pseudo"] == 0.0:  # likewise
            d.pop("synthetic_pseudo")
        if d["synthetic_hydrogen"] == 0.0:  # likewise
            d.pop("synthetic_hydrogen")
        if d["texture"] == 0.0:  # likewise
            d.pop("texture")
        return d


def resolve_instrument(cfg: GenerateConfig):
    """The instrument of ``cfg``, with ``--radiation`` applied."""
    from ..instruments import Instrument, get_instrument

    inst = get_instrument(cfg.instrument)
    if cfg.radiation is not None and cfg.radiation != inst.radiation:
        inst = Instrument(**{**inst.to_dict(), "radiation": cfg.radiation}, source=inst.source)
    return inst


# ---------------------------------------------------------------------------- the command line
def config_to_argv(cfg: GenerateConfig, ranks: int | None = None) -> list[str]:
    """The ``xtalhpc generate`` arguments that reproduce ``cfg`` (used to re-launch under mpiexec)."""
    argv = [*cfg.sources, "--output", cfg.output, "--instrument", cfg.instrument,
            "--shard-size", str(cfg.shard_size), "--seed", str(cfg.seed), "--device", cfg.device,
            "--compression", cfg.compression]
    if cfg.compression_level is not None:
        argv += ["--compression-level", str(cfg.compression_level)]
    argv.append("--peaks" if cfg.peaks else "--no-peaks")
    argv += ["--split", "none" if cfg.split is None else ",".join(repr(x) for x in cfg.split)]
    if cfg.synthetic:
        argv += ["--synthetic", str(cfg.synthetic)]
        if cfg.per_space_group:
            argv.append("--per-space-group")
        if cfg.synthetic_special:
            argv += ["--synthetic-special", repr(cfg.synthetic_special)]
        if cfg.synthetic_pseudo:
            argv += ["--synthetic-pseudo", repr(cfg.synthetic_pseudo)]
        if cfg.synthetic_hydrogen:
            argv += ["--synthetic-hydrogen", repr(cfg.synthetic_hydrogen)]
    if cfg.cycle_to is not None:
        argv += ["--cycle-to", str(cfg.cycle_to)]
    if cfg.radiation is not None:
        argv += ["--radiation", cfg.radiation]
    if cfg.synthetic_prior is not None:
        argv += ["--synthetic-prior", cfg.synthetic_prior]
        if cfg.synthetic_prior_power != 1.0:
            argv += ["--synthetic-prior-power", repr(cfg.synthetic_prior_power)]
        if cfg.synthetic_formulas:
            argv += ["--synthetic-formulas", repr(cfg.synthetic_formulas)]
    if cfg.deuterate:
        argv.append("--deuterate")
    argv.append("--h-background" if cfg.h_background else "--no-h-background")
    if cfg.max_absorption is not None:
        argv += ["--max-absorption", repr(cfg.max_absorption)]
    if not cfg.find_symmetry:
        argv.append("--no-find-symmetry")
    if cfg.texture:
        argv += ["--texture", repr(cfg.texture)]
    if ranks is not None:
        argv += ["--ranks", str(ranks)]
    return argv

