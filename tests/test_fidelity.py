"""Fidelity metrics on hand-made cases, the predict-nothing baseline, the comparison with human masks, and
saliency-ssl fidelity end to end."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from _paths import MISSING_REASON, SHARED
from saliencyssl.cache import TargetCache
from saliencyssl.datasets import open_image_set
from saliencyssl.surrogate.evaluation import (boundary_scores, fidelity_grid, fidelity_report, human_mask_scores,
                                       load_human_masks, mask_scores, match_masks, nothing_like, per_image_scores,
                                       rank_images, region_edges, vs_masks_report, worst_decile)
from saliencyssl.metrics import f_measure, map_mae, minmax_normalise
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.surrogate.model import Surrogate
from saliencyssl.target import TargetBatch
from saliencyssl.app import fidelity as fidelity_stage

SALBENCH = SHARED / "data" / "salbench"


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


# ---------------------------------------------------------------------------------- the stage
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
    code = fidelity_stage.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint), "--json",
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
    code = fidelity_stage.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint), "--quiet"])
    assert code == 2
    assert f"saliency-ssl label {images} --cache {cache_dir}" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- against human masks
def test_f_iou_mae_of_hand_made_masks_and_maps():
    truth = square(10, 0, 0, 4)                          # 16 px
    pred = square(10, 0, 0, 8)                           # 64 px, holds the truth: P = 1/4, R = 1
    s = mask_scores(pred[None], truth[None])
    assert s["iou"][0] == pytest.approx(16 / 64)
    assert s["precision"][0] == pytest.approx(0.25) and s["recall"][0] == 1.0
    assert s["f"][0] == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1))   # 0.5652: precision weighs more
    assert f_measure(1.0, 0.25) == pytest.approx(1.3 * 0.25 / (0.3 + 0.25))  # 0.5909 > 0.5652
    # A faint map shaped like the truth: raw MAE counts how faint it is, Cheng's min-max reading does not.
    faint = np.where(truth, 0.2, 0.1)[None]
    assert map_mae(faint, truth[None])[0] == pytest.approx((16 * 0.8 + 84 * 0.1) / 100)
    assert map_mae(faint, truth[None], normalise=True)[0] == pytest.approx(0.0)
    # A constant map reads as all zero when normalised: its error is the object's share of the image.
    assert map_mae(np.full((1, 10, 10), 0.7), truth[None], normalise=True)[0] == pytest.approx(0.16)
    assert minmax_normalise(np.full((1, 10, 10), 0.7)).abs().sum() == 0
    # Predicting nothing against an object: F and IoU 0, MAE the object's share.
    nothing = human_mask_scores(torch.zeros(1, 1, 10, 10, dtype=torch.bool), torch.zeros(1, 1, 10, 10),
                                torch.from_numpy(truth)[None, None])
    assert nothing["f"][0] == nothing["iou"][0] == 0.0 and nothing["mae"][0] == pytest.approx(0.16)
    with pytest.raises(ValueError, match="differ in shape"):
        map_mae(np.zeros((1, 10, 10)), np.zeros((1, 8, 8)))


def test_vs_masks_report_puts_both_predictors_and_the_baselines_side_by_side():
    size = 16
    truth = torch.from_numpy(np.stack([square(size, 4, 4, 8), square(size, 2, 6, 6)]))[:, None]
    exact = batch([square(size, 4, 4, 8), square(size, 2, 6, 6)])               # perfect
    pred = batch([square(size, 4, 4, 4), np.zeros((size, size), bool)])         # a quarter, then nothing
    report = vs_masks_report(truth, exact, pred, names=["a.png", "b.png"])
    assert report["n"] == 2 and report["n_empty_masks"] == 0 and report["image_size"] == size
    assert report["exact"]["f"] == report["exact"]["iou"] == 1.0 and report["exact"]["mae"] == 0.0
    f_quarter = 1.3 * 1.0 * 0.25 / (0.3 * 1.0 + 0.25)
    assert report["surrogate"]["f"] == pytest.approx(f_quarter / 2)
    assert report["surrogate"]["iou"] == pytest.approx(0.25 / 2)
    assert report["surrogate"]["precision"] == pytest.approx(0.5)   # the empty prediction has precision 0
    assert report["surrogate"]["f_of_means"] == pytest.approx(f_measure(0.5, 0.125))
    assert report["nothing"]["f"] == report["nothing"]["iou"] == 0.0
    assert report["nothing"]["mae"] == pytest.approx((64 + 36) / 2 / size ** 2)
    # The centre box of half the side (rows and columns 4..11) is the first object exactly and
    # overlaps the second in 4 x 6 pixels.
    assert report["centre_box"]["iou"] == pytest.approx((1 + 24 / (64 + 36 - 24)) / 2)
    assert report["per_image"]["names"] == ["a.png", "b.png"]
    assert report["surrogate_minus_exact"]["f"] == pytest.approx(f_quarter / 2 - 1)
    assert report["per_image"]["surrogate"]["f"] == [pytest.approx(f_quarter), 0.0]
    with pytest.raises(ValueError, match="differ in number or size"):
        vs_masks_report(truth[:1], exact, pred)


def _write_mask(path, mask, style):
    """Write a bool mask as 0/255 (png, bmp, jpg) or 0/1 (png01)."""
    if style == "png01":
        cv2.imwrite(str(path.with_suffix(".png")), mask.astype(np.uint8))
    else:
        cv2.imwrite(str(path.with_suffix("." + style)), mask.astype(np.uint8) * 255)


def test_masks_pair_by_stem_in_any_format(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "sub").mkdir(parents=True)
    (masks / "sub").mkdir(parents=True)
    shape = square(40, 10, 12, 16)[:, :30]                                        # 40 x 30, not square
    names = ["a.png", "b.jpg", "c.png", "sub/d.png", "e.png"]
    for name in names:
        cv2.imwrite(str(images / name), np.full((40, 30, 3), 128, np.uint8))
    _write_mask(masks / "a", shape, "png")
    _write_mask(masks / "b", shape, "png01")
    _write_mask(masks / "c", shape, "bmp")
    _write_mask(masks / "sub" / "d", shape, "jpg")                                # lossy: still 0 or 255-ish
    _write_mask(masks / "zz", shape, "png")                                       # no image: ignored
    image_set = open_image_set(images)
    paths = match_masks(images, image_set.names, masks)
    by_name = dict(zip(image_set.names, paths))
    assert by_name["a.png"].name == "a.png" and by_name["b.jpg"].name == "b.png"
    assert by_name["c.png"].name == "c.bmp" and by_name["sub/d.png"].name == "d.jpg" and by_name["e.png"] is None
    human = load_human_masks(image_set, image_set.names, masks, 20)
    assert len(human) == 4 and human.without == ["e.png"]
    assert human.masks.shape == (4, 1, 20, 20) and human.masks.dtype == torch.bool
    expected = cv2.resize(shape.astype(np.uint8), (20, 27), interpolation=cv2.INTER_NEAREST)[3:23] > 0
    for i in range(4):
        assert torch.equal(human.masks[i, 0], torch.from_numpy(expected)), human.paths[i]
    # The image folder as its own mask folder: an image is never its own mask.
    with pytest.raises(FileNotFoundError, match="no mask in"):
        match_masks(images, image_set.names, images)


def test_mask_pairing_refuses_ambiguity_a_wrong_size_and_a_folder_without_matches(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((20, 24, 3), np.uint8))
    _write_mask(masks / "other", square(20, 0, 0, 5), "png")
    image_set = open_image_set(images)
    with pytest.raises(FileNotFoundError) as error:
        match_masks(images, image_set.names, masks)
    assert str(images) in str(error.value) and str(masks) in str(error.value)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        match_masks(images, image_set.names, tmp_path / "missing")
    _write_mask(masks / "a", square(20, 0, 0, 5), "png")                          # 20 x 20, image is 24 wide
    with pytest.raises(ValueError, match="20x20 but image"):
        load_human_masks(image_set, image_set.names, masks, 16)
    _write_mask(masks / "a", square(20, 0, 0, 5), "bmp")
    with pytest.raises(ValueError, match="matches 2 masks"):
        match_masks(images, image_set.names, masks)


def generated_shape(i: int) -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 128 image (not square, so the centre crop matters) of one flat red disc or box on a
    smooth gradient, which the exact labeller segments exactly; and the shape's true mask."""
    rng = np.random.default_rng(i)
    h, w = 96, 128
    t = (np.mgrid[0:h, 0:w][1] / w)[..., None]
    image = np.array([70, 110, 150.0]) * (1 - t) + np.array([120, 150, 110.0]) * t
    mask = np.zeros((h, w), np.uint8)
    cx, cy = w // 2 + int(rng.integers(-12, 13)), h // 2 + int(rng.integers(-8, 9))
    if i % 2 == 0:
        cv2.ellipse(mask, (cx, cy), (int(rng.integers(18, 28)), int(rng.integers(16, 24))), 0, 0, 360, 1, -1)
    else:
        a, b = int(rng.integers(16, 26)), int(rng.integers(14, 22))
        mask[cy - b:cy + b, cx - a:cx + a] = 1
    image[mask > 0] = [230, 40, 40]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask > 0


@pytest.fixture(scope="module")
def shapes_labelled(tmp_path_factory):
    """Six generated shapes labelled into a cache; masks for five of them (four formats) and one stray mask."""
    root = tmp_path_factory.mktemp("fidelity_shapes")
    images, masks, cache_dir = root / "images", root / "masks", root / "cache"
    images.mkdir()
    masks.mkdir()
    config = LabellerConfig()
    labeller = Labeller(config)
    cache = TargetCache(cache_dir, config.fingerprint(), params=config.params())
    styles = ["png", "png01", "bmp", "jpg", "png", None]
    for i, style in enumerate(styles):
        image, mask = generated_shape(i)
        cv2.imwrite(str(images / f"shape{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cache.put(image, labeller(image))
        if style is not None:
            _write_mask(masks / f"shape{i}", mask, style)
    _write_mask(masks / "stray", generated_shape(9)[1], "png")
    cache.close()
    return images, masks, cache_dir, config.fingerprint()


def test_eval_fidelity_scores_the_exact_labeller_near_one_against_true_shape_masks(shapes_labelled, tmp_path,
                                                                                    capsys):
    images, masks, cache_dir, fingerprint = shapes_labelled
    checkpoint = Surrogate.fresh(32, fingerprint, ngf=4).save(tmp_path / "surrogate.pt")
    out = tmp_path / "fidelity.json"
    code = fidelity_stage.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint),
                               "--masks", str(masks), "--json", str(out), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert "exact labeller" in captured.out and "1 of the 6 images have no mask" in captured.err
    vs = json.loads(out.read_text())["vs_masks"]
    assert vs["n"] == 5 and vs["n_without_mask"] == 1 and vs["n_empty_masks"] == 0 and vs["image_size"] == 32
    assert sorted(vs["per_image"]["names"]) == [f"shape{i}.png" for i in range(5)]
    # The labeller segments these shapes exactly; at 32 px the two sides see the same nearest-neighbour pixels.
    assert vs["exact"]["f"] >= 0.97 and vs["exact"]["iou"] >= 0.95 and vs["exact"]["mae"] < 0.1
    assert vs["nothing"]["f"] == vs["nothing"]["iou"] == 0.0 and vs["nothing"]["mae"] > 0.1
    assert vs["centre_box"]["iou"] < vs["exact"]["iou"] - 0.2
    for key in ("f", "iou", "mae"):
        assert 0.0 <= vs["surrogate"][key] <= 1.0
        assert vs["surrogate_minus_exact"][key] == pytest.approx(vs["surrogate"][key] - vs["exact"][key])


def test_eval_fidelity_masks_folder_without_a_match_is_an_error_naming_both(shapes_labelled, tmp_path, capsys):
    images, _, cache_dir, fingerprint = shapes_labelled
    checkpoint = Surrogate.fresh(32, fingerprint, ngf=4).save(tmp_path / "surrogate.pt")
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    _write_mask(unrelated / "nothing_like_these", square(8, 0, 0, 4), "png")
    code = fidelity_stage.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint),
                               "--masks", str(unrelated), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(unrelated) in err and str(images) in err


# ---------------------------------------------------------------------------------- real photos
needs_salbench = pytest.mark.skipif(not (SALBENCH / "masks").is_dir(),
                                    reason=MISSING_REASON.format(path=SALBENCH))


@needs_salbench
def test_salbench_masks_pair_with_all_36_photos_and_cheng_cut_beats_the_centre_box():
    image_set = open_image_set(SALBENCH / "images")
    human = load_human_masks(image_set, image_set.names, SALBENCH / "masks", 96)
    assert len(human) == len(image_set) == 36 and not human.without
    assert bool(human.masks.flatten(1).any(1).all())                             # every photo has an object
    # Cheng et al.'s own SaliencyCut masks and RC maps (their C++), as the exact side, at the same geometry.
    from saliencyssl.datasets import fit_square
    from saliencyssl.imageio import read_mask

    stems = [name.rsplit(".", 1)[0] for name in image_set.names]
    cut = np.stack([fit_square(read_mask(SALBENCH / "cheng_cpp" / f"{s}_cut.png").astype(np.uint8), 96, nearest=True)
                    for s in stems]) > 0
    rc = np.stack([fit_square(cv2.imread(str(SALBENCH / "cheng_cpp" / f"{s}_rc.png"), cv2.IMREAD_GRAYSCALE), 96)
                   for s in stems]).astype(np.float32) / 255
    cheng = TargetBatch(torch.from_numpy(rc)[:, None], torch.from_numpy(cut)[:, None],
                        torch.zeros(36, 1, 96, 96, dtype=torch.int64))
    report = vs_masks_report(human.masks, cheng, cheng)
    # Measured: F 0.862, IoU 0.759, MAE 0.144 at 96 px (0.857 / 0.748 / 0.111 on the whole photos).
    assert report["exact"]["f"] > 0.8 and report["exact"]["iou"] > 0.7
    assert report["exact"]["f"] > report["centre_box"]["f"] + 0.1
    assert report["exact"]["mae"] < report["nothing"]["mae"]


@needs_salbench
def test_eval_fidelity_on_salbench_photos(tmp_path, one_torch_thread):
    """Eight real photos labelled at a reduced working size, scored against their human masks (the other
    28 masks have no image here and are ignored)."""
    image_set = open_image_set(SALBENCH / "images")
    images, cache_dir = tmp_path / "images", tmp_path / "cache"
    images.mkdir()
    config = LabellerConfig(max_side=96)
    labeller = Labeller(config)
    cache = TargetCache(cache_dir, config.fingerprint(), params=config.params())
    for i in range(0, 36, 36 // 8)[:8]:
        shutil.copy(image_set.paths[i], images / image_set.names[i])
        cache.put(image_set.image(i), labeller(image_set.image(i)))
    cache.close()
    checkpoint = Surrogate.fresh(32, config.fingerprint(), ngf=4).save(tmp_path / "surrogate.pt")
    out = tmp_path / "salbench.json"
    code = fidelity_stage.main([str(images), "--cache", str(cache_dir), "--surrogate", str(checkpoint),
                               "--masks", str(SALBENCH / "masks"), "--json", str(out), "--quiet"])
    assert code == 0
    vs = json.loads(out.read_text())["vs_masks"]
    assert vs["n"] == 8 and vs["n_without_mask"] == 0
    # Measured: exact F 0.83, centre box 0.57, predict nothing 0.
    assert vs["exact"]["f"] > vs["centre_box"]["f"] + 0.1 and vs["nothing"]["f"] == 0.0
    assert vs["exact"]["mae"] < vs["centre_box"]["mae"]


def test_a_mask_brought_down_with_its_image_stays_centred_on_it():
    """cv2.INTER_NEAREST samples each block's corner: a square's mask sat half a pixel off the area-resized image."""
    from saliencyssl.datasets import fit_square

    image = np.zeros((96, 96), np.uint8)
    image[32:64, 32:64] = 255
    small_image = fit_square(image, 32).astype(np.float64)
    small_mask = fit_square(image > 0, 32, nearest=True)
    rows, cols = np.indices(small_mask.shape)
    image_centre = ((rows * small_image).sum() / small_image.sum(), (cols * small_image).sum() / small_image.sum())
    mask_centre = (rows[small_mask].mean(), cols[small_mask].mean())
    assert np.allclose(image_centre, mask_centre, atol=1e-9), (image_centre, mask_centre)
