"""Symmetry finding for crystals given without operations (P1 CIFs, POSCARs): which
space group the atoms fit at a tolerance (the label), and which operations hold exactly for
the atoms as written (what the simulator may use). Issue 18; docs/structures.md.

Re-exported by :mod:`xtalhpc.crystal`, where these names were first defined.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .crystal import Crystal, _distinct_rotations, cell_metric, lattice_vectors, symmetrize  # noqa: F401

def find_symmetry(c: "Crystal", symprec: float = 1e-3) -> "Crystal":
    """``c`` symmetrised with the space group spglib finds (operations in this cell's basis),
    with ``space_group`` set from it if it was unknown."""
    import spglib

    numbers = np.unique(np.asarray(c.species), return_inverse=True)[1].reshape(-1)
    # occupancy joins the species in what spglib sees, so partially occupied sites stay apart
    occ_key = np.unique(np.round(c.occupancy, 6), return_inverse=True)[1].reshape(-1)
    numbers = numbers * 1000 + occ_key + 1
    ds = spglib.get_symmetry_dataset((lattice_vectors(c.cell), c.frac, numbers), symprec=symprec)
    if ds is None:
        return c
    ops = np.concatenate([ds.rotations.astype(float), ds.translations[:, :, None]], axis=2)
    out = symmetrize(c, ops, tol=max(10 * symprec, 1e-3))
    if c.space_group is None:
        out = out.replace(space_group=int(ds.number))
    return out


#: Tolerance (angstrom) of symmetry finding for a structure given without operations (a P1
#: CIF, a POSCAR): an operation holds when it takes every atom to within this distance of an
#: atom of the same kind. It decides the *found group* (the label): files written by DFT codes
#: carry ~1e-6 A noise, hand-made or rounded ones ~1e-4 A; 1e-3 A catches both without
#: promoting genuinely distorted cells (spglib's symprec, in the same units).
FIND_SYMPREC = 1e-3
#: The operations the simulator is given must hold for the atoms *as written*, so that the
#: pattern computed from one reflection per Laue orbit equals the P1 pattern (to 1e-9
#: relative): an operation is used only when every image lies within this distance (angstrom)
#: of its atom, and its rotation preserves the metric to :data:`EXACT_METRIC_TOL`. Positions
#: are never moved. Coordinates written with 12+ significant digits (or as exact binary
#: fractions such as 0.5, 0.25) pass; rounded ones (0.333333) do not, and the crystal is then
#: simulated as P1, as written.
EXACT_TOL = 1e-9
#: Relative tolerance on R^T G R = G for an operation the simulator uses (see EXACT_TOL).
EXACT_METRIC_TOL = 1e-12


def _atom_kinds(c: "Crystal") -> np.ndarray:
    """Atoms that symmetry may exchange share a kind: same nuclide, charge, occupancy, B and
    scattering-length override, compared exactly (the values as written)."""
    names = {s: i for i, s in enumerate(sorted(set(c.species)))}
    cols = [np.fromiter(map(names.__getitem__, c.species), np.float64, c.n_atoms), c.charge.astype(np.float64),
            c.occupancy, c.b_iso]
    if c.scattering_length is not None:
        cols.append(np.nan_to_num(c.scattering_length, nan=-1e300))
    key = np.stack(cols, axis=1)
    # np.unique(key, axis=0, return_inverse=True)[1] (ids in the rows' lexicographic order),
    # from one lexsort: np.unique's row view and sort cost ~0.5 ms per crystal
    order = np.lexsort(key.T[::-1])
    sk = key[order]
    new = np.empty(len(key), dtype=np.int64)
    new[0] = 0
    new[1:] = (sk[1:] != sk[:-1]).any(axis=1)
    kind = np.empty(len(key), dtype=np.int64)
    kind[order] = np.cumsum(new)
    return kind


def _is_group(rot: np.ndarray) -> bool:
    """True if the distinct rotations ``rot`` (k, 3, 3) are closed under products; once per
    distinct set per process (a dataset repeats a few hundred)."""
    rot = np.ascontiguousarray(rot, dtype=np.int64)
    return _is_group_cached(rot.tobytes())


@lru_cache(maxsize=4096)
def _is_group_cached(key: bytes) -> bool:
    return _closed(np.frombuffer(key, dtype=np.int64).reshape(-1, 3, 3))


def _closed(rot: np.ndarray) -> bool:
    prod = np.einsum("iab,jbc->ijac", rot, rot).reshape(-1, 9)
    big = int(np.abs(rot).max(initial=1))
    if np.abs(prod).max() > big:  # a product outside the set's entry range is not in the set
        return False
    pw = (2 * big + 1) ** np.arange(9, dtype=np.int64)
    return bool(np.isin((prod + big) @ pw, (rot.reshape(-1, 9).astype(np.int64) + big) @ pw).all())


class _OpsKey:
    """Cache key of an operation set: its integer bytes; the lattice rides along for spglib."""

    __slots__ = ("key", "m", "lattice")

    def __init__(self, key: bytes, m: int, lattice: np.ndarray) -> None:
        self.key, self.m, self.lattice = key, m, lattice

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _OpsKey) and self.key == other.key


@lru_cache(maxsize=4096)
def _group_number_cached(k: _OpsKey) -> int | None:
    return _identify_group(np.frombuffer(k.key, dtype=np.int64).reshape(k.m, 3, 4), k.lattice)


def _identify_group(ops: np.ndarray, lattice: np.ndarray) -> int | None:
    """Space-group number of operations given as integers (rotation, translation x 24): gemmi's
    table (standard and common settings), else spglib (any basis and origin)."""
    import gemmi

    gops = []
    for o in ops:
        op = gemmi.Op()
        op.rot = (o[:, :3] * gemmi.Op.DEN).tolist()
        op.tran = o[:, 3].tolist()
        gops.append(op)
    try:
        sg = gemmi.find_spacegroup_by_ops(gemmi.GroupOps(gops))
    except RuntimeError:
        sg = None
    if sg is not None:
        return int(sg.number)
    return _spglib_number(ops[:, :, :3], ops[:, :, 3] / 24.0, lattice, 1e-5)


def _spglib_number(rot, trans, lattice, symprec) -> int | None:
    import warnings

    import spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib 2.x's old error handling
        try:
            t = spglib.get_spacegroup_type_from_symmetry(np.ascontiguousarray(np.round(rot), dtype="intc"),
                                                         np.ascontiguousarray(trans, dtype=np.float64),
                                                         np.ascontiguousarray(lattice, dtype=np.float64),
                                                         symprec=symprec)
        except Exception:  # noqa: BLE001 - spglib raises its own error types for sets it cannot identify
            t = None
    return None if t is None else int(t.number)


def _group_number(ops: np.ndarray, lattice: np.ndarray) -> int | None:
    """Space-group number of operations (m, 3, 4) found at FIND_SYMPREC. Translations are
    snapped to twenty-fourths (exact in every standard setting) and the group is identified
    once per distinct operation set per process: a dataset repeats a few hundred settings."""
    t24 = ops[:, :, 3] * 24.0
    snapped = np.round(t24)
    if np.abs(t24 - snapped).max() > 1e-2:  # an origin off the twenty-fourths: spglib, not cached
        return _spglib_number(ops[:, :, :3], ops[:, :, 3], lattice, FIND_SYMPREC)
    iops = np.concatenate([np.round(ops[:, :, :3]).astype(np.int64), (snapped.astype(np.int64) % 24)[:, :, None]],
                          axis=2)
    iops = np.ascontiguousarray(iops[np.lexsort(iops.reshape(len(iops), 12).T[::-1])])
    return _group_number_cached(_OpsKey(iops.tobytes(), len(iops), lattice))


def find_operations(c: "Crystal", symprec: float = FIND_SYMPREC) -> tuple[np.ndarray, np.ndarray]:
    """Operations (m, 3, 4) x -> R x + t in ``c``'s basis that take every atom to within
    ``symprec`` angstrom of an atom of its kind, and the largest such distance of each (m,).

    The rotations are those of the lattice (metric preserved to ``symprec`` in length), with
    image indices within 2 (a basis far from reduced may show fewer); each is tried with the translations that take one atom of the
    rarest kind onto each atom of that kind (``xtalhpc_kernels.symmetry.find_operations``).
    """
    from xtalhpc_kernels.symmetry import find_operations as _find, lattice_rotations

    g = cell_metric(c.cell)
    ln = np.sqrt(np.diag(g))
    tol = symprec * (ln[:, None] + ln[None, :])
    rots = np.empty((48, 3, 3), dtype=np.int64)  # a lattice point group has at most 48
    rots = rots[:min(48, lattice_rotations(g, tol, 2, rots))]
    lat = lattice_vectors(c.cell)
    kind = _atom_kinds(c)
    cap = len(rots) * max(1, int(np.bincount(kind).min()))
    ops = np.empty((cap, 3, 4))
    dev = np.empty(cap)
    m = _find(np.ascontiguousarray(c.frac), kind, lat, rots, float(symprec), ops, dev)
    return ops[:m], dev[:m]


def detect_symmetry(c: "Crystal", symprec: float = FIND_SYMPREC, exact: float = EXACT_TOL) -> "Crystal":
    """Find the symmetry of a crystal given without operations (a P1 cell), without moving it.

    The operations that hold at ``symprec`` (angstrom) give the *found group*
    (``space_group_found``; the label ``space_group`` too where the source declares none or
    P1). Those that also hold for the atoms as written, within ``exact`` angstrom (and keep
    the metric to :data:`EXACT_METRIC_TOL`), are attached as ``symmetry`` when they form a
    group with more than the identity rotation, so the simulator computes |F|^2 once per Laue
    orbit and the pattern equals the P1 one (to ~1e-9 relative). A crystal that already
    carries operations is returned unchanged. Notes say what was found and used.
    """
    if c.symmetry is not None:
        return c
    ops, dev = find_operations(c, symprec)
    lat = lattice_vectors(c.cell)
    number = _group_number(ops, lat) if len(ops) else None
    notes = list(c.notes)
    if number is None:
        notes.append(f"symmetry finding (symprec {symprec:g} A): no space group identified; simulated as P1")
        return c.replace(notes=tuple(notes))
    declared = c.space_group_declared
    label = declared if declared not in (None, 1) else number
    rot = np.round(ops[:, :, :3]).astype(np.int64)
    g = cell_metric(c.cell)
    mdev = np.abs(np.swapaxes(rot, 1, 2) @ g @ rot - g).max(axis=(1, 2)) / np.abs(g).max()
    use = (dev <= exact) & (mdev <= EXACT_METRIC_TOL)
    urot = _distinct_rotations(rot[use].reshape(-1, 9)) if use.any() else rot[:0]
    what = f"space group {number} found (symprec {symprec:g} A, {len(ops)} operations)"
    symmetry = None
    if len(urot) > 1 and _is_group(urot):
        symmetry = ops[use]
        worst = float(dev[use].max())
        if use.all():
            notes.append(f"{what}; all used for the simulation (atoms as written map within {worst:.1g} A)")
        else:
            notes.append(f"{what}; {int(use.sum())} hold exactly (within {exact:g} A) and are used for the simulation")
    elif len(_distinct_rotations(rot.reshape(-1, 9))) > 1:
        worst = float(np.max(dev))
        notes.append(f"{what}, but the atoms as written deviate from it by up to {worst:.2g} A (or the cell "
                     f"metric by more than {EXACT_METRIC_TOL:g}): simulated as P1, positions unchanged")
    else:
        notes.append(what)
    return c.replace(symmetry=symmetry, space_group=label, space_group_found=number,
                     space_group_declared=declared, notes=tuple(notes))
