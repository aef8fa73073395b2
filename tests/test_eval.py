"""Tests of downstream evaluation: label fractions, linear probe, kNN, k-means, feature cache and
``scripts/evaluate.py``.

Generated images and synthetic features cover everything without shared data; the CIFAR-10 tests
(random backbone above chance, label-shuffled run at chance) need ``../shared`` beside the checkout (or
``$SALIENCYSSL_SHARED``) and skip with the reason when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saliencyssl.datasets import open_image_set
from saliencyssl.eval import clustering, features as feats, fractions as frac, knn, probe, results as report
from saliencyssl.ssl.backbone import save_backbone

from _paths import MISSING_REASON, REPO, SHARED
from saliencyssl.app import evaluate

CIFAR = SHARED / "data" / "cifar10"
needs_cifar = pytest.mark.skipif(not (CIFAR / "train").is_dir() or not (CIFAR / "test").is_dir(),
                                 reason=MISSING_REASON.format(path=SHARED / "data"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_images(root: Path, per_class: int, classes=("red", "green", "blue"), size: int = 32, seed: int = 0,
                  labelled: bool = True) -> Path:
    """Class sub-folders of noisy images whose dominant colour is the class."""
    import cv2

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
            image[:, :, c] = np.clip(image[:, :, c].astype(int) + 150, 0, 255)
            cv2.imwrite(str(folder / f"{name}_{i:03d}.png"), image[:, :, ::-1])
    return root


def _blobs(n_per_class: int, n_classes: int, dim: int = 32, spread: float = 0.3, seed: int = 0, point_seed=None):
    """Gaussian blobs around ``n_classes`` centres (from ``seed``); points from ``point_seed`` (default: ``seed``)."""
    centres = np.random.default_rng(seed).normal(size=(n_classes, dim)) * 3
    rng = np.random.default_rng(seed if point_seed is None else point_seed + 1000)
    x = np.concatenate([centres[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x.astype(np.float32), y


# ------------------------------------------------------------------------------------ fractions
def test_parse_fractions_keeps_text_and_rejects_bad_values():
    assert frac.parse_fractions("0.1, 0.50,1") == [("0.1", 0.1), ("0.50", 0.5), ("1", 1.0)]
    for bad, words in (("0", "outside (0, 1]"), ("1.5", "outside (0, 1]"), ("-0.2", "outside"), ("abc", "not a number"),
                       ("0.1,0.10", "repeats"), ("0.1,,0.2", "comma-separated"), ("nan", "outside")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
            frac.parse_fractions(bad)


def test_balanced_subset_counts_per_class_and_seeds():
    labels = np.repeat(np.arange(4), [100, 100, 100, 100])
    for fraction, expected in ((0.1, 10), (0.25, 25), (1.0, 100), (0.001, 1)):
        idx = frac.balanced_subset(labels, fraction, seed=0)
        assert np.array_equal(np.bincount(labels[idx], minlength=4), [expected] * 4)
        assert np.array_equal(idx, np.unique(idx))  # sorted, no repeats
    a, b = frac.balanced_subset(labels, 0.1, seed=0), frac.balanced_subset(labels, 0.1, seed=1)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, frac.balanced_subset(labels, 0.1, seed=0))
    # nested across fractions for one seed
    assert set(a) <= set(frac.balanced_subset(labels, 0.3, seed=0))
    # unequal classes: each keeps its own share, at least one
    uneven = np.repeat(np.arange(3), [50, 20, 3])
    counts = np.bincount(uneven[frac.balanced_subset(uneven, 0.1, seed=3)], minlength=3)
    assert counts.tolist() == [5, 2, 1]
    with pytest.raises(ValueError, match="unlabelled"):
        frac.balanced_subset(np.array([0, 1, -1]), 0.5, 0)


def test_sweep_reports_mean_std_and_counts():
    labels = np.repeat(np.arange(2), 10)
    out = frac.sweep(labels, frac.parse_fractions("0.5,1.0"), [0, 1, 2],
                     lambda idx, seed: {"accuracy": float(seed) + len(idx) / 100})
    assert [e.fraction for e in out] == ["0.5", "1.0"]
    assert [e.n_labelled for e in out] == [10, 20]
    assert out[0].mean("accuracy") == pytest.approx(1.1)
    assert out[1].std("accuracy") == pytest.approx(np.std([0, 1, 2]))


# -------------------------------------------------------------------------- probe, kNN, k-means
def test_probe_and_knn_separate_blobs_and_fail_on_shuffled_labels():
    x, y = _blobs(60, 5, spread=2.0, seed=0)
    xt, yt = _blobs(40, 5, spread=2.0, seed=0, point_seed=1)  # fresh points around the same centres
    assert probe.linear_probe_accuracy(x, y, xt, yt) > 0.95
    assert knn.knn_accuracy(x, y, xt, yt, num_classes=5) > 0.95
    shuffled = np.random.default_rng(0).permutation(y)
    assert probe.linear_probe_accuracy(x, shuffled, xt, yt) < 0.35  # chance: 0.2
    assert knn.knn_accuracy(x, shuffled, xt, yt, num_classes=5) < 0.35


def test_knn_caps_k_at_bank_size_and_uses_similarity_weights():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.05, 1]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    # k=200 > 5 labelled: all vote, but the two close class-0 neighbours outweigh three far class-1 ones
    predictions = knn.knn_predictions(bank, labels, np.array([[1, 0.02], [0.02, 1]], np.float32), num_classes=2)
    assert predictions.tolist() == [0, 1]


def test_kmeans_recovers_separated_clusters():
    x, y = _blobs(50, 4, dim=16, spread=0.1, seed=1)
    result = clustering.kmeans_clusters(x, 4, y, seed=0)
    assert result.nmi > 0.95 and result.ari > 0.95
    assert result.assignments.shape == (200,)
    unlabelled = clustering.kmeans_clusters(x, 4, None, seed=0)
    assert unlabelled.nmi is None and unlabelled.ari is None
    noise = clustering.kmeans_clusters(np.random.default_rng(0).normal(size=(200, 16)), 4, y, seed=0)
    assert noise.nmi < 0.1 and abs(noise.ari) < 0.1
    with pytest.raises(ValueError, match="give another number of clusters"):
        clustering.kmeans_clusters(x, 1, y)


def test_tsne_map_subsamples():
    x, _ = _blobs(30, 3, dim=8)
    idx, emb = clustering.tsne_map(x, max_points=40, seed=0)
    assert len(idx) == 40 and emb.shape == (40, 2) and np.isfinite(emb).all()


# ------------------------------------------------------------------------------ features, cache
def test_random_backbone_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = feats.random_backbone(0, True)
    assert torch.rand(1) == expected
    b, c = feats.random_backbone(0, True), feats.random_backbone(1, True)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    model, info = feats.load_frozen_backbone("random", None, seed=0)
    assert info.image_size == 32 and info.config["cifar_stem"] is True and not model.training
    _, big = feats.load_frozen_backbone("random", 128, seed=0)
    assert big.config["cifar_stem"] is False
    _, forced = feats.load_frozen_backbone("random", 128, seed=0, stem="cifar")
    assert forced.config["cifar_stem"] is True and forced.identity != big.identity


def test_feature_cache_hit_and_invalidation(tmp_path, monkeypatch):
    images = open_image_set(_write_images(tmp_path / "imgs", per_class=3))
    checkpoint = tmp_path / "run" / "backbone.pt"
    save_backbone(checkpoint, feats.random_backbone(0, True), {"cifar_stem": True, "image_size": 32})
    cache = feats.FeatureCache(tmp_path / "cache")

    model, info = feats.load_frozen_backbone(checkpoint)
    first = feats.dataset_features(images, model, info, cache, batch_size=4, name="t")
    assert not first.hit and first.features.shape == (9, 512) and first.features.dtype == np.float32
    assert first.path.is_file() and first.path.parent == tmp_path / "cache"

    def no_forward(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    with monkeypatch.context() as m:
        m.setattr(feats, "extract_features", no_forward)
        model2, info2 = feats.load_frozen_backbone(checkpoint)
        second = feats.dataset_features(open_image_set(tmp_path / "imgs"), model2, info2, cache, name="t")
    assert second.hit and second.path == first.path
    np.testing.assert_array_equal(second.features, first.features)

    # a truncated entry (a killed job, a full disk) is a miss and is written again, never served
    first.path.write_bytes(first.path.read_bytes()[:200])
    again = feats.dataset_features(images, model, info, cache, batch_size=4, name="t")
    assert not again.hit
    np.testing.assert_array_equal(again.features, first.features)
    assert cache.load(first.path.stem, 9) is not None

    # a damaged entry of another width, with NaN, or a header claiming a huge shape over a sparse file, is a miss
    # too (the first was used as it was and changed the scores, the second failed in the probe on every run, the
    # third allocated gigabytes)
    for damaged in (np.zeros((9, 1), np.float32), np.full((9, 512), np.nan, np.float32)):
        np.save(first.path, damaged)
        assert cache.load(first.path.stem, 9) is None
    header = np.lib.format.header_data_from_array_1_0(np.zeros((9, 512), np.float32))
    with open(first.path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": (9, 100_000_000)})
        fh.truncate(3_600_000_000)
    assert cache.load(first.path.stem, 9) is None
    again = feats.dataset_features(images, model, info, cache, batch_size=4, name="t")
    assert not again.hit and first.path.stat().st_size < 100_000

    # a changed checkpoint (other weights, same path) must not be served the old features
    save_backbone(checkpoint, feats.random_backbone(1, True), {"cifar_stem": True, "image_size": 32})
    model3, info3 = feats.load_frozen_backbone(checkpoint)
    assert info3.identity != info.identity
    third = feats.dataset_features(images, model3, info3, cache, batch_size=4, name="t")
    assert not third.hit and third.path != first.path
    assert not np.allclose(third.features, first.features)

    # another image size is another entry; so is a changed image
    assert feats.feature_key(info.identity, images.hashes(), 32) != feats.feature_key(info.identity, images.hashes(), 48)
    changed = list(images.hashes())
    changed[0] = "0" * 32
    assert feats.feature_key(info.identity, changed, 32) != feats.feature_key(info.identity, images.hashes(), 32)


def test_extract_features_rejects_float_images():
    model = feats.random_backbone(0, True).eval()
    with pytest.raises(ValueError, match="uint8"):
        feats.extract_features(model, torch.zeros(2, 3, 32, 32), progress=None)


# --------------------------------------------------------------------------------- CIFAR-10 subset
@pytest.fixture(scope="module")
def cifar_features(tmp_path_factory):
    """Random-backbone features of 500 CIFAR-10 train and 500 test images (50 per class each)."""
    if not (CIFAR / "train").is_dir() or not (CIFAR / "test").is_dir():
        pytest.skip(f"CIFAR-10 image folders not found at {CIFAR}; set SALIENCYSSL_SHARED")
    root = tmp_path_factory.mktemp("cifar_subset")
    for split in ("train", "test"):
        for class_dir in sorted((CIFAR / split).iterdir()):
            (root / split / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.glob("*.png"))[:50]:
                (root / split / class_dir.name / f.name).symlink_to(f)
    model, info = feats.load_frozen_backbone("random", 32, seed=0)
    out = {}
    for split in ("train", "test"):
        image_set = open_image_set(root / split)
        out[split] = (feats.dataset_features(image_set, model, info, None, batch_size=250, name=split).features,
                      image_set.labels)
    return out


@pytest.mark.slow
@needs_cifar
def test_random_backbone_beats_chance_on_cifar_and_shuffled_labels_do_not(cifar_features):
    (x, y), (xt, yt) = cifar_features["train"], cifar_features["test"]
    assert len(x) == 500 and np.bincount(y).tolist() == [50] * 10
    # Chance is 0.1; an accuracy on len(yt) test images that is chance varies by sqrt(0.1 * 0.9 / n),
    # so beyond three of those it is not chance.
    sigma = np.sqrt(0.1 * 0.9 / len(yt))
    linear = probe.linear_probe_accuracy(x, y, xt, yt)
    near = knn.knn_accuracy(x, y, xt, yt, num_classes=10)
    assert linear > 0.1 + 3 * sigma, linear
    assert near > 0.1 + 3 * sigma, near
    shuffled = np.random.default_rng(0).permutation(y)
    assert abs(probe.linear_probe_accuracy(x, shuffled, xt, yt) - 0.1) < 3 * sigma
    assert abs(knn.knn_accuracy(x, shuffled, xt, yt, num_classes=10) - 0.1) < 3 * sigma
    # fewer labels, still above chance for the probe
    idx = frac.balanced_subset(y, 0.2, seed=0)
    assert probe.linear_probe_accuracy(x[idx], y[idx], xt, yt) > 0.1 + 3 * sigma


# ---------------------------------------------------------------------------------- evaluate.py
@pytest.mark.slow
def test_evaluate_script_end_to_end(tmp_path):
    _write_images(tmp_path / "train", per_class=12, seed=0)
    _write_images(tmp_path / "test", per_class=6, seed=1)
    out = tmp_path / "out"
    base = [sys.executable, str(REPO / "scripts" / "evaluate.py"), "--backbone", "random",
            "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--fractions", "0.25,0.5,1.0",
            "--seeds", "2", "--cache-dir", str(tmp_path / "cache"), "--batch-size", "64"]
    command = base + ["--out", str(out), "--tsne-points", "30"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"linear", "knn", "kmeans", "meta"}
    for protocol in ("linear", "knn"):
        assert list(results[protocol]) == ["0.25", "0.5", "1.0"]
        for fraction, entry in results[protocol].items():
            assert set(entry) == {"accuracy_mean", "accuracy_std", "n_labelled"}
            assert 0.0 <= entry["accuracy_mean"] <= 1.0 and entry["accuracy_std"] >= 0.0
        assert [results[protocol][f]["n_labelled"] for f in ("0.25", "0.5", "1.0")] == [9, 18, 36]
        assert results[protocol]["1.0"]["accuracy_std"] == 0.0  # every seed draws everything
    # the classes differ by dominant colour: even random features separate them
    assert results["linear"]["1.0"]["accuracy_mean"] > 0.8
    assert set(results["kmeans"]) == {"nmi", "ari"} and 0.0 <= results["kmeans"]["nmi"] <= 1.0
    meta = results["meta"]
    assert meta["seeds"] == [0, 1] and meta["backbone"]["source"] == "random"
    assert meta["feature_cache"]["test"]["hit"] is False and Path(meta["feature_cache"]["test"]["path"]).is_file()
    for name in ("results.csv", "results.md", "accuracy_vs_fraction.png", "tsne.png"):
        assert (out / name).stat().st_size > 0, name
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("protocol,fraction,n_labelled,accuracy_mean,accuracy_std")
    assert len(csv_lines) == 1 + 6 + 1
    assert "| linear probe | 0.25 | 9 |" in (out / "results.md").read_text()
    assert "| kNN (k=200, T=0.1) | 0.25 |" in (out / "results.md").read_text()

    # second run: features come from the cache
    done = subprocess.run(base + ["--protocol", "knn", "--out", str(tmp_path / "out2")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert again["meta"]["feature_cache"]["train"]["hit"] is True and again["meta"]["feature_cache"]["test"]["hit"]
    assert set(again) == {"knn", "meta"}
    assert again["knn"]["0.5"] == results["knn"]["0.5"]
    done = subprocess.run(base + ["--protocol", "knn", "--knn-k", "5", "--out", str(tmp_path / "out3")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| kNN (k=5, T=0.1) | 0.25 |" in (tmp_path / "out3" / "results.md").read_text()  # the k it used


def test_evaluate_script_errors_name_the_problem(tmp_path, capsys):
    _write_images(tmp_path / "train", per_class=2)
    _write_images(tmp_path / "flat", per_class=2, labelled=False)
    base = ["--train", str(tmp_path / "train"), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o")]

    assert evaluate.main(["--backbone", str(tmp_path / "nope.pt"), "--test", str(tmp_path / "train"), *base]) == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err and "random" in err

    assert evaluate.main(["--backbone", "random", "--test", str(tmp_path / "train"), "--fractions", "0.5,1.5",
                          *base]) == 2
    assert "'1.5' lies outside (0, 1]" in capsys.readouterr().err

    assert evaluate.main(["--backbone", "random", "--test", str(tmp_path / "flat"), "--protocol", "linear", *base]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "flat") in err and "no labels" in err and "kmeans protocol alone" in err

    # The same images as train and test: the probes would be scored on what they were fitted on.
    assert evaluate.main(["--backbone", "random", "--test", str(tmp_path / "train"), "--protocol", "knn", *base]) == 2
    assert "images of the test set" in capsys.readouterr().err

    assert evaluate.main(["--backbone", "random", "--test", str(tmp_path / "train"), "--protocol", "svm"]) == 2
    assert "svm" in capsys.readouterr().err

    assert evaluate.main(["--backbone", "random", "--test", str(tmp_path / "train"), "--protocol", "knn"]) == 2
    assert "needs --train" in capsys.readouterr().err

    # unlabelled set, k-means only: works without --train when --clusters is given
    assert evaluate.main(["--backbone", "random", "--test", str(tmp_path / "flat"), "--protocol", "kmeans",
                          "--clusters", "2", "--tsne-points", "0", "--cache-dir", str(tmp_path / "cache"),
                          "--out", str(tmp_path / "km")]) == 0
    km = json.loads((tmp_path / "km" / "results.json").read_text())["kmeans"]
    assert km == {"nmi": None, "ari": None}


def test_evaluate_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--backbone", "--train", "--test", "--fractions", "--protocol", "--seeds", "--out", "--image-size",
                   "--device", "--batch-size", "--clusters", "--cache-dir", "examples:", "results.json"):
        assert option in text, option
    parser = evaluate.build_parser()
    assert all(action.help for action in parser._actions)


def test_report_markdown_and_csv_round_trip(tmp_path):
    scores = {"linear": frac.sweep(np.repeat(np.arange(2), 4), frac.parse_fractions("0.5,1.0"), [0, 1],
                                   lambda idx, seed: {"accuracy": 0.5 + 0.1 * seed})}
    results = report.classification_results(scores, {"nmi": 0.5, "ari": float("nan")}, {"seeds": [0, 1]})
    rows = report.classification_rows(scores, {"nmi": 0.5, "ari": float("nan"), "n_clusters": 2})
    paths = report.write_report(tmp_path, results, rows, report.classification_markdown(results, rows))
    loaded = json.loads(paths["json"].read_text())
    assert loaded["linear"]["0.5"] == {"accuracy_mean": pytest.approx(0.55), "accuracy_std": pytest.approx(0.05),
                                       "n_labelled": 4}
    assert loaded["kmeans"]["ari"] is None  # NaN written as null
    assert "0.5500 ± 0.0500" in paths["md"].read_text()
    plot = report.plot_fraction_curves(scores, "accuracy", "acc", tmp_path / "p.png", chance=0.5)
    assert plot.stat().st_size > 1000


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_backbone_files_that_are_not_plain_tensors_are_refused_without_running_them(tmp_path):
    from saliencyssl.ssl.backbone import load_backbone

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"state_dict": _RunsCodeWhenUnpickled(marker), "config": {}}, hostile)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path in (hostile, junk):
        with pytest.raises(ValueError, match=f"{path.name} cannot be read as a backbone checkpoint"):
            load_backbone(path)
    assert not marker.exists()


def test_evaluate_quiet_shows_no_progress_bars(tmp_path, capsys):
    _write_images(tmp_path / "train", per_class=2)
    _write_images(tmp_path / "test", per_class=2, seed=1)
    base = ["--backbone", "random", "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"),
            "--protocol", "knn", "--fractions", "1.0", "--seeds", "1", "--no-cache"]
    assert evaluate.main([*base, "--out", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr()
    assert "features of" in loud.err and "knn over fractions" in loud.err
    assert evaluate.main([*base, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert "features of" not in quiet.err and "over fractions" not in quiet.err
    assert "knn" in quiet.out, "the results are still printed"



def test_image_folder_layouts_and_subsets_keep_their_files(tmp_path, capsys):
    from saliencyssl.datasets import open_image_set

    # One sub-folder holding every photo is a layout, not one class.
    _write_images(tmp_path / "photos" / "all", per_class=2, labelled=False)
    assert not open_image_set(tmp_path / "photos").has_labels
    # Two classes are labels; a subset keeps the files behind its images (the grid labels them in parallel).
    labelled = open_image_set(_write_images(tmp_path / "two", per_class=3, classes=("a", "b")))
    assert labelled.has_labels and labelled.classes == ["a", "b"]
    part = labelled.spread(2)
    assert part.paths is not None and [p.name for p in part.paths] == [n.split("/")[-1] for n in part.names]
    # A stray image beside the class folders: the error names it.
    _write_images(tmp_path / "two", per_class=1, classes=("stray",), labelled=False)
    assert evaluate.main(["--backbone", "random", "--train", str(tmp_path / "two"), "--test", str(tmp_path / "two"),
                          "--protocol", "linear", "--no-cache", "--out", str(tmp_path / "o")]) == 2
    assert "1 images lie directly in it, e.g. stray_000.png" in capsys.readouterr().err


def test_tsne_of_coinciding_points_is_flat_not_a_crash():
    """scikit-learn's Barnes-Hut t-SNE ends the process with a segmentation fault when every point coincides (a
    folder of identical images); such a set gets a flat map instead."""
    from saliencyssl.eval.clustering import tsne_map

    indices, embedding = tsne_map(np.ones((6, 512), np.float32), seed=0)
    assert list(indices) == list(range(6)) and not embedding.any()


def test_tsne_plot_draws_class_folders_whose_names_are_not_utf8(tmp_path):
    """A class folder named with Latin-1 bytes decodes with a lone surrogate, which matplotlib's fonts refused."""
    import os

    from PIL import Image

    from saliencyssl.eval.results import plot_tsne

    name = os.fsdecode(b"caf\xe9")
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 2
    path = plot_tsne(rng.normal(size=(20, 2)), labels, labels, ["cat", name], tmp_path / "tsne.png")
    assert Image.open(path).size[0] > 100


def test_knn_blocks_shrink_with_the_bank_and_predict_the_same(monkeypatch):
    """1,024 test images a block against a bank of 1.28 M features held 5 GB of similarities at once."""
    import lightly.utils.benchmarking as benchmarking

    rng = np.random.default_rng(0)
    train, labels, test = rng.normal(size=(3000, 16)), rng.integers(0, 5, 3000), rng.normal(size=(500, 16))
    whole = knn.knn_predictions(train, labels, test, 5)
    blocks = []
    real = benchmarking.knn_predict
    monkeypatch.setattr(benchmarking, "knn_predict", lambda feature, *a, **k: blocks.append(len(feature)) or
                        real(feature, *a, **k))
    monkeypatch.setattr(knn, "MAX_BLOCK_VALUES", 3000 * 64)
    assert np.array_equal(knn.knn_predictions(train, labels, test, 5), whole)
    assert max(blocks) == 64 and sum(blocks) == 500
