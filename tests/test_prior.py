"""Deployment prior (xtalhpc.evaluate.prior, `xtalhpc prior`, `--prior` of predict and evaluate):
Bayes' rule recovered exactly on posteriors built from known likelihoods, also through a
class-weighted loss; head counts; the model file record; Classifier, evaluate and the CLI
with a real small dataset; bad input named."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xtalhpc.errors import InputError
from xtalhpc.evaluate.prior import (PSEUDO_COUNT, adjusted_log_softmax, effective_training_prior, head_counts,
                                    importance_weights, logit_adjustment, sg_to_class)


def _posterior(prior, lik):
    p = prior[None, :] * lik
    return p / p.sum(axis=1, keepdims=True)


def test_bayes_rule_is_recovered_exactly(rng):
    """p_train(y|x) from known likelihoods and a training prior; adding the adjustment gives the
    posterior under the target prior to 1e-12 (no loss weights: class_balance 0)."""
    c = 12
    train = rng.integers(1, 1000, c).astype(float)
    target = rng.integers(1, 1000, c).astype(float)
    lik = rng.random((50, c)) ** 3
    p_train = _posterior((train + PSEUDO_COUNT) / (train + PSEUDO_COUNT).sum(), lik)
    p_target = _posterior((target + PSEUDO_COUNT) / (target + PSEUDO_COUNT).sum(), lik)
    a = logit_adjustment(target, train, class_balance=0.0, max_class_weight=10.0)
    got = np.exp(adjusted_log_softmax(np.log(p_train), 1.0, a))
    np.testing.assert_allclose(got, p_target, rtol=1e-12, atol=1e-14)
    assert abs(a.mean()) < 1e-12


def test_class_weighted_loss_is_undone(rng):
    """A weighted cross-entropy's minimiser q(y|x) ~ w_y p_train(y|x) (weights of class_weights,
    power 0.5, cap 3 so that some are capped): the adjustment still gives p_target exactly."""
    from xtalhpc.train.data import class_weights

    c = 20
    train = np.concatenate([rng.integers(1, 5, 4), rng.integers(200, 5000, c - 4)]).astype(float)
    target = rng.integers(0, 3000, c).astype(float)
    lik = rng.random((30, c)) ** 2
    w = class_weights(train, 0.5, 3.0)
    assert w.max() == pytest.approx(w[train.argmin()]) and np.unique(np.round(w, 12)).size < c  # some capped
    p_train = _posterior(train + PSEUDO_COUNT, lik)
    q = _posterior((train + PSEUDO_COUNT) * w, lik)
    a = logit_adjustment(target, train, class_balance=0.5, max_class_weight=3.0)
    got = np.exp(adjusted_log_softmax(np.log(q), 1.0, a))
    np.testing.assert_allclose(got, _posterior(target + PSEUDO_COUNT, lik), rtol=1e-10)
    assert not np.allclose(got, p_train)


def test_effective_prior_of_a_class_training_never_saw():
    p = effective_training_prior(np.array([0.0, 100.0, 400.0]), 0.5, 10.0)
    assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
    assert p[0] < p[1] < p[2]
    a = logit_adjustment(np.array([0.0, 5.0, 5.0]), np.array([0.0, 100.0, 400.0]), 0.5, 10.0)
    assert np.all(np.isfinite(a))


def test_head_counts_follow_the_space_groups():
    from xtalhpc.spacegroups import crystal_system
    from xtalhpc.train.data import head_vocabularies

    sg = np.zeros(230)
    sg[[224, 13, 61, 193]] = [5, 7, 11, 13]  # 225 Fm-3m, 14 P2_1/c, 62 Pnma, 194 P6_3/mmc
    vocab = head_vocabularies()
    cs = head_counts(sg, "crystal_system")
    assert cs.sum() == 36 and cs[vocab["crystal_system"].index("cubic")] == 5
    assert cs[vocab["crystal_system"].index(crystal_system(194))] == 13
    bl = head_counts(sg, "bravais_lattice")
    assert bl[vocab["bravais_lattice"].index("cF")] == 5 and bl[vocab["bravais_lattice"].index("oP")] == 11
    assert head_counts(sg, "extinction_group").sum() == 36
    assert np.array_equal(head_counts(sg, "space_group"), sg)
    assert sg_to_class("extinction_group").max() < len(vocab["extinction_group"])
    with pytest.raises(InputError, match="230 entries"):
        head_counts(np.ones(10), "crystal_system")
    with pytest.raises(InputError, match="unknown head"):
        sg_to_class("point_group")


def test_importance_weights_turn_the_training_mix_into_the_target(rng):
    train = np.array([100.0, 300.0, 600.0] + [0.0] * 227)
    target = np.array([500.0, 400.0, 100.0] + [0.0] * 227)
    labels = rng.choice(3, size=200_000, p=train[:3] / train[:3].sum())
    w = importance_weights(labels, target, train)
    share = np.bincount(labels, weights=w, minlength=3) / w.sum()
    np.testing.assert_allclose(share, target[:3] / target[:3].sum(), atol=0.01)


# --------------------------------------------------------------------------- model file, CLI

torch = pytest.importorskip("torch")
pytest.importorskip("submitit")

from model_helpers import bt1_grid, write_tiny_model  # noqa: E402

from xtalhpc.cli import main  # noqa: E402
from xtalhpc.job import EXIT_OK, EXIT_USAGE  # noqa: E402

GROUPS = (14, 62, 225)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """60 synthetic patterns of three groups (the training table), a deployment table of other
    frequencies, and a tiny model."""
    root = tmp_path_factory.mktemp("prior")
    train_table = root / "train.csv"
    train_table.write_text("space_group\n" + "\n".join(str(g) for g in GROUPS) + "\n")
    target = root / "icsd.csv"
    target.write_text("space_group\n" + "\n".join(["14"] * 50 + ["62"] * 30 + ["225"] * 5 + ["2"] * 15) + "\n")
    ds = root / "ds"
    assert main(["generate", "--synthetic", "60", "--synthetic-prior", str(train_table), "--output", str(ds),
                 "--quiet", "--shard-size", "32", "--split", "0.6,0.2,0.2"]) in (0, 1)
    model, _ = write_tiny_model(root / "tiny.pt")
    return {"root": root, "ds": ds, "target": target, "model": model}


def test_prior_command_writes_the_record_and_predict_uses_it(setup, tmp_path):
    from xtalhpc.predict import Classifier
    from xtalhpc.train.data import load_training_data
    from xtalhpc.train.modelfile import read_model_file

    out = tmp_path / "with-prior.pt"
    assert main(["prior", str(setup["model"]), "--table", str(setup["target"]), "--dataset", str(setup["ds"]),
                 "--output", str(out), "--name", "test-db"]) == EXIT_OK
    blob = read_model_file(out)
    rec = blob["priors"]["test-db"]
    assert blob["default_prior"] == "test-db" and rec["table_rows"] == 100
    counts = load_training_data(setup["ds"]).class_counts("space_group")
    assert rec["train_counts"] == counts.tolist() and sum(rec["train_counts"]) > 0
    assert set(rec["log_adjust"]) == set(blob["heads"])
    assert "priors" not in read_model_file(setup["model"])  # the source file is untouched

    x = np.random.default_rng(0).random((3, 1, bt1_grid().size)).astype(np.float32)
    on, off = Classifier(out), Classifier(out, prior="none")
    assert on.prior == "test-db" and off.prior is None
    z = on.logits(x)
    p_on, p_off = on.probabilities(z), off.probabilities(z)
    for h in blob["heads"]:
        assert np.allclose(p_on[h].sum(axis=1), 1.0) and np.allclose(p_off[h].sum(axis=1), 1.0)
        expect = np.exp(adjusted_log_softmax(z[h], on.temperatures[h], np.array(rec["log_adjust"][h])))
        np.testing.assert_allclose(p_on[h], expect, rtol=1e-12)
    assert not np.allclose(p_on["space_group"], p_off["space_group"])
    # the adjustment moves mass to the groups the table makes common (14 is the table's most frequent)
    i14 = on.classes["space_group"].index("14")
    assert (p_on["space_group"][:, i14] > p_off["space_group"][:, i14]).all()
    # --heads: the crystal-system head left at the training prior, the others adjusted
    part = tmp_path / "part.pt"
    assert main(["prior", str(setup["model"]), "--table", str(setup["target"]), "--dataset", str(setup["ds"]),
                 "--output", str(part), "--heads", "space_group,bravais_lattice,extinction_group"]) == EXIT_OK
    rp = read_model_file(part)["priors"]["icsd"]
    assert rp["adjusted_heads"] == ["space_group", "bravais_lattice", "extinction_group"]
    assert not any(rp["log_adjust"]["crystal_system"]) and rp["log_adjust"]["space_group"] == rec["log_adjust"][
        "space_group"]
    pc = Classifier(part).probabilities(z)
    np.testing.assert_allclose(pc["crystal_system"], p_off["crystal_system"], rtol=1e-12)
    np.testing.assert_allclose(pc["space_group"], p_on["space_group"], rtol=1e-12)
    assert main(["prior", str(setup["model"]), "--table", str(setup["target"]), "--dataset", str(setup["ds"]),
                 "--output", str(tmp_path / "bad.pt"), "--heads", "point_group"]) == EXIT_USAGE
    with pytest.raises(InputError, match="has: test-db"):
        Classifier(out, prior="icsd-2099")
    assert Classifier(setup["model"]).prior is None  # a file without priors: the training prior


def test_evaluate_and_predict_flags(setup, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["prior", str(setup["model"]), "--table", str(setup["target"]), "--dataset", str(setup["ds"]),
                 "--output", str(out)]) == EXIT_OK
    ev_on, ev_off = tmp_path / "on", tmp_path / "off"
    common = ["--dataset", str(setup["ds"]), "--split", "all"]
    assert main(["evaluate", str(out), *common, "--output", str(ev_on)]) == EXIT_OK
    assert main(["evaluate", str(out), *common, "--output", str(ev_off), "--prior", "none"]) == EXIT_OK
    m_on = json.loads((ev_on / "metrics.json").read_text())
    m_off = json.loads((ev_off / "metrics.json").read_text())
    assert m_on["prior"] == "icsd" and m_off["prior"] == "none"
    assert m_on["heads"]["space_group"]["nll"] != m_off["heads"]["space_group"]["nll"]
    assert main(["evaluate", str(out), *common, "--output", str(tmp_path / "x"), "--prior", "nope"]) == EXIT_USAGE
    assert "no prior 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # predict: the default prior and --prior none rank from the same logits, with different probabilities
    tt = np.arange(10.0, 150.0, 0.05)
    xy = tmp_path / "p.xy"
    np.savetxt(xy, np.column_stack([tt, 100 + 1000 * np.exp(-0.5 * ((tt - 40) / 0.2) ** 2)]))
    docs = {}
    for flag in ("default", "none"):
        js = tmp_path / f"{flag}.json"
        assert main(["predict", str(xy), "--model", str(out), "--wavelength", "1.54", "--json", str(js),
                     "--prior", flag, "--top", "230"]) == EXIT_OK
        docs[flag] = {d["number"]: d["probability"] for d in json.loads(js.read_text())[0]["space_group"]}
    assert docs["default"] != docs["none"] and sum(docs["default"].values()) == pytest.approx(1.0)
    assert docs["default"][14] > docs["none"][14]
    assert main(["predict", str(xy), "--model", str(out), "--wavelength", "1.54", "--prior", "nope"]) == EXIT_USAGE


def test_bad_input_is_named(setup, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("formula\nNaCl\n")
    rc = main(["prior", str(setup["model"]), "--table", str(bad), "--dataset", str(setup["ds"]),
               "--output", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "bad.csv" in err and "space-group column" in err
    rc = main(["prior", str(setup["model"]), "--table", str(tmp_path / "none.csv"), "--dataset", str(setup["ds"]),
               "--output", str(tmp_path / "o.pt")])
    assert rc == EXIT_USAGE and "none.csv" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
