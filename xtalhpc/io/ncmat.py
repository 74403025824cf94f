"""NCrystal ``.ncmat`` reader (text format versions 1-7, crystalline materials).

Parsed here directly (the format is line based; NCrystal itself is only used
by the tests as a cross-check). Sections used:

``@CELL``
    ``lengths a b c`` and ``angles alpha beta gamma``, or ``cubic a`` (angstrom, deg).
``@SPACEGROUP``
    The International Tables number.
``@ATOMPOSITIONS``
    ``Element x y z`` per atom of the *full* cell (no symmetry expansion);
    coordinates may be fractions such as ``1/3``.
``@DYNINFO``
    Per element: ``type vdosdebye`` with ``debye_temp`` (Debye model), or
    ``type vdos`` with ``vdos_egrid emin emax`` and ``vdos_density ...``
    (phonon density of states, eV).
``@DEBYETEMPERATURE``
    Older files: one global value or ``Element value`` lines (kelvin).
``@TEMPERATURE``
    Material temperature (kelvin); else :data:`DEFAULT_TEMPERATURE`.

Displacement: the isotropic mean-squared displacement along one axis,
``msd = hbar^2 / (2 M) * integral g(E) coth(E / 2kT) / E dE`` with g the
normalised phonon DOS, and B = 8 pi^2 msd. For a Debye spectrum this is
``msd = 3 hbar^2 / (M k theta_D) * (phi(x) / x + 1/4)``, x = theta_D / T.
A tabulated VDOS is taken as NCrystal defines it: linear between the grid
points, ~E^2 below the first point, zero above the last; grids that are
regular within 1e-6 have emax snapped so that the bins continue down to E = 0.
Masses are natural-abundance (or isotope) masses from ``periodictable``.
Files without ``@CELL`` (gases, liquids, amorphous solids) are errors.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..crystal import DEFAULT_B_ISO, Crystal, parse_species, with_symmetry
from ..errors import InputError, StructureError

#: Temperature (K) at which B is evaluated when the file gives none (NCrystal's default).
DEFAULT_TEMPERATURE = 293.15

# CODATA 2018.
HBAR_C_EV_ANGSTROM = 1973.269804  # hbar * c, eV * angstrom
AMU_EV = 931.49410242e6  # atomic mass unit * c^2, eV
K_BOLTZMANN_EV = 8.617333262e-5  # eV / K

_EIGHT_PI2 = 8.0 * math.pi ** 2
# Gauss-Legendre nodes per VDOS bin: the integrand is smooth within a bin,
# 12 nodes give ~1e-14 relative per bin.
_GL_NODES = 12
_RUN_LENGTH = re.compile(r"^(.+)r(\d+)$")
_KEY_START = re.compile(r"^[A-Za-z_]")


@lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    """The _GL_NODES-point Gauss-Legendre nodes and weights on [-1, 1], computed once (read-only)."""
    nodes, weights = np.polynomial.legendre.leggauss(_GL_NODES)
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


def debye_msd(debye_temperature: float, temperature: float, mass_amu: float) -> float:
    """Isotropic mean-squared displacement (angstrom^2, along one axis) in the Debye model.

    ``msd = 3 hbar^2 / (M k_B theta_D) * (phi(x) / x + 1/4)`` with
    ``x = theta_D / T`` and ``phi(x) = (1/x) integral_0^x t / (e^t - 1) dt``.
    """
    if not (debye_temperature > 0 and temperature >= 0 and mass_amu > 0):
        raise ValueError("Debye temperature and mass must be > 0 and temperature >= 0")
    e_d = K_BOLTZMANN_EV * debye_temperature
    pref = 3.0 * HBAR_C_EV_ANGSTROM ** 2 / (mass_amu * AMU_EV * e_d)
    if temperature == 0:
        return pref * 0.25
    x = debye_temperature / temperature
    return pref * (_debye_phi(x) / x + 0.25)


def _debye_phi(x: float) -> float:
    """phi(x) = (1/x) * integral_0^x t / (e^t - 1) dt, by Gauss-Legendre on sub-intervals."""
    nodes, weights = _gauss_legendre()
    n = max(4, int(math.ceil(x)))
    edges = np.linspace(0.0, x, n + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
        total += 0.5 * (hi - lo) * float(np.sum(weights * t / np.expm1(t)))
    return total / x


def vdos_msd(egrid: tuple[float, float], density, temperature: float, mass_amu: float) -> float:
    """Mean-squared displacement (angstrom^2, one axis) from a tabulated phonon DOS.

    Parameters
    ----------
    egrid : (emin, emax)
        Energy range (eV) of the equidistant density points.
    density : array
        Unnormalised phonon DOS at the grid points.
    temperature : float
        Kelvin.
    mass_amu : float
        Atomic mass (u).
    """
    dens = np.asarray(density, dtype=float)
    emin, emax = float(egrid[0]), float(egrid[1])
    n = dens.size
    if n < 2 or not 0 < emin < emax:
        raise ValueError("VDOS needs >= 2 density points on 0 < emin < emax")
    width = (emax - emin) / (n - 1)
    k_flt = emin / width
    k = round(k_flt)
    if k >= 1 and abs(k_flt - k) <= 1e-6:
        # NCrystal's regular grid: bins continue down to E = 0; snap emax to it.
        width = emin / k
        emax = emin + (n - 1) * width
    kt = K_BOLTZMANN_EV * temperature
    nodes, weights = _gauss_legendre()

    def weight(e):
        # coth(E / 2kT) / E, -> 1/E at T = 0
        return 1.0 / e if kt == 0 else 1.0 / (e * np.tanh(e / (2.0 * kt)))

    # below emin: g(E) = g(emin) (E / emin)^2, integrated in ~bin-sized panels
    nlow = max(1, min(int(round(k_flt)), 1000))
    edges = np.linspace(0.0, emin, nlow + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    e = 0.5 * (hi - lo) * nodes[None, :] + 0.5 * (hi + lo)
    low = float(np.sum(0.5 * (hi - lo) * weights * dens[0] * (e / emin) ** 2 * weight(e)))
    grid = emin + width * np.arange(n)
    lo, hi = grid[:-1, None], grid[1:, None]
    e = 0.5 * (hi - lo) * nodes[None, :] + 0.5 * (hi + lo)
    g = dens[:-1, None] + (dens[1:, None] - dens[:-1, None]) * (e - lo) / (hi - lo)
    high = float(np.sum(0.5 * (hi - lo) * weights * g * weight(e)))
    norm = dens[0] * emin / 3.0 + width * float(np.sum(0.5 * (dens[1:] + dens[:-1])))
    if not norm > 0:
        raise ValueError("VDOS integrates to <= 0")
    gamma0 = (low + high) / norm
    return HBAR_C_EV_ANGSTROM ** 2 / (2.0 * mass_amu * AMU_EV) * gamma0


def nuclide_mass(nuclide: str) -> float:
    """Mass (u) of an element (natural abundance) or isotope (``'D'``, ``'7Li'``) from periodictable."""
    import periodictable

    if nuclide in ("D", "T"):
        return float(getattr(periodictable, nuclide).mass)
    m = re.match(r"^(\d+)([A-Z][a-z]?)$", nuclide)
    if m:
        return float(periodictable.elements.symbol(m.group(2))[int(m.group(1))].mass)
    return float(periodictable.elements.symbol(nuclide).mass)


def _nuclide(name: str, src: str, field: str) -> str:
    """NCrystal element/isotope name (``Al``, ``D``, ``Li6``, ``B10``) -> Crystal nuclide (``6Li``)."""
    m = re.match(r"^([A-Z][a-z]?)(\d+)$", name)
    sym = f"{m.group(2)}{m.group(1)}" if m else name
    try:
        nuc, _ = parse_species(sym, src, field)
    except InputError as exc:
        raise StructureError(exc.message, src, field) from None
    return nuc


def _num(tok: str, src: str, field: str) -> float:
    try:
        return float(Fraction(tok)) if "/" in tok else float(tok)
    except (ValueError, ZeroDivisionError):
        raise StructureError(f"{tok!r} is not a number", src, field) from None


def _sections(lines, src):
    sections: list[tuple[str, list[list[str]], int]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        if body.startswith("@"):
            sections.append((body.split()[0][1:].upper(), [], lineno))
            continue
        if not sections:
            raise StructureError(f"content {body!r} before the first @SECTION", src, f"line {lineno}")
        sections[-1][1].append(body.split())
    return sections


def read_ncmat(path: str | Path, temperature: float | None = None) -> Crystal:
    """Read a crystalline NCrystal ``.ncmat`` file into a :class:`Crystal`.

    Parameters
    ----------
    path : str or Path
    temperature : float, optional
        Kelvin at which B is evaluated; default: the file's @TEMPERATURE,
        else :data:`DEFAULT_TEMPERATURE`.

    Raises
    ------
    StructureError
        Not an NCMAT file, no @CELL (non-crystalline), malformed sections,
        unknown elements, or atoms without dynamics information where one is required.
    """
    path = Path(path)
    src = str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("NCMAT"):
        raise StructureError("first line must be the 'NCMAT vN' header", src, "line 1")
    sections = _sections(lines, src)
    names = [s[0] for s in sections]
    notes: list[str] = []
    if "CELL" not in names:
        som = next((r for n_, rows, _ in sections if n_ == "STATEOFMATTER" for r in rows), None)
        what = f" (@STATEOFMATTER {' '.join(som)})" if som else ""
        raise StructureError(f"no unit cell: amorphous/liquid material{what}; only crystalline .ncmat "
                             "files (with @CELL and @ATOMPOSITIONS) can be simulated", src, "@CELL")
    if "ATOMPOSITIONS" not in names:
        raise StructureError("no @ATOMPOSITIONS section", src, "@ATOMPOSITIONS")

    def rows(name):
        return [r for n_, rs, _ in sections if n_ == name for r in rs]

    # ---- cell
    lengths = angles = None
    for r in rows("CELL"):
        key, vals = r[0].lower(), list(r[1:])
        for i in range(1, len(vals)):  # '!!' repeats the previous value (b = a, ...)
            if vals[i] == "!!":
                vals[i] = vals[i - 1]
        if key == "cubic" and len(vals) == 1:
            a = _num(vals[0], src, "@CELL cubic")
            lengths, angles = [a, a, a], [90.0, 90.0, 90.0]
        elif key == "lengths" and len(vals) == 3:
            lengths = [_num(v, src, "@CELL lengths") for v in vals]
        elif key == "angles" and len(vals) == 3:
            angles = [_num(v, src, "@CELL angles") for v in vals]
        else:
            raise StructureError(f"@CELL line {' '.join(r)!r}; allowed: 'lengths a b c', "
                                 "'angles alpha beta gamma', 'cubic a'", src, "@CELL")
    if lengths is None or angles is None:
        raise StructureError("@CELL needs 'lengths' and 'angles' (or 'cubic')", src, "@CELL")

    space_group = None
    sg_rows = rows("SPACEGROUP")
    if sg_rows:
        try:
            space_group = int(sg_rows[0][0])
        except ValueError:
            raise StructureError(f"@SPACEGROUP {sg_rows[0][0]!r} is not an integer 1-230", src, "@SPACEGROUP") from None
        if not 1 <= space_group <= 230:
            raise StructureError(f"@SPACEGROUP {space_group} is outside 1-230", src, "@SPACEGROUP")

    # ---- custom atoms
    custom = {}
    for r in rows("ATOMDB"):
        if r and r[0].lower() != "nodefaults":
            custom[r[0]] = r
    # ---- atoms
    labels, frac = [], []
    for r in rows("ATOMPOSITIONS"):
        if len(r) != 4:
            raise StructureError(f"@ATOMPOSITIONS line {' '.join(r)!r}; allowed: 'Element x y z'", src,
                                 "@ATOMPOSITIONS")
        labels.append(r[0])
        frac.append([_num(t, src, "@ATOMPOSITIONS") for t in r[1:]])
    if not labels:
        raise StructureError("@ATOMPOSITIONS is empty", src, "@ATOMPOSITIONS")
    species = {}
    for lab in dict.fromkeys(labels):
        if lab in custom:
            entry = custom[lab]
            if len(entry) > 1 and entry[1].lower() == "is":
                raise StructureError(f"atom {lab!r} is an @ATOMDB mixture ({' '.join(entry)}); "
                                     "only single nuclides are supported", src, "@ATOMDB")
            notes.append(f"@ATOMDB redefines {lab!r} ({' '.join(entry[1:])}); the standard "
                         "scattering length is used")
        species[lab] = _nuclide(lab, src, "@ATOMPOSITIONS")

    # ---- temperature
    temp = DEFAULT_TEMPERATURE
    trow = rows("TEMPERATURE")
    if trow:
        nums = [t for t in trow[0] if re.match(r"^[0-9.eE+-]+$", t)]
        if not nums:
            raise StructureError(f"@TEMPERATURE {' '.join(trow[0])!r} has no value", src, "@TEMPERATURE")
        temp = _num(nums[-1], src, "@TEMPERATURE")
    if temperature is not None:
        temp = float(temperature)
    if not temp >= 0:
        raise StructureError(f"temperature {temp} K must be >= 0", src, "@TEMPERATURE")

    # ---- displacement per label
    b_of: dict[str, float] = {}
    for name_, rs, lineno in sections:
        if name_ != "DYNINFO":
            continue
        kv: dict[str, list[str]] = {}
        key = None
        for r in rs:
            if _KEY_START.match(r[0]):
                key = r[0].lower()
                kv[key] = list(r[1:])
            elif key is not None:
                kv[key] += r
        field = f"@DYNINFO (line {lineno})"
        el = (kv.get("element") or [None])[0]
        if el is None:
            raise StructureError("@DYNINFO without 'element'", src, field)
        if el not in species:
            continue
        kind = (kv.get("type") or [""])[0].lower()
        mass = nuclide_mass(species[el])
        if kind == "vdosdebye":
            td = _num((kv.get("debye_temp") or ["nan"])[0], src, field + " debye_temp")
            if not td > 0:
                raise StructureError(f"debye_temp {td} must be > 0 K", src, field)
            b_of[el] = _EIGHT_PI2 * debye_msd(td, temp, mass)
        elif kind == "vdos":
            eg = [_num(t, src, field + " vdos_egrid") for t in kv.get("vdos_egrid", [])]
            dens = []
            for t in kv.get("vdos_density", []):
                m = _RUN_LENGTH.match(t) if "r" in t else None  # NCMAT run-length: '0r22' = 22 zeros
                if m:
                    dens += [_num(m.group(1), src, field + " vdos_density")] * int(m.group(2))
                else:
                    dens.append(_num(t, src, field + " vdos_density"))
            if len(eg) == len(dens) and len(eg) > 2:
                grid = np.array(eg)
                if not np.allclose(np.diff(grid), grid[1] - grid[0], rtol=1e-6, atol=0):
                    raise StructureError("vdos_egrid with explicit points must be equidistant", src, field)
                eg = [grid[0], grid[-1]]
            if len(eg) != 2 or len(dens) < 2:
                raise StructureError("vdos needs 'vdos_egrid emin emax' and >= 2 'vdos_density' values",
                                     src, field)
            try:
                b_of[el] = _EIGHT_PI2 * vdos_msd((eg[0], eg[1]), dens, temp, mass)
            except ValueError as exc:
                raise StructureError(str(exc), src, field) from None
        else:
            notes.append(f"{el}: @DYNINFO type {kind or '?'} gives no displacement; B = {DEFAULT_B_ISO} A^2 (default)")
    for r in rows("DEBYETEMPERATURE"):
        if len(r) == 1:  # global value
            td = _num(r[0], src, "@DEBYETEMPERATURE")
            for lab in species:
                b_of.setdefault(lab, _EIGHT_PI2 * debye_msd(td, temp, nuclide_mass(species[lab])))
        elif len(r) == 2 and r[0] in species:
            td = _num(r[1], src, "@DEBYETEMPERATURE")
            b_of.setdefault(r[0], _EIGHT_PI2 * debye_msd(td, temp, nuclide_mass(species[r[0]])))
    missing = [lab for lab in species if lab not in b_of]
    for lab in missing:
        b_of[lab] = DEFAULT_B_ISO
    if missing:
        notes.append(f"no Debye temperature or VDOS for {', '.join(missing)}: B = {DEFAULT_B_ISO} A^2 (default)")
    notes.append(f"B from the phonon model at T = {temp:g} K")

    n = len(labels)
    crystal = Crystal(cell=np.array(lengths + angles, dtype=float), frac=np.array(frac),
                      species=tuple(species[lab] for lab in labels), occupancy=np.ones(n),
                      b_iso=np.array([b_of[lab] for lab in labels]), space_group=space_group,
                      source=src, name=path.stem, notes=tuple(notes))
    if space_group is None or space_group == 1:
        return crystal
    # NCrystal files list every atom of the cell in the standard setting of @SPACEGROUP:
    # attach those operators when the atoms fit them (checked), for one |F|^2 per Laue orbit.
    from ..spacegroups import standard_operations

    symmetry = standard_operations(space_group)
    try:
        return with_symmetry(crystal, symmetry, tol_angstrom=1e-3, what=f"standard operators of group {space_group}")
    except StructureError:  # operators of another setting do not even keep the metric
        return crystal
