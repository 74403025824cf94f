"""Ranked space groups for measured powder patterns: what ``xtalhpc predict`` does.

For each file (docs/predict.md):

1. **read** it (:func:`xtalhpc.io.measured.read_measured`: column text, GSAS raw, pdCIF);
   the wavelength is ``--wavelength`` or the ``--instrument`` preset's if given, else the
   file's, else its instrument parameter file's (``--param-file`` or the one a GSAS file
   names); none at all rejects the file, naming it;
2. **background**: ``"subtract"`` (default) removes the clipped-Chebyshev estimate of
   :func:`xtalhpc.regrid.estimate_background`, fitted on the measured points with their
   uncertainties; ``"keep"`` feeds the pattern with its background, as the training
   augmentation shows backgrounds (why subtracting is the default: docs/predict.md);
3. **onto the model's grid** through d-spacing (:func:`xtalhpc.regrid.to_grid`): grid points
   the measurement does not cover are masked;
4. **normalise** with the model's own settings (:func:`xtalhpc.preprocess.prepare_input`,
   the function the training loader calls) and run the network once on the whole batch;
5. **calibrated probabilities**: softmax(logits / T) with the model file's temperature per
   head (1.0 for an uncalibrated model).

:class:`Classifier` (a model file loaded once) is shared with ``xtalhpc evaluate``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError

#: The model ``xtalhpc predict`` uses without ``--model`` (package data, ``xtalhpc/data/models``).
DEFAULT_MODEL = "bt1-resnet"
MODEL_SUFFIX = ".pt"
#: Heads ``predict`` reports, and the key of each class's name in the JSON output.
REPORTED_HEADS = {"space_group": "number", "crystal_system": "name", "bravais_lattice": "symbol"}
BACKGROUND_MODES = ("subtract", "keep")


# --------------------------------------------------------------------------- models

def models_dir() -> Path:
    """The installed models' folder (``xtalhpc/data/models``)."""
    return Path(str(resources.files("xtalhpc") / "data" / "models"))


def installed_models() -> dict[str, Path]:
    """Name -> path of every model file shipped in the package."""
    d = models_dir()
    return {p.stem: p for p in sorted(d.glob(f"*{MODEL_SUFFIX}"))} if d.is_dir() else {}


def resolve_model(spec: str | os.PathLike | None) -> Path:
    """The model file for ``--model``: None (the shipped default), an installed name, a file, or a
    run directory (its ``model.pt``). InputError saying what is installed otherwise."""
    installed = installed_models()
    if spec is None:
        if DEFAULT_MODEL in installed:
            return installed[DEFAULT_MODEL]
        raise InputError(f"no model is installed: the package ships none yet ({models_dir() / (DEFAULT_MODEL + MODEL_SUFFIX)} "
                         "is absent); pass --model PATH (a model.pt written by `xtalhpc train`, or its run directory)",
                         field="--model")
    p = Path(spec)
    if p.is_dir():
        if (p / "model.pt").is_file():
            return p / "model.pt"
        raise InputError("directory holds no model.pt (a finished `xtalhpc train` run writes one)", str(p), "--model")
    if p.is_file():
        return p
    if str(spec) in installed:
        return installed[str(spec)]
    names = ", ".join(installed) or "none"
    raise InputError(f"no such model file, run directory or installed model (installed: {names})", str(spec),
                     "--model")


def space_group_symbol(number: int) -> str:
    """Short Hermann-Mauguin symbol (gemmi): ``62`` -> ``Pnma``, ``167`` -> ``R-3c``."""
    import gemmi

    s = gemmi.find_spacegroup_by_number(int(number)).short_name()
    return "R" + s[1:] if s.startswith("H") else s  # gemmi writes rhombohedral groups' hexagonal setting as H


class Classifier:
    """A model file loaded once: the network (eval mode) and what is needed to feed it.

    Attributes
    ----------
    path : Path. meta : the model file's metadata (everything but the weights).
    two_theta : the model's grid (float64, degrees). wavelength : angstrom.
    normalisation : :class:`xtalhpc.preprocess.Normalisation`. classes : head -> class names.
    temperatures : head -> calibration temperature.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", prior: str | None = "default"):
        import torch

        from .preprocess import Normalisation
        from .train.modelfile import load_model

        self.path = Path(path)
        self.model, self.meta = load_model(self.path)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.two_theta = self.meta["two_theta"].numpy().astype(np.float64)
        self.wavelength = float(self.meta["wavelength_angstrom"])
        self.normalisation = Normalisation.from_dict(self.meta["normalisation"])
        self.classes = {h: list(v) for h, v in self.meta["heads"].items()}
        self.temperatures = {h: float(self.meta.get("temperatures", {}).get(h, 1.0)) for h in self.classes}
        self.prior = resolve_prior(self.meta, prior, self.path)
        rec = self.meta.get("priors", {}).get(self.prior, {}) if self.prior else {}
        #: head -> logit adjustment of the deployment prior (None: the training prior's probabilities)
        self.adjustments = {h: (np.asarray(rec["log_adjust"][h], dtype=np.float64)
                                if rec and h in rec.get("log_adjust", {}) else None) for h in self.classes}

    @property
    def heads(self) -> list[str]:
        return list(self.classes)

    def logits(self, x: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Logits of every head (float64, (b, C)) for network input ``x`` (b, channels, n)."""
        import torch

        x = np.asarray(x, dtype=np.float32)
        out: dict[str, list] = {h: [] for h in self.classes}
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                o = self.model(torch.from_numpy(x[i:i + batch_size]).to(self.device))
                for h in out:
                    out[h].append(o[h].float().cpu().numpy().astype(np.float64))
        return {h: np.concatenate(v) if v else np.zeros((0, len(self.classes[h]))) for h, v in out.items()}

    def log_probabilities(self, head: str, logits: np.ndarray) -> np.ndarray:
        """log softmax(z / T + a): calibrated, under the deployment prior if one is in use
        (:mod:`xtalhpc.evaluate.prior`)."""
        from .evaluate.prior import adjusted_log_softmax

        return adjusted_log_softmax(logits, self.temperatures[head], self.adjustments.get(head))

    def probabilities(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calibrated probabilities softmax(z / T_head + a_head); rows sum to 1."""
        return {h: np.exp(self.log_probabilities(h, z)) for h, z in logits.items()}


def resolve_prior(meta: dict, prior: str | None, source=None) -> str | None:
    """The deployment prior a model file is used with: ``"default"`` is the file's ``default_prior``
    (none for a file without one), ``None`` or ``"none"`` the training prior, else a name in the file's
    ``priors`` (InputError naming the file and the names it has)."""
    priors = meta.get("priors", {}) or {}
    if prior is None or prior == "none":
        return None
    if prior == "default":
        name = meta.get("default_prior")
        return name if name in priors else None
    if prior not in priors:
        have = ", ".join(sorted(priors)) or "none"
        raise InputError(f"the model has no prior {prior!r} (it has: {have}; or 'none', 'default')",
                         None if source is None else str(source), "--prior")
    return prior


# --------------------------------------------------------------------------- measured patterns

@dataclass
class Prepared:
    """A measured pattern as the model sees it.

    Attributes
    ----------
    source : the file. wavelength : angstrom used; wavelength_source : where it came from.
    intensity : on the model grid after background handling (NaN where missing).
    background : the estimated background on the grid (NaN where missing; zeros for ``keep``).
    missing : True where the measurement does not cover the grid.
    x : network input (channels, n).
    """

    source: str
    wavelength: float
    wavelength_source: str
    intensity: np.ndarray
    background: np.ndarray
    missing: np.ndarray
    x: np.ndarray
    background_mode: str = "subtract"

    @property
    def coverage(self) -> float:
        return float(1.0 - self.missing.mean())


def wavelength_for(path, wavelength: float | None, instrument: str | None) -> tuple[float | None, str]:
    """The caller's wavelength: ``--wavelength`` or the first wavelength of ``--instrument``'s preset."""
    if wavelength is not None:
        if not (math.isfinite(wavelength) and 0.01 < wavelength < 100):
            raise InputError(f"--wavelength {wavelength} A is outside (0.01, 100)", field="--wavelength")
        return float(wavelength), "--wavelength"
    if instrument is not None:
        from .errors import InstrumentError
        from .instruments import get_instrument

        try:
            inst = get_instrument(instrument)
        except InstrumentError as exc:
            raise InputError(str(exc), field="--instrument") from None
        return float(inst.wavelengths[0]), f"--instrument {inst.name}"
    return None, ""


def prepare_pattern(pattern, clf: Classifier, *, wavelength: float | None = None, wavelength_source: str = "",
                    background: str = "subtract") -> Prepared:
    """Steps 2-4 of the module docstring for one :class:`~xtalhpc.io.measured.MeasuredPattern`.

    ``wavelength`` overrides the pattern's. InputError (naming the file) without a wavelength or
    when the measurement covers none of the model's grid.
    """
    from .preprocess import prepare_input
    from .regrid import estimate_background, to_grid

    if background not in BACKGROUND_MODES:
        raise InputError(f"--background {background!r}; allowed: {', '.join(BACKGROUND_MODES)}", field="--background")
    wl = wavelength if wavelength is not None else pattern.wavelength
    src = wavelength_source if wavelength is not None else (pattern.wavelength_source or "file")
    if wl is None:
        raise InputError("no wavelength: the file carries none, nor does an instrument parameter file; give "
                         "--wavelength L, --instrument NAME or --param-file PRM", pattern.source, "wavelength")
    if background == "subtract":
        bg = estimate_background(pattern.two_theta, pattern.intensity, sigma=pattern.sigma, mask=pattern.mask)
    else:
        bg = np.zeros_like(pattern.intensity, dtype=float)
    on = to_grid(pattern.two_theta, pattern.intensity, wl, clf.two_theta, clf.wavelength, mask=pattern.mask,
                 source=pattern.source)
    bg_on = to_grid(pattern.two_theta, bg, wl, clf.two_theta, clf.wavelength, mask=pattern.mask,
                    source=pattern.source)
    missing = on.missing
    if missing.all():
        lo, hi = float(pattern.two_theta[0]), float(pattern.two_theta[-1])
        raise InputError(f"the measurement ({lo:g}-{hi:g} deg at {wl:g} A) covers none of the model's grid "
                         f"({clf.two_theta[0]:g}-{clf.two_theta[-1]:g} deg at {clf.wavelength:g} A)",
                         pattern.source, "two_theta")
    net = np.where(missing, np.nan, on.intensity - bg_on.intensity)
    x = prepare_input(net, clf.two_theta, clf.normalisation, ~missing)[0]
    return Prepared(pattern.source, float(wl), src, net, np.where(missing, np.nan, bg_on.intensity), missing, x,
                    background)


@dataclass
class Prediction:
    """One file's outcome: ``error`` (a reason) or the prepared pattern and calibrated probabilities."""

    file: str
    error: str | None = None
    prepared: Prepared | None = None
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)

    def ranked(self, head: str, top: int, classes: list[str]) -> list[tuple[str, float]]:
        p = self.probabilities[head]
        order = np.argsort(-p, kind="stable")[:top]
        return [(classes[i], float(p[i])) for i in order]

    def to_json(self, top: int, classes: dict[str, list[str]]) -> dict:
        """``{"file", "error", "space_group": [{"number", "symbol", "probability"}], "crystal_system":
        [{"name", "probability"}], "bravais_lattice": [{"symbol", "probability"}]}``, best first."""
        out = {"file": self.file, "error": self.error, "space_group": [], "crystal_system": [], "bravais_lattice": []}
        if self.error is not None:
            return out
        for head, key in REPORTED_HEADS.items():
            if head not in self.probabilities:
                continue
            items = []
            for name, prob in self.ranked(head, top, classes[head]):
                if head == "space_group":
                    items.append({"number": int(name), "symbol": space_group_symbol(int(name)), "probability": prob})
                else:
                    items.append({key: name, "probability": prob})
            out[head] = items
        return out


def reason(exc: BaseException) -> str:
    """A rejected file's reason, without the file name the message starts with (the list names it)."""
    text = str(exc)
    path = getattr(exc, "path", None) or getattr(exc, "source", None)
    if path and text.startswith(str(path)):
        text = text[len(str(path)):].lstrip(":, ")
    return text


def predict_files(files, clf: Classifier, *, wavelength: float | None = None, instrument: str | None = None,
                  param_file: str | None = None, background: str = "subtract") -> list[Prediction]:
    """Read and prepare every file, run the network once on all the good ones; one :class:`Prediction` per
    file in the given order (bad files carry ``error`` and nothing else)."""
    from .io.measured import read_measured

    wl, wl_src = wavelength_for(None, wavelength, instrument)
    if param_file is not None and not Path(param_file).is_file():
        raise InputError("no such instrument parameter file", str(param_file), "--param-file")
    preds: list[Prediction] = []
    for f in files:
        try:
            pat = read_measured(f, instrument_file=param_file)
            preds.append(Prediction(str(f), prepared=prepare_pattern(pat, clf, wavelength=wl, wavelength_source=wl_src,
                                                                   background=background)))
        except InputError as exc:
            preds.append(Prediction(str(f), error=reason(exc)))
    good = [p for p in preds if p.error is None]
    if good:
        x = np.stack([p.prepared.x for p in good])
        probs = clf.probabilities(clf.logits(x))
        for i, p in enumerate(good):
            p.probabilities = {h: v[i] for h, v in probs.items()}
    return preds


# --------------------------------------------------------------------------- output

def format_prediction(p: Prediction, clf: Classifier, top: int) -> str:
    """The lines ``xtalhpc predict`` prints for one file."""
    pp = p.prepared
    lines = [f"{p.file}: lambda {pp.wavelength:g} A ({pp.wavelength_source}), {int((~pp.missing).sum())} of "
             f"{pp.missing.size} grid points covered, background {pp.background_mode}"]
    for head, label in (("space_group", "space group"), ("crystal_system", "crystal system"),
                        ("bravais_lattice", "Bravais lattice")):
        if head not in p.probabilities:
            continue
        k = top if head == "space_group" else min(top, 3)
        cells = []
        for name, prob in p.ranked(head, k, clf.classes[head]):
            cells.append(f"{name} {space_group_symbol(int(name))} {prob:.3f}" if head == "space_group"
                         else f"{name} {prob:.3f}")
        lines.append(f"  {label:<16} " + " | ".join(cells))
    return "\n".join(lines)


def plot_prediction(p: Prediction, clf: Classifier, path: str | os.PathLike, top: int = 5) -> None:
    """The pattern as the model sees it (channel 0 of its input on the model grid: after background
    handling and normalisation), the uncovered range shaded, the top predictions written on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pp = p.prepared
    tt = clf.two_theta
    y = np.where(pp.missing, np.nan, pp.x[0])
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.plot(tt, y, lw=0.7, color="k")
    step = (tt[-1] - tt[0]) / (tt.size - 1)
    miss = np.flatnonzero(pp.missing)
    if miss.size:
        runs = np.split(miss, np.flatnonzero(np.diff(miss) != 1) + 1)
        for i, r in enumerate(runs):
            ax.axvspan(tt[r[0]] - step / 2, tt[r[-1]] + step / 2, color="0.85", zorder=0,
                       label="not measured (masked)" if i == 0 else None)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(tt[0], tt[-1])
    ax.set_xlabel(f"2theta on the model's grid (deg, lambda {clf.wavelength:g} A)")
    ax.set_ylabel(f"network input ({clf.normalisation.transform})")
    ax.set_title(f"{Path(p.file).name}: measured at {pp.wavelength:g} A, background {pp.background_mode}",
                 fontsize=10)
    sg = "\n".join(f"{name:>3} {space_group_symbol(int(name)):<10} {prob:.3f}"
                   for name, prob in p.ranked("space_group", top, clf.classes["space_group"]))
    extra = []
    for head in ("crystal_system", "bravais_lattice"):
        if head in p.probabilities:
            name, prob = p.ranked(head, 1, clf.classes[head])[0]
            extra.append(f"{name} {prob:.3f}")
    ax.text(0.985, 0.80, "space group  p\n" + sg + ("\n\n" + "\n".join(extra) if extra else ""),
            transform=ax.transAxes, ha="right", va="top", family="monospace", fontsize=8,
            bbox=dict(boxstyle="round", fc="white", ec="0.6", alpha=0.9))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
