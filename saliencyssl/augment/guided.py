"""Saliency-guided crops: ContrastiveCrop's centre-suppressed placement inside the salient object's box.

ContrastiveCrop (Peng et al., "Crafting Better Contrastive Views for Siamese Representation
Learning", CVPR 2022; github xyupeng/ContrastiveCrop, ``datasets/transforms/ContrastiveCrop.py``
and ``DDP_simclr_ccrop.py``) keeps RandomResizedCrop's scale and ratio and only changes where the
crop goes. For an ``H x W`` image whose object box spans rows ``r0..r1`` and columns ``c0..c1``
(inclusive), and a crop of ``h x w`` pixels:

1. the crop's top row ranges over ``t0 = clip(r0 - h // 2, 0, H - h)`` .. ``t1 = clip(r1 - h // 2, 0, H - h)``,
   the tops of the crops centred on the box's first and last row, clipped so that the crop stays
   inside the image (columns likewise, ``l0 .. l1``);
2. ``top = t0 + floor((t1 - t0) * u)`` and ``left = l0 + floor((l1 - l0) * v)`` with ``u, v``
   independent draws of Beta(alpha, alpha). With alpha < 1 the Beta is U-shaped: centres are
   pushed away from the box's middle towards its edges ("centre-suppressed"), so two views of one
   image overlap less while both stay on the object; alpha = 1 is uniform. ContrastiveCrop uses
   alpha = 0.1 on CIFAR.

So the crop's centre row ``top + h // 2`` lies within the box's rows unless the crop would leave
the image, in which case it is pushed inside (and still covers the box's nearest rows).

Boxes come from the targets (:func:`target_boxes`): the SaliencyCut mask's bounding box (``mask``,
the default), or the rows and columns where the RC saliency map, min-max normalised per image,
exceeds a threshold (``rc``; ContrastiveCrop thresholds its normalised heatmap at 0.1).

Where this departs from ContrastiveCrop, and why:

- the box is the labeller's (SaliencyCut mask or RC map, computed once and cached), not the
  network's own last-layer heatmap recomputed every 100 epochs -- the point of this toolkit is
  to use its exact, cached targets;
- guidance applies from the first step: ContrastiveCrop uses plain crops for the first 100 of its
  500 epochs, while its heatmaps are still meaningless; ours are meaningful from the start, and
  the policy does not know the epoch (no warm-up option);
- an image without a box (an empty mask, or a flat RC map) gets the plain crop; ContrastiveCrop
  starts every image with the whole image as its box;
- crop sizes are kornia's RandomResizedCrop draws (ten candidates per image, as torchvision and
  ContrastiveCrop; when none fits, kornia keeps the whole image where ContrastiveCrop takes the
  central crop of the ratio's bound -- for a square image both are the whole image);
- a probability ``p`` per image of guiding the crop at all (ContrastiveCrop guides every crop
  after its warm-up; ``p = 1`` is its setting).
"""

from __future__ import annotations

import torch

from saliencyssl.target import TargetBatch

#: Where the guiding box comes from: the SaliencyCut mask, or the RC saliency map thresholded.
BOX_SOURCES = ("mask", "rc")


def target_boxes(targets: TargetBatch, source: str = "mask", threshold: float = 0.1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounding box of each image's salient object.

    Args:
        targets: ``(B, 1, H, W)`` targets.
        source: ``mask`` (the SaliencyCut mask's pixels) or ``rc`` (pixels where the RC map,
            min-max normalised per image, exceeds ``threshold``, as ContrastiveCrop does with its
            heatmap).
        threshold: the ``rc`` threshold in [0, 1).

    Returns:
        ``boxes`` ``(B, 4)`` long ``(row0, col0, row1, col1)``, inclusive pixel indices (zeros for
        an image without a box), and ``has_box`` ``(B,)`` bool: False for an empty mask, or for an
        RC map that is flat (nothing stands out) under ``rc``. Both on the targets' device.
    """
    if source == "mask":
        fg = targets.mask[:, 0]
    elif source == "rc":
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"the RC box threshold must be in [0, 1), got {threshold}")
        sal = targets.saliency[:, 0].float()
        lo = sal.amin(dim=(1, 2), keepdim=True)
        span = sal.amax(dim=(1, 2), keepdim=True) - lo
        fg = ((sal - lo) > threshold * span) & (span > 0)
    else:
        raise ValueError(f"unknown crop box source {source!r}; choose one of {', '.join(BOX_SOURCES)}")
    b, h, w = fg.shape
    rows, cols = fg.any(2), fg.any(1)  # (B, H), (B, W)
    has_box = rows.any(1)
    r0 = rows.int().argmax(1)
    r1 = h - 1 - rows.flip(1).int().argmax(1)
    c0 = cols.int().argmax(1)
    c1 = w - 1 - cols.flip(1).int().argmax(1)
    boxes = torch.stack([r0, c0, r1, c1], dim=1).long()
    return torch.where(has_box[:, None], boxes, torch.zeros_like(boxes)), has_box


def guide_crop_parameters(params: dict[str, torch.Tensor], boxes: torch.Tensor, has_box: torch.Tensor,
                          alpha: float = 0.1, p: float = 1.0) -> dict[str, torch.Tensor]:
    """Move kornia RandomResizedCrop crops into their images' boxes (ContrastiveCrop's placement).

    Args:
        params: parameters of :class:`kornia.augmentation.RandomResizedCrop` from its
            ``forward_parameters``: ``src`` ``(B, 4, 2)`` float crop corners ``(x, y)`` (inclusive,
            clockwise from the top left) and ``input_size`` ``(B, 2)`` long ``(H, W)``.
        boxes, has_box: from :func:`target_boxes`.
        alpha: the Beta(alpha, alpha) concentration (> 0; ContrastiveCrop: 0.1 on CIFAR; 1 = uniform).
        p: probability that an image with a box gets a guided crop.

    Returns:
        A new parameter dict for the same module (``params(..., params=...)``): ``src`` moved for the
        guided images, the crop sizes kept; plus ``box`` ``(B, 4)`` long ``(row0, col0, row1, col1)``
        and ``guided`` ``(B,)`` bool. Images without a box keep their plain crop. The Beta draws
        (two per image, rows then columns) and, when ``p < 1``, one uniform draw per image come from
        torch's global generator on the CPU, after the plain crop's draws.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (Beta concentration), got {alpha}")
    device = params["src"].device
    src = params["src"].to("cpu")
    b = src.shape[0]
    cpu_boxes, guided = boxes.to("cpu"), has_box.to("cpu").bool()
    if p < 1.0:
        guided = guided & (torch.rand(b) < p)
    u = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample((b, 2))
    size = params["input_size"].to("cpu").long()  # (B, 2) = (H, W)
    x0, y0 = src[:, 0, 0].round().long(), src[:, 0, 1].round().long()
    w = src[:, 1, 0].round().long() - x0 + 1
    h = src[:, 2, 1].round().long() - y0 + 1
    height, width = size[:, 0], size[:, 1]

    def start(first: torch.Tensor, last: torch.Tensor, extent: torch.Tensor, limit: torch.Tensor,
              draw: torch.Tensor) -> torch.Tensor:
        lo = torch.minimum((first - extent // 2).clamp(min=0), limit - extent)
        hi = torch.minimum((last - extent // 2).clamp(min=0), limit - extent)
        return lo + torch.floor((hi - lo).to(draw.dtype) * draw).long()

    top = start(cpu_boxes[:, 0], cpu_boxes[:, 2], h, height, u[:, 0])
    left = start(cpu_boxes[:, 1], cpu_boxes[:, 3], w, width, u[:, 1])
    top, left = torch.where(guided, top, y0), torch.where(guided, left, x0)
    moved = torch.stack([torch.stack([left, top], -1), torch.stack([left + w - 1, top], -1),
                         torch.stack([left + w - 1, top + h - 1], -1), torch.stack([left, top + h - 1], -1)], dim=1)
    out = dict(params)
    out["src"] = moved.to(device=device, dtype=src.dtype)
    out["box"] = cpu_boxes
    out["guided"] = guided
    return out


__all__ = ["BOX_SOURCES", "target_boxes", "guide_crop_parameters"]
