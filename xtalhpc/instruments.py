"""Instruments: wavelength, 2theta grid and peak-shape parameters, kept as data.

Presets live in ``xtalhpc/data/instruments.toml``; a user adds an instrument by
writing a TOML file of the same shape (one table per instrument) and passing
its path (``--instrument my.toml`` or ``my.toml:name``). Nothing here is code
that must change for a new instrument.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InstrumentError
from .scattering import check_radiation

_FIELDS = ("description", "radiation", "wavelength", "wavelength_weights", "two_theta", "U", "V", "W",
           "X", "Y", "zero", "profile_cutoff", "fwhm_scale", "base", "provenance")

#: Default half-width of a rendered peak in units of its FWHM. GSAS-II cuts its
#: CW profiles at 10-15 FWHM; the rendered profile is renormalised to unit area
#: over its window so integrated intensities are kept exactly.
DEFAULT_PROFILE_CUTOFF = 12.0


@dataclass(frozen=True)
class Instrument:
    """A constant-wavelength powder diffractometer.

    Attributes
    ----------
    name : str
    radiation : {"neutron", "xray"}
    wavelengths : tuple of float
        Wavelength(s) in angstrom; several for an X-ray doublet.
    wavelength_weights : tuple of float
        Relative intensity of each wavelength (the first is 1).
    two_theta_min, two_theta_max, two_theta_step : float
        The detector grid in degrees; points = round((max - min) / step) + 1.
    U, V, W : float
        Caglioti Gaussian terms, centidegrees^2 (GSAS units).
    X, Y : float
        Lorentzian terms, centidegrees: gamma = X / cos(theta) + Y tan(theta).
    zero : float
        Zero shift of 2theta, degrees (added to every peak position).
    profile_cutoff : float
        Rendered half-width of each peak in FWHM units.
    """

    name: str
    radiation: str
    wavelengths: tuple[float, ...]
    two_theta_min: float
    two_theta_max: float
    two_theta_step: float
    U: float
    V: float
    W: float
    X: float = 0.0
    Y: float = 0.0
    wavelength_weights: tuple[float, ...] = (1.0,)
    zero: float = 0.0
    profile_cutoff: float = DEFAULT_PROFILE_CUTOFF
    description: str = ""
    provenance: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        src = self.source or f"instrument {self.name!r}"
        object.__setattr__(self, "radiation", check_radiation(self.radiation, src))
        wl = tuple(float(x) for x in np.atleast_1d(self.wavelengths))
        if not wl or not all(math.isfinite(x) and x > 0 for x in wl):
            raise InstrumentError(f"wavelength {list(wl)} must be > 0 angstrom", src, "wavelength")
        w = tuple(float(x) for x in np.atleast_1d(self.wavelength_weights))
        if len(w) == 1 and len(wl) > 1:
            w = w * len(wl)
        if len(w) != len(wl) or not all(math.isfinite(x) and x > 0 for x in w):
            raise InstrumentError(f"wavelength_weights {list(w)} must be {len(wl)} positive numbers",
                                  src, "wavelength_weights")
        object.__setattr__(self, "wavelengths", wl)
        object.__setattr__(self, "wavelength_weights", w)
        lo, hi, st = self.two_theta_min, self.two_theta_max, self.two_theta_step
        for v, nm in ((lo, "min"), (hi, "max")):
            if not (math.isfinite(v) and 0 < v < 180):
                raise InstrumentError(f"2theta {nm} {v} deg is outside (0, 180)", src, "two_theta")
        if not hi > lo:
            raise InstrumentError(f"2theta max {hi} must exceed min {lo}", src, "two_theta")
        if not (math.isfinite(st) and st > 0 and (hi - lo) / st <= 10_000_000):
            raise InstrumentError(f"2theta step {st} must be > 0 and give at most 1e7 points", src, "two_theta")
        for nm in ("U", "V", "W", "X", "Y", "zero"):
            if not math.isfinite(getattr(self, nm)):
                raise InstrumentError(f"{nm} = {getattr(self, nm)} is not finite", src, nm)
        if self.X < 0 or self.Y < 0:
            raise InstrumentError(f"Lorentzian X = {self.X}, Y = {self.Y} must be >= 0", src, "X")
        if not (math.isfinite(self.profile_cutoff) and self.profile_cutoff >= 3):
            raise InstrumentError(f"profile_cutoff {self.profile_cutoff} must be >= 3 FWHM", src, "profile_cutoff")
        # The Gaussian variance must stay positive over the grid, else the instrument is unphysical.
        th = np.radians(np.linspace(lo, hi, 512) / 2)
        t = np.tan(th)
        sig2 = self.U * t * t + self.V * t + self.W
        if np.any(sig2 <= 0) and self.X == 0 and self.Y == 0:
            raise InstrumentError("U, V, W give a zero or negative Gaussian width inside the grid "
                                  "and there is no Lorentzian width", src, "U")

    @property
    def n_points(self) -> int:
        return int(round((self.two_theta_max - self.two_theta_min) / self.two_theta_step)) + 1

    @property
    def two_theta(self) -> np.ndarray:
        """The 2theta grid (degrees)."""
        return self.two_theta_min + self.two_theta_step * np.arange(self.n_points)

    @property
    def wavelength(self) -> float:
        """The principal (first) wavelength in angstrom."""
        return self.wavelengths[0]

    @property
    def d_min(self) -> float:
        """Smallest d-spacing (angstrom) whose peak centre lies on the grid, for any wavelength."""
        return min(self.wavelengths) / (2 * math.sin(math.radians(min(self.two_theta_max - self.zero, 179.999) / 2)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    def scaled(self, fwhm_scale: float, name: str | None = None) -> "Instrument":
        """The same instrument with every peak width multiplied by ``fwhm_scale``."""
        if not (math.isfinite(fwhm_scale) and fwhm_scale > 0):
            raise InstrumentError(f"fwhm_scale {fwhm_scale} must be > 0", self.source or self.name, "fwhm_scale")
        f2 = fwhm_scale * fwhm_scale
        kw = self.to_dict()
        kw.update(U=self.U * f2, V=self.V * f2, W=self.W * f2, X=self.X * fwhm_scale, Y=self.Y * fwhm_scale,
                  name=name or self.name)
        return Instrument(**kw, source=self.source)


def _from_table(name: str, table: dict, tables: dict, src: str, depth: int = 0) -> Instrument:
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise InstrumentError(f"unknown key(s) {unknown}; allowed: {', '.join(_FIELDS)}", src, f"[{name}]")
    if "base" in table:
        base = table["base"]
        if base not in tables or depth > 8:
            raise InstrumentError(f"base {base!r} is not an instrument in this file", src, f"[{name}].base")
        merged = {k: v for k, v in tables[base].items() if k not in ("base", "fwhm_scale")}
        merged.update({k: v for k, v in table.items() if k != "base"})
        if "base" in tables[base]:
            parent = _from_table(base, tables[base], tables, src, depth + 1)
            merged = {**_inst_to_table(parent), **{k: v for k, v in table.items() if k != "base"}}
        table = merged
    missing = [k for k in ("radiation", "wavelength", "two_theta", "U", "V", "W") if k not in table]
    if missing:
        raise InstrumentError(f"missing key(s) {missing}", src, f"[{name}]")
    tt = table["two_theta"]
    if not (isinstance(tt, list) and len(tt) == 3):
        raise InstrumentError(f"two_theta must be [min, max, step] in degrees, got {tt!r}", src, f"[{name}].two_theta")
    try:
        inst = Instrument(
            name=name, radiation=table["radiation"], wavelengths=tuple(np.atleast_1d(table["wavelength"])),
            wavelength_weights=tuple(np.atleast_1d(table.get("wavelength_weights", 1.0))),
            two_theta_min=float(tt[0]), two_theta_max=float(tt[1]), two_theta_step=float(tt[2]),
            U=float(table["U"]), V=float(table["V"]), W=float(table["W"]), X=float(table.get("X", 0.0)),
            Y=float(table.get("Y", 0.0)), zero=float(table.get("zero", 0.0)),
            profile_cutoff=float(table.get("profile_cutoff", DEFAULT_PROFILE_CUTOFF)),
            description=str(table.get("description", "")), provenance=str(table.get("provenance", "")),
            source=f"{src} [{name}]")
    except (TypeError, ValueError) as exc:
        raise InstrumentError(f"bad value: {exc}", src, f"[{name}]") from None
    if "fwhm_scale" in table:
        inst = inst.scaled(float(table["fwhm_scale"]))
    return inst


def _inst_to_table(inst: Instrument) -> dict:
    return {"description": inst.description, "radiation": inst.radiation, "wavelength": list(inst.wavelengths),
            "wavelength_weights": list(inst.wavelength_weights),
            "two_theta": [inst.two_theta_min, inst.two_theta_max, inst.two_theta_step],
            "U": inst.U, "V": inst.V, "W": inst.W, "X": inst.X, "Y": inst.Y, "zero": inst.zero,
            "profile_cutoff": inst.profile_cutoff, "provenance": inst.provenance}


def load_instruments(path: str | Path) -> dict[str, Instrument]:
    """All instruments defined in a TOML file, by name."""
    p = Path(path)
    try:
        tables = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InstrumentError("file not found", str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InstrumentError(f"not valid TOML: {exc}", str(p)) from None
    bad = [k for k, v in tables.items() if not isinstance(v, dict)]
    if bad:
        raise InstrumentError(f"top-level key(s) {bad} are not instrument tables", str(p))
    return {name: _from_table(name, t, tables, str(p)) for name, t in tables.items()}


@lru_cache(maxsize=1)
def presets() -> dict[str, Instrument]:
    """The bundled instrument presets."""
    with resources.as_file(resources.files("xtalhpc") / "data" / "instruments.toml") as p:
        return load_instruments(p)


def get_instrument(spec: "str | Path | Instrument") -> Instrument:
    """Resolve a preset name, a TOML path (first table) or ``path.toml:name``."""
    if isinstance(spec, Instrument):
        return spec
    s = str(spec)
    if s in presets():
        return presets()[s]
    path, _, name = s.partition(".toml:")
    if name:
        path += ".toml"
    if Path(path).suffix == ".toml" or Path(path).exists():
        insts = load_instruments(path)
        if not insts:
            raise InstrumentError("the file defines no instrument", path)
        if name:
            if name not in insts:
                raise InstrumentError(f"no instrument {name!r}; the file has {', '.join(insts)}", path)
            return insts[name]
        return next(iter(insts.values()))
    raise InstrumentError(f"unknown instrument {s!r}; presets: {', '.join(presets())}; or give a TOML file",
                          field="instrument")
