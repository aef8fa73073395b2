"""Tests of the segmentation protocol (``saliencyssl.eval.segmentation``, ``scripts/eval_segmentation.py``).

Generated image/mask pairs cover data handling, the model, training and scores without shared
data; the end-to-end run on real salbench photos needs ``../shared`` beside the checkout (or
``$SALIENCYSSL_SHARED``) and skips with the reason when it is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saliencyssl.eval import detection as det, masks as maskdata, segmentation as seg
from saliencyssl.eval.features import open_backbone, random_backbone
from saliencyssl.ssl.backbone import save_backbone

from _paths import MISSING_REASON, REPO, SHARED
from saliencyssl.app import segment as script

SALBENCH = SHARED / "data" / "salbench"
needs_salbench = pytest.mark.skipif(not (SALBENCH / "images").is_dir() or not (SALBENCH / "masks").is_dir(),
                                    reason=MISSING_REASON.format(path=SHARED / "data"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_pairs(root: Path, n: int, size=(40, 48), seed: int = 0, mask_scale: int = 255) -> tuple[Path, Path]:
    """Noisy dark images with one bright rectangle each; the mask is the rectangle."""
    import cv2

    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    h, w = size
    for i in range(n):
        image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        top, left = rng.integers(2, h // 2), rng.integers(2, w // 2)
        bh, bw = rng.integers(h // 4, h // 2), rng.integers(w // 4, w // 2)
        mask[top:top + bh, left:left + bw] = mask_scale
        image[mask > 0] = np.clip(image[mask > 0].astype(int) + 180, 0, 255)
        cv2.imwrite(str(images / f"img{i:02d}.jpg"), image)
        cv2.imwrite(str(masks / f"img{i:02d}.png"), mask)
    return images, masks


# ------------------------------------------------------------------------------------------ data
def test_pairs_masks_and_arrays(tmp_path):
    images, masks = _write_pairs(tmp_path / "a", 4)
    pairs = maskdata.load_mask_pairs(images, masks)
    assert len(pairs) == 4 and all(m.dtype == np.bool_ and m.shape == (40, 48) for m in pairs.masks)
    assert 0.0 < np.mean(pairs.masks[0]) < 0.5
    x, y = maskdata.to_arrays(pairs, 32)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (4, 1, 32, 32) and y.dtype == torch.float32 and set(y.unique().tolist()) <= {0.0, 1.0}
    # the mask stays on the bright rectangle after resizing and cropping
    bright = x.float().mean(1, keepdim=True) > 100
    assert (bright == (y > 0.5)).float().mean() > 0.95

    # 0/1 masks read the same as 0/255 masks
    _, masks01 = _write_pairs(tmp_path / "b", 1, mask_scale=1)
    assert np.array_equal(maskdata.read_mask(masks01 / "img00.png"), maskdata.read_mask(masks / "img00.png"))

    # so do colour masks, whatever the object's colour (OpenCV writes BGR: red is the last channel)
    import cv2

    grey = maskdata.read_mask(masks / "img00.png")
    for channel in range(3):
        colour = np.zeros(grey.shape + (3,), np.uint8)
        colour[grey, channel] = 255
        cv2.imwrite(str(tmp_path / f"colour{channel}.png"), colour)
        assert np.array_equal(maskdata.read_mask(tmp_path / f"colour{channel}.png"), grey)
    # 0/255 stored in 16 bits and index maps (0/1/3) are not read as empty
    cv2.imwrite(str(tmp_path / "sixteen.png"), grey.astype(np.uint16) * 255)
    assert np.array_equal(maskdata.read_mask(tmp_path / "sixteen.png"), grey)
    index = grey.astype(np.uint8)
    index[: grey.shape[0] // 2] *= 3
    cv2.imwrite(str(tmp_path / "index.png"), index)
    assert np.array_equal(maskdata.read_mask(tmp_path / "index.png"), grey)
    void = index.copy()
    void[0, :] = 255  # VOC's "void" border is not an object
    cv2.imwrite(str(tmp_path / "void.png"), void)
    assert np.array_equal(maskdata.read_mask(tmp_path / "void.png"), grey & (void != 255))
    # a soft mask keeps the pixels above half the range
    cv2.imwrite(str(tmp_path / "soft.png"), np.where(grey, 200, 30).astype(np.uint8) + np.arange(grey.shape[1],
                                                                                                  dtype=np.uint8) % 5)
    assert np.array_equal(maskdata.read_mask(tmp_path / "soft.png"), grey)


def test_missing_or_mismatched_masks_are_named(tmp_path):
    import cv2

    images, masks = _write_pairs(tmp_path, 3)
    (masks / "img01.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* img01\.jpg"):
        maskdata.load_mask_pairs(images, masks)
    cv2.imwrite(str(masks / "img01.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"img01\.png is 10x10 but image .*img01\.jpg is 48x40"):
        maskdata.load_mask_pairs(images, masks)
    with pytest.raises(FileNotFoundError, match="mask folder"):
        maskdata.load_mask_pairs(images, tmp_path / "nowhere")


def test_split_by_hash_is_fixed_and_disjoint():
    hashes = [f"{h:032x}" for h in np.random.default_rng(0).integers(0, 2**62, 20)]
    train, test = maskdata.split_by_hash(hashes, 0.3)
    assert len(test) == 6 and len(train) == 14 and not set(train) & set(test)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(20))
    # the same images in another order are split the same way
    order = np.random.default_rng(1).permutation(20)
    train2, test2 = maskdata.split_by_hash([hashes[i] for i in order], 0.3)
    assert sorted(hashes[order[i]] for i in test2) == sorted(hashes[i] for i in test)
    assert len(maskdata.split_by_hash(hashes[:2], 0.9)[0]) == 1  # always one left to train on
    with pytest.raises(ValueError, match="test split"):
        maskdata.split_by_hash(hashes, 1.0)


def test_copies_of_an_image_fall_on_one_side_of_the_split():
    """Sorting by hash and cutting at the test count put one copy of an image in each split."""
    hashes = ["h1", "h2", "h2", "h3", "h4", "h5", "h6"]
    train, test = maskdata.split_by_hash(hashes, 0.3)
    assert test.tolist() == [0, 1, 2] and train.tolist() == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="copies of one image"):
        maskdata.split_by_hash(["h"] * 4, 0.5)


def test_a_palette_mask_is_read_as_its_indices_not_its_colours(tmp_path):
    """OpenCV decodes a palette PNG to colours: VOC's class 8 (dark red) was read as background, its void border as
    an object."""
    from PIL import Image

    index = np.zeros((20, 20), np.uint8)
    index[2:8, 2:8], index[10:16, 2:8], index[2:8, 10:16] = 1, 8, 15
    index[0, :] = 255                                                     # VOC's void border
    palette = [0, 0, 0] + [0] * 3 * 255
    palette[3:6], palette[24:27], palette[45:48], palette[765:768] = [128, 0, 0], [64, 0, 0], [192, 128, 128], \
        [224, 224, 192]
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette)
    image.save(tmp_path / "voc.png")
    assert np.array_equal(maskdata.read_mask(tmp_path / "voc.png"), (index > 0) & (index != 255))


# ---------------------------------------------------------------------------------------- scores
def test_probability_scores_known_values():
    gt = torch.zeros(4, 1, 4, 4)
    gt[0, 0, :2] = 1   # 8 px
    gt[1, 0, :2] = 1
    gt[3, 0, 0, 0] = 1
    prob = torch.zeros(4, 1, 4, 4)
    prob[0] = gt[0]                    # perfect
    prob[1, 0, 1:3] = 0.9              # 4 of 8 right, 4 wrong: IoU 4/12, P = R = 0.5
    # image 2: both empty; image 3: empty prediction, non-empty mask
    scores = maskdata.probability_scores(prob, gt)
    np.testing.assert_allclose(scores["iou"], [1.0, 1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(scores["f"], [1.0, 0.5, 1.0, 0.0])
    prob[1, 0, 0] = 0.9                # now P = 8/12, R = 1
    p, r = 8 / 12, 1.0
    assert maskdata.probability_scores(prob, gt)["f"][1] == pytest.approx(1.3 * p * r / (0.3 * p + r))


def test_prior_baselines():
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1  # exactly the centre box, a quarter of the pixels
    baselines = maskdata.prior_baselines(masks)
    assert baselines["centre_box"] == {"iou": 1.0, "f": 1.0}
    assert baselines["all_foreground"]["iou"] == pytest.approx(0.25)


# ------------------------------------------------------------------------------- model, training
@pytest.mark.parametrize("size,stem", [(32, "cifar"), (64, "imagenet")])
def test_segmenter_shapes(size, stem):
    encoder, _ = open_backbone("random", size, 0, stem)
    model = seg.build_segmenter(encoder, seed=0, fpn_channels=16)
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 1, size, size)
    # the segmenter works on a copy: training it leaves the given encoder alone
    assert model.stem[0].weight is not encoder.conv1.weight
    torch.testing.assert_close(model.stem[0].weight, encoder.conv1.weight)


@pytest.mark.slow
def test_training_is_deterministic_learns_and_freezing_keeps_encoder(tmp_path):
    pairs = maskdata.load_mask_pairs(*_write_pairs(tmp_path, 12))
    x, y = maskdata.to_arrays(pairs, 32)
    encoder = random_backbone(0, True)
    config = maskdata.SegmentTrainConfig(steps=3, batch_size=4)
    runs = [seg.train_segmenter(seg.build_segmenter(encoder, 0, 16), x, y, np.arange(8), config, seed=0)
            for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = seg.train_segmenter(seg.build_segmenter(encoder, 1, 16), x, y, np.arange(8), config, seed=1)
    assert not torch.equal(other.head[-1].weight, runs[0].head[-1].weight)

    frozen = seg.train_segmenter(seg.build_segmenter(encoder, 0, 16), x, y, np.arange(8),
                                 maskdata.SegmentTrainConfig(steps=2, batch_size=4, freeze_encoder=True), seed=0)
    torch.testing.assert_close(frozen.layers[0][0].conv1.weight, encoder.layer1[0].conv1.weight)
    torch.testing.assert_close(frozen.stem[1].running_mean, encoder.bn1.running_mean)

    # bright rectangles on dark noise: a short fine-tune segments the held-out images well
    model = seg.train_segmenter(seg.build_segmenter(encoder, 0, 16), x, y, np.arange(8),
                                maskdata.SegmentTrainConfig(steps=40, batch_size=4, lr=3e-3, encoder_lr=1e-3), seed=0)
    scores = maskdata.probability_scores(seg.predict_probabilities(model, x[8:]), y[8:])
    assert scores["iou"].mean() > 0.6, scores["iou"]


# ---------------------------------------------------------------------------- Mask R-CNN
def test_instances_from_mask_components_boxes_and_specks():
    mask = np.zeros((32, 32), bool)
    mask[2:10, 3:12] = True        # 8 x 9
    mask[20:30, 20:25] = True      # 10 x 5
    mask[0, 31] = True             # a 1-pixel speck: under 0.2% of 1,024 pixels
    found = det.instances_from_mask(mask)
    assert len(found) == 2 and found.masks.shape == (2, 32, 32) and found.scores is None
    np.testing.assert_array_equal(found.boxes, [[3, 2, 12, 10], [20, 20, 25, 30]])
    assert found.masks[0].sum() == 72 and found.masks[1].sum() == 50
    assert not (found.masks[0] & found.masks[1]).any()
    assert len(det.instances_from_mask(mask, min_area=0.0)) == 3
    # diagonal neighbours are one instance (8-connectivity); an empty mask has none
    diagonal = np.zeros((32, 32), bool)
    diagonal[5:10, 5:10] = diagonal[10:15, 10:15] = True
    assert len(det.instances_from_mask(diagonal)) == 1
    empty = det.instances_from_mask(np.zeros((16, 16), bool))
    assert len(empty) == 0 and empty.masks.shape == (0, 16, 16) and empty.boxes.shape == (0, 4)


def test_coco_scores_perfect_shifted_missing():
    truths = [det.instances_from_mask(m) for m in _square_masks()]
    perfect = [det.Instances(t.masks.astype(np.float32), t.boxes, np.ones(len(t), np.float32)) for t in truths]
    scores = det.coco_scores(perfect, truths)
    assert set(scores) == {"mask_ap", "mask_ap50", "mask_ap75", "box_ap"}
    assert all(v == pytest.approx(1.0) for v in scores.values()), scores
    # shifted by 2 px the squares overlap their truth with IoU 0.64-0.71: matched at 0.5, missed at 0.75
    shifted = [det.Instances(np.roll(p.masks, 2, axis=-1), p.boxes + [2, 0, 2, 0], p.scores) for p in perfect]
    worse = det.coco_scores(shifted, truths)
    assert worse["mask_ap50"] == pytest.approx(1.0) and worse["mask_ap75"] == 0.0 and 0.0 < worse["mask_ap"] < 1.0
    assert worse["box_ap"] < 1.0
    nothing = [det.Instances(np.zeros((0, 32, 32), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
               for _ in truths]
    assert all(v == 0.0 for v in det.coco_scores(nothing, truths).values())
    assert all(np.isnan(v) for v in det.coco_scores(perfect, [det.instances_from_mask(np.zeros((32, 32), bool))
                                                             for _ in truths]).values())
    # the centre square is a weak, image-blind floor
    floor = det.coco_scores(det.prior_instances(32, len(truths))["centre_box"], truths)
    assert floor["mask_ap"] < 0.5


def _square_masks() -> list[np.ndarray]:
    masks = []
    for top, left, side in ((2, 2, 10), (16, 4, 12), (5, 18, 9)):
        mask = np.zeros((32, 32), bool)
        mask[top:top + side, left:left + side] = True
        masks.append(mask)
    return masks


@pytest.mark.slow
def test_maskrcnn_keeps_the_encoder_is_deterministic_and_learns(tmp_path):
    pairs = maskdata.load_mask_pairs(*_write_pairs(tmp_path, 18))
    x, y = maskdata.to_arrays(pairs, 32)
    instances = [det.instances_from_mask(m[0].numpy() > 0.5) for m in y]
    assert all(len(i) == 1 for i in instances)
    encoder = random_backbone(0, True)
    model = det.build_maskrcnn(encoder, 32, 0, 16)
    torch.testing.assert_close(model.backbone.body.layer1[0].conv1.weight, encoder.layer1[0].conv1.weight)
    assert model.backbone.body.layer1[0].conv1.weight is not encoder.layer1[0].conv1.weight  # a copy
    config = maskdata.SegmentTrainConfig(steps=2, batch_size=4, lr=0.01, encoder_lr=0.001)
    with_negative = [det.instances_from_mask(np.zeros((32, 32), bool)), *instances[1:]]  # an image with no object
    runs = [det.train_maskrcnn(det.build_maskrcnn(encoder, 32, 0, 16), x, with_negative, np.arange(12), config, 0)
            for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    frozen = det.train_maskrcnn(det.build_maskrcnn(encoder, 32, 0, 16), x, instances, np.arange(12),
                                maskdata.SegmentTrainConfig(steps=2, batch_size=4, lr=0.01, freeze_encoder=True), 0)
    torch.testing.assert_close(frozen.backbone.body.layer1[0].conv1.weight, encoder.layer1[0].conv1.weight)
    torch.testing.assert_close(frozen.backbone.body.bn1.running_mean, encoder.bn1.running_mean)
    assert not torch.equal(frozen.roi_heads.box_predictor.cls_score.weight,
                           det.build_maskrcnn(encoder, 32, 0, 16).roi_heads.box_predictor.cls_score.weight)

    # bright rectangles on dark noise: 70 steps find them on the six held-out images
    model = det.train_maskrcnn(det.build_maskrcnn(encoder, 32, 0, 16), x, instances, np.arange(12),
                               maskdata.SegmentTrainConfig(steps=70, batch_size=4, lr=0.01, encoder_lr=0.001), 0)
    predictions = det.predict_instances(model, x[12:])
    assert len(predictions) == 6
    assert all(p.masks.shape[1:] == (32, 32) and len(p.masks) == len(p.boxes) == len(p.scores) for p in predictions)
    scores = det.coco_scores(predictions, instances[12:])
    floor = det.coco_scores(det.prior_instances(32, 6)["centre_box"], instances[12:])
    assert scores["mask_ap50"] > 0.6 and scores["mask_ap"] > 0.1 > 5 * floor["mask_ap"], (scores, floor)
    assert det.foreground(predictions, 32).shape == (6, 1, 32, 32)


# ------------------------------------------------------------------------------ the script
def test_script_with_a_checkpoint_and_errors(tmp_path, capsys):
    images, masks = _write_pairs(tmp_path / "data", 6)
    checkpoint = tmp_path / "run" / "backbone.pt"
    save_backbone(checkpoint, random_backbone(3, True), {"cifar_stem": True, "image_size": 32})
    assert script.main(["--backbone", str(checkpoint), "--images", str(images), "--masks", str(masks),
                        "--fractions", "0.5,1.0", "--seeds", "2", "--epochs", "1", "--batch-size", "4",
                        "--fpn-channels", "16"]) == 0
    results = json.loads((tmp_path / "run" / "seg" / "results.json").read_text())  # default --out: RUN_DIR/seg
    assert list(results) == ["0.5", "1.0", "meta"]
    assert results["meta"]["split"]["n_test"] == 2 and results["1.0"]["n_labelled"] == 4
    assert results["meta"]["backbone"]["image_size"] == 32

    (masks / "img03.png").unlink()
    assert script.main(["--backbone", "random", "--images", str(images), "--masks", str(masks),
                        "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "img03.jpg" in err and str(masks) in err
    assert script.main(["--backbone", str(tmp_path / "missing.pt"), "--images", str(images), "--masks",
                        str(masks)]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert script.main(["--backbone", "random", "--images", str(images), "--masks", str(masks), "--fractions",
                        "0"]) == 2
    assert "outside (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--images", "--masks", "--epochs", "--test-split", "--freeze-encoder", "examples:", "IoU",
                   "--model", "maskrcnn", "AP"):
        assert option in text
    assert script.main(["--backbone", "random", "--images", str(images), "--masks", str(masks), "--lr", "0"]) == 2
    assert "--lr 0.0: give a positive learning rate" in capsys.readouterr().err


def test_script_with_maskrcnn(tmp_path):
    images, masks = _write_pairs(tmp_path / "data", 6)
    out = tmp_path / "out"
    assert script.main(["--backbone", "random", "--model", "maskrcnn", "--images", str(images), "--masks", str(masks),
                        "--fractions", "1.0", "--seeds", "1", "--epochs", "1", "--batch-size", "4",
                        "--fpn-channels", "16", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["1.0"]
    assert set(entry) == {f"{m}_{s}" for m in ("iou", "f", "mask_ap", "mask_ap50", "mask_ap75", "box_ap")
                          for s in ("mean", "std")} | {"n_labelled"}
    assert all(0.0 <= entry[f"{m}_mean"] <= 1.0 for m in ("iou", "f", "mask_ap", "box_ap"))
    meta = results["meta"]
    assert meta["training"]["model"] == "maskrcnn" and meta["training"]["lr"] == det.MaskRCNNProtocol.lr
    assert meta["scores"]["n_test_instances"] == 2
    assert {"mask_ap", "iou"} <= set(meta["baselines"]["centre_box"])
    text = (out / "results.md").read_text()
    assert "mask AP" in text and "box AP" in text
    assert "mask_ap_per_seed" in (out / "results.csv").read_text().splitlines()[0]


@pytest.mark.slow
@needs_salbench
def test_script_end_to_end_on_salbench(tmp_path):
    names = sorted(p.stem for p in (SALBENCH / "images").glob("*.jpg"))[:10]
    for sub, suffix in (("images", ".jpg"), ("masks", ".png")):
        (tmp_path / sub).mkdir()
        for name in names:
            (tmp_path / sub / f"{name}{suffix}").symlink_to(SALBENCH / sub / f"{name}{suffix}")
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "scripts" / "eval_segmentation.py"), "--backbone", "random",
               "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--image-size", "32",
               "--fractions", "0.5,1.0", "--seeds", "2", "--epochs", "1", "--batch-size", "4", "--threads", "1",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["0.5", "1.0", "meta"]
    for fraction in ("0.5", "1.0"):
        entry = results[fraction]
        assert set(entry) == {"iou_mean", "iou_std", "f_mean", "f_std", "n_labelled"}
        assert 0.0 <= entry["iou_mean"] <= 1.0 and 0.0 <= entry["f_mean"] <= 1.0 and entry["iou_std"] >= 0.0
    assert results["0.5"]["n_labelled"] == 4 and results["1.0"]["n_labelled"] == 7
    assert results["meta"]["split"]["n_test"] == 3
    assert set(results["meta"]["baselines"]) == {"all_foreground", "centre_box"}
    for name in ("results.csv", "results.md", "scores_vs_fraction.png"):
        assert (out / name).stat().st_size > 0
    # deterministic: the same command gives the same numbers
    done = subprocess.run(command[:-1] + [str(tmp_path / "again")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["1.0"] == results["1.0"] and again["0.5"] == results["0.5"]


def test_the_out_folder_is_a_run_folder(tmp_path, capsys):
    images, masks = _write_pairs(tmp_path / "data", 6)
    out = tmp_path / "out"
    base = ["--backbone", "random", "--images", str(images), "--masks", str(masks), "--fractions", "1.0",
            "--seeds", "1", "--epochs", "1", "--batch-size", "4", "--fpn-channels", "8", "--out", str(out)]
    assert script.main(base) == 0
    written = (out / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert script.main(base) == 0                                   # the same evaluation: not redone
    assert "already holds this evaluation" in capsys.readouterr().out
    assert (out / "results.json").stat().st_mtime_ns == written
    assert script.main(base + ["--epochs", "2"]) == 2               # another one: refused, the difference named
    assert "epochs 1 (now 2)" in capsys.readouterr().err
    assert script.main(base + ["--force"]) == 0
    assert (out / "results.json").stat().st_mtime_ns != written


def test_a_mask_changed_in_place_is_not_taken_for_the_scored_one(tmp_path, capsys):
    """The record named the folders only: masks mended in place were reported with the old scores."""
    import cv2

    images, masks = _write_pairs(tmp_path / "data", 6)
    out = tmp_path / "out"
    base = ["--backbone", "random", "--images", str(images), "--masks", str(masks), "--fractions", "1.0",
            "--seeds", "1", "--epochs", "1", "--batch-size", "4", "--fpn-channels", "8", "--freeze-encoder",
            "--out", str(out)]
    assert script.main(base) == 0
    capsys.readouterr()
    # the encoder's rate does nothing to a frozen encoder: not a difference
    assert script.main(base + ["--encoder-lr", "0.5"]) == 0
    assert "already holds this evaluation" in capsys.readouterr().out
    mask = cv2.imread(str(masks / "img03.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(masks / "img03.png"), 255 - mask)
    assert script.main(base) == 2
    assert "data " in capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["mask_sampling"] == maskdata.MASK_SAMPLING


def test_one_labelled_image_on_a_one_pixel_feature_map_names_the_fix(tmp_path, capsys):
    """An ImageNet stem at 32 px ends in 1x1 features: one labelled image stopped on torch's BatchNorm message."""
    images, masks = _write_pairs(tmp_path / "data", 8)
    base = ["--backbone", "random", "--random-stem", "imagenet", "--image-size", "32", "--images", str(images),
            "--masks", str(masks), "--fractions", "0.01", "--seeds", "1", "--epochs", "1", "--batch-size", "4",
            "--fpn-channels", "8", "--out", str(tmp_path / "out")]
    assert script.main(base) == 2
    err = capsys.readouterr().err
    assert "error: 1 labelled image (of 6 in the training split)" in err and "--freeze-encoder" in err
    assert err.count("error:") == 1 and "Traceback" not in err
    base[base.index("--fractions") + 1], base[base.index("--batch-size") + 1] = "1.0", "1"
    assert script.main(base) == 2
    assert "error: --batch-size 1: batches of one image" in capsys.readouterr().err


def test_a_sweep_stopped_half_way_goes_on_from_the_next_model(tmp_path, monkeypatch, capsys):
    """The scores lived in memory until the end: an error at the last model lost every finished one."""
    images, masks = _write_pairs(tmp_path / "data", 6)
    out = tmp_path / "out"
    base = ["--backbone", "random", "--images", str(images), "--masks", str(masks), "--fractions", "0.5,1.0",
            "--seeds", "2", "--epochs", "1", "--batch-size", "4", "--fpn-channels", "8", "--out", str(out)]
    trained = []
    real = seg.FPNProtocol.score

    def failing_fourth(self, *args, **kwargs):
        trained.append(args[3].tolist())  # the labelled subset
        if len(trained) == 4:
            raise FloatingPointError("the loss is NaN")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(seg.FPNProtocol, "score", failing_fourth)
    assert script.main(base) == 2 and "NaN" in capsys.readouterr().err
    assert len(list((out / "partial").glob("*.json"))) == 3
    trained.clear()
    assert script.main(base) == 0
    assert len(trained) == 1, "only the model that failed is trained again"
    assert not (out / "partial").exists() and (out / "results.json").is_file()
