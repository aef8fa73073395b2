"""Foreground segmentation on a pretrained ResNet-18 encoder: data, model, training and scores.

This protocol asks how well the backbone's features *localise* the salient object when a small
segmentation model is trained on top of it with few masks:

- :func:`load_mask_pairs` pairs each image with its binary mask (same relative path and stem,
  ``.png``) and :func:`to_arrays` brings both to ``S x S`` with the same
  :func:`~saliencyssl.datasets.fit_square` geometry (masks with nearest-neighbour);
- :func:`split_by_hash` fixes the test split by the images' content hashes, so it does not
  depend on file names, order or seed;
- :class:`FPNSegmenter` puts a feature pyramid (:class:`torchvision.ops.FeaturePyramidNetwork`)
  over ResNet-18's layers 1-4, sums its levels at the finest one and predicts one foreground
  logit per pixel, upsampled bilinearly to the input size;
- :func:`train_segmenter` fine-tunes it (or trains the decoder only, ``freeze_encoder=True``)
  with binary cross-entropy plus soft Dice, seeded;
- :func:`mask_scores` gives per-image foreground IoU and F-measure (beta^2 = 0.3, the
  salient-object-detection convention) of the thresholded prediction.

Scores are computed at the model's ``S x S`` resolution on the centre crop that ``fit_square``
keeps, not at each image's full resolution.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saliencyssl.datasets import ImageSet, fit_square, open_image_set
from saliencyssl.eval import fidelity
from saliencyssl.eval.fidelity import F_BETA2
from saliencyssl.ssl.backbone import to_model_input
from saliencyssl.surrogate.losses import soft_dice_loss

#: Probability above which a pixel counts as foreground.
THRESHOLD = 0.5


# --------------------------------------------------------------------------------------- data
@dataclass
class MaskPairs:
    """Images and their binary masks.

    Attributes:
        images: the image set (names are paths relative to the image folder).
        masks: one ``(H, W)`` bool array per image, the same size as the image; True = foreground.
        mask_paths: where each mask came from.
    """

    images: ImageSet
    masks: list[np.ndarray]
    mask_paths: list[Path]

    def __len__(self) -> int:
        return len(self.images)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as ``(H, W)`` bool. A mask of two values (0/255, 0/1, 0/255 stored in 16 bits)
    or of small integers (an index map such as 0/1/3, where 255 is VOC's "void" border and not an
    object) has every non-zero pixel as foreground; a
    soft (anti-aliased) mask has the values above half its type's range. In a colour mask a pixel
    counts by its largest colour channel (so a red, green or white object on black all work); an
    alpha channel is ignored.

    Raises:
        ValueError: the file cannot be decoded (naming it).
    """
    import cv2

    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if mask is None:
        raise ValueError(f"{path}: cannot decode the mask; masks must be PNGs, foreground non-zero")
    if mask.ndim == 3:
        mask = mask[:, :, :3].max(axis=2)
    values = np.unique(mask)
    if len(values) <= 2 or values[-1] < 16:
        return mask > 0
    if values[-1] == 255 and values[-2] < 16:  # an index map with VOC's "void" label 255: not an object
        return (mask > 0) & (mask != 255)
    return mask > (65535 if mask.dtype == np.uint16 else 255) / 2


def load_mask_pairs(images_dir: str | Path, masks_dir: str | Path) -> MaskPairs:
    """Pair every image below ``images_dir`` with ``masks_dir/<same relative path>.png``.

    Raises:
        FileNotFoundError: a folder is missing, or some images have no mask (the message names them).
        ValueError: a mask's size differs from its image's.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"--masks {masks_dir} does not exist or is not a folder; give the folder of binary "
                                f"mask PNGs named like the images")
    images = open_image_set(images_dir, keep_decoded=False)
    mask_paths = [masks_dir / Path(name).with_suffix(".png") for name in images.names]
    missing = [name for name, path in zip(images.names, mask_paths) if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise FileNotFoundError(f"{len(missing)} of {len(images)} images in {images_dir} have no mask in {masks_dir} "
                                f"(expected <same name>.png): {shown}; add their masks or move the images out")
    masks = []
    for i, path in enumerate(mask_paths):
        mask = read_mask(path)
        shape = images.image(i).shape[:2]
        if mask.shape != shape:
            raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but image {images_dir / images.names[i]} "
                             f"is {shape[1]}x{shape[0]}; masks must have their image's size, in the orientation the "
                             f"image is shown in (its EXIF orientation applied, as the toolkit reads images)")
        masks.append(mask)
    return MaskPairs(images, masks, mask_paths)


def to_arrays(pairs: MaskPairs, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks at ``size x size`` (shorter side resized, centre crop; masks nearest).

    Returns:
        ``images``: ``(N, 3, S, S)`` uint8 in 0..255; ``masks``: ``(N, 1, S, S)`` float32 in {0, 1}.
    """
    images = pairs.images.stack(int(size))
    masks = np.stack([fit_square(m.astype(np.uint8), int(size), nearest=True) for m in pairs.masks])
    return images, torch.from_numpy(masks.astype(np.float32)).unsqueeze(1)


def split_by_hash(hashes: list[str], test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed train/test split: images sorted by content hash, the first ``round(test_fraction * N)``
    (at least 1, and leaving at least 1 for training) are the test split.

    Args:
        hashes: one content hash per image.
        test_fraction: in (0, 1).

    Returns:
        ``(train_indices, test_indices)``, each sorted ascending int64.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1) or fewer than 2 images.
    """
    n = len(hashes)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"--test-split {test_fraction}: give the share of images held out for testing, in (0, 1), "
                         f"e.g. 0.3")
    if n < 2:
        raise ValueError(f"segmentation needs at least 2 images (one to train, one to test), got {n}")
    n_test = min(n - 1, max(1, int(math.floor(test_fraction * n + 0.5))))
    order = sorted(range(n), key=lambda i: (hashes[i], i))
    test = np.sort(np.array(order[:n_test], np.int64))
    train = np.sort(np.array(order[n_test:], np.int64))
    return train, test


# -------------------------------------------------------------------------------------- model
class FPNSegmenter(nn.Module):
    """ResNet-18 encoder + feature pyramid + 1-channel head.

    Args:
        encoder: a torchvision ResNet-18 (as :func:`saliencyssl.ssl.backbone.resnet18_backbone`
            builds; its ``fc`` is unused). Its stem, ``layer1``..``layer4`` are used.
        fpn_channels: channels of every pyramid level.

    ``forward`` maps ``(B, 3, H, W)`` normalised float32 (:func:`to_model_input`) to ``(B, 1, H, W)``
    foreground logits.
    """

    IN_CHANNELS = (64, 128, 256, 512)

    def __init__(self, encoder: nn.Module, fpn_channels: int = 64):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool)
        self.layers = nn.ModuleList([encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4])
        self.fpn = FeaturePyramidNetwork(list(self.IN_CHANNELS), fpn_channels)
        self.head = nn.Sequential(nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(fpn_channels, 1, 1))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.stem, self.layers) for p in m.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.fpn, self.head) for p in m.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = OrderedDict()
        h = self.stem(x)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            features[f"layer{i + 1}"] = h
        pyramid = list(self.fpn(features).values())
        finest = pyramid[0].shape[-2:]
        fused = pyramid[0]
        for level in pyramid[1:]:
            fused = fused + F.interpolate(level, size=finest, mode="bilinear", align_corners=False)
        logits = self.head(fused)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(encoder: nn.Module, seed: int, fpn_channels: int = 64) -> FPNSegmenter:
    """A fresh segmenter on a *copy* of ``encoder``, decoder initialised from ``seed`` (the global
    torch RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return FPNSegmenter(copy.deepcopy(encoder), fpn_channels)


# ----------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """How :func:`train_segmenter` trains.

    Attributes:
        steps: optimisation steps (the scripts use ``epochs x ceil(n_train_split / batch_size)``,
            the same for every label fraction).
        batch_size: images per step (drawn from the labelled subset, reshuffled on each pass).
        lr: Adam learning rate of the decoder (FPN and head).
        encoder_lr: Adam learning rate of the encoder when fine-tuned.
        weight_decay: Adam L2 weight decay.
        freeze_encoder: keep the encoder fixed (eval-mode BatchNorm, no gradients).
        flip: random horizontal flips.
    """

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-4
    freeze_encoder: bool = False
    flip: bool = True


def labelled_batches(indices: np.ndarray, config: TrainConfig, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``config.steps`` steps over the labelled images ``indices``.

    The labelled images are shuffled, taken ``config.batch_size`` at a time (all of them when there
    are fewer) and reshuffled after each pass; with ``config.flip`` each image of a batch is
    mirrored with probability 1/2. Everything is drawn from one generator seeded with ``seed``.

    Yields:
        ``(batch, flip)``: ``(B,)`` int64 indices into the image arrays and ``(B,)`` bool, True
        where the image (and its target) is to be mirrored left-right.
    """
    if len(indices) == 0:
        raise ValueError("training needs at least one labelled image")
    generator = torch.Generator().manual_seed(int(seed))
    pool = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    order = pool[torch.randperm(len(pool), generator=generator)]
    cursor = 0
    for _ in range(int(config.steps)):
        take = []
        while len(take) < min(config.batch_size, len(pool)):
            if cursor == len(order):
                order, cursor = pool[torch.randperm(len(pool), generator=generator)], 0
            take.append(order[cursor])
            cursor += 1
        batch = torch.stack(take)
        flip = (torch.rand(len(batch), generator=generator) < 0.5 if config.flip
                else torch.zeros(len(batch), dtype=torch.bool))
        yield batch, flip


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (1 - Dice over each image, averaged).

    Args:
        logits: ``(B, 1, H, W)`` float; target: ``(B, 1, H, W)`` in {0, 1}.
    """
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)


def train_segmenter(model: FPNSegmenter, images: torch.Tensor, masks: torch.Tensor, indices: np.ndarray,
                    config: TrainConfig, seed: int, device: str | torch.device = "cpu",
                    on_step: Callable[[int, float], None] | None = None) -> FPNSegmenter:
    """Train ``model`` on the labelled images ``indices``.

    Args:
        model: from :func:`build_segmenter`.
        images: ``(N, 3, S, S)`` uint8; masks: ``(N, 1, S, S)`` float32 in {0, 1}.
        indices: the labelled subset (indices into ``images``).
        config: see :class:`TrainConfig`.
        seed: batch order and flips (with the same seed, model and data, runs on CPU repeat exactly).
        device: where to train.
        on_step: called as ``on_step(step, loss)`` after each step (e.g. a progress bar).

    Returns:
        The trained model (the same object), in eval mode.
    """
    model = model.to(device)
    if config.freeze_encoder:
        for p in model.encoder_parameters():
            p.requires_grad_(False)
        groups = [{"params": model.decoder_parameters(), "lr": config.lr}]
    else:
        groups = [{"params": model.decoder_parameters(), "lr": config.lr},
                  {"params": model.encoder_parameters(), "lr": config.encoder_lr}]
    optimiser = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    model.train()
    if config.freeze_encoder:
        model.stem.eval()
        model.layers.eval()
    for step, (batch, flip) in enumerate(labelled_batches(indices, config, seed)):
        x, y = images[batch], masks[batch]
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        y = torch.where(flip.view(-1, 1, 1, 1), y.flip(-1), y)
        x, y = to_model_input(x.to(device)), y.to(device)
        loss = segmentation_loss(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 16,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """Foreground probabilities ``(N, 1, S, S)`` float32 in [0, 1] for ``(N, 3, S, S)`` uint8 images."""
    model.eval()
    out = [torch.sigmoid(model(to_model_input(images[i:i + batch_size].to(device)))).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, 1, *images.shape[-2:]))


# ------------------------------------------------------------------------------------- scores
def mask_scores(probabilities: torch.Tensor, masks: torch.Tensor, threshold: float = THRESHOLD,
                beta2: float = F_BETA2) -> dict[str, np.ndarray]:
    """Per-image foreground IoU and F-measure of thresholded predictions.

    Args:
        probabilities: ``(N, 1, H, W)`` in [0, 1]; masks: ``(N, 1, H, W)`` in {0, 1}.
        threshold: a pixel is predicted foreground when its probability exceeds it.
        beta2: F-measure weight, ``F = (1 + b2) P R / (b2 P + R)``.

    Returns:
        ``{"iou": (N,), "f": (N,), "precision": (N,), "recall": (N,)}`` float64 in [0, 1]. An
        image whose mask and prediction are both empty scores 1 everywhere; an empty prediction
        against a non-empty mask has precision 0 (and F 0).
    """
    scores = fidelity.mask_scores(probabilities > threshold, masks > 0.5, beta2=beta2)
    return {key: scores[key] for key in ("iou", "f", "precision", "recall")}


def prior_masks(size: int) -> dict[str, np.ndarray]:
    """The two image-blind predictions, ``(S, S)`` bool: every pixel (``all_foreground``) and the
    centred square of half the side (``centre_box``)."""
    box = np.zeros((size, size), bool)
    box[size // 4:size - size // 4, size // 4:size - size // 4] = True
    return {"all_foreground": np.ones((size, size), bool), "centre_box": box}


def prior_baselines(masks: torch.Tensor) -> dict[str, dict[str, float]]:
    """Scores of the two image-blind predictions of :func:`prior_masks`, the floor a trained
    segmenter should clear.

    Args:
        masks: ``(N, 1, S, S)`` in {0, 1} (the test split).

    Returns:
        ``{"all_foreground": {"iou", "f"}, "centre_box": {"iou", "f"}}``: mean scores of predicting
        every pixel, or the centred square of half the side, as foreground. Salient objects are
        usually large and central, so the centre box is a strong floor.
    """
    out = {}
    for name, prior in prior_masks(masks.shape[-1]).items():
        prediction = torch.from_numpy(prior).to(masks.dtype).expand_as(masks)
        scores = mask_scores(prediction, masks)
        out[name] = {"iou": float(scores["iou"].mean()), "f": float(scores["f"].mean())}
    return out


__all__ = ["F_BETA2", "THRESHOLD", "MaskPairs", "read_mask", "load_mask_pairs", "to_arrays", "split_by_hash",
           "FPNSegmenter", "build_segmenter", "TrainConfig", "labelled_batches", "segmentation_loss", "train_segmenter",
           "predict_probabilities", "mask_scores", "prior_masks", "prior_baselines"]


# ------------------------------------------------------------------------------ the protocol
@dataclass
class SegmentationSettings:
    """The options of one segmentation evaluation (the flags of ``scripts/eval_segmentation.py``)."""

    backbone: str
    images: str
    masks: str
    out: Path
    fractions: str = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"
    seeds: int = 3
    epochs: int = 20
    image_size: int | None = None
    test_split: float = 0.3
    freeze_encoder: bool = False
    batch_size: int = TrainConfig.batch_size
    lr: float | None = None
    encoder_lr: float | None = None
    fpn_channels: int = 64
    model: str = "fpn"
    backbone_seed: int = 0
    random_stem: str = "auto"
    device: str = "cpu"
    command: str = ""


#: The downstream models of ``--model``: name -> (what it is, default head rate, default encoder rate, optimiser).
MODELS = {"fpn": ("FPN segmenter (foreground logit per pixel)", TrainConfig.lr, TrainConfig.encoder_lr, "Adam"),
          "maskrcnn": ("torchvision Mask R-CNN (instances = connected components of the masks)", 0.01, 0.001,
                       "SGD momentum 0.9, linear warm-up, gradients clipped to norm 10")}


def evaluate_segmentation(s: SegmentationSettings, verbose: bool = True) -> dict:
    """Train a model per label fraction and seed, score it on the fixed test split and write the
    report (results.json, results.csv, results.md, scores_vs_fraction.png) to ``s.out``.

    ``s.model`` is ``"fpn"`` (the FPN segmenter: foreground IoU and F-measure) or ``"maskrcnn"``
    (:mod:`saliencyssl.eval.detection`: the same two scores of the union of its confident masks,
    and COCO AP of its instance masks and boxes).

    Returns:
        The results, as written to ``results.json``.
    """
    import platform
    import time

    from tqdm import tqdm

    from saliencyssl.eval import fractions as frac, report
    from saliencyssl.eval.features import open_backbone

    started = time.time()
    fractions = frac.parse_fractions(s.fractions)
    seeds = list(range(s.seeds))
    out_dir = Path(s.out)

    if s.model not in MODELS:
        raise ValueError(f"--model {s.model!r}: choose one of {', '.join(MODELS)}")
    description, default_lr, default_encoder_lr, optimiser = MODELS[s.model]
    lr = default_lr if s.lr is None else s.lr
    encoder_lr = default_encoder_lr if s.encoder_lr is None else s.encoder_lr
    encoder, info = open_backbone(s.backbone, s.image_size, s.backbone_seed, s.random_stem)
    pairs = load_mask_pairs(s.images, s.masks)
    images, masks = to_arrays(pairs, info.image_size)
    train_idx, test_idx = split_by_hash(pairs.images.hashes(), s.test_split)
    steps = s.epochs * math.ceil(len(train_idx) / s.batch_size)
    config = TrainConfig(steps=steps, batch_size=s.batch_size, lr=lr, encoder_lr=encoder_lr,
                         freeze_encoder=s.freeze_encoder)
    test_images, test_masks = images[test_idx], masks[test_idx]
    if s.model == "maskrcnn":
        from saliencyssl.eval import detection

        instances = [detection.instances_from_mask(m[0].numpy() > 0.5) for m in masks]
        test_instances = [instances[i] for i in test_idx]
    bar = tqdm(total=steps * len(fractions) * len(seeds), desc=f"training {s.model} models", unit="step")

    def score(subset, seed):
        labelled = train_idx[subset]

        def on_step(step, loss):
            bar.update(1)
            bar.set_postfix(n=len(labelled), seed=seed, loss=f"{loss:.3f}")

        if s.model == "fpn":
            model = build_segmenter(encoder, seed, s.fpn_channels)
            train_segmenter(model, images, masks, labelled, config, seed, s.device, on_step)
            scores = mask_scores(predict_probabilities(model, test_images, device=s.device), test_masks)
            return {"iou": float(scores["iou"].mean()), "f": float(scores["f"].mean())}
        model = detection.build_maskrcnn(encoder, info.image_size, seed, s.fpn_channels)
        detection.train_maskrcnn(model, images, instances, labelled, config, seed, s.device, on_step)
        predictions = detection.predict_instances(model, test_images, device=s.device)
        scores = mask_scores(detection.foreground(predictions, info.image_size), test_masks)
        return {"iou": float(scores["iou"].mean()), "f": float(scores["f"].mean()),
                **detection.coco_scores(predictions, test_instances)}

    # One "class" for the whole training split: subsets are plain random draws of round(fraction * n).
    train_labels = np.zeros(len(train_idx), np.int64)
    results_by_fraction = frac.sweep(train_labels, fractions, seeds, score)
    bar.close()

    baselines = prior_baselines(test_masks)
    lines = {"foreground IoU": "iou", "F-measure (beta^2=0.3)": "f"}
    if s.model == "maskrcnn":
        for name, predictions in detection.prior_instances(info.image_size, len(test_idx)).items():
            baselines[name].update(detection.coco_scores(predictions, test_instances))
        lines.update({"mask AP": "mask_ap", "mask AP50": "mask_ap50"})
    plot = report.plot_fraction_curves({name: results_by_fraction for name in lines}, lines, "score on the test split",
                                       out_dir / "scores_vs_fraction.png",
                                       title=f"foreground segmentation at {info.image_size}px ({s.model})",
                                       references={"centre-box IoU": baselines["centre_box"]["iou"],
                                                   "centre-box F": baselines["centre_box"]["f"]})
    elapsed = time.time() - started
    meta = {
        "backbone": info.to_json(),
        "datasets": {"images": {"path": str(s.images), "n_images": len(pairs)},
                     "masks": {"path": str(s.masks), "n_images": len(pairs)}},
        "split": {"test_split": s.test_split, "by": "content hash (sorted, first round(T*n))",
                  "n_train": int(len(train_idx)), "n_test": int(len(test_idx)),
                  "test_images": [pairs.images.names[i] for i in test_idx]},
        "fractions": [t for t, _ in fractions], "seeds": seeds,
        "training": {"model": s.model, "description": description, "epochs": s.epochs, "steps": steps,
                     "batch_size": s.batch_size, "optimiser": optimiser, "lr": lr,
                     "encoder_lr": encoder_lr if not s.freeze_encoder else None,
                     "freeze_encoder": s.freeze_encoder, "fpn_channels": s.fpn_channels,
                     "loss": "BCE + soft Dice" if s.model == "fpn" else "Mask R-CNN (RPN, box, class, mask)",
                     "augmentation": "horizontal flip"},
        "scores": {"threshold": THRESHOLD, "f_beta2": F_BETA2, "resolution": info.image_size,
                   "averaged": "over test images, then mean/std over seeds",
                   **({"instances": f"8-connected components of the masks covering at least "
                                    f"{detection.MIN_INSTANCE_AREA:.1%} of the image",
                       "n_test_instances": sum(len(t) for t in test_instances),
                       "foreground": f"union of the masks (> {detection.MASK_THRESHOLD}) of detections scoring "
                                     f">= {detection.SCORE_THRESHOLD}",
                       "ap": "pycocotools COCOeval, one class, IoU 0.50:0.95 (AP), 0.50, 0.75; box AP 0.50:0.95"}
                      if s.model == "maskrcnn" else {})},
        "baselines": baselines,
        "device": s.device, "threads": torch.get_num_threads(), "plots": {"scores": str(plot)},
        "timings": {"total_s": elapsed}, "command": s.command,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    results = report.segmentation_results(results_by_fraction, meta)
    rows = report.segmentation_rows(results_by_fraction)
    paths = report.write_report(out_dir, results, rows, report.segmentation_markdown(results, rows))
    if not verbose:
        return results
    print("IoU: " + ", ".join(f"{e.fraction}: {e.mean('iou'):.3f}±{e.std('iou'):.3f}" for e in results_by_fraction))
    print("F:   " + ", ".join(f"{e.fraction}: {e.mean('f'):.3f}±{e.std('f'):.3f}" for e in results_by_fraction))
    if s.model == "maskrcnn":
        print("mask AP: " + ", ".join(f"{e.fraction}: {e.mean('mask_ap'):.3f}±{e.std('mask_ap'):.3f}"
                                      for e in results_by_fraction))
    print(f"wrote {paths['json']}, {paths['csv'].name}, {paths['md'].name} and {Path(plot).name} to {out_dir} "
          f"in {elapsed:.1f}s")
    return results


