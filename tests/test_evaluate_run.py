"""`xtalhpc evaluate` end to end on a small real dataset: exact numbers for a model whose outputs
the test controls, the grid-mismatch refusal, 1 process in this one == 2 submitit processes
(through the launcher shared with train), --augment measured independent of batching,
predictions.npz reproducing metrics.json, calibration (--calibrate), and --compare."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("submitit")

from model_helpers import bt1_grid, write_tiny_model  # noqa: E402

from xtalhpc.cli import main  # noqa: E402
from xtalhpc.job import EXIT_OK, EXIT_USAGE  # noqa: E402

GROUPS = (14, 194, 225)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """90 synthetic patterns of three space groups on the BT-1 grid, split 0.8/0.1/0.1 by group key."""
    root = tmp_path_factory.mktemp("eval")
    table = root / "prior.csv"
    table.write_text("space_group\n" + "\n".join(str(g) for g in GROUPS) + "\n")
    out = root / "ds"
    rc = main(["generate", "--synthetic", "90", "--synthetic-prior", str(table), "--output", str(out), "--quiet",
               "--shard-size", "32", "--split", "0.5,0.3,0.2"])
    assert rc in (0, 1)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path, _ = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")
    return path


def _metrics(d) -> dict:
    return json.loads((d / "metrics.json").read_text())


def test_known_confusion_gives_the_exact_numbers(dataset, tiny, tmp_path, monkeypatch):
    """A model that ranks the true class 1st, 3rd or 5th by the pattern's row (row % 4 = 2 or 3, 0, 1)
    and puts class (true + 1) mod C first otherwise: the top-k accuracies, per-class accuracy and
    confusion follow from the labels alone."""
    import xtalhpc.evaluate.run as run
    from xtalhpc.predict import Classifier
    from xtalhpc.train.data import load_training_data

    data = load_training_data(dataset)
    orig = run.EvalDataset.__getitem__

    def getitem(self, step):  # the input carries the row number, so the fake network knows the pattern
        b = orig(self, step)
        b["x"] = np.repeat(b["rows"].astype(np.float32)[:, None, None], 2, axis=2)
        return b

    def logits(self, x, batch_size=256):
        rows = x[:, 0, 0].astype(np.int64)
        out = {}
        for h, names in self.classes.items():
            c = len(names)
            y = data.labels[h][rows]
            z = np.zeros((rows.size, c))
            rank_of_true = np.select([rows % 4 >= 2, rows % 4 == 0], [0, 2], 4)
            others = [(y + 1 + j) % c for j in range(5)]  # the wrong classes, best first
            for i in range(rows.size):
                order = [int(o[i]) for o in others]
                order.insert(rank_of_true[i], int(y[i]))
                for r, k in enumerate(dict.fromkeys(order)):  # scores 10, 9, ...: ranks as listed
                    z[i, k] = 10.0 - r
            out[h] = z
        return out

    monkeypatch.setattr(run.EvalDataset, "__getitem__", getitem)
    monkeypatch.setattr(Classifier, "logits", logits)
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny), "--dataset", str(dataset), "--split", "test", "--output", str(out),
                 "--batch-size", "5"]) == EXIT_OK
    m = _metrics(out)
    rows = data.rows("test")
    assert m["n"] == rows.size > 5 and m["split"] == "test"
    r4 = rows % 4
    hit1, hit3 = np.mean(r4 >= 2), np.mean(r4 != 1)
    for h in ("space_group", "crystal_system", "bravais_lattice", "extinction_group"):
        c = len(m["heads"][h]["per_class"])
        hm = m["heads"][h]
        assert (hm["top1"], hm["top3"], hm["top5"]) == (pytest.approx(hit1), pytest.approx(hit3), 1.0), h
        y = data.labels[h][rows]
        pred = np.where(r4 >= 2, y, (y + 1) % c)
        expected = np.zeros((c, c), dtype=int)
        np.add.at(expected, (y, pred), 1)
        # per-class accuracy and support from the CSV; the confusion from predictions.npz
        import pandas as pd

        pc = pd.read_csv(out / f"per_class_{h}.csv", index_col=0, dtype={"class": str})
        sup = expected.sum(axis=1)
        assert pc["support"].to_numpy().tolist() == sup.tolist()
        acc = np.divide(np.diag(expected), sup, out=np.full(c, np.nan), where=sup > 0)
        assert np.allclose(pc["accuracy"].to_numpy(), acc, equal_nan=True)
        with np.load(out / "predictions.npz") as z:
            assert np.array_equal(z["rows"], rows)
            got = np.zeros((c, c), dtype=int)
            np.add.at(got, (z[f"{h}/label"].astype(int), z[f"{h}/top"][:, 0].astype(int)), 1)
            assert np.array_equal(got, expected)
            assert np.allclose(z[f"{h}/prob"].sum(axis=1) <= 1 + 1e-6, True)
        assert (out / f"confusion_{h}.png").stat().st_size > 5000
    report = (out / "report.md").read_text()
    assert "## space_group" in report and f"{m['n']} patterns" in report


def test_grid_mismatch_is_refused_naming_both(dataset, tmp_path, capsys):
    other, _ = write_tiny_model(tmp_path / "d1a.pt", two_theta=np.arange(3296) * 0.05 + 5.0, wavelength=1.909)
    out = tmp_path / "ev"
    assert main(["evaluate", str(other), "--dataset", str(dataset), "--output", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "the model's 2theta grid (3296 points, 5-169.75 deg, step 0.05) differs from the dataset's (3296 " \
           "points, 3-167.75 deg, step 0.05" in err and str(other) in err and "dataset.h5" in err
    assert not out.exists()  # refused before anything was written
    assert main(["evaluate", str(tmp_path / "nothing.pt"), "--dataset", str(dataset), "--output", str(out)]) \
        == EXIT_USAGE


def test_two_processes_equal_one_and_augmentation_ignores_batching(dataset, tiny, tmp_path):
    common = ["--dataset", str(dataset), "--split", "all", "--augment", "measured", "--seed", "3"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["evaluate", str(tiny), *common, "--output", str(a), "--batch-size", "64"]) == EXIT_OK
    assert main(["evaluate", str(tiny), *common, "--output", str(b), "--batch-size", "7", "--procs", "2"]) == EXIT_OK
    assert main(["evaluate", str(tiny), "--dataset", str(dataset), "--split", "all", "--output", str(c)]) == EXIT_OK
    logs = "".join(p.read_text() for p in (b / "logs").glob("*_log.err"))
    assert "(2 process(es), batches of 7" in logs
    za, zb, zc = (np.load(d / "predictions.npz") for d in (a, b, c))
    from xtalhpc.train.data import load_training_data

    assert za["rows"].tolist() == list(range(load_training_data(dataset).n))
    for k in za.files:
        if k.endswith("/prob"):
            assert np.allclose(za[k], zb[k], atol=1e-5), k
        else:
            assert np.array_equal(za[k], zb[k]), k
    # the corruption changes what the network sees
    assert not np.allclose(za["space_group/prob"], zc["space_group/prob"], atol=1e-3)
    ma, mb = _metrics(a), _metrics(b)
    for h in ma["heads"]:
        for k in ("top1", "top3", "top5", "per_class"):
            assert ma["heads"][h][k] == mb["heads"][h][k]
        assert ma["heads"][h]["nll"] == pytest.approx(mb["heads"][h]["nll"], rel=1e-5)
    # predictions.npz reproduces metrics.json
    from xtalhpc.evaluate.run import metrics_from_predictions

    again = metrics_from_predictions(a / "predictions.npz")
    for h, hm in again["heads"].items():
        for k in ("top1", "top3", "top5", "macro_accuracy", "n", "per_class"):
            assert hm[k] == ma["heads"][h][k], (h, k)
    # the same evaluation again overwrites; another one into the same directory is refused
    assert main(["evaluate", str(tiny), *common, "--output", str(a), "--batch-size", "64"]) == EXIT_OK
    assert main(["evaluate", str(tiny), "--dataset", str(dataset), "--split", "val", "--output", str(a)]) == EXIT_USAGE
    # --compare: one table, one plot
    cmp_dir = tmp_path / "cmp"
    assert main(["evaluate", "--compare", str(a), str(c), "--output", str(cmp_dir)]) == EXIT_OK
    import pandas as pd

    df = pd.read_csv(cmp_dir / "compare.csv", index_col=0)
    assert df.index.tolist() == ["a", "c"]
    assert df.loc["a", "space_group.top1"] == pytest.approx(ma["heads"]["space_group"]["top1"])
    assert (cmp_dir / "compare.png").stat().st_size > 5000


def test_split_choices(dataset, tiny, tmp_path, capsys):
    assert main(["evaluate", str(tiny), "--dataset", str(dataset), "--split", "unassigned", "--output",
                 str(tmp_path / "u")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no 'unassigned' patterns" in err and "is evaluated with --split all" in err
    assert main(["evaluate", str(tiny), "--dataset", str(dataset), "--split", "test", "--calibrate",
                 str(tmp_path / "c.pt"), "--output", str(tmp_path / "t")]) == EXIT_USAGE


def test_calibration_lowers_validation_nll_and_is_stored(dataset, tmp_path):
    """An over-confident network (the tiny model's head weights x 40): the fitted temperatures are > 1,
    lower the validation NLL, are stored in the calibrated model file, and its probabilities sum to 1."""
    from xtalhpc.predict import Classifier
    from xtalhpc.train.modelfile import read_model_file

    _, model = write_tiny_model(tmp_path / "plain.pt", seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("heads."):
                p.mul_(40.0)
    write_tiny_model(tmp_path / "hot.pt", model=model)
    cal = tmp_path / "cal.pt"
    ev = tmp_path / "ev"
    assert main(["evaluate", str(tmp_path / "hot.pt"), "--dataset", str(dataset), "--split", "val", "--output",
                 str(ev), "--calibrate", str(cal)]) == EXIT_OK
    m = _metrics(ev)["calibration"]
    for h, t in m["temperatures"].items():
        assert t > 2.0, (h, t)
        assert m["nll_after"][h] < m["nll_before"][h] - 0.1, h
    blob = torch.load(cal, weights_only=True)
    assert blob["temperatures"] == pytest.approx(m["temperatures"])
    assert blob["calibration"]["split"] == "val" and blob["calibration"]["n"] == _metrics(ev)["n"]
    assert read_model_file(tmp_path / "hot.pt")["temperatures"] == {h: 1.0 for h in blob["heads"]}
    # evaluating the calibrated model: same rankings, NLL as fitted
    ev2 = tmp_path / "ev2"
    assert main(["evaluate", str(cal), "--dataset", str(dataset), "--split", "val", "--output", str(ev2)]) == EXIT_OK
    m1, m2 = _metrics(ev), _metrics(ev2)
    for h in m2["heads"]:
        assert m2["heads"][h]["top1"] == m1["heads"][h]["top1"]
        assert m2["heads"][h]["nll"] == pytest.approx(m["nll_after"][h], rel=1e-4)
        assert m1["heads"][h]["nll"] == pytest.approx(m["nll_before"][h], rel=1e-4)
    clf = Classifier(cal)
    x = np.random.default_rng(0).random((4, 1, bt1_grid().size)).astype(np.float32)
    for h, p in clf.probabilities(clf.logits(x)).items():
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-12) and np.all(p >= 0)


def test_coverage_augment_masks_the_grid_beyond_another_wavelengths_reach(dataset, tiny, tmp_path):
    """``--augment coverage``: the measured corruption plus the partial coverage of a measurement at a
    longer wavelength; it changes what the network sees beyond ``measured`` and is recorded."""
    from xtalhpc.evaluate.run import coverage_augment, measured_augment

    cov = coverage_augment()
    assert cov.coverage_probability == 1.0 and measured_augment().coverage_probability == 0.0
    out = {}
    for aug in ("measured", "coverage"):
        out[aug] = tmp_path / aug
        assert main(["evaluate", str(tiny), "--dataset", str(dataset), "--split", "all", "--augment", aug,
                     "--seed", "3", "--output", str(out[aug])]) == EXIT_OK
    za, zb = (np.load(out[a] / "predictions.npz") for a in ("measured", "coverage"))
    assert not np.allclose(za["space_group/prob"], zb["space_group/prob"], atol=1e-4)
    assert json.loads((out["coverage"] / "evaluation.json").read_text())["augment"] == "coverage"
