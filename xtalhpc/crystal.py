"""The one crystal type every reader produces and every kernel consumes.

A :class:`Crystal` holds the *full unit cell* (symmetry-expanded, special
positions merged), so the structure factor is a plain sum over its atoms and
systematic absences come out as F = 0 without tables.

Units: cell lengths in angstrom, angles in degrees, fractional coordinates,
isotropic displacement as B = 8 pi^2 <u^2> in angstrom^2, scattering-length
overrides in fm.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from itertools import repeat

import numpy as np

from .errors import ScatteringError, StructureError
from .spacegroups import bravais_lattice, check_space_group, crystal_system

#: B (angstrom^2) used when a file gives no displacement parameter. 0.5 A^2
#: (Uiso ~ 0.0063 A^2) is typical of inorganic solids near room temperature;
#: readers record where the default was used in ``Crystal.notes``.
DEFAULT_B_ISO = 0.5

_SPECIES_RE = re.compile(r"^(?P<mass>\d+)?(?P<el>[A-Z][a-z]?)(?P<charge>\d*[+-]|[+-]\d*)?$")


def parse_species(symbol: str, source: str | None = None, field_name: str | None = None) -> tuple[str, int]:
    """Split a species symbol into ``(nuclide, charge)``.

    ``"Fe3+" -> ("Fe", 3)``, ``"O2-" -> ("O", -2)``, ``"D" -> ("D", 0)``,
    ``"7Li" -> ("7Li", 0)``. The nuclide is an element symbol, optionally with
    a mass number in front (an isotope), or D / T for hydrogen isotopes. It is
    checked against ``periodictable``; anything else raises ScatteringError.
    """
    got = _species_parsed(str(symbol).strip())
    if got is not None:
        return got
    return _parse_species(symbol, source, field_name)  # raises, with the symbol as given


@lru_cache(maxsize=4096)
def _species_parsed(symbol: str) -> tuple[str, int] | None:
    """:func:`parse_species` of a stripped symbol, cached (readers and every Crystal parse the
    same few dozen symbols over and over); None where it is not a species (the caller then
    raises through :func:`_parse_species`, whose message names the symbol as given)."""
    try:
        return _parse_species(symbol)
    except ScatteringError:
        return None


def _parse_species(symbol: str, source: str | None = None, field_name: str | None = None) -> tuple[str, int]:
    """:func:`parse_species`, uncached."""
    import periodictable

    s = str(symbol).strip()
    m = _SPECIES_RE.match(s)
    if not m:
        raise ScatteringError(
            f"species {symbol!r} is not an element symbol; allowed: element symbols such as 'Fe', "
            "isotopes such as 'D', '7Li', '11B', optional charge such as 'O2-' or 'Fe3+'",
            source, field_name)
    el, mass, charge_s = m.group("el"), m.group("mass"), m.group("charge") or ""
    if el in ("D", "T") and mass is None:
        nuclide = el
    else:
        try:
            element = periodictable.elements.symbol(el)
        except ValueError:
            raise ScatteringError(f"unknown element {el!r} in species {symbol!r}", source, field_name) from None
        if element.number == 0:
            raise ScatteringError(f"species {symbol!r} is not a chemical element", source, field_name)
        nuclide = el
        if mass is not None:
            try:
                element[int(mass)]
            except (KeyError, ValueError):
                raise ScatteringError(f"unknown isotope {mass}{el} in species {symbol!r}", source, field_name) from None
            nuclide = f"{int(mass)}{el}"
    charge = 0
    if charge_s:
        sign = -1 if "-" in charge_s else 1
        digits = charge_s.strip("+-")
        charge = sign * (int(digits) if digits else 1)
    return nuclide, charge


def element_of(nuclide: str) -> str:
    """Element symbol of a nuclide (``"7Li" -> "Li"``, ``"D" -> "H"``)."""
    if nuclide in ("D", "T"):
        return "H"
    return nuclide.lstrip("0123456789")


def wrap_unit(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates reduced into [0, 1): ``x - floor(x)``, with the value 1.0 that this
    gives for a tiny negative x (-1e-17 - (-1) rounds to 1) set to 0, so that wrapping twice
    changes nothing."""
    out = frac - np.floor(frac)
    out[out >= 1.0] = 0.0
    return out


def cell_metric(cell) -> np.ndarray:
    """Real-space metric tensor G (3x3, angstrom^2) of ``(a, b, c, alpha, beta, gamma)``."""
    a, b, c, al, be, ga = (float(x) for x in cell)
    ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
    return np.array([[a * a, a * b * cg, a * c * cb],
                     [a * b * cg, b * b, b * c * ca],
                     [a * c * cb, b * c * ca, c * c]])


def cell_volume(cell) -> float:
    """Unit-cell volume in angstrom^3; NaN or <= 0 for impossible angle combinations."""
    det = float(np.linalg.det(cell_metric(cell)))
    return math.sqrt(det) if det > 0 else (0.0 if det == 0 else -math.sqrt(-det))


def rel_volume_sq(alpha: float, beta: float, gamma: float) -> float:
    """(V / abc)^2 = 1 - cos^2 alpha - cos^2 beta - cos^2 gamma + 2 cos alpha cos beta cos gamma
    (angles in degrees), for quick bounds: it equals det(G) / (abc)^2 of :func:`cell_volume` to
    rounding (~1e-15), so a value clearly above a bound needs no determinant."""
    ca, cb, cg = math.cos(math.radians(alpha)), math.cos(math.radians(beta)), math.cos(math.radians(gamma))
    return 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg


def lattice_vectors(cell) -> np.ndarray:
    """Rows a, b, c in Cartesian angstrom (a along x, b in the xy plane)."""
    a, b, c, al, be, ga = (float(x) for x in cell)
    ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
    sg = math.sin(math.radians(ga))
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz = math.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, cz]])


def cell_from_vectors(vectors) -> np.ndarray:
    """``(a, b, c, alpha, beta, gamma)`` of lattice vectors given as rows."""
    v = np.asarray(vectors, dtype=float)
    a, b, c = (float(np.linalg.norm(x)) for x in v)

    def ang(x, y, nx, ny):
        return math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(x, y)) / (nx * ny)))))

    return np.array([a, b, c, ang(v[1], v[2], b, c), ang(v[0], v[2], a, c), ang(v[0], v[1], a, b)])


def _check_cell_values(cell: np.ndarray, src) -> None:
    """The checks of a Crystal's 6 cell numbers, in order, each with its message (run where the
    one-line test of :meth:`Crystal.__post_init__` fails)."""
    if not np.all(np.isfinite(cell)):
        raise StructureError(f"cell {cell.tolist()} has a non-finite value", src, "cell")
    if np.any(cell[:3] <= 0):
        raise StructureError(f"cell lengths {cell[:3].tolist()} must be > 0 angstrom", src, "cell")
    if np.any(cell[3:] <= 0) or np.any(cell[3:] >= 180):
        raise StructureError(f"cell angles {cell[3:].tolist()} must lie in (0, 180) degrees", src, "cell")


#: Fields a :meth:`Crystal.replace` may change without the atoms being validated again.
LABEL_FIELDS = frozenset({"notes", "space_group", "space_group_found", "space_group_declared", "symmetry"})


@dataclass(frozen=True, eq=False)
class Crystal:
    """A crystal structure as the full unit cell.

    Attributes
    ----------
    cell : ndarray, shape (6,)
        a, b, c (angstrom), alpha, beta, gamma (degrees).
    frac : ndarray, shape (n, 3)
        Fractional coordinates of every atom in the unit cell, wrapped into [0, 1).
    species : tuple of str
        Nuclide per atom: element symbol, or isotope such as ``"D"``, ``"7Li"``.
    occupancy : ndarray, shape (n,)
        Site occupancy, 0 < occ <= 1.
    b_iso : ndarray, shape (n,)
        Isotropic displacement B = 8 pi^2 Uiso (angstrom^2), >= 0.
    charge : ndarray, shape (n,)
        Formal charge per atom (used by the X-ray form factors; neutrons ignore it).
    space_group : int or None
        International Tables number 1-230 if known: the *label*. The group the source
        declares, except where it declares none or P1 and symmetry finding
        (:func:`detect_symmetry`) found one: then the found group (a P1 export of a Pnma
        crystal is labelled Pnma, the symmetry its pattern shows).
    source : str
        Where the structure came from (file path, database id).
    name : str
        A short identifier (CIF data block, file stem, generator id).
    scattering_length : ndarray or None
        Per-atom bound coherent scattering length override (fm); NaN entries
        fall back to the tables. Used to compare with codes that carry their own tables.
    notes : tuple of str
        What a reader assumed (defaults used, anisotropic ADPs reduced, ...).
    symmetry : ndarray or None, shape (m, 3, 4)
        Space-group operations [R | t] in this cell's fractional basis (x' = R x + t) that
        map the atoms onto themselves: the operators the atoms were expanded with, or
        found by spglib. The simulator computes |F|^2 only for one reflection per Laue
        orbit when they are given; None means no symmetry is assumed (always correct).
        Their rotations must preserve the cell metric (checked here).
    space_group_declared : int or None
        The group the source declared (a CIF's operators or symbol, a generator's group);
        None where it declares none (a POSCAR, a CIF without symmetry data). Defaults to
        ``space_group`` when neither this nor ``space_group_found`` is given.
    space_group_found : int or None
        The group :func:`detect_symmetry` found (spglib's identification of the operations
        that hold at :data:`FIND_SYMPREC`) for a structure given without operations; None
        where no search was made.
    """

    cell: np.ndarray
    frac: np.ndarray
    species: tuple[str, ...]
    occupancy: np.ndarray
    b_iso: np.ndarray
    charge: np.ndarray | None = None
    space_group: int | None = None
    source: str = ""
    name: str = ""
    scattering_length: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    symmetry: np.ndarray | None = None
    space_group_declared: int | None = None
    space_group_found: int | None = None

    def __post_init__(self) -> None:
        src = self.source or self.name or None
        set_ = object.__setattr__
        cell = np.asarray(self.cell, dtype=np.float64).reshape(-1)
        if cell.shape != (6,):
            raise StructureError(f"cell needs 6 numbers (a, b, c, alpha, beta, gamma), got {cell.size}", src, "cell")
        a, b, c, al, be, ga = cell.tolist()
        if not (0.0 < a < math.inf and 0.0 < b < math.inf and 0.0 < c < math.inf and 0.0 < al < 180.0
                and 0.0 < be < 180.0 and 0.0 < ga < 180.0):
            _check_cell_values(cell, src)  # raises the message of the first check that fails
        # Relative test: a flat cell (alpha + beta + gamma = 360) leaves det(G) ~ 1e-15 in float64.
        # (V / abc)^2 from the angles first: far above the bound (lengths where G cannot overflow
        # or underflow), det(G) is not needed.
        if not (1e-30 < min(a, b, c) and max(a, b, c) < 1e30 and rel_volume_sq(al, be, ga) > 1e-10):
            vol = cell_volume(cell)
            if not vol > 1e-6 * cell[0] * cell[1] * cell[2]:
                raise StructureError(f"cell {cell.tolist()} has zero or negative volume ({vol:.3g} A^3)", src, "cell")
        set_(self, "cell", cell)

        frac = np.asarray(self.frac, dtype=np.float64)
        if frac.ndim != 2 or frac.shape[1] != 3:
            raise StructureError(f"fractional coordinates must have shape (n, 3), got {frac.shape}", src, "atoms")
        n = frac.shape[0]
        if n == 0:
            raise StructureError("the structure has no atoms", src, "atoms")
        if not np.all(np.isfinite(frac)):
            raise StructureError("an atom has a non-finite fractional coordinate", src, "atoms")
        set_(self, "frac", wrap_unit(frac))

        species = tuple(map(str, self.species))
        if len(species) != n:
            raise StructureError(f"{len(species)} species for {n} atoms", src, "species")
        # parse each distinct symbol once, in order of first appearance (cells repeat species)
        parsed = {s: parse_species(s, src, "species") for s in dict.fromkeys(species)}
        if self.charge is None:
            charged = {s: q for s, (_, q) in parsed.items() if q}
            charge = (np.fromiter(map(charged.get, species, repeat(0)), np.int8, n) if charged
                      else np.zeros(n, dtype=np.int8))
        else:
            charge = np.asarray(self.charge, dtype=np.int8)
        if any(nuc != s for s, (nuc, _) in parsed.items()):
            species = tuple(map({s: nuc for s, (nuc, _) in parsed.items()}.__getitem__, species))
        set_(self, "species", species)
        set_(self, "charge", charge)

        occ = np.asarray(self.occupancy, dtype=np.float64).reshape(-1)
        if occ.shape != (n,):
            raise StructureError(f"{occ.size} occupancies for {n} atoms", src, "occupancy")
        bad = np.flatnonzero(~(occ > 0) | ~(occ <= 1.0 + 1e-6))
        if bad.size:
            i = int(bad[0])
            raise StructureError(f"occupancy {occ[i]:g} of atom {i} ({species[i]}) is outside (0, 1]", src, "occupancy")
        set_(self, "occupancy", np.minimum(occ, 1.0))

        biso = np.asarray(self.b_iso, dtype=np.float64).reshape(-1)
        if biso.shape != (n,):
            raise StructureError(f"{biso.size} displacement parameters for {n} atoms", src, "b_iso")
        bad = np.flatnonzero(~np.isfinite(biso) | (biso < 0))
        if bad.size:
            i = int(bad[0])
            raise StructureError(f"B_iso {biso[i]:g} A^2 of atom {i} ({species[i]}) must be finite and >= 0", src, "b_iso")
        set_(self, "b_iso", biso)

        if self.scattering_length is not None:
            bl = np.asarray(self.scattering_length, dtype=np.float64).reshape(-1)
            if bl.shape != (n,):
                raise StructureError(f"{bl.size} scattering lengths for {n} atoms", src, "scattering_length")
            set_(self, "scattering_length", bl)
        self._check_labels(src)

    def _check_labels(self, src) -> None:
        """The label fields (groups, notes, symmetry) of __post_init__: validated here, also
        by a :meth:`replace` that changes nothing else."""
        set_ = object.__setattr__
        if self.space_group is not None:
            set_(self, "space_group", check_space_group(self.space_group, src, "space_group"))
        if self.space_group_found is not None:
            set_(self, "space_group_found", check_space_group(self.space_group_found, src, "space_group_found"))
        if self.space_group_declared is not None:
            set_(self, "space_group_declared", check_space_group(self.space_group_declared, src,
                                                                 "space_group_declared"))
        elif self.space_group_found is None:
            set_(self, "space_group_declared", self.space_group)
        set_(self, "notes", tuple(self.notes))
        if self.symmetry is not None:
            set_(self, "symmetry", check_symmetry_metric(self.symmetry, self.cell, src))
            # The Laue group is a property of the crystal: found once here, read by every
            # simulation of it (xtalhpc.simulate.pack).
            set_(self, "_laue", laue_rotations(self.symmetry))
        else:
            set_(self, "_laue", None)

    # ---- derived quantities -------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return int(self.frac.shape[0])

    @property
    def volume(self) -> float:
        """Unit-cell volume in angstrom^3."""
        return cell_volume(self.cell)

    @property
    def formula(self) -> str:
        """Reduced chemical formula, elements in Hill order, occupancies counted."""
        counts: Counter[str] = Counter()
        el = {s: element_of(s) for s in set(self.species)}
        for s, o in zip(self.species, self.occupancy.tolist()):  # summed in atom order
            counts[el[s]] += o
        return reduced_formula(counts)

    @property
    def crystal_system(self) -> str | None:
        return None if self.space_group is None else crystal_system(self.space_group)

    @property
    def bravais_lattice(self) -> str | None:
        return None if self.space_group is None else bravais_lattice(self.space_group)

    def replace(self, **changes) -> "Crystal":
        """A copy with some fields changed (validated again). Where only label fields change
        (:data:`LABEL_FIELDS`: groups, notes, symmetry) the atoms, already validated, are
        shared with this crystal and only those fields are checked (symmetry finding labels
        every P1 input this way)."""
        if changes and LABEL_FIELDS.issuperset(changes):
            new = object.__new__(Crystal)
            new.__dict__.update(self.__dict__)
            new.__dict__.update(changes)
            new._check_labels(new.source or new.name or None)
            return new
        kw = {f: getattr(self, f) for f in self.__dataclass_fields__}
        kw.update(changes)
        return Crystal(**kw)


#: Relative tolerance on R^T G R = G for a symmetry rotation R (cells from CIFs carry ~1e-5 rounding).
METRIC_TOL = 1e-4


def check_symmetry_metric(ops, cell, source: str | None = None) -> np.ndarray:
    """Validate space-group operations (m, 3, 4) against the cell: integer rotations preserving G."""
    ops = np.asarray(ops, dtype=np.float64)
    if ops.ndim != 3 or ops.shape[1:] != (3, 4) or ops.shape[0] == 0:
        raise StructureError(f"symmetry operations must have shape (m, 3, 4), got {ops.shape}", source, "symmetry")
    got = _rounded_ops(np.ascontiguousarray(ops).tobytes(), ops.shape[0])
    if got is None:
        raise StructureError("symmetry rotations must be integer matrices in the cell's basis", source, "symmetry")
    out, r = got  # centring repeats rotations: the distinct ones
    dev = metric_deviations(cell, r)[0]
    bad = dev > METRIC_TOL
    if bad.any():
        raise StructureError(f"{int(bad.sum())} of {len(r)} distinct symmetry rotations do not preserve the cell metric "
                             "(operators of another setting?)", source, "symmetry")
    return out.copy()


@lru_cache(maxsize=4096)
def _rounded_ops(key: bytes, m: int):
    """The operations (m, 3, 4 float64 bytes) with their rotations rounded, and the distinct
    rotations (k, 3, 3) as floats; None where a rotation is not an integer matrix (to 1e-6).
    Cached (read-only): a dataset repeats a few hundred settings."""
    ops = np.frombuffer(key, dtype=np.float64).reshape(m, 3, 4)
    rounded = np.round(ops[:, :, :3])
    if np.any(np.abs(ops[:, :, :3] - rounded) > 1e-6):
        return None
    out = ops.copy()
    out[:, :, :3] = rounded
    r = _distinct_rotations_cached(rounded.astype(np.int64).tobytes()).astype(np.float64)
    out.flags.writeable = False
    r.flags.writeable = False
    return out, r


def distinct_rotations(rot: np.ndarray) -> np.ndarray:
    """Distinct integer rotations (k, 3, 3), as floats, of rotations ``rot`` (m, 3, 3) with
    integer entries (centring repeats each rotation); cached, read-only."""
    return _distinct_float_rotations(np.round(rot).astype(np.int64).tobytes())


@lru_cache(maxsize=4096)
def _distinct_float_rotations(key: bytes) -> np.ndarray:
    r = _distinct_rotations_cached(key).astype(np.float64)
    r.flags.writeable = False
    return r


def metric_deviations(cell, rot: np.ndarray):
    """For rotations ``rot`` (k, 3, 3): (|R^T G R - G| max per rotation / max|G|, the k
    transformed metrics R^T G R). 0 for a rotation the cell fits."""
    g = cell_metric(cell)
    rg = np.swapaxes(rot, 1, 2) @ g @ rot
    return np.abs(rg - g).max(axis=(1, 2)) / np.abs(g).max(), rg


def cell_from_metric(g: np.ndarray) -> np.ndarray:
    """(a, b, c, alpha, beta, gamma) of a metric tensor G."""
    ln = np.sqrt(np.diag(g))
    cosines = (g[1, 2] / (ln[1] * ln[2]), g[0, 2] / (ln[0] * ln[2]), g[0, 1] / (ln[0] * ln[1]))
    return np.concatenate([ln, np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0)))])


def symmetry_maps_atoms(c: "Crystal", tol: float = 1e-3) -> bool:
    """True if every operation of ``c.symmetry`` maps each atom onto an atom of the same
    species, occupancy and B (fractional tolerance ``tol``). O(m n^2): for tests and readers."""
    if c.symmetry is None:
        return True
    for op in c.symmetry:
        x = c.frac @ op[:, :3].T + op[:, 3]
        d = x[:, None, :] - c.frac[None, :, :]
        d -= np.round(d)
        close = np.all(np.abs(d) < tol, axis=2)
        same = ((np.asarray(c.species)[:, None] == np.asarray(c.species)[None, :])
                & (np.abs(c.occupancy[:, None] - c.occupancy[None, :]) < 1e-6)
                & (np.abs(c.b_iso[:, None] - c.b_iso[None, :]) < 1e-6))
        if not np.all(np.any(close & same, axis=1)):
            return False
    return True


def symmetrize(c: "Crystal", symmetry, tol: float = 1e-3) -> "Crystal":
    """``c`` with positions averaged over the operations ``symmetry`` (m, 3, 4) and that
    symmetry attached, so the atoms are symmetric to rounding and the simulator may use
    one reflection per Laue orbit. Raises StructureError if an operation does not map every
    atom onto one of the same species, occupancy and B within ``tol`` (fractional, per axis
    in the periodic sense). The partner search is the compiled cell-list kernel
    ``xtalhpc_kernels.symmetry.symmetry_partners`` (O(m n) at ordinary densities).
    """
    ops, cell, frac = symmetrize_arrays(c.cell, c.frac, c.species, c.occupancy, c.b_iso, symmetry, tol,
                                        c.source or c.name)
    return c.replace(cell=cell, frac=frac, symmetry=ops)


def symmetrize_arrays(cell, frac, species, occupancy, b_iso, symmetry, tol: float = 1e-3,
                      source: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`symmetrize` on the arrays of a crystal (``species`` the nuclides, ``frac`` wrapped
    into [0, 1)), for a reader that builds its Crystal once: (checked operations, averaged
    cell, averaged positions, not yet wrapped)."""
    from xtalhpc_kernels.symmetry import symmetry_partners

    ops = check_symmetry_metric(symmetry, cell, source)
    n = len(frac)
    ids: dict = {}  # species ids in order of first appearance (the kernel only compares them)
    kind = np.fromiter([ids.setdefault(s, len(ids)) for s in species], np.int64, n)
    rot = np.ascontiguousarray(ops[:, :, :3])
    trans = np.ascontiguousarray(ops[:, :, 3])
    partner = np.empty((len(ops), n), dtype=np.int64)
    acc = np.zeros((n, 3))
    bad = symmetry_partners(np.ascontiguousarray(frac, dtype=np.float64), kind,
                            np.ascontiguousarray(occupancy, dtype=np.float64),
                            np.ascontiguousarray(b_iso, dtype=np.float64), rot, trans,
                            inverse_rotations(rot.tobytes(), len(rot)).copy(), float(tol), partner, acc)
    if bad >= 0:
        op, j = ops[bad // n], bad % n
        raise StructureError(f"symmetry operation {np.round(op, 4).tolist()} maps atom {j} ({species[j]}) onto no "
                             f"atom of the same species, occupancy and B within {tol:.3g} (fractional)", source,
                             "symmetry")
    return ops, symmetrised_cell(cell, ops[:, :, :3]), frac + acc / len(ops)


def symmetrised_cell(cell, rot: np.ndarray) -> np.ndarray:
    """The cell whose metric is the mean of R^T G R over the rotations ``rot`` (m, 3, 3; the
    distinct ones: centring repeats each equally often), so symmetry-equivalent reflections
    have exactly equal d (a CIF cell rounded to 1e-4 would otherwise split them by ~1e-3 deg)."""
    return cell_from_metric(metric_deviations(cell, distinct_rotations(rot))[1].mean(axis=0))


@lru_cache(maxsize=4096)
def inverse_rotations(key: bytes, m: int) -> np.ndarray:
    """np.linalg.inv of m rotations (float64 bytes), cached by them (a dataset repeats a few
    hundred settings); read-only."""
    out = np.linalg.inv(np.frombuffer(key, dtype=np.float64).reshape(m, 3, 3))
    out.flags.writeable = False
    return out


def with_symmetry(c: "Crystal", symmetry, tol_angstrom: float = 0.1, what: str = "operators") -> "Crystal":
    """Attach ``symmetry`` by :func:`symmetrize` when the atoms fit it within ``tol_angstrom``;
    otherwise return ``c`` unchanged with a note (no symmetry is then assumed: always correct).
    Notes the largest shift when positions move by more than 1e-4 angstrom (rounded special
    positions such as 0.3333 moved onto 1/3)."""
    got, note = symmetry_fit(c.cell, c.frac, c.species, c.occupancy, c.b_iso, symmetry, tol_angstrom, what,
                             c.source or c.name)
    if got is None:
        return c.replace(notes=c.notes + (note,))
    ops, cell, frac = got
    return c.replace(cell=cell, frac=frac, symmetry=ops, notes=c.notes + ((note,) if note else ()))


def symmetry_fit(cell, frac, species, occupancy, b_iso, symmetry, tol_angstrom: float, what: str,
                 source: str | None = None):
    """:func:`with_symmetry` on arrays (``frac`` wrapped, ``species`` the nuclides):
    ``((operations, cell, positions), note or None)`` when the atoms fit (positions not yet
    wrapped: the Crystal wraps them), ``(None, note)`` when they do not."""
    try:
        ops, new_cell, new_frac = symmetrize_arrays(cell, frac, species, occupancy, b_iso, symmetry,
                                                    tol_angstrom / float(min(cell[:3])), source)
    except StructureError as exc:
        return None, f"symmetry not attached ({what}): {exc.message}"
    shift = wrap_unit(new_frac) - frac  # the positions as the Crystal will hold them
    shift -= np.round(shift)
    moved = float(np.max(np.linalg.norm(shift @ lattice_vectors(cell), axis=1)))
    note = f"positions symmetrised with the {what} (largest shift {moved:.2g} A)" if moved > 1e-4 else None
    return (ops, new_cell, new_frac), note


_POW3 = 3 ** np.arange(9)


@lru_cache(maxsize=4096)
def _distinct_rotations_cached(key: bytes) -> np.ndarray:
    """:func:`_distinct_rotations` of rotations given as int64 bytes, cached (a dataset repeats
    a few hundred settings)."""
    out = _distinct_rotations(np.frombuffer(key, dtype=np.int64).reshape(-1, 9))
    out.flags.writeable = False
    return out


def _distinct_rotations(rot9: np.ndarray) -> np.ndarray:
    """Distinct rows of integer 3x3 matrices given as (m, 9): entries in {-1, 0, 1} (every
    conventional-cell rotation) as base-3 codes and a 1-D unique, else a 2-D unique."""
    if rot9.size and np.abs(rot9).max() <= 1:
        codes = np.unique((rot9 + 1) @ _POW3)
        return ((codes[:, None] // _POW3) % 3 - 1).reshape(-1, 3, 3)
    return np.unique(rot9, axis=0).reshape(-1, 3, 3)


def laue_rotations(symmetry: np.ndarray) -> np.ndarray:
    """See :func:`_laue_rotations`; cached by the operators' bytes, since a dataset repeats
    the same few hundred space-group settings over millions of structures."""
    ops = np.ascontiguousarray(symmetry, dtype=np.float64)
    return _laue_cached(ops.tobytes(), ops.shape[0])


@lru_cache(maxsize=4096)
def _laue_cached(key: bytes, m: int) -> np.ndarray:
    out = _laue_rotations(np.frombuffer(key, dtype=np.float64).reshape(m, 3, 4))
    out.flags.writeable = False
    return out


def inversion_translation(symmetry: np.ndarray | None) -> np.ndarray | None:
    """Translation tau of an inversion x' = -x + tau among the operations (the first such;
    centres of inversion at tau / 2), or None where there is none (or no operations). Cached
    by the operators' bytes, like :func:`laue_rotations`."""
    if symmetry is None:
        return None
    ops = np.ascontiguousarray(symmetry, dtype=np.float64)
    return _inversion_cached(ops.tobytes(), ops.shape[0])


@lru_cache(maxsize=4096)
def _inversion_cached(key: bytes, m: int) -> np.ndarray | None:
    ops = np.frombuffer(key, dtype=np.float64).reshape(m, 3, 4)
    hit = np.flatnonzero((np.round(ops[:, :, :3]) == -np.eye(3)).all(axis=(1, 2)))
    if not hit.size:
        return None
    tau = ops[hit[0], :, 3] - np.floor(ops[hit[0], :, 3])
    tau.flags.writeable = False
    return tau


def _laue_rotations(symmetry: np.ndarray) -> np.ndarray:
    """Distinct rotations of the Laue group (point group plus inversion) acting on row
    vectors of Miller indices: h' = h R, with R the rotation of x' = R x + t.

    Rotations of a conventional cell have entries in {-1, 0, 1} (hexagonal ones too), so
    each is a 9-digit base-3 number and the distinct ones are found by a 1-D unique (fast:
    this runs for every structure a batch packs). Other entries fall back to a 2-D unique.
    """
    rot = np.round(np.asarray(symmetry)[:, :, :3]).astype(np.int64).reshape(-1, 9)
    uniq = _distinct_rotations(np.concatenate([rot, -rot])).reshape(-1, 9)
    # Rotations closest to the identity first (one sign flip, one swap, ...): they are the ones
    # that show a reflection is not its orbit's canonical member, so the kernels' test exits early.
    dist = np.abs(uniq - np.eye(3, dtype=np.int64).reshape(9)).sum(axis=1)
    return uniq[np.lexsort((np.arange(len(uniq)), dist))].reshape(-1, 3, 3)


def reduced_formula(counts: dict[str, float]) -> str:
    """Hill-order reduced formula of element counts; counts are rounded to 1e-3."""
    items = {el: round(float(c), 3) for el, c in counts.items() if c > 0}
    if not items:
        return ""
    scaled = {el: int(round(c * 1000)) for el, c in items.items()}
    g = reduce(math.gcd, scaled.values())
    red = {el: v / g for el, v in scaled.items()}

    def order(el: str):
        if "C" in red:
            return (0 if el == "C" else 1 if el == "H" else 2, el)
        return (2, el)

    out = []
    for el in sorted(red, key=order):
        v = int(red[el])
        out.append(el if v == 1 else f"{el}{v}")
    return "".join(out)


# Symmetry finding lives in findsym.py; its public names stay importable from here.
from .findsym import (EXACT_METRIC_TOL, EXACT_TOL, FIND_SYMPREC, _atom_kinds, _is_group,  # noqa: E402,F401
                      detect_symmetry, find_operations, find_symmetry)
