"""Instance segmentation on a pretrained ResNet-18: Mask R-CNN and COCO mask AP.

The detection side of the downstream protocol (``saliency-ssl segment --model maskrcnn``).
The data, split, label fractions and batches are those of :mod:`saliencyssl.eval.masks`;
this module adds what instances need:

- :func:`instances_from_mask` turns a binary mask into instances, one per connected component
  (OpenCV, 8-connectivity), with their boxes;
- :func:`build_maskrcnn` puts torchvision's Mask R-CNN on a feature pyramid over a *copy* of the
  backbone's layers 1-4 (:class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`),
  with anchors scaled to the image size and no resizing of the input;
- :func:`train_maskrcnn` fine-tunes it (or trains the heads only) on the labelled images;
- :func:`predict_instances` and :func:`coco_scores` give pycocotools' COCO AP of the masks and
  boxes, and :func:`foreground` the union of the confident masks, so the same foreground IoU and
  F-measure as the FPN segmenter's can be reported beside AP.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from saliencyssl.eval.masks import SegmentTrainConfig, labelled_batches, probability_scores, prior_baselines, prior_masks
from saliencyssl.ssl.backbone import IMAGENET_MEAN, IMAGENET_STD

#: Connected components smaller than this share of the image are not instances (specks of a mask).
MIN_INSTANCE_AREA = 0.002
#: A detection counts towards :func:`foreground` when its score reaches this.
SCORE_THRESHOLD = 0.5
#: Pixels of a detection's mask above this probability belong to it.
MASK_THRESHOLD = 0.5
#: Linear warm-up of the learning rate over the first steps (Mask R-CNN diverges without it).
WARMUP_STEPS = 50


@dataclass
class Instances:
    """The instances of one image.

    Attributes:
        masks: ``(K, S, S)`` bool (ground truth) or float32 probabilities in [0, 1] (predictions).
        boxes: ``(K, 4)`` float32 ``x1, y1, x2, y2`` in pixels (``x2``, ``y2`` exclusive).
        scores: ``(K,)`` float32 confidence of predictions; ``None`` for ground truth.
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)


def instances_from_mask(mask: np.ndarray, min_area: float = MIN_INSTANCE_AREA) -> Instances:
    """One instance per 8-connected component of a binary mask.

    Args:
        mask: ``(S, S)`` bool or {0, 1}.
        min_area: components covering less than this share of the image are dropped.

    Returns:
        Instances ordered by component label (row-major order of their first pixel); none for an
        empty mask.
    """
    import cv2

    mask = np.asarray(mask).astype(np.uint8)
    height, width = mask.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area * height * width]
    masks = np.stack([labels == k for k in keep]) if keep else np.zeros((0, height, width), bool)
    boxes = np.array([[stats[k, cv2.CC_STAT_LEFT], stats[k, cv2.CC_STAT_TOP],
                       stats[k, cv2.CC_STAT_LEFT] + stats[k, cv2.CC_STAT_WIDTH],
                       stats[k, cv2.CC_STAT_TOP] + stats[k, cv2.CC_STAT_HEIGHT]] for k in keep],
                     np.float32).reshape(-1, 4)
    return Instances(masks, boxes)


def build_maskrcnn(encoder: nn.Module, image_size: int, seed: int, fpn_channels: int = 64) -> nn.Module:
    """A torchvision Mask R-CNN (object vs background) on a copy of ``encoder``.

    Args:
        encoder: a torchvision ResNet-18 as :func:`saliencyssl.eval.features.open_backbone` gives
            (CIFAR or ImageNet stem); its stem and ``layer1``..``layer4`` become the backbone body.
        image_size: the side ``S`` of the square inputs; anchors are ``S/16 .. S`` (one size per
            pyramid level, aspect ratios 1:2, 1:1, 2:1) and inputs are not resized (torchvision pads
            them to a multiple of 32).
        seed: initialises the pyramid and heads (the global CPU generator's state is left untouched).
        fpn_channels: channels of every pyramid level.

    Returns:
        ``torchvision.models.detection.MaskRCNN``; its ``backbone.body`` holds the encoder.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    size = int(image_size)
    sizes = tuple((max(2, round(size / 2 ** k)),) for k in (4, 3, 2, 1, 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        backbone = BackboneWithFPN(copy.deepcopy(encoder), {f"layer{i}": str(i - 1) for i in range(1, 5)},
                                   [64, 128, 256, 512], fpn_channels)
        return MaskRCNN(backbone, num_classes=2, min_size=size, max_size=size,
                        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                        rpn_anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
                        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
                        box_batch_size_per_image=128, box_score_thresh=0.01, box_detections_per_img=20)


def _target(instances: Instances, flip: bool, size: int, device) -> dict[str, torch.Tensor]:
    masks = torch.from_numpy(instances.masks.astype(np.uint8))
    boxes = torch.from_numpy(instances.boxes.copy())
    if flip:
        masks = masks.flip(-1)
        boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1)
    return {"boxes": boxes.to(device), "labels": torch.ones(len(boxes), dtype=torch.int64, device=device),
            "masks": masks.to(device)}


def train_maskrcnn(model: nn.Module, images: torch.Tensor, instances: Sequence[Instances], indices: np.ndarray,
                   config: SegmentTrainConfig, seed: int, device: str | torch.device = "cpu",
                   on_step: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``model`` on the labelled images ``indices`` with the sum of Mask R-CNN's losses.

    SGD with momentum 0.9 (torchvision's detection recipe; ``config.lr`` for the pyramid and heads,
    ``config.encoder_lr`` for the backbone body, :class:`MaskRCNNProtocol` has
    the defaults 0.01 and 0.001), linear warm-up over the first :data:`WARMUP_STEPS` steps,
    gradients clipped to norm 10. Batches and flips are
    :func:`~saliencyssl.eval.masks.labelled_batches`' (the FPN segmenter's for the same seed).

    Args:
        model: from :func:`build_maskrcnn`.
        images: ``(N, 3, S, S)`` uint8.
        instances: the ground-truth instances of every image (:func:`instances_from_mask`).
        indices: the labelled subset (indices into ``images``).
        config: steps, batch size, rates, weight decay, ``freeze_encoder``, ``flip``.
        seed: batch order, flips and Mask R-CNN's sampling of anchors and proposals (the global torch
            generators' states are left untouched; on the CPU a run repeats exactly, on CUDA RoIAlign's
            backward pass is not deterministic).
        device: where to train.
        on_step: called as ``on_step(step, loss)`` after each step.

    Returns:
        The trained model (the same object), in eval mode.
    """
    size = int(images.shape[-1])
    model = model.to(device)
    body = model.backbone.body
    body_ids = {id(p) for p in body.parameters()}
    heads = [p for p in model.parameters() if id(p) not in body_ids]
    if config.freeze_encoder:
        body.requires_grad_(False)
        groups = [{"params": heads, "lr": config.lr}]
    else:
        groups = [{"params": heads, "lr": config.lr}, {"params": list(body.parameters()), "lr": config.encoder_lr}]
    optimiser = torch.optim.SGD(groups, momentum=0.9, weight_decay=config.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
    trainable = [p for group in groups for p in group["params"]]
    # Mask R-CNN samples anchors and proposals with the global RNG: seed it for this run only.
    where = torch.device(device)
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if where.type == "cuda" else []):
        torch.manual_seed(int(seed))
        model.train()
        if config.freeze_encoder:
            body.eval()
        for step, (batch, flip) in enumerate(labelled_batches(indices, config, seed)):
            x = images[batch].to(device).float().div_(255.0)
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(-1), x)
            targets = [_target(instances[int(i)], bool(f), size, device) for i, f in zip(batch, flip)]
            losses = model(list(x), targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"Mask R-CNN loss is {float(loss)} at step {step}; lower the learning rates")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 10.0)
            optimiser.step()
            warmup.step()
            if on_step is not None:
                on_step(step, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def predict_instances(model: nn.Module, images: torch.Tensor, batch_size: int = 16,
                      device: str | torch.device = "cpu") -> list[Instances]:
    """The detections of ``model`` on ``(N, 3, S, S)`` uint8 images (scores above 0.01, at most 20)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255.0)
        for detection in model(list(x)):
            out.append(Instances(detection["masks"][:, 0].float().cpu().numpy(),
                                 detection["boxes"].float().cpu().numpy(),
                                 detection["scores"].float().cpu().numpy()))
    return out


def foreground(predictions: Sequence[Instances], size: int, score_threshold: float = SCORE_THRESHOLD,
               mask_threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """``(N, 1, S, S)`` float32 in {0, 1}: the union of the masks of detections scoring at least
    ``score_threshold``, each thresholded at ``mask_threshold`` (the semantic mask of the instances)."""
    out = torch.zeros((len(predictions), 1, size, size))
    for i, p in enumerate(predictions):
        confident = p.scores >= score_threshold
        if confident.any():
            out[i, 0] = torch.from_numpy((p.masks[confident] > mask_threshold).any(axis=0).astype(np.float32))
    return out


def coco_scores(predictions: Sequence[Instances], truths: Sequence[Instances]) -> dict[str, float]:
    """COCO average precision of the predicted masks and boxes (pycocotools ``COCOeval``, one class).

    Returns:
        ``{"mask_ap", "mask_ap50", "mask_ap75", "box_ap"}``: AP over IoU 0.50:0.95, at 0.50 and 0.75
        (at most 100 detections per image). AP is 0 when nothing was predicted, NaN when the
        ground truth has no instance at all.

    Raises:
        ImportError: pycocotools is not installed (naming the fix).
    """
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:  # pragma: no cover - a dependency of the package
        raise ImportError("Mask R-CNN AP needs pycocotools: pip install pycocotools") from error

    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} images")
    keys = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap")
    if not any(len(t) for t in truths):
        return {key: math.nan for key in keys}
    if not any(len(p) for p in predictions):
        return {key: 0.0 for key in keys}

    def rle(mask: np.ndarray) -> dict:
        return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))

    def xywh(box: np.ndarray) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    height, width = truths[0].masks.shape[-2:]
    annotations, detections = [], []
    for image_id, (truth, prediction) in enumerate(zip(truths, predictions)):
        for mask, box in zip(truth.masks, truth.boxes):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": rle(mask), "area": float(mask.sum()), "bbox": xywh(box),
                                "iscrowd": 0})
        for mask, box, score in zip(prediction.masks, prediction.boxes, prediction.scores):
            detections.append({"image_id": image_id, "category_id": 1, "segmentation": rle(mask > MASK_THRESHOLD),
                               "bbox": xywh(box), "score": float(score)})
    ground = COCO()
    ground.dataset = {"images": [{"id": i, "height": int(height), "width": int(width)} for i in range(len(truths))],
                      "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        ground.createIndex()
        for kind in ("segm", "bbox"):
            found = ground.loadRes([dict(d) for d in detections])
            evaluation = COCOeval(ground, found, kind)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            stats = [math.nan if v < 0 else float(v) for v in evaluation.stats[:3]]  # -1 = undefined
            if kind == "segm":
                out.update(mask_ap=stats[0], mask_ap50=stats[1], mask_ap75=stats[2])
            else:
                out["box_ap"] = stats[0]
    return out


def prior_instances(size: int, n: int) -> dict[str, list[Instances]]:
    """The image-blind predictions of :func:`~saliencyssl.eval.masks.prior_masks` as one
    instance per image with score 1 (the floors of :func:`coco_scores`)."""
    out = {}
    for name, prior in prior_masks(size).items():
        instance = instances_from_mask(prior, min_area=0.0)
        prediction = Instances(instance.masks.astype(np.float32), instance.boxes, np.ones(1, np.float32))
        out[name] = [prediction] * n
    return out



class MaskRCNNProtocol:
    """Mask R-CNN as a downstream protocol: instances are the masks' connected components.

    Args:
        masks: ``(N, 1, S, S)`` float32 masks of every image (turned into instances once).
        test_index: the test split.
        image_size: ``S``.
        fpn_channels: channels of the feature pyramid.
    """

    name = "maskrcnn"
    description = "torchvision Mask R-CNN (instances = connected components of the masks)"
    lr, encoder_lr = 0.01, 0.001
    optimiser = "SGD momentum 0.9, linear warm-up, gradients clipped to norm 10"
    loss = "Mask R-CNN (RPN, box, class, mask)"
    extra_lines = {"mask AP": "mask_ap", "mask AP50": "mask_ap50"}

    def __init__(self, masks: torch.Tensor, test_index: np.ndarray, image_size: int, fpn_channels: int = 64):
        self.image_size, self.fpn_channels = image_size, fpn_channels
        self.instances = [instances_from_mask(m[0].numpy() > 0.5) for m in masks]
        self.test_instances = [self.instances[i] for i in test_index]

    def score(self, encoder: nn.Module, images: torch.Tensor, masks: torch.Tensor, labelled: np.ndarray,
              config: SegmentTrainConfig, seed: int, device, on_step, test_images: torch.Tensor,
              test_masks: torch.Tensor) -> dict[str, float]:
        """Train a fresh Mask R-CNN on ``labelled``; mean test ``iou`` and ``f`` of its foreground, and COCO AP."""
        model = build_maskrcnn(encoder, self.image_size, seed, self.fpn_channels)
        train_maskrcnn(model, images, self.instances, labelled, config, seed, device, on_step)
        predictions = predict_instances(model, test_images, device=device)
        scores = probability_scores(foreground(predictions, self.image_size), test_masks)
        return {"iou": float(scores["iou"].mean()), "f": float(scores["f"].mean()),
                **coco_scores(predictions, self.test_instances)}

    def baselines(self, test_masks: torch.Tensor) -> dict[str, dict[str, float]]:
        baselines = prior_baselines(test_masks)
        for name, predictions in prior_instances(self.image_size, len(self.test_instances)).items():
            baselines[name].update(coco_scores(predictions, self.test_instances))
        return baselines

    def scores_meta(self) -> dict:
        return {"instances": f"8-connected components of the masks covering at least {MIN_INSTANCE_AREA:.1%} of "
                             f"the image",
                "n_test_instances": sum(len(t) for t in self.test_instances),
                "foreground": f"union of the masks (> {MASK_THRESHOLD}) of detections scoring >= {SCORE_THRESHOLD}",
                "ap": "pycocotools COCOeval, one class, IoU 0.50:0.95 (AP), 0.50, 0.75; box AP 0.50:0.95"}


__all__ = ["Instances", "instances_from_mask", "build_maskrcnn", "train_maskrcnn", "predict_instances",
           "foreground", "coco_scores", "prior_instances", "MIN_INSTANCE_AREA", "SCORE_THRESHOLD",
           "MASK_THRESHOLD", "WARMUP_STEPS", "MaskRCNNProtocol"]