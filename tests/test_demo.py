"""``xtalhpc demo`` (what ``make demo`` runs) end to end on a small setting, as a subprocess:
real MPI ranks for generate, two submitit DDP processes for train, evaluate, predict."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mpi]

REPO = Path(__file__).resolve().parents[1]
XTALHPC = Path(sys.executable).parent / "xtalhpc"
SHARED_DATA = Path(os.environ.get("XTALHPC_SHARED_DATA", REPO.parent / "shared" / "data"))
LAMNO3 = SHARED_DATA / "patterns" / "gsas2_tutorials" / "Magnetic-I" / "data" / "LaMnO3_50k.gsas"


@pytest.fixture(scope="module", params=["no-shared-data", "shared-data"])
def demo(request, tmp_path_factory):
    """The demo on 150 patterns and 8 training steps; once without the shared data folder (the
    measured-pattern stage says why it is skipped), once with it, where the measured stage runs
    with the model the demo has just trained (``--model RUN/model.pt``: the shipped model may be absent)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    argv = [str(XTALHPC), "demo", "--output", str(out), "--patterns", "150", "--steps", "8", "--skip-simulate"]
    if request.param == "shared-data":
        if not LAMNO3.is_file():
            pytest.skip(f"{LAMNO3} is absent (set XTALHPC_SHARED_DATA)")
        env = dict(os.environ, XTALHPC_SHARED_DATA=str(SHARED_DATA))
        argv += ["--model", str(out / "run" / "model.pt")]
    else:
        env = dict(os.environ, XTALHPC_SHARED_DATA=str(tmp_path_factory.mktemp("no-shared-data")))
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    return request.param, out, r


def test_demo_runs_every_stage_and_says_where_the_files_are(demo):
    setting, out, r = demo
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    text = r.stdout
    # a line per stage with its time, in order
    for i, name in enumerate(("generate", "train", "evaluate", "predict", "predict"), start=1):
        assert f"== [{i}/5] {name}:" in text, text[-3000:]
        assert f"== [{i}/5] done in " in text
    assert "demo finished in" in text and "Where the files are" in text
    if setting == "no-shared-data":  # the measured-pattern step says why it was skipped
        assert "skipped:" in text and "LaMnO3_50k.gsas is not there" in text
    else:  # the measured pattern's top-3 space groups
        assert "LaMnO3_50k.gsas: lambda 1.5403 A" in text, text[-3000:]
        after = text[text.index("LaMnO3_50k.gsas: lambda"):]
        assert re.match(r".*\n  space group(\s+\d+ \S+ [01]\.\d{3}( \|)?){3}\n", after), after[:1000]
    # the table printed per head
    for head in ("space_group", "crystal_system", "bravais_lattice"):
        assert any(line.startswith(f"| {head} |") for line in text.splitlines()), head


def test_demo_outputs_exist_and_are_consistent(demo):
    setting, out, r = demo
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    with h5py.File(out / "dataset" / "dataset.h5", "r") as f:
        sg = f["entry/labels/space_group"][()]
        assert f.attrs["n_patterns"] == 150
    counts = {g: int((sg == g).sum()) for g in (14, 194, 225)}
    assert set(np.unique(sg)) == {14, 194, 225} and max(counts.values()) - min(counts.values()) <= 2, counts
    assert (out / "dataset" / "last-run.json").exists()
    last = json.loads((out / "dataset" / "last-run.json").read_text())
    assert last["ranks"] == 2 and {r["rank"] for r in last["times"]["per_rank"]} == {0, 1}, last
    run = out / "run"
    for name in ("model.pt", "curves.png", "metrics.jsonl", "config.toml"):
        assert (run / name).stat().st_size > 0, name
    logs = "\n".join(p.read_text() for p in (run / "logs").glob("*_log.*"))
    assert "rank 0 of world_size=2" in logs and "rank 1 of world_size=2" in logs
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert metrics["n"] > 0 and set(metrics["heads"]) >= {"space_group", "crystal_system", "bravais_lattice"}
    for head in metrics["heads"]:
        assert (out / "evaluate" / f"confusion_{head}.png").stat().st_size > 0
    pred = json.loads((out / "predict" / "test-pattern.json").read_text())
    assert pred and (out / "predict" / "test-pattern.png").stat().st_size > 0
    measured = out / "predict" / "LaMnO3_50k.json"
    if setting == "no-shared-data":
        assert not measured.exists()
    else:
        (p,) = json.loads(measured.read_text())
        assert p["error"] is None and len(p["space_group"]) == 3, p
        assert (out / "predict" / "LaMnO3_50k.png").stat().st_size > 0
