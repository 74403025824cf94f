"""How a powder pattern becomes network input: one function for training and for measured data.

The training data loader (:mod:`xtalhpc.train.data`) and ``predict`` on a measured
pattern both call :func:`prepare_input` with the :class:`Normalisation` stored in the
model file, so a measured pattern reaches the network exactly as a simulated one did.
NumPy only (no torch): the data half and readers of measured data use it without torch.

Steps, in order (each row of a ``(batch, n_points)`` array independently):

1. **mask**: points the measurement does not cover (another wavelength mapped onto the
   model's grid leaves the ends empty; detector gaps) are excluded from every statistic
   below and set to :data:`FILL_VALUE` at the end. Training shows the network the same
   fill: the ``crop`` augmentation blanks random low- and high-angle stretches.
2. **baseline** (``baseline = "blockmin"``): a robust lower envelope is subtracted: the
   minimum of each block of ``baseline_window_deg`` degrees, linearly interpolated between
   block centres. Peaks never pull it up (a minimum), and a slowly varying background
   (incoherent scattering, air, sample holder) is removed. ``"none"`` keeps the pattern.
3. **scale**: clipped at 0 and divided by its maximum over the measured points (max = 1; a
   pattern that is zero everywhere stays zero). Absolute intensities carry no symmetry
   information and differ by orders of magnitude between instruments.
4. **transform**: ``"sqrt"`` takes the square root (compresses the dynamic range: weak
   reflections, whose presence or absence is what tells extinction groups apart, stand out
   more), ``"linear"`` keeps it.
5. extra **channels** from the grid alone (identical for every pattern of a model):
   ``"sin2theta"`` = sin^2(theta) (the physical ruler of Baggett et al.: 1/d^2 is linear in
   it), ``"d"`` = d / d_max = sin(theta_min) / sin(theta), in (0, 1].

The result is float32 ``(batch, 1 + len(channels), n_points)``: channel 0 the pattern,
then the extra channels in the order given.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from .errors import InputError

#: Value of points outside the measured range after normalisation (what training shows there).
FILL_VALUE = 0.0
#: Version of the recipe below; stored in model files beside the settings.
NORMALISATION_VERSION = 1
CHANNELS = ("sin2theta", "d")


@dataclass(frozen=True)
class Normalisation:
    """Settings of :func:`normalise` (stored in every model file).

    Attributes
    ----------
    baseline : ``"none"`` or ``"blockmin"``
        Baseline subtraction (see the module docstring).
    baseline_window_deg : float
        Block width of the ``blockmin`` baseline in degrees 2theta (0.5-60); wider than the
        widest peak, narrower than the background's variations.
    transform : ``"linear"`` or ``"sqrt"``
        Intensity transform after scaling to max 1.
    channels : tuple of str
        Extra input channels, from ``"sin2theta"``, ``"d"``.
    """

    baseline: Literal["none", "blockmin"] = "none"
    baseline_window_deg: float = 5.0
    transform: Literal["linear", "sqrt"] = "linear"
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.baseline not in ("none", "blockmin"):
            raise InputError(f"baseline {self.baseline!r}; allowed: 'none', 'blockmin'", field="baseline")
        if not 0.5 <= float(self.baseline_window_deg) <= 60:
            raise InputError(f"baseline_window_deg {self.baseline_window_deg} outside 0.5-60 degrees",
                             field="baseline_window_deg")
        if self.transform not in ("linear", "sqrt"):
            raise InputError(f"transform {self.transform!r}; allowed: 'linear', 'sqrt'", field="transform")
        for c in self.channels:
            if c not in CHANNELS:
                raise InputError(f"channel {c!r}; allowed: {', '.join(CHANNELS)}", field="channels")
        if len(set(self.channels)) != len(self.channels):
            raise InputError(f"channels {list(self.channels)} repeat a name", field="channels")

    @property
    def in_channels(self) -> int:
        return 1 + len(self.channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["version"] = NORMALISATION_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        d = dict(d)
        version = d.pop("version", NORMALISATION_VERSION)
        if version != NORMALISATION_VERSION:
            raise InputError(f"normalisation version {version}; this xtalhpc knows {NORMALISATION_VERSION}",
                             field="normalisation.version")
        d["channels"] = tuple(d.get("channels", ()))
        return cls(**d)


def _grid_step(two_theta: np.ndarray) -> float:
    tt = np.asarray(two_theta, dtype=float)
    if tt.ndim != 1 or tt.size < 2 or not np.all(np.diff(tt) > 0):
        raise InputError("the 2theta grid must be 1-D, increasing, with >= 2 points", field="two_theta")
    return float((tt[-1] - tt[0]) / (tt.size - 1))


def _blockmin_baseline(x: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Lower envelope of each row: block minima over valid points, linear between block centres."""
    b, n = x.shape
    nb = max(1, math.ceil(n / window))
    pad = nb * window - n
    xv = np.where(valid, x, np.inf)
    if pad:
        xv = np.concatenate([xv, np.full((b, pad), np.inf, dtype=xv.dtype)], axis=1)
    mins = xv.reshape(b, nb, window).min(axis=2)
    # blocks without a valid point take the nearest block that has one (their own points are masked)
    bad = ~np.isfinite(mins)
    if bad.any():
        idx = np.where(~bad, np.arange(nb)[None, :], 0)
        np.maximum.accumulate(idx, axis=1, out=idx)
        fwd = np.take_along_axis(mins, idx, axis=1)
        ridx = np.where(~bad[:, ::-1], np.arange(nb)[None, :], 0)
        np.maximum.accumulate(ridx, axis=1, out=ridx)
        bwd = np.take_along_axis(mins[:, ::-1], ridx, axis=1)[:, ::-1]
        mins = np.where(bad, np.where(np.isfinite(fwd), fwd, bwd), mins)
        mins = np.where(np.isfinite(mins), mins, 0.0)
    if nb == 1:
        return np.repeat(mins, n, axis=1)
    centres = (np.arange(nb) + 0.5) * window - 0.5
    pos = np.clip(np.arange(n, dtype=float), centres[0], centres[-1])
    j = np.clip(np.searchsorted(centres, pos, side="right") - 1, 0, nb - 2)
    t = (pos - centres[j]) / (centres[j + 1] - centres[j])
    return mins[:, j] * (1.0 - t) + mins[:, j + 1] * t


def normalise(patterns, two_theta, settings: Normalisation | None = None, mask=None) -> np.ndarray:
    """Steps 1-4 of the module docstring on a pattern ``(n,)`` or a batch ``(b, n)``.

    Parameters
    ----------
    patterns : array (n,) or (b, n)
        Intensities on the grid ``two_theta`` (any linear units; NaN counts as unmeasured).
    two_theta : array (n,)
        The model's 2theta grid in degrees (uniform, increasing).
    settings : Normalisation
        The model's settings (default :class:`Normalisation()`).
    mask : bool array like ``patterns`` or (n,), optional
        True where the point was measured. Points outside it become :data:`FILL_VALUE`.

    Returns
    -------
    float32 array of the shape of ``patterns``.
    """
    s = settings or Normalisation()
    x = np.array(patterns, dtype=np.float32, copy=True)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    n = x.shape[1]
    tt = np.asarray(two_theta, dtype=float)
    if tt.shape != (n,):
        raise InputError(f"pattern has {n} points but the 2theta grid {tt.shape[0] if tt.ndim else 0}",
                         field="two_theta")
    step = _grid_step(tt)
    valid = np.isfinite(x)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), x.shape) if np.ndim(mask) == 1 else \
            np.atleast_2d(np.asarray(mask, dtype=bool))
        if m.shape != x.shape:
            raise InputError(f"mask shape {np.shape(mask)} does not match the patterns {x.shape}", field="mask")
        valid &= m
    x = np.where(valid, x, 0.0).astype(np.float32, copy=False)
    if s.baseline == "blockmin":
        window = max(2, int(round(s.baseline_window_deg / step)))
        x = x - _blockmin_baseline(x, valid, window).astype(np.float32)
    np.clip(x, 0.0, None, out=x)
    x[~valid] = 0.0
    top = x.max(axis=1, keepdims=True)
    np.divide(x, top, out=x, where=top > 0)
    if s.transform == "sqrt":
        np.sqrt(x, out=x)
    x[~valid] = FILL_VALUE
    return x[0] if single else x


def input_channels(two_theta, channels) -> np.ndarray:
    """The extra channels (``(len(channels), n)`` float32) of step 5 for the grid ``two_theta`` (degrees)."""
    tt = np.asarray(two_theta, dtype=float)
    theta = np.radians(tt / 2.0)
    out = []
    for c in channels:
        if c == "sin2theta":
            out.append(np.sin(theta) ** 2)
        elif c == "d":
            out.append(np.sin(theta[0]) / np.sin(theta))
        else:
            raise InputError(f"channel {c!r}; allowed: {', '.join(CHANNELS)}", field="channels")
    return np.array(out, dtype=np.float32).reshape(len(out), tt.size)


def prepare_input(patterns, two_theta, settings: Normalisation | None = None, mask=None) -> np.ndarray:
    """Network input ``(b, 1 + len(channels), n)`` float32 from patterns ``(n,)`` or ``(b, n)``:
    :func:`normalise`, then the extra channels of :func:`input_channels` appended."""
    s = settings or Normalisation()
    x = np.atleast_2d(normalise(patterns, two_theta, s, mask))
    out = np.empty((x.shape[0], s.in_channels, x.shape[1]), dtype=np.float32)
    out[:, 0] = x
    if s.channels:
        out[:, 1:] = input_channels(two_theta, s.channels)[None]
    return out
