"""The ``xtalhpc evaluate`` job: a model over one split of a dataset, streamed and batched.

:class:`EvaluateTask` runs once per process, like :class:`xtalhpc.train.task.TrainTask` and
through the same launcher (:mod:`xtalhpc.launch`: in this process, submitit's LocalExecutor,
Slurm, or DebugExecutor). Each rank reads its share of the split's rows through the training
loader's pieces (:class:`~xtalhpc.train.data.EpochPlan` in file order,
:class:`~xtalhpc.train.data.StepDataset`'s contiguous HDF5 reads, the model's own
:func:`xtalhpc.preprocess.prepare_input`), keeps per pattern only the 5 best classes of every
head with their calibrated probabilities and the log-likelihood of the true class (and the
full logits when calibrating), and rank 0 gathers them and writes:

* ``metrics.json`` (``{"n", "heads": {head: {"top1", "top3", "top5", "macro_accuracy", "nll",
  "nll_uncalibrated", "n", "per_class"}}, "model", "dataset", "split", "augment"}``),
  ``summary.csv``, ``per_class_<head>.csv``, ``confusion_<head>.png``, ``report.md``
  (:func:`xtalhpc.evaluate.write_report`);
* ``predictions.npz``: ``rows``, and per head ``<head>/label``, ``<head>/top`` (N, 5) class
  indices best first and ``<head>/prob`` (N, 5) calibrated probabilities
  (:func:`metrics_from_predictions` recomputes metrics.json's numbers from it);
* ``evaluation.json``: the settings (model file and digest, dataset, split, augmentation,
  seed, batch size, processes).

``augment = "measured"`` corrupts every pattern like a measurement (:data:`MEASURED_AUGMENT`),
seeded per pattern by (seed, row): the corrupted pattern of a row is the same whatever the
batch size, process count or order. ``calibrate`` fits one temperature per head on the
split's logits (:func:`xtalhpc.evaluate.fit_temperatures`) and writes a calibrated copy of the
model file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..job import Log

EVALUATION_NAME = "evaluation.json"
PREDICTIONS_NAME = "predictions.npz"
KEEP_TOP = 5
SPLIT_CHOICES = ("test", "val", "train", "unassigned", "all")
AUGMENT_CHOICES = ("off", "measured", "coverage")
#: Splits calibration may be fitted on: the validation split, or every pattern of a dataset set
#: aside for it. Never test (that would tune on what the numbers are reported on) or train
#: (the network fits it better than new data, so T would come out too low).
CALIBRATION_SPLITS = ("val", "all", "unassigned")


def measured_augment():
    """The fixed corruption of ``--augment measured`` (an :class:`~xtalhpc.train.config.AugmentConfig`).

    What a measured constant-wavelength neutron pattern has that a simulated one lacks, at
    moderate levels inside what the shipped recipe trains on (jobs/train-bt1.toml): extra
    Lorentzian broadening 0-0.10 deg FWHM, zero shift up to +-0.05 deg, a Chebyshev background of
    order 4 on every pattern at 2-20 % of the strongest peak (the measured benchmark's
    backgrounds are 0.5-30 %, median 3 %: docs/predict.md), one impurity peak at most (1-4 %),
    counting noise at 1,000-30,000 counts at the strongest point (log-uniform) on every pattern,
    no blanked ends (a measurement's coverage is what ``predict`` masks, not a corruption).
    """
    from ..train.config import AugmentConfig

    return AugmentConfig(enabled=True, broadening_deg=(0.0, 0.10), zero_shift_deg=0.05,
                         background_fraction=(0.02, 0.20), background_order=4, background_probability=1.0,
                         impurity_peaks=1, impurity_intensity=(0.01, 0.04), peak_counts=(1000.0, 30000.0),
                         noise_probability=1.0, crop_probability=0.0, crop_max_deg=0.0)


def coverage_augment():
    """``--augment coverage``: :func:`measured_augment` and, on every pattern, the coverage of a
    measurement at another wavelength converted through d-spacing (``AugmentConfig.coverage_*`` at
    their defaults: lambda_m / lambda_0 uniform in 1-1.65, measured from 3-15 to 110-165 deg
    2theta_m), masked as ``predict`` masks it. The measured benchmark's patterns at 1.87-2.41 A
    cover the BT-1 grid up to 76-105 deg."""
    import dataclasses

    return dataclasses.replace(measured_augment(), coverage_probability=1.0)


AUGMENTS = {"measured": measured_augment, "coverage": coverage_augment}


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_run_or_model(spec: str) -> Path:
    """A run directory (its ``model.pt``) or a model file."""
    p = Path(spec)
    if p.is_dir():
        if (p / "model.pt").is_file():
            return p / "model.pt"
        raise InputError("run directory holds no model.pt (the run has not finished; `xtalhpc train ... --resume`)",
                         str(p), "RUN_OR_MODEL")
    if not p.is_file():
        raise InputError("no such run directory or model file", str(p), "RUN_OR_MODEL")
    return p


def split_rows(data, split: str) -> np.ndarray:
    """Row indices of ``split`` (``all``: every row); InputError naming the dataset if it has none."""
    if split not in SPLIT_CHOICES:
        raise InputError(f"--split {split!r}; allowed: {', '.join(SPLIT_CHOICES)}", field="--split")
    rows = np.arange(data.n, dtype=np.int64) if split == "all" else data.rows(split)
    if rows.size == 0:
        counts = ", ".join(f"{k} {v}" for k, v in data.digest["splits"].items())
        raise InputError(f"the dataset has no {split!r} patterns ({counts}); a dataset generated with --split none "
                         "is evaluated with --split all", str(data.master), "--split")
    return rows


class EvalDataset:
    """Batches of one split for evaluation: the training loader's reads and normalisation, with the
    per-pattern measured-like corruption of ``--augment measured``."""

    def __init__(self, data, plan, *, rank: int, heads, normalisation, augment, seed: int):
        from ..train.data import StepDataset

        self.base = StepDataset(data, plan, rank=rank, heads=heads, normalisation=normalisation, augment=None,
                                seed=seed)
        self.augmenter = None
        if augment is not None:
            from ..train.augment import BatchAugmenter

            self.augmenter = BatchAugmenter(augment, data.two_theta)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, step: int) -> dict:
        from ..preprocess import prepare_input

        b = self.base
        rows = b.plan.batch(0, step, b.rank)
        x = b.read_rows(rows)
        mask = None
        if self.augmenter is not None and len(rows):
            # one generator per pattern: a row's corruption does not depend on batching or ranks
            parts, masks = [], []
            for i, r in enumerate(rows):
                xi, mi = self.augmenter(x[i:i + 1], np.random.default_rng([self.seed, int(r), 0xE7A1]))
                parts.append(xi)
                masks.append(np.ones_like(xi, dtype=bool) if mi is None else mi)
            x = np.concatenate(parts)
            mask = np.concatenate(masks)
        out = {"x": prepare_input(x, b.two_theta, b.normalisation, mask), "rows": rows}
        for h, lab in b.labels.items():
            out[h] = lab[rows]
        return out


class EvaluateTask:
    """``EvaluateTask(...)()`` on every process: evaluate this rank's share, gather on rank 0, write.

    Parameters
    ----------
    model : path of the model file. dataset : dataset directory or master file. output : directory.
    split : one of :data:`SPLIT_CHOICES`. augment : ``"off"`` or ``"measured"``. seed : augmentation seed.
    batch_size : patterns per forward pass. device : ``"cpu"`` or ``"cuda"``.
    calibrate : path of a calibrated model file to write, or None.
    """

    def __init__(self, model: str, dataset: str, output: str, split: str = "test", augment: str = "off",
                 seed: int = 0, batch_size: int = 256, device: str = "cpu", calibrate: str | None = None,
                 prior: str | None = "default"):
        self.model = str(model)
        self.dataset = str(dataset)
        self.output = str(output)
        self.split = split
        self.augment = augment
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.device = device
        self.calibrate = None if calibrate is None else str(calibrate)
        self.prior = None if prior in (None, "none") else str(prior)

    def settings(self) -> dict:
        return {"model": str(Path(self.model).resolve()), "dataset": str(Path(self.dataset).resolve()),
                "split": self.split, "augment": self.augment, "seed": self.seed, "batch_size": self.batch_size,
                "calibrate": self.calibrate, "prior": self.prior or "none"}

    def __call__(self) -> dict:
        import torch

        from ..launch import init_distributed
        from ..predict import Classifier
        from ..train.data import EpochPlan, load_training_data
        from ..train.modelfile import check_same_grid
        from ..train.task import default_threads
        from .calibration import log_softmax

        rank, world, _, dist_on = init_distributed(self.device)
        if self.device == "cpu" and dist_on:
            torch.set_num_threads(default_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 0))
        log = Log("evaluate", enabled=rank == 0)
        clf = Classifier(self.model, device=f"cuda:{torch.cuda.current_device()}" if self.device == "cuda" else "cpu",
                         prior=self.prior)
        data = load_training_data(self.dataset, require_split=False)
        check_same_grid(clf.two_theta, data.two_theta, self.model, data.master)
        heads = [h for h in clf.heads if h in data.labels]
        rows = split_rows(data, self.split)
        plan = EpochPlan(rows, chunk=16, batch_size=self.batch_size, world_size=world, seed=self.seed, shuffle=False)
        aug = AUGMENTS[self.augment]() if self.augment in AUGMENTS else None
        ds = EvalDataset(data, plan, rank=rank, heads=heads, normalisation=clf.normalisation, augment=aug,
                         seed=self.seed)
        keep: dict[str, list] = {"rows": []}
        for h in heads:
            keep.update({f"{h}/label": [], f"{h}/top": [], f"{h}/prob": [], f"{h}/ll": [], f"{h}/ll1": []})
            if self.calibrate:
                keep[f"{h}/logits"] = []
        log(f"{len(rows):,} {self.split} patterns of {data.master} ({world} process(es), batches of "
            f"{self.batch_size}, augment {self.augment}); model {self.model}")
        t0 = time.perf_counter()
        every = max(1, len(ds) // 10)
        for step in range(len(ds)):
            b = ds[step]
            if len(b["rows"]) == 0:
                continue
            logits = clf.logits(b["x"], batch_size=self.batch_size)
            keep["rows"].append(b["rows"])
            for h in heads:
                z, y = logits[h], b[h]
                lp = clf.log_probabilities(h, z)  # calibrated, under the deployment prior if any
                top = np.argsort(-lp, axis=1, kind="stable")[:, :KEEP_TOP]
                keep[f"{h}/label"].append(y)
                keep[f"{h}/top"].append(top)
                keep[f"{h}/prob"].append(np.exp(np.take_along_axis(lp, top, axis=1)).astype(np.float32))
                keep[f"{h}/ll"].append(lp[np.arange(y.size), y])
                keep[f"{h}/ll1"].append(log_softmax(z)[np.arange(y.size), y])
                if self.calibrate:
                    keep[f"{h}/logits"].append(z.astype(np.float32))
            if rank == 0 and ((step + 1) % every == 0 or step + 1 == len(ds)):
                el = time.perf_counter() - t0
                done = sum(len(r) for r in keep["rows"])
                log(f"batch {step + 1}/{len(ds)}: {done * world:,} patterns, {done * world / max(el, 1e-9):,.0f}/s")
        local = {k: (np.concatenate(v) if v else None) for k, v in keep.items()}
        if dist_on:
            parts = [None] * world
            torch.distributed.all_gather_object(parts, local)
        else:
            parts = [local]
        result: dict = {"rank": rank, "world_size": world}
        if rank == 0:
            merged = {k: np.concatenate([p[k] for p in parts if p[k] is not None]) for k in local}
            order = np.argsort(merged["rows"], kind="stable")
            merged = {k: v[order] for k, v in merged.items()}
            result.update(self._write(clf, data, heads, merged, log))
        if dist_on:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return result

    def _write(self, clf, data, heads, m: dict, log) -> dict:
        from ..job import write_atomic
        from .calibration import fit_temperatures, nll
        from .metrics import head_metrics_from_top
        from .report import write_report

        out = Path(self.output)
        out.mkdir(parents=True, exist_ok=True)
        n = int(m["rows"].size)
        metrics: dict = {"n": n, "heads": {}}
        for h in heads:
            hm = head_metrics_from_top(m[f"{h}/top"], m[f"{h}/label"], clf.classes[h], head=h)
            hm["nll"] = float(-m[f"{h}/ll"].mean())
            hm["nll_uncalibrated"] = float(-m[f"{h}/ll1"].mean())
            metrics["heads"][h] = hm
        metrics.update({"model": str(Path(self.model).resolve()), "dataset": str(data.master.resolve()),
                        "split": self.split, "augment": self.augment, "temperatures": clf.temperatures,
                        "prior": clf.prior or "none"})
        notes = [f"Model `{self.model}`, dataset `{data.master}`, split `{self.split}`, augmentation "
                 f"`{self.augment}`{' (seed %d)' % self.seed if self.augment != 'off' else ''}; calibration "
                 f"temperatures {', '.join(f'{h} {clf.temperatures[h]:.3g}' for h in heads)}; deployment prior "
                 f"`{clf.prior or 'none (the training prior)'}`."]
        if self.calibrate:
            temps = fit_temperatures({h: m[f"{h}/logits"] for h in heads}, {h: m[f"{h}/label"] for h in heads})
            record = {"split": self.split, "augment": self.augment, "seed": self.seed, "n": n,
                      "dataset": data.digest, "source_model": str(Path(self.model).resolve()),
                      "nll_before": {h: nll(m[f"{h}/logits"], m[f"{h}/label"]) for h in heads},
                      "nll_after": {h: nll(m[f"{h}/logits"], m[f"{h}/label"], temps[h]) for h in heads},
                      "temperatures": temps}
            from ..train.modelfile import write_calibrated

            write_calibrated(self.model, self.calibrate, temps, record)
            metrics["calibration"] = {k: record[k] for k in ("split", "augment", "n", "nll_before", "nll_after",
                                                             "temperatures")}
            metrics["calibration"]["model"] = str(Path(self.calibrate).resolve())
            notes.append("Calibration fitted here (temperature per head; NLL before -> after): " + ", ".join(
                f"{h} T={temps[h]:.3f} {record['nll_before'][h]:.4f} -> {record['nll_after'][h]:.4f}" for h in heads)
                + f"; written to `{self.calibrate}`.")
            log(notes[-1])
        written = write_report(metrics, out, title="xtalhpc evaluate", notes=notes)
        # metrics.json with the extra top-level records (write_report writes the head metrics)
        from .metrics import to_json_dict

        write_atomic(out / "metrics.json", json.dumps(to_json_dict(metrics), indent=1) + "\n")
        arrays = {"rows": m["rows"]}
        for h in heads:
            arrays[f"{h}/label"] = m[f"{h}/label"].astype(np.int16)
            arrays[f"{h}/top"] = m[f"{h}/top"].astype(np.int16)
            arrays[f"{h}/prob"] = m[f"{h}/prob"]
        arrays["classes/space_group"] = np.array(clf.classes.get("space_group", []))
        tmp = out / (PREDICTIONS_NAME + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, out / PREDICTIONS_NAME)
        summary = " ".join(f"{h} {metrics['heads'][h]['top1']:.3f}" for h in heads)
        log(f"{n:,} patterns: top-1 {summary}; wrote {out}/metrics.json, report.md, {PREDICTIONS_NAME}, "
            f"{', '.join(k for k in written if k.endswith('.png'))}")
        return {"n": n, "output": str(out), "top1": {h: metrics["heads"][h]["top1"] for h in heads},
                "calibrated_model": self.calibrate}


def metrics_from_predictions(path, classes: dict[str, list[str]] | None = None) -> dict:
    """metrics.json's ``{"n", "heads": {head: {"top1", "top3", "top5", "macro_accuracy", "n", "per_class"}}}``
    recomputed from a ``predictions.npz`` (``classes``: head -> names; default the model vocabularies)."""
    from ..train.data import head_vocabularies
    from .metrics import head_metrics_from_top, to_json_dict

    vocab = classes or head_vocabularies()
    with np.load(path) as z:
        heads = sorted({k.split("/")[0] for k in z.files if k.endswith("/top")}, key=list(vocab).index)
        out = {"n": int(z["rows"].size), "heads": {}}
        for h in heads:
            out["heads"][h] = head_metrics_from_top(z[f"{h}/top"].astype(np.int64), z[f"{h}/label"].astype(np.int64),
                                                    vocab[h], head=h)
    return to_json_dict(out)

