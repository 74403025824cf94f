"""The training job itself: a checkpointable callable that submitit runs once per process.

``TrainTask(config, dataset, output)()`` on every rank:

1. sets up DDP from submitit's environment (``TorchDistributedEnvironment().export()``;
   ``init_process_group("nccl")`` on GPUs, ``"gloo"`` on CPUs) and logs
   ``rank R of world_size=W`` on each rank;
2. builds the model, AdamW and the learning-rate schedule, the data plan and loaders;
3. resumes from the newest checkpoint in ``RUN/checkpoints`` if there is one (the same
   step, optimizer, scheduler and sampler position; per-step seeds make the random state
   a function of the step, and the RNG states are stored as tensors besides);
4. trains: each step seeds torch from (seed, rank, step) (dropout), runs forward under bf16
   autocast on GPUs, the weighted multi-task cross-entropy, backward (DDP averages the
   gradients), gradient clipping and the optimizer step;
5. on rank 0 alone: a progress line every ``log_every`` steps (loss, samples/s, ETA); every
   ``eval_every`` steps and at the end the validation metrics (all ranks evaluate their
   share, the sums are all-reduced) and the train metrics of the batches since the last
   evaluation, appended to ``metrics.jsonl`` and drawn in ``curves.png``; a checkpoint
   every ``checkpoint_every`` steps or ``checkpoint_minutes`` minutes; ``model.pt`` at the end.

``checkpoint()`` (called by submitit on preemption or timeout) returns a
``DelayedSubmission`` of the task, which resumes from the newest checkpoint when requeued:
at most ``checkpoint_minutes`` of work are lost.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from ..job import Log, fmt_seconds
from .config import HEADS, TrainConfig

CHECKPOINT_DIR = "checkpoints"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
MODEL_NAME = "model.pt"
TOPK = (1, 3, 5)
#: Below this mean standard deviation of the logits across validation patterns the network is
#: taken to ignore its input (measured: ~1e-4-1e-3 in collapsed runs, > 0.1 in learning ones).
COLLAPSE_SPREAD = 1e-2


def _seed_of(*parts: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] % (2**63))


def default_threads(local_procs: int, workers: int) -> int:
    """Torch threads per process when ``run.threads = 0``: the cores this process may use, shared by the
    node's processes, less one per DataLoader worker (at least 1).

    Oversubscribing hurts far more than an idle core: on a 2-core machine with another busy
    process, 2 threads ran the ResNet at 20 patterns/s and 1 thread at 115 (BENCHMARKS.md).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_procs) - workers)


def checkpoint_paths(run: Path) -> list[Path]:
    """Checkpoints of a run directory, oldest first."""
    d = Path(run) / CHECKPOINT_DIR
    return sorted(d.glob("step-*.pt")) if d.is_dir() else []


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    return cfg.run.steps if cfg.run.steps > 0 else cfg.run.epochs * steps_per_epoch


def lr_factor(step: int, cfg: TrainConfig, total: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then cosine to min_lr_ratio (or constant)."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    span = max(1, total - o.warmup_steps)
    t = min(1.0, (step - o.warmup_steps) / span)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class _Metrics:
    """Running sums of loss and top-k hits per head (reduced across ranks before reading)."""

    def __init__(self, heads):
        self.heads = list(heads)
        self.reset()

    def reset(self):
        self.n = 0
        self.loss = 0.0
        self.hits = {(h, k): 0 for h in self.heads for k in TOPK}

    def add(self, outputs, labels, loss_sum: float):
        import torch

        b = int(next(iter(labels.values())).shape[0])
        self.n += b
        self.loss += float(loss_sum)
        for h in self.heads:
            logits = outputs[h].float()
            kmax = min(max(TOPK), logits.shape[1])
            top = logits.topk(kmax, dim=1).indices
            eq = top == labels[h][:, None]
            for k in TOPK:
                self.hits[(h, k)] += int(eq[:, :min(k, kmax)].any(dim=1).sum())
        del torch

    def reduce(self, dist_on: bool, device):
        import torch

        vec = torch.tensor([self.n, self.loss] + [self.hits[key] for key in sorted(self.hits)], dtype=torch.float64,
                           device=device)
        if dist_on:
            torch.distributed.all_reduce(vec)
        vals = vec.cpu().tolist()
        n = vals[0]
        out = {"n": int(n), "loss": vals[1] / n if n else float("nan")}
        for key, v in zip(sorted(self.hits), vals[2:]):
            out[f"{key[0]}/top{key[1]}"] = v / n if n else float("nan")
        return out


class TrainTask:
    """The checkpointable training callable (one instance per submitted job; see the module docstring).

    Parameters
    ----------
    config : dict
        The resolved :class:`TrainConfig` as a plain dict (pickles without code).
    dataset : str
        The dataset directory or master file.
    output : str
        The run directory (``config.toml`` already written by the launcher).
    device : ``"cpu"`` or ``"cuda"``.
    stop_at : int, optional
        Stop after this step with a checkpoint (the schedule still runs to ``run.steps``;
        ``--resume`` continues): slices of a long run on machines with a session limit.
    """

    def __init__(self, config: dict, dataset: str, output: str, device: str = "cpu", stop_at: int | None = None):
        self.config = config
        self.dataset = str(dataset)
        self.output = str(output)
        self.device = device
        self.stop_at = stop_at

    # -- submitit -------------------------------------------------------------------
    def checkpoint(self, *args, **kwargs):
        """Requeue on preemption/timeout: the same task, which resumes from the newest checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.config, self.dataset, self.output, self.device,
                                                            self.stop_at))

    # -- the job --------------------------------------------------------------------
    def __call__(self) -> dict:
        import numpy as np
        import torch

        from ..job import config_from_dict
        from .data import EpochPlan, StepDataset, StepSampler, class_weights, load_training_data, make_loader
        from .modelfile import save_model
        from .models import build_model, count_parameters, flops_per_sample

        cfg: TrainConfig = config_from_dict(TrainConfig, self.config)
        run = Path(self.output)
        rank, world, local_rank, dist_on = self._init_distributed()
        if rank == 0:
            from ..job import OutputDir

            outdir = OutputDir(run, "train")
            outdir.lock()  # held until the process exits
        log = Log("train", enabled=True)
        log(f"rank {rank} of world_size={world} (local rank {local_rank}, pid {os.getpid()}, "
            f"host {os.uname().nodename}, device {self.device})")
        log0 = Log("train", enabled=rank == 0)
        if self.device == "cuda":
            device = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        else:
            device = torch.device("cpu")
            threads = cfg.run.threads or default_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), cfg.data.workers)
            torch.set_num_threads(threads)
        amp = cfg.run.amp and device.type == "cuda"

        data = load_training_data(self.dataset)
        heads = cfg.loss.heads
        n_points = data.two_theta.size
        in_ch = cfg.normalise.in_channels
        torch.manual_seed(_seed_of(cfg.run.seed, 0x1417))  # the same initial weights on every rank and every run
        model = build_model(cfg.model, n_points, in_ch, heads).to(device)
        if rank == 0:
            fl = flops_per_sample(model, n_points, in_ch)
            log0(f"{torch.get_num_threads()} torch thread(s) and {cfg.data.workers} loader worker(s) per process")
            log0(f"model {cfg.model.arch}: {count_parameters(model):,} parameters, "
                 f"{fl['forward_backward'] / 1e6:.1f} MFLOP per sample forward+backward; input {in_ch} x {n_points}")
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None) if dist_on else model
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.optim.lr,
                                betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)

        train_plan = EpochPlan(data.rows("train"), chunk=cfg.data.read_chunk, batch_size=cfg.data.batch_size,
                               world_size=world, seed=cfg.run.seed, shuffle=True)
        val_rows = data.rows("val")
        if cfg.data.val_max and len(val_rows) > cfg.data.val_max:
            val_rows = np.sort(np.random.default_rng([cfg.run.seed, 0xE7A1]).choice(val_rows, cfg.data.val_max,
                                                                                  replace=False))
        val_plan = EpochPlan(val_rows, chunk=cfg.data.read_chunk, batch_size=cfg.data.batch_size,
                             world_size=world, seed=cfg.run.seed, shuffle=False)
        total = total_steps(cfg, train_plan.steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, total))

        weights = {h: torch.tensor(class_weights(data.class_counts(h), cfg.loss.class_balance,
                                                 cfg.loss.max_class_weight), dtype=torch.float32, device=device)
                   for h in heads}
        head_w = {h: float(getattr(cfg.loss, h)) for h in heads}

        step = 0
        ckpts = checkpoint_paths(run)
        if ckpts:
            state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
            if int(state["global_batch"]) != train_plan.global_batch:
                from ..errors import InputError

                raise InputError(f"the checkpoint was written with a global batch of {int(state['global_batch'])} "
                                 f"patterns, this run has {train_plan.global_batch} (processes x batch size); "
                                 "resume with the same --procs/--gpus and batch size", str(ckpts[-1]))
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step = int(state["step"])
            log0(f"resumed from {ckpts[-1]} at step {step}")
        elif cfg.run.init:
            from .modelfile import layer_groups, matching_weights, read_model_file

            init_state = read_model_file(cfg.run.init)["state_dict"]
            if cfg.run.init_layers == "matching":
                own = model.state_dict()
                take, new = matching_weights(init_state, own)
                model.load_state_dict(take, strict=False)
                n_take = sum(v.numel() for v in take.values())
                log0(f"weights initialised from {cfg.run.init} where names and shapes match: {len(take)} of "
                     f"{len(own)} tensors, {n_take:,} of {sum(v.numel() for v in own.values()):,} values; "
                     f"random start: {layer_groups(new) or 'none'}")
            else:
                model.load_state_dict(init_state)
                log0(f"weights initialised from {cfg.run.init}")
        if step >= total:
            log0(f"nothing to do: step {step} >= {total} steps")

        train_ds = StepDataset(data, train_plan, rank=rank, heads=heads, normalisation=cfg.normalise,
                               augment=cfg.augment, seed=cfg.run.seed)
        val_ds = StepDataset(data, val_plan, rank=rank, heads=heads, normalisation=cfg.normalise, augment=None,
                             seed=cfg.run.seed)
        spe = train_plan.steps_per_epoch
        end = total if not self.stop_at else min(total, max(step, int(self.stop_at)))
        sampler = StepSampler(spe, step // spe, step % spe, max(0, end - step))
        loader = make_loader(train_ds, sampler, cfg.data.workers)

        ce = {h: torch.nn.CrossEntropyLoss(weight=weights[h], reduction="sum",
                                           label_smoothing=cfg.loss.label_smoothing) for h in heads}
        train_metrics = _Metrics(heads)
        gb = train_plan.global_batch
        log0(f"{len(train_plan.rows):,} train / {len(val_rows):,} val patterns; {spe} steps per epoch of "
             f"{gb} patterns ({world} x {cfg.data.batch_size}); {total} steps in all, from step {step}")
        t_last_ckpt = time.monotonic()
        t0 = time.perf_counter()
        t_log = t0
        wait = 0.0
        done_since_log = 0
        start_step = step
        t_fetch = time.perf_counter()
        for batch in loader:
            wait += time.perf_counter() - t_fetch
            torch.manual_seed(_seed_of(cfg.run.seed, rank, step, 0xD0))
            ddp.train()
            x = batch["x"].to(device, non_blocking=True)
            labels = {h: batch[h].to(device, non_blocking=True) for h in heads}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = ddp(x)
            # Per-rank sum / global batch size: DDP's averaging over ranks then gives the mean over the global batch.
            loss = sum(head_w[h] * ce[h](out[h].float(), labels[h]) for h in heads)
            per_sample = loss.detach() / max(1, x.shape[0])
            opt.zero_grad(set_to_none=True)
            (loss * world / gb).backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(ddp.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            step += 1
            done_since_log += x.shape[0]
            with torch.no_grad():
                train_metrics.add({h: o.detach() for h, o in out.items()}, labels, float(loss.detach()))
            if rank == 0 and (step % cfg.run.log_every == 0 or step == total):
                now = time.perf_counter()
                rate = done_since_log * world / max(1e-9, now - t_log)
                el = now - t0
                eta = (total - step) * el / max(1, step - start_step)
                log0(f"step {step}/{total} epoch {(step - 1) // spe} loss {float(per_sample):.4f} "
                     f"lr {sched.get_last_lr()[0]:.2e} {rate:,.1f} samples/s "
                     f"(data wait {100 * wait / max(1e-9, now - t_log):.1f}%) ETA {fmt_seconds(eta)}")
                t_log, done_since_log, wait = now, 0, 0.0
            if step % cfg.run.eval_every == 0 or step == total:
                self._evaluate(ddp, val_ds, val_plan, heads, head_w, ce, device, amp, dist_on, rank, run, step, spe,
                               train_metrics)
                train_metrics.reset()
            due = step % cfg.run.checkpoint_every == 0 or step == end
            if cfg.run.checkpoint_minutes > 0 and time.monotonic() - t_last_ckpt > 60 * cfg.run.checkpoint_minutes:
                due = True
            if dist_on:  # rank 0's clock decides for everyone, so the ranks stay in step
                flag = torch.tensor([1.0 if due else 0.0], device=device)
                torch.distributed.broadcast(flag, 0)
                due = bool(flag.item())
            if due:
                if rank == 0:
                    self._save_checkpoint(run, model, opt, sched, step, train_plan, cfg, world)
                t_last_ckpt = time.monotonic()
            t_fetch = time.perf_counter()

        result = {"step": step, "total": total}
        import hashlib

        digest = hashlib.sha256()
        for name, p in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log(f"rank {rank} of world_size={world}: step {step}, parameters sha256 {digest.hexdigest()}, "
            f"peak RSS {peak:.0f} MB")
        result["parameters_sha256"] = digest.hexdigest()
        if step < total:
            log0(f"stopped at step {step} of {total} (--stop-at); continue with --resume")
        elif rank == 0:
            last = _last_metrics(run / METRICS_NAME)
            path = save_model(run / MODEL_NAME, model=model, cfg=cfg, data=data, heads=heads, step=step, metrics=last)
            log0(f"wrote {path}")
            result["model"] = str(path)
            result["metrics"] = last
        if dist_on:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return result

    # -- pieces ---------------------------------------------------------------------
    def _init_distributed(self):
        """(rank, world, local_rank, distributed?): :func:`xtalhpc.launch.init_distributed`."""
        from ..launch import init_distributed

        return init_distributed(self.device)

    def _evaluate(self, ddp, val_ds, val_plan, heads, head_w, ce, device, amp, dist_on, rank, run, step, spe,
                  train_metrics):
        import torch

        ddp.eval()
        m = _Metrics(heads)
        spread = None
        with torch.no_grad():
            for s in range(val_plan.steps_per_epoch):
                b = val_ds[(0, s)]
                x = torch.from_numpy(b["x"]).to(device)
                labels = {h: torch.from_numpy(b[h]).to(device) for h in heads}
                if x.shape[0] == 0:
                    continue
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    out = ddp.module(x) if hasattr(ddp, "module") else ddp(x)
                loss = sum(head_w[h] * ce[h](out[h].float(), labels[h]) for h in heads)
                m.add(out, labels, float(loss))
                if spread is None and x.shape[0] > 1:
                    spread = float(out[heads[0]].float().std(dim=0).mean())
        val = m.reduce(dist_on, device)
        tr = train_metrics.reduce(dist_on, device)
        ddp.train()
        if rank != 0:
            return
        epoch = (step - 1) // spe
        lines = []
        for split, vals in (("train", tr), ("val", val)):
            rec = {"epoch": epoch, "step": step, "split": split, "loss": vals["loss"], "n": vals["n"]}
            if split == "val":
                rec["logit_spread"] = spread
            for h in HEADS:
                for k in TOPK:
                    rec[f"{h}/top{k}"] = vals.get(f"{h}/top{k}")
            lines.append(json.dumps(rec))
        with open(run / METRICS_NAME, "a") as fh:
            fh.write("\n".join(lines) + "\n")
        heads_txt = " ".join(f"{h} {val[f'{h}/top1']:.3f}" for h in heads)
        if spread is not None and spread < COLLAPSE_SPREAD:
            Log("train")(f"WARNING: the network's outputs hardly depend on its input (logits vary by {spread:.1e} "
                         "across validation patterns): it has collapsed to the label prior. Lower optim.lr, or use "
                         "model.norm = 'group' (docs/training.md, 'Collapse')")
        Log("train")(f"eval step {step}: val loss {val['loss']:.4f} top-1 {heads_txt} ({val['n']} patterns)")
        try:
            from .curves import plot_curves

            plot_curves(run / METRICS_NAME, run / CURVES_NAME)
        except Exception as exc:  # a plot must never stop a training run
            Log("train")(f"curves.png not drawn: {type(exc).__name__}: {exc}")

    def _save_checkpoint(self, run, model, opt, sched, step, plan, cfg, world):
        import numpy as np
        import torch

        d = run / CHECKPOINT_DIR
        d.mkdir(parents=True, exist_ok=True)
        np_state = np.random.get_state()
        state = {
            "format": "xtalhpc.train-checkpoint", "format_version": 1,
            "step": step, "epoch": step // plan.steps_per_epoch, "step_in_epoch": step % plan.steps_per_epoch,
            "global_batch": plan.global_batch, "world_size": world,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy_mt19937": torch.from_numpy(np_state[1].astype(np.int64)),
                    "numpy_pos": int(np_state[2])},
            "config": cfg.to_dict(),
        }
        path = d / f"step-{step:09d}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in checkpoint_paths(run)[:-cfg.run.keep_checkpoints]:
            old.unlink(missing_ok=True)
        Log("train")(f"checkpoint {path}")


def _last_metrics(path: Path) -> dict:
    if not path.exists():
        return {}
    last = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") == "val":
            last = rec
    return last


def main_srun(argv=None) -> int:
    """Entry of ``python -m xtalhpc.train.task CONFIG.toml DATASET RUN`` under plain ``srun`` (slurm/train.sbatch):
    the rendezvous comes from Slurm's variables."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m xtalhpc.train.task")
    p.add_argument("run", help="run directory prepared by `xtalhpc train --prepare-only`")
    args = p.parse_args(argv)
    from .launch import task_from_run

    task = task_from_run(args.run)
    env = os.environ
    if "SLURM_PROCID" in env:
        env.setdefault("RANK", env["SLURM_PROCID"])
        env.setdefault("WORLD_SIZE", env.get("SLURM_NTASKS", "1"))
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        env.setdefault("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 40000))
        if "MASTER_ADDR" not in env:
            import subprocess

            nodes = subprocess.run(["scontrol", "show", "hostnames", env.get("SLURM_JOB_NODELIST", "")],
                                   capture_output=True, text=True).stdout.split()
            env["MASTER_ADDR"] = nodes[0] if nodes else "127.0.0.1"
    task()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_srun())
