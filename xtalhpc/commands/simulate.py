"""``xtalhpc simulate FILE... --instrument NAME``: patterns of structure files.

Writes the pattern as .xye, the reflection families as CSV and a PNG plot.
With one structure each OUT is a file name; with several, OUT names a
directory and files are named after each structure. A file that cannot be
read or simulated is reported and the others still run. A structure whose
pattern has no intensity on the grid (no reflection there, or every |F|^2
zero) is reported as such, and its files are still written. Exit status 3
(EXIT_REJECTS) when any input failed or has no intensity; an error that would
fail every input stops the run with status 1 (docs/exit-status.md).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="simulate powder patterns of structure files (CIF, .ncmat, POSCAR)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="structure files (CIF, .ncmat, POSCAR)")
    add_simulation_options(p)
    p.add_argument("--find-symmetry", action=argparse.BooleanOptionalAction, default=True,
                   help="find the symmetry of structures given without operations (P1 CIFs, POSCARs) and use "
                        "the operations that hold exactly for the atoms as written: same pattern, faster "
                        "(default: on)")
    p.add_argument("--xye", metavar="OUT", help="write the pattern (2theta, intensity, sigma) as .xye")
    p.add_argument("--reflections", metavar="OUT", help="write the reflection families as CSV")
    p.add_argument("--plot", metavar="OUT", help="write a PNG plot with reflection ticks")
    return p


def add_simulation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that computes patterns."""
    p.add_argument("--instrument", default="bt1-cu311",
                   help="preset of xtalhpc/data/instruments.toml (bt1-cu311, bt1-ge311, bt1-ge733, "
                        "bt1-cu311-lowres, bt1-cu311-highres, d1a, lab-cuka) or a TOML file "
                        "[path.toml or path.toml:name] (default: bt1-cu311)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="compute backend; auto picks CUDA when a GPU is visible (default: auto)")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "structure"


def _targets(out: str | None, names: list[str], suffix: str) -> list[Path | None]:
    if out is None:
        return [None] * len(names)
    if len(names) == 1 and not out.endswith("/") and not Path(out).is_dir():
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return [Path(out)]
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    paths = []
    for n in names:
        base = _safe(n)
        k = seen.get(base, 0)
        seen[base] = k + 1
        paths.append(d / f"{base if k == 0 else f'{base}-{k}'}{suffix}")
    return paths


def run(args) -> int:
    from ..backend import resolve_device
    from ..errors import reject_reason
    from ..instruments import get_instrument
    from ..io import read_structures
    from ..job import EXIT_OK, EXIT_REJECTS
    from ..simulate import Pattern, simulate_batch

    inst = get_instrument(args.instrument)
    device = resolve_device(args.device, announce=args.device == "auto")
    crystals, names, failures = [], [], []
    for f in args.files:
        try:
            cs = read_structures(f, find_symmetry=getattr(args, "find_symmetry", True))
        except Exception as exc:  # noqa: BLE001 - this file's reject, unless it fails every file (JobError)
            failures.append((f, reject_reason(exc, f"reading {f}")))
            continue
        for c in cs:
            crystals.append(c)
            names.append(Path(f).stem if len(cs) == 1 else f"{Path(f).stem}_{c.name}")
    res = simulate_batch(crystals, inst, device=device, on_error="collect")
    xye = _targets(args.xye, names, ".xye")
    csvs = _targets(args.reflections, names, ".csv")
    pngs = _targets(args.plot, names, ".png")
    empty = []
    for i, c in enumerate(crystals):
        if not res.ok[i]:
            failures.append((c.source or names[i], res.errors[i]))
            continue
        pat = Pattern(res.two_theta, res.patterns[i], res.reflections(i), c, inst, res.device)
        r = pat.reflections
        on = (r.two_theta >= inst.two_theta_min) & (r.two_theta <= inst.two_theta_max)
        print(f"{names[i]}: {c.formula}, SG {c.space_group}, {c.n_atoms} atoms, "
              f"{int(on.sum())} reflection families on the grid ({inst.name}, {res.device})")
        reason = no_intensity_reason(res.patterns[i], r, inst)
        if reason:
            empty.append(names[i])
            print(f"NO INTENSITY {c.source or names[i]}: {reason}", file=sys.stderr)
        if xye[i]:
            pat.write_xye(xye[i])
        if csvs[i]:
            pat.write_reflections(csvs[i])
        if pngs[i]:
            pat.plot(pngs[i])
    for src, msg in failures:
        # the project's errors already start with the file they name
        print(f"FAILED {msg}" if msg.startswith(str(src)) else f"FAILED {src}: {msg}", file=sys.stderr)
    n_ok = int(res.ok.sum())
    print(f"{n_ok - len(empty)} simulated, {len(empty)} with no intensity, {len(failures)} failed, "
          f"of {n_ok + len(failures)} inputs")
    return EXIT_REJECTS if (failures or empty) else EXIT_OK


def no_intensity_reason(pattern, refl, inst) -> str | None:
    """Why a simulated pattern carries no intensity on the instrument's grid, or None if it does.

    Names the case: no reflection family inside the grid's 2theta range, or families whose
    |F|^2 are all zero (scattering lengths that cancel, e.g. b' = 0 without b'').
    """
    import numpy as np

    top = float(np.max(pattern)) if pattern.size else 0.0
    if np.isfinite(top) and top > 0:
        return None
    if not np.isfinite(top):
        return "the pattern is not finite"
    on = (refl.two_theta >= inst.two_theta_min) & (refl.two_theta <= inst.two_theta_max)
    if not on.any():
        return (f"no reflection family on the 2theta grid ({inst.two_theta_min}-{inst.two_theta_max} deg, "
                f"d >= {inst.d_min:.4f} A)")
    return (f"{int(on.sum())} reflection families on the grid but every |F|^2 is zero "
            "(the scattering lengths of the atoms cancel)")
