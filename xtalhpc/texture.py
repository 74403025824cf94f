"""Preferred orientation (texture) of a powder sample: the March-Dollase parameters that
:func:`xtalhpc.simulate.simulate_batch` applies to the reflections before rendering.

The formula is ``kernels/physics.py``'s :func:`march_dollase`; the orbit average is
``kernels/cpu.py``'s :func:`texture_factors`. This module only holds and checks the
parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Texture:
    """March-Dollase preferred orientation of a flat-plate or capillary powder.

    ``axis``: the preferred plane as Miller indices (h, k, l), i.e. the reciprocal-lattice
    vector along which the crystallites line up (any real 3-vector, not all zero). ``r``: the
    March coefficient, > 0: 1 a random powder (nothing changes), < 1 platelets (the axis's
    reflections grow; GSAS and FullProf report 0.6-1 for strongly textured plates), > 1
    needles.
    """

    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    r: float = 1.0

    def __post_init__(self) -> None:
        try:
            ax = np.asarray(self.axis, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            ax = np.empty(0)
        if ax.shape != (3,) or not np.all(np.isfinite(ax)) or not np.any(ax):
            raise InputError(f"texture axis {self.axis!r} must be 3 finite numbers, not all zero "
                             "(the Miller indices of the preferred plane)", field="texture.axis")
        try:
            r = float(self.r)
        except (TypeError, ValueError):
            r = math.nan
        if not (math.isfinite(r) and r > 0.0):
            raise InputError(f"texture r {self.r!r} must be a finite number > 0 (1: random powder)",
                             field="texture.r")
        object.__setattr__(self, "axis", tuple(ax.tolist()))
        object.__setattr__(self, "r", r)


def texture_arrays(texture: "Texture | Sequence[Texture | None] | None", n: int):
    """(axis (n, 3), r (n,)) of one texture for all n crystals or one per crystal (None: a
    random powder, r = 1); ``None`` for no texture at all."""
    if texture is None:
        return None
    items = [texture] * n if isinstance(texture, Texture) else list(texture)
    if len(items) != n:
        raise InputError(f"{len(items)} textures for {n} crystals (give one Texture, or one per crystal)",
                         field="texture")
    axis = np.zeros((n, 3))
    axis[:, 2] = 1.0
    r = np.ones(n)
    for i, t in enumerate(items):
        if t is None:
            continue
        if not isinstance(t, Texture):
            raise InputError(f"texture {i} is a {type(t).__name__}, not a Texture or None", field="texture")
        axis[i] = t.axis
        r[i] = t.r
    return (axis, r) if np.any(r != 1.0) else None


#: Preferred-orientation axes a textured pattern draws from: the 13 distinct low-index
#: directions <100>, <110>, <111> of the cell (components in {-1, 0, 1}, up to sign).
TEXTURE_AXES = tuple((h, k, l) for h in (0, 1) for k in (-1, 0, 1) for l in (-1, 0, 1)
                     if (h, k, l) != (0, 0, 0) and (h > 0 or k > 0 or (k == 0 and l > 0)))
#: March coefficients of a textured pattern: log-uniform in [R_MIN, 1 / R_MIN] (platelets and
#: needles alike; Rietveld refinements of plates and needles report 0.6-1.6).
R_MIN = 0.6


def item_texture(seed: int, item: int, share: float) -> Texture | None:
    """The texture of item ``item`` of a dataset generated with ``--texture share`` and ``--seed
    seed``: None (a random powder) for 1 - share of the items, else a :class:`Texture` with an axis
    of :data:`TEXTURE_AXES` and r log-uniform in [R_MIN, 1/R_MIN]. A pure function of its
    arguments (its own random stream), so any reader of the dataset gets each pattern's texture back."""
    if share <= 0.0:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(item), 0x7E47]))
    u, a, v = rng.random(), int(rng.integers(len(TEXTURE_AXES))), rng.random()
    if u >= share:
        return None
    return Texture(TEXTURE_AXES[a], math.exp(math.log(R_MIN) * (1.0 - 2.0 * v)))
