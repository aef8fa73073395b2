"""scripts/pretrain.py: a real (tiny) run, reproducibility, resume, missing pieces, DDP on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.embedded import write_embedded_dataset
from saliencyssl.eval.features import random_backbone
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.ssl.backbone import load_backbone, uses_cifar_stem
from saliencyssl.app.pretrain import PretrainConfig, Pretrainer
from _paths import REPO
from saliencyssl.app import pretrain


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    paths = write_embedded_dataset(root / "data", per_class_train=8, per_class_test=4, size=32, photos=False)
    labeller = Labeller()
    cache = TargetCache(root / "cache", labeller.fingerprint)
    image_set = open_image_set(paths["train"])
    for i in range(len(image_set)):
        cache.put(image_set.image(i), labeller(image_set.image(i)))
    return {"train": paths["train"], "test": paths["test"], "cache": root / "cache", "root": root}


def _config(shapes, out, **kw) -> PretrainConfig:
    base = dict(data=str(shapes["train"]), out=str(out), method="simclr", aug_source="cache", policy="sal+default",
                epochs=2, batch_size=8, image_size=32, cache=str(shapes["cache"]), progress=False, seed=3)
    base.update(kw)
    return PretrainConfig(**base)


def _weights(path: Path) -> dict:
    model, _ = load_backbone(path)
    return model.state_dict()


@pytest.mark.slow
def test_tiny_run_writes_backbone_history_and_logs(shapes, tmp_path):
    result = Pretrainer(_config(shapes, tmp_path / "run", knn_train=str(shapes["train"]),
                                knn_test=str(shapes["test"]))).run()
    assert result.backbone_path.is_file()
    _, config = load_backbone(result.backbone_path)
    assert config["method"] == "simclr" and config["cifar_stem"] and config["aug_source"] == "cache"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert h["steps"] == 4 and torch.isfinite(torch.tensor(h["loss"]))
        assert set(h["seconds"]) == {"data", "augmentation", "compute", "epoch"}
        assert h["router"]["cache_hits"] == 32
        assert 0.0 <= h["knn_accuracy"] <= 1.0
    assert any((tmp_path / "run" / "tb").iterdir())


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_continues_exactly(shapes, tmp_path):
    a = Pretrainer(_config(shapes, tmp_path / "a")).run().backbone_path
    b = Pretrainer(_config(shapes, tmp_path / "b")).run().backbone_path
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = Pretrainer(_config(shapes, tmp_path / "c", seed=4)).run().backbone_path
    assert not all(torch.equal(wa[k], _weights(c)[k]) for k in wa)

    # Interrupted after epoch 1, then resumed: the same weights as the uninterrupted run.
    first = Pretrainer(_config(shapes, tmp_path / "r"))
    first.history.append(first.train_epoch(0))
    first._save_checkpoint(0)
    resumed = Pretrainer(_config(shapes, tmp_path / "r", resume=True))
    assert resumed.start_epoch == 1
    wr = _weights(resumed.run().backbone_path)
    assert all(torch.allclose(wa[k].float(), wr[k].float(), atol=1e-6) for k in wa)


def test_amp_on_the_cpu_uses_bf16_where_it_is_native(shapes, tmp_path, monkeypatch, capsys):
    import saliencyssl.precision as precision

    monkeypatch.setattr(precision, "_NATIVE_BF16", True)
    run = Pretrainer(_config(shapes, tmp_path / "bf16", amp=True, epochs=1))
    assert run.amp_dtype == torch.bfloat16 and not run.scaler.is_enabled()
    seen = []
    run.method.backbone.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    record = run.train_epoch(0)
    assert seen and set(seen) == {torch.bfloat16} and torch.isfinite(torch.tensor(record.loss))

    monkeypatch.setattr(precision, "_NATIVE_BF16", False)
    plain = Pretrainer(_config(shapes, tmp_path / "fp32", amp=True, epochs=1))
    assert plain.amp_dtype is None
    assert "running in float32" in capsys.readouterr().out


@pytest.mark.parametrize("method, image_size", [("simsiam", 32), ("byol", 96)])
def test_run_starts_from_the_random_backbone_of_its_seed(shapes, tmp_path, method, image_size):
    # `evaluate.py --backbone random --backbone-seed S` must be the exact starting point of `pretrain.py --seed S`
    # (an evaluation compares each run with its own initialisation), whatever is built before the backbone.
    for seed in (3, 4):
        run = Pretrainer(_config(shapes, tmp_path / f"{method}{seed}", method=method, seed=seed,
                                 image_size=image_size))
        initial = random_backbone(seed, cifar_stem=uses_cifar_stem(image_size)).state_dict()
        start = run.method.backbone.state_dict()
        assert start.keys() == initial.keys()
        assert all(torch.equal(start[k], initial[k]) for k in initial)


def test_a_run_fed_by_a_surrogate_starts_from_the_random_backbone_of_its_seed(shapes, tmp_path):
    """The router loads the surrogate after the seeding and before the backbone is built: loading it must not draw
    from the RNG (a generator's initialisation did, so --aug-source surrogate runs started elsewhere)."""
    from saliencyssl.surrogate import Surrogate

    path = Surrogate.fresh(32, LabellerConfig().fingerprint(), ngf=4).save(tmp_path / "surrogate.pt")
    before = torch.get_rng_state()
    Surrogate.load(path)
    assert torch.equal(torch.get_rng_state(), before)
    for source in ("surrogate", "cache,surrogate"):
        run = Pretrainer(_config(shapes, tmp_path / source.replace(",", "_"), aug_source=source,
                                 surrogate=str(path)))
        initial = random_backbone(3, cifar_stem=True).state_dict()
        start = run.method.backbone.state_dict()
        assert all(torch.equal(start[k], initial[k]) for k in initial), source


def test_resume_refuses_another_configuration(shapes, tmp_path):
    run = Pretrainer(_config(shapes, tmp_path / "x", epochs=1))
    run.run()
    with pytest.raises(ValueError, match=r"image_size 32 \(now 40\)"):
        Pretrainer(_config(shapes, tmp_path / "x", epochs=1, image_size=40, resume=True))
    # The restored optimiser would override a new rate; another seed reorders the batches.
    with pytest.raises(ValueError, match=r"lr None \(now 0.5\)"):
        Pretrainer(_config(shapes, tmp_path / "x", epochs=1, lr=0.5, resume=True))
    with pytest.raises(ValueError, match=r"seed 3 \(now 4\)"):
        Pretrainer(_config(shapes, tmp_path / "x", epochs=1, seed=4, resume=True))
    with pytest.raises(ValueError, match="policy 'sal\\+default' \\(now 'default'\\)"):
        Pretrainer(_config(shapes, tmp_path / "x", epochs=1, policy="default", aug_source="none", resume=True))
    with pytest.raises(ValueError, match="already holds a pretrain run"):
        Pretrainer(_config(shapes, tmp_path / "x", epochs=1))  # without --resume: refused, nothing overwritten


def test_resume_without_a_checkpoint_starts_afresh_and_a_damaged_one_is_named(shapes, tmp_path):
    fresh = Pretrainer(_config(shapes, tmp_path / "new", epochs=1, resume=True))
    assert fresh.start_epoch == 0
    fresh.run()
    good = torch.load(tmp_path / "new" / "checkpoint.pt", weights_only=True)
    # crafted fields of a readable checkpoint: one error naming the file, never a traceback or an endless run
    for damage in ({"epoch": -10 ** 9}, {"scheduler": "x"}, {"history": [{"nonsense": 1}]}, {"rng": {"torch": 1}}):
        torch.save({**good, **damage}, tmp_path / "new" / "checkpoint.pt")
        with pytest.raises(ValueError, match=r"new/checkpoint.pt: its saved training state is damaged"):
            Pretrainer(_config(shapes, tmp_path / "new", epochs=1, resume=True))
    torch.save({k: v for k, v in good.items() if k != "method"}, tmp_path / "new" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"new/checkpoint.pt: its saved model is damaged"):
        Pretrainer(_config(shapes, tmp_path / "new", epochs=1, resume=True))
    (tmp_path / "new" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"new/checkpoint.pt cannot be read.*remove it"):
        Pretrainer(_config(shapes, tmp_path / "new", epochs=1, resume=True))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "new" / "checkpoint.pt")  # readable, but something else
    with pytest.raises(ValueError, match="is not a saliency-ssl pretraining checkpoint"):
        Pretrainer(_config(shapes, tmp_path / "new", epochs=1, resume=True))
    # A folder with files but no run record (another tool's, or an older version's) is refused unread.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(b"older")
    with pytest.raises(ValueError, match="holds files but no run.json"):
        Pretrainer(_config(shapes, tmp_path / "old", epochs=1, resume=True))


def test_a_batch_of_one_image_per_process_is_refused(shapes, tmp_path):
    with pytest.raises(ValueError, match="--batch-size 1: every method compares the images of a batch; give 2 or more"):
        Pretrainer(_config(shapes, tmp_path / "one", batch_size=1))


def test_missing_pieces_are_caught_before_the_first_step(shapes, tmp_path, capsys):
    common = ["--data", str(shapes["train"]), "--method", "byol", "--epochs", "1", "--out", str(tmp_path / "m"),
              "--batch-size", "8", "--quiet"]
    assert pretrain.main(common + ["--aug-source", "cache"]) == 2
    assert "need a cache" in capsys.readouterr().err
    assert pretrain.main(common + ["--aug-source", "surrogate"]) == 2
    assert "saliency-ssl train-surrogate" in capsys.readouterr().err
    assert pretrain.main(common + ["--aug-source", "none", "--policy", "sal"]) == 2
    assert "--aug-source is none" in capsys.readouterr().err
    mistyped = tmp_path / "no-such-cache"
    assert pretrain.main(common + ["--aug-source", "cache", "--cache", str(mistyped)]) == 2
    assert "is not a cache folder" in capsys.readouterr().err and not mistyped.exists(), "nothing is created"
    empty = tmp_path / "empty-cache"
    TargetCache(empty, LabellerConfig().fingerprint())
    assert pretrain.main(common + ["--aug-source", "cache", "--cache", str(empty)]) == 2
    assert "miss in the cache" in capsys.readouterr().err


@pytest.mark.slow
def test_method_options_reach_the_method_and_are_recorded(shapes, tmp_path, capsys):
    out = tmp_path / "byol"
    argv = ["--data", str(shapes["train"]), "--method", "byol", "--aug-source", "none", "--policy", "default",
            "--epochs", "1", "--batch-size", "8", "--quiet", "--out", str(out)]
    assert pretrain.main(argv + ["--method-option", "momentum_start=0.9", "--method-option", "momentum_end=0.95"]) == 0
    _, config = load_backbone(out / "backbone.pt")
    assert config["method_options"] == {"momentum_start": 0.9, "momentum_end": 0.95}
    assert config["method_hparams"]["momentum_start"] == 0.9 and config["method_hparams"]["output_dim"] == 256
    # The target network followed the scheduled momentum, which ends at momentum_end.
    trainer = Pretrainer(_config(shapes, tmp_path / "direct", method="byol", aug_source="none", policy="default",
                                 epochs=1, method_options={"momentum_start": 0.9, "momentum_end": 0.95}))
    trainer.run()
    assert trainer.method.current_momentum == pytest.approx(0.95)
    # Resuming with other options is refused; bad options fail before any data is read.
    with pytest.raises(ValueError, match=r"method_options \{'momentum_end': 0.95, 'momentum_start': 0.9\} \(now \{\}\)"):
        Pretrainer(_config(shapes, tmp_path / "direct", method="byol", aug_source="none", policy="default",
                           epochs=1, resume=True))
    Pretrainer(_config(shapes, tmp_path / "direct", method="byol", aug_source="none", policy="default", epochs=1,
                       resume=True, method_options={"momentum_start": 0.9, "momentum_end": 0.95,
                                                    "output_dim": 256}))  # a default given explicitly: the same
    capsys.readouterr()
    assert pretrain.main(argv[:-1] + [str(tmp_path / "bad"), "--method-option", "feature_dim=256"]) == 2
    assert "feature_dim is set by the backbone" in capsys.readouterr().err
    assert pretrain.main(argv[:-1] + [str(tmp_path / "bad"), "--method-option", "tau=0.9"]) == 2
    err = capsys.readouterr().err
    assert "unknown hyperparameter(s) ['tau']" in err and "feature_dim" not in err  # only what may be set is listed
    assert pretrain.main(argv[:-1] + [str(tmp_path / "bad"), "--method-option", "momentum_start"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_method_option_values_are_read_as_json_or_python_literals():
    from saliencyssl.app.pretrain import parse_method_options

    assert parse_method_options(["temperature=0.2", "symmetric=false", "loss_scale=None", "memory-bank-size=8192",
                                 "name=abc"]) == {"temperature": 0.2, "symmetric": False, "loss_scale": None,
                                                  "memory_bank_size": 8192, "name": "abc"}
    with pytest.raises(ValueError, match="given twice"):
        parse_method_options(["temperature=0.2", "temperature=0.3"])


@pytest.mark.parametrize("method", ["simsiam", "byol", "moco", "swav", "barlowtwins"])
def test_every_method_runs_an_epoch(shapes, tmp_path, method):
    result = Pretrainer(_config(shapes, tmp_path / method, method=method, epochs=1)).run()
    assert result.backbone_path.is_file() and torch.isfinite(torch.tensor(result.history[0].loss))


@pytest.mark.slow
def test_two_processes_on_gloo(shapes, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "scripts" / "pretrain.py"), "--data", str(shapes["train"]), "--method", "simclr",
           "--aug-source", "cache", "--cache", str(shapes["cache"]), "--epochs", "1", "--batch-size", "8",
           "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["steps"] == 4, "each of 2 processes takes 4 steps of 4 images"
    # What one process alone would not give: rank 0 served half of the 32 images (its router's counters).
    assert history[0]["router"]["cache_hits"] == 16
    assert (out / "backbone.pt").is_file()


@pytest.mark.slow
def test_epoch_benchmark_times_every_source_in_rotated_rounds(shapes, tmp_path, capsys):
    """benchmarks/bench_epoch.py: each round times every source, starting one source later than the last."""
    import bench_epoch

    out = tmp_path / "bench.json"
    assert bench_epoch.main(["--data", str(shapes["train"]), "--num-images", "8", "--batch-size", "4",
                             "--sources", "none,cache", "--epochs", "1", "--rounds", "2", "--json", str(out)]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("round ")]
    assert [(words[1], words[2]) for words in printed] == [("1/2", "none"), ("1/2", "cache"),
                                                           ("2/2", "cache"), ("2/2", "none")]
    result = json.loads(out.read_text())
    assert [set(r) for r in result["rounds"]] == [{"none", "cache"}] * 2
    for source in ("none", "cache"):
        per_round = [r[source]["epoch"] for r in result["rounds"]]
        assert result["seconds_per_epoch"][source] == pytest.approx(sum(per_round) / 2)  # the median of two
    by_round = [r["cache"]["epoch"] / r["none"]["epoch"] for r in result["rounds"]]
    assert result["ratio_to_none"]["none"] == 1.0
    assert result["ratio_to_none"]["cache"] == pytest.approx(sum(by_round) / 2)


def test_epoch_benchmark_times_detcon_from_its_targets_and_has_no_run_without_them(shapes, tmp_path, capsys):
    """benchmarks/bench_epoch.py --method detcon-simclr: the plain policy is accepted (the targets feed the loss),
    and a run without targets ('none') is refused before anything runs."""
    import bench_epoch

    common = ["--data", str(shapes["train"]), "--num-images", "8", "--batch-size", "4", "--method", "detcon-simclr",
              "--policy", "default", "--epochs", "1", "--rounds", "1"]
    with pytest.raises(SystemExit):
        bench_epoch.main([*common, "--sources", "none,cache"])
    assert "has no run without them" in capsys.readouterr().err
    out = tmp_path / "bench.json"
    assert bench_epoch.main([*common, "--sources", "cache", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "detcon-simclr" and result["seconds_per_epoch"]["cache"] > 0
    assert "ratio_to_none" not in result


@pytest.mark.slow
def test_view_compute_benchmark_times_both_kinds_on_one_model(shapes, tmp_path, capsys):
    """benchmarks/bench_view_compute.py: every counted round trains one step on each stored batch of both kinds."""
    import bench_view_compute

    out = tmp_path / "views.json"
    assert bench_view_compute.main(["--data", str(shapes["train"]), "--cache", str(shapes["cache"]),
                                    "--batch-size", "4", "--batches", "2", "--rounds", "3",
                                    "--json", str(out)]) == 0
    rounds = [line for line in capsys.readouterr().out.splitlines() if line.startswith("round ")]
    assert [line.split()[1] for line in rounds] == ["1/2", "2/2"], "the warm-up round is not reported"
    result = json.loads(out.read_text())
    assert result["steps_per_kind"] == 4, "2 counted rounds of 2 batches"
    medians = result["median_seconds_per_step"]
    assert set(medians) == {"sal", "plain"} and min(medians.values()) > 0
    assert result["ratio_sal_to_plain"] == pytest.approx(medians["sal"] / medians["plain"])


def test_view_compute_benchmark_refuses_more_batches_than_images(shapes, tmp_path):
    import bench_view_compute

    with pytest.raises(SystemExit):
        bench_view_compute.main(["--data", str(shapes["train"]), "--cache", str(shapes["cache"]),
                                 "--batch-size", "64", "--batches", "2"])


@pytest.mark.parametrize("method", ["detcon-simclr", pytest.param("detcon-byol", marks=pytest.mark.slow)])
def test_detcon_reads_the_cache_under_a_policy_without_saliency_views(shapes, tmp_path, method):
    run = Pretrainer(_config(shapes, tmp_path / method, method=method, policy="default", epochs=1))
    assert run.router.sources == ("cache",), "the method needs targets, so the router is consulted"
    seen = []
    loss_of = run.method.training_loss

    def recorded(view_a, view_b, targets_a=None, targets_b=None):
        seen.append((view_a.shape, targets_a, targets_b))
        return loss_of(view_a, view_b, targets_a, targets_b)

    run.method.training_loss = recorded  # what train_step hands the model
    result = run.run()
    assert len(seen) == 4 and torch.isfinite(torch.tensor(result.history[0].loss))
    for shape, targets_a, targets_b in seen:
        for warped in (targets_a, targets_b):
            assert warped.regions.shape == (8, 1, 32, 32) and warped.regions.dtype == torch.int64
            assert warped.mask.shape == (8, 1, 32, 32) and warped.mask.dtype == torch.bool
        assert not torch.equal(targets_a.regions, targets_b.regions), "each view's own crop and flip"
    assert result.history[0].router["cache_hits"] == 32
    _, config = load_backbone(result.backbone_path)
    assert config["method"] == method and config["aug_source"] == "cache"
    assert config["method_hparams"]["num_masks"] == 16 and config["method_hparams"]["temperature"] == 0.1
    # A method without targets under the same policy still leaves the cache alone.
    assert Pretrainer(_config(shapes, tmp_path / "plain", policy="default")).router.sources == ("none",)


def test_detcon_from_the_command_line_and_without_targets(shapes, tmp_path, capsys):
    common = ["--data", str(shapes["train"]), "--method", "detcon-simclr", "--policy", "default", "--epochs", "1",
              "--batch-size", "8", "--quiet"]
    assert pretrain.main(common + ["--aug-source", "none", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--method detcon-simclr pools its loss over each view's masks" in err and "--aug-source cache" in err
    assert not (tmp_path / "none").exists()
    out = tmp_path / "detcon"
    assert pretrain.main(common + ["--aug-source", "cache", "--cache", str(shapes["cache"]), "--out", str(out),
                                   "--method-option", "masks=foreground", "--method-option", "num_masks=4"]) == 0
    _, config = load_backbone(out / "backbone.pt")
    assert config["method"] == "detcon-simclr" and config["method_options"] == {"masks": "foreground", "num_masks": 4}


def test_a_run_that_fails_while_it_is_set_up_closes_its_router(tmp_path, monkeypatch):
    from saliencyssl.app.rundir import RunDir
    from saliencyssl.augment.router import TargetRouter

    data = write_embedded_dataset(tmp_path / "data", per_class_train=2, per_class_test=1, size=32, photos=False)
    closed = []
    monkeypatch.setattr(TargetRouter, "close", lambda self: closed.append(self))

    def full_disk(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(RunDir, "start", full_disk)
    with pytest.raises(OSError, match="no space left"):
        Pretrainer(PretrainConfig(data=str(data["train"]), out=str(tmp_path / "run"), method="simclr",
                                  policy="default", aug_source="none", epochs=1, batch_size=4, progress=False,
                                  tensorboard=False))
    assert len(closed) == 1, "the router (and any labelling workers it started) is closed"


def test_a_resumed_moco_run_keeps_its_queue_of_negatives(shapes, tmp_path):
    """lightly keeps MoCo's queue out of the state dict: a resumed run scored its next batches against noise."""
    from saliencyssl.app.pretrain import _unsaved_buffers

    config = dict(method="moco", policy="default", aug_source="none", epochs=2)
    first = Pretrainer(_config(shapes, tmp_path / "m", **config))
    fresh = {name: b.clone() for name, b in _unsaved_buffers(first.method).items()}
    assert any("bank" in name for name in fresh), "MoCo's queue is a buffer outside the state dict"
    first.history.append(first.train_epoch(0))
    first._save_checkpoint(0)
    trained = _unsaved_buffers(first.method)
    assert not all(torch.equal(fresh[name], trained[name]) for name in fresh), "the epoch filled the queue"
    resumed = Pretrainer(_config(shapes, tmp_path / "m", resume=True, **config))
    restored = _unsaved_buffers(resumed.method)
    assert all(torch.equal(trained[name], restored[name]) for name in trained)


def test_the_knn_monitor_refuses_sets_an_evaluation_would_refuse(shapes, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(shapes["test"], other)
    first = sorted(p for p in other.iterdir() if p.is_dir())[0]
    first.rename(other / "renamed")
    with pytest.raises(ValueError, match="classes"):
        Pretrainer(_config(shapes, tmp_path / "a", knn_train=str(shapes["train"]), knn_test=str(other)))
    with pytest.raises(ValueError, match="also in the train set"):
        Pretrainer(_config(shapes, tmp_path / "b", knn_train=str(shapes["train"]), knn_test=str(shapes["train"])))
