"""Element pools, radii and atomic volumes for synthetic crystals.

Radii are gemmi's element tables (covalent radii of Cordero et al. 2008 and
van der Waals radii), read when a pool is built, never at import time.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..crystal import element_of
from ..errors import InputError

#: Default pool: elements common in inorganic crystal structures, with coarse
#: hand-set weights (anions and network formers favoured, as in inorganic
#: databases). These are not fitted to any database; use
#: :meth:`ElementPool.from_crystals` to follow the statistics of real structures.
#: Hydrogen is left out of random compositions on purpose (its incoherent neutron background
#: would swamp crystals that draw it by chance); ``SynthConfig.hydrogen_fraction`` adds it for
#: molecular compositions and for the hydrogen-bearing formulas of a formula table.
DEFAULT_WEIGHTS: dict[str, float] = {
    # anions and network formers
    "O": 12.0, "F": 2.5, "S": 2.5, "Cl": 2.0, "N": 1.5, "Se": 1.2, "Br": 1.0, "I": 1.0,
    "P": 2.0, "Si": 1.5, "B": 1.0, "C": 1.0, "Ge": 0.8, "As": 0.8, "Te": 0.8, "Sb": 0.8,
    # alkali and alkaline-earth metals
    "Li": 1.2, "Na": 1.5, "K": 1.5, "Rb": 0.6, "Cs": 0.6, "Be": 0.3, "Mg": 1.0, "Ca": 1.0,
    "Sr": 0.8, "Ba": 1.0,
    # transition metals
    "Sc": 0.4, "Ti": 0.8, "V": 0.7, "Cr": 0.6, "Mn": 1.0, "Fe": 1.0, "Co": 0.8, "Ni": 0.8,
    "Cu": 1.0, "Zn": 0.8, "Y": 0.5, "Zr": 0.5, "Nb": 0.5, "Mo": 0.6, "Ru": 0.3, "Rh": 0.3,
    "Pd": 0.4, "Ag": 0.6, "Cd": 0.5, "Hf": 0.2, "Ta": 0.3, "W": 0.4, "Re": 0.2, "Os": 0.1,
    "Ir": 0.2, "Pt": 0.4, "Au": 0.3, "Hg": 0.3,
    # main-group metals
    "Al": 1.0, "Ga": 0.6, "In": 0.5, "Tl": 0.3, "Sn": 0.6, "Pb": 0.5, "Bi": 0.5,
    # lanthanides and actinides
    "La": 0.6, "Ce": 0.4, "Pr": 0.3, "Nd": 0.4, "Sm": 0.3, "Eu": 0.3, "Gd": 0.3, "Tb": 0.2,
    "Dy": 0.2, "Ho": 0.2, "Er": 0.2, "Yb": 0.2, "Lu": 0.1, "Th": 0.1, "U": 0.3,
}


#: Elements of the default pool with hydrogen (``SynthConfig.hydrogen_fraction > 0``): read a
#: formula table with these to keep its hydrogen-bearing compositions.
HYDROGEN_POOL_ELEMENTS = frozenset(DEFAULT_WEIGHTS) | {"H"}


def covalent_radius(element: str) -> float:
    """Covalent radius (angstrom) from gemmi's table."""
    import gemmi

    return float(gemmi.Element(element).covalent_r)


def atomic_volume(element: str) -> float:
    """Volume (angstrom^3) an atom of ``element`` takes in a solid, for cell-volume estimates.

    The volume of a sphere whose radius is the mean of the covalent and the van
    der Waals radius. Checked by hand against a few real solids: it lands within
    about 0.6-1.35x of the volume per formula unit of MgO, NaCl, CsCl, SiO2,
    Al2O3, Fe and Cu; the generator multiplies it by a random factor and grows the
    cell when atoms do not fit.
    """
    import gemmi

    el = gemmi.Element(element)
    r = 0.5 * (float(el.covalent_r) + float(el.vdw_r))
    return 4.0 / 3.0 * math.pi * r ** 3


@dataclass(frozen=True)
class ElementPool:
    """Elements to draw species from, with weights and per-element radii and volumes.

    Attributes
    ----------
    elements : tuple of str
        Element symbols.
    weights : ndarray, shape (n,)
        Probabilities (sum to 1).
    radius : ndarray, shape (n,)
        Covalent radius per element (angstrom).
    volume : ndarray, shape (n,)
        Atomic volume per element (angstrom^3), see :func:`atomic_volume`.
    """

    elements: tuple[str, ...]
    weights: np.ndarray
    radius: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        # plain-list copies for the sampling loop (NumPy's per-call cost dominates on a few numbers)
        object.__setattr__(self, "weights_list", [float(w) for w in self.weights])
        object.__setattr__(self, "volume_list", [float(v) for v in self.volume])
        object.__setattr__(self, "cumulative_list", np.cumsum(self.weights).tolist())
        object.__setattr__(self, "index_of", {e: i for i, e in enumerate(self.elements)})

    @classmethod
    def from_weights(cls, weights: Mapping[str, float], source: str = "element weights") -> "ElementPool":
        """Pool from ``{element: weight}``; weights need not be normalised, zero weights are dropped."""
        import gemmi

        from ..crystal import parse_species

        items = []
        for sym, w in weights.items():
            try:
                wf = float(w)
            except (TypeError, ValueError):
                raise InputError(f"weight {w!r} of {sym!r} is not a number", source, "weights") from None
            if not math.isfinite(wf) or wf < 0:
                raise InputError(f"weight {wf!r} of {sym!r} must be finite and >= 0", source, "weights")
            if wf == 0:
                continue
            nuc, _ = parse_species(sym, source, "weights")
            el = element_of(nuc)
            if gemmi.Element(el).covalent_r <= 0:
                raise InputError(f"element {el!r} has no covalent radius in gemmi's table", source, "weights")
            items.append((el, wf))
        merged: Counter[str] = Counter()
        for el, w in items:
            merged[el] += w
        if len(merged) < 1:
            raise InputError("the element pool is empty (no element with weight > 0)", source, "weights")
        els = tuple(sorted(merged))
        w = np.array([merged[e] for e in els], dtype=np.float64)
        return cls(els, w / w.sum(),
                   np.array([covalent_radius(e) for e in els]),
                   np.array([atomic_volume(e) for e in els]))

    def with_element(self, symbol: str, weight: float = 0.0, volume: float | None = None) -> "ElementPool":
        """This pool with ``symbol`` added (weight relative to the pool's total of 1; 0: present for
        formulas and molecular compositions but never drawn at random, every other element keeping
        its probability). ``volume`` replaces :func:`atomic_volume` for it."""
        if symbol in self.elements:
            raise InputError(f"{symbol!r} is in the pool already", "ElementPool.with_element", "symbol")
        if not (math.isfinite(weight) and weight >= 0):
            raise InputError(f"weight {weight!r} must be finite and >= 0", "ElementPool.with_element", "weight")
        els = tuple(sorted(self.elements + (symbol,)))
        k = els.index(symbol)
        w = np.insert(np.asarray(self.weights, dtype=np.float64), k, weight)
        r = np.insert(self.radius, k, covalent_radius(symbol))
        v = np.insert(self.volume, k, atomic_volume(symbol) if volume is None else float(volume))
        return ElementPool(els, w / w.sum(), r, v)

    @classmethod
    def default(cls) -> "ElementPool":
        """The pool of :data:`DEFAULT_WEIGHTS`."""
        return cls.from_weights(DEFAULT_WEIGHTS, "default element pool")

    @classmethod
    def from_crystals(cls, crystals: Iterable, smoothing: float = 0.0) -> "ElementPool":
        """Weights from real structures: the fraction of crystals that contain each element.

        Counting each element once per crystal (not per atom) keeps a few large
        oxides from swamping the statistics. ``smoothing`` (>= 0) is added to the
        count of every element of :data:`DEFAULT_WEIGHTS`, so rare elements stay possible.
        """
        if not (smoothing >= 0 and math.isfinite(smoothing)):
            raise InputError(f"smoothing {smoothing!r} must be finite and >= 0", "ElementPool.from_crystals",
                             "smoothing")
        counts: Counter[str] = Counter()
        n = 0
        for c in crystals:
            n += 1
            counts.update({element_of(s) for s in c.species})
        if n == 0:
            raise InputError("no crystals given to learn element frequencies from", "ElementPool.from_crystals",
                             "crystals")
        if smoothing:
            for el in DEFAULT_WEIGHTS:
                counts[el] += smoothing
        return cls.from_weights(dict(counts), "element frequencies of the given crystals")
