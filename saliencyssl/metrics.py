"""Per-image scores of binary masks and saliency maps against a reference, vectorised over a batch.

The conventions of salient-object detection, shared by the stages that score masks or maps
(surrogate fidelity, the human-mask comparison, downstream segmentation):

- **F-measure** with ``beta^2 = 0.3`` (:data:`F_BETA2`), ``F = (1 + b2) P R / (b2 P + R)``,
  weighting precision over recall (Achanta et al., "Frequency-tuned salient region detection",
  CVPR 2009; Cheng et al., "Global contrast based salient region detection", TPAMI 2015, sec. 5);
- **IoU** (Jaccard index) of the binary masks;
- **MAE**: mean absolute difference between a saliency map in [0, 1] and the reference, a binary
  ground-truth mask (as 0/1) or another map (Perazzi et al., "Saliency filters", CVPR 2012; also
  reported by Cheng et al. 2015, whose evaluation min-max normalises each map first:
  ``normalise=True``).

Every function takes a batch, ``(N, H, W)`` or ``(N, 1, H, W)``, as numpy arrays or torch
tensors on any device, and returns ``(N,)`` float64 numpy arrays. Nothing here knows about
targets, caches or models.
"""

from __future__ import annotations

import numpy as np
import torch

#: beta^2 of the F-measure: precision weighted over recall (Achanta et al. 2009, Cheng et al. 2015).
F_BETA2 = 0.3


def as_masks(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` bool tensor from ``(N, H, W)``, ``(N, 1, H, W)`` or one ``(H, W)`` mask (non-zero = True)."""
    t = torch.as_tensor(x)
    if t.ndim == 4:
        t = t[:, 0]
    if t.ndim == 2:
        t = t[None]
    return t.bool()


def _as_maps(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim == 4:
        t = t[:, 0]
    if t.ndim == 2:
        t = t[None]
    return t.double()


def f_measure(precision: np.ndarray | float, recall: np.ndarray | float, beta2: float = F_BETA2) -> np.ndarray:
    """``F = (1 + b2) P R / (b2 P + R)``, elementwise; 0 where ``P = R = 0``.

    Args:
        precision, recall: arrays (or floats) in [0, 1] of one shape.
        beta2: ``beta^2``; 0.3 weights precision over recall.

    Returns:
        float64 array of that shape, in [0, 1].
    """
    p, r = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    denom = beta2 * p + r
    return np.where(denom > 0, (1 + beta2) * p * r / np.maximum(denom, 1e-12), 0.0)


def mask_scores(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
                beta2: float = F_BETA2) -> dict[str, np.ndarray]:
    """Per-image agreement of predicted masks with reference masks.

    Args:
        pred, truth: ``(N, H, W)`` or ``(N, 1, H, W)`` masks (bool, or non-zero = object), numpy
            or torch, of one shape.
        beta2: F-measure weight (:func:`f_measure`).

    Returns:
        ``(N,)`` float64 arrays in [0, 1]: ``iou``, ``dice``, ``precision``, ``recall``, ``f``;
        and ``(N,)`` bool arrays ``present`` (reference mask not empty) and ``pred_present``.

        Empty cases: both empty -> every score 1. Prediction empty, reference not -> precision 0,
        recall 0, all 0. Reference empty, prediction not -> precision 0, recall 1 (nothing was
        missed), IoU, Dice and F 0.

    Raises:
        ValueError: the shapes differ (naming both).
    """
    p, t = as_masks(pred), as_masks(truth)
    if p.shape != t.shape:
        raise ValueError(f"predicted masks {tuple(p.shape)} and reference masks {tuple(t.shape)} differ in shape")
    p, t = p.flatten(1), t.to(p.device).flatten(1)
    tp = (p & t).sum(1).double()
    n_p, n_t = p.sum(1).double(), t.sum(1).double()
    union = n_p + n_t - tp
    one = torch.ones_like(tp)
    iou = torch.where(union > 0, tp / union.clamp(min=1), one)
    dice = torch.where(n_p + n_t > 0, 2 * tp / (n_p + n_t).clamp(min=1), one)
    precision = torch.where(n_p > 0, tp / n_p.clamp(min=1), ((n_p == 0) & (n_t == 0)).double())
    recall = torch.where(n_t > 0, tp / n_t.clamp(min=1), one)
    precision_np, recall_np = precision.cpu().numpy(), recall.cpu().numpy()
    return {"iou": iou.cpu().numpy(), "dice": dice.cpu().numpy(), "precision": precision_np, "recall": recall_np,
            "f": f_measure(precision_np, recall_np, beta2), "present": (n_t > 0).cpu().numpy(),
            "pred_present": (n_p > 0).cpu().numpy()}


def minmax_normalise(saliency: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Each map stretched to [0, 1] by its own minimum and maximum; a constant map becomes all zero.

    This is how Cheng et al.'s evaluation (CmEvaluation) reads a map before scoring it (OpenCV's
    ``NORM_MINMAX``, which maps a constant image to its lower bound).

    Args:
        saliency: ``(N, H, W)`` or ``(N, 1, H, W)`` maps of any real range.

    Returns:
        ``(N, H, W)`` float64 tensor in [0, 1], on the input's device.
    """
    s = _as_maps(saliency)
    flat = s.flatten(1)
    lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (s - lo) / span.clamp(min=1e-300), torch.zeros_like(s))


def map_mae(saliency: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
            normalise: bool = False) -> np.ndarray:
    """Per-image mean absolute error of saliency maps against a reference.

    Args:
        saliency: ``(N, H, W)`` or ``(N, 1, H, W)`` float maps in [0, 1].
        truth: the same shape: a binary mask (bool, or 0/1), scored as 0/1, or a map in [0, 1].
        normalise: min-max normalise each map first (:func:`minmax_normalise`, Cheng et al.'s
            convention against ground truth); otherwise the map is used as given, so a map that
            says "nothing" with zeros, or a faint one, is scored as such.

    Returns:
        ``(N,)`` float64 in [0, 1].

    Raises:
        ValueError: the shapes differ (naming both).
    """
    s, t = _as_maps(saliency), _as_maps(truth)
    if s.shape != t.shape:
        raise ValueError(f"saliency maps {tuple(s.shape)} and references {tuple(t.shape)} differ in shape")
    if normalise:
        s = minmax_normalise(s)
    return (s - t.to(s.device)).abs().flatten(1).mean(1).cpu().numpy()

def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Differentiable ``1 - Dice`` of predicted masks, averaged over images (a training loss, not a score).

    Mean over images of ``1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)`` with ``p = sigmoid(logits)``;
    the smoothing ``s`` makes an image whose target is empty pull its prediction to empty.

    Args:
        logits: ``(B, 1, H, W)`` float logits.
        target: ``(B, 1, H, W)`` float in {0, 1}.
        smooth: ``s``, in pixels.

    Returns:
        A 0-d float32 tensor in [0, 1].
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    y = target.float().flatten(1)
    dice = (2.0 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
    return (1.0 - dice).mean()


def prior_masks(size: int) -> dict[str, np.ndarray]:
    """The two image-blind predictions, ``(S, S)`` bool: every pixel (``all_foreground``) and the
    centred square of half the side (``centre_box``)."""
    box = np.zeros((size, size), bool)
    box[size // 4:size - size // 4, size // 4:size - size // 4] = True
    return {"all_foreground": np.ones((size, size), bool), "centre_box": box}


__all__ = ["F_BETA2", "as_masks", "f_measure", "mask_scores", "minmax_normalise", "map_mae", "soft_dice_loss",
           "prior_masks"]
