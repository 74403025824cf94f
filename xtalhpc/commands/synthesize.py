"""``xtalhpc synthesize``: random crystals for chosen space groups, written as CIF files (docs/synthetic.md)."""
from __future__ import annotations

import argparse

HELP = "write random crystals of chosen space groups as CIF files"


def parse_space_groups(spec: str, field: str = "--space-groups") -> list[int]:
    """``"1-230"``, ``"1,2,5-10"`` -> sorted unique space-group numbers; InputError naming ``field`` otherwise."""
    from ..errors import InputError
    from ..spacegroups import check_space_group

    out: set[int] = set()
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise InputError(f"{part!r} is not a space group number or range such as '1-230'", None, field) from None
        a = check_space_group(a, None, field)
        b = check_space_group(b, None, field)
        if b < a:
            raise InputError(f"range {part!r} runs backwards", None, field)
        out.update(range(a, b + 1))
    if not out:
        raise InputError(f"no space groups in {spec!r}; allowed: numbers 1-230 and ranges such as '1-230'", None,
                         field)
    return sorted(out)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synthesize", help=HELP, description=(
            "Draws K random crystals per space group (random Wyckoff occupation, species, lattice and "
            "coordinates with a minimum-distance check) and writes each as a CIF file NAME.cif "
            "(NAME = syn-sg<N>-<i>, i the global item index) with the space group's operations and the "
            "asymmetric unit, plus synthesize.json with the resolved settings. Item i depends only on "
            "(seed, i). A crystal that cannot be drawn (no placement fits after max_attempts) is "
            "rejected: listed on stderr and in synthesize.json, the others still written, exit status 3 "
            "(every crystal asked for is expected). An error that would fail every crystal (a missing "
            "dependency, a kernel that does not compile) stops the run with status 1."))
    p.add_argument("--space-groups", default="1-230", metavar="SPEC",
                   help="space groups, e.g. '1-230' (default) or '1,2,14,62,225-230'")
    p.add_argument("--per-group", type=int, required=True, metavar="K", help="crystals per space group (>= 1)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the CIF files (created)")
    p.add_argument("--seed", type=int, default=0, help="root seed (>= 0; default 0)")
    p.add_argument("--max-atoms", type=int, default=None, metavar="N",
                   help="most atoms per conventional cell (default 160)")
    p.add_argument("--elements-from", nargs="+", metavar="PATH",
                   help="draw elements with the frequencies found in these structure files, folders or globs "
                        "(fraction of structures containing each element) instead of the default pool")
    p.add_argument("--verify", action="store_true",
                   help="check every crystal with spglib (symprec 1e-3 A) and redraw the rare one whose "
                        "space group comes out different")
    return p


def run(args) -> int:
    import json
    import os
    import sys
    import time
    from pathlib import Path

    from .. import __version__
    from ..errors import InputError, reject_reason
    from ..job import EXIT_OK, EXIT_REJECTS
    from ..synth import SynthConfig, generate_crystal, min_atoms, write_cif

    groups = parse_space_groups(args.space_groups)
    if args.per_group is None or args.per_group <= 0:
        raise InputError(f"--per-group {args.per_group} must be >= 1", None, "--per-group")
    if args.seed < 0:
        raise InputError(f"--seed {args.seed} must be >= 0", None, "--seed")
    kw = {}
    if args.max_atoms is not None:
        if args.max_atoms < 1:
            raise InputError(f"--max-atoms {args.max_atoms} must be >= 1", None, "--max-atoms")
        kw["max_atoms"] = args.max_atoms
    if args.verify:
        kw["symprec"] = 1e-3
    pool_info: object = "default (xtalhpc.synth.elements.DEFAULT_WEIGHTS)"
    if args.elements_from:
        pool, pool_info = _pool_from(args.elements_from)
        kw["pool"] = pool
    config = SynthConfig(**kw)
    too_small = [g for g in groups if min_atoms(g) > config.max_atoms]
    if too_small:
        need = max(min_atoms(g) for g in too_small)
        raise InputError(f"--max-atoms {config.max_atoms} is too small for space group(s) {too_small[:10]}"
                         f"{' ...' if len(too_small) > 10 else ''}; they need at least {need}", None, "--max-atoms")

    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".xtalhpc-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror or exc}", str(out), "--output") from None

    n = len(groups) * args.per_group
    t0 = time.perf_counter()
    t_gen = 0.0
    rejects = []
    for i in range(n):
        sg = groups[i // args.per_group]
        t = time.perf_counter()
        try:
            crystal = generate_crystal(sg, args.seed, i, config)
        except Exception as exc:  # noqa: BLE001 - this crystal's reject, unless it fails every one (JobError)
            rejects.append({"item": i, "space_group": sg,
                            "reason": reject_reason(exc, f"drawing crystal {i} of space group {sg}")})
            continue
        finally:
            t_gen += time.perf_counter() - t
        write_cif(crystal, out / f"{crystal.name}.cif")
    elapsed = time.perf_counter() - t0
    settings = {
        "xtalhpc_version": __version__, "command": "synthesize", "space_groups": args.space_groups,
        "n_space_groups": len(groups), "per_group": args.per_group, "seed": args.seed, "n_crystals": n,
        "item_rule": "item i: space group = groups[i // per_group], crystal = generate_crystal(sg, seed, i)",
        "config": {f: getattr(config, f) for f in config.__dataclass_fields__ if f != "pool"},
        "element_pool": pool_info,
        "seconds_total": round(elapsed, 3), "seconds_generating": round(t_gen, 3),
        "n_rejected": len(rejects), "rejects": rejects,
    }
    (out / "synthesize.json").write_text(json.dumps(settings, indent=2) + "\n")
    for r in rejects:
        print(f"REJECTED item {r['item']} (space group {r['space_group']}): {r['reason']}", file=sys.stderr)
    print(f"xtalhpc synthesize: wrote {n - len(rejects)} CIF files for {len(groups)} space groups to {out} "
          f"in {elapsed:.1f} s ({t_gen:.1f} s generating, including one-time table and kernel loading)"
          f"{f'; {len(rejects)} rejected (listed in synthesize.json)' if rejects else ''}",
          file=sys.stdout)
    return EXIT_REJECTS if rejects else EXIT_OK


def _pool_from(sources):
    """ElementPool learned from structure files; returns ``(pool, description for synthesize.json)``."""
    import sys

    from ..errors import InputError, StructureError
    from ..io import iter_structure_files, read_blocks
    from ..synth import ElementPool

    crystals = []
    bad = 0
    for path in iter_structure_files(sources):
        for item in read_blocks(path):
            if isinstance(item, StructureError):
                bad += 1
            else:
                crystals.append(item)
    if not crystals:
        raise InputError(f"no readable structure in {list(sources)} ({bad} unreadable)", None, "--elements-from")
    if bad:
        print(f"xtalhpc synthesize: skipped {bad} unreadable structure(s) in --elements-from", file=sys.stderr)
    pool = ElementPool.from_crystals(crystals)
    info = {"from": [str(s) for s in sources], "n_structures": len(crystals), "n_unreadable": bad,
            "weights": {e: round(float(w), 6) for e, w in zip(pool.elements, pool.weights)}}
    return pool, info

