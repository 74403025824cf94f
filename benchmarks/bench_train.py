"""Training throughput on CPU: the Lolla et al. ResNet on the BT-1 grid (3296 points).

    python benchmarks/bench_train.py --dataset DIR [--json OUT.json] [--steps N]

Sections (each measurement in fresh processes, so thread settings and memory are clean):

* peak: this CPU's float32 matmul (2048^3) and Conv1d (64 -> 64 channels, kernel 17) GFLOP/s
  at 1 and 2 threads;
* model: forward + backward + AdamW on random inputs (no data), batch 128, for the published
  net (channel LayerNorm, dropout after every conv) and the fast variant of jobs/train-bt1.toml
  (GroupNorm(1, C), no stem dropout; same parameters and FLOPs), as 1 process x 2 threads and
  2 processes x 1 thread (run at once; samples/s summed); achieved GFLOP/s from
  ``flops_per_sample``;
* pipeline: the same steps fed from DIR (a) by the simplest loop a user would write (h5py,
  contiguous slices of the master's pattern dataset, divide by the max, labels from the
  file), (b) by xtalhpc's loader (StepDataset + DataLoader with 1 worker: chunked shuffled
  reads, normalisation; no augmentation, the same work as (a)), (c) the same with the
  jobs/train-bt1.toml augmentation; samples/s, the share of step time the loop waited for
  data, peak RSS of the process;
* paper: samples/s one H100 would give from the FLOPs.

The machine is shared: the load average is printed beside every number.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------- workers (child processes)
def worker_peak(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    a = torch.rand(2048, 2048)
    b = torch.rand(2048, 2048)
    for _ in range(2):
        a @ b
    n = 10
    t = time.perf_counter()
    for _ in range(n):
        a @ b
    mm = 2 * 2048**3 * n / (time.perf_counter() - t) / 1e9
    conv = torch.nn.Conv1d(64, 64, 17, padding=8, bias=False)
    x = torch.rand(128, 64, 512)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        t = time.perf_counter()
        for _ in range(n):
            conv(x)
    cv = 2 * 128 * 64 * 64 * 17 * 512 * n / (time.perf_counter() - t) / 1e9
    return {"threads": threads, "matmul_gflops": mm, "conv1d_gflops": cv}


def _model(variant: str):
    from xtalhpc.train.config import ModelConfig
    from xtalhpc.train.models import build_model

    cfg = ModelConfig() if variant == "published" else ModelConfig(norm="group", stem_dropout=0.0)
    return build_model(cfg, 3296, 1)


def _step_fn(model):
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x, labels):
        out = model(x)
        loss = sum(torch.nn.functional.cross_entropy(out[h], labels[h]) for h in out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def worker_model(variant: str, threads: int, seconds: float, batch: int = 128) -> dict:
    import resource

    import torch

    from xtalhpc.train.models import flops_per_sample

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _model(variant)
    step = _step_fn(model)
    x = torch.rand(batch, 1, 3296)
    labels = {h: torch.randint(0, out.shape[1], (batch,)) for h, out in model(x[:1]).items()}
    for _ in range(2):
        step(x, labels)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(x, labels)
        n += batch
    rate = n / (time.perf_counter() - t0)
    fl = flops_per_sample(model, 3296)["forward_backward"]
    return {"variant": variant, "threads": threads, "samples_per_s": rate, "gflops": rate * fl / 1e9,
            "mflop_per_sample": fl / 1e6, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker_pipeline(kind: str, dataset: str, threads: int, seconds: float, batch: int = 128) -> dict:
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _model("fast")
    step = _step_fn(model)
    heads = list(model.heads.keys())
    from xtalhpc.job import load_config
    from xtalhpc.preprocess import Normalisation
    from xtalhpc.train.config import TrainConfig
    from xtalhpc.train.data import EpochPlan, StepDataset, StepSampler, load_training_data, make_loader

    if kind == "plain":
        import h5py

        f = h5py.File(Path(dataset) / "dataset.h5", "r")
        pat = f["entry/data/pattern"]
        sg = f["entry/labels/space_group"][()].astype(np.int64) - 1
        n_rows = pat.shape[0]

        def batches():
            i = 0
            while True:
                if i + batch > n_rows:
                    i = 0
                x = pat[i:i + batch]
                x = x / np.maximum(x.max(axis=1, keepdims=True), 1e-30)
                y = torch.from_numpy(sg[i:i + batch])
                i += batch
                yield torch.from_numpy(x[:, None, :].astype(np.float32)), {h: y % model.heads[h].out_features
                                                                           for h in heads}
        it = batches()
    else:
        cfg = load_config(TrainConfig, REPO / "jobs" / "train-bt1.toml")
        data = load_training_data(dataset)
        plan = EpochPlan(data.rows("train"), chunk=16, batch_size=batch, world_size=1, seed=0, shuffle=True)
        sds = StepDataset(data, plan, rank=0, heads=heads, normalisation=Normalisation(transform="linear"),
                          augment=cfg.augment if kind == "xtalhpc+augment" else None, seed=0)
        loader = make_loader(sds, StepSampler(plan.steps_per_epoch, 0, 0, 10**6), workers=1)

        def batches():
            for b in loader:
                yield b["x"], {h: b[h] for h in heads}
        it = batches()
    for _ in range(2):
        step(*next(it))
    n = 0
    wait = 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        x, y = next(it)
        wait += time.perf_counter() - t
        step(x, y)
        n += x.shape[0]
    el = time.perf_counter() - t0
    return {"kind": kind, "threads": threads, "samples_per_s": n / el, "data_wait_share": wait / el,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------------------- driver
def _spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = args[args.index("--threads") + 1] if "--threads" in args else "1"
    return subprocess.Popen([sys.executable, __file__, "--worker", *args], stdout=subprocess.PIPE, text=True, env=env)


def _collect(procs) -> list[dict]:
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed ({p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", help="dataset directory for the pipeline section")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per configuration")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sections", default="peak,model,pipeline,paper")
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        kind, *rest = a.worker
        if kind == "peak":
            r = worker_peak(a.threads)
        elif kind == "model":
            r = worker_model(rest[0], a.threads, a.seconds)
        else:
            r = worker_pipeline(rest[0], rest[1], a.threads, a.seconds)
        print(json.dumps(r))
        return
    sections = a.sections.split(",")
    res: dict = {"cpu_count": os.cpu_count(), "command": " ".join(sys.argv)}
    import torch

    res["torch"] = torch.__version__
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; load average {load():.2f}")
    if "peak" in sections:
        res["peak"] = []
        for t in (1, 2):
            r = _collect([_spawn(["peak", "--threads", str(t)])])[0]
            r["load"] = load()
            res["peak"].append(r)
            print(f"peak {t} thread(s): matmul {r['matmul_gflops']:.1f} GFLOP/s, conv1d {r['conv1d_gflops']:.1f} "
                  f"GFLOP/s (load {r['load']:.2f})")
    if "model" in sections:
        res["model"] = []
        for variant in ("published", "fast"):
            for procs, threads in ((1, 2), (2, 1)):
                rs = _collect([_spawn(["model", variant, "--threads", str(threads), "--seconds", str(a.seconds)])
                               for _ in range(procs)])
                rate = sum(r["samples_per_s"] for r in rs)
                row = {"variant": variant, "procs": procs, "threads": threads, "samples_per_s": rate,
                       "gflops": sum(r["gflops"] for r in rs), "mflop_per_sample": rs[0]["mflop_per_sample"],
                       "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "load": load()}
                res["model"].append(row)
                print(f"model {variant:9s} {procs} proc x {threads} thr: {rate:7.1f} samples/s, "
                      f"{row['gflops']:.1f} GFLOP/s ({row['mflop_per_sample']:.1f} MFLOP/sample), "
                      f"peak RSS {row['peak_rss_mb']:.0f} MB/proc (load {row['load']:.2f})")
    if "pipeline" in sections:
        if not a.dataset:
            raise SystemExit("--dataset DIR is needed for the pipeline section")
        res["pipeline"] = []
        for threads in (1, 2):
            for kind in ("plain", "xtalhpc", "xtalhpc+augment"):
                r = _collect([_spawn(["pipeline", kind, a.dataset, "--threads", str(threads), "--seconds",
                                      str(a.seconds)])])[0]
                r["load"] = load()
                res["pipeline"].append(r)
                print(f"pipeline {kind:16s} 1 proc x {threads} thr: {r['samples_per_s']:7.1f} samples/s, data wait "
                      f"{100 * r['data_wait_share']:.1f}% of step time, peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"(load {r['load']:.2f})")
    if "paper" in sections:
        from xtalhpc.train.models import flops_per_sample

        fl = flops_per_sample(_model("fast"), 3296)["forward_backward"]
        peak_bf16 = 989e12  # H100 SXM dense bf16 tensor-core peak, FLOP/s
        rows = {f"{int(100 * u)}% of peak": peak_bf16 * u / fl for u in (0.05, 0.2)}
        res["paper"] = {"mflop_per_sample": fl / 1e6, "h100_bf16_peak_tflops": 989, "samples_per_s": rows}
        print(f"paper: {fl / 1e6:.1f} MFLOP/sample; one H100 (989 TFLOP/s bf16 dense): " +
              ", ".join(f"{k}: {v / 1e6:.1f} M samples/s" for k, v in rows.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
