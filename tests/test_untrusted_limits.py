"""Checkpoints and counts from others are bounded before anything is allocated, and refused in one line.

A crafted surrogate or backbone checkpoint, a digit too many in a count, a width option, a learning
rate or a grid config value must end in one error that names the file (or the option, or the key),
never in a traceback or an allocation of tens of gigabytes. The tests that would allocate such
memory on the code before these checks replace the constructor in question by one that fails, so
they fail cleanly there instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from saliencyssl.surrogate.model import Surrogate, SurrogateCheckpointError, checkpoint_dict, save_checkpoint

FINGERPRINT = "0123456789abcdef"


# -- surrogate checkpoints -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def surrogate_blob() -> dict:
    """The dict of a real (untrained) 32 px surrogate checkpoint."""
    surrogate = Surrogate.fresh(32, FINGERPRINT)
    return checkpoint_dict(surrogate.generator, FINGERPRINT, None)


def _save(path: Path, blob: dict, **changes) -> Path:
    save_checkpoint(path, {**blob, **changes})
    return path


def _no_generator_built(monkeypatch):
    """Make building the generator inside Surrogate.load fail the test: a refusal must come first."""
    import saliencyssl.surrogate.model as model

    def refuse(*args, **kwargs):
        raise AssertionError("Surrogate.load built the generator of a record it should have refused")

    monkeypatch.setattr(model, "UNetGenerator", refuse)


def test_the_architecture_bounds_live_in_one_place():
    """Architecture refuses widths beyond ARCH_LIMITS, and the training config reads the same table."""
    from saliencyssl.surrogate.networks import ARCH_LIMITS, Architecture
    from saliencyssl.surrogate.training import WIDTH_LIMITS, TrainConfig, TrainConfigError

    assert ARCH_LIMITS == {"ngf": 512, "ndf": 512, "max_mult": 64, "head": 1024, "dropout_blocks": 64}
    assert all(WIDTH_LIMITS[name] == high for name, high in ARCH_LIMITS.items())
    for name, high in ARCH_LIMITS.items():
        assert getattr(Architecture(32, **{name: high}), name) == high
        with pytest.raises(ValueError, match=f"{name} = {high + 1} is above the limit of {high}"):
            Architecture(32, **{name: high + 1})
        with pytest.raises(TrainConfigError, match=name):
            TrainConfig(**{name: high + 1})
    with pytest.raises(ValueError, match="ngf must be a whole number, got '16'"):
        Architecture(32, ngf="16")
    with pytest.raises(ValueError, match="image_size must be from 8 to 1024"):
        Architecture(8192)


def test_training_refuses_a_generator_its_checkpoint_could_not_be_loaded_with():
    """Widths within the limits at 256 px make generators above what Surrogate.load accepts: such a run trained to
    the end and left a surrogate.pt every stage refused."""
    from saliencyssl.surrogate.networks import MAX_GENERATOR_PARAMETERS
    from saliencyssl.surrogate.training import TrainConfig, TrainConfigError

    assert TrainConfig(image_size=256, ngf=64).ngf == 64  # 54 M parameters
    with pytest.raises(TrainConfigError, match=f"217,660,098 parameters, more than the {MAX_GENERATOR_PARAMETERS:,}"):
        TrainConfig(image_size=256, ngf=128)


@pytest.mark.parametrize("arch_change, message", [
    ({"ngf": 4096}, "ngf = 4096 is above the limit of 512"),
    ({"head": 10 ** 7}, "head = 10000000 is above the limit of 1024"),
    ({"max_mult": 10 ** 6}, "max_mult = 1000000 is above the limit of 64"),
    ({"ngf": "16"}, "ngf must be a whole number"),
])
def test_a_record_claiming_a_huge_generator_is_refused_before_building(tmp_path, surrogate_blob, monkeypatch,
                                                                       arch_change, message):
    path = _save(tmp_path / "evil.pt", surrogate_blob, arch={**surrogate_blob["arch"], **arch_change})
    _no_generator_built(monkeypatch)
    with pytest.raises(SurrogateCheckpointError, match=f"evil.pt.*{message}"):
        Surrogate.load(path)


def test_a_record_within_the_bounds_must_match_the_weights_before_building(tmp_path, surrogate_blob, monkeypatch):
    """The widest architecture the bounds allow (tens of GB of weights) is compared with the file's own
    weights shape by shape, without allocating it."""
    arch = {**surrogate_blob["arch"], "ngf": 512, "max_mult": 64, "ndf": 512, "head": 1024}
    path = _save(tmp_path / "wide.pt", surrogate_blob, arch=arch)
    _no_generator_built(monkeypatch)
    with pytest.raises(SurrogateCheckpointError, match=r"wide.pt: the generator weights do not fit the recorded "
                                                       r"architecture .*: down.0.0.weight has shape \(16, 3, 4, 4\), "
                                                       r"it needs \(512, 3, 4, 4\)"):
        Surrogate.load(path)
    # the same weights under their own architecture, one tensor reshaped
    weights = dict(surrogate_blob["generator"])
    weights["down.0.0.weight"] = torch.zeros(1)
    path = _save(tmp_path / "shape.pt", surrogate_blob, generator=weights)
    with pytest.raises(SurrogateCheckpointError, match=r"shape.pt: the generator weights do not fit .*: "
                                                       r"down.0.0.weight has shape \(1,\)"):
        Surrogate.load(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_surrogate_weights_are_refused_naming_the_file(tmp_path, surrogate_blob, value):
    weights = {k: v.clone() for k, v in surrogate_blob["generator"].items()}
    weights["head.3.bias"][0] = value
    path = _save(tmp_path / "diverged.pt", surrogate_blob, generator=weights)
    with pytest.raises(SurrogateCheckpointError, match="diverged.pt: generator weight head.3.bias holds 1 NaN or "
                                                       "infinite value"):
        Surrogate.load(path)
    # the good weights load, and predict
    good = _save(tmp_path / "good.pt", surrogate_blob)
    assert Surrogate.load(good).predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).mask.shape == (1, 1, 32, 32)


@pytest.mark.parametrize("changes, message", [
    ({"image_size": "32"}, "image_size must be a whole number of pixels from 8 to 1024, the file says '32'"),
    ({"fingerprint": 5}, "fingerprint must be the labeller fingerprint as text"),
    ({"meta": [1, 2]}, "meta must be a dict"),
    ({"arch": [1, 2]}, "the architecture record is list"),
    ({"generator": [1]}, "generator must be a dict of named tensors"),
])
def test_surrogate_record_fields_of_the_wrong_type_are_one_error(tmp_path, surrogate_blob, changes, message):
    path = _save(tmp_path / "odd.pt", surrogate_blob, **changes)
    with pytest.raises(SurrogateCheckpointError, match=f"odd.pt: {message}"):
        Surrogate.load(path)


# -- backbone checkpoints --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_state() -> dict:
    from saliencyssl.ssl.backbone import resnet18_backbone

    torch.manual_seed(0)
    return {k: v.clone() for k, v in resnet18_backbone(cifar_stem=True).state_dict().items()}


def _backbone(path: Path, state, config) -> Path:
    torch.save({"state_dict": state, "config": config}, path)
    return path


@pytest.mark.parametrize("image_size", [100_000, 1500, "abc", -5, True])
def test_a_backbone_config_image_size_is_bounded_and_names_the_file(tmp_path, resnet_state, image_size):
    from saliencyssl.eval.features import backbone_identity, open_backbone
    from saliencyssl.ssl.backbone import BackboneCheckpointError

    path = _backbone(tmp_path / "bb.pt", resnet_state, {"cifar_stem": True, "image_size": image_size})
    with pytest.raises(BackboneCheckpointError, match="bb.pt: config image_size must be a whole number of pixels "
                                                      "from 8 to 1024"):
        open_backbone(path)
    with pytest.raises(BackboneCheckpointError, match="bb.pt"):
        backbone_identity(path)


@pytest.mark.parametrize("blob, message", [
    ({"state_dict": {}, "config": [1, 2]}, "the backbone config must be a dict"),
    ({"state_dict": [1], "config": {"cifar_stem": True}}, "state_dict must be a dict of named tensors"),
    ({"state_dict": {}, "config": {"cifar_stem": "yes"}}, "config cifar_stem must be true or false"),
    ({"state_dict": {"conv1.weight": torch.zeros(1)}, "config": {"cifar_stem": True}},
     r"the weights do not fit a ResNet-18 with cifar_stem=True \(missing"),
])
def test_crafted_backbones_are_one_error_naming_the_file(tmp_path, blob, message):
    from saliencyssl.ssl.backbone import BackboneCheckpointError, load_backbone

    path = tmp_path / "crafted.pt"
    torch.save(blob, path)
    with pytest.raises(BackboneCheckpointError, match=f"crafted.pt: {message}"):
        load_backbone(path)


def test_non_finite_backbone_weights_are_refused(tmp_path, resnet_state):
    from saliencyssl.ssl.backbone import BackboneCheckpointError, load_backbone

    state = dict(resnet_state)  # a copy: the fixture's tensors stay finite
    state["layer1.0.conv1.weight"] = torch.full_like(resnet_state["layer1.0.conv1.weight"], float("nan"))
    path = _backbone(tmp_path / "nan.pt", state, {"cifar_stem": True, "image_size": 32})
    with pytest.raises(BackboneCheckpointError, match="nan.pt: weight layer1.0.conv1.weight holds NaN"):
        load_backbone(path)
    good = _backbone(tmp_path / "good.pt", resnet_state, {"cifar_stem": True, "image_size": 32})
    model, config = load_backbone(good)
    assert config["image_size"] == 32 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("stage", ["evaluate", "segment"])
def test_evaluate_and_segment_name_a_crafted_backbone_in_one_line(tmp_path, resnet_state, capsys, stage):
    from saliencyssl.app import evaluate, segment

    path = _backbone(tmp_path / "crafted.pt", resnet_state, {"cifar_stem": True, "image_size": "abc"})
    for folder in ("test", "masks"):
        (tmp_path / folder).mkdir()
    if stage == "evaluate":
        code = evaluate.main(["--backbone", str(path), "--test", str(tmp_path / "test"), "--protocol", "kmeans",
                              "--clusters", "2", "--out", str(tmp_path / "out"), "--quiet"])
    else:
        code = segment.main(["--backbone", str(path), "--images", str(tmp_path / "test"), "--masks",
                             str(tmp_path / "masks"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "crafted.pt: config image_size" in err


@pytest.mark.parametrize("stage", ["evaluate", "segment"])
def test_running_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys, stage):
    from saliencyssl.app import evaluate, segment

    module = evaluate if stage == "evaluate" else segment

    def exhaust(*args, **kwargs):
        raise MemoryError("Unable to allocate 28.0 TiB for an array")

    monkeypatch.setattr(module, "run", exhaust)
    (tmp_path / "images").mkdir()
    if stage == "evaluate":
        argv = ["--backbone", "random", "--test", str(tmp_path / "images"), "--protocol", "kmeans", "--clusters", "2",
                "--out", str(tmp_path / "out")]
    else:
        argv = ["--backbone", "random", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "images"),
                "--out", str(tmp_path / "out")]
    code = module.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: out of memory: Unable to allocate 28.0 TiB")
    assert len(err.strip().splitlines()) == 1


# -- counts ----------------------------------------------------------------------------------------
def _evaluate_config(tmp_path, **changes):
    from saliencyssl.app.evaluate import EvaluateConfig

    return EvaluateConfig(backbone="random", test=str(tmp_path / "test"), out=tmp_path / "out", protocols="kmeans",
                          **changes)


def test_evaluate_caps_its_seeds_and_checks_its_numbers(tmp_path):
    from saliencyssl.eval.classification import MAX_SEEDS

    assert MAX_SEEDS == 1000 and _evaluate_config(tmp_path, seeds=MAX_SEEDS).seeds == MAX_SEEDS
    for seeds in (10 ** 12, MAX_SEEDS + 1, 0):
        with pytest.raises(ValueError, match=f"--seeds {seeds}: give a whole number from 1 to 1000"):
            _evaluate_config(tmp_path, seeds=seeds)
    for flag, field in (("--knn-temperature", "knn_temperature"), ("--probe-c", "probe_c")):
        for value in (math.inf, math.nan, 0.0):
            with pytest.raises(ValueError, match=f"{flag} .*: give a finite positive number"):
                _evaluate_config(tmp_path, **{field: value})
    with pytest.raises(ValueError, match="--backbone-seed"):
        _evaluate_config(tmp_path, backbone_seed=2 ** 70)


def test_evaluate_refuses_a_seed_count_in_one_line(tmp_path, capsys):
    from saliencyssl.app import evaluate

    code = evaluate.main(["--backbone", "random", "--test", str(tmp_path / "test"), "--protocol", "kmeans", "--seeds",
                          "1000000000000", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: --seeds 1000000000000: give a whole number from 1 to 1000"


def test_segment_caps_epochs_and_learning_rates(tmp_path):
    from saliencyssl.app.segment import SegmentConfig
    from saliencyssl.ssl.method import MAX_EPOCHS

    def config(**changes):
        return SegmentConfig(backbone="random", images=str(tmp_path / "images"), masks=str(tmp_path / "masks"),
                             out=tmp_path / "out", **changes)

    assert config(epochs=MAX_EPOCHS).epochs == MAX_EPOCHS == 100_000
    with pytest.raises(ValueError, match="--epochs 1000000000000: give a whole number from 1 to 100000"):
        config(epochs=10 ** 12)
    for value in (1e308, math.inf, math.nan):
        with pytest.raises(ValueError, match="--lr .*: give a positive learning rate, finite and at most 100"):
            config(lr=value)
    with pytest.raises(ValueError, match="--encoder-lr"):
        config(encoder_lr=1e308)


def _pretrain_config(tmp_path, **changes):
    from saliencyssl.app.pretrain import PretrainConfig

    return PretrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), policy="default",
                          aug_source="none", **changes)


def test_pretrain_caps_epochs_seed_and_learning_rate_at_config_time(tmp_path):
    assert _pretrain_config(tmp_path, epochs=100_000, lr=100.0).lr == 100.0
    with pytest.raises(ValueError, match="--epochs 1000000000000: give a whole number from 1 to 100000"):
        _pretrain_config(tmp_path, epochs=10 ** 12)
    for lr in (1e308, math.inf, math.nan, 0.0, -0.1):
        with pytest.raises(ValueError, match=r"--lr .*: give a finite peak learning rate above 0 and at most 100"):
            _pretrain_config(tmp_path, lr=lr)
    with pytest.raises(ValueError, match="--seed"):
        _pretrain_config(tmp_path, seed=2 ** 64)
    with pytest.raises(ValueError, match="--batch-size"):
        _pretrain_config(tmp_path, batch_size=10 ** 9)


def test_pretrain_refuses_an_overflowing_rate_in_one_line_before_reading_data(tmp_path, capsys):
    from saliencyssl.app import pretrain

    code = pretrain.main(["--data", str(tmp_path / "missing"), "--method", "simclr", "--aug-source", "none",
                          "--policy", "default", "--epochs", "1", "--lr", "1e308", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--lr 1e+308" in err and "missing" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# -- Dask LocalCluster -----------------------------------------------------------------------------
def _no_cluster(*args, **kwargs):
    raise AssertionError("a LocalCluster was started for a worker count that should have been refused")


def test_a_local_cluster_is_capped_before_dask_starts(monkeypatch):
    import os

    from saliencyssl.cache import executors

    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(distributed, "LocalCluster", _no_cluster)
    limit = 4 * (os.cpu_count() or 1)
    for address in ("local:100000", f"local:{limit + 1}", "local:0", "local:x", "local:" + "9" * 5000, "local:²"):
        with pytest.raises(ValueError, match=f"local:N needs N, the number of worker processes, a whole number from "
                                             f"1 to {limit}"):
            executors.make_executor(scheduler=address)
    assert executors.local_cluster_workers(f"local:{limit}") == limit
    assert executors.local_cluster_workers("tcp://host:8786") is None


def test_label_refuses_a_huge_local_cluster_in_one_line(tmp_path, capsys, monkeypatch):
    from saliencyssl.app import label

    monkeypatch.setattr(pytest.importorskip("distributed"), "LocalCluster", _no_cluster)
    (tmp_path / "images").mkdir()
    code = label.main([str(tmp_path / "images"), "--cache", str(tmp_path / "cache"), "--scheduler", "local:100000"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: scheduler local:100000: local:N needs N") and "Traceback" not in err


# -- method options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method, options, message", [
    ("simclr", {"projection_hidden_dim": 100_000_000}, "projection_hidden_dim must be an int >= 1 and <= 65,536"),
    ("simclr", {"output_dim": 100_000_000}, "output_dim must be an int >= 1 and <= 65,536"),
    ("simclr", {"projection_layers": 100_000}, "projection_layers must be an int >= 2 and <= 16"),
    ("simsiam", {"prediction_hidden_dim": 10 ** 9}, "prediction_hidden_dim must be an int >= 1 and <= 65,536"),
    ("byol", {"projection_hidden_dim": 10 ** 9}, "projection_hidden_dim must be an int >= 1 and <= 65,536"),
    ("moco", {"memory_bank_size": 10 ** 9}, "memory_bank_size must be an int >= 1 and <= 1,048,576"),
    ("swav", {"n_prototypes": 10 ** 9}, "n_prototypes must be an int >= 2 and <= 65,536"),
    ("swav", {"sinkhorn_iterations": 10 ** 9}, "sinkhorn_iterations must be an int >= 1 and <= 1,000"),
    ("swav", {"freeze_prototypes_epochs": 10 ** 12}, "freeze_prototypes_epochs must be an int >= 0 and <= 100,000"),
    ("barlowtwins", {"output_dim": 10 ** 9}, "output_dim must be an int >= 2 and <= 65,536"),
    ("detcon-simclr", {"num_masks": 10 ** 6}, "num_masks must be an int >= 1 and <= 256"),
    ("detcon-byol", {"feature_upsample": 10 ** 6}, "feature_upsample must be an int >= 1 and <= 32"),
    # each within its bound, together too much: heads, queue or per-step matrix past 1 GiB of float32
    ("simclr", {"projection_hidden_dim": 65_536, "projection_layers": 16}, "ask for 60,171,485,184 float32 values"),
    ("moco", {"output_dim": 65_536, "memory_bank_size": 1_048_576}, r"ask for .* float32 values .*256.3 GiB"),
    ("barlowtwins", {"output_dim": 65_536}, r"output_dim=65536 ask for .* float32 values"),
    ("detcon-byol", {"projection_hidden_dim": 65_536, "output_dim": 65_536}, "ask for"),
])
def test_method_options_cannot_ask_for_unbounded_memory(method, options, message):
    from saliencyssl.ssl.registry import check_method_options

    with pytest.raises(ValueError, match=f"{method}: .*{message}"):
        check_method_options(method, options)


@pytest.mark.parametrize("method, options", [
    ("barlowtwins", {"projection_hidden_dim": 8192, "output_dim": 8192}),  # Barlow Twins' ImageNet head
    ("moco", {"memory_bank_size": 65_536}),                                 # MoCo v2's queue
    ("swav", {"n_prototypes": 3000}),                                       # SwAV's ImageNet prototypes
    ("simclr", {"projection_layers": 3, "projection_hidden_dim": 2048}),    # SimCLR v2
])
def test_published_recipes_stay_within_the_bounds(method, options):
    from saliencyssl.ssl.registry import METHODS, check_method_options

    for name in METHODS:  # every method's defaults
        check_method_options(name, {})
    assert {k: check_method_options(method, options)[k] for k in options} == options


def test_pretrain_names_a_huge_method_option_in_one_line(tmp_path, capsys):
    from saliencyssl.app import pretrain

    code = pretrain.main(["--data", str(tmp_path / "missing"), "--method", "simclr", "--aug-source", "none",
                          "--policy", "default", "--epochs", "1", "--method-option",
                          "projection_hidden_dim=100000000", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "simclr: projection_hidden_dim must be an int >= 1 and <= 65,536" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["temperature=" + "x" * 100_000, "x" * 100_000 + "=1", "masks=" + "y" * 100_000,
                                    "no_equals_sign" * 10_000])
def test_pretrain_quotes_a_long_method_option_cut_short(tmp_path, capsys, option):
    """A refusal names the value it refused in at most a line, not the megabyte a script passed."""
    from saliencyssl.app import pretrain

    code = pretrain.main(["--data", str(tmp_path / "missing"), "--method", "detcon-simclr", "--aug-source", "none",
                          "--policy", "default", "--epochs", "1", "--method-option", option,
                          "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "..." in err and len(err) < 1000, err[:300]


# -- grid configs ------------------------------------------------------------------------------------
def _grid(tmp_path: Path, **overrides) -> Path:
    config = {"name": "t", "out": str(tmp_path / "grid"), "train": str(tmp_path / "train"),
              "test": str(tmp_path / "test"), "cache": str(tmp_path / "cache"), "methods": ["simclr"],
              "policies": ["default"], "pretrain": {"epochs": 1, "batch_size": 2, "limit": 4},
              "evaluation": {"seeds": 1}, **overrides}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("overrides, message", [
    ({"pretrain": {"batch_size": "x", "limit": 4}}, "pretrain.batch_size must be a whole number, got 'x'"),
    ({"pretrain": {"limit": 4.5}}, "pretrain.limit must be a whole number or null, got 4.5"),
    ({"pretrain": {"epochs": 10 ** 15}}, "pretrain.epochs is 1000000000000000; give a whole number from 1 to 100,000"),
    ({"pretrain": {"lr": "fast"}}, "pretrain.lr must be a number or null"),
    ({"pretrain": {"lr": 1e308, "epochs": 1, "batch_size": 2}}, "--lr 1e\\+308"),
    ({"evaluation": {"seeds": 10 ** 12}}, "evaluation.seeds is 1000000000000; give a whole number from 1 to 1,000"),
    ({"evaluation": {"no_cache": "yes"}}, "evaluation.no_cache must be true or false"),
    ({"pretrain_seeds": list(range(100_000))}, "pretrain_seeds lists 100000 seeds; give at most 100"),
    ({"pretrain_seeds": [2 ** 64]},
     "pretrain_seeds must be a non-empty list of distinct integers from 0 to 4294967295"),
    ({"methods": [["simclr"]]}, r"methods must be a list of names \(text\), got \['simclr'\] in it"),
    ({"policies": [1]}, "policies must be a list of names"),
    ({"methods": [], "policies": [], "cells": [[1, "default"]]}, "cells must be \\[method, policy\\] pairs of names"),
    ({"baselines": ["x"]}, "baselines 'x' is not one this grid knows"),
    ({"evaluation_name": "../../escaped"}, "evaluation_name must be a folder name inside out"),
    ({"method_options": {"simclr": {"projection_hidden_dim": 10 ** 8}}},
     "method_options: simclr: projection_hidden_dim must be an int >= 1 and <= 65,536"),
])
def test_grid_config_values_are_checked_naming_the_file_and_key(tmp_path, overrides, message):
    from saliencyssl.app.grid import GridConfig

    assert GridConfig.load(_grid(tmp_path)).methods == ["simclr"]  # the config without the change loads
    with pytest.raises(ValueError, match=f"grid.json: {message}"):
        GridConfig.load(_grid(tmp_path, **overrides))


def test_a_grid_config_that_is_not_utf8_is_named_in_one_line(tmp_path, capsys):
    from saliencyssl.app import grid

    path = tmp_path / "latin.json"
    path.write_bytes(b"\xff\xfe{}")
    assert grid.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: {path}: not UTF-8 text (byte b'\\xff' at offset 0); a grid config is a JSON "
                           f"file, see configs/ for examples")
