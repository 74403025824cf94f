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
