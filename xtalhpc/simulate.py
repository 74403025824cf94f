"""Powder patterns from crystals: packing, backend dispatch, results.

This module turns :class:`~xtalhpc.crystal.Crystal` objects into the ragged
arrays the kernels take (``xtalhpc_kernels``), calls the CPU or CUDA
launchers, and wraps what comes back. The physics itself lives in
``kernels/physics.py`` only.
"""
from __future__ import annotations

import csv
import sys
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np

from .crystal import Crystal, inversion_translation
from .errors import InputError, ScatteringError, XtalhpcError, is_item_error, job_error
from .instruments import Instrument, get_instrument
from .kernel_tables import MAX_ORBIT_ENTRIES, column_tables, pair_atoms  # noqa: F401 (importable from here)
from .scattering import IMAG, N_COEFF, scattering_coefficients
from .texture import Texture, texture_arrays

#: Largest number of half-sphere reflections one structure may have (about 28 bytes
#: each while computing, twice that with families: ~110 MB). On the BT-1 grid
#: (d_min 0.775 A) this is a cell of ~440,000 A^3.
MAX_REFLECTIONS = 2_000_000
#: Reflections whose Q = 1/d^2 agree to this relative tolerance are one peak.
D_TOL = 1e-9
#: Reflections of one d whose |F|^2 agree to this relative tolerance are one family.
F2_TOL = 1e-6
#: Families with |F|^2 below this fraction of the structure's strongest are absent
#: (systematic absences come out at ~1e-30 of the maximum in float64).
ABSENT_TOL = 1e-12
#: A rendered peak is never narrower than this many grid steps (FWHM), so it stays sampled
#: (the discrete sum of a profile then equals its integral to ~1e-5).
MIN_FWHM_STEPS = 2.0
#: Reflections computed per kernel call at most; bounds memory for any batch size.
CHUNK_REFLECTIONS = 4_000_000


@dataclass
class Reflections:
    """Reflection families of one pattern, strongest d first (d descending).

    ``multiplicity`` counts every member (both Friedel mates). ``F2`` is |F|^2 of one
    member (fm^2 for neutrons, electrons^2 for X-rays); ``intensity`` = m |F|^2 L(theta)
    at the first wavelength (X-ray L includes (1 + cos^2 2theta)/2).
    """

    hkl: np.ndarray
    d: np.ndarray
    two_theta: np.ndarray
    multiplicity: np.ndarray
    F2: np.ndarray
    intensity: np.ndarray

    def __len__(self) -> int:
        return int(self.d.shape[0])

    def write_csv(self, path: str | Path) -> None:
        """CSV with columns h, k, l, d, two_theta, multiplicity, F2, intensity (one row per family)."""
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["h", "k", "l", "d", "two_theta", "multiplicity", "F2", "intensity"])
            for j in range(len(self)):
                h, k, l = (int(x) for x in self.hkl[j])
                w.writerow([h, k, l, f"{self.d[j]:.6f}", f"{self.two_theta[j]:.5f}", int(self.multiplicity[j]),
                            f"{self.F2[j]:.8g}", f"{self.intensity[j]:.8g}"])


@dataclass
class Pattern:
    """A simulated powder pattern: intensity per degree on the instrument's 2theta grid."""

    two_theta: np.ndarray
    intensity: np.ndarray
    reflections: Reflections
    crystal: Crystal
    instrument: Instrument
    device: str = "cpu"

    def write_xye(self, path: str | Path) -> None:
        """Three columns 2theta, intensity, sigma (sqrt of the intensity scaled to 1e5 counts max)."""
        from .io_patterns import write_xye

        write_xye(path, self.two_theta, self.intensity, header=self._header())

    def write_reflections(self, path: str | Path) -> None:
        self.reflections.write_csv(path)

    def plot(self, path: str | Path) -> None:
        from .plotting import plot_pattern

        plot_pattern(self, path)

    def _header(self) -> str:
        c = self.crystal
        inst = self.instrument
        cell = " ".join(f"{x:.5g}" for x in c.cell)
        return (f"xtalhpc simulated {inst.radiation} pattern | {c.formula} | sg {c.space_group} | cell {cell} | "
                f"instrument {inst.name} lambda {','.join(f'{w:g}' for w in inst.wavelengths)} A | source {c.source}")


@dataclass
class BatchResult:
    """Patterns of a batch, with a ragged list of reflection families.

    Families of structure i are rows ``peak_offsets[i]:peak_offsets[i+1]`` of the ``peak_*``
    arrays. Failed structures (``ok[i]`` false, reason in ``errors[i]``) have a zero
    pattern and no families.
    """

    two_theta: np.ndarray
    patterns: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    peak_offsets: np.ndarray
    peak_hkl: np.ndarray
    peak_d: np.ndarray
    peak_two_theta: np.ndarray
    peak_multiplicity: np.ndarray
    peak_F2: np.ndarray
    peak_intensity: np.ndarray
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.patterns.shape[0])

    def reflections(self, i: int) -> Reflections:
        s, e = int(self.peak_offsets[i]), int(self.peak_offsets[i + 1])
        return Reflections(self.peak_hkl[s:e], self.peak_d[s:e], self.peak_two_theta[s:e],
                           self.peak_multiplicity[s:e], self.peak_F2[s:e], self.peak_intensity[s:e])


@dataclass
class PackedBatch:
    """Crystals packed into the kernels' ragged layout (see ``kernels/cpu.py``)."""

    recip: np.ndarray
    cell_len: np.ndarray
    type_off: np.ndarray
    type_atom_off: np.ndarray
    type_coef: np.ndarray
    type_b: np.ndarray
    frac: np.ndarray
    occ: np.ndarray
    laue_off: np.ndarray
    laue_rot: np.ndarray
    #: Structure i's Laue group is laue_groups[laue_gid[i]] (distinct groups of the batch).
    laue_gid: np.ndarray | None = None
    laue_groups: list | None = None
    #: Canonical-column tables of the batch's Laue groups (see column_tables): structure i
    #: reads rows from tab_off[i] with half-widths tab_k[i], tab_l[i] (-1: no table), and
    #: the orbits of its canonical reflections from ``orbit``.
    tab_off: np.ndarray | None = None
    tab_k: np.ndarray | None = None
    tab_l: np.ndarray | None = None
    table: np.ndarray | None = None
    orbit: np.ndarray | None = None
    #: Translation tau of an inversion -x + tau among structure i's operations, NaN where it
    #: has none (see kernels/cpu.inversion_pairs).
    inv_t: np.ndarray | None = None
    #: The atoms as the CPU structure factors read them (pair_atoms): one per inversion pair
    #: where ``sf_centro[i]``, else the packed atoms.
    sf_frac: np.ndarray | None = None
    sf_occ: np.ndarray | None = None
    sf_type_atom_off: np.ndarray | None = None
    sf_centro: np.ndarray | None = None


#: Below this many values _rank sorts in Python (cheaper than NumPy's fixed costs).
_SMALL_RANK = 512


def _rank(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each value in them), NaNs as one value sorted last:
    np.unique(values, return_inverse=True), without its fixed cost for small inputs."""
    if len(values) > _SMALL_RANK or np.isnan(values).any():
        u, inv = np.unique(values, return_inverse=True)
        return u, inv.reshape(-1)
    vals = values.tolist()
    u = sorted(set(vals))
    at = {x: i for i, x in enumerate(u)}
    return np.array(u, dtype=values.dtype), np.fromiter(map(at.__getitem__, vals), np.int64, len(vals))


def _atom_scattering(crystals: Sequence[Crystal], radiation: str, natoms: np.ndarray,
                     wavelength: float | None = None):
    """Every atom's scattering, batch-wide: (key per atom, coefficient rows by key, error text
    per key or None, the atoms without scattering data). Keys are numbers whose order depends on the atoms alone, not on the rest
    of the batch: neutrons are keyed by the coherent length b' + i b'' itself (a crystal's
    real override, where finite, else the nuclide's at ``wavelength``), ordered by b' then
    b'', X-rays by (nuclide, charge) ranked in sorted order. One dict lookup per atom, the rest
    vectorised."""
    species = list(chain.from_iterable([c.species for c in crystals]))
    names = sorted(set(species))
    name_id = {s: i for i, s in enumerate(names)}
    sp = np.fromiter(map(name_id.__getitem__, species), np.int64, len(species))
    if radiation == "xray":
        charge = np.concatenate([c.charge for c in crystals]).astype(np.int64)
        pair = sp * 256 + (charge + 128)
        upair, key = np.unique(pair, return_inverse=True)  # sorted: by nuclide name, then charge
        rows = np.zeros((len(upair), N_COEFF))
        errs: list[str | None] = [None] * len(upair)
        for j, u in enumerate(upair.tolist()):
            try:
                rows[j] = scattering_coefficients(names[u // 256], radiation, u % 256 - 128)
            except InputError as exc:
                errs[j] = exc.message
        key = key.reshape(-1)
        return key, rows, errs, np.flatnonzero(np.array([e is not None for e in errs], dtype=bool)[key])
    b_name = np.full(len(names), np.nan)
    bi_name = np.zeros(len(names))
    err_name: list[str | None] = [None] * len(names)
    for j, name in enumerate(names):
        try:
            row = scattering_coefficients(name, radiation, wavelength=wavelength)
            b_name[j], bi_name[j] = row[0], row[IMAG]
        except InputError as exc:
            err_name[j] = exc.message
    b_atom = b_name[sp]
    if bi_name.any():  # absorbing nuclides: key on (b', b'')
        return _complex_keys(crystals, natoms, sp, b_atom, bi_name[sp], err_name)
    # key = rank of b among the batch's distinct lengths; NaN (no length at all) sorts last
    overrides = [c.scattering_length for c in crystals]
    if any(x is not None for x in overrides):
        bl = np.concatenate([np.full(k, np.nan) if x is None else x for x, k in zip(overrides, natoms.tolist())])
        use = np.isfinite(bl)
        b_atom[use] = bl[use]
        ub, key = _rank(b_atom)
    else:  # the lengths are the nuclides': rank those few, then map each atom through its nuclide
        ub, name_key = _rank(b_name)
        key = name_key[sp]
    rows = np.zeros((len(ub), N_COEFF))
    rows[:, 0] = ub
    errs = [None] * len(ub)
    bad = np.flatnonzero(np.isnan(b_atom))
    for a_ in bad.tolist():  # the key of NaN lengths: name the nuclide of its first atom
        if errs[key[a_]] is None:
            errs[key[a_]] = err_name[sp[a_]]
    return key, rows, errs, bad


def _complex_keys(crystals, natoms, sp, b_atom, bi_atom, err_name):
    """_atom_scattering's neutron keys for a batch holding absorbing nuclides: the rank of
    (b', b'') in lexicographic order (a real override sets b'' = 0), so a structure without
    absorbers gets the same type order, and bits, as in a batch of its own."""
    overrides = [c.scattering_length for c in crystals]
    b_atom = b_atom.copy()
    if any(x is not None for x in overrides):
        bl = np.concatenate([np.full(k, np.nan) if x is None else x for x, k in zip(overrides, natoms.tolist())])
        use = np.isfinite(bl)
        b_atom[use] = bl[use]
        bi_atom = np.where(use, 0.0, bi_atom)
    ub, kb = _rank(b_atom)
    ubi, kbi = _rank(bi_atom)
    uc, key = _rank(kb * len(ubi) + kbi)
    rows = np.zeros((len(uc), N_COEFF))
    rows[:, 0] = ub[uc // len(ubi)]
    rows[:, IMAG] = ubi[uc % len(ubi)]
    errs: list[str | None] = [None] * len(uc)
    bad = np.flatnonzero(np.isnan(b_atom))
    for a_ in bad.tolist():
        if errs[key[a_]] is None:
            errs[key[a_]] = err_name[sp[a_]]
    return key, rows, errs, bad


_IDENTITY_LAUE = np.array([np.eye(3, dtype=np.int64), -np.eye(3, dtype=np.int64)])


def _empty_packed() -> PackedBatch:
    z = np.zeros(0)
    return PackedBatch(np.zeros((0, 6)), np.zeros((0, 3)), np.zeros(1, np.int64), np.zeros(1, np.int64),
                       np.zeros((0, N_COEFF)), z, np.zeros((0, 3)), z, np.zeros(1, np.int64),
                       np.zeros((0, 3, 3), np.int64), laue_gid=np.zeros(0, np.int64), laue_groups=[])


def pack(crystals: Sequence[Crystal], radiation: str,
         wavelength: float | None = None) -> tuple[PackedBatch, dict[int, InputError]]:
    """Pack crystals into the kernels' layout, vectorised over the batch.

    ``wavelength`` (angstrom) picks the lengths of the resonant neutron nuclides
    (:func:`xtalhpc.scattering.neutron_length`; None: thermal, 1.798 A).

    Atoms are grouped into scattering types (same f(s) and same B: one form factor and one
    Debye-Waller factor per type per reflection). Returns the packed batch of the crystals
    that could be packed and ``{index: reason}`` for those that could not (a species without
    scattering data); the packed batch holds the others in input order.
    """
    n = len(crystals)
    errors: dict[int, InputError] = {}
    if n == 0:
        return _empty_packed(), errors
    natoms = np.fromiter(map(len, [c.species for c in crystals]), np.int64, n)
    cid = np.repeat(np.arange(n), natoms)
    sid, coef_table, key_err, bad_atoms = _atom_scattering(crystals, radiation, natoms, wavelength)
    cs = crystals
    frac = np.concatenate([c.frac for c in crystals])
    occ = np.concatenate([c.occupancy for c in crystals])
    biso = np.concatenate([c.b_iso for c in crystals])
    if bad_atoms.size:
        for a_ in bad_atoms.tolist():  # the first such atom of each failing crystal names it
            i = int(cid[a_])
            if i not in errors:
                c = crystals[i]
                errors[i] = ScatteringError(key_err[sid[a_]], c.source or c.name, "species")
        keep_c = np.ones(n, dtype=bool)
        keep_c[list(errors)] = False
        keep_a = keep_c[cid]
        cs = [crystals[i] for i in np.flatnonzero(keep_c)]
        sid, frac, occ, biso = sid[keep_a], frac[keep_a], occ[keep_a], biso[keep_a]
        natoms = natoms[keep_c]
        cid = np.repeat(np.arange(len(cs)), natoms)
    m = len(cs)
    if m == 0:
        return _empty_packed(), errors
    cells = np.array([c.cell for c in cs])
    order = np.lexsort((biso, sid, cid))
    cid_s, sid_s, b_s = cid[order], sid[order], biso[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = (cid_s[1:] != cid_s[:-1]) | (sid_s[1:] != sid_s[:-1]) | (b_s[1:] != b_s[:-1])
    first = np.flatnonzero(start)
    type_atom_off = np.append(first, len(order)).astype(np.int64)
    type_off = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(cid_s[first], minlength=m), out=type_off[1:])
    # Reciprocal metric G* = G^-1 of every cell at once (adjugate of the symmetric G / det G).
    a, b, c_, al, be, ga = cells.T
    ca, cb, cg = np.cos(np.radians(al)), np.cos(np.radians(be)), np.cos(np.radians(ga))
    g11, g22, g33, g12, g13, g23 = a * a, b * b, c_ * c_, a * b * cg, a * c_ * cb, b * c_ * ca
    recip = np.empty((m, 6))
    recip[:, 0] = g22 * g33 - g23 * g23
    recip[:, 1] = g11 * g33 - g13 * g13
    recip[:, 2] = g11 * g22 - g12 * g12
    recip[:, 3] = g13 * g23 - g12 * g33
    recip[:, 4] = g12 * g23 - g13 * g22
    recip[:, 5] = g12 * g13 - g11 * g23
    recip /= (g11 * recip[:, 0] + g12 * recip[:, 3] + g13 * recip[:, 4])[:, None]
    # The Laue group each crystal found once (Crystal._laue, None exactly where it carries no
    # symmetry operations: then just 1 and -1).
    laue = [_IDENTITY_LAUE if x is None else x for x in [c._laue for c in cs]]
    laue_off = np.zeros(m + 1, dtype=np.int64)
    np.cumsum([len(x) for x in laue], out=laue_off[1:])
    # Distinct Laue groups: crystals share their group's (cached) rotation array, so group by
    # object first and compare contents once per distinct object.
    ids = list(map(id, laue))
    if len(dict.fromkeys(ids)) == 1:  # one group object (a batch of one, or of one structure type)
        first_of, inv = np.zeros(1, np.int64), np.zeros(m, np.int64)
    else:
        _, first_of, inv = np.unique(np.array(ids, dtype=np.int64), return_index=True, return_inverse=True)
    gids: dict[bytes, int] = {}
    obj_gid = np.array([gids.setdefault(laue[j].tobytes(), len(gids)) for j in first_of], dtype=np.int64)
    groups = [np.frombuffer(key, dtype=np.int64).reshape(-1, 3, 3) for key in gids]
    inv_t = np.full((m, 3), np.nan)
    for j, c in enumerate(cs):
        tau = inversion_translation(c.symmetry)
        if tau is not None:
            inv_t[j] = tau
    packed = PackedBatch(recip=recip, cell_len=np.ascontiguousarray(cells[:, :3]), type_off=type_off,
                         type_atom_off=type_atom_off, type_coef=coef_table[sid_s[first]], type_b=b_s[first].copy(),
                         frac=np.ascontiguousarray(frac[order]), occ=occ[order], laue_off=laue_off,
                         laue_rot=np.concatenate(laue), laue_gid=obj_gid[inv.reshape(-1)], laue_groups=groups,
                         inv_t=inv_t)
    return packed, errors


def subset(p: PackedBatch, idx: np.ndarray) -> PackedBatch:
    """The packed structures ``idx`` as a batch of their own."""
    def ragged(off, sel):
        parts = [np.arange(off[i], off[i + 1]) for i in sel]
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        new = np.zeros(len(sel) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in parts], out=new[1:])
        return rows, new

    t, type_off = ragged(p.type_off, idx)
    a, _ = ragged(p.type_atom_off, t)
    cnt = np.diff(p.type_atom_off)[t]
    ta_off = np.zeros(len(cnt) + 1, dtype=np.int64)
    np.cumsum(cnt, out=ta_off[1:])
    r, laue_off = ragged(p.laue_off, idx)
    out = PackedBatch(p.recip[idx], p.cell_len[idx], type_off, ta_off, p.type_coef[t], p.type_b[t],
                      np.ascontiguousarray(p.frac[a]), p.occ[a], laue_off, p.laue_rot[r],
                      laue_gid=None if p.laue_gid is None else p.laue_gid[idx], laue_groups=p.laue_groups,
                      inv_t=None if p.inv_t is None else p.inv_t[idx])
    if p.tab_off is not None:
        out.tab_off, out.tab_k, out.tab_l = p.tab_off[idx], p.tab_k[idx], p.tab_l[idx]
        out.table, out.orbit = p.table, p.orbit
    return out


def qmax_of(instrument: Instrument) -> float:
    """Largest Q = 1/d^2 whose peak centre can fall on the grid."""
    return 1.0 / instrument.d_min ** 2


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    from .backend import resolve_device as _resolve

    return _resolve(device)


@contextmanager
def _threads_at_most(n: int):
    """Run the CPU kernels with at most ``n`` Numba threads. They spread structures over
    threads (prange), so a batch of fewer structures than threads gains nothing from the others,
    and each parallel region still waits for them to be scheduled: on a busy machine that cost
    a single ``simulate()`` tens of milliseconds. Results do not depend on the thread count."""
    import numba

    if n >= numba.config.NUMBA_NUM_THREADS:  # the most there can be: nothing to change, nothing to ask
        yield
        return
    before = numba.get_num_threads()
    if n >= before:
        yield
        return
    numba.set_num_threads(max(1, n))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _run_cpu(p: PackedBatch, counts: np.ndarray, inst: Instrument, timings: dict,
             out: np.ndarray | None = None, texture: tuple | None = None) -> tuple:
    n = p.recip.shape[0]
    with _threads_at_most(n):
        return _run_cpu_kernels(p, counts, inst, timings, out, texture)


def _run_cpu_kernels(p: PackedBatch, counts: np.ndarray, inst: Instrument, timings: dict,
                     out: np.ndarray | None, texture: tuple | None = None) -> tuple:
    from xtalhpc_kernels import cpu

    n = p.recip.shape[0]
    qmax = qmax_of(inst)
    refl_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=refl_off[1:])
    m = int(refl_off[-1])
    t = time.perf_counter()
    hkl = np.empty((m, 3), dtype=np.int32)
    q = np.empty(m)
    f2 = np.empty(m)
    mult = np.empty(m, dtype=np.int32)
    if p.tab_off is None:
        column_tables(p, qmax)
    if p.sf_centro is None:
        pair_atoms(p)
    cpu.structure_factors(p.recip, p.cell_len, qmax, refl_off, p.type_off, p.sf_type_atom_off, p.type_coef,
                          p.type_b, p.sf_frac, p.sf_occ, p.sf_centro, p.laue_off, p.laue_rot, p.tab_off, p.tab_k,
                          p.tab_l, p.table, p.orbit, hkl, q, f2, mult)
    if texture is not None:  # preferred orientation: |F|^2 times the orbit-averaged March-Dollase factor
        cpu.texture_factors(p.recip, refl_off, hkl, p.laue_off, p.laue_rot, texture[0], texture[1], f2)
    t2 = time.perf_counter()
    timings["structure_factors"] = timings.get("structure_factors", 0.0) + t2 - t
    fam_hkl = np.empty((m, 3), dtype=np.int32)
    fam_q = np.empty(m)
    fam_f2 = np.empty(m)
    fam_mult = np.empty(m, dtype=np.int32)
    fam_count = np.zeros(n, dtype=np.int64)
    cpu.reflection_families(refl_off, hkl, q, f2, mult, D_TOL, F2_TOL, ABSENT_TOL, fam_hkl, fam_q, fam_f2, fam_mult,
                            fam_count)
    t3 = time.perf_counter()
    timings["families"] = timings.get("families", 0.0) + t3 - t2
    # Render straight into the caller's rows when it hands them over (zeroed, C-contiguous).
    patterns = np.zeros((n, inst.n_points), dtype=cpu.PATTERN_DTYPE) if out is None else out
    fam_tt = np.empty(m)
    fam_int = np.empty(m)
    cpu.render_patterns(refl_off[:-1], fam_count, fam_q, fam_f2, fam_mult,
                        np.asarray(inst.wavelengths, dtype=np.float64),
                        np.asarray(inst.wavelength_weights, dtype=np.float64), inst.two_theta_min,
                        inst.two_theta_step, inst.U, inst.V, inst.W, inst.X, inst.Y, inst.zero, inst.profile_cutoff,
                        MIN_FWHM_STEPS * inst.two_theta_step, inst.radiation == "xray", patterns, fam_tt, fam_int)
    timings["profiles"] = timings.get("profiles", 0.0) + time.perf_counter() - t3
    return refl_off, fam_count, fam_hkl, fam_q, fam_f2, fam_mult, fam_tt, fam_int, patterns


def _gather(refl_off: np.ndarray, fam_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of every structure's families, and the compacted offsets."""
    offsets = np.zeros(len(fam_count) + 1, dtype=np.int64)
    np.cumsum(fam_count, out=offsets[1:])
    idx = np.repeat(refl_off[:-1] - offsets[:-1], fam_count) + np.arange(offsets[-1])
    return idx, offsets


def simulate_batch(crystals: Sequence[Crystal], instrument: "str | Instrument" = "bt1-cu311", *,
                   device: str = "cpu", on_error: str = "raise",
                   max_reflections: int = MAX_REFLECTIONS, peaks: bool = True,
                   texture: "Texture | Sequence[Texture | None] | None" = None) -> BatchResult:
    """Simulate the powder pattern of every crystal on the instrument's grid.

    Parameters
    ----------
    crystals : sequence of Crystal
    instrument : str or Instrument
        Preset name, TOML path or an Instrument.
    device : {"cpu", "cuda", "auto"}
    on_error : {"raise", "collect"}
        ``collect`` records a failing structure in ``errors`` (zero pattern) and goes on.
        Only a structure's own errors are collected (unknown species, too many reflections);
        an error that would fail every structure (a missing dependency, a kernel that does not
        compile, out of memory, a CUDA driver error: :func:`xtalhpc.errors.is_item_error`)
        raises :class:`~xtalhpc.errors.JobError` in either mode.
    max_reflections : int
        Cap on half-sphere reflections per structure (:data:`MAX_REFLECTIONS`).
    peaks : bool
        Return the reflection families (``peak_*``). Without them (patterns only, as
        ``xtalhpc generate`` stores by default) ``peak_offsets`` is all zeros and the
        gathering of the families is skipped.
    texture : Texture, or one Texture or None per crystal
        Preferred orientation of the sample (:class:`xtalhpc.texture.Texture`, March-Dollase).
        Each reflection's |F|^2 is multiplied by the factor averaged over its orbit, so
        ``peak_F2`` holds |F|^2 times that factor. Both backends.
    """
    try:
        return _simulate_batch(crystals, instrument, device=device, on_error=on_error,
                               max_reflections=max_reflections, peaks=peaks, texture=texture)
    except XtalhpcError:
        raise
    except Exception as exc:
        if is_item_error(exc):
            raise  # a batch-wide failure no single structure can be blamed for: a code error, left as it is
        raise job_error(exc, f"simulating {len(crystals)} structure(s) (device {device})") from exc


def _simulate_batch(crystals: Sequence[Crystal], instrument, *, device: str, on_error: str,
                    max_reflections: int, peaks: bool, texture=None) -> BatchResult:
    if on_error not in ("raise", "collect"):
        raise InputError(f"on_error {on_error!r} is not 'raise' or 'collect'", field="on_error")
    inst = get_instrument(instrument)
    dev = resolve_device(device)
    n = len(crystals)
    tex = texture_arrays(texture, n)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, c in enumerate(crystals):
        if not isinstance(c, Crystal):
            raise InputError(f"item {i} is a {type(c).__name__}, not a Crystal", field="crystals")
    # resonant lengths at the first (strongest) wavelength of the instrument
    p, failed = pack(crystals, inst.radiation, float(inst.wavelengths[0]))
    if failed and on_error == "raise":
        raise failed[min(failed)]
    errors = {i: str(e) for i, e in failed.items()}
    ok_idx = np.arange(n) if not errors else np.array([i for i in range(n) if i not in errors], dtype=np.int64)
    timings["pack"] = time.perf_counter() - t0
    from xtalhpc_kernels import cpu

    counts = np.zeros(len(ok_idx), dtype=np.int64)
    t1 = time.perf_counter()
    column_tables(p, qmax_of(inst))
    with _threads_at_most(len(ok_idx)):
        cpu.count_reflections(p.recip, p.cell_len, qmax_of(inst), p.laue_off, p.laue_rot, p.tab_off, p.tab_k,
                              p.tab_l, p.table, counts)
    timings["count"] = time.perf_counter() - t1
    too_many = np.flatnonzero(counts > max_reflections)
    for j in too_many:
        c = crystals[ok_idx[j]]
        msg = (f"{c.source or c.name}: field 'cell': {int(counts[j]):,} reflections to d_min = "
               f"{inst.d_min:.4f} A exceed the cap of {max_reflections:,} (cell volume {c.volume:.0f} A^3); "
               "use a smaller cell, a shorter 2theta range or raise max_reflections")
        if on_error == "raise":
            raise InputError(msg.split(": field 'cell': ", 1)[1], c.source or c.name, "cell")
        errors[int(ok_idx[j])] = msg
    keep = np.flatnonzero(counts <= max_reflections)

    patterns = np.zeros((n, inst.n_points), dtype=cpu.PATTERN_DTYPE)
    ok = np.zeros(n, dtype=bool)
    fam_parts: list[tuple] = []
    per_item_counts = np.zeros(n, dtype=np.int64)
    # Chunks bounded by reflection count keep memory flat for any batch size (greedy: a chunk
    # takes items while its total stays <= CHUNK_REFLECTIONS, and at least one).
    csum = np.cumsum(counts[keep])
    start = 0
    while start < len(keep):
        base = csum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(csum, base + CHUNK_REFLECTIONS, side="right")))
        sel = keep[start:stop]
        sub = subset(p, sel) if len(sel) != p.recip.shape[0] else p
        rows = None
        sel_tex = None if tex is None else (tex[0][ok_idx[sel]], tex[1][ok_idx[sel]])
        if dev == "cuda":
            from .backend import run_cuda

            out = run_cuda(sub, counts[sel], inst, timings, texture=sel_tex)
        else:
            first = ok_idx[sel[0]]
            if ok_idx[sel[-1]] - first == len(sel) - 1:  # contiguous items: no copy afterwards
                rows = patterns[first:first + len(sel)]
            out = _run_cpu(sub, counts[sel], inst, timings, out=rows, texture=sel_tex)
        refl_off, fam_count, fam_hkl, fam_q, fam_f2, fam_mult, fam_tt, fam_int, pats = out
        items = ok_idx[sel]
        if peaks:
            idx, _ = _gather(refl_off, fam_count)
        if rows is None:
            patterns[items] = pats
        ok[items] = True
        if peaks:
            per_item_counts[items] = fam_count
            fam_parts.append((items, fam_count, fam_hkl[idx], fam_q[idx], fam_f2[idx], fam_mult[idx], fam_tt[idx],
                              fam_int[idx]))
        start = stop

    # Reassemble the families in input order.
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_item_counts, out=offsets[1:])
    m = int(offsets[-1])
    if len(fam_parts) == 1 and len(fam_parts[0][0]) == n:
        # one chunk holding every item (in input order): its gathered families are the result
        hkl, qv, f2, mult, tt, inten = fam_parts[0][2:]
    else:
        hkl = np.empty((m, 3), dtype=np.int32)
        qv = np.empty(m)
        f2 = np.empty(m)
        mult = np.empty(m, dtype=np.int32)
        tt = np.empty(m)
        inten = np.empty(m)
        for items, fc, a_hkl, a_q, a_f2, a_m, a_tt, a_i in fam_parts:
            dst = np.repeat(offsets[items], fc) + (np.arange(len(a_q)) - np.repeat(np.cumsum(fc) - fc, fc))
            hkl[dst], qv[dst], f2[dst], mult[dst], tt[dst], inten[dst] = a_hkl, a_q, a_f2, a_m, a_tt, a_i
    timings["total"] = time.perf_counter() - t0
    return BatchResult(two_theta=inst.two_theta, patterns=patterns, ok=ok, errors=errors, peak_offsets=offsets,
                       peak_hkl=hkl, peak_d=1.0 / np.sqrt(qv), peak_two_theta=tt, peak_multiplicity=mult,
                       peak_F2=f2, peak_intensity=inten, device=dev, timings=timings)


def simulate(crystal: Crystal, instrument: "str | Instrument" = "bt1-cu311", *, device: str = "cpu",
             texture: Texture | None = None) -> Pattern:
    """Simulate one crystal's powder pattern on ``instrument`` (preset name, TOML path or Instrument),
    optionally with a preferred orientation (``texture``, see :func:`simulate_batch`).

    Returns a :class:`Pattern` with the 2theta grid (degrees), the intensity per degree and
    the reflection families (hkl, d, 2theta, multiplicity, |F|^2, integrated intensity).
    """
    inst = get_instrument(instrument)
    res = simulate_batch([crystal], inst, device=device, on_error="raise", texture=texture)
    return Pattern(two_theta=res.two_theta, intensity=res.patterns[0], reflections=res.reflections(0),
                   crystal=crystal, instrument=inst, device=res.device)


class _CallableModule(types.ModuleType):
    """Lets ``xtalhpc.simulate(crystal, instrument)`` call :func:`simulate` while
    ``xtalhpc.simulate`` stays this module (``import xtalhpc.simulate as sim`` works as usual)."""

    def __call__(self, crystal: Crystal, instrument: "str | Instrument" = "bt1-cu311", *,
                 device: str = "cpu") -> Pattern:
        return simulate(crystal, instrument, device=device)


sys.modules[__name__].__class__ = _CallableModule
