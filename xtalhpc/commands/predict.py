"""``xtalhpc predict``: ranked space groups, crystal systems and Bravais lattices for measured patterns."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict", help="ranked space groups for measured powder patterns (.xy/.xye/.dat, GSAS raw, pdCIF)",
        description="Read each measured constant-wavelength pattern, subtract its background, carry it onto the "
                    "model's 2theta grid through d-spacing (masking what was not measured), normalise it as "
                    "training did, and print the top-K space groups (number, Hermann-Mauguin symbol, calibrated "
                    "probability), crystal systems and Bravais lattices. Files that cannot be used are listed "
                    "with the reason and the rest are predicted (exit status 3 if any was rejected). "
                    "docs/predict.md.")
    p.add_argument("files", nargs="+", metavar="FILE", help="measured pattern files")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="model file, `xtalhpc train` run directory, or installed model name (default: the model "
                        "shipped in the package, bt1-resnet)")
    wl = p.add_mutually_exclusive_group()
    wl.add_argument("--wavelength", type=float, default=None, metavar="L",
                    help="wavelength in angstrom for every file (overrides the files' own)")
    wl.add_argument("--instrument", default=None, metavar="NAME",
                    help="instrument preset whose wavelength every file was measured at (e.g. bt1-cu311, d1a)")
    p.add_argument("--param-file", default=None, metavar="PRM",
                   help="instrument parameter file (GSAS .prm/.inst, GSAS-II .instprm, EasyDiffraction CIF) giving "
                        "the wavelength of files that carry none")
    p.add_argument("--top", type=int, default=5, metavar="K", help="space groups to list per file (default 5)")
    p.add_argument("--background", default="subtract", choices=("subtract", "keep"),
                   help="subtract the estimated background (default) or feed the pattern with it")
    p.add_argument("--json", default=None, metavar="OUT", help="write the predictions as JSON (one object per file)")
    p.add_argument("--plot", default=None, metavar="OUT",
                   help="PNG of the pattern as the model sees it with the top predictions (OUT a directory for "
                        "several files)")
    p.add_argument("--prior", default="default", metavar="NAME|none",
                   help="space-group prior of the probabilities: 'default' (the model file's deployment prior, for "
                        "the shipped model the ICSD 2025 frequencies), 'none' (the training data's flattened prior) "
                        "or a prior name the model file carries (docs/predict.md)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    return p


def _plot_paths(preds, out: str) -> dict[int, str]:
    """Where each good file's PNG goes: OUT itself for one file named *.png, else OUT/<stem>.png."""
    from pathlib import Path

    good = [i for i, p in enumerate(preds) if p.error is None]
    o = Path(out)
    if len(good) == 1 and o.suffix.lower() == ".png" and not o.is_dir():
        o.parent.mkdir(parents=True, exist_ok=True)
        return {good[0]: str(o)}
    o.mkdir(parents=True, exist_ok=True)
    paths, used = {}, set()
    for i in good:
        stem = Path(preds[i].file).stem
        name, k = f"{stem}.png", 1
        while name in used:
            k += 1
            name = f"{stem}-{k}.png"
        used.add(name)
        paths[i] = str(o / name)
    return paths


def run(args) -> int:
    import json
    import sys

    from ..errors import InputError
    from ..job import EXIT_OK, EXIT_REJECTS, Log, write_atomic
    from ..predict import Classifier, format_prediction, plot_prediction, predict_files, resolve_model

    log = Log("predict")
    if args.top < 1:
        raise InputError(f"--top {args.top} must be >= 1", field="--top")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads {args.threads} must be >= 1", field="--threads")
        import torch

        torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    clf = Classifier(path, prior=args.prior)
    t = clf.temperatures
    note = "calibrated" if any(abs(v - 1.0) > 1e-12 for v in t.values()) else "uncalibrated (temperatures 1.0)"
    note += f", prior {clf.prior}" if clf.prior else ", training prior"
    log(f"model {path} ({clf.two_theta.size} points, {clf.two_theta[0]:g}-{clf.two_theta[-1]:g} deg at "
        f"{clf.wavelength:g} A; probabilities {note})")
    preds = predict_files(args.files, clf, wavelength=args.wavelength, instrument=args.instrument,
                          param_file=args.param_file, background=args.background)
    for p in preds:
        if p.error is None:
            print(format_prediction(p, clf, args.top))
    sys.stdout.flush()
    bad = [p for p in preds if p.error is not None]
    if args.json:
        doc = [p.to_json(args.top, clf.classes) for p in preds]
        write_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        log(f"wrote {args.json}")
    if args.plot and len(bad) < len(preds):
        for i, out in _plot_paths(preds, args.plot).items():
            plot_prediction(preds[i], clf, out, top=args.top)
        log(f"plots in {args.plot}")
    if bad:
        log(f"rejected {len(bad)} of {len(preds)} file(s):")
        for p in bad:
            log(f"  {p.file}: {p.error}")
        return EXIT_REJECTS
    return EXIT_OK
