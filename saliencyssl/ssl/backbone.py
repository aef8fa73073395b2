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
from saliencyssl.files import temporary_beside
from saliencyssl.text import short_repr
from saliencyssl.torchfiles import UnsafeTorchFileError, load_torch_file

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
    with temporary_beside(path) as tmp:
        torch.save({"state_dict": state, "config": config}, tmp)
    return path


class BackboneCheckpointError(ValueError):
    """A backbone checkpoint that cannot be used: unreadable, of another form, a config field of the
    wrong type or out of range, or weights that do not fit a ResNet-18. The message is one line
    that names the file, what is wrong and what to pass instead."""


#: What to pass instead of a file that is refused (the end of every :class:`BackboneCheckpointError`).
_INSTEAD = ("pass the backbone.pt that pretraining writes, a torchvision ResNet-18 state dict, or the random "
            "backbone")


def check_backbone_config(path: str | Path, config: Any) -> dict[str, Any]:
    """The config of a backbone checkpoint, its fields checked: a dict with text keys whose
    ``cifar_stem`` is a bool, ``image_size`` (when given) a whole number of pixels from
    :data:`~saliencyssl.datasets.MIN_IMAGE_SIZE` to :data:`~saliencyssl.datasets.MAX_IMAGE_SIZE`,
    ``arch`` (when given) ``"resnet18"`` and ``feature_dim`` (when given) 512.

    Raises:
        BackboneCheckpointError: naming ``path`` and the field.
    """
    from saliencyssl.datasets import check_image_size

    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise BackboneCheckpointError(f"{path}: the backbone config must be a dict of named settings, the file holds "
                                      f"{short_repr(config)}; {_INSTEAD}")
    config = dict(config)
    if not isinstance(config.get("cifar_stem", False), bool):
        raise BackboneCheckpointError(f"{path}: config cifar_stem must be true or false, the file says "
                                      f"{short_repr(config['cifar_stem'])}; {_INSTEAD}")
    if config.get("image_size") is not None:
        try:
            config["image_size"] = check_image_size(config["image_size"], "config image_size")
        except ValueError as error:
            raise BackboneCheckpointError(f"{path}: {error}; {_INSTEAD}") from None
    if config.get("arch", "resnet18") != "resnet18":
        raise BackboneCheckpointError(f"{path}: config arch is {short_repr(config['arch'])}, saliency-ssl reads "
                                      f"ResNet-18 backbones ('resnet18'); {_INSTEAD}")
    if config.get("feature_dim", FEATURE_DIM) != FEATURE_DIM or isinstance(config.get("feature_dim"), bool):
        raise BackboneCheckpointError(f"{path}: config feature_dim is {short_repr(config['feature_dim'])}, a ResNet-18 "
                                      f"gives {FEATURE_DIM}; {_INSTEAD}")
    return config


def _check_weights(path: Path, state: Any, model: nn.Module, cifar_stem: bool) -> dict[str, torch.Tensor]:
    """``state`` when it is a dict of tensors with exactly ``model``'s keys, shapes and kinds, all finite.

    Raises:
        BackboneCheckpointError: naming the file and the first key that differs.
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise BackboneCheckpointError(f"{path}: state_dict must be a dict of named tensors, the file holds "
                                      f"{short_repr(state)}; {_INSTEAD}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    what = f"a ResNet-18 with cifar_stem={cifar_stem}"
    if missing or extra:
        more_missing, more_extra = " ..." if len(missing) > 3 else "", " ..." if len(extra) > 3 else ""
        raise BackboneCheckpointError(
            f"{path}: the weights do not fit {what} (missing {missing[:3] or 'none'}{more_missing}, unexpected "
            f"{extra[:3] or 'none'}{more_extra}); {_INSTEAD}")
    for key, want in expected.items():
        tensor = state[key]
        if tensor.shape != want.shape:
            raise BackboneCheckpointError(f"{path}: weight {key} has shape {tuple(tensor.shape)}, {what} needs "
                                          f"{tuple(want.shape)}; {_INSTEAD}")
        if tensor.dtype.is_floating_point != want.dtype.is_floating_point or tensor.dtype.is_complex:
            raise BackboneCheckpointError(f"{path}: weight {key} is {tensor.dtype}, expected "
                                          f"{'a floating-point' if want.dtype.is_floating_point else 'an integer'} "
                                          f"tensor; {_INSTEAD}")
        # an expanded view saved with one stored value would load as a constant weight
        stored, needed = tensor.untyped_storage().nbytes(), (tensor.storage_offset() + tensor.numel()) * tensor.element_size()
        if stored < needed or not (tensor.is_contiguous() or tensor.ndim == 4 and
                                   tensor.is_contiguous(memory_format=torch.channels_last)):
            raise BackboneCheckpointError(f"{path}: weight {key} claims {tensor.numel():,} values and the file stores "
                                          f"{stored:,} bytes for it in a strided or short layout; {_INSTEAD}")
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise BackboneCheckpointError(f"{path}: weight {key} holds NaN or infinite values (a run whose loss "
                                          f"diverged?); its features would be meaningless; {_INSTEAD}")
    return state


def load_backbone(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a backbone written by :func:`save_backbone`.

    ``path`` may also be a plain torchvision ResNet-18 state dict (for example a local ImageNet
    checkpoint); its ``fc`` weights are dropped and the stem follows its ``conv1`` kernel (7x7:
    the ImageNet stem, 3x3: the CIFAR stem).

    The file is loaded with ``weights_only=True`` (tensors and plain containers only, so it cannot
    run code), its config is checked by :func:`check_backbone_config` and its weights key by key
    against the ResNet-18 (shape, float or integer, finite) before they are loaded.

    Raises:
        FileNotFoundError: no such file.
        BackboneCheckpointError: (a ``ValueError``) the file is unreadable, holds something else,
            a config field of the wrong type or out of range, or weights that do not fit; one
            line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint {path} not found; pretraining writes one as RUN_DIR/backbone.pt")
    try:
        # weights_only: tensors and plain containers only, so a checkpoint cannot run code when loaded; the
        # archive and the shape of its pickle are checked first, so it cannot crash or stall the loader either.
        blob = load_torch_file(path, map_location)
    except UnsafeTorchFileError as error:
        raise BackboneCheckpointError(f"{path} cannot be read as a backbone checkpoint: {error}; {_INSTEAD}") \
            from None
    except Exception as error:  # unpickling errors have no common base class
        raise BackboneCheckpointError(
            f"{path} cannot be read as a backbone checkpoint ({type(error).__name__}): it is damaged, or holds "
            f"objects other than tensors, which are refused because loading them could run code; {_INSTEAD}") \
            from None
    if isinstance(blob, dict) and "state_dict" in blob and "config" in blob:
        state, config = blob["state_dict"], check_backbone_config(path, blob["config"])
    elif isinstance(blob, dict) and blob and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in blob.items()):
        state = {k: v for k, v in blob.items() if not k.startswith("fc.")}
        config = {"arch": "resnet18", "cifar_stem": tuple(state.get("conv1.weight", torch.empty(0, 0, 7, 7)).shape[-1:]) == (3,),
                  "feature_dim": FEATURE_DIM, "source": str(path)}
    else:
        raise BackboneCheckpointError(f"{path} is not a saliency-ssl backbone (expected a dict with 'state_dict' and "
                                      f"'config', as pretraining writes); {_INSTEAD}")
    cifar_stem = config.get("cifar_stem", False)
    model = resnet18_backbone(cifar_stem)
    state = _check_weights(path, state, model, cifar_stem)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise BackboneCheckpointError(f"{path}: weights do not fit a ResNet-18 with cifar_stem={cifar_stem}: "
                                      f"{str(error).strip().splitlines()[-1][:300]}; {_INSTEAD}") from None
    return model, config


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return getattr(module, "module", module)
