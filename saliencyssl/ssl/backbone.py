"""The ResNet-18 backbone that every SSL method trains and every evaluation tool loads.

torchvision's ResNet-18 with its classifier removed, so a forward pass returns the 512-d
penultimate features. For small inputs (up to 64 px) the ImageNet stem (7x7 stride-2
convolution and max-pool) throws away most of the image, so the *CIFAR stem* replaces it with a
3x3 stride-1 convolution and no max-pool, as in lightly's CIFAR-10 benchmarks.

A trained backbone travels as ``backbone.pt``: ``{"state_dict": ..., "config": {...}}`` written
by :func:`save_backbone` and read by :func:`load_backbone`. The config records at least
``arch``, ``cifar_stem``, ``feature_dim`` and ``image_size``; pretraining adds the method,
policy and augmentation source it was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# The input convention (ImageNet's normalisation) is the views' last step: defined with them.
from saliencyssl.augment.normalize import IMAGENET_MEAN, IMAGENET_STD, to_model_input  # noqa: F401

#: Inputs up to this side length get the CIFAR stem by default.
CIFAR_STEM_MAX_SIZE = 64
FEATURE_DIM = 512


def uses_cifar_stem(image_size: int) -> bool:
    """The default stem choice for an input side length."""
    return int(image_size) <= CIFAR_STEM_MAX_SIZE


def resnet18_backbone(cifar_stem: bool) -> nn.Module:
    """torchvision ResNet-18 (random weights) returning ``(B, 512)`` features.

    Args:
        cifar_stem: replace the 7x7/2 convolution and max-pool by a 3x3/1 convolution.

    Returns:
        A module mapping ``(B, 3, H, W)`` float images to ``(B, 512)`` features.
    """
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def save_backbone(path: str | Path, backbone: nn.Module, config: dict[str, Any]) -> Path:
    """Write ``{"state_dict", "config"}`` atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"arch": "resnet18", "feature_dim": FEATURE_DIM, **config}
    if "cifar_stem" not in config:
        raise ValueError("backbone config needs 'cifar_stem'")
    state = {k: v.detach().cpu() for k, v in _unwrap(backbone).state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": state, "config": config}, tmp)
    tmp.replace(path)
    return path


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a backbone written by :func:`save_backbone`.

    ``path`` may also be a plain torchvision ResNet-18 state dict (for example a local ImageNet
    checkpoint); its ``fc`` weights are dropped and the stem follows its ``conv1`` kernel (7x7:
    the ImageNet stem, 3x3: the CIFAR stem).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is unreadable, holds something else (or anything but tensors and plain
            containers: it is loaded with ``weights_only=True``), or weights of another shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint {path} not found; pretraining writes one as RUN_DIR/backbone.pt")
    try:
        # weights_only: tensors and plain containers only, so a checkpoint cannot run code when loaded.
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors have no common base class
        raise ValueError(f"{path} cannot be read as a backbone checkpoint ({type(error).__name__}): it is damaged, "
                         f"or holds objects other than tensors, which are refused because loading them could run "
                         f"code; pass the backbone.pt that pretraining writes, a torchvision ResNet-18 "
                         f"state dict, or --backbone random") from error
    if isinstance(blob, dict) and "state_dict" in blob and "config" in blob:
        state, config = blob["state_dict"], dict(blob["config"])
    elif isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state = {k: v for k, v in blob.items() if not k.startswith("fc.")}
        config = {"arch": "resnet18", "cifar_stem": tuple(state.get("conv1.weight", torch.empty(0, 0, 7, 7)).shape[-1:]) == (3,),
                  "feature_dim": FEATURE_DIM, "source": str(path)}
    else:
        raise ValueError(f"{path} is not a saliency-ssl backbone (expected a dict with 'state_dict' and 'config', "
                         f"as pretraining writes)")
    model = resnet18_backbone(bool(config.get("cifar_stem", False)))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit a ResNet-18 with cifar_stem={config.get('cifar_stem')}: "
                         f"{str(error).splitlines()[0]}") from error
    return model, config


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return getattr(module, "module", module)
