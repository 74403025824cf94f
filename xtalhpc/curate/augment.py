"""Structure-level augmentation that keeps the space group.

Three operations, each symmetric by construction and then checked with spglib:

* **element substitution** within compatible species (:data:`SUBSTITUTION_SERIES`):
  every atom of one element is replaced by a chemically similar element that is
  not already in the structure (two elements merging into one could raise the
  symmetry). The cell is scaled isotropically by
  ``1 + x (r_new / r_old - 1)``, x = fraction of atoms substituted, r = the
  ionic radius in the table (a crude but monotonic volume correction).
* **lattice strain**: a random symmetric strain tensor (components
  N(0, strain_sigma)) averaged over the point-group rotations,
  ``eps' = mean_k C_k eps C_k^T`` with C_k the Cartesian rotations. Cubic cells
  get an isotropic strain, tetragonal a-a-c, monoclinic keeps the unique axis,
  in whatever setting the crystal is written.
* **coordinate jitter**: random Cartesian displacements (N(0, jitter_sigma)
  angstrom per site) projected onto the symmetric subspace by the group average
  ``d'_{p_k(i)} = mean_k R_k d_i`` (p_k = the site permutation of operation k).
  Sites move only along their Wyckoff-free directions (an atom on a mirror
  stays on it, an atom on an inversion centre does not move). All atoms of a
  mixed-occupancy site move together.

The result is accepted only if spglib (symprec :data:`SYMPREC`) finds the same
space-group number as for the input; otherwise the draw is repeated with the
next numbers of the same random stream (up to ``max_tries``), so the outcome is
still a deterministic function of ``(seed, index)``.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ..crystal import Crystal, cell_from_vectors, element_of, lattice_vectors
from ..errors import InputError, XtalhpcError

#: Distance tolerance (angstrom) for spglib and for matching symmetry images.
#: 0.01 A accepts CIF coordinates rounded to 4 decimals in cells up to ~50 A,
#: far below the jitter amplitudes used (0.01-0.05 A), which are symmetric by
#: construction anyway.
SYMPREC = 1e-2

#: Substitution series: species in one series are chemically similar (same
#: group of the periodic table, or the same common oxidation state and
#: coordination). Values: Shannon (1976) effective ionic radius in angstrom,
#: coordination VI, for the common oxidation state given in the comment.
#: Two species may replace each other when their radii differ by at most
#: :data:`RADIUS_TOL`.
SUBSTITUTION_SERIES: dict[str, dict[str, float]] = {
    "alkali (+1)": {"Li": 0.76, "Na": 1.02, "K": 1.38, "Rb": 1.52, "Cs": 1.67},
    "alkaline earth (+2)": {"Ca": 1.00, "Sr": 1.18, "Ba": 1.35, "Pb": 1.19},
    "small divalent (+2, high spin)": {"Mg": 0.72, "Zn": 0.74, "Co": 0.745, "Ni": 0.69, "Fe": 0.78,
                                       "Mn": 0.83, "Cu": 0.73, "Cd": 0.95},
    "rare earth (+3)": {"La": 1.032, "Ce": 1.01, "Pr": 0.99, "Nd": 0.983, "Sm": 0.958, "Eu": 0.947,
                        "Gd": 0.938, "Tb": 0.923, "Dy": 0.912, "Ho": 0.901, "Y": 0.900, "Er": 0.890,
                        "Tm": 0.880, "Yb": 0.868, "Lu": 0.861},
    "group 13 (+3)": {"Al": 0.535, "Ga": 0.62, "In": 0.80, "Tl": 0.885, "Sc": 0.745},
    "group 4 (+4)": {"Ti": 0.605, "Zr": 0.72, "Hf": 0.71, "Sn": 0.69},
    "group 14 (+4)": {"Si": 0.40, "Ge": 0.53},
    "group 5 (+5)": {"V": 0.54, "Nb": 0.64, "Ta": 0.64},
    "group 6 (+6)": {"Cr": 0.44, "Mo": 0.59, "W": 0.60},
    "group 15 (+5)": {"P": 0.38, "As": 0.46, "Sb": 0.60},
    "coinage (+1)": {"Ag": 1.15, "Au": 1.37},
    "platinum group (+2)": {"Pd": 0.86, "Pt": 0.80},
    "halide (-1)": {"F": 1.33, "Cl": 1.81, "Br": 1.96, "I": 2.20},
    "chalcogenide (-2)": {"S": 1.84, "Se": 1.98, "Te": 2.21},
}
#: Largest relative difference of radii |r1 - r2| / max(r1, r2) for a substitution.
RADIUS_TOL = 0.15


class AugmentationError(XtalhpcError):
    """No augmentation that keeps the space group was found within the allowed tries."""


@lru_cache(maxsize=None)
def substitution_partners(element: str) -> tuple[tuple[str, float], ...]:
    """``((partner, r_partner / r_element), ...)`` allowed for ``element`` by the table."""
    out = []
    for series in SUBSTITUTION_SERIES.values():
        if element in series:
            r0 = series[element]
            for el, r in series.items():
                if el != element and abs(r - r0) / max(r, r0) <= RADIUS_TOL:
                    out.append((el, r / r0))
    return tuple(sorted(out))


@dataclass(frozen=True)
class StructureAugmentConfig:
    """What :func:`augment_structure` does.

    Attributes
    ----------
    substitute : try one element substitution (if the structure has a partner).
    strain_sigma : standard deviation of the strain-tensor components
        (dimensionless; 0.01 = 1 %); 0 disables strain.
    max_strain : components are clipped to +-max_strain before symmetrising.
    jitter_sigma : standard deviation of the Cartesian displacement per site
        (angstrom) before projection; 0 disables jitter.
    max_tries : draws before giving up with AugmentationError.
    """

    substitute: bool = True
    strain_sigma: float = 0.01
    max_strain: float = 0.03
    jitter_sigma: float = 0.03
    max_tries: int = 10

    def __post_init__(self) -> None:
        if not (0 <= self.strain_sigma <= 0.1 and 0 <= self.max_strain <= 0.2):
            raise InputError(f"strain_sigma {self.strain_sigma} / max_strain {self.max_strain} outside "
                             "[0, 0.1] / [0, 0.2]", field="strain_sigma")
        if not 0 <= self.jitter_sigma <= 0.5:
            raise InputError(f"jitter_sigma {self.jitter_sigma} A outside [0, 0.5] A", field="jitter_sigma")
        if int(self.max_tries) < 1:
            raise InputError(f"max_tries {self.max_tries} must be >= 1", field="max_tries")


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` under ``seed`` (independent streams, order-free)."""
    if int(seed) < 0 or int(index) < 0:
        raise InputError(f"seed {seed} and index {index} must be >= 0", field="seed")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _sites(crystal: Crystal, tol: float = 1e-3):
    """Group atoms at the same position (fractional distance < tol) into sites.

    Returns (site_of_atom, site_frac, site_type) where site_type is an int id of
    the site's content (species and occupancies), for spglib.
    """
    frac = crystal.frac
    n = crystal.n_atoms
    site_of = np.full(n, -1)
    pos = []
    for i in range(n):
        if site_of[i] >= 0:
            continue
        d = frac[i:] - frac[i]
        d -= np.round(d)
        same = np.flatnonzero(np.max(np.abs(d), axis=1) < tol) + i
        same = same[site_of[same] < 0]
        site_of[same] = len(pos)
        pos.append(frac[i])
    labels = {}
    content: list[list] = [[] for _ in pos]
    for i in range(n):
        content[site_of[i]].append((crystal.species[i], round(float(crystal.occupancy[i]), 3)))
    types = np.array([labels.setdefault(tuple(sorted(c)), len(labels) + 1) for c in content], dtype=int)
    return site_of, np.array(pos), types


def _spglib_dataset(lattice, positions, types, symprec: float = SYMPREC):
    import spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return spglib.get_symmetry_dataset((np.asarray(lattice), np.asarray(positions), np.asarray(types)),
                                           symprec=symprec)


def detect_space_group(crystal: Crystal, symprec: float = SYMPREC) -> int | None:
    """Space-group number spglib finds for the crystal (mixed sites as one type), or None."""
    _, pos, types = _sites(crystal)
    ds = _spglib_dataset(lattice_vectors(crystal.cell), pos, types, symprec)
    return None if ds is None else int(ds.number)


class StructureAugmenter:
    """Augmented variants of one crystal; the symmetry analysis is done once.

    >>> aug = StructureAugmenter(crystal)
    >>> new_crystal, record = aug.sample(seed=7, index=3)
    """

    def __init__(self, crystal: Crystal, config: StructureAugmentConfig | None = None):
        self.crystal = crystal
        self.config = config or StructureAugmentConfig()
        self.site_of, self.site_frac, self.types = _sites(crystal)
        self.L = lattice_vectors(crystal.cell)
        ds = _spglib_dataset(self.L, self.site_frac, self.types)
        src = crystal.source or crystal.name or None
        if ds is None:
            raise InputError("spglib finds no symmetry for this structure (overlapping atoms?)", src, "atoms")
        self.space_group = int(ds.number)
        self.rotations = np.asarray(ds.rotations, dtype=float)
        self.translations = np.asarray(ds.translations, dtype=float)
        self.perm = self._permutations()
        Linv_T = np.linalg.inv(self.L).T
        self.cart_rot = np.einsum("ij,kjl,lm->kim", self.L.T, self.rotations, Linv_T)

    def _permutations(self) -> np.ndarray:
        """perm[k, i] = site onto which operation k maps site i."""
        X, L = self.site_frac, self.L
        nops, n = len(self.rotations), len(X)
        perm = np.empty((nops, n), dtype=int)
        groups = [np.flatnonzero(self.types == t) for t in np.unique(self.types)]
        for k in range(nops):
            Y = X @ self.rotations[k].T + self.translations[k]
            for g in groups:  # an operation maps sites onto sites of the same type only
                # nearest periodic image in fractional space, one axis at a time (2-D arrays are
                # much faster than an (n, n, 3) block), then the chosen pair is checked in angstrom
                yg, xg = Y[g], X[g]
                sq = np.zeros((len(g), len(g)))
                for ax in range(3):
                    d = yg[:, ax, None] - xg[None, :, ax]
                    d -= np.rint(d)
                    sq += d * d
                j = np.argmin(sq, axis=1)
                dd = yg - xg[j]
                dd -= np.rint(dd)
                dist = np.linalg.norm(dd @ L, axis=1)
                if np.any(dist > 2 * SYMPREC + 1e-9):
                    raise InputError("a symmetry image of a site matches no site within the tolerance",
                                     self.crystal.source or self.crystal.name or None, "atoms")
                perm[k, g] = g[j]
        return perm

    # ---- the three operations ----------------------------------------------------
    def symmetrize_displacement(self, d_frac: np.ndarray) -> np.ndarray:
        """Group average of a per-site fractional displacement field (n_sites, 3)."""
        out = np.zeros_like(d_frac)
        for k in range(len(self.rotations)):
            np.add.at(out, self.perm[k], d_frac @ self.rotations[k].T)
        return out / len(self.rotations)

    def symmetrize_strain(self, eps: np.ndarray) -> np.ndarray:
        """Point-group average of a Cartesian strain tensor (3, 3)."""
        return np.einsum("kij,jl,kml->im", self.cart_rot, eps, self.cart_rot) / len(self.cart_rot)

    def _substitution(self, rng: np.random.Generator):
        from ..scattering import neutron_b

        present = {element_of(s) for s in self.crystal.species}
        options = []
        for el in sorted(present):
            for partner, ratio in substitution_partners(el):
                if partner in present:
                    continue
                try:
                    neutron_b(partner)
                except XtalhpcError:
                    continue
                options.append((el, partner, ratio))
        if not options:
            return None
        return options[int(rng.integers(len(options)))]

    def sample(self, seed: int, index: int) -> tuple[Crystal, dict]:
        """One augmented crystal and the record of what was applied.

        Deterministic in ``(seed, index)``. The record holds the operations
        (substitution, the symmetrised strain tensor, the rms and largest
        displacement in angstrom), the space group found, and the draws needed.
        """
        cfg = self.config
        rng = item_rng(seed, index)
        c0 = self.crystal
        for attempt in range(1, cfg.max_tries + 1):
            ops: list[dict] = []
            species = list(c0.species)
            bl = None if c0.scattering_length is None else c0.scattering_length.copy()
            L = self.L.copy()
            if cfg.substitute:
                sub = self._substitution(rng)
                if sub is not None:
                    el, partner, ratio = sub
                    hit = np.array([element_of(s) == el for s in species])
                    species = [partner if h else s for s, h in zip(species, hit)]
                    if bl is not None:
                        bl[hit] = np.nan
                    x = float(c0.occupancy[hit].sum() / c0.occupancy.sum())
                    scale = 1.0 + x * (ratio - 1.0)
                    L = L * scale
                    ops.append({"op": "substitute", "from": el, "to": partner, "radius_ratio": ratio,
                                "atom_fraction": x, "cell_scale": scale})
            if cfg.strain_sigma > 0:
                e = np.clip(rng.normal(0.0, cfg.strain_sigma, (3, 3)), -cfg.max_strain, cfg.max_strain)
                eps = self.symmetrize_strain(0.5 * (e + e.T))
                L = L @ (np.eye(3) + eps)
                ops.append({"op": "strain", "tensor": [round(float(v), 8) for v in eps.ravel()]})
            site_frac = self.site_frac
            if cfg.jitter_sigma > 0:
                d_cart = rng.normal(0.0, cfg.jitter_sigma, site_frac.shape)
                d_frac = self.symmetrize_displacement(d_cart @ np.linalg.inv(self.L))
                site_frac = site_frac + d_frac
                disp = np.linalg.norm(d_frac @ L, axis=1)
                ops.append({"op": "jitter", "sigma_A": cfg.jitter_sigma,
                            "rms_A": float(np.sqrt(np.mean(disp**2))), "max_A": float(disp.max())})
            new_cell = cell_from_vectors(L)
            new_L = lattice_vectors(new_cell)
            # the atoms of one site move together
            frac = c0.frac + (site_frac - self.site_frac)[self.site_of]
            # a substitution by an element not yet present keeps the partition of sites into types
            ds = _spglib_dataset(new_L, site_frac, self.types)
            found = None if ds is None else int(ds.number)
            if found == self.space_group:
                record = {"seed": int(seed), "index": int(index), "source": c0.source or c0.name,
                          "space_group": found, "tries": attempt, "ops": ops}
                notes = c0.notes + (f"augmented (seed {seed}, index {index}): "
                                    + ", ".join(o["op"] for o in ops),)
                new = c0.replace(cell=new_cell, frac=frac, species=tuple(species), scattering_length=bl,
                                 name=f"{c0.name}~aug{index}", notes=notes)
                return new, record
        raise AugmentationError(f"{c0.name or c0.source}: no augmentation keeping space group "
                                f"{self.space_group} in {cfg.max_tries} draws (seed {seed}, index {index})")


def augment_structure(crystal: Crystal, seed: int, index: int,
                      config: StructureAugmentConfig | None = None) -> tuple[Crystal, dict]:
    """One augmented variant of ``crystal`` (see :class:`StructureAugmenter`)."""
    return StructureAugmenter(crystal, config).sample(seed, index)


def config_dict(config: StructureAugmentConfig) -> dict:
    """The config as a plain dict (stored with datasets)."""
    return asdict(config)
