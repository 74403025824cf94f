"""`xtalhpc train` end to end with real processes: 2-process gloo DDP through submitit's local
executor, resume == uninterrupted, outputs loadable with weights_only, bad input refused before
anything is submitted, the plain-srun entry, and (slow) accuracy on three space groups."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("submitit")

from xtalhpc.cli import main  # noqa: E402
from xtalhpc.job import EXIT_OK, EXIT_USAGE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "jobs" / "train-smoke.toml")
GROUPS = (14, 194, 225)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """1800 synthetic patterns of three well-separated space groups (P2_1/c, P6_3/mmc, Fm-3m) on the BT-1 grid."""
    root = tmp_path_factory.mktemp("train")
    table = root / "prior.csv"
    table.write_text("space_group\n" + "\n".join(str(g) for g in GROUPS) + "\n")
    out = root / "ds3"
    rc = main(["generate", "--synthetic", "1800", "--synthetic-prior", str(table), "--output", str(out), "--quiet"])
    assert rc in (0, 1)
    return out


def _train(*args) -> int:
    return main(["train", SMOKE, *map(str, args)])


def _logs(run: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((run / "logs").glob("*_log.*")))


def _digests(run: Path) -> dict[int, str]:
    return {int(r): d for r, d in re.findall(r"rank (\d) of world_size=\d: step \d+, parameters sha256 (\w+)", _logs(run))}


@pytest.fixture(scope="module")
def run_a(dataset, tmp_path_factory):
    """12 steps on 2 gloo processes through submitit's LocalExecutor, uninterrupted."""
    run = tmp_path_factory.mktemp("runs") / "a"
    rc = _train("--dataset", dataset, "--output", run, "--procs", "2", "--steps", "12", "--eval-every", "6")
    assert rc == EXIT_OK, _logs(run)[-3000:]
    return run


def test_ddp_ranks_stay_identical_and_outputs_are_complete(run_a, dataset):
    logs = _logs(run_a)
    assert "rank 0 of world_size=2" in logs and "rank 1 of world_size=2" in logs
    d = _digests(run_a)
    assert set(d) == {0, 1} and d[0] == d[1]  # the same parameters on both ranks after 12 steps
    assert re.search(r"step 10/12 .* samples/s", logs)
    # outputs
    assert (run_a / "config.toml").exists() and (run_a / "curves.png").stat().st_size > 1000
    recs = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in recs] == [(6, "train"), (6, "val"), (12, "train"), (12, "val")]
    for r in recs:
        for h in ("space_group", "crystal_system", "bravais_lattice", "extinction_group"):
            for k in (1, 3, 5):
                assert 0 <= r[f"{h}/top{k}"] <= 1
        assert r["loss"] > 0 and r["epoch"] == 0
    from xtalhpc.train.data import load_training_data

    assert recs[1]["n"] == load_training_data(dataset).digest["splits"]["val"]  # every val pattern, once
    # every checkpoint and the model load with weights_only=True
    ckpts = sorted((run_a / "checkpoints").glob("*.pt"))
    assert [p.name for p in ckpts] == ["step-000000012.pt"]
    for p in ckpts + [run_a / "model.pt"]:
        torch.load(p, weights_only=True)
    from xtalhpc.train.modelfile import load_model

    model, meta = load_model(run_a / "model.pt", input_length=3296)
    assert meta["format"] == "xtalhpc.model" and meta["input_length"] == 3296
    assert meta["heads"]["space_group"][13] == "14" and len(meta["heads"]["extinction_group"]) == 97
    assert meta["temperatures"] == {h: 1.0 for h in meta["heads"]}
    assert meta["dataset"]["config_digest"] and meta["normalisation"]["version"] == 1
    assert meta["wavelength_angstrom"] == pytest.approx(1.5403, abs=1e-3)
    ck = torch.load(ckpts[-1], weights_only=True)
    assert all(torch.equal(model.state_dict()[k], ck["model"][k]) for k in ck["model"])
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 3296))
    assert out["space_group"].shape == (1, 230)


def test_model_file_checks(run_a, tmp_path):
    from xtalhpc.errors import InputError
    from xtalhpc.train.modelfile import load_model

    with pytest.raises(InputError, match="takes patterns of 3296 points on its 2theta grid; got 3000"):
        load_model(run_a / "model.pt", input_length=3000)
    blob = torch.load(run_a / "model.pt", weights_only=True)
    for key, value, needle in (("version", 99, "version 99; this xtalhpc reads version 1"),
                               ("format", "other", "format 'other' is not 'xtalhpc.model'")):
        bad = tmp_path / f"{key}.pt"
        torch.save({**blob, key: value}, bad)
        with pytest.raises(InputError, match=needle):
            load_model(bad)


def test_export_writes_the_model_file_of_a_checkpoint(run_a, tmp_path, capsys):
    """`xtalhpc export`: the newest checkpoint of a run gives the model file the run's end wrote
    (weights, grid, vocabularies, step); bad runs and checkpoints are refused naming them."""
    from xtalhpc.train.modelfile import load_model

    out = tmp_path / "exported.pt"
    assert main(["export", str(run_a), "--output", str(out), "--checkpoint", "12"]) == EXIT_OK
    assert "at step 12" in capsys.readouterr().out
    a = torch.load(run_a / "model.pt", weights_only=True)
    b = torch.load(out, weights_only=True)
    assert b["step"] == 12 and a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for key in ("arch", "heads", "input_length", "normalisation", "dataset", "train_config", "metrics"):
        assert a[key] == b[key], key
    assert torch.equal(a["two_theta"], b["two_theta"])
    load_model(out, input_length=3296)
    assert main(["export", str(run_a), "--output", str(out), "--checkpoint", "7"]) == EXIT_USAGE
    assert "step-000000007.pt" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--output", str(out)]) == EXIT_USAGE
    assert "is not a training run" in capsys.readouterr().err


def test_resume_needs_no_init_model_once_checkpointed(run_a, dataset, tmp_path):
    """A run started from --init resumes from its checkpoint on a machine where the init model is
    gone (a long run carried across sessions): only the start needs it."""
    import shutil

    init = tmp_path / "init.pt"
    shutil.copy(run_a / "model.pt", init)
    run = tmp_path / "r"
    common = ("--dataset", dataset, "--output", run, "--steps", "4", "--eval-every", "4", "--init", init)
    assert _train(*common, "--stop-at", "2") == EXIT_OK
    init.unlink()
    assert _train(*common, "--resume") == EXIT_OK
    assert "resumed from" in _logs(run) and (run / "model.pt").exists()
    # without a checkpoint it is still checked
    assert _train("--dataset", dataset, "--output", tmp_path / "r2", "--init", init) == EXIT_USAGE


def test_init_layers_matching_starts_a_wider_net_from_the_shared_layers(run_a, dataset, tmp_path, capsys):
    """--init-layers matching: a net with a wider last stage starts from the init model's stem
    and first stages (every tensor equal), its last stage and heads at random; it trains and
    ends. The same init with the default (all) is refused naming dims; an init sharing no
    trunk layer is refused."""
    from xtalhpc.job import load_config
    from xtalhpc.train.config import TrainConfig
    from xtalhpc.train.data import load_training_data
    from xtalhpc.train.modelfile import matching_weights, read_model_file, save_model
    from xtalhpc.train.models import build_model

    wide = tmp_path / "wide.toml"
    wide.write_text(Path(SMOKE).read_text().replace("dims = [16, 32, 32]", "dims = [16, 32, 48]"))
    init = run_a / "model.pt"
    common = ("train", str(wide), "--dataset", str(dataset), "--steps", "2", "--eval-every", "2", "--init", str(init))
    assert main([*common, "--output", str(tmp_path / "refused")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "dims (model [16, 32, 32], config [16, 32, 48])" in err and "init_layers" in err
    run = tmp_path / "w"
    assert main([*common, "--output", str(run), "--init-layers", "matching"]) == EXIT_OK, _logs(run)[-3000:]
    logs = _logs(run)
    assert re.search(r"where names and shapes match: \d+ of \d+ tensors", logs)
    assert "random start: trunk.stages.2, heads.space_group, heads.crystal_system" in logs
    assert (run / "model.pt").exists()
    # what is taken: every tensor of the stem and the first two stages, none of the rest
    cfg = load_config(TrainConfig, wide)
    data = load_training_data(dataset)
    net = build_model(cfg.model, data.two_theta.size, 1, cfg.loss.heads)
    old = read_model_file(init)["state_dict"]
    take, new = matching_weights(old, net.state_dict())
    assert {k.split(".")[1] for k in take} == {"stem", "stages"} and all(k.split(".")[2] in "01" for k in take
                                                                        if ".stages." in k)
    assert all(k.startswith(("trunk.stages.2.", "heads.")) for k in new) and "heads.space_group.bias" in new
    net.load_state_dict(take, strict=False)
    assert all(torch.equal(net.state_dict()[k], old[k]) for k in take)
    # an init model that shares no trunk layer (other widths everywhere)
    other_cfg = replace(cfg, model=replace(cfg.model, dims=[8, 24, 40]))
    other = save_model(tmp_path / "other.pt", model=build_model(other_cfg.model, data.two_theta.size, 1,
                                                                cfg.loss.heads),
                       cfg=other_cfg, data=data, heads=cfg.loss.heads, step=0, metrics={})
    assert main(["train", str(wide), "--dataset", str(dataset), "--output", str(tmp_path / "none"), "--init",
                 str(other), "--init-layers", "matching"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "other.pt" in err and "no layer of the model's trunk matches" in err
    # matching without an init model: refused, not a silent random start
    assert main(["train", str(wide), "--dataset", str(dataset), "--output", str(tmp_path / "noinit"),
                 "--init-layers", "matching"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "wide.toml" in err and "run.init_layers = \"matching\"" in err and "--init MODEL" in err
    assert not (tmp_path / "noinit").exists()


def test_resume_continues_at_the_saved_step_like_an_uninterrupted_run(dataset, run_a, tmp_path):
    run = tmp_path / "b"
    common = ("--dataset", dataset, "--output", run, "--procs", "2", "--steps", "12", "--eval-every", "6")
    assert _train(*common, "--stop-at", "6") == EXIT_OK
    assert [p.name for p in (run / "checkpoints").glob("*.pt")] == ["step-000000006.pt"]
    assert not (run / "model.pt").exists()
    # the same command without --resume, or with another config, is refused
    assert _train(*common) == EXIT_USAGE
    assert _train(*common, "--resume", "--lr", "0.5") == EXIT_USAGE
    # how it runs may change (a loader worker now): the result may not
    assert _train(*common, "--resume", "--workers", "1") == EXIT_OK
    assert "resumed from" in _logs(run) and "at step 6" in _logs(run)
    a = torch.load(run_a / "checkpoints" / "step-000000012.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "step-000000012.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][name], sb[i][name]), (i, name)
    assert a["scheduler"] == b["scheduler"]
    assert _digests(run_a)[0] == re.findall(r"parameters sha256 (\w+)", _logs(run))[-1]
    # the metrics of the resumed run continue the first part's
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6, 6, 12, 12]


def test_bad_input_refused_before_submitting(dataset, tmp_path, capsys):
    import shutil

    # an unknown config key: the file and the key named, with the valid keys
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(SMOKE).read_text() + "\n[extra]\nx = 1\n")
    assert main(["train", str(bad), "--dataset", str(dataset), "--output", str(tmp_path / "r1")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "bad.toml" in err and "unknown key extra" in err and "valid keys: model" in err
    # GPUs where none are visible: refused before anything is written or submitted
    assert _train("--dataset", dataset, "--output", tmp_path / "r2", "--gpus", "4") == EXIT_USAGE
    assert "--gpus" in capsys.readouterr().err and not (tmp_path / "r2").exists()
    # a missing shard: the shard named
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    (copy / "shards" / "part-00002.h5").unlink()
    assert _train("--dataset", copy, "--output", tmp_path / "r3") == EXIT_USAGE
    assert "part-00002.h5" in capsys.readouterr().err
    # a dataset without labels: the file and the field named
    import h5py

    nolab = tmp_path / "nolab"
    shutil.copytree(dataset, nolab)
    with h5py.File(nolab / "dataset.h5", "a") as f:
        del f["entry/labels/space_group"]
    assert _train("--dataset", nolab, "--output", tmp_path / "r4") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "nolab/dataset.h5" in err and "entry/labels" in err
    # a model whose 2theta grid differs from the dataset's (fine-tuning with --init)
    from xtalhpc.job import load_config
    from xtalhpc.train.config import TrainConfig
    from xtalhpc.train.data import load_training_data
    from xtalhpc.train.modelfile import save_model
    from xtalhpc.train.models import build_model

    cfg = load_config(TrainConfig, SMOKE)
    data = load_training_data(dataset)
    data.two_theta = np.linspace(5, 120, 2301)
    other = save_model(tmp_path / "other-grid.pt", model=build_model(cfg.model, 2301, 1, cfg.loss.heads), cfg=cfg,
                       data=data, heads=cfg.loss.heads, step=0, metrics={})
    assert _train("--dataset", dataset, "--output", tmp_path / "r5", "--init", other) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "other-grid.pt" in err and "two_theta" in err and "2301 points" in err
    # an init model of other widths is refused naming the key; one that differs only in
    # dropout (no weights) is taken
    from dataclasses import replace

    from xtalhpc.train.launch import check_init_model

    data = load_training_data(dataset)
    n = data.two_theta.size
    wide = replace(cfg, model=replace(cfg.model, dims=[2 * d for d in cfg.model.dims]))
    other = save_model(tmp_path / "wide.pt", model=build_model(wide.model, n, 1, cfg.loss.heads), cfg=wide,
                       data=data, heads=cfg.loss.heads, step=0, metrics={})
    assert _train("--dataset", dataset, "--output", tmp_path / "r5b", "--init", other) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "wide.pt" in err and "dims (model" in err and "dropout" not in err
    drop = replace(cfg, model=replace(cfg.model, dropout=0.3))
    other = save_model(tmp_path / "drop.pt", model=build_model(drop.model, n, 1, cfg.loss.heads), cfg=drop,
                       data=data, heads=cfg.loss.heads, step=0, metrics={})
    check_init_model(other, data, cfg)
    # --resume of nothing, --nodes without slurm, a bad --time
    assert _train("--dataset", dataset, "--output", tmp_path / "r6", "--resume") == EXIT_USAGE
    assert "holds no training run" in capsys.readouterr().err
    assert _train("--dataset", dataset, "--output", tmp_path / "r7", "--nodes", "2") == EXIT_USAGE
    assert "--nodes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        _train("--dataset", dataset, "--output", tmp_path / "r8", "--time", "soon")
    assert ei.value.code == EXIT_USAGE


def test_checkpoint_requeues_the_same_task():
    import submitit

    from xtalhpc.train.task import TrainTask

    t = TrainTask({"run": {"steps": 5}}, "/data/ds", "/runs/r", "cpu", stop_at=3)
    d = t.checkpoint()
    assert isinstance(d, submitit.helpers.DelayedSubmission)
    again = d.function
    assert isinstance(again, TrainTask) and again is not t
    assert (again.config, again.dataset, again.output, again.device, again.stop_at) == (
        t.config, t.dataset, t.output, t.device, t.stop_at)


def test_default_threads_leave_cores_to_workers():
    from xtalhpc.train.task import default_threads

    cores = len(os.sched_getaffinity(0))
    assert default_threads(1, 0) == cores
    assert default_threads(1, 1) == max(1, cores - 1)
    assert default_threads(cores, 2) == 1


def test_gpu_checks_against_what_is_visible():
    from xtalhpc.errors import InputError
    from xtalhpc.train.launch import LaunchSpec, check_spec

    check_spec(LaunchSpec(gpus=2), gpus_visible=lambda: 2)
    with pytest.raises(InputError, match="only 2 GPU"):
        check_spec(LaunchSpec(gpus=4), gpus_visible=lambda: 2)
    with pytest.raises(InputError, match="no CUDA GPU is visible"):
        check_spec(LaunchSpec(gpus=1), gpus_visible=lambda: 0)
    check_spec(LaunchSpec(cluster="slurm", gpus=8, nodes=4), gpus_visible=lambda: 0)  # the nodes' GPUs, not ours


def test_slurm_executor_parameters(tmp_path):
    from xtalhpc.train.launch import LaunchSpec, build_executor

    ex = build_executor(LaunchSpec(cluster="slurm", gpus=4, nodes=2, partition="gpu", time_min=90), tmp_path, 3)
    p = ex._executor.parameters
    assert (p["nodes"], p["ntasks_per_node"], p["gpus_per_node"], p["partition"], p["time"]) == (2, 4, 4, "gpu", 90)
    assert p["cpus_per_task"] == 4 and p["signal_delay_s"] == 120


# submitit's DebugJob removes its two log FileHandlers without closing them (submitit 1.5.4)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_debug_cluster_and_plain_srun_entry(dataset, tmp_path):
    run = tmp_path / "dbg"
    assert _train("--dataset", dataset, "--output", run, "--cluster", "debug", "--steps", "3", "--eval-every", "3") == 0
    torch.load(run / "model.pt", weights_only=True)
    # the slurm/train.sbatch path: --prepare-only, then `python -m xtalhpc.train.task RUN` on 2 ranks
    run2 = tmp_path / "srun"
    assert _train("--dataset", dataset, "--output", run2, "--procs", "2", "--steps", "4", "--prepare-only") == 0
    assert (run2 / "config.toml").exists() and not (run2 / "checkpoints").exists()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
           "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "xtalhpc.train.task", str(run2)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    d = [re.findall(r"parameters sha256 (\w+)", e)[-1] for e in errs]
    assert d[0] == d[1] and "rank 1 of world_size=2" in errs[1]
    torch.load(run2 / "model.pt", weights_only=True)


@pytest.mark.slow
def test_three_space_groups_are_learned(dataset, tmp_path):
    run = tmp_path / "acc"
    assert _train("--dataset", dataset, "--output", run, "--procs", "2") == EXIT_OK
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["split"] == "val"]
    assert val[-1]["space_group/top1"] >= 0.8, val[-1]  # chance: 1/3


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["foreground", "background-of-a-script"])
def test_sigterm_to_the_launcher_cancels_the_local_job(dataset, tmp_path, sigint_ignored):
    """`kill` of a waiting `xtalhpc train` (SIGTERM) must not leave its DDP processes running: the
    launcher cancels the job, says so and exits 130 (docs/exit-status.md). Also when the launcher
    was started the way a script's `xtalhpc train ... &` or `nohup` starts it, with SIGINT ignored:
    submitit's controller and tasks inherit that, so its SIGINT cancel alone leaves them training."""
    run = tmp_path / "killed"

    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "xtalhpc.cli", "train", SMOKE, "--dataset", str(dataset),
                             "--output", str(run), "--procs", "2", "--steps", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ignore_sigint if sigint_ignored else None)
    try:
        _terminate_and_check(proc, run)
    finally:  # whatever failed above, leave nothing of this launch running (its tasks ignore SIGTERM)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=30)


def _terminate_and_check(proc, run):
    import time

    pids: set[int] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        text = _logs(run) if (run / "logs").is_dir() else ""
        pids = {int(p) for p in re.findall(r"rank \d of world_size=2 \(local rank \d, pid (\d+)", text)}
        if len(pids) == 2 and re.search(r"step \d+/100000", text):
            break
        time.sleep(0.5)
    assert len(pids) == 2 and proc.poll() is None, (proc.poll(), _logs(run)[-2000:] if run.is_dir() else "")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM received; the job was cancelled" in err

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie (exited, not yet reaped by its parent) is not running
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.5)
    assert not any(alive(p) for p in pids), f"task processes {sorted(p for p in pids if alive(p))} still running"
