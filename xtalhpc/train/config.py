"""The training config: typed dataclasses read from TOML, each validating its own values.

A recipe (``jobs/train-*.toml``) has the sections below; every key is optional (the
defaults are the Lolla et al. ResNet on the dataset's grid). Unknown keys are an error
listing the valid ones (:func:`xtalhpc.job.config_from_dict`); a bad value names the key
and the allowed range. The resolved config is written to ``RUN/config.toml``.

.. code-block:: toml

    [model]      # architecture (xtalhpc.train.models)
    [normalise]  # how a pattern becomes input (xtalhpc.preprocess.Normalisation)
    [data]       # batch size, loader workers, read chunk
    [optim]      # AdamW, learning-rate schedule, gradient clipping
    [loss]       # head weights, class balancing, label smoothing
    [augment]    # on-the-fly pattern augmentation of the training split
    [run]        # length, seed, logging, evaluation and checkpoint cadence
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import InputError
from ..job import config_from_dict, config_to_dict, load_config
from ..preprocess import Normalisation

#: The classification heads and their vocabulary sizes.
HEADS: dict[str, int] = {"space_group": 230, "crystal_system": 7, "bravais_lattice": 14, "extinction_group": 97}


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise InputError(msg, field=key)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture.

    Attributes
    ----------
    arch : ``"resnet1d"`` (Lolla et al. 2022) or ``"park"`` (Park et al. 2017 CNN baseline).
    dims, kernels, strides, blocks : per residual stage (resnet1d): channels, kernel size,
        stride of the first block, blocks per stage (equal lengths, 1-8 stages).
    stem_kernel, stem_stride : the stem convolution (resnet1d).
    pool_kernel, pool_stride : max-pool after the stem (resnet1d; 1, 1 = none).
    dropout : dropout probability after every convolution of the residual stages (0-0.9).
    stem_dropout : dropout after the stem convolution (0-0.9; default: ``dropout``, as published).
        The stem runs at the full input length, where dropout's mask costs ~40 % of a CPU
        step; 0 leaves it out.
    norm : ``"layer"``: LayerNorm over the channels at each position (as published);
        ``"group"``: GroupNorm(1, C), over channels and positions of each pattern (one fused
        kernel instead of two transposes: ~1.4x faster on CPU; same parameters).
    global_pool : ``"max"`` (as published) or ``"avg"``.
    park_channels, park_kernels, park_strides, park_dense : the Park et al. CNN. Their kernels
        (100, 50, 25 points) span 1, 0.5, 0.25 degrees on their 0.01-degree grid; the defaults
        here span the same angles on the 0.05-degree BT-1 grid.
    """

    arch: Literal["resnet1d", "park"] = "resnet1d"
    dims: tuple[int, ...] = (32, 64, 64, 64)
    kernels: tuple[int, ...] = (5, 7, 17, 13)
    strides: tuple[int, ...] = (4, 4, 5, 3)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    stem_kernel: int = 13
    stem_stride: int = 1
    pool_kernel: int = 7
    pool_stride: int = 7
    dropout: float = 0.05
    stem_dropout: float | None = None
    norm: Literal["layer", "group"] = "layer"
    global_pool: Literal["max", "avg"] = "max"
    park_channels: int = 80
    park_kernels: tuple[int, ...] = (20, 10, 5)
    park_strides: tuple[int, ...] = (5, 5, 2)
    park_dense: tuple[int, ...] = (2300, 1150)

    def __post_init__(self) -> None:
        n = len(self.dims)
        _check(1 <= n <= 8, "model.dims", f"{n} stages; allowed 1-8")
        for k in ("kernels", "strides", "blocks"):
            _check(len(getattr(self, k)) == n, f"model.{k}",
                   f"{len(getattr(self, k))} values but model.dims has {n}; give one per stage")
        _check(all(1 <= d <= 4096 for d in self.dims), "model.dims", f"{list(self.dims)}: each 1-4096")
        _check(all(1 <= k <= 255 for k in self.kernels), "model.kernels", f"{list(self.kernels)}: each 1-255")
        _check(all(1 <= s <= 16 for s in self.strides), "model.strides", f"{list(self.strides)}: each 1-16")
        _check(all(1 <= b <= 16 for b in self.blocks), "model.blocks", f"{list(self.blocks)}: each 1-16")
        _check(1 <= self.stem_kernel <= 255, "model.stem_kernel", f"{self.stem_kernel}: allowed 1-255")
        _check(1 <= self.stem_stride <= 16, "model.stem_stride", f"{self.stem_stride}: allowed 1-16")
        _check(1 <= self.pool_kernel <= 64, "model.pool_kernel", f"{self.pool_kernel}: allowed 1-64")
        _check(1 <= self.pool_stride <= 64, "model.pool_stride", f"{self.pool_stride}: allowed 1-64")
        _check(0.0 <= self.dropout <= 0.9, "model.dropout", f"{self.dropout}: allowed 0-0.9")
        _check(self.stem_dropout is None or 0.0 <= self.stem_dropout <= 0.9, "model.stem_dropout",
               f"{self.stem_dropout}: allowed 0-0.9")
        _check(1 <= self.park_channels <= 1024, "model.park_channels", f"{self.park_channels}: allowed 1-1024")
        _check(len(self.park_kernels) == len(self.park_strides) and 1 <= len(self.park_kernels) <= 6,
               "model.park_kernels", "park_kernels and park_strides: equal lengths, 1-6 layers")
        _check(all(1 <= d <= 16384 for d in self.park_dense), "model.park_dense",
               f"{list(self.park_dense)}: each 1-16384")


@dataclass(frozen=True)
class DataConfig:
    """Data loading.

    Attributes
    ----------
    batch_size : patterns per step per process (1-65536); the global batch is this x processes.
    workers : DataLoader worker processes per training process (0 = load in the training process).
    read_chunk : rows read by one contiguous HDF5 slice (1-4096); the shuffle unit of an epoch
        is a chunk, then rows are shuffled within each step's batch.
    val_max : at most this many validation patterns per evaluation (0 = all; a fixed random subset).
    """

    batch_size: int = 128
    workers: int = 1
    read_chunk: int = 16
    val_max: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.batch_size <= 65536, "data.batch_size", f"{self.batch_size}: allowed 1-65536")
        _check(0 <= self.workers <= 64, "data.workers", f"{self.workers}: allowed 0-64")
        _check(1 <= self.read_chunk <= 4096, "data.read_chunk", f"{self.read_chunk}: allowed 1-4096")
        _check(self.val_max >= 0, "data.val_max", f"{self.val_max}: allowed >= 0 (0 = all)")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, then a cosine (or constant) learning rate.

    Attributes
    ----------
    lr : peak learning rate (0-1]. weight_decay : AdamW decoupled decay (0-1).
    betas : Adam betas, each in [0, 1). eps : Adam epsilon.
    schedule : ``"cosine"`` (to ``min_lr_ratio * lr`` at the last step) or ``"constant"``.
    warmup_steps : linear warm-up from 0 (0 = none).
    grad_clip : clip the global gradient norm to this (0 = no clipping).
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 200
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _check(0 < self.lr <= 1, "optim.lr", f"{self.lr}: allowed (0, 1]")
        _check(0 <= self.weight_decay <= 1, "optim.weight_decay", f"{self.weight_decay}: allowed 0-1")
        _check(all(0 <= b < 1 for b in self.betas), "optim.betas", f"{list(self.betas)}: each in [0, 1)")
        _check(0 < self.eps <= 1e-2, "optim.eps", f"{self.eps}: allowed (0, 0.01]")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", f"{self.warmup_steps}: allowed >= 0")
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"{self.min_lr_ratio}: allowed 0-1")
        _check(self.grad_clip >= 0, "optim.grad_clip", f"{self.grad_clip}: allowed >= 0 (0 = off)")


@dataclass(frozen=True)
class LossConfig:
    """Multi-task loss: sum over heads of weight x cross-entropy. A head of weight 0 is not built.

    Attributes
    ----------
    space_group, crystal_system, bravais_lattice, extinction_group : head weights (0-100).
    class_balance : class weights (n_c / mean n)^-class_balance from the training split's label
        counts (0 = none, 1 = fully balanced; the study's main finding is label imbalance),
        capped at ``max_class_weight``.
    max_class_weight : cap of a class weight (>= 1).
    label_smoothing : cross-entropy label smoothing (0-0.5).
    """

    space_group: float = 1.0
    crystal_system: float = 0.3
    bravais_lattice: float = 0.3
    extinction_group: float = 1.0
    class_balance: float = 0.5
    max_class_weight: float = 10.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for h in HEADS:
            _check(0 <= getattr(self, h) <= 100, f"loss.{h}", f"{getattr(self, h)}: allowed 0-100")
        _check(any(getattr(self, h) > 0 for h in HEADS), "loss", "every head weight is 0: nothing to train")
        _check(0 <= self.class_balance <= 1, "loss.class_balance", f"{self.class_balance}: allowed 0-1")
        _check(self.max_class_weight >= 1, "loss.max_class_weight", f"{self.max_class_weight}: allowed >= 1")
        _check(0 <= self.label_smoothing <= 0.5, "loss.label_smoothing", f"{self.label_smoothing}: allowed 0-0.5")

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h for h in HEADS if getattr(self, h) > 0)


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of training patterns (xtalhpc.train.augment); validation is never augmented.

    Each quantity is drawn per pattern; a ``[low, high]`` pair is a uniform range (log-uniform
    for ``peak_counts``). ``probability`` applies to the whole pipeline; each part has its own.

    Attributes
    ----------
    enabled : master switch.
    broadening_deg : extra Lorentzian FWHM in degrees 2theta (crystallite size, instrument).
    zero_shift_deg : largest |2theta zero error| in degrees.
    background_fraction : mean background level / pattern maximum.
    background_order : Chebyshev order of the background shape (0-12).
    background_probability : share of patterns with a background.
    impurity_peaks : at most this many extra (impurity-phase) peaks per pattern (0 = none).
    impurity_intensity : their heights relative to the pattern maximum.
    peak_counts : counts at the strongest point (counting noise); log-uniform.
    noise_probability : share of patterns with counting noise.
    crop_probability : share of patterns whose low- or high-angle end is blanked (as the mask
        of a measurement covering less of the grid than the model's; trains the fill value).
    crop_max_deg : the blanked stretch is uniform in 0 to this many degrees.
    resolution_probability : share of patterns given another instrument's resolution: an extra
        Gaussian whose FWHM grows with 2theta as the Caglioti law does,
        ``w90 * sqrt(a + (1 - a) tan^2 theta)`` (``a`` uniform in 0-1), as a measurement from a
        coarser or differently focused instrument looks once converted onto the model's grid
        through d-spacing.
    resolution_deg : ``w90``, the extra FWHM at 2theta = 90 degrees, in degrees.
    asymmetry_probability : share of patterns with asymmetric peaks (axial divergence): an
        exponential tail towards low angles below 90 degrees 2theta and towards high angles
        above, taking the share ``min(1, |cot 2theta| / 2)`` of the intensity (areas kept).
    asymmetry_deg : the tail's decay length (1/e) in degrees 2theta.
    coverage_probability : share of patterns given the coverage of a measurement made at another
        (longer) wavelength on another instrument, as ``predict`` converts it onto the model's
        grid through d-spacing: measured over ``2theta_m`` in [lo_m, hi_m] at ``lambda_m = r *
        lambda_0``, it covers the model's ``2 asin(sin(theta_m) / r)`` from lo to hi; the rest is
        masked. At 1.9-2.4 A (ILL D1A, D1B, D20, HFIR HB-2A) a pattern ending at 150-160 deg
        covers the BT-1 grid only up to 75-105 deg, far more than ``crop`` blanks.
    coverage_wavelength_ratio : ``r = lambda_m / lambda_0``, uniform in this range.
    coverage_two_theta_max : the measurement's last 2theta_m (degrees), uniform in this range.
    coverage_two_theta_min : the measurement's first 2theta_m (degrees), uniform in this range.
    Parts off by default (probability 0) draw no random numbers, so older recipes augment
    exactly as before.
    """

    enabled: bool = True
    broadening_deg: tuple[float, float] = (0.0, 0.1)
    zero_shift_deg: float = 0.05
    background_fraction: tuple[float, float] = (0.0, 0.1)
    background_order: int = 4
    background_probability: float = 0.8
    impurity_peaks: int = 0
    impurity_intensity: tuple[float, float] = (0.01, 0.05)
    peak_counts: tuple[float, float] = (1e3, 1e5)
    noise_probability: float = 0.9
    crop_probability: float = 0.0
    crop_max_deg: float = 20.0
    resolution_probability: float = 0.0
    resolution_deg: tuple[float, float] = (0.02, 0.15)
    asymmetry_probability: float = 0.0
    asymmetry_deg: tuple[float, float] = (0.02, 0.15)
    coverage_probability: float = 0.0
    coverage_wavelength_ratio: tuple[float, float] = (1.0, 1.65)
    coverage_two_theta_max: tuple[float, float] = (110.0, 165.0)
    coverage_two_theta_min: tuple[float, float] = (3.0, 15.0)

    def __post_init__(self) -> None:
        def pair(name, lo, hi):
            v = getattr(self, name)
            _check(lo <= v[0] <= v[1] <= hi, f"augment.{name}", f"{list(v)}: need {lo} <= low <= high <= {hi}")
        pair("broadening_deg", 0.0, 5.0)
        pair("background_fraction", 0.0, 10.0)
        pair("impurity_intensity", 0.0, 1.0)
        pair("peak_counts", 1.0, 1e9)
        pair("resolution_deg", 0.0, 1.0)
        pair("asymmetry_deg", 0.0, 1.0)
        pair("coverage_wavelength_ratio", 0.2, 5.0)
        pair("coverage_two_theta_max", 1.0, 180.0)
        pair("coverage_two_theta_min", 0.0, 90.0)
        _check(0 <= self.zero_shift_deg <= 2, "augment.zero_shift_deg", f"{self.zero_shift_deg}: allowed 0-2")
        _check(0 <= self.background_order <= 12, "augment.background_order",
               f"{self.background_order}: allowed 0-12")
        _check(0 <= self.impurity_peaks <= 10, "augment.impurity_peaks", f"{self.impurity_peaks}: allowed 0-10")
        for p in ("background_probability", "noise_probability", "crop_probability", "resolution_probability",
                  "asymmetry_probability", "coverage_probability"):
            _check(0 <= getattr(self, p) <= 1, f"augment.{p}", f"{getattr(self, p)}: allowed 0-1")
        _check(0 <= self.crop_max_deg <= 90, "augment.crop_max_deg", f"{self.crop_max_deg}: allowed 0-90")


#: How an ``init`` model's weights are taken (:class:`RunConfig`).
INIT_LAYERS = ("all", "matching")


@dataclass(frozen=True)
class RunConfig:
    """Length and cadence.

    Attributes
    ----------
    steps : optimizer steps in all (0: ``epochs`` x steps per epoch). epochs : used when steps = 0.
    seed : root seed (per-rank and per-step seeds derive from it).
    log_every : a progress line on rank 0 every this many steps.
    eval_every : validate (and write metrics.jsonl, curves.png) every this many steps (and at the end).
    checkpoint_every : checkpoint every this many steps ...
    checkpoint_minutes : ... and whenever this many minutes passed since the last one (0 = off).
    keep_checkpoints : newest checkpoints kept (older ones deleted), >= 1.
    threads : torch threads per process (0: cores / processes on the node).
    amp : bf16 autocast on GPUs (ignored on CPU).
    init : a model file (``model.pt``) whose weights start the run (fine-tuning; "" = random
        initialisation). Its grid and input channels must match.
    init_layers : "all": the init model has this config's architecture and every weight is
        taken; "matching": the architecture may differ in its sizes (``dims``, ``blocks``,
        kernels, ...; same ``arch``), and every tensor whose name and shape match is taken, the
        rest start at random (a wider or deeper net that keeps a trained net's early layers).
    """

    steps: int = 0
    epochs: int = 10
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 3
    threads: int = 0
    amp: bool = True
    init: str = ""
    init_layers: str = "all"

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "run.steps", f"{self.steps}: allowed >= 0 (0 = use run.epochs)")
        _check(self.epochs >= 1 or self.steps > 0, "run.epochs", f"{self.epochs}: allowed >= 1")
        _check(0 <= self.seed < 2**63, "run.seed", f"{self.seed}: allowed 0 to 2^63-1")
        for k in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, k) >= 1, f"run.{k}", f"{getattr(self, k)}: allowed >= 1")
        _check(self.checkpoint_minutes >= 0, "run.checkpoint_minutes", f"{self.checkpoint_minutes}: allowed >= 0")
        _check(0 <= self.threads <= 1024, "run.threads", f"{self.threads}: allowed 0-1024")
        _check(self.init_layers in INIT_LAYERS, "run.init_layers",
               f"{self.init_layers!r}: allowed {', '.join(map(repr, INIT_LAYERS))}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training recipe (see the module docstring)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    normalise: Normalisation = field(default_factory=Normalisation)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return config_to_dict(self)


def train_config_from_dict(data: dict, source: str | None = None) -> TrainConfig:
    return config_from_dict(TrainConfig, data, source=source)


def load_train_config(path) -> TrainConfig:
    """Read a recipe (``jobs/train-*.toml``)."""
    return load_config(TrainConfig, path)
