"""``xtalhpc demo``: the toolkit from structures to a prediction, on this machine.

Each stage prints one line when it starts and the time it took when it ends:

1. simulate   NIST BT-1 patterns of the bundled real structures (.xye, .csv, .png).
2. generate   a balanced synthetic dataset with 2 MPI ranks (``xtalhpc generate --ranks 2``):
              1800 crystals of three well-separated space groups (P2_1/c, P6_3/mmc, Fm-3m by
              default) drawn evenly, on the BT-1 grid, split 0.8/0.1/0.1; then ``xtalhpc verify``
              and ``xtalhpc info``.
3. train      the small ResNet of jobs/train-smoke.toml with 2-process DDP on the CPU
              through submitit's local executor (``xtalhpc train --procs 2 --cluster local``);
              training curves in RUN/curves.png.
4. evaluate   the trained model on the test split (``xtalhpc evaluate --split test``):
              the top-1/top-3 table per head, confusion matrices (PNG).
5. predict    one test pattern written as .xye and predicted by the demo model, with the
              plot of the pattern as the model sees it and its top classes.
6. predict    the shipped model (bt1-resnet) on the measured NIST BT-1 pattern of LaMnO3
              (50 K, GSAS file with its BT1_Cu311.inst), when the shared data folder is
              there ($XTALHPC_SHARED_DATA, else ../shared/data beside the repository) and the
              model is installed; its top-3 space groups.

At the end a summary says where every file is. ``make demo`` runs this with the defaults.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_GROUPS = (14, 194, 225)
LAMNO3 = Path("patterns") / "gsas2_tutorials" / "Magnetic-I" / "data" / "LaMnO3_50k.gsas"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="structures -> dataset -> trained model -> evaluation -> prediction "
                                    "(what `make demo` runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--instrument", default="bt1-cu311", help="instrument preset or TOML (default: bt1-cu311)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="simulation backend")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks for the generate step (default 2)")
    p.add_argument("--procs", type=int, default=2, help="DDP processes for training (default 2)")
    p.add_argument("--patterns", type=int, default=1800,
                   help="synthetic patterns in the dataset, spread evenly over --groups (default 1800)")
    p.add_argument("--groups", default=",".join(map(str, DEMO_GROUPS)),
                   help="space groups of the synthetic dataset (default 14,194,225)")
    p.add_argument("--recipe", default=None,
                   help="training recipe (default: jobs/train-smoke.toml of the repository)")
    p.add_argument("--steps", type=int, default=None, help="training steps instead of the recipe's epochs (quick runs)")
    p.add_argument("--shared-data", default=None,
                   help="shared data folder with the measured patterns (default: $XTALHPC_SHARED_DATA, "
                        "else ../shared/data beside the repository)")
    p.add_argument("--model", default="bt1-resnet",
                   help="model for the measured LaMnO3 pattern (default: the shipped bt1-resnet)")
    p.add_argument("--skip-simulate", action="store_true", help="leave out stage 1")
    return p


def bundled_structures() -> list[Path]:
    """The demo CIFs shipped in the package (see data/structures/PROVENANCE.txt)."""
    root = resources.files("xtalhpc") / "data" / "structures"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".cif"))


def shared_data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("XTALHPC_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


class _Stages:
    """One line when a stage starts, its time when it ends, the times again at the end."""

    def __init__(self, n: int):
        self.n, self.i, self.times = n, 0, []
        self.t0 = time.monotonic()

    @contextlib.contextmanager
    def stage(self, title: str):
        self.i += 1
        print(f"\n== [{self.i}/{self.n}] {title}", flush=True)
        t = time.monotonic()
        yield
        dt = time.monotonic() - t
        self.times.append((title.split(":")[0], dt))
        print(f"== [{self.i}/{self.n}] done in {dt:.1f} s (total {time.monotonic() - self.t0:.0f} s)", flush=True)


def _fail(stage: str, status: int) -> int:
    print(f"\ndemo stopped: {stage} exited with status {status} (docs/exit-status.md); see its messages above")
    return status


def _head_table(metrics: dict) -> str:
    rows = ["| head | patterns | top-1 | top-3 | classes seen |", "| --- | ---: | ---: | ---: | ---: |"]
    for head, m in metrics["heads"].items():
        seen = sum(1 for v in m["per_class"].values() if v["support"])
        rows.append(f"| {head} | {m.get('n', metrics['n'])} | {m['top1']:.3f} | {m.get('top3', float('nan')):.3f} "
                    f"| {seen} |")
    return "\n".join(rows)


def _write_test_pattern(dataset: Path, out: Path) -> tuple[Path, int]:
    """The first test-split pattern of ``dataset`` as an .xye file; its space group."""
    import h5py
    import numpy as np

    from ..io.measured.xye import write_xye

    with h5py.File(dataset / "dataset.h5", "r") as f:
        vocab = [v.decode() if isinstance(v, bytes) else str(v) for v in f["entry/vocabularies/split"][()]]
        split = f["entry/labels/split"][()]
        idx = np.flatnonzero(split == vocab.index("test"))
        i = int(idx[0]) if idx.size else 0
        two_theta = f["entry/data/two_theta"][()]
        y = f["entry/data/pattern"][i].astype(np.float64)
        sg = int(f["entry/labels/space_group"][i])
    write_xye(out, two_theta, y)
    return out, sg


def run(args) -> int:
    from ..cli import main as cli_main
    from ..job import EXIT_OK, EXIT_USAGE

    out = Path(args.output).resolve()
    recipe = Path(args.recipe) if args.recipe else REPO / "jobs" / "train-smoke.toml"
    if not recipe.is_file():
        print(f"demo: training recipe {recipe} not found (give --recipe jobs/train-smoke.toml of a checkout)", file=sys.stderr)
        return EXIT_USAGE
    try:
        groups = [int(g) for g in args.groups.split(",") if g.strip()]
    except ValueError:
        print(f"demo: --groups {args.groups!r} must be space-group numbers separated by commas", file=sys.stderr)
        return EXIT_USAGE
    if not groups or any(not 1 <= g <= 230 for g in groups) or args.patterns < 10 * len(groups):
        print("demo: need space groups in 1-230 and at least 10 patterns per group (--groups, --patterns)", file=sys.stderr)
        return EXIT_USAGE
    shared = shared_data_dir(args.shared_data)
    measured = shared / LAMNO3
    out.mkdir(parents=True, exist_ok=True)
    dataset, runs, evaldir, preddir = out / "dataset", out / "run", out / "evaluate", out / "predict"
    sim_dir = out / "simulate"
    stages = _Stages(5 + (not args.skip_simulate))
    print(f"xtalhpc demo: structures -> dataset -> trained model -> evaluation -> prediction, into {out}")
    status = EXIT_OK

    if not args.skip_simulate:
        from .simulate import run as simulate_run

        files = [str(p) for p in bundled_structures()]
        with stages.stage(f"simulate: BT-1 patterns of the {len(files)} bundled structures -> {sim_dir}"):
            sim_dir.mkdir(exist_ok=True)
            ns = argparse.Namespace(files=files, instrument=args.instrument, device=args.device,
                                    xye=str(sim_dir) + "/", reflections=str(sim_dir) + "/", plot=str(sim_dir) + "/")
            status = simulate_run(ns)
        if status != EXIT_OK:
            return _fail("xtalhpc simulate", status)

    with stages.stage(f"generate: {args.patterns} synthetic crystals of space groups {args.groups} "
                      f"with {args.ranks} MPI ranks -> {dataset}"):
        prior = out / "space-groups.csv"
        prior.write_text("space_group\n" + "\n".join(map(str, groups)) + "\n")
        argv = ["generate", "--synthetic", str(args.patterns), "--synthetic-prior", str(prior), "--output",
                str(dataset), "--ranks", str(args.ranks), "--instrument", args.instrument, "--device", args.device,
                "--shard-size", "100", "--seed", "1", "--quiet"]
        print("$ xtalhpc " + " ".join(argv), flush=True)
        gen = cli_main(argv)
        if gen == EXIT_OK:
            gen = cli_main(["verify", str(dataset)])
        if gen == EXIT_OK:
            cli_main(["info", str(dataset), "--top", "5"])
    if gen != EXIT_OK:
        return _fail("xtalhpc generate/verify", gen)

    with stages.stage(f"train: {recipe.name} with {args.procs}-process DDP on the CPU (submitit, local) -> {runs}"):
        argv = ["train", str(recipe), "--dataset", str(dataset), "--output", str(runs), "--procs", str(args.procs),
                "--cluster", "local"]
        if runs.joinpath("model.pt").exists():
            print(f"{runs}/model.pt exists: training again from scratch into {runs}")
            import shutil

            shutil.rmtree(runs)
        if args.steps:
            argv += ["--steps", str(args.steps), "--eval-every", str(max(1, args.steps // 2))]
        print("$ xtalhpc " + " ".join(argv), flush=True)
        tr = cli_main(argv)
        if tr == EXIT_OK:
            last = [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines() if line.strip()]
            val = [r for r in last if any(k.startswith("val") for k in r)]
            if val:
                shown = {k: round(v, 3) for k, v in val[-1].items() if isinstance(v, float)
                         and k.startswith("val") and "space_group" in k}
                print(f"last validation: step {val[-1].get('step')}: {shown}")
    if tr != EXIT_OK:
        return _fail("xtalhpc train", tr)

    with stages.stage(f"evaluate: the trained model on the test split -> {evaldir}"):
        argv = ["evaluate", str(runs), "--dataset", str(dataset), "--split", "test", "--output", str(evaldir)]
        print("$ xtalhpc " + " ".join(argv), flush=True)
        ev = cli_main(argv)
        if ev == EXIT_OK:
            metrics = json.loads((evaldir / "metrics.json").read_text())
            print(f"\ntest split, {metrics['n']} patterns (chance top-1 for the space group: 1/{len(groups)}):")
            print(_head_table(metrics))
    if ev != EXIT_OK:
        return _fail("xtalhpc evaluate", ev)

    with stages.stage(f"predict: one test pattern with the demo model -> {preddir}"):
        preddir.mkdir(exist_ok=True)
        xye, sg = _write_test_pattern(dataset, preddir / "test-pattern.xye")
        print(f"{xye.name}: a test-split pattern of space group {sg}")
        # --background keep: the demo model learnt simulated patterns as they are (recipe: baseline "none")
        argv = ["predict", str(xye), "--model", str(runs), "--instrument", args.instrument, "--top", "3",
                "--background", "keep",
                "--json", str(preddir / "test-pattern.json"), "--plot", str(preddir / "test-pattern.png")]
        print("$ xtalhpc " + " ".join(argv), flush=True)
        pr = cli_main(argv)
    if pr != EXIT_OK:
        return _fail("xtalhpc predict", pr)

    measured_note = None
    with stages.stage("predict: the shipped model on the measured NIST BT-1 pattern of LaMnO3 (50 K)"):
        from ..predict import resolve_model

        try:
            resolve_model(args.model)
            have_model = True
        except Exception as exc:  # noqa: BLE001 - the reason is printed, the step skipped
            have_model, why = False, str(exc)
        if not measured.is_file():
            measured_note = f"skipped: {measured} is not there (set XTALHPC_SHARED_DATA to the shared data folder)"
        elif not have_model:
            measured_note = f"skipped: no model {args.model!r} installed ({why})"
        else:
            argv = ["predict", str(measured), "--model", args.model, "--param-file",
                    str(measured.with_name("BT1_Cu311.inst")), "--top", "3", "--json", str(preddir / "LaMnO3_50k.json"),
                    "--plot", str(preddir / "LaMnO3_50k.png")]
            print("$ xtalhpc " + " ".join(argv), flush=True)
            pm = cli_main(argv)
            measured_note = (f"LaMnO3 is Pnma (62) at 50 K; predictions in {preddir}/LaMnO3_50k.json"
                             if pm == EXIT_OK else f"xtalhpc predict exited with {pm}")
            status = status or pm
        print(measured_note)

    total = time.monotonic() - stages.t0
    print(f"\n== demo finished in {total:.0f} s: " + ", ".join(f"{n} {t:.0f} s" for n, t in stages.times))
    print(f"""Where the files are ({out}):
  simulate/            bundled structures: patterns (.xye), reflection families (.csv), plots (.png)
  dataset/             the synthetic dataset: dataset.h5 over shards/ (xtalhpc info {dataset})
  run/                 the trained model: model.pt, curves.png (training curves), metrics.jsonl, logs/
  evaluate/            report.md, metrics.json, summary.csv, confusion_<head>.png (confusion matrices)
  predict/             test-pattern.png/.json (demo model){', LaMnO3_50k.png/.json (shipped model)'
                                                         if (preddir / 'LaMnO3_50k.json').exists() else ''}""")
    return status
