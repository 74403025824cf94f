"""Training pieces without processes: config validation, preprocessing, augmentation, the epoch
plan and the step dataset on a real generated dataset, the models and their FLOP count."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xtalhpc.cli import main  # noqa: E402
from xtalhpc.curate import pattern_aug  # noqa: E402
from xtalhpc.dataset import open_dataset  # noqa: E402
from xtalhpc.errors import InputError  # noqa: E402
from xtalhpc.job import config_from_dict, replace_config  # noqa: E402
from xtalhpc.preprocess import FILL_VALUE, Normalisation, input_channels, normalise, prepare_input  # noqa: E402
from xtalhpc.train.augment import BatchAugmenter  # noqa: E402
from xtalhpc.train.config import AugmentConfig, ModelConfig, TrainConfig  # noqa: E402
from xtalhpc.train.data import EpochPlan, StepDataset, class_weights, load_training_data, make_loader  # noqa: E402
from xtalhpc.train.models import build_model, count_parameters, flops_per_sample  # noqa: E402

GROUPS = (14, 194, 225)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """300 synthetic patterns of three space groups in 5 shards of 64 (BT-1 grid)."""
    root = tmp_path_factory.mktemp("train-data")
    table = root / "prior.csv"
    table.write_text("space_group\n" + "\n".join(str(g) for g in GROUPS) + "\n")
    out = root / "ds"
    rc = main(["generate", "--synthetic", "300", "--synthetic-prior", str(table), "--output", str(out), "--quiet",
               "--shard-size", "64"])
    assert rc in (0, 1)  # a synthetic crystal may be rejected (no reflection on the grid)
    return out


# ---------------------------------------------------------------------------- config
def test_config_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(InputError, match=r"unknown key optim\.lrate.*valid keys: optim\.lr"):
        config_from_dict(TrainConfig, {"optim": {"lrate": 1e-3}}, source="x.toml")
    with pytest.raises(InputError, match="unknown key modle"):
        config_from_dict(TrainConfig, {"modle": {}})


@pytest.mark.parametrize("data, needle", [
    ({"optim": {"lr": 0.0}}, "optim.lr"),
    ({"model": {"dims": [8, 8], "kernels": [3]}}, "model.kernels"),
    ({"data": {"batch_size": 0}}, "data.batch_size"),
    ({"loss": {"space_group": 0, "crystal_system": 0, "bravais_lattice": 0, "extinction_group": 0}}, "loss"),
    ({"augment": {"peak_counts": [10.0, 1.0]}}, "augment.peak_counts"),
    ({"normalise": {"channels": ["q"]}}, "channels"),
    ({"run": {"keep_checkpoints": 0}}, "run.keep_checkpoints"),
])
def test_config_bad_values_name_the_key(data, needle):
    with pytest.raises(InputError) as ei:
        config_from_dict(TrainConfig, data, source="recipe.toml")
    assert needle in str(ei.value) and "recipe.toml" in str(ei.value)


def test_recipes_load_and_round_trip():
    import tomllib
    from pathlib import Path

    from xtalhpc.job import config_to_dict, to_toml
    from xtalhpc.train.config import load_train_config

    for name in ("train-smoke.toml", "train-bt1.toml", "train-bt1-stage1.toml", "train-bt1-wide.toml"):
        cfg = load_train_config(Path(__file__).parents[1] / "jobs" / name)
        again = config_from_dict(TrainConfig, tomllib.loads(to_toml(config_to_dict(cfg))))
        assert again == cfg
    cfg2 = replace_config(cfg, {"optim.lr": 5e-4, "data.batch_size": 7})
    assert cfg2.optim.lr == 5e-4 and cfg2.data.batch_size == 7


# ---------------------------------------------------------------------------- preprocessing
def test_normalise_scales_masks_and_transforms():
    tt = np.linspace(5, 100, 951)
    y = 50 + 1000 * np.exp(-0.5 * ((tt - 40) / 0.2) ** 2) + 400 * np.exp(-0.5 * ((tt - 70) / 0.2) ** 2)
    lin = normalise(y, tt, Normalisation(transform="linear"))
    assert lin.dtype == np.float32 and lin.max() == pytest.approx(1.0)
    assert lin[np.argmin(abs(tt - 70))] == pytest.approx(450 / 1050, rel=1e-3)
    # blockmin removes a flat background: the weak peak's height is relative to the baseline
    base = normalise(y, tt, Normalisation(baseline="blockmin", baseline_window_deg=5, transform="linear"))
    assert base[np.argmin(abs(tt - 70))] == pytest.approx(0.4, abs=2e-3)
    assert base[np.argmin(abs(tt - 20))] == pytest.approx(0.0, abs=1e-6)
    sq = normalise(y, tt, Normalisation(transform="sqrt"))
    assert np.allclose(sq, np.sqrt(lin), atol=1e-6)
    # unmeasured points: excluded from the maximum, filled with FILL_VALUE; a batch gives the same rows
    mask = tt < 60
    m = normalise(y, tt, Normalisation(transform="linear"), mask=mask)
    assert np.all(m[~mask] == FILL_VALUE) and m[mask].max() == pytest.approx(1.0)
    yn = y.copy()
    yn[~mask] = np.nan  # NaN counts as unmeasured
    assert np.array_equal(normalise(yn, tt, Normalisation(transform="linear")), m)
    batch = normalise(np.stack([y, 2 * y]), tt, Normalisation(transform="linear"))
    assert np.allclose(batch[0], lin) and np.allclose(batch[1], lin)


def test_input_channels_and_prepare_input():
    tt = np.linspace(10, 150, 101)
    ch = input_channels(tt, ("sin2theta", "d"))
    theta = np.radians(tt / 2)
    assert np.allclose(ch[0], np.sin(theta) ** 2, atol=1e-7)
    assert np.allclose(ch[1], np.sin(theta[0]) / np.sin(theta), atol=1e-7) and ch[1].max() == pytest.approx(1)
    x = prepare_input(np.ones((3, 101)), tt, Normalisation(channels=("d",)))
    assert x.shape == (3, 2, 101) and np.allclose(x[:, 1], ch[1])
    n = Normalisation(baseline="blockmin", channels=("sin2theta",))
    assert Normalisation.from_dict(n.to_dict()) == n
    with pytest.raises(InputError, match="version"):
        Normalisation.from_dict({**n.to_dict(), "version": 99})


# ---------------------------------------------------------------------------- augmentation
def _peaks(tt, centres, width=0.15):
    return sum(np.exp(-0.5 * ((tt - c) / width) ** 2) for c in centres)


def test_batch_augmentation_agrees_with_the_reference_functions():
    tt = np.linspace(3, 160, 3141)
    y = _peaks(tt, [20, 45.5, 90, 130])
    off = dict(broadening_deg=(0.0, 0.0), zero_shift_deg=0.0, background_probability=0.0, noise_probability=0.0)
    # zero shift: the reference interpolation
    cfg = AugmentConfig(**{**off, "zero_shift_deg": 0.3})
    aug = BatchAugmenter(cfg, tt)
    rng = np.random.default_rng(1)
    out, mask = aug(np.stack([y, y]), rng)
    assert mask is None
    r2 = np.random.default_rng(1)
    r2.uniform(0, 0, 2)  # the FWHMs are drawn first, then the shifts
    shifts = r2.uniform(-0.3, 0.3, 2)
    for k in range(2):  # band-limited here: the exactly shifted peaks; the reference interpolates linearly
        assert np.max(np.abs(out[k] - _peaks(tt - shifts[k], [20, 45.5, 90, 130]))) < 1e-3
        assert np.max(np.abs(out[k] - pattern_aug.zero_shift(tt, y, shifts[k]))) < 0.02
        c = np.argmin(abs(tt - 45.5)) + np.arange(-30, 31)
        centroid = np.sum(tt[c] * out[k][c]) / np.sum(out[k][c])
        assert centroid == pytest.approx(45.5 + shifts[k], abs=1e-4)
    # Lorentzian broadening of Gaussians: Voigt profiles (scipy), area conserved; the reference
    # function agrees up to its tail cut at 20 FWHM (it renormalises the cut kernel: ~1.6 %)
    from scipy.special import voigt_profile

    cfg = AugmentConfig(**{**off, "broadening_deg": (0.2, 0.2)})
    out, _ = BatchAugmenter(cfg, tt)(y[None], np.random.default_rng(0))
    voigt = sum(voigt_profile(tt - c, 0.15, 0.1) * 0.15 * np.sqrt(2 * np.pi) for c in [20, 45.5, 90, 130])
    assert np.max(np.abs(out[0] - voigt)) < 2e-3 * voigt.max()
    assert np.sum(out[0]) == pytest.approx(np.sum(y), rel=2e-3)
    ref = pattern_aug.lorentzian_broaden(tt, y, 0.2)
    assert np.max(np.abs(out[0] - ref)) < 0.03 * ref.max()
    # counting noise: relative scatter 1/sqrt(counts) at the top
    cfg = AugmentConfig(**{**off, "noise_probability": 1.0, "peak_counts": (400.0, 400.0)})
    flat = np.full((200, 3141), 1.0)
    out, _ = BatchAugmenter(cfg, tt)(flat, np.random.default_rng(2))
    assert np.std(out) == pytest.approx(1 / 20, rel=0.05)
    # background: level x the pattern maximum on average, never negative
    cfg = AugmentConfig(**{**off, "background_probability": 1.0, "background_fraction": (0.2, 0.2),
                           "background_order": 0})
    out, _ = BatchAugmenter(cfg, tt)(y[None], np.random.default_rng(3))
    assert np.allclose(out[0] - y, 0.2 * y.max(), atol=1e-5)
    # crop: a mask blanking the ends; the same seed gives the same batch
    cfg = AugmentConfig(crop_probability=1.0, crop_max_deg=30, impurity_peaks=3)
    a1, m1 = BatchAugmenter(cfg, tt)(np.stack([y] * 8), np.random.default_rng(4))
    a2, m2 = BatchAugmenter(cfg, tt)(np.stack([y] * 8), np.random.default_rng(4))
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2) and (~m1).any() and m1[:, len(tt) // 2].all()
    assert np.all(a1 >= 0)


def _moments(tt, y, centre, half=4.0):
    sel = np.abs(tt - centre) < half
    w = y[sel]
    c = np.sum(tt[sel] * w) / np.sum(w)
    return c, 2.3548200450309493 * np.sqrt(np.sum((tt[sel] - c) ** 2 * w) / np.sum(w)), np.sum(w)


def test_asymmetry_is_the_exact_one_sided_convolution():
    """Axial-divergence tails: the FFT result equals the direct convolution with (1 - r) r^k of
    the share min(1, |cot 2theta| / 2) of the intensity; low-angle peaks lean low, back-scattering peaks high,
    a peak at 90 degrees stays put; area is conserved."""
    tt = np.linspace(3, 167.75, 3296)
    step = tt[1] - tt[0]
    centres = [30.0, 90.0, 150.0]
    y = _peaks(tt, centres, width=0.08)
    off = dict(broadening_deg=(0.0, 0.0), zero_shift_deg=0.0, background_probability=0.0, noise_probability=0.0)
    cfg = AugmentConfig(**off, asymmetry_probability=1.0, asymmetry_deg=(0.12, 0.12))
    out, _ = BatchAugmenter(cfg, tt)(y[None], np.random.default_rng(0))
    r = np.exp(-step / 0.12)
    h = (1 - r) * r ** np.arange(400)
    cot = np.abs(1 / np.tan(np.radians(tt)))
    wl = np.where(tt < 90, np.minimum(1, cot / 2), 0)
    wh = np.where(tt > 90, np.minimum(1, cot / 2), 0)
    low = np.convolve((wl * y)[::-1], h)[:len(y)][::-1]  # low[i] = sum_k h[k] (wl y)[i + k]: tails to low angles
    high = np.convolve(wh * y, h)[:len(y)]
    ref = y - wl * y - wh * y + low + high
    assert np.max(np.abs(out[0] - ref)) < 1e-5
    c30, _, a30 = _moments(tt, out[0], 30.0)
    c90, _, _ = _moments(tt, out[0], 90.0)
    c150, _, a150 = _moments(tt, out[0], 150.0)
    assert c30 < 30.0 - 0.05 and abs(c90 - 90.0) < 1e-3 and c150 > 150.0 + 0.02
    assert a30 == pytest.approx(_moments(tt, y, 30.0)[2], rel=1e-4)
    # off (probability 0) draws nothing: the rest of the batch is as before, whatever its range
    base = AugmentConfig(crop_probability=0.5, impurity_peaks=2)
    quiet = AugmentConfig(crop_probability=0.5, impurity_peaks=2, asymmetry_deg=(0.5, 0.9), resolution_deg=(0.5, 0.9))
    a, ma = BatchAugmenter(base, tt)(np.stack([y] * 4), np.random.default_rng(5))
    b, mb = BatchAugmenter(quiet, tt)(np.stack([y] * 4), np.random.default_rng(5))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)


def test_resolution_broadening_follows_the_caglioti_law():
    """Another instrument's resolution: each peak's FWHM becomes sqrt(w0^2 + w(2theta)^2) with
    w = w90 sqrt(a + (1 - a) tan^2 theta) at its centre, within 3.5 % (the blend between blur
    levels, and at high angles the width changing across the peak itself); area conserved."""
    tt = np.linspace(3, 167.75, 3296)
    centres = [20.0, 50.0, 90.0, 120.0, 150.0]
    w0 = 0.1
    y = _peaks(tt, centres, width=w0 / 2.3548200450309493)
    aug = BatchAugmenter(AugmentConfig(resolution_probability=1.0, resolution_deg=(0.1, 0.1)), tt)
    for a in (0.0, 0.3, 1.0):
        out = aug._resolution(y[None].astype(np.float32), [0.1], [a])[0]
        extra = aug.resolution_fwhm([0.1], [a])[0]
        for c in centres:
            want = np.hypot(w0, extra[np.argmin(np.abs(tt - c))])
            _, fwhm, area = _moments(tt, out, c, half=min(8.0, 6 * want + 1))
            assert fwhm == pytest.approx(want, rel=0.035), (a, c)
            assert area == pytest.approx(_moments(tt, y, c, half=min(8.0, 6 * want + 1))[2], rel=2e-3), (a, c)
    # through the batch call, with the other parts: non-negative, finite, reproducible
    cfg = AugmentConfig(resolution_probability=1.0, asymmetry_probability=1.0, impurity_peaks=1)
    o1, _ = BatchAugmenter(cfg, tt)(np.stack([y] * 3), np.random.default_rng(7))
    o2, _ = BatchAugmenter(cfg, tt)(np.stack([y] * 3), np.random.default_rng(7))
    assert np.array_equal(o1, o2) and np.all(np.isfinite(o1)) and np.all(o1 >= 0)


# ---------------------------------------------------------------------------- epoch plan and loader
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_epoch_plan_reads_every_row_once_across_ranks(world, batch):
    rng = np.random.default_rng(world * 100 + batch)
    rows = np.sort(rng.choice(1000, 203, replace=False))
    plan = EpochPlan(rows, chunk=8, batch_size=batch, world_size=world, seed=5, shuffle=True)
    for epoch in (0, 1):
        seen = np.concatenate([plan.batch(epoch, s, r) for s in range(plan.steps_per_epoch) for r in range(world)])
        assert np.array_equal(np.sort(seen), rows)
        sizes = [len(plan.batch(epoch, s, r)) for s in range(plan.steps_per_epoch) for r in range(world)]
        assert max(sizes) <= batch
    assert not np.array_equal(plan.order(0), plan.order(1))  # reshuffled per epoch
    again = EpochPlan(rows, chunk=8, batch_size=batch, world_size=world, seed=5, shuffle=True)
    assert np.array_equal(again.order(1), plan.order(1))  # a function of (seed, epoch): resumable
    # rows of one chunk stay together (contiguous reads)
    order = plan.order(0)
    assert np.sum(np.diff(order // 8) != 0) == len(np.unique(rows // 8)) - 1


def test_step_dataset_streams_each_pattern_once_with_workers(small_dataset):
    data = load_training_data(small_dataset)
    with open_dataset(small_dataset) as ds:
        patterns = ds.read("pattern")
        sg = ds.read("space_group")
    rows = data.rows("train")
    world = 2
    plan = EpochPlan(rows, chunk=5, batch_size=16, world_size=world, seed=0, shuffle=True)
    norm = Normalisation(transform="linear")
    seen = []
    for rank in range(world):
        sds = StepDataset(data, plan, rank=rank, heads=["space_group", "extinction_group"], normalisation=norm,
                          augment=None, seed=0)
        from xtalhpc.train.data import StepSampler

        loader = make_loader(sds, StepSampler(plan.steps_per_epoch, 1, 0, plan.steps_per_epoch), workers=2)
        for b in loader:
            r = b["rows"].numpy()
            seen.append(r)
            assert np.allclose(b["x"].numpy()[:, 0], normalise(patterns[r], data.two_theta, norm))
            assert np.array_equal(b["space_group"].numpy(), sg[r] - 1)
    seen = np.concatenate(seen)
    assert np.array_equal(np.sort(seen), rows)


def test_training_data_labels_and_class_weights(small_dataset):
    data = load_training_data(small_dataset)
    sg = data.labels["space_group"] + 1
    assert set(np.unique(sg)) <= set(GROUPS)
    from xtalhpc.spacegroups import extinction_group

    assert all(data.labels["extinction_group"][i] == extinction_group(int(sg[i])) for i in range(0, data.n, 17))
    w = class_weights(np.array([100, 10, 0, 1]), 1.0, 1000.0)
    n = np.array([100, 10, 0, 1])
    assert w[2] == 0 and np.isclose((w * n).sum() / n.sum(), 1.0)
    assert np.isclose(w[0] * 100, w[1] * 10) and np.isclose(w[1] * 10, w[3] * 1)  # fully balanced
    assert np.allclose(class_weights(n, 0.0, 10.0), [1, 1, 0, 1])


def test_missing_shard_refused_by_reader_and_loader(small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(small_dataset, copy)
    data = load_training_data(copy)
    (copy / "shards" / "part-00001.h5").unlink()
    with pytest.raises(InputError, match="part-00001"):
        load_training_data(copy)
    # a shard vanishing after the start: the VDS reads fill values, the loader refuses them
    plan = EpochPlan(np.arange(data.n), chunk=4, batch_size=data.n, world_size=1, seed=0, shuffle=False)
    sds = StepDataset(data, plan, rank=0, heads=["space_group"], normalisation=Normalisation(), augment=None, seed=0)
    from xtalhpc.dataset import ShardError

    with pytest.raises(ShardError, match="fill value"):
        sds[(0, 0)]


def test_dataset_without_labels_or_split_refused(small_dataset, tmp_path):
    import shutil

    import h5py

    copy = tmp_path / "nolabels"
    shutil.copytree(small_dataset, copy)
    with h5py.File(copy / "dataset.h5", "a") as f:
        del f["entry/labels/space_group"]
    with pytest.raises(InputError, match="no labels") as ei:
        load_training_data(copy)
    assert "dataset.h5" in str(ei.value) and "entry/labels" in str(ei.value)
    bad = tmp_path / "plain.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="not an xtalhpc dataset"):
        load_training_data(bad)
    table = tmp_path / "prior.csv"
    table.write_text("space_group\n225\n")
    nosplit = tmp_path / "nosplit"
    main(["generate", "--synthetic", "8", "--synthetic-prior", str(table), "--output", str(nosplit), "--quiet",
          "--split", "none"])
    with pytest.raises(InputError, match="0 train and 0 val") as ei:
        load_training_data(nosplit)
    assert "entry/labels/split" in str(ei.value)


# ---------------------------------------------------------------------------- models
def test_lolla_resnet_size_and_flops():
    m = build_model(ModelConfig(), 3296, 1)
    # the trunk as published: 0.64 M parameters; ~56 MFLOP per sample forward + backward on 3296 points
    assert count_parameters(m.trunk) == 640_096
    fl = flops_per_sample(m, 3296)
    assert 50e6 < fl["forward_backward"] < 60e6 and fl["forward_backward"] == 3 * fl["forward"]
    out = m(torch.zeros(2, 1, 3296))
    assert {k: v.shape[1] for k, v in out.items()} == {"space_group": 230, "crystal_system": 7,
                                                       "bravais_lattice": 14, "extinction_group": 97}
    # without the max-pool (as the published code's forward runs it) the FLOPs are 6x more
    nopool = build_model(ModelConfig(pool_kernel=1, pool_stride=1), 3296, 1)
    assert flops_per_sample(nopool, 3296)["forward"] > 5 * fl["forward"]


def test_flop_count_matches_a_hand_count():
    cfg = ModelConfig(dims=(4,), kernels=(3,), strides=(2,), blocks=(1,), stem_kernel=5, pool_kernel=1,
                      pool_stride=1)
    m = build_model(cfg, 101, 2, ["crystal_system"])
    stem = 2 * 97 * 4 * 2 * 5            # out length 97, 4 channels, 2 in x 5 taps
    conv1 = 2 * 49 * 4 * 4 * 3           # stride 2, padding 1 -> 49
    conv2 = 2 * 49 * 4 * 4 * 3
    short = 2 * 49 * 4 * 4 * 1
    head = 2 * 7 * 4
    assert flops_per_sample(m, 101, 2)["forward"] == stem + conv1 + conv2 + short + head


def test_park_cnn_builds_and_runs():
    m = build_model(ModelConfig(arch="park"), 3296, 2, ["space_group"])
    assert m(torch.zeros(3, 2, 3296))["space_group"].shape == (3, 230)
    with pytest.raises(InputError, match="too short"):
        build_model(ModelConfig(arch="park"), 200, 1)


def test_coverage_masks_what_predict_masks_for_another_wavelength():
    """The coverage augmentation blanks what ``predict``'s d-spacing conversion leaves missing for a
    measurement at another wavelength (to a grid step at each end); off, it draws nothing."""
    from xtalhpc.regrid import to_grid
    from xtalhpc.train.augment import coverage_limits

    tt = np.linspace(3, 167.75, 3296)
    step = tt[1] - tt[0]
    for lam_m, lo_m, hi_m in [(1.909, 10.0, 160.0), (2.4063, 8.0, 150.0), (1.5403, 5.0, 120.0), (1.87, 3.0, 130.0)]:
        meas = np.linspace(lo_m, hi_m, int(round((hi_m - lo_m) / 0.05)) + 1)
        r = to_grid(meas, np.ones_like(meas), lam_m, tt, 1.5403)
        covered = tt[~r.missing]
        lo, hi = coverage_limits(lam_m / 1.5403, lo_m, hi_m)
        assert abs(covered[0] - max(float(lo), tt[0])) <= 2 * step, (lam_m, covered[0], lo)
        assert abs(covered[-1] - min(float(hi), tt[-1])) <= 2 * step, (lam_m, covered[-1], hi)
    y = _peaks(tt, [30.0, 60.0, 120.0], width=0.1)
    cfg = AugmentConfig(coverage_probability=1.0, coverage_wavelength_ratio=(1.5, 1.5),
                        coverage_two_theta_max=(150.0, 150.0), coverage_two_theta_min=(5.0, 5.0))
    out, m = BatchAugmenter(cfg, tt)(np.stack([y] * 3), np.random.default_rng(1))
    lo, hi = coverage_limits(1.5, 5.0, 150.0)
    assert np.array_equal(m, np.broadcast_to((tt >= lo) & (tt <= hi), m.shape))
    assert 80 < float(hi) < 81 and not m[:, tt > 81].any() and m[:, (tt > 10) & (tt < 79)].all()
    # off draws nothing: a recipe without it augments exactly as before
    base = AugmentConfig(crop_probability=0.5, impurity_peaks=2)
    off = AugmentConfig(crop_probability=0.5, impurity_peaks=2, coverage_wavelength_ratio=(2.0, 3.0))
    a, ma = BatchAugmenter(base, tt)(np.stack([y] * 4), np.random.default_rng(5))
    b, mb = BatchAugmenter(off, tt)(np.stack([y] * 4), np.random.default_rng(5))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    with pytest.raises(InputError, match="coverage_probability"):
        AugmentConfig(coverage_probability=1.5)
