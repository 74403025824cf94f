"""`xtalhpc study`: a miniature study end to end through the driver (real child processes, real
datasets, models and evaluations), its resume, a changed recipe rerun, bad recipes refused, and the
report's numbers read from the arms' metrics.json."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xtalhpc.cli import main
from xtalhpc.job import EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XTALHPC_SHARED_DATA", REPO.parent / "shared" / "data"))

ARM_A = """
[arm]
question = "imbalance"
label = "no class weights"
order = 1

[data]
synthetic = 120
seed = 5

[train.overrides]
"run.steps" = 4
"run.eval_every" = 2
"run.log_every" = 2
"loss.class_balance" = 0.0

[evaluate]
measured = {measured}
"""

ARM_B = """
[arm]
question = "imbalance"
label = "class-weighted loss"
order = 2

[data]
synthetic = 120
seed = 5

[train.overrides]
"run.steps" = 4
"run.eval_every" = 2
"run.log_every" = 2
"loss.class_balance" = {balance}

[evaluate]
also = ["a-plain"]
real = false
measured = false
"""


def _study_folder(tmp: Path, measured: bool) -> Path:
    d = tmp / "recipes"
    d.mkdir()
    prior = tmp / "prior.csv"  # a stand-in frequency table: group 225 common, the rest rare
    prior.write_text("space_group\n" + "225\n" * 50 + "".join(f"{g}\n" for g in range(1, 230)))
    (d / "study.toml").write_text(f"""
[study]
title = "mini study"
train_recipe = "{REPO / 'jobs' / 'train-smoke.toml'}"
scale_note = "a test"

[eval]
real_structures = ["{REPO / 'xtalhpc' / 'data' / 'structures'}"]
real_max = 3
measured_csv = "{REPO / 'benchmarks' / 'measured.csv' if measured else ''}"
rare_prior = "{prior}"

[questions.imbalance]
title = "Label imbalance (mini)"
poster = "the poster's words"
more_compute = "more of it"
""")
    (d / "a-plain.toml").write_text(ARM_A.format(measured="true" if measured else "false"))
    (d / "b-weighted.toml").write_text(ARM_B.format(balance="1.0"))
    return d


def _study(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtalhpc.cli", "study", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def _events(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "study-log.jsonl").read_text().splitlines()]


def _report_rows(md: str) -> dict[tuple[str, str], list[str]]:
    """(arm, evaluated on) -> cells of the accuracy tables of the report."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 14 and cells[0] in ("a-plain", "b-weighted"):
            rows[(cells[0], cells[1])] = cells
    return rows


def test_study_end_to_end_resume_and_rerun(tmp_path):
    measured = (SHARED / "patterns").is_dir()
    recipes = _study_folder(tmp_path, measured)
    out, report = tmp_path / "study", tmp_path / "docs" / "study.md"

    p = _study(recipes, "--output", out, "--cluster", "local", "--report", report)
    assert p.returncode == EXIT_OK, p.stdout + p.stderr
    a, b = out / "arms" / "a-plain", out / "arms" / "b-weighted"
    done_a, done_b = (json.loads((x / "done.json").read_text()) for x in (a, b))
    assert set(done_a["evals"]) == {"test", "real"}
    assert set(done_b["evals"]) == {"test"}  # a-plain's test set is b's own (one dataset): not evaluated twice
    assert done_a["dataset"] == done_b["dataset"]
    assert any(c.startswith("xtalhpc train ") for c in done_a["commands"])
    assert any(c.startswith("xtalhpc generate ") and "--synthetic 120" in c for c in done_a["data_commands"])
    assert done_a["train_steps"] == 4 and done_a["wall_s"]["train"] > 0
    if measured:
        res = json.loads((a / done_a["measured"]).read_text())
        assert len(res["results"]) == 13 and "sg1" in res["rates"]
    # the arms really trained what their recipes say: b's loss is class-weighted, a's is not
    assert "class_balance = 1.0" in (b / "train.toml").read_text()
    assert "class_balance = 0.0" in (a / "train.toml").read_text()

    # the report's numbers are the metrics.json values
    md = report.read_text()
    rows = _report_rows(md)
    for arm, rec in (("a-plain", done_a), ("b-weighted", done_b)):
        for key, e in rec["evals"].items():
            m = json.loads((out / "arms" / arm / e["metrics"]).read_text())
            cells = rows[(arm, e["label"])]
            assert cells[2] == str(m["n"])
            sg, cs = m["heads"]["space_group"], m["heads"]["crystal_system"]
            assert cells[3] == f"{sg['top1']:.3f}" and cells[4] == f"{sg['top3']:.3f}"
            assert cells[5] == f"{cs['top1']:.3f}" and cells[6] == f"{cs['top3']:.3f}"
            assert cells[11] == f"{sg['macro_accuracy']:.3f}"
            if key == "test":  # rare groups: every group but 225, accuracy weighted by support
                pc = sg["per_class"]
                n = sum(v["support"] for k, v in pc.items() if k != "225")
                acc = sum(v["accuracy"] * v["support"] for k, v in pc.items() if k != "225" and v["support"]) / n
                assert cells[13] == f"{acc:.3f}"
    assert "the poster's words" in md and "more of it" in md
    assert (report.parent / "study" / "imbalance-test.png").stat().st_size > 1000  # evaluate --compare's plot
    cmp_rows = (out / "compare" / "imbalance-test" / "compare.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in cmp_rows[1:]] == ["a-plain", "b-weighted"]  # runs named by their arms

    # resume: both arms done -> nothing runs; then a changed recipe reruns that arm only
    mt_a = (a / "eval" / "test" / "metrics.json").stat().st_mtime_ns
    mt_b = (b / "eval" / "test" / "metrics.json").stat().st_mtime_ns
    made = Path(done_b["dataset"]).parent / "made.json"
    mt_data = made.stat().st_mtime_ns
    (recipes / "b-weighted.toml").write_text(ARM_B.format(balance="0.5"))
    n_events = len(_events(out))
    p = _study(recipes, "--output", out, "--cluster", "debug", "--report", report)
    assert p.returncode == EXIT_OK, p.stdout + p.stderr
    new = _events(out)[n_events:]
    assert [(e["arm"], e["event"]) for e in new] == [("a-plain", "skipped"), ("b-weighted", "start"),
                                                      ("b-weighted", "done")]
    assert "a-plain: done (recipe digest" in p.stderr and "skipped" in p.stderr
    assert (a / "eval" / "test" / "metrics.json").stat().st_mtime_ns == mt_a
    assert (b / "eval" / "test" / "metrics.json").stat().st_mtime_ns > mt_b
    done_b2 = json.loads((b / "done.json").read_text())
    assert done_b2["digest"] != done_b["digest"]
    assert "class_balance = 0.5" in (b / "train.toml").read_text()
    assert made.stat().st_mtime_ns == mt_data and done_b2["dataset"] == done_b["dataset"]  # the dataset was reused
    rows = _report_rows(report.read_text())
    m = json.loads((b / "eval" / "test" / "metrics.json").read_text())
    assert rows[("b-weighted", done_b2["evals"]["test"]["label"])][3] == f"{m['heads']['space_group']['top1']:.3f}"

    # a third run with nothing changed runs nothing
    p = _study(recipes, "--output", out, "--report-only", "--report", report)
    assert p.returncode == EXIT_OK, p.stderr


@pytest.mark.parametrize("text, field", [
    ("[arm]\nquestion = 'dedup'\nlabel = 'x'\n[data]\nsynthetc = 5\n", "data.synthetc"),
    ("[arm]\nquestion = 'dedupe'\nlabel = 'x'\n[data]\nsynthetic = 5\n", "arm.question"),
    ("[arm]\nquestion = 'volume'\nlabel = 'x'\n[data]\nsynthetic = 0\n", "data.synthetic"),
    ("[arm]\nquestion = 'volume'\nlabel = 'x'\n[data]\nsynthetic = 5\ninstrument = 'bt9'\n", "data.instrument"),
    ("[arm]\nquestion = 'volume'\nlabel = 'x'\n[data]\nsynthetic = 5\n[train.overrides]\n'optim.lr' = -1.0\n",
     "train.overrides.optim.lr"),
    ("[arm]\nquestion = 'volume'\nlabel = 'x'\n[data]\nsynthetic = 5\n[train.overrides]\n'optim.lrr' = 1.0\n",
     "train.overrides"),
    ("[arm]\nquestion = 'volume'\nlabel = 'x'\n[data]\nsynthetic = 5\n[evaluate]\nalso = ['nope']\n",
     "evaluate.also"),
    ("[arm]\nquestion = 'dedup'\nlabel = 'x'\n[data]\nsource = 'variants'\nper_group = 1\n", "data.variants"),
])
def test_bad_recipe_refused_naming_file_and_field(tmp_path, capsys, text, field):
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "good.toml").write_text("[arm]\nquestion = 'volume'\nlabel = 'ok'\n[data]\nsynthetic = 5\n")
    (d / "bad.toml").write_text(text)
    out = tmp_path / "study"
    assert main(["study", str(d), "--output", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(d / "bad.toml") in err and f"field '{field}" in err, err
    assert not out.exists()  # refused before anything ran (the good arm too)


def test_bad_study_file_refused(tmp_path, capsys):
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "study.toml").write_text("[eval]\nreal_augment = 'strong'\n")
    (d / "a.toml").write_text("[arm]\nquestion = 'volume'\nlabel = 'ok'\n[data]\nsynthetic = 5\n")
    assert main(["study", str(d), "--output", str(tmp_path / "out")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(d / "study.toml") in err and "eval.real_augment" in err


def test_shipped_recipes_load():
    """jobs/study: every arm of the five questions loads and checks (paths on the shared data skip)."""
    if not SHARED.is_dir():
        pytest.skip(f"real-data folder {SHARED} is absent")
    from xtalhpc.study import load_study

    _, arms = load_study(REPO / "jobs" / "study")
    assert {a.question for a in arms} == {"dedup", "volume", "imbalance", "resolution", "hd"}
    assert len({a.digest for a in arms}) == len(arms)
    vol = [a for a in arms if a.question == "volume"]
    assert len({a.config.data.synthetic for a in vol}) >= 3
    assert re.search(r"lowres", " ".join(a.config.data.instrument for a in arms))


def test_report_writes_paths_a_reader_can_use(tmp_path):
    """docs/study.md names no path of the machine it was made on: the study folder is $STUDY, this
    checkout '.', the shared data beside it ../shared."""
    from xtalhpc.study.report import portable_paths

    repo = Path(__file__).resolve().parents[1]
    study = tmp_path / "study"
    text = (f"xtalhpc generate {repo.parent}/shared/data/structures --output {study}/data/x\n"
            f"python {repo}/benchmarks/bench_measured.py --csv {repo}/benchmarks/measured.csv --json {study}/m.json")
    assert portable_paths(text, study) == (
        "xtalhpc generate ../shared/data/structures --output $STUDY/data/x\n"
        "python benchmarks/bench_measured.py --csv benchmarks/measured.csv --json $STUDY/m.json")


@pytest.mark.slurm
def test_study_sbatch_runs_the_arms_as_slurm_jobs(tmp_path):
    """slurm/study.sh on a real cluster: the driver in a 1-CPU job, each arm's training and evaluation
    submitted by it as Slurm jobs of their own (`--cluster slurm`), both arms done, the report written."""
    import time

    slurm_helpers = pytest.importorskip("slurm_helpers")
    slurm_helpers.require_cluster(accounting=True)
    env = slurm_helpers.job_env()
    env["XTALHPC_VENV"] = str(Path(sys.executable).parent.parent)
    recipes = _study_folder(tmp_path, measured=False)
    out, report = tmp_path / "study", tmp_path / "docs" / "study.md"
    r = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", "--mem=4G", "--time=20",
                        f"--output={tmp_path}/study-%j.out", str(REPO / "slurm" / "study.sh"), str(recipes), str(out),
                        "--", "--report", str(report)], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    t0 = time.monotonic()
    while True:
        q = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=State,ExitCode",
                            "--jobs", job], capture_output=True, text=True, timeout=30).stdout.split()
        if q and q[-1].split("|")[0] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            break
        if time.monotonic() - t0 > 900:
            subprocess.run(["scancel", job], timeout=30)
            subprocess.run(["scancel", "--name=xtalhpc-train"], timeout=30)
            subprocess.run(["scancel", "--name=xtalhpc-evaluate"], timeout=30)
            pytest.fail(f"study job {job} not finished in 900 s")
        time.sleep(2)
    log = (tmp_path / f"study-{job}.out").read_text()
    assert q[-1] == "COMPLETED|0:0", log[-3000:]
    for arm in ("a-plain", "b-weighted"):
        done = json.loads((out / "arms" / arm / "done.json").read_text())
        assert any(c.startswith("xtalhpc train ") and "--cluster slurm" in c for c in done["commands"]), done
        # submitit's Slurm logs: one per task, named by the Slurm job id of the arm's training
        train_logs = list((out / "arms" / arm / "run" / "logs").glob("*_0_log.err"))
        assert train_logs and train_logs[0].name.split("_")[0].isdigit(), train_logs
        assert train_logs[0].name.split("_")[0] != job
    assert "a-plain" in report.read_text()
