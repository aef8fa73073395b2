"""The experiment scripts of experiments/: they run, and their measures are right on known inputs.

These are checks of research scripts, not of the product: marked ``experiment`` (``pytest -m "not
experiment"`` leaves them out).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saliencyssl.saliency import LabellerConfig
from saliencyssl.surrogate.losses import TargetLoss
from saliencyssl.surrogate.model import Surrogate, SurrogateCheckpointError
from saliencyssl.surrogate.networks import image_to_input
from saliencyssl.surrogate.pairs import load_pairs
from saliencyssl.surrogate.training import SurrogateTrainer, TrainConfig, TrainConfigError
from test_eval import _write_images
from test_surrogate import TINY, labelled, pairs  # noqa: F401 (fixtures: labelled 32 px photo crops and their pairs)

pytestmark = pytest.mark.experiment


def test_feature_spectrum_shares_and_cli(tmp_path, capsys):
    """experiments/feature_spectrum.py: variance shares of known spectra, and a run on labelled folders."""
    import feature_spectrum

    rng = np.random.default_rng(0)
    columns = rng.standard_normal((20000, 4)) * np.sqrt([6.0, 2.0, 1.0, 1.0])  # variances 6:2:1:1
    shares = feature_spectrum.spectrum(columns)
    assert shares["top1_variance"] == pytest.approx(0.6, abs=0.01)
    assert shares["top10_variance"] == pytest.approx(1.0)
    equal = feature_spectrum.spectrum(rng.standard_normal((20000, 8)))
    assert equal["effective_rank"] == pytest.approx(8.0, rel=0.01)  # a flat spectrum: every direction counts
    assert shares["effective_rank"] < 4.0

    _write_images(tmp_path / "train", per_class=8, seed=0)
    _write_images(tmp_path / "test", per_class=4, seed=1)
    common = ["--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--cache-dir", str(tmp_path / "c")]
    assert feature_spectrum.main([*common, "random:0", "--json", str(tmp_path / "s.json")]) == 0
    entry = json.loads((tmp_path / "s.json").read_text())["backbones"]["random:0"]
    assert 0.0 < entry["top1_variance"] <= entry["top10_variance"] <= 1.0 + 1e-9
    assert 1.0 <= entry["effective_rank"] <= 512
    assert 1 / 3 < entry["knn"] <= 1.0, "three flat colours: a random backbone's kNN is far above chance"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        feature_spectrum.main([*common, "random:x"])
    assert "random:S with an integer seed" in capsys.readouterr().err
    _write_images(tmp_path / "two", per_class=4, classes=("red", "green"))
    with pytest.raises(SystemExit):
        feature_spectrum.main(["--train", str(tmp_path / "train"), "--test", str(tmp_path / "two"), "random:0"])
    assert "different classes" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- experiments/surrogate_knobs.py
def _train_knobs(labelled, out: Path, *extra: str) -> int:
    import surrogate_knobs

    images, cache_dir, _ = labelled
    return surrogate_knobs.main([str(images), "--cache", str(cache_dir), "--out", str(out), "--batch-size", "4",
                                 "--ngf", "4", "--ndf", "4", "--quiet", "--held-out", "0.2", "--eval-steps", "1",
                                 *extra])


def test_coordinate_channels_change_the_first_layer():
    from surrogate_knobs import KnobArchitecture, KnobGenerator

    g = KnobGenerator(KnobArchitecture(32, ngf=4, coords=True))
    assert g.down[0][0].in_channels == 5 and g.head[0].in_channels == g.arch.head + 5  # the head sees them too
    assert g(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_presence_term_is_reported_and_trained(pairs):
    from surrogate_knobs import KnobLoss, KnobWeights

    loss = KnobLoss(KnobWeights(presence=5.0))
    exact = pairs.targets.index_select(torch.arange(4)).channels()
    total, parts = loss(torch.zeros(4, 3, 32, 32), exact)
    assert "presence" in parts and float(parts["presence"]) == pytest.approx(np.log(2), abs=1e-4)
    total0, _ = TargetLoss()(torch.zeros(4, 3, 32, 32), exact)
    assert float(total) == pytest.approx(float(total0) + 5.0 * np.log(2), rel=1e-4)


def test_support_channel_is_where_the_map_is_nonzero_and_follows_flips(pairs):
    from surrogate_knobs import KnobArchitecture, KnobConfig, KnobWeights, support_channels

    targets = pairs.targets.index_select(torch.arange(6))
    channels = support_channels(targets)
    assert channels.shape[1] == 4 and torch.equal(channels[:, :3], targets.channels())
    assert torch.equal(channels[:, 3:4].bool(), targets.saliency > 0)
    # What makes it a presence signal: some support pixel exactly when the exact mask is not empty.
    assert torch.equal(channels[:, 3].flatten(1).amax(1) > 0, targets.mask.flatten(1).any(1))
    which = torch.tensor([True, False, True, False, True, False])
    assert torch.equal(support_channels(targets.flip(which))[:, 3:4].bool(), targets.flip(which).saliency > 0)
    with pytest.raises(ValueError, match="out_channels"):
        KnobArchitecture(32, out_channels=5)
    with pytest.raises(TrainConfigError, match="weights.support"):
        KnobConfig(weights=KnobWeights(support=-1.0))
    assert KnobConfig(weights={"support": 2.0}).architecture().out_channels == 4


def test_support_term_is_reported_and_needs_the_fourth_channel(pairs):
    from surrogate_knobs import KnobLoss, KnobWeights, support_channels

    exact = support_channels(pairs.targets.index_select(torch.arange(4)))
    loss = KnobLoss(KnobWeights(support=10.0))
    right = torch.cat([exact[:, :3], (exact[:, 3:4] * 2 - 1) * 20], 1)  # support logits that say the answer
    wrong = torch.cat([exact[:, :3], -(exact[:, 3:4] * 2 - 1) * 20], 1)
    _, good = loss(right, exact)
    _, bad = loss(wrong, exact)
    assert float(good["support"]) < 0.05 < 1.0 < float(bad["support"])
    with pytest.raises(ValueError, match="fourth channel"):
        loss(torch.zeros(4, 3, 32, 32), exact[:, :3])
    assert "support" not in KnobLoss(KnobWeights())(torch.zeros(4, 3, 32, 32), exact[:, :3])[1]


def test_surrogate_trained_with_the_support_loss_predicts_the_target_channels(labelled, tmp_path, capsys):
    from surrogate_knobs import load_knob_surrogate

    out = tmp_path / "run"
    assert _train_knobs(labelled, out, "--epochs", "1", "--lambda-support", "20", "--coords") == 0
    # The product refuses the retired architecture by name; the experiment loads it.
    with pytest.raises(SurrogateCheckpointError, match="coordinate channels"):
        Surrogate.load(out / "surrogate.pt")
    surrogate = load_knob_surrogate(out / "surrogate.pt")
    assert surrogate.generator.arch.out_channels == 4 and surrogate.generator.arch.coords
    images = load_pairs(labelled[0], labelled[1], 32, progress=False).images[:3]
    with torch.no_grad():
        assert surrogate.generator(image_to_input(images)).shape[1] == 4
    assert surrogate.predict_channels(images).shape == (3, 3, 32, 32)
    assert surrogate.predict(images).mask.shape == (3, 1, 32, 32)
    assert surrogate.meta["config"]["weights"]["support"] == 20
    # Resuming without the support loss is another architecture: refused, with the reason.
    assert _train_knobs(labelled, out, "--epochs", "2", "--resume", "--coords") == 2
    assert "architecture" in capsys.readouterr().err


def test_weight_average_is_what_is_saved_and_resumed(pairs, labelled, tmp_path, capsys):
    from surrogate_knobs import KnobConfig, KnobTrainer

    config = KnobConfig(image_size=32, epochs=2, batch_size=4, seed=1, ema=0.9, select="last", **TINY)
    trainer = KnobTrainer(config, pairs, None, tmp_path / "direct", progress=False, tensorboard=False,
                          log=lambda s: None)
    start = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    trainer.fit()
    raw, averaged = trainer.generator.state_dict(), trainer.ema.module.state_dict()
    name = next(k for k, v in raw.items() if v.is_floating_point() and not torch.equal(v, start[k]))
    # the average lies between the start and the trained weights, not on either
    assert not torch.equal(averaged[name], raw[name]) and not torch.equal(averaged[name], start[name])
    assert int(trainer.ema.n_averaged) == trainer.step
    # A weight average keeps the product's architecture: both files load in the product, as the average.
    saved = Surrogate.load(tmp_path / "direct" / "surrogate.pt")
    images = pairs.images[:4]
    assert torch.equal(saved.predict_channels(images), trainer.surrogate().predict_channels(images))
    last = Surrogate.load(tmp_path / "direct" / "last.pt")  # the average too, not the raw generator it also holds
    assert torch.equal(last.predict_channels(images), saved.predict_channels(images))
    assert not torch.equal(last.generator.state_dict()[name], raw[name].cpu())
    with pytest.raises(TrainConfigError, match="ema"):
        KnobConfig(ema=1.0)
    with pytest.raises(TypeError, match="KnobConfig"):
        KnobTrainer(TrainConfig(image_size=32, **TINY), pairs, None, tmp_path / "plain")

    out = tmp_path / "run"
    assert _train_knobs(labelled, out, "--epochs", "1", "--ema", "0.99") == 0
    assert _train_knobs(labelled, out, "--epochs", "2", "--resume") == 2  # the run had an average, this one has none
    assert "weight average" in capsys.readouterr().err
    assert _train_knobs(labelled, out, "--epochs", "2", "--resume", "--ema", "0.99") == 0
    assert Surrogate.load(out / "last.pt").meta["config"]["ema"] == 0.99


# ---------------------------------------------------------------------------- experiments/surrogate_expected_labels.py
def test_expected_label_variants_map_back_onto_the_original_grid():
    """A variant's target, mapped back, lines up with the image."""
    import surrogate_expected_labels as exp
    from saliencyssl.target import Target

    rng = np.random.default_rng(0)
    regions = np.repeat(np.repeat(rng.integers(0, 5, (4, 4)), 4, 0), 4, 1).astype(np.uint16)  # 16x16, 4x4 blocks
    target = Target(rng.integers(0, 256, (16, 16), dtype=np.uint8), rng.random((16, 16)) > 0.5, regions)
    original = exp._variant_channels(target, False, 0, 0)
    for mirror, dy, dx in exp.VARIANTS.values():
        # The target a perfectly equivariant labeller would give for the variant image ...
        moved = Target(*(p[:, ::-1].copy() if mirror else exp.shift(p, dy, dx).copy()
                         for p in (target.saliency, target.mask, target.regions)))
        back = exp._variant_channels(moved, mirror, dy, dx)
        # ... maps back to the original target, except on the row or column the shift lost.
        inner = (slice(1, -1), slice(1, -1))
        np.testing.assert_allclose(back[(slice(None),) + inner], original[(slice(None),) + inner])
        if mirror:
            np.testing.assert_array_equal(back, original)


def test_expected_targets_train_like_exact_ones(pairs, tmp_path):
    """Soft targets go through the trainer's batch (mirrors and turns) and step."""
    import surrogate_expected_labels as exp

    soft = exp.ExpectedTargets(pairs.targets.channels() * 0.5)
    config = TrainConfig(image_size=32, batch_size=4, seed=0, **TINY)
    trainer = SurrogateTrainer(config, pairs, None, tmp_path, progress=False, tensorboard=False, log=lambda s: None)
    trainer.targets = soft
    images, channels = trainer.batch(torch.arange(4), torch.tensor([True, False, True, False]),
                                     torch.tensor([0, 0, 0, 1]))
    assert torch.equal(channels[1], pairs.targets.channels()[1] * 0.5)
    assert torch.equal(channels[0], pairs.targets.channels()[0].flip(-1) * 0.5)
    assert torch.equal(channels[3], torch.rot90(pairs.targets.channels()[3], 1, (-2, -1)) * 0.5)
    assert set(trainer.train_step(images, channels)) >= {"l1", "mask", "boundary"}


# ---------------------------------------------------------------------------------- experiments/presence_gate.py
def test_presence_gate_reproduces_the_labellers_presence_at_the_working_size(labelled, tmp_path):
    """The border test on the 64 px segmentation is the labeller's presence."""
    import presence_gate

    images, cache_dir, _ = labelled
    assert not presence_gate.border_test(np.full((32, 32, 3), 120, np.uint8), LabellerConfig())
    out = tmp_path / "gate.json"
    assert presence_gate.main([str(images), str(images), "--cache", str(cache_dir), "--fit-images", "10",
                               "--timing-images", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["test_images"] == 10 and result["working_size_test"]["size"] == 64
    assert result["working_size_test"]["accuracy"] == 1.0
    assert 0.0 <= result["native_size_test"]["accuracy"] <= 1.0 and result["native_size_test"]["ms"] > 0
    assert len(result["native_grid"]) == 18 and result["labeller_ms"] > 0


# ---------------------------------------------------------------------------------- experiments/lightly_baseline.py
def test_lightly_baseline_run_writes_a_loadable_backbone_and_records_its_views(tmp_path, one_torch_thread):
    """A few steps with lightly's SimCLRTransform views: backbone.pt loads, and the run folder names the views."""
    import lightly_baseline

    from saliencyssl.app.pretrain import PretrainConfig, Pretrainer
    from saliencyssl.app.rundir import RunMismatchError
    from saliencyssl.ssl.backbone import load_backbone

    data = _write_images(tmp_path / "data", per_class=4)  # 12 images of 32 px: one epoch of 3 steps of 4
    run = tmp_path / "run"
    assert lightly_baseline.main(["--data", str(data), "--epochs", "1", "--batch-size", "4", "--seed", "0",
                                  "--out", str(run), "--quiet"]) == 0
    model, config = load_backbone(run / "backbone.pt")
    assert config["policy"] == "lightly-simclr" and config["method"] == "simclr" and config["cifar_stem"]
    with torch.no_grad():
        features = model.eval()(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 512) and torch.isfinite(features).all()
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and history[0]["steps"] == 3 and np.isfinite(history[0]["loss"])
    record = json.loads((run / "run.json").read_text())
    assert record["settings"]["views"]["transform"] == "lightly.transforms.SimCLRTransform"
    assert record["settings"]["views"]["cj_strength"] == 0.5 and record["settings"]["policy"] == "default"
    # the folder is not a run of the kornia policy: resuming it with the plain trainer is refused over the views
    with pytest.raises(RunMismatchError, match="views"):
        Pretrainer(PretrainConfig(data=str(data), out=str(run), method="simclr", aug_source="none", policy="default",
                                  epochs=1, batch_size=4, seed=0, resume=True, progress=False, tensorboard=False))


def test_lightly_baseline_views_come_from_lightly_per_image():
    """Each view is the transform's, image by image, in the trainer's normalisation."""
    import lightly_baseline

    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    calls = []

    def transform(image):
        calls.append(image.size)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
        return [x, -x]

    view_a, view_b = lightly_baseline.lightly_views(images, transform)
    assert calls == [(32, 32)] * 3 and torch.equal(view_a, images.float()) and torch.equal(view_b, -images.float())
    views = lightly_baseline.lightly_views(images, lightly_baseline.lightly_transform(32))
    assert all(v.shape == (3, 3, 32, 32) and v.dtype == torch.float32 for v in views)
    assert views[0].min() < 0  # normalised with ImageNet's mean and deviation, not in [0, 1]
    with pytest.raises(ValueError, match="uint8"):
        lightly_baseline.lightly_views(images.float(), transform)


def test_lightly_colour_ops_differ_from_kornia_colorjiggle_on_flat_grey():
    """On a flat grey image (128) the libraries' brightness and contrast are known exactly.

    torchvision's brightness scales (128 x 1.4 = 179), kornia's ColorJiggle adds (128/255 + 0.4); torchvision's
    contrast blends with the mean (no change on a flat image), ColorJiggle's scales the raw values.
    """
    import lightly_baseline

    grey = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    effects = lightly_baseline.single_op_effects(grey, ops=(("brightness", (1.4,)), ("contrast", (1.4,))))
    brightness, contrast = effects["brightness=1.4"], effects["contrast=1.4"]
    assert brightness["kornia ColorJiggle"]["d_luminance"] == pytest.approx(0.4, abs=1e-4)
    assert brightness["torchvision ColorJitter"]["d_luminance"] == pytest.approx((179 - 128) / 255, abs=1e-4)
    assert brightness["kornia ColorJitter"]["d_luminance"] == pytest.approx(0.4 * 128 / 255, abs=1e-4)
    assert contrast["kornia ColorJiggle"]["d_luminance"] == pytest.approx(0.4 * 128 / 255, abs=1e-4)
    assert contrast["torchvision ColorJitter"]["d_luminance"] == pytest.approx(0.0, abs=1e-4)
    assert contrast["kornia ColorJitter"]["d_luminance"] == pytest.approx(0.0, abs=1e-4)


def test_lightly_baseline_statistics_mode(tmp_path):
    """--stats compares the two augmentations on a folder and writes the report."""
    import lightly_baseline

    data = _write_images(tmp_path / "data", per_class=8)
    out = tmp_path / "stats.json"
    assert lightly_baseline.main(["--stats", "--data", str(data), "--stats-images", "24", "--batch-size", "8",
                                  "--crop-draws", "3000", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    geometry = report["geometry_and_parameters"]
    for side in ("ours", "lightly"):
        drawn = geometry[side]
        assert drawn["views"] == 24
        assert 0.08 - 1e-9 <= drawn["crop_scale"]["min"] <= drawn["crop_scale"]["max"] <= 1.0
        assert 3 / 4 - 0.05 <= drawn["crop_ratio"]["min"] <= drawn["crop_ratio"]["max"] <= 4 / 3 + 0.05
        assert 0.6 <= drawn["brightness_factor"]["min"] <= drawn["brightness_factor"]["max"] <= 1.4
        assert -0.1 <= drawn["hue_factor"]["min"] <= drawn["hue_factor"]["max"] <= 0.1
        assert 0.0 <= drawn["flip_rate"] <= 1.0 and 0.0 <= drawn["gray_rate"] <= 1.0
    assert geometry["ours"]["orders_per_batch"]["max"] == 1  # kornia draws one jitter order per batch
    assert geometry["lightly"]["orders_per_batch"]["max"] > 1  # torchvision draws one per image
    assert geometry["crop_sizes"]["draws"] == 3000 and 0.0 <= geometry["crop_sizes"]["pvalue"] <= 1.0
    ops = report["single_op"]["brightness=1.4"]
    assert ops["kornia ColorJiggle"]["d_luminance"] > ops["torchvision ColorJitter"]["d_luminance"] > 0
    assert set(report["colour_effect"]) == {"ours (kornia ColorJitter)", "lightly (torchvision ColorJitter)",
                                            "kornia ColorJiggle (not used)"}
    resampling = report["resampling"]
    assert resampling["cropped_views"] > 0 and resampling["corner_zoom"] > 1.0
    # our crops resample on the half-pixel grid as PIL does: no further from PIL than interpolate itself
    assert resampling["ours_vs_pil"] <= resampling["half_pixel_vs_pil"] + 0.5
    assert report["timing"]["ours_ms"] > 0 and report["timing"]["lightly_ms"] > 0
