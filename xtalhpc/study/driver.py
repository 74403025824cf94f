"""The study driver: each arm's data -> ``xtalhpc train`` -> ``xtalhpc evaluate``, resumable.

Every step is the project's own command in a child process (``python -m xtalhpc.cli generate |
synthesize | split | dedup | train | evaluate``, and ``benchmarks/bench_measured.py`` for the
measured patterns); the driver only decides what to run, in which folder, and records it. The
commands it ran are kept, as run, in each arm's ``done.json`` (the report quotes them).

STUDYDIR layout::

    data/<kind>-<digest>/     datasets and structure pools, keyed by what made them (shared by
                              every arm that asks for the same; ``made.json`` marks one complete)
    arms/<arm>/train.toml     the training recipe with the arm's overrides
    arms/<arm>/run/           xtalhpc train's run directory
    arms/<arm>/eval/<set>/    xtalhpc evaluate's outputs (metrics.json), eval/measured/measured.json
    arms/<arm>/done.json      digest of the recipe, metrics files, wall times, commands
    compare/<question>-<set>/ xtalhpc evaluate --compare of the question's arms
    logs/<arm>.log            the children's output
    study.json, study-log.jsonl, study.md

An arm is done when ``done.json`` holds its recipe's digest and every metrics file it lists
exists; a changed recipe (or training recipe, or shared evaluation setting) reruns the arm from
its training on (datasets are reused when what made them is unchanged).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, XtalhpcError
from ..job import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Log, config_to_dict, to_toml, write_atomic
from .config import Arm, StudyConfig, digest

MADE = "made.json"
DONE = "done.json"


class StepFailed(Exception):
    def __init__(self, what: str, rc: int, log: Path):
        super().__init__(f"{what} exited with status {rc} (output in {log})")
        self.rc = rc


@dataclass
class EvalSet:
    key: str
    label: str
    dataset: str
    split: str
    augment: str = "off"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def bench_measured_script() -> Path:
    return repo_root() / "benchmarks" / "bench_measured.py"


class Driver:
    def __init__(self, study: StudyConfig, arms: list[Arm], outdir: str | Path, *, cluster: str = "local",
                 partition: str | None = None, time_limit: str | None = None, study_folder: str = "",
                 log: Log | None = None):
        self.study = study
        self.arms = arms
        self.by_name = {a.name: a for a in arms}
        self.out = Path(outdir).resolve()
        self.cluster = cluster
        self.partition = partition
        self.time_limit = time_limit
        self.folder = study_folder
        self.log = log or Log("study")
        self.commands: list[str] = []
        self.logfile: Path = self.out / "logs" / "study.log"
        self._all: dict[str, Arm] = {}
        self._used: list[dict] = []  # made records (datasets, pools) the current arm used
        if study.eval.measured_csv and any(a.config.evaluate.measured for a in arms) \
                and not bench_measured_script().is_file():
            # refused before any arm runs, not after hours of training
            raise InputError(f"the measured-pattern evaluation runs {bench_measured_script()}, which only a "
                             "checkout of the repository has; run the study from a checkout, or set "
                             "eval.measured_csv = \"\" to leave the measured patterns out",
                             study_folder or None, "eval.measured_csv")

    # ------------------------------------------------------------------ child processes
    def _run(self, argv: list[str], what: str, python_script: str | None = None) -> None:
        cmd = [sys.executable, python_script] if python_script else [sys.executable, "-m", "xtalhpc.cli"]
        shown = ("python " + os.path.relpath(python_script, repo_root()) if python_script else "xtalhpc") + " " + \
            " ".join(_quote(a) for a in argv)
        self.commands.append(shown)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "a") as fh:
            fh.write(f"\n$ {shown}\n")
            fh.flush()
            child = subprocess.Popen(cmd + argv, stdout=fh, stderr=subprocess.STDOUT, cwd=str(repo_root()))
            try:
                rc = child.wait()
            except KeyboardInterrupt:  # pass it on (train and evaluate cancel their submitit job), then stop
                _stop_child(child)
                raise
        if rc != 0:
            raise StepFailed(what, rc, self.logfile)

    # ------------------------------------------------------------------ data
    def _made(self, kind: str, spec: dict, build) -> tuple[Path, dict]:
        """``data/<kind>-<digest>``: built once by ``build(path) -> info`` and reused while ``spec`` holds."""
        d = digest(spec)
        path = self.out / "data" / f"{kind}-{d[:12]}"
        mark = path / MADE
        if mark.exists():
            rec = json.loads(mark.read_text())
            if rec.get("digest") == d:
                self._used.append(rec)
                return path, rec
        path.mkdir(parents=True, exist_ok=True)
        n0 = len(self.commands)
        t0 = time.perf_counter()
        info = build(path) or {}
        rec = {"digest": d, "spec": spec, "wall_s": time.perf_counter() - t0, "commands": self.commands[n0:], **info}
        write_atomic(mark, json.dumps(rec, indent=1, default=str) + "\n")
        self._used.append(rec)
        return path, rec

    def _generate(self, kind: str, sources: list[str], dc, *, split: str, synthetic: dict | None = None,
                  extra_spec: dict | None = None, max_reject: float | None = None) -> tuple[Path, dict]:
        """``xtalhpc generate`` into ``data/<kind>-<digest>/dataset``."""
        argv_tail = ["--instrument", dc.instrument, "--seed", str(dc.seed), "--split", split,
                     "--ranks", str(self.study.study.ranks), "--quiet"]
        if synthetic:
            argv_tail += ["--synthetic", str(synthetic["n"])]
            if synthetic.get("prior"):
                argv_tail += ["--synthetic-prior", synthetic["prior"], "--synthetic-prior-power",
                              str(synthetic["prior_power"])]
        if dc.deuterate:
            argv_tail.append("--deuterate")
        if not dc.h_background:
            argv_tail.append("--no-h-background")
        if max_reject is not None:
            argv_tail += ["--max-reject-fraction", str(max_reject)]
        spec = {"generate": argv_tail, "sources": sources, **(extra_spec or {})}

        def build(path):
            self._run(["generate", *sources, "--output", str(path / "dataset")] + argv_tail, f"generate {kind}")
            return _dataset_counts(path / "dataset")

        return self._made(kind, spec, build)

    def _synthesize(self, dc, *, require: str = "") -> tuple[Path, dict]:
        """Random crystals (``per_group`` per space group of ``space_groups``): ``xtalhpc synthesize``,
        or, with extra element weights, the same generator with that pool (keeping the crystals
        that hold ``require``)."""
        spec = {"space_groups": dc.space_groups, "per_group": dc.per_group, "seed": dc.seed,
                "elements": dc.elements, "require": require}

        def build(path):
            cifs = path / "cifs"
            if not dc.elements and not require:
                self._run(["synthesize", "--space-groups", dc.space_groups, "--per-group", str(dc.per_group), "--seed",
                           str(dc.seed), "--output", str(cifs)], "synthesize")
                return {"n_crystals": len(list(cifs.glob("*.cif")))}
            return _synthesize_with_pool(cifs, dc, require)

        return self._made("crystals", spec, build)

    def _variants_pool(self, dc) -> tuple[Path, dict]:
        """Base crystals plus ``variants`` augmented copies each, and ``xtalhpc split``'s assignment."""
        base, base_rec = self._synthesize(dc)
        spec = {"base": base_rec["digest"], "variants": dc.variants, "seed": dc.seed}

        def build(path):
            files = path / "files"
            info = _write_variants(base / "cifs", files, dc.variants, dc.seed)
            self._run(["split", str(files), "--output", str(path / "split.csv"), "--seed", str(dc.seed)], "split")
            assign = _read_assignment(path / "split.csv")
            for part in ("heldout", "rest"):
                (path / part).mkdir(exist_ok=True)
            n = {"heldout": 0, "rest": 0}
            for src, split in assign.items():
                part = "heldout" if split == "test" else "rest"
                _link(Path(src), path / part / Path(src).name)
                n[part] += 1
            return {**info, "files": n}

        return self._made("variants", spec, build)

    def arm_data(self, arm: Arm) -> tuple[tuple[Path, dict], list[EvalSet], list[dict]]:
        """The arm's training dataset (``(dir, made record)``), its own held-out sets, and the
        made records of everything its training data came from (for the wall time)."""
        dc = arm.config.data
        split = ",".join(repr(float(x)) for x in dc.split)
        if dc.source == "synthetic":
            syn = {"n": dc.synthetic, "prior": dc.prior, "prior_power": dc.prior_power}
            ds = self._generate("synthetic", [], dc, split=split, synthetic=syn)
            return ds, [EvalSet("test", "synthetic test split", str(ds[0] / "dataset"), "test")], [ds[1]]
        if dc.source == "synthesize":
            crystals = self._synthesize(dc, require=dc.require_element)
            ds = self._generate("synthesized", [str(crystals[0] / "cifs")], dc, split=split,
                                extra_spec={"crystals": crystals[1]["digest"]})
            return ds, [EvalSet("test", "synthetic test split", str(ds[0] / "dataset"), "test")], [crystals[1], ds[1]]
        # variants
        pool, pool_rec = self._variants_pool(dc)
        base_rec = json.loads((self._synthesize(dc)[0] / MADE).read_text())
        heldout = self._generate("heldout", [str(pool / "heldout")], dc, split="none",
                                 extra_spec={"pool": pool_rec["digest"]})
        tv = dc.split[0] + dc.split[1]
        tsplit = f"{dc.split[0] / tv!r},{dc.split[1] / tv!r},0.0"
        arm_spec = {"pool": pool_rec["digest"], "variant_split": dc.variant_split, "dedup": dc.dedup,
                    "tolerance": dc.dedup_tolerance, "random_test_fraction": dc.random_test_fraction}

        def build(path):
            train, own = path / "train", path / "own_test"
            train.mkdir(exist_ok=True)
            rest = sorted((pool / "rest").iterdir())
            info: dict = {"pool_files": len(rest)}
            if dc.variant_split == "random":
                own.mkdir(exist_ok=True)
                rng = random.Random(f"{dc.seed}:random-split")
                for f in rest:
                    _link(f.resolve(), (own if rng.random() < dc.random_test_fraction else train) / f.name)
            elif dc.dedup:
                self._run(["dedup", str(pool / "rest"), "--output", str(path / "dedup"), "--tolerance",
                           str(dc.dedup_tolerance)], "dedup")
                kept = _read_kept_sources(path / "dedup" / "kept.csv")
                for f in rest:
                    if f.name in kept:
                        _link(f.resolve(), train / f.name)
                info["dedup"] = json.loads((path / "dedup" / "summary.json").read_text())
            else:
                for f in rest:
                    _link(f.resolve(), train / f.name)
            info["train_files"] = len(list(train.iterdir()))
            info["own_test_files"] = len(list(own.iterdir())) if own.exists() else 0
            return info

        part, part_rec = self._made("partition", arm_spec, build)
        ds = self._generate("variants-train", [str(part / "train")], dc, split=tsplit,
                            extra_spec={"partition": part_rec["digest"]})
        sets = []
        if dc.variant_split == "random":
            own = self._generate("variants-own-test", [str(part / "own_test")], dc, split="none",
                                 extra_spec={"partition": part_rec["digest"]})
            sets.append(EvalSet("test", "own test split (random: near-duplicates of training crystals)",
                                str(own[0] / "dataset"), "all"))
            sets.append(EvalSet("heldout", "structure-type held-out families", str(heldout[0] / "dataset"), "all"))
            made = [base_rec, pool_rec, part_rec, ds[1]]
        else:
            sets.append(EvalSet("test", "own test split (structure-type held-out families)",
                                str(heldout[0] / "dataset"), "all"))
            made = [base_rec, pool_rec, part_rec, ds[1]]
        return ds, sets, made

    def real_set(self, instrument: str) -> EvalSet | None:
        ev = self.study.eval
        if not ev.real_structures:
            return None
        from ..io import iter_structure_files

        files = sorted(str(p) for p in iter_structure_files(ev.real_structures))[:ev.real_max]

        def build(path):
            src = path / "structures"
            src.mkdir(exist_ok=True)
            for i, f in enumerate(files):
                _link(Path(f), src / f"{i:05d}-{Path(f).name}")
            self._run(["generate", str(src), "--output", str(path / "dataset"), "--instrument", instrument,
                       "--split", "none",
                       "--max-reject-fraction", "1.0", "--ranks", str(self.study.study.ranks), "--quiet"],
                      f"generate real ({instrument})")
            return {"n_files": len(files), **_dataset_counts(path / "dataset")}

        path, _ = self._made(f"real-{instrument}", {"files": files, "instrument": instrument}, build)
        return EvalSet("real", f"real structures ({len(files)} files, --augment {ev.real_augment})",
                       str(path / "dataset"), "all", ev.real_augment)

    # ------------------------------------------------------------------ arms
    def arm_dir(self, arm: Arm) -> Path:
        return self.out / "arms" / arm.name

    def is_done(self, arm: Arm) -> bool:
        p = self.arm_dir(arm) / DONE
        if not p.exists():
            return False
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if rec.get("digest") != arm.digest:
            return False
        files = [e["metrics"] for e in rec.get("evals", {}).values()]
        if rec.get("measured"):
            files.append(rec["measured"])
        return all((self.arm_dir(arm) / f).exists() for f in files)

    def run_arm(self, arm: Arm) -> dict:
        adir = self.arm_dir(arm)
        if adir.exists():  # an earlier recipe, or an unfinished run: start the arm over
            shutil.rmtree(adir)
        adir.mkdir(parents=True)
        self.logfile = self.out / "logs" / f"{arm.name}.log"
        self.commands = []
        self._used = []
        t_arm = time.perf_counter()
        (ds, ds_rec), sets, made = self.arm_data(arm)
        for other in arm.config.evaluate.also:
            _, osets, _ = self.arm_data(self._all.get(other) or self.by_name[other])
            o = osets[0]
            if any(s.dataset == o.dataset and s.split == o.split for s in sets):
                continue  # the same patterns as a set already evaluated (the arms share their data)
            sets.append(EvalSet(f"test@{other}", f"{other}'s {o.label}", o.dataset, o.split, o.augment))
        if arm.config.evaluate.real:
            real = self.real_set(arm.config.data.instrument)
            if real:
                sets.append(real)
        t_data = time.perf_counter() - t_arm
        data_commands = list(dict.fromkeys(c for r in self._used for c in r.get("commands", [])))
        self.commands = []
        recipe = adir / "train.toml"
        recipe.write_text(to_toml(config_to_dict(arm.train_config),
                                  header=f"study arm {arm.name}: {arm.config.train.recipe} with "
                                         f"{json.dumps(arm.config.train.overrides)}"))
        run = adir / "run"
        t0 = time.perf_counter()
        argv = ["train", str(recipe), "--dataset", str(ds / "dataset"), "--output", str(run), "--procs",
                str(self.study.study.procs), "--cluster", self.cluster]
        self._run(argv + self._slurm_flags(), "train")
        t_train = time.perf_counter() - t0
        evals = {}
        t0 = time.perf_counter()
        for s in sets:
            out = adir / "eval" / s.key
            argv = ["evaluate", str(run), "--dataset", s.dataset, "--split", s.split, "--output", str(out),
                    "--augment", s.augment,
                    "--batch-size", str(self.study.eval.batch_size), "--cluster", self.cluster]
            self._run(argv + self._slurm_flags(), f"evaluate {s.key}")
            evals[s.key] = {"label": s.label, "dataset": s.dataset, "split": s.split, "augment": s.augment,
                            "metrics": str((out / "metrics.json").relative_to(adir))}
        measured = None
        if arm.config.evaluate.measured and self.study.eval.measured_csv:
            out = adir / "eval" / "measured"
            out.mkdir(parents=True, exist_ok=True)
            self._run(["--model", str(run / "model.pt"), "--csv", self.study.eval.measured_csv, "--repeat", "1",
                       "--json", str(out / "measured.json")], "bench_measured",
                      python_script=str(bench_measured_script()))
            measured = str((out / "measured.json").relative_to(adir))
        t_eval = time.perf_counter() - t0
        gen_s = sum(r.get("wall_s", 0.0) for r in made)
        rec = {"arm": arm.name, "question": arm.question, "label": arm.config.arm.label, "order": arm.config.arm.order,
               "digest": arm.digest, "recipe": str(arm.path), "data": config_to_dict(arm.config.data),
               "dataset": str(ds / "dataset"),
               "dataset_counts": {k: ds_rec.get(k) for k in ("n_patterns", "splits")},
               "train_steps": _last_step(run), "batch_size": arm.train_config.data.batch_size,
               "evals": evals, "measured": measured,
               "wall_s": {"data": gen_s, "data_this_run": t_data, "train": t_train, "evaluate": t_eval,
                          "total": gen_s + t_train + t_eval, "this_run": time.perf_counter() - t_arm},
               "commands": self.commands, "data_commands": data_commands,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_atomic(adir / DONE, json.dumps(rec, indent=1, default=str) + "\n")
        return rec

    def _slurm_flags(self) -> list[str]:
        flags = []
        if self.cluster == "slurm" and self.partition:
            flags += ["--partition", self.partition]
        if self.cluster == "slurm" and self.time_limit:
            flags += ["--time", self.time_limit]
        return flags

    def _event(self, **kw) -> None:
        with open(self.out / "study-log.jsonl", "a") as fh:
            fh.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **kw}) + "\n")

    def write_study_json(self, all_arms: list[Arm] | None = None) -> None:
        """``study.json``: the study settings and every arm of the folder (the report lists the unfinished)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._all = {a.name: a for a in (all_arms or self.arms)}
        write_atomic(self.out / "study.json", json.dumps({
            "folder": self.folder, "study": config_to_dict(self.study),
            "arms": {a.name: {"question": a.question, "label": a.config.arm.label, "order": a.config.arm.order,
                              "digest": a.digest, "recipe": str(a.path)} for a in self._all.values()}},
            indent=1, default=str) + "\n")

    def run(self, all_arms: list[Arm] | None = None) -> int:
        """Run every arm not done; returns the exit status (1 if any arm failed; the others still run)."""
        self.write_study_json(all_arms)
        failed = []
        for arm in self.arms:
            if self.is_done(arm):
                self.log(f"{arm.name}: done (recipe digest {arm.digest[:12]}), skipped")
                self._event(arm=arm.name, event="skipped", digest=arm.digest)
                continue
            self.log(f"{arm.name}: running ({arm.question}: {arm.config.arm.label}); "
                     f"log {self.out}/logs/{arm.name}.log")
            self._event(arm=arm.name, event="start", digest=arm.digest)
            try:
                rec = self.run_arm(arm)
            except KeyboardInterrupt:
                self._event(arm=arm.name, event="interrupted")
                self.log(f"{arm.name}: interrupted; rerun the same command to resume")
                return EXIT_INTERRUPTED
            except (StepFailed, XtalhpcError, OSError) as exc:  # this arm failed; the others still run
                failed.append(arm.name)
                self._event(arm=arm.name, event="failed", error=str(exc))
                self.log(f"{arm.name}: FAILED: {exc}")
                if getattr(exc, "rc", None) == EXIT_INTERRUPTED:
                    return EXIT_INTERRUPTED
                continue
            self._event(arm=arm.name, event="done", wall_s=rec["wall_s"])
            self.log(f"{arm.name}: done in {rec['wall_s']['this_run']:.0f} s (train {rec['wall_s']['train']:.0f} s)")
        if failed:
            self.log(f"{len(failed)} arm(s) failed: {', '.join(failed)}; the others are recorded; rerun to retry")
            return EXIT_FAILED
        return EXIT_OK

    def compare(self) -> dict[str, Path]:
        """``xtalhpc evaluate --compare`` per question and held-out set of its finished arms."""
        from .report import done_records

        out = {}
        recs = done_records(self.out)
        by_q: dict[str, list[dict]] = {}
        for r in recs:
            by_q.setdefault(r["question"], []).append(r)
        self.logfile = self.out / "logs" / "compare.log"
        for q, rs in by_q.items():
            for key in ("test", "real", "heldout"):
                arms = [r for r in rs if key in r["evals"]]
                if len(arms) < 2:
                    continue
                dest = self.out / "compare" / f"{q}-{key}"
                if dest.exists():
                    shutil.rmtree(dest)
                names = self.out / "compare" / "inputs" / f"{q}-{key}"  # --compare names a run by its folder
                names.mkdir(parents=True, exist_ok=True)
                paths = []
                for r in arms:
                    _link((self.out / "arms" / r["arm"] / r["evals"][key]["metrics"]).parent, names / r["arm"])
                    paths.append(str(names / r["arm"]))
                self._run(["evaluate", "--compare", *paths, "--output", str(dest)], f"compare {q} {key}")
                out[f"{q}-{key}"] = dest
        return out


# ---------------------------------------------------------------------- helpers (files)
def _stop_child(child: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGINT to a child command (its own Ctrl-C handling cancels what it submitted), SIGKILL after ``grace_s``."""
    import signal

    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def _link(src: Path, dest: Path) -> None:
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(Path(src).resolve())


def _last_step(run: Path) -> int:
    """The step of the run's last evaluation record (metrics.jsonl), i.e. the steps trained."""
    step = 0
    with open(run / "metrics.jsonl") as fh:
        for line in fh:
            if line.strip():
                step = max(step, int(json.loads(line)["step"]))
    return step


def _dataset_counts(path: Path) -> dict:
    from ..train.data import load_training_data

    data = load_training_data(path, require_split=False)
    return {"n_patterns": int(data.digest["n_patterns"]), "splits": data.digest["splits"]}


def _read_assignment(path: Path) -> dict[str, str]:
    import csv

    with open(path, newline="") as fh:
        return {str(Path(r["source"]).resolve()): r["split"] for r in csv.DictReader(fh)}


def _read_kept_sources(path: Path) -> set[str]:
    import csv

    with open(path, newline="") as fh:
        return {Path(r["source"]).name for r in csv.DictReader(fh)}


def _synthesize_with_pool(cifs: Path, dc, require: str) -> dict:
    """The crystals of ``xtalhpc synthesize`` (same generator, item rule and CIF writer) drawn from the
    default element pool plus ``dc.elements``; those without ``require`` (if given) are not kept."""
    from ..commands.synthesize import parse_space_groups
    from ..errors import reject_reason
    from ..synth import SynthConfig, generate_crystal, write_cif
    from ..synth.elements import DEFAULT_WEIGHTS, ElementPool

    from ..crystal import element_of

    groups = parse_space_groups(dc.space_groups)
    cfg = SynthConfig(pool=ElementPool.from_weights({**DEFAULT_WEIGHTS, **dc.elements}))
    cifs.mkdir(parents=True, exist_ok=True)
    kept = without = 0
    rejects = []
    for i in range(len(groups) * dc.per_group):
        sg = groups[i // dc.per_group]
        try:
            c = generate_crystal(sg, dc.seed, i, cfg)
        except Exception as exc:  # noqa: BLE001 - this crystal's reject (listed), like synthesize
            rejects.append({"item": i, "space_group": sg, "reason": reject_reason(exc, f"crystal {i}")})
            continue
        if require and require not in {element_of(s) for s in c.species}:
            without += 1
            continue
        write_cif(c, cifs / f"{c.name}.cif")
        kept += 1
    if kept == 0:
        raise InputError(f"no synthetic crystal holds {require!r}; raise its weight in data.elements",
                         field="data.require_element")
    return {"n_crystals": kept, f"n_without_{require or 'element'}": without, "n_rejected": len(rejects),
            "rejects": rejects[:50], "element_weights": dc.elements}


def _write_variants(src: Path, out: Path, n_variants: int, seed: int) -> dict:
    """Each crystal of ``src`` and ``n_variants`` augmented copies (``xtalhpc.curate.augment``: strain,
    jitter, element substitution; same space group, checked by spglib) as CIF files in ``out``."""
    from ..curate.augment import StructureAugmentConfig, StructureAugmenter
    from ..errors import reject_reason
    from ..io import load_structure
    from ..synth import write_cif

    out.mkdir(parents=True, exist_ok=True)
    n_base = n_var = 0
    rejects = []
    for i, f in enumerate(sorted(src.glob("*.cif"))):
        _link(f, out / f.name)
        n_base += 1
        try:
            aug = StructureAugmenter(load_structure(f), StructureAugmentConfig())
        except Exception as exc:  # noqa: BLE001 - this crystal gets no variants (listed)
            rejects.append({"file": f.name, "reason": reject_reason(exc, "analysing the symmetry")})
            continue
        for k in range(n_variants):
            try:
                v, _ = aug.sample(seed, i * n_variants + k)
            except Exception as exc:  # noqa: BLE001 - this variant's reject (listed)
                rejects.append({"file": f.name, "variant": k + 1, "reason": reject_reason(exc, "augmenting")})
                continue
            write_cif(v, out / f"{f.stem}-v{k + 1}.cif")
            n_var += 1
    return {"n_base": n_base, "n_variants": n_var, "n_rejected": len(rejects), "rejects": rejects[:50]}
