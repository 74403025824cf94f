"""Evaluation metrics, reports, run comparison and temperature scaling (no torch).

The tiny case is built by hand so every number is known: 7 samples, 6 classes, the true
class at rank 1, 4, 1, 1, 3, 1 and 6 -> top-1 4/7, top-3 5/7, top-5 6/7; predictions
a b b b a c a against truths a a b b c c d -> per-class accuracy a 1/2, b 1, c 1/2, d 0
(e and f unseen), macro average (1/2 + 1 + 1/2 + 0) / 4 = 1/2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from xtalhpc.errors import InputError
from xtalhpc.evaluate import (calibrated_probabilities, compare, evaluate_heads, fit_temperature, head_metrics,
                              markdown_table, nll, topk_accuracy, write_compare, write_report)
from xtalhpc.spacegroups import BRAVAIS_LATTICES, CRYSTAL_SYSTEMS, bravais_lattice, crystal_system

CLASSES = ["a", "b", "c", "d", "e", "f"]
ORDERS = [[0, 1, 2, 3, 4, 5], [1, 2, 3, 0, 4, 5], [1, 0, 2, 3, 4, 5], [1, 2, 0, 3, 4, 5], [0, 1, 2, 3, 4, 5],
          [2, 0, 1, 3, 4, 5], [0, 1, 4, 5, 2, 3]]
LABELS = np.array([0, 0, 1, 1, 2, 2, 3])


def _scores(orders) -> np.ndarray:
    s = np.zeros((len(orders), 6))
    for i, o in enumerate(orders):
        s[i, o] = np.arange(6, 0, -1)  # best first
    return s


def test_tiny_case_exact_numbers():
    m = head_metrics(_scores(ORDERS), LABELS, CLASSES)
    assert (m["top1"], m["top3"], m["top5"]) == (4 / 7, 5 / 7, 6 / 7)
    assert m["macro_accuracy"] == 0.5 and m["n"] == 7
    assert m["per_class"] == {"a": {"accuracy": 0.5, "support": 2}, "b": {"accuracy": 1.0, "support": 2},
                              "c": {"accuracy": 0.5, "support": 2}, "d": {"accuracy": 0.0, "support": 1},
                              "e": {"accuracy": None, "support": 0}, "f": {"accuracy": None, "support": 0}}
    expect = np.zeros((6, 6), dtype=int)
    for t, p in zip(LABELS, [0, 1, 1, 1, 0, 2, 0]):
        expect[t, p] += 1
    assert np.array_equal(m["confusion"], expect)
    # probabilities or logits give the same numbers (only the order matters)
    probs = calibrated_probabilities(_scores(ORDERS))
    assert head_metrics(probs, LABELS, CLASSES)["top3"] == 5 / 7
    # ties: the lower class index ranks first, deterministically
    assert topk_accuracy(np.zeros((2, 4)), np.array([0, 1]), 1) == 0.5
    assert topk_accuracy(np.zeros((2, 4)), np.array([0, 1]), 9) == 1.0  # k > classes counts all


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="6 class labels for 5"):
        head_metrics(np.zeros((3, 5)), np.zeros(3, dtype=int), CLASSES, head="space_group")
    with pytest.raises(InputError, match="integer indices"):
        head_metrics(np.zeros((3, 6)), np.array([0, 6, 1]), CLASSES)
    with pytest.raises(InputError, match="different sample counts"):
        evaluate_heads({"a": np.zeros((3, 6)), "b": np.zeros((2, 6))}, {"a": np.zeros(3, int), "b": np.zeros(2, int)},
                       {"a": CLASSES, "b": CLASSES})


def _labelled_run(rng, n: int, p_correct: float):
    """Space-group scores for n samples; crystal-system and Bravais heads derived the same way."""
    sg = rng.integers(1, 231, n)
    heads = {"space_group": (list(range(1, 231)), sg - 1),
             "crystal_system": (list(CRYSTAL_SYSTEMS), np.array([CRYSTAL_SYSTEMS.index(crystal_system(int(g)))
                                                                  for g in sg])),
             "bravais_lattice": (list(BRAVAIS_LATTICES), np.array([BRAVAIS_LATTICES.index(bravais_lattice(int(g)))
                                                                    for g in sg])),
             "extinction_group": ([f"E{i}" for i in range(12)], sg % 12)}  # any head: vocabulary given
    scores, labels, classes = {}, {}, {}
    for h, (cls, y) in heads.items():
        s = rng.normal(size=(n, len(cls)))
        hit = rng.random(n) < p_correct
        s[np.arange(n)[hit], y[hit]] += 10
        scores[h], labels[h], classes[h] = s, y, cls
    return evaluate_heads(scores, labels, classes)


def test_report_files_and_metrics_json_shape(tmp_path):
    rng = np.random.default_rng(0)
    m = _labelled_run(rng, 400, 0.7)
    written = write_report(m, tmp_path / "eval")
    d = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(d) == {"n", "heads"} and d["n"] == 400
    assert set(d["heads"]) == {"space_group", "crystal_system", "bravais_lattice", "extinction_group"}
    for h, hm in d["heads"].items():
        assert {"top1", "top3", "top5", "per_class"} <= set(hm)
        assert hm["top1"] == m["heads"][h]["top1"] and sum(v["support"] for v in hm["per_class"].values()) == 400
    assert list(d["heads"]["crystal_system"]["per_class"]) == list(CRYSTAL_SYSTEMS)
    assert len(d["heads"]["space_group"]["per_class"]) == 230
    import matplotlib.image as mpimg

    for h in d["heads"]:
        img = mpimg.imread(written[f"confusion_{h}.png"])
        assert img.shape[0] > 300 and img.shape[1] > 300 and img[..., :3].std() > 0.05
    summ = pd.read_csv(tmp_path / "eval" / "summary.csv", index_col="head")
    assert summ.loc["crystal_system", "top1"] == pytest.approx(m["heads"]["crystal_system"]["top1"])
    pc = pd.read_csv(tmp_path / "eval" / "per_class_bravais_lattice.csv", index_col="class")
    assert list(pc.index) == list(BRAVAIS_LATTICES) and pc["support"].sum() == 400
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "| head | n | top1 | top3 | top5 |" in md and "confusion_space_group.png" in md


def test_compare_two_runs(tmp_path):
    a = head_metrics(_scores(ORDERS), LABELS, CLASSES)
    b = head_metrics(_scores([[3, 0, 1, 2, 4, 5]] * 7), LABELS, CLASSES)  # predicts d always
    for name, hm in (("run_a", a), ("run_b", b)):
        write_report({"n": 7, "heads": {"crystal_system": hm}}, tmp_path / name)
    df = compare([tmp_path / "run_a", tmp_path / "run_b" / "metrics.json"])
    assert list(df.index) == ["run_a", "run_b"]
    cs = df["crystal_system"]
    assert cs.loc["run_a", "top1"] == 4 / 7 and cs.loc["run_a", "top3"] == 5 / 7 and cs.loc["run_a", "top5"] == 6 / 7
    # run b: d is always first -> top-1 = 1/7 (the one d); top-3 = {d, a, b} -> 5/7; top-5 adds c -> 7/7
    assert cs.loc["run_b", "top1"] == 1 / 7 and cs.loc["run_b", "top3"] == 5 / 7 and cs.loc["run_b", "top5"] == 1.0
    assert cs.loc["run_a", "macro_accuracy"] == 0.5 and cs.loc["run_b", "macro_accuracy"] == 0.25
    assert (cs["n"] == 7).all()
    out = write_compare([tmp_path / "run_a", tmp_path / "run_b"], tmp_path / "cmp")
    pd.testing.assert_frame_equal(out, df)
    flat = pd.read_csv(tmp_path / "cmp" / "compare.csv", index_col="run")
    assert flat.loc["run_b", "crystal_system.top1"] == pytest.approx(1 / 7)
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000
    with pytest.raises(InputError, match="no such metrics file"):
        compare([tmp_path / "nope"])


def test_markdown_table():
    df = pd.DataFrame({"x": [1.0, np.nan], "name": ["a|b", "c"]}, index=pd.Index(["r1", "r2"], name="run"))
    assert markdown_table(df) == ("| run | x | name |\n| --- | ---: | --- |\n| r1 | 1.0000 | a\\|b |\n"
                                  "| r2 |  | c |\n")


# --------------------------------------------------------------------------- temperature scaling

@pytest.mark.parametrize("factor", [3.0, 0.4])
def test_temperature_scaling(factor):
    """Labels drawn from softmax(z); logits given as factor * z (over-confident for factor > 1):
    the fitted T recovers factor, lowers the validation NLL, keeps every ranking, and the
    calibrated probabilities sum to 1. Fitted on a validation half, checked on the other."""
    rng = np.random.default_rng(11)
    n, c = 6000, 20
    z = rng.normal(scale=2.0, size=(n, c))
    p = calibrated_probabilities(z)
    y = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    logits = factor * z
    val, test = slice(0, n // 2), slice(n // 2, n)
    t = fit_temperature(logits[val], y[val])
    print(f"\nfactor {factor}: T = {t:.4f}, val NLL {nll(logits[val], y[val]):.4f} -> {nll(logits[val], y[val], t):.4f}, "
          f"test NLL {nll(logits[test], y[test]):.4f} -> {nll(logits[test], y[test], t):.4f}")
    assert t == pytest.approx(factor, rel=0.08)
    assert nll(logits[val], y[val], t) < nll(logits[val], y[val]) - 0.01
    assert nll(logits[test], y[test], t) < nll(logits[test], y[test])
    q = calibrated_probabilities(logits, t)
    assert np.allclose(q.sum(axis=1), 1.0, atol=1e-12) and np.all(q >= 0)
    assert np.array_equal(np.argsort(-q, axis=1, kind="stable")[:, :5], np.argsort(-logits, axis=1, kind="stable")[:, :5])
    # the NLL at the fitted T is a minimum: 5% either way is worse
    assert nll(logits[val], y[val], t) <= min(nll(logits[val], y[val], t * 1.05), nll(logits[val], y[val], t / 1.05))


def test_temperature_refuses_bad_input():
    with pytest.raises(InputError):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(InputError, match="integer indices"):
        fit_temperature(np.zeros((2, 3)), np.array([0, 3]))


def test_evaluate_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; import xtalhpc.evaluate, xtalhpc.regrid, xtalhpc.io.measured; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
