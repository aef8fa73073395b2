"""The FPN segmenter on a pretrained ResNet-18 encoder: model, training, prediction.

This downstream model asks how well the backbone's features *localise* the salient object when
a small segmentation model is trained on top of it with few masks:

- :class:`FPNSegmenter` puts a feature pyramid (:class:`torchvision.ops.FeaturePyramidNetwork`)
  over ResNet-18's layers 1-4, sums its levels at the finest one and predicts one foreground
  logit per pixel, upsampled bilinearly to the input size;
- :func:`train_segmenter` fine-tunes it (or trains the decoder only, ``freeze_encoder=True``)
  with binary cross-entropy plus soft Dice, seeded;
- :class:`FPNProtocol` is what the segmentation stage runs per label fraction and seed (the
  instance-segmentation counterpart is :class:`~saliencyssl.eval.detection.MaskRCNNProtocol`).

Data, split, batches and scores: :mod:`saliencyssl.eval.masks`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saliencyssl.eval.masks import SegmentTrainConfig, labelled_batches, probability_scores, prior_baselines
from saliencyssl.metrics import soft_dice_loss
from saliencyssl.ssl.backbone import to_model_input


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
def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (1 - Dice over each image, averaged).

    Args:
        logits: ``(B, 1, H, W)`` float; target: ``(B, 1, H, W)`` in {0, 1}.
    """
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)


def train_segmenter(model: FPNSegmenter, images: torch.Tensor, masks: torch.Tensor, indices: np.ndarray,
                    config: SegmentTrainConfig, seed: int, device: str | torch.device = "cpu",
                    on_step: Callable[[int, float], None] | None = None) -> FPNSegmenter:
    """Train ``model`` on the labelled images ``indices``.

    Args:
        model: from :func:`build_segmenter`.
        images: ``(N, 3, S, S)`` uint8; masks: ``(N, 1, S, S)`` float32 in {0, 1}.
        indices: the labelled subset (indices into ``images``).
        config: see :class:`~saliencyssl.eval.masks.SegmentTrainConfig`.
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



class FPNProtocol:
    """The FPN segmenter as a downstream protocol: train on the labelled images, score the test split.

    Args:
        masks: ``(N, 1, S, S)`` float32 masks of every image (unused: the FPN trains on them directly).
        test_index: the test split.
        image_size: ``S``.
        fpn_channels: channels of the feature pyramid.
    """

    name = "fpn"
    description = "FPN segmenter (foreground logit per pixel)"
    lr, encoder_lr, optimiser = SegmentTrainConfig.lr, SegmentTrainConfig.encoder_lr, "Adam"
    loss = "BCE + soft Dice"
    #: Score lines of the plot beyond foreground IoU and F.
    extra_lines: dict[str, str] = {}

    def __init__(self, masks: torch.Tensor, test_index: np.ndarray, image_size: int, fpn_channels: int = 64):
        self.image_size, self.fpn_channels = image_size, fpn_channels

    def score(self, encoder: nn.Module, images: torch.Tensor, masks: torch.Tensor, labelled: np.ndarray,
              config: SegmentTrainConfig, seed: int, device, on_step, test_images: torch.Tensor,
              test_masks: torch.Tensor) -> dict[str, float]:
        """Train a fresh segmenter on ``labelled`` and return its mean test ``iou`` and ``f``."""
        model = build_segmenter(encoder, seed, self.fpn_channels)
        train_segmenter(model, images, masks, labelled, config, seed, device, on_step)
        scores = probability_scores(predict_probabilities(model, test_images, device=device), test_masks)
        return {"iou": float(scores["iou"].mean()), "f": float(scores["f"].mean())}

    def baselines(self, test_masks: torch.Tensor) -> dict[str, dict[str, float]]:
        return prior_baselines(test_masks)

    def scores_meta(self) -> dict:
        return {}


__all__ = ["FPNSegmenter", "build_segmenter", "segmentation_loss", "train_segmenter", "predict_probabilities",
           "FPNProtocol"]
