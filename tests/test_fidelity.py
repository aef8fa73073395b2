"""Fidelity metrics on hand-made cases, the predict-nothing baseline, and scripts/eval_fidelity.py end to end."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from saliencyssl.cache import TargetCache
from saliencyssl.eval.fidelity import (boundary_scores, fidelity_grid, fidelity_report, mask_scores, nothing_like,
                                       per_image_scores, rank_images, region_edges, worst_decile)
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.surrogate.model import Surrogate
from saliencyssl.target import TargetBatch
import eval_fidelity  # scripts/eval_fidelity.py (pyproject.toml puts scripts/ on pytest's pythonpath)


JSON_KEYS = {"n", "n_present", "presence_accuracy", "mask_iou", "mask_iou_present", "mask_f", "saliency_mae",
             "saliency_mae_present", "boundary_f", "baseline"}


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


def batch(masks, saliency=None, regions=None) -> TargetBatch:
    """A TargetBatch from lists of (H, W) arrays."""
    masks = torch.from_numpy(np.stack(masks))[:, None]
    if saliency is None:
        saliency = masks.float()
    else:
        saliency = torch.from_numpy(np.stack(saliency).astype(np.float32))[:, None]
    if regions is None:
        regions = masks.long()
    else:
        regions = torch.from_numpy(np.stack(regions).astype(np.int64))[:, None]
    return TargetBatch(saliency, masks, regions)


def test_perfect_prediction_scores_one_and_zero_error():
    exact = batch([square(16, 2, 2, 8), square(16, 5, 4, 6), np.zeros((16, 16), bool)])
    report = fidelity_report(exact, exact)
    assert report["mask_iou"] == report["mask_iou_present"] == report["mask_f"] == 1.0
    assert report["presence_accuracy"] == 1.0 and report["boundary_f"] == 1.0
    assert report["saliency_mae"] == 0.0 and report["saliency_mae_present"] == 0.0
    assert report["worst_decile"]["mask_iou"] == 1.0


def test_mask_scores_of_known_overlaps_and_empty_cases():
    a, b = square(10, 0, 0, 4), square(10, 0, 2, 4)  # 16 px each, overlap 8
    empty = np.zeros((10, 10), bool)
    s = mask_scores(np.stack([a, empty, a, empty]), np.stack([b, b, empty, empty]))
    assert s["iou"][0] == pytest.approx(8 / 24) and s["dice"][0] == pytest.approx(16 / 32)
    assert s["precision"][0] == s["recall"][0] == pytest.approx(0.5)
    assert s["f"][0] == pytest.approx(0.5)  # P = R -> F = P for any beta
    # Predicted nothing where there is an object: all zero.
    assert s["iou"][1] == s["precision"][1] == s["recall"][1] == s["f"][1] == 0.0
    # Predicted an object where there is none: IoU and F zero.
    assert s["iou"][2] == s["f"][2] == 0.0
    # Both empty: all one.
    assert s["iou"][3] == s["dice"][3] == s["precision"][3] == s["recall"][3] == s["f"][3] == 1.0
    assert list(s["present"]) == [True, True, False, False]
    assert list(s["pred_present"]) == [True, False, True, False]
    # F weights precision: beta^2 = 0.3.
    big = square(10, 0, 0, 8)
    s = mask_scores(big[None], a[None])  # P = 16/64, R = 1
    p, r = 16 / 64, 1.0
    assert s["f"][0] == pytest.approx(1.3 * p * r / (0.3 * p + r))


def test_boundary_f_has_a_one_pixel_tolerance():
    regions = np.zeros((12, 12), np.int64)
    regions[:, 6:] = 1
    shifted1 = np.zeros_like(regions)
    shifted1[:, 7:] = 1
    shifted3 = np.zeros_like(regions)
    shifted3[:, 9:] = 1
    exact = region_edges(torch.from_numpy(np.stack([regions] * 3)))
    pred = region_edges(torch.from_numpy(np.stack([regions, shifted1, shifted3])))
    s = boundary_scores(pred, exact)
    assert list(s["boundary_f"]) == [1.0, 1.0, 0.0]
    none = boundary_scores(torch.zeros(1, 12, 12, dtype=torch.bool), exact[:1])
    assert none["boundary_f"][0] == 0.0
    both = boundary_scores(torch.zeros(1, 12, 12, dtype=torch.bool), torch.zeros(1, 12, 12, dtype=torch.bool))
    assert both["boundary_f"][0] == 1.0


def test_baseline_figures_follow_the_definition():
    size = 8
    masks = [square(size, 0, 0, 4), square(size, 2, 2, 4), np.zeros((size, size), bool), np.zeros((size, size), bool)]
    saliency = [m * 0.5 for m in masks[:2]] + [np.full((size, size), 0.25), np.zeros((size, size))]
    two = np.zeros((size, size), np.int64)
    two[:, 4:] = 1
    regions = [two, two, np.zeros((size, size), np.int64), two]
    exact = batch(masks, saliency, regions)
    report = fidelity_report(exact, exact)
    base = report["baseline"]
    assert base["n"] == 4 and base["n_present"] == 2 and base["n_saliency_present"] == 3
    assert base["presence_accuracy"] == 0.5           # right on the two empty masks
    assert base["mask_iou"] == 0.5                    # both-empty counts as 1
    assert base["mask_iou_present"] == 0.0
    assert base["mask_f"] == 0.5
    expected_mae = np.mean([16 * 0.5 / 64, 16 * 0.5 / 64, 0.25, 0.0])
    assert base["saliency_mae"] == pytest.approx(expected_mae)
    assert base["saliency_mae_present"] == pytest.approx(np.mean([16 * 0.5 / 64, 16 * 0.5 / 64, 0.25]))
    assert base["boundary_f"] == 0.25                 # only the one-region image agrees
    assert report["better_than_baseline"]["mask_iou_present"] is True
    assert report["better_than_baseline"]["saliency_mae"] is True
    nothing = nothing_like(exact)
    assert not nothing.mask.any() and float(nothing.saliency.abs().sum()) == 0 and not nothing.regions.any()


def test_worst_decile_is_the_mean_of_the_worst_tenth():
    values = np.arange(20, dtype=float)
    assert worst_decile(values) == pytest.approx(0.5)
    assert worst_decile(values, higher_is_better=False) == pytest.approx(18.5)
    assert worst_decile(np.array([])) is None


def test_present_subsets_ignore_empty_images():
    exact = batch([square(8, 0, 0, 4), np.zeros((8, 8), bool)])
    pred = batch([square(8, 0, 0, 2), np.zeros((8, 8), bool)])
    report = fidelity_report(pred, exact)
    assert report["mask_iou_present"] == pytest.approx(4 / 16)
    assert report["mask_iou"] == pytest.approx((4 / 16 + 1) / 2)
    assert report["n_present"] == 1


def test_grid_shows_best_and_worst_rows():
    exact = batch([square(16, 2, 2, 8), square(16, 5, 4, 6), np.zeros((16, 16), bool)])
    pred = batch([square(16, 2, 2, 8), np.zeros((16, 16), bool), np.zeros((16, 16), bool)])
    scores = per_image_scores(pred, exact)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    # Best: the perfect prediction of a present mask (image 0), not the agreed empty one (image 2);
    # worst: the missed mask (image 1).
    best, worst = rank_images(scores, 1)
    assert best.tolist() == [0] and worst.tolist() == [1]
    grid = fidelity_grid(images, exact, pred, scores, k=1, tile=32)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[0] > 2 * 32


# ---------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def labelled(tmp_path_factory, photo):
    root = tmp_path_factory.mktemp("fidelity")
    images, cache_dir = root / "images", root / "cache"
    images.mkdir()
    config = LabellerConfig()
    labeller = Labeller(config)
    cache = TargetCache(cache_dir, config.fingerprint(), params=config.params())
    for i in range(6):
        crop = photo[(i * 9) % 40:(i * 9) % 40 + 110, (i * 17) % 80:(i * 17) % 80 + 140]
        image = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(images / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cache.put(image, labeller(image))
    cache.close()
    return images, cache_dir, config.fingerprint()


def test_eval_fidelity_end_to_end_writes_the_json_keys(labelled, tmp_path, capsys):
    images, cache_dir, fingerprint = labelled
    checkpoint = Surrogate.fresh(32, fingerprint, ngf=4).save(tmp_path / "surrogate.pt")
    out, grid = tmp_path / "fidelity.json", tmp_path / "grid.png"
    code = eval_fidelity.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint), "--json",
                               str(out), "--grid", str(grid), "--grid-rows", "2", "--quiet"])
    assert code == 0
    data = json.loads(out.read_text())
    assert JSON_KEYS <= set(data) and JSON_KEYS - {"baseline"} <= set(data["baseline"])
    assert data["n"] == 6 and data["n_seen_in_training"] == 0
    assert 0.0 <= data["presence_accuracy"] <= 1.0
    assert cv2.imread(str(grid)) is not None
    assert "baseline" in capsys.readouterr().out


def test_eval_fidelity_refuses_a_surrogate_of_another_labeller(labelled, tmp_path, capsys):
    images, cache_dir, _ = labelled
    checkpoint = Surrogate.fresh(32, LabellerConfig(scale=2.0).fingerprint(), ngf=4).save(tmp_path / "s.pt")
    code = eval_fidelity.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint), "--quiet"])
    assert code == 2
    assert "scripts/label.py" in capsys.readouterr().err
