"""Study recipes: ``jobs/study/study.toml`` (shared settings) and one TOML per arm.

Validated like every config of the project (:func:`xtalhpc.job.config_from_dict`): an unknown
key is an error listing the valid ones, a bad value names the file, the key and what is allowed,
and the driver refuses the whole study (exit status 2) before running anything.

An arm file holds ``[arm]`` (question, label), ``[data]`` (what ``xtalhpc generate`` makes, and
for ``source = "variants"`` the near-duplicate pool, its split and de-duplication), ``[train]``
(a training recipe and dotted overrides of it, checked by the recipe's own dataclasses) and
``[evaluate]`` (the held-out sets). Relative paths are relative to the file that names them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..job import config_from_dict, config_to_dict

QUESTIONS = ("dedup", "volume", "imbalance", "resolution", "hd")
SOURCES = ("synthetic", "variants", "synthesize")
STUDY_FILE = "study.toml"


def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise InputError(msg, field=key)


@dataclass(frozen=True)
class QuestionText:
    """What the report says around a question's numbers (the poster's words, not ours)."""

    title: str
    poster: str
    more_compute: str = ""
    note: str = ""  # how the arms were made, where that needs saying (provenance of a variant, ...)


@dataclass(frozen=True)
class StudyRun:
    title: str = "xtalhpc study"
    train_recipe: str = ""  # "" = jobs/train-study.toml of this repository
    ranks: int = 1
    procs: int = 1
    scale_note: str = ""

    def __post_init__(self):
        _need(self.ranks >= 1, "study.ranks", f"{self.ranks} must be >= 1")
        _need(self.procs >= 1, "study.procs", f"{self.procs} must be >= 1")


@dataclass(frozen=True)
class StudyEval:
    """The held-out sets every arm is evaluated on besides its own synthetic test split."""

    real_structures: list[str] = field(default_factory=list)
    real_max: int = 300
    real_augment: str = "measured"
    measured_csv: str = ""
    rare_prior: str = ""
    rare_fraction: float = 0.5
    batch_size: int = 256

    def __post_init__(self):
        _need(self.real_max >= 1, "eval.real_max", f"{self.real_max} must be >= 1")
        _need(self.real_augment in ("off", "measured"), "eval.real_augment",
              f"{self.real_augment!r} is not allowed; allowed: 'off', 'measured'")
        _need(0 < self.rare_fraction < 1, "eval.rare_fraction", f"{self.rare_fraction} must be in (0, 1)")
        _need(self.batch_size >= 1, "eval.batch_size", f"{self.batch_size} must be >= 1")


@dataclass(frozen=True)
class StudyConfig:
    study: StudyRun = field(default_factory=StudyRun)
    eval: StudyEval = field(default_factory=StudyEval)
    questions: dict = field(default_factory=dict)

    def __post_init__(self):
        for q, text in self.questions.items():
            _need(q in QUESTIONS, f"questions.{q}", f"unknown question {q!r}; allowed: {', '.join(QUESTIONS)}")
            object.__setattr__(self, "questions", {**self.questions,
                                                   q: config_from_dict(QuestionText, text, prefix=f"questions.{q}.")})


@dataclass(frozen=True)
class ArmMeta:
    question: str
    label: str
    order: int = 0

    def __post_init__(self):
        _need(self.question in QUESTIONS, "arm.question",
              f"{self.question!r} is not allowed; allowed: {', '.join(QUESTIONS)}")


@dataclass(frozen=True)
class ArmData:
    """What the arm trains on.

    ``source = "synthetic"``: ``xtalhpc generate --synthetic N`` (``synthetic`` patterns; ``prior``:
    ``--synthetic-prior``). ``"synthesize"``: ``per_group`` random crystals per space group of
    ``space_groups`` drawn with the default element pool plus ``elements`` (extra weights, e.g.
    ``{H = 20.0}``), those holding ``require_element`` kept, then ``xtalhpc generate`` on them.
    ``"variants"``: ``per_group`` crystals per group plus ``variants`` augmented copies of each
    (strain, jitter, substitution: ``xtalhpc.curate.augment``); ``xtalhpc split`` assigns the
    structure-type test families (held out by every variants arm of the same pool); the rest is
    split ``variant_split = "random"`` (file by file: near-duplicates on both sides) or
    ``"structure"`` (the structure-type split), optionally through ``xtalhpc dedup`` first.
    """

    source: str = "synthetic"
    synthetic: int = 0
    per_group: int = 0
    space_groups: str = "1-230"
    prior: str = ""
    prior_power: float = 1.0
    instrument: str = "bt1-cu311"
    seed: int = 0
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    deuterate: bool = False
    h_background: bool = True
    elements: dict = field(default_factory=dict)
    require_element: str = ""
    variants: int = 0
    variant_split: str = "structure"
    random_test_fraction: float = 0.2
    dedup: bool = False
    dedup_tolerance: float = 3.0

    def __post_init__(self):
        _need(self.source in SOURCES, "data.source", f"{self.source!r} is not allowed; allowed: {', '.join(SOURCES)}")
        if self.source == "synthetic":
            _need(self.synthetic >= 1, "data.synthetic", f"{self.synthetic}: source 'synthetic' needs synthetic >= 1")
        else:
            _need(self.per_group >= 1, "data.per_group",
                  f"{self.per_group}: source {self.source!r} needs per_group >= 1")
        _need(self.prior_power >= 0, "data.prior_power", f"{self.prior_power} must be >= 0")
        _need(not self.prior or self.source == "synthetic", "data.prior", "a prior applies to source 'synthetic' only")
        _need(self.seed >= 0, "data.seed", f"{self.seed} must be >= 0")
        _need(len(self.split) == 3 and all(0 <= x <= 1 for x in self.split) and abs(sum(self.split) - 1) < 1e-9,
              "data.split", f"{self.split!r}: three fractions in [0, 1] summing to 1 (train, val, test)")
        _need(self.split[1] > 0, "data.split", f"{self.split!r}: training needs a validation fraction > 0")
        for el, w in self.elements.items():
            _need(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0, f"data.elements.{el}",
                  f"{w!r}: an element weight is a number > 0")
        _need(not self.elements or self.source != "synthetic", "data.elements",
              "element weights apply to sources 'synthesize' and 'variants'")
        _need(self.variant_split in ("random", "structure"), "data.variant_split",
              f"{self.variant_split!r} is not allowed; allowed: 'random', 'structure'")
        _need(self.variants >= 0, "data.variants", f"{self.variants} must be >= 0")
        _need(self.source == "variants" or (self.variants == 0 and not self.dedup), "data.variants",
              "variants and dedup apply to source 'variants' only")
        _need(self.source != "variants" or self.variants >= 1, "data.variants",
              "source 'variants' needs variants >= 1 (augmented copies per crystal)")
        _need(0 < self.random_test_fraction < 1, "data.random_test_fraction",
              f"{self.random_test_fraction} must be in (0, 1)")
        _need(self.dedup_tolerance > 0, "data.dedup_tolerance", f"{self.dedup_tolerance} must be > 0")
        _need(not (self.dedup and self.variant_split == "random"), "data.dedup",
              "dedup with variant_split 'random' is not a study arm; de-duplicate the structure split")


@dataclass(frozen=True)
class ArmTrain:
    """``recipe``: a training recipe (default the study's); ``overrides``: dotted keys of it
    (``{"run.steps" = 2000, "loss.class_balance" = 0.0}``), validated by the recipe's dataclasses."""

    recipe: str = ""
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ArmEvaluate:
    """``also``: other arms whose synthetic test sets this arm's model is evaluated on too (the
    crossed resolution and H/D evaluations, the imbalance arms on each other's test sets)."""

    also: list[str] = field(default_factory=list)
    real: bool = True
    measured: bool = True


@dataclass(frozen=True)
class ArmConfig:
    arm: ArmMeta
    data: ArmData = field(default_factory=ArmData)
    train: ArmTrain = field(default_factory=ArmTrain)
    evaluate: ArmEvaluate = field(default_factory=ArmEvaluate)


@dataclass
class Arm:
    """An arm as the driver runs it: its name (the file stem), file, config, resolved training recipe."""

    name: str
    path: Path
    config: ArmConfig
    train_config: object
    digest: str = ""

    @property
    def question(self) -> str:
        return self.config.arm.question


def _resolve(base: Path, p: str) -> str:
    if not p:
        return ""
    q = Path(p).expanduser()
    return str((q if q.is_absolute() else base / q).resolve())


def _read_toml(path: Path) -> dict:
    import tomllib

    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the recipe: {exc.strerror}", str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML: {exc}", str(path)) from None


def _with_source(exc: InputError, path: Path) -> InputError:
    return InputError(exc.message, exc.source or str(path), exc.field)


def load_study_config(folder: Path) -> StudyConfig:
    p = folder / STUDY_FILE
    data = _read_toml(p) if p.exists() else {}
    try:
        cfg = config_from_dict(StudyConfig, data, source=str(p))
    except InputError as exc:
        raise _with_source(exc, p) from None
    base = p.parent
    recipe = _resolve(base, cfg.study.train_recipe) or str(Path(__file__).resolve().parents[2] / "jobs" /
                                                              "train-study.toml")
    run = StudyRun(**{**config_to_dict(cfg.study), "train_recipe": recipe})
    ev = config_to_dict(cfg.eval)
    ev["real_structures"] = [_resolve(base, s) for s in cfg.eval.real_structures]
    ev["measured_csv"] = _resolve(base, cfg.eval.measured_csv)
    ev["rare_prior"] = _resolve(base, cfg.eval.rare_prior)
    for key in ("measured_csv", "rare_prior"):
        if ev[key] and not Path(ev[key]).is_file():
            raise InputError(f"no such file {ev[key]}", str(p), f"eval.{key}")
    for s in ev["real_structures"]:
        if not Path(s).exists():
            raise InputError(f"no such file or folder {s}", str(p), "eval.real_structures")
    return StudyConfig(study=run, eval=StudyEval(**ev), questions={q: config_to_dict(t) for q, t in
                                                                     cfg.questions.items()})


def load_arm(path: Path, study: StudyConfig) -> Arm:
    """One arm file, checked: its keys and values, its data paths, and its training recipe with the
    overrides applied (the recipe's own dataclasses judge those)."""
    from ..instruments import get_instrument
    from ..job import replace_config
    from ..train.config import load_train_config

    data = _read_toml(path)
    try:
        cfg = config_from_dict(ArmConfig, data, source=str(path))
    except InputError as exc:
        raise _with_source(exc, path) from None
    base = path.parent
    d = config_to_dict(cfg.data)
    d["prior"] = _resolve(base, cfg.data.prior)
    if d["prior"] and not Path(d["prior"]).is_file():
        raise InputError(f"no such file {d['prior']}", str(path), "data.prior")
    try:
        get_instrument(cfg.data.instrument)
    except InputError as exc:
        raise InputError(f"instrument {cfg.data.instrument!r}: {exc.message}", str(path), "data.instrument") from None
    if cfg.data.require_element or cfg.data.elements:
        from ..synth.elements import ElementPool, DEFAULT_WEIGHTS

        try:
            ElementPool.from_weights({**DEFAULT_WEIGHTS, **cfg.data.elements})
        except InputError as exc:
            raise InputError(exc.message, str(path), "data.elements") from None
    recipe = _resolve(base, cfg.train.recipe) if cfg.train.recipe else study.study.train_recipe
    if not Path(recipe).is_file():
        raise InputError(f"no such training recipe {recipe}", str(path), "train.recipe")
    tc = load_train_config(recipe)
    try:
        tc = replace_config(tc, dict(cfg.train.overrides))
    except InputError as exc:
        raise InputError(exc.message, str(path), f"train.overrides.{exc.field}" if exc.field else "train.overrides") \
            from None
    except (KeyError, TypeError) as exc:
        raise InputError(f"not a key of the training recipe: {exc}", str(path), "train.overrides") from None
    cfg = ArmConfig(arm=cfg.arm, data=ArmData(**d), train=ArmTrain(recipe=recipe, overrides=dict(cfg.train.overrides)),
                    evaluate=cfg.evaluate)
    return Arm(name=path.stem, path=path, config=cfg, train_config=tc)


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def load_study(folder: str | Path, only: list[str] | None = None) -> tuple[StudyConfig, list[Arm]]:
    """The study of ``folder``: its ``study.toml`` and every other ``*.toml`` (an arm each), all
    checked before anything runs. Each arm gets a digest of its resolved recipe, training recipe
    and the shared evaluation settings (and of the data of the arms it is also evaluated on):
    a finished arm with the same digest is not run again."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such folder {folder}", str(folder), "STUDY")
    study = load_study_config(folder)
    files = sorted(p for p in folder.glob("*.toml") if p.name != STUDY_FILE)
    if not files:
        raise InputError("no arm recipes (*.toml besides study.toml)", str(folder), "STUDY")
    arms = [load_arm(p, study) for p in files]
    names = {a.name: a for a in arms}
    if only:
        bad = [n for n in only if n not in names]
        if bad:
            raise InputError(f"no arm {bad[0]!r}; arms: {', '.join(names)}", str(folder), "--arms")
    for a in arms:
        for other in a.config.evaluate.also:
            if other not in names:
                raise InputError(f"{other!r} is not an arm of this study; arms: {', '.join(names)}", str(a.path),
                                 "evaluate.also")
            if other == a.name:
                raise InputError("an arm's own test set is always evaluated; leave it out", str(a.path),
                                 "evaluate.also")
            ia = get_instrument_grid(a.config.data.instrument)
            ib = get_instrument_grid(names[other].config.data.instrument)
            if ia != ib:
                raise InputError(f"{other!r} is simulated on another 2theta grid ({ib}) than this arm ({ia})",
                                 str(a.path), "evaluate.also")
    shared = config_to_dict(study.eval)
    for a in arms:
        also = {o: config_to_dict(names[o].config.data) for o in a.config.evaluate.also}
        a.digest = digest({"arm": config_to_dict(a.config), "train": config_to_dict(a.train_config),
                           "eval": shared, "also": also, "format": 1})
    arms.sort(key=lambda a: (QUESTIONS.index(a.question), a.config.arm.order, a.name))
    if only:
        keep = set(only)
        arms = [a for a in arms if a.name in keep]
    return study, arms


def get_instrument_grid(name: str) -> tuple:
    from ..instruments import get_instrument

    inst = get_instrument(name)
    tt = inst.two_theta
    return (round(float(tt[0]), 6), round(float(tt[-1]), 6), len(tt))
