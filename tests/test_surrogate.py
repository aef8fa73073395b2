"""The Pix2Pix surrogate: shapes, a training step, prediction, checkpoints, pairs and the train-surrogate stage."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from saliencyssl.app import train_surrogate
from saliencyssl.app.options import label_command, remedy
from saliencyssl.augment.predictor import TargetPredictor
from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.surrogate.losses import GANLoss, LossWeights, TargetLoss, soft_dice_loss
from saliencyssl.surrogate.model import Surrogate, SurrogateCheckpointError
from saliencyssl.surrogate.networks import (Architecture, PatchDiscriminator, UNetGenerator, build_networks,
                                            image_to_input, patch_receptive_field, unet_depth)
from saliencyssl.surrogate.pairs import (NoPairsError, PairSet, choose_fingerprint, describe_misses, held_out_mask,
                                         load_pairs)
from saliencyssl.surrogate.training import SurrogateTrainer, TrainConfig, TrainConfigError, resolve_device
from saliencyssl.target import TARGET_CHANNELS, TargetBatch, region_boundary, regions_from_boundary


TINY = dict(ngf=4, ndf=4)


def crops(photo: np.ndarray, n: int, size: int = 32) -> list[np.ndarray]:
    """``n`` distinct real images: shifted crops of the photo, resized to ``size``."""
    out = []
    for i in range(n):
        y, x = (i * 7) % 40, (i * 13) % 80
        crop = photo[y:y + 110, x:x + 140]
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, photo) -> tuple[Path, Path, str]:
    """A folder of 10 real 32 px images, their exact targets in a cache, and the fingerprint."""
    root = tmp_path_factory.mktemp("surrogate")
    images, cache_dir = root / "images", root / "cache"
    images.mkdir()
    config = LabellerConfig()
    labeller = Labeller(config)
    cache = TargetCache(cache_dir, config.fingerprint(), params=config.params())
    for i, image in enumerate(crops(photo, 10)):
        cv2.imwrite(str(images / f"{i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cache.put(image, labeller(image))
    cache.close()
    return images, cache_dir, config.fingerprint()


@pytest.fixture(scope="module")
def pairs(labelled) -> PairSet:
    images, cache_dir, _ = labelled
    return load_pairs(images, cache_dir, 32, progress=False)


# ---------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size,depth", [(32, 5), (64, 6), (96, 5), (128, 7), (256, 8)])
def test_generator_output_shape(size, depth):
    arch = Architecture(size, ngf=4)
    assert arch.depth == depth == unet_depth(size)
    g = UNetGenerator(arch).eval()
    with torch.no_grad():
        out = g(torch.zeros(2, 3, size, size))
    assert out.shape == (2, len(TARGET_CHANNELS), size, size)


def test_depth_rejects_sizes_that_cannot_be_halved():
    with pytest.raises(ValueError, match="multiple of 8"):
        unet_depth(36)


@pytest.mark.parametrize("size,patches", [(32, 14), (64, 14), (96, 22), (128, 14), (256, 30)])
def test_discriminator_patch_shape(size, patches):
    arch = Architecture(size, ngf=4, ndf=4)
    d = PatchDiscriminator(arch)
    out = d(torch.zeros(2, 3 + len(TARGET_CHANNELS), size, size))
    assert out.shape == (2, 1, patches, patches)
    assert patch_receptive_field(arch.d_layers) == {1: 16, 2: 34, 3: 70}[arch.d_layers]


def test_init_weights_follow_pix2pix():
    g, _ = build_networks(Architecture(32, ngf=8), seed=0)
    conv = g.down[1][1].weight.detach()
    assert abs(float(conv.mean())) < 0.005 and 0.015 < float(conv.std()) < 0.025
    bn = g.down[1][2].weight.detach()
    assert abs(float(bn.mean()) - 1.0) < 0.02


# ---------------------------------------------------------------------------------- losses
def test_losses_are_zero_or_small_at_the_answer():
    gan = GANLoss("lsgan")
    assert float(gan(torch.ones(1, 1, 3, 3), True)) == 0.0
    assert float(gan(torch.zeros(1, 1, 3, 3), False)) == 0.0
    with pytest.raises(ValueError, match="GAN mode"):
        GANLoss("wgan")
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good = soft_dice_loss((target * 2 - 1) * 20, target)
    bad = soft_dice_loss(-(target * 2 - 1) * 20, target)
    assert float(good) < 0.01 < 0.9 < float(bad)
    total, parts = TargetLoss()(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    assert set(parts) == {"l1", "mask", "boundary"} and float(total) > 0


def test_boundary_weight_is_class_balanced_per_batch_by_default():
    from saliencyssl.surrogate.losses import BALANCED_WEIGHT_RANGE, balanced_pos_weight

    target = torch.zeros(2, 1, 10, 10)
    target[:, :, 0, :] = 1  # 10% boundary pixels
    assert float(balanced_pos_weight(target)) == pytest.approx(9.0)
    assert float(balanced_pos_weight(torch.zeros(1, 1, 40, 40))) == BALANCED_WEIGHT_RANGE[1]  # clamped
    assert float(balanced_pos_weight(torch.ones(1, 1, 4, 4))) == BALANCED_WEIGHT_RANGE[0]
    assert LossWeights().boundary_pos_weight is None and LossWeights().gan == 0.0
    exact = torch.zeros(2, 3, 10, 10)
    exact[:, 2:3] = target
    logits = torch.zeros(2, 3, 10, 10)  # p = 0.5 everywhere
    balanced = TargetLoss(LossWeights())(logits, exact)[1]["boundary"]
    fixed = TargetLoss(LossWeights(boundary_pos_weight=9.0))(logits, exact)[1]["boundary"]
    light = TargetLoss(LossWeights(boundary_pos_weight=2.0))(logits, exact)[1]["boundary"]
    assert float(balanced) == pytest.approx(float(fixed)) and float(light) < float(fixed)
    with pytest.raises(SystemExit):
        train_surrogate.build_parser().parse_args(["x", "--cache", "c", "--out", "o", "--boundary-pos-weight", "-1"])
    args = train_surrogate.build_parser().parse_args(["x", "--cache", "c", "--out", "o"])
    assert args.boundary_pos_weight is None and args.head == 8 and args.dropout_blocks == 0 and not args.no_rotate
    assert train_surrogate.build_parser().parse_args(["x", "--cache", "c", "--out", "o", "--boundary-pos-weight",
                                                      "2"]).boundary_pos_weight == 2.0


def test_the_full_resolution_head_sees_the_image_and_can_be_left_out():
    g = UNetGenerator(Architecture(32, ngf=4, head=6))
    assert g.head[0].in_channels == 6 + 3 and g.head[-1].out_channels == len(TARGET_CHANNELS)
    assert g(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    plain = UNetGenerator(Architecture(32, ngf=4, head=0, dropout_blocks=3))
    assert plain.head is None and sum(isinstance(m, torch.nn.Dropout) for m in plain.modules()) == 3
    assert not any(isinstance(m, torch.nn.Dropout) for m in UNetGenerator(Architecture(32, ngf=4)).modules())
    with pytest.raises(ValueError, match="head"):
        Architecture(32, head=-1)


@pytest.mark.parametrize("gan", [0.0, 1.0])
def test_one_training_step_lowers_the_loss(pairs, tmp_path, gan):
    config = TrainConfig(image_size=32, batch_size=8, lr=1e-3, seed=0, flip=False, weights=LossWeights(gan=gan),
                         **TINY)
    trainer = SurrogateTrainer(config, pairs, None, tmp_path, progress=False, tensorboard=False, log=lambda s: None)
    for block in trainer.generator.up:  # no dropout noise in this comparison
        for m in block:
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    images, exact = trainer.batch(torch.arange(8), None)
    loss = TargetLoss(config.weights)

    def current() -> float:
        with torch.no_grad():
            trainer.generator.train()
            return float(loss(trainer.generator(image_to_input(images)), exact)[0])

    before = current()
    out = trainer.train_step(images, exact)
    after = current()
    assert {"l1", "mask", "boundary", "g"} <= set(out)
    assert ({"d", "g_gan"} <= set(out)) == (gan > 0)  # the discriminator steps only with an adversarial term
    assert after < before, f"loss did not fall after one step: {before:.4f} -> {after:.4f}"


def test_learning_rate_is_constant_then_decays(pairs, tmp_path):
    trainer = SurrogateTrainer(TrainConfig(image_size=32, epochs=10, **TINY), pairs, None, tmp_path,
                               progress=False, tensorboard=False)
    rate = trainer.config.lr
    assert trainer.lr_at(0.0) == trainer.lr_at(0.5) == rate
    assert trainer.lr_at(0.75) == pytest.approx(rate / 2)
    assert trainer.lr_at(1.0) == 0.0
    budget = SurrogateTrainer(TrainConfig(image_size=32, max_minutes=10, **TINY), pairs, None, tmp_path,
                              progress=False, tensorboard=False)
    assert budget.run_progress(300.0) == pytest.approx(0.5)  # the time budget drives the schedule


# ---------------------------------------------------------------------------------- prediction and checkpoints
def test_predict_returns_a_target_batch_and_meets_the_protocol():
    s = Surrogate.fresh(32, "0123456789abcdef", ngf=4)
    assert isinstance(s, TargetPredictor)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    batch = s.predict(images)
    assert isinstance(batch, TargetBatch) and len(batch) == 3
    assert batch.saliency.shape == batch.mask.shape == batch.regions.shape == (3, 1, 32, 32)
    assert batch.saliency.dtype == torch.float32 and batch.mask.dtype == torch.bool
    assert batch.regions.dtype == torch.int64 and batch.device == images.device
    assert 0.0 <= float(batch.saliency.min()) and float(batch.saliency.max()) <= 1.0
    assert not batch.saliency.requires_grad
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        s.predict(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        s.predict(torch.zeros(1, 3, 32, 32))


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    s = Surrogate.fresh(32, "0123456789abcdef", seed=3, ngf=4)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = s.save(tmp_path / "surrogate.pt", meta={"note": "test"})
    loaded = Surrogate.load(path, expect_image_size=32, expect_fingerprint="0123456789abcdef")
    assert loaded.meta["note"] == "test" and loaded.arch == s.arch
    assert torch.equal(s.predict_channels(images), loaded.predict_channels(images))
    a, b = s.predict(images), loaded.predict(images)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.regions, b.regions)


def test_wrong_checkpoints_fail_with_the_reason(tmp_path):
    path = Surrogate.fresh(32, "0123456789abcdef", ngf=4).save(tmp_path / "surrogate.pt")
    with pytest.raises(SurrogateCheckpointError, match="wrong image size.*32x32"):
        Surrogate.load(path, expect_image_size=96)
    with pytest.raises(SurrogateCheckpointError, match="wrong labeller fingerprint.*0123456789abcdef"):
        Surrogate.load(path, expect_fingerprint="fedcba9876543210")
    blob = torch.load(path, weights_only=True)
    blob["target_channels"] = ["saliency", "mask"]
    torch.save(blob, tmp_path / "layout.pt")
    with pytest.raises(SurrogateCheckpointError, match="wrong target layout"):
        Surrogate.load(tmp_path / "layout.pt")
    blob = torch.load(path, weights_only=True)
    blob["arch"]["ngf"] = 8
    torch.save(blob, tmp_path / "shape.pt")
    with pytest.raises(SurrogateCheckpointError, match="weights do not fit"):
        Surrogate.load(tmp_path / "shape.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(SurrogateCheckpointError, match="is not a surrogate checkpoint"):
        Surrogate.load(tmp_path / "notes.pt")
    torch.save({"state_dict": {}, "config": {}}, tmp_path / "backbone.pt")
    with pytest.raises(SurrogateCheckpointError, match="is not a surrogate checkpoint"):
        Surrogate.load(tmp_path / "backbone.pt")
    with pytest.raises(FileNotFoundError, match="surrogate checkpoint .*missing.pt not found") as missing:
        Surrogate.load(tmp_path / "missing.pt")
    assert "saliency-ssl" not in str(missing.value).replace("saliency-ssl surrogate", "")  # core names no command
    assert remedy(missing.value) == ("; train one with: saliency-ssl train-surrogate IMAGES_DIR --cache CACHE_DIR "
                                     "--out RUN_DIR")
    # Generators with an option that left the product (coordinate channels, the support output) are refused
    # by name; a record of those fields at the product's values reads as usual.
    for field, value, words in (("coords", True, "coordinate channels"), ("out_channels", 4, "support")):
        blob = torch.load(path, weights_only=True)
        blob["arch"][field] = value
        torch.save(blob, tmp_path / "retired.pt")
        with pytest.raises(SurrogateCheckpointError, match=f"{words}.*retrain it") as retired:
            Surrogate.load(tmp_path / "retired.pt")
        assert "train-surrogate" in remedy(retired.value)
    blob = torch.load(path, weights_only=True)
    blob["arch"].update(coords=False, out_channels=len(TARGET_CHANNELS))
    torch.save(blob, tmp_path / "plain.pt")
    assert Surrogate.load(tmp_path / "plain.pt").arch == Surrogate.load(path).arch


class _NotATensor:
    """A Python object that a safe (weights-only) load refuses to rebuild."""


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_that_is_not_a_checkpoint_gets_our_one_line_message(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"generator": _NotATensor()}))
    else:
        torch.save({"generator": _NotATensor()}, path)
    with pytest.raises(SurrogateCheckpointError) as info:
        Surrogate.load(path)
    message = str(info.value)
    assert str(path) in message and "not a surrogate checkpoint" in message and "train-surrogate" in remedy(info.value)
    assert "weights_only" not in message and "trust" not in message.lower() and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's advice is not chained either


# ---------------------------------------------------------------------------------- pairs
def test_pairs_hold_aligned_tensors(pairs, labelled):
    _, _, fingerprint = labelled
    assert len(pairs) == 10 and pairs.fingerprint == fingerprint and not pairs.misses
    assert pairs.images.shape == (10, 3, 32, 32) and pairs.images.dtype == torch.uint8
    ch = pairs.targets.channels()
    assert ch.shape == (10, 3, 32, 32) and float(ch.min()) >= 0 and float(ch.max()) <= 1
    regions = pairs.targets.regions[0, 0].numpy()
    assert np.array_equal(ch[0, 2].numpy() > 0, region_boundary(regions))


def test_flip_recomputes_the_boundary_of_flipped_regions(pairs):
    flipped = pairs.targets.flip(torch.ones(len(pairs), dtype=torch.bool)).channels()
    regions = pairs.targets.regions[:, 0].numpy()
    for i in range(len(pairs)):
        assert np.array_equal(flipped[i, 2].numpy() > 0, region_boundary(np.fliplr(regions[i])))
        assert torch.equal(flipped[i, 1], pairs.targets.channels()[i, 1].flip(-1))


def test_held_out_split_is_by_content_hash():
    hashes = [f"{i:032x}" for i in range(400)]
    mask = held_out_mask(hashes, 0.1)
    assert 20 < mask.sum() < 60
    assert np.array_equal(mask[::-1], held_out_mask(hashes[::-1], 0.1))  # order does not matter
    assert np.array_equal(held_out_mask(hashes[:100], 0.1), mask[:100])  # membership is per image
    assert held_out_mask(hashes[:2], 0.01).sum() == 1


def test_misses_are_listed_with_the_command(labelled, photo, tmp_path):
    images, cache_dir, _ = labelled
    folder = tmp_path / "more"
    folder.mkdir()
    for i, name in enumerate(sorted(images.iterdir())[:3]):
        (folder / name.name).write_bytes(name.read_bytes())
    extra = cv2.resize(photo[:64, :64], (32, 32))
    cv2.imwrite(str(folder / "new.png"), cv2.cvtColor(extra, cv2.COLOR_RGB2BGR))
    result = load_pairs(folder, cache_dir, 32, progress=False)
    assert len(result) == 3 and result.misses == ["new.png"]
    lines = describe_misses(result)
    assert "1 image(s) have no target" in lines[0] and lines[1].strip() == "new.png"
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    cv2.imwrite(str(lonely / "new.png"), cv2.cvtColor(extra, cv2.COLOR_RGB2BGR))
    with pytest.raises(NoPairsError, match="no target") as info:
        load_pairs(lonely, cache_dir, 32, progress=False)
    # The error carries data, and the stage turns it into the command that labels the images.
    assert info.value.reason == "no_targets" and info.value.cache_dir == cache_dir
    assert train_surrogate.no_pairs_advice(info.value).startswith(f"label them with: saliency-ssl label {lonely}")
    with pytest.raises(NoPairsError, match="not a target cache") as info:
        load_pairs(lonely, tmp_path / "nocache", 32, progress=False)
    assert info.value.reason == "no_cache" and "fill it with: saliency-ssl label" in train_surrogate.no_pairs_advice(
        info.value)


def test_targets_of_an_older_labeller_version_are_not_learned(tmp_path, labelled):
    images, cache_dir, fingerprint = labelled
    hashes = open_image_set(images).hashes()
    # The same targets stored again under a version-1 fingerprint covering more images: still ignored.
    old_params = {**LabellerConfig().params(), "version": "1"}
    old = TargetCache(tmp_path / "mixed", "0ld0ld0ld0ld0ld0", params=old_params)
    current = TargetCache(tmp_path / "mixed", fingerprint, params=LabellerConfig().params())
    source = TargetCache(cache_dir, fingerprint)
    for i, h in enumerate(hashes):
        old.put(h, source.get(h))
        if i < 5:
            current.put(h, source.get(h))
    assert choose_fingerprint(tmp_path / "mixed", hashes)[:3:2] == (fingerprint, 5)
    only_old = TargetCache(tmp_path / "only_old", "0ld0ld0ld0ld0ld0", params=old_params)
    only_old.put(hashes[0], source.get(hashes[0]))
    for cache in (old, current, source, only_old):
        cache.close()
    with pytest.raises(NoPairsError, match="older labeller versions only") as info:
        choose_fingerprint(tmp_path / "only_old", hashes, images_dir=images)
    assert info.value.reason == "old_versions" and list(info.value.fingerprints) == ["0ld0ld0ld0ld0ld0"]


def test_label_command_repeats_the_labeller_options():
    params = LabellerConfig(max_side=200, cut_engine="opencv").params()
    command = label_command("imgs", "cache", params)
    assert command.startswith("saliency-ssl label imgs --cache cache")
    assert "--max-side 200" in command and "--cut-engine opencv" in command and "--scale" not in command


# ---------------------------------------------------------------------------------- the stage
def _train(labelled, out: Path, *extra: str) -> int:
    images, cache_dir, _ = labelled
    return train_surrogate.main([str(images), "--cache", str(cache_dir), "--out", str(out), "--batch-size", "4",
                                 "--ngf", "4", "--ndf", "4", "--quiet", "--held-out", "0.2", "--eval-steps", "1",
                                 *extra])


def test_max_minutes_stops_and_still_writes_the_surrogate(labelled, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(labelled, out, "--epochs", "100000", "--max-minutes", "0.03") == 0
    text = capsys.readouterr().out
    assert "stopped by time budget" in text
    surrogate = Surrogate.load(out / "surrogate.pt", expect_image_size=32, expect_fingerprint=labelled[2])
    assert surrogate.meta["stopped_by"] == "time budget" and surrogate.meta["n_train"] + surrogate.meta[
        "n_held_out"] == 10
    assert (out / "last.pt").is_file() and list((out / "tensorboard").iterdir())
    assert surrogate.meta["seconds"] >= 0.03 * 60  # it trained until the budget, not less


def test_resume_continues_from_the_saved_epoch(labelled, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(labelled, out, "--epochs", "1") == 0
    first = Surrogate.load(out / "surrogate.pt")
    assert first.meta["epoch"] == 1
    assert _train(labelled, out, "--epochs", "2") == 2  # refuses to overwrite a run without --resume
    assert "--resume" in capsys.readouterr().err
    assert _train(labelled, out, "--epochs", "3", "--resume") == 0
    text = capsys.readouterr().out
    assert "resumed from" in text
    last = Surrogate.load(out / "last.pt")
    assert last.meta["epoch"] == 3 and last.meta["step"] == 3 * first.meta["step"]
    assert Surrogate.load(out / "surrogate.pt").meta["final_epoch"] == 3
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert _train(labelled, out, "--epochs", "4", "--resume", "--size", "64") == 2  # another size: refused
    assert "image_size 32 (now 64)" in capsys.readouterr().err
    # Options that shape the run cannot change on resume (the optimiser state would silently win).
    assert _train(labelled, out, "--epochs", "4", "--resume", "--lr", "0.01", "--seed", "3") == 2
    err = capsys.readouterr().err
    assert "lr 0.001 (now 0.01)" in err and "seed 0 (now 3)" in err and err.count("\n") == 1
    assert _train(labelled, out, "--epochs", "4", "--resume", "--no-flip") == 2
    assert "flip true (now false)" in capsys.readouterr().err.lower()
    assert _train(labelled, out, "--epochs", "4", "--resume", "--no-rotate", "--ngf", "8") == 2
    err = capsys.readouterr().err.lower()
    assert "rotate true (now false)" in err and "ngf 4 (now 8)" in err


@pytest.mark.parametrize("damage", [{"epoch": -10 ** 9}, {"elapsed": -1e15}, {"best": "x"}, {"history": [1]}])
def test_resume_from_a_crafted_last_pt_is_one_line_not_an_endless_run(labelled, tmp_path, capsys, damage):
    """Counters set to -1e9 trained without end, an elapsed time of -1e15 ignored --max-minutes, other fields gave
    raw tracebacks: each is refused when the run resumes, naming the file."""
    from saliencyssl.surrogate.model import save_checkpoint

    out = tmp_path / "run"
    assert _train(labelled, out, "--epochs", "1") == 0
    blob = torch.load(out / "last.pt", weights_only=True)
    blob["trainer"].update(damage)
    save_checkpoint(out / "last.pt", blob)
    capsys.readouterr()
    assert _train(labelled, out, "--epochs", "2", "--resume") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (a note on the tiny held-out set comes first)
    assert last.startswith("error: cannot resume from") and "its saved training state is damaged" in last
    assert "Traceback" not in err and "train-surrogate IMAGES_DIR" not in last


def test_the_run_record_keeps_the_trajectory_and_frees_the_budgets(labelled, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(labelled, out, "--epochs", "1") == 0
    record = json.loads((out / "run.json").read_text())
    assert record["stage"] == "train-surrogate" and record["finished"] and record["outcome"]["steps"] > 0
    settings, free = record["settings"], record["free"]
    assert {"data", "limit", "held_out", "image_size", "labeller_fingerprint", "batch_size", "lr", "beta1",
            "decay_start", "flip", "rotate", "seed", "gan_mode", "lambda_mask", "boundary_pos_weight", "ngf",
            "head"} <= set(settings)
    assert settings["labeller_fingerprint"] == labelled[2] and settings["data"] == str(labelled[0].resolve())
    assert {"epochs", "max_minutes", "max_steps", "select", "amp", "device", "threads", "eval_steps"} <= set(free)
    assert not set(settings) & set(free)
    # Budgets, selection and evaluation interval may change on resume.
    assert _train(labelled, out, "--epochs", "2", "--resume", "--select", "last", "--eval-steps", "3") == 0
    assert json.loads((out / "run.json").read_text())["free"]["select"] == "last"
    # A folder of other files is not a run folder; --resume on an empty folder starts a new run.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert _train(labelled, tmp_path / "other", "--epochs", "1") == 2
    assert "no run.json" in capsys.readouterr().err
    assert _train(labelled, tmp_path / "fresh", "--epochs", "1", "--resume") == 0


def test_a_step_budget_stops_the_run_decays_the_rate_and_resumes_to_a_larger_one(labelled, pairs, tmp_path, capsys):
    trainer = SurrogateTrainer(TrainConfig(image_size=32, max_steps=10, **TINY), pairs, None, tmp_path / "t",
                               progress=False, tensorboard=False)
    assert trainer.total_steps == 10 and trainer.config.total_epochs == 10 ** 6
    trainer.step = 5
    assert trainer.run_progress(0.0) == pytest.approx(0.5)  # the rate decays over the step budget
    both = SurrogateTrainer(TrainConfig(image_size=32, epochs=1, max_steps=10 ** 6, **TINY), pairs, None,
                            tmp_path / "u", progress=False, tensorboard=False)
    assert both.total_steps == both.steps_per_epoch  # the nearer end of the run
    with pytest.raises(TrainConfigError, match="max_steps"):
        TrainConfig(max_steps=0)
    out = tmp_path / "run"
    assert _train(labelled, out, "--max-steps", "5") == 0  # 2 steps an epoch: stops inside the third
    assert "stopped by step budget" in capsys.readouterr().out
    first = Surrogate.load(out / "last.pt").meta
    assert first["step"] == 5 and first["epoch"] == 2
    assert Surrogate.load(out / "surrogate.pt").meta["stopped_by"] == "step budget"
    assert _train(labelled, out, "--max-steps", "8", "--resume") == 0
    assert Surrogate.load(out / "last.pt").meta["step"] == 8
    assert _train(labelled, tmp_path / "bad", "--max-steps", "0") == 2
    assert "--max-steps 0" in capsys.readouterr().err


def test_records_from_before_the_head_read_as_they_were_trained():
    old = Architecture.from_dict({"name": "pix2pix-unet", "image_size": 32, "ngf": 4, "ndf": 4})
    assert old.head == 0 and old.dropout_blocks == 3  # Pix2Pix's output layer and dropout
    g = UNetGenerator(old)
    assert g.head is None and g.up[-1][1].out_channels == len(TARGET_CHANNELS)
    assert Architecture.from_dict(Architecture(32, ngf=4).as_dict()) == Architecture(32, ngf=4)


def test_a_run_cut_mid_epoch_resumes_from_the_batch_it_stopped_at(pairs, tmp_path, monkeypatch):
    import itertools

    import saliencyssl.surrogate.training as training

    train, held = pairs.split(0.2)
    clock = itertools.count(0.0, 1.0)  # every clock reading is one second later
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    config = dict(image_size=32, batch_size=1, ngf=4, ndf=4, epochs=3)
    cut = SurrogateTrainer(TrainConfig(max_minutes=0.25, **config), train, held, tmp_path, progress=False,
                           tensorboard=False, log=lambda s: None)
    assert cut.fit().stopped_by == "time budget"
    assert 0 < cut.step % cut.steps_per_epoch  # stopped inside an epoch
    resumed = SurrogateTrainer(TrainConfig(max_minutes=60, **config), train, held, tmp_path, progress=False,
                               tensorboard=False, log=lambda s: None)
    resumed.resume()
    result = resumed.fit()
    assert result.stopped_by == "epochs" and result.steps == 3 * resumed.steps_per_epoch  # nothing repeated


def test_cli_reports_a_cache_without_targets(labelled, tmp_path, capsys):
    images, _, _ = labelled
    empty = tmp_path / "cache"
    TargetCache(empty, LabellerConfig().fingerprint()).close()
    code = train_surrogate.main([str(images), "--cache", str(empty), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no target" in err and f"saliency-ssl label {images} --cache {empty}" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start
    assert train_surrogate.main([str(images), "--cache", str(empty), "--out", str(tmp_path / "run"), "--ngf", "0",
                                 "--quiet"]) == 2
    assert "--ngf 0" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "meta"])
def test_cli_refuses_a_device_torch_cannot_use_in_one_line(tmp_path, capsys, device):
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    code = train_surrogate.main(["images", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                                 "--device", device, "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"--device {device}" in err and "cpu" in err
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="choose"):
        resolve_device(device)


def test_short_epochs_are_evaluated_every_few_epochs_and_at_the_last(pairs, tmp_path):
    train, held = pairs.subset(range(8)), pairs.subset(range(8, 10))
    config = TrainConfig(image_size=32, epochs=7, batch_size=4, eval_steps=4, **TINY)  # 2 steps per epoch
    trainer = SurrogateTrainer(config, train, held, tmp_path, progress=False, tensorboard=False, log=lambda s: None)
    assert trainer.epochs_per_evaluation == 2
    result = trainer.fit()
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [2, 4, 6, 7] and result.steps == 14
    assert Surrogate.load(tmp_path / "last.pt").meta["epoch"] == 7
    long_epochs = SurrogateTrainer(TrainConfig(image_size=32, batch_size=4, eval_steps=2, **TINY), train, held,
                                   tmp_path / "other", progress=False, tensorboard=False)
    assert long_epochs.epochs_per_evaluation == 1


def test_training_is_deterministic(pairs, tmp_path):
    def run(folder):
        config = TrainConfig(image_size=32, epochs=1, batch_size=4, seed=5, **TINY)
        trainer = SurrogateTrainer(config, pairs, None, tmp_path / folder, progress=False, tensorboard=False,
                                   log=lambda s: None)
        trainer.fit()
        return trainer.surrogate().predict_channels(pairs.images)

    assert torch.equal(run("a"), run("b"))


def test_pairs_keep_their_targets_as_a_compact_target_batch(pairs):
    targets = pairs.targets
    assert isinstance(targets, TargetBatch) and targets.regions.dtype == torch.int32
    assert targets.saliency.dtype == torch.float32 and targets.mask.dtype == torch.bool
    wide = TargetBatch(targets.saliency, targets.mask, targets.regions.long())
    assert torch.equal(wide.channels(), targets.channels())
    turns, which = torch.tensor([1, 2, 3, 0] * 3)[:len(pairs)], torch.arange(len(pairs)) % 2 == 0
    assert torch.equal(wide.rotate(turns).flip(which).channels(), targets.rotate(turns).flip(which).channels())
    assert targets.nbytes() == len(pairs) * 32 * 32 * (4 + 1 + 4)


def test_a_boundary_gives_the_same_regions_in_numpy_and_in_a_batch():
    """One boundary->regions rule: regions_from_boundary (one numpy map) is TargetBatch.from_channels's
    labelling, renumbered in raster order."""
    g = torch.Generator().manual_seed(0)
    edges = torch.rand(5, 1, 24, 19, generator=g) > 0.6
    edges[1] = True  # all boundary: one segment
    channels = torch.cat([torch.zeros(5, 2, 24, 19), edges.float()], 1)
    batch = TargetBatch.from_channels(channels).regions[:, 0].numpy()
    for i in range(5):
        ours = regions_from_boundary(edges[i, 0].numpy())
        assert ours.dtype == np.uint16 and int(ours[0, 0]) == 0
        pairs = np.unique(np.stack([ours.ravel(), batch[i].ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]  # the same partition
    assert regions_from_boundary(edges[1, 0].numpy()).max() == 0


def test_cpu_component_labelling_equals_the_torch_loop():
    from saliencyssl.target import _label_components_opencv, compact_labels, label_components

    g = torch.Generator().manual_seed(1)
    for density in (0.0, 0.1, 0.4, 0.8, 1.0):
        inside = torch.rand(6, 1, 20, 17, generator=g) > density
        loop = label_components(inside, max_iterations=20 * 17)  # the device-generic torch version
        assert torch.equal(_label_components_opencv(inside), loop)
        assert torch.equal(label_components(inside), loop)
        assert torch.equal(_label_components_opencv(inside, compact=True), compact_labels(loop))


def test_surrogate_keeps_the_best_held_out_epoch(labelled, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(labelled, out, "--epochs", "3") == 0
    best = Surrogate.load(out / "best.pt")
    final = Surrogate.load(out / "surrogate.pt")
    assert final.meta["selected_epoch"] == best.meta["epoch"] <= 3 and final.meta["final_epoch"] == 3
    assert final.meta["select"] == "best" and "selection_score" in final.meta
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(best.predict_channels(images), final.predict_channels(images))
    assert _train(labelled, tmp_path / "last", "--epochs", "2", "--select", "last") == 0
    assert Surrogate.load(tmp_path / "last" / "surrogate.pt").meta["selected_epoch"] == 2


def test_speed_benchmark_compares_with_the_labeller_unless_told_not_to(labelled, tmp_path):
    """benchmarks/bench_surrogate.py: a speed-up against the exact labeller, or none with --labeller-images 0."""
    import bench_surrogate

    images, _, _ = labelled
    common = ["--data", str(images), "--num-images", "4", "--batch-size", "4", "--repeats", "1"]
    assert bench_surrogate.main([*common, "--labeller-images", "2", "--json", str(tmp_path / "with.json")]) == 0
    with_labeller = json.loads((tmp_path / "with.json").read_text())
    assert with_labeller["labeller_images"] == 2 and with_labeller["speedup"] == pytest.approx(
        with_labeller["labeller_ms_per_image"] / with_labeller["surrogate_ms_per_image"])
    assert bench_surrogate.main([*common, "--labeller-images", "0", "--json", str(tmp_path / "without.json")]) == 0
    without = json.loads((tmp_path / "without.json").read_text())
    assert without["surrogate_ms_per_image"] > 0
    assert "labeller_images" not in without and "speedup" not in without
    # the network's FLOPs are those of its architecture (the default U-Net at 32 px), its rate their ratio to its time
    from torch.utils.flop_counter import FlopCounterMode

    from saliencyssl.surrogate.networks import Architecture, UNetGenerator

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        UNetGenerator(Architecture(32))(torch.zeros(1, 3, 32, 32))
    assert without["network_mflop_per_image"] == pytest.approx(counter.get_total_flops() / 1e6)
    assert without["network_gflop_per_second"] == pytest.approx(
        without["network_mflop_per_image"] / without["surrogate_network_ms_per_image"])
    assert len(without["load_average_before_after"]) == 2 and len(without["date"]) == 10
