"""The input convention of the backbone: RGB in [0, 1], normalised with ImageNet's mean and deviation.

The last step of every view (:class:`~saliencyssl.augment.SSLAugmentation`) and of every
evaluation's forward pass, so it lives with the views and the backbone (:mod:`saliencyssl.ssl`)
imports it from here.
"""

from __future__ import annotations

import torch

#: Per-channel mean and standard deviation of ImageNet (RGB), torchvision's normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Turn RGB images into normalised model input.

    Args:
        images: ``(B, 3, H, W)`` uint8 in 0..255, or float in [0, 1].

    Returns:
        ``(B, 3, H, W)`` float32 (or the input's float dtype), normalised with
        :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
    """
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def from_model_input(inputs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_input`: ``(B, 3, H, W)`` float in [0, 1] (clamped), for pictures."""
    mean = torch.tensor(IMAGENET_MEAN, device=inputs.device, dtype=inputs.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=inputs.device, dtype=inputs.dtype).view(1, 3, 1, 1)
    return (inputs * std + mean).clamp(0, 1)
