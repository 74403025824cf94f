"""The model file (``RUN/model.pt``): one ``torch.save``d dict of tensors and plain values.

``torch.load(path, weights_only=True)`` loads it (no pickled code). Keys:

==================  ===========================================================================
key                 value
==================  ===========================================================================
format, version     ``"xtalhpc.model"``, :data:`MODEL_VERSION`
arch                the ``[model]`` config (dict) the network is rebuilt from
heads               head -> list of class names in logit order (space_group: "1".."230"; ...)
input_length        points of the 2theta grid; in_channels: 1 + extra channels
state_dict          the weights
two_theta           the grid (float64 tensor, degrees); wavelength_angstrom; instrument (dict)
normalisation       :class:`xtalhpc.preprocess.Normalisation` as a dict (with its version)
temperatures        head -> calibration temperature (1.0 until calibrated)
calibration         (calibrated files only) how the temperatures were fitted: split, patterns, NLL before/after
train_config        the resolved training config (dict); step; metrics (last validation record)
dataset             config and manifest digests, counts per split, path of the training data
xtalhpc_version     the version that wrote it
==================  ===========================================================================
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

MODEL_FORMAT = "xtalhpc.model"
MODEL_VERSION = 1


def _plain(v):
    """JSON-like values only (weights_only refuses arbitrary objects)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def save_model(path, *, model, cfg, data, heads, step: int, metrics: dict) -> Path:
    import torch

    from .. import __version__
    from .data import head_vocabularies

    vocab = head_vocabularies()
    blob = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION,
        "arch": _plain(cfg.to_dict()["model"]),
        "heads": {h: vocab[h] for h in heads},
        "input_length": int(data.two_theta.size), "in_channels": int(cfg.normalise.in_channels),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "two_theta": torch.from_numpy(data.two_theta.copy()),
        "wavelength_angstrom": float(data.wavelength),
        "instrument": _plain(data.instrument),
        "normalisation": cfg.normalise.to_dict(),
        "temperatures": {h: 1.0 for h in heads},
        "train_config": _plain(cfg.to_dict()),
        "step": int(step), "metrics": _plain(metrics),
        "dataset": _plain(data.digest),
        "xtalhpc_version": __version__,
    }
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(p)
    return p


def write_calibrated(src, dst, temperatures: dict, record: dict) -> Path:
    """Copy the model file ``src`` to ``dst`` with fitted calibration ``temperatures`` (head -> T; heads
    left out keep theirs) and ``record`` (how they were fitted) under ``calibration``. ``dst`` may be
    ``src``; written through a temporary name."""
    blob = read_model_file(src)
    unknown = sorted(set(temperatures) - set(blob["heads"]))
    if unknown:
        raise InputError(f"temperatures for heads {unknown} the model does not have ({', '.join(blob['heads'])})",
                         str(src), "temperatures")
    old = blob.get("temperatures", {})
    blob["temperatures"] = {h: float(temperatures.get(h, old.get(h, 1.0))) for h in blob["heads"]}
    blob["calibration"] = _plain(record)
    return _write_blob(blob, dst)


def _write_blob(blob: dict, dst) -> Path:
    """Save a model file's dict at ``dst`` through a temporary name (``dst`` may be the source)."""
    import torch

    p = Path(dst)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(p)
    return p


def write_prior(src, dst, record: dict, default: bool = True) -> Path:
    """Copy the model file ``src`` to ``dst`` with a deployment prior ``record`` (from
    :func:`xtalhpc.evaluate.prior.deployment_prior`) under ``priors[record["name"]]``, made the
    file's ``default_prior`` when ``default``. ``dst`` may be ``src``; written through a temporary name."""
    blob = read_model_file(src)
    missing = sorted(set(blob["heads"]) - set(record.get("log_adjust", {})))
    if missing:
        raise InputError(f"the prior has no adjustment for heads {missing}", str(src), "priors")
    for h, a in record["log_adjust"].items():
        if h in blob["heads"] and len(a) != len(blob["heads"][h]):
            raise InputError(f"head {h}: the prior has {len(a)} classes, the model {len(blob['heads'][h])}",
                             str(src), "priors")
    blob.setdefault("priors", {})[record["name"]] = _plain(record)
    if default:
        blob["default_prior"] = record["name"]
    return _write_blob(blob, dst)


def grid_text(tt) -> str:
    """``3296 points, 3-167.75 deg, step 0.05``: a 2theta grid in a message."""
    import numpy as np

    tt = np.asarray(tt, dtype=float)
    step = (tt[-1] - tt[0]) / (tt.size - 1) if tt.size > 1 else 0.0
    return f"{tt.size} points, {tt[0]:g}-{tt[-1]:g} deg, step {step:.6g}"


def check_same_grid(model_two_theta, data_two_theta, model_source, data_source) -> None:
    """InputError naming both grids and both files unless the model's 2theta grid is the dataset's
    (same length, every point within 1e-9 degrees)."""
    import numpy as np

    a = np.asarray(model_two_theta, dtype=float)
    b = np.asarray(data_two_theta, dtype=float)
    if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9):
        raise InputError(f"the model's 2theta grid ({grid_text(a)}) differs from the dataset's ({grid_text(b)}, "
                         f"{data_source}): a model only reads patterns on the grid it was trained on",
                         str(model_source), "two_theta")


def matching_weights(init_state: dict, model_state: dict) -> tuple[dict, list[str]]:
    """The tensors of ``init_state`` whose names and shapes are those of ``model_state`` (a
    network of other sizes: ``run.init_layers = "matching"``), taken by module: a layer's weight
    and bias together or neither. Also the names of the model's tensors left to their random
    start, in the model's order."""
    def module(k):
        return k.rsplit(".", 1)[0]

    fits = {k: k in init_state and tuple(init_state[k].shape) == tuple(v.shape) for k, v in model_state.items()}
    whole = {}
    for k, ok in fits.items():
        whole[module(k)] = whole.get(module(k), True) and ok
    take = {k: init_state[k] for k in model_state if whole[module(k)]}
    return take, [k for k in model_state if k not in take]


def layer_groups(names) -> str:
    """Tensor names summarised by stage or head ("trunk.stages.2, heads.space_group"), in order."""
    groups = dict.fromkeys(".".join(p[:3] if len(p) > 3 and p[1] == "stages" else p[:2])
                           for p in (n.split(".") for n in names))
    return ", ".join(groups)


def read_model_file(path) -> dict:
    """The model file's dict (weights_only), after checking format and version; InputError naming both if unknown."""
    import torch

    p = Path(path)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("no such model file", str(p)) from None
    except Exception as exc:
        raise InputError(f"not a loadable model file ({type(exc).__name__}: {exc})", str(p)) from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        fmt = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise InputError(f"format {fmt!r} is not {MODEL_FORMAT!r}", str(p), "format")
    if blob.get("version") != MODEL_VERSION:
        raise InputError(f"{MODEL_FORMAT} version {blob.get('version')!r}; this xtalhpc reads version {MODEL_VERSION}",
                         str(p), "version")
    return blob


def load_model(path, input_length: int | None = None):
    """Rebuild the network of a model file. Returns ``(model in eval mode, metadata dict)``.

    ``input_length``: the length of the patterns that will be fed (the model's grid); a
    different length is an InputError naming both (resample onto ``meta["two_theta"]`` first).
    """
    from ..job import config_from_dict
    from .config import ModelConfig
    from .models import build_model

    blob = read_model_file(path)
    n = int(blob["input_length"])
    if input_length is not None and int(input_length) != n:
        raise InputError(f"the model takes patterns of {n} points on its 2theta grid; got {int(input_length)} "
                         "(map the pattern onto the model's grid first)", str(path), "input_length")
    arch = config_from_dict(ModelConfig, blob["arch"], source=str(path), prefix="arch.")
    heads = {h: len(v) for h, v in blob["heads"].items()}
    model = build_model(arch, n, int(blob["in_channels"]), heads)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta
