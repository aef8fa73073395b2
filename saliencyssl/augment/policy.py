"""Augmentation policies: a saliency view first, then the standard SSL augmentations, with Kornia.

A policy is a set of probabilities (:class:`PolicyConfig`). :class:`SSLAugmentation` applies it
to a batch on the device, in the order of the paper's Fig. 8: the saliency view is rendered
from the *whole* image first (:class:`~saliencyssl.augment.render.SaliencyView`), then the
geometric and colour augmentations act on the view, then the model's normalisation.

The standard augmentations and their default probabilities are SimCLR's, as in lightly's
``SimCLRTransform`` with its CIFAR-10 colour strength 0.5: RandomResizedCrop (scale 0.08..1,
p = 1), horizontal flip 0.5, ColorJiggle (0.4, 0.4, 0.4, 0.1) with p = 0.8, RandomGrayscale
0.2, GaussianBlur 0.5 (off for images of 32 px and less); rotation by multiples of 90 degrees
and vertical flip are available and off by default, as in lightly.

Named presets (the paper's grid, :data:`PRESETS`): ``default``; ``sal`` (the saliency view
with p = 1 and nothing else); ``sal+default``; ``sal0.5+default``; ``sal+jitter`` (saliency 1,
colour jitter 1); ``sal0.5+jitter``; ``sal0.8+jitter0.8``. Free probabilities: any
``salP`` / ``jitterQ`` / ``default`` / ``none`` joined by ``+``, then ``,key=value`` overrides
of any field, e.g. ``"sal0.3+default,vflip=0.5,rotation=0.25,view=cut"``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from saliencyssl.augment.render import VIEW_KINDS, SaliencyView
from saliencyssl.ssl.backbone import to_model_input
from saliencyssl.target import TargetBatch

PRESETS = ("default", "sal", "sal+default", "sal0.5+default", "sal+jitter", "sal0.5+jitter", "sal0.8+jitter0.8")


@dataclass(frozen=True)
class PolicyConfig:
    """Probabilities (and a few strengths) of one augmentation policy.

    Attributes:
        name: the policy string it was parsed from.
        saliency: probability of replacing an image by its saliency view.
        view: the view kind (``segments``, ``cut``, ``saliency``).
        crop: probability of RandomResizedCrop (scale ``min_scale``..1).
        hflip, vflip, rotation: probabilities of horizontal flip, vertical flip, rotation by 90/180/270 degrees.
        jitter: probability of ColorJiggle with strength ``jitter_strength``.
        gray: probability of RandomGrayscale.
        blur: probability of GaussianBlur (ignored for images of 32 px and less).
    """

    name: str = "default"
    saliency: float = 0.0
    view: str = "segments"
    crop: float = 1.0
    min_scale: float = 0.08
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 0.0
    jitter: float = 0.8
    jitter_strength: float = 0.5
    gray: float = 0.2
    blur: float = 0.5

    def __post_init__(self) -> None:
        for f in ("saliency", "crop", "hflip", "vflip", "rotation", "jitter", "gray", "blur"):
            value = getattr(self, f)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"policy {self.name!r}: {f} must be a probability in [0, 1], got {value}")
        if self.view not in VIEW_KINDS:
            raise ValueError(f"policy {self.name!r}: view must be one of {', '.join(VIEW_KINDS)}, got {self.view!r}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"policy {self.name!r}: min_scale must be in (0, 1], got {self.min_scale}")

    @property
    def uses_saliency(self) -> bool:
        return self.saliency > 0.0

    def as_dict(self) -> dict:
        return asdict(self)


_NOTHING = dict(crop=0.0, hflip=0.0, vflip=0.0, rotation=0.0, jitter=0.0, gray=0.0, blur=0.0)
_DEFAULTS = {f.name: f.default for f in fields(PolicyConfig)}


def parse_policy(text: str) -> PolicyConfig:
    """Parse a preset name or a free policy string (see the module docstring).

    Raises:
        ValueError: an unknown token or key, or a value out of range, naming it and listing the presets.
    """
    text = text.strip()
    head, *overrides = [part.strip() for part in text.split(",")]
    values: dict = dict(_NOTHING, saliency=0.0)
    tokens = [t for t in head.split("+") if t]
    if not tokens:
        raise ValueError(f"empty policy; choose a preset ({', '.join(PRESETS)}) or e.g. 'sal0.3+default'")
    for token in tokens:
        match = re.fullmatch(r"(sal|jitter|default|none)([0-9]*\.?[0-9]+)?", token)
        if match is None:
            raise ValueError(f"unknown policy part {token!r} in {text!r}; use default, none, salP or jitterQ "
                             f"joined by '+', e.g. one of the presets {', '.join(PRESETS)}")
        kind, prob = match.group(1), match.group(2)
        p = float(prob) if prob is not None else 1.0
        if kind in ("default", "none") and prob is not None:
            raise ValueError(f"{kind!r} takes no probability (in {text!r})")
        if kind == "default":
            values.update({k: _DEFAULTS[k] for k in ("crop", "hflip", "vflip", "rotation", "jitter", "gray", "blur")})
        elif kind == "sal":
            values["saliency"] = p
        elif kind == "jitter":
            values["jitter"] = p
    names = {f.name for f in fields(PolicyConfig)} - {"name"}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"policy override {item!r} must look like key=value (keys: {', '.join(sorted(names))})")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in names:
            raise ValueError(f"unknown policy key {key!r}; keys: {', '.join(sorted(names))}")
        try:
            values[key] = value if key == "view" else float(value)
        except ValueError:
            raise ValueError(f"policy {text!r}: {key}={value!r} is not a number") from None
    return PolicyConfig(name=text, **values)


class SSLAugmentation(nn.Module):
    """One policy on batches: saliency view, Kornia augmentations, normalisation.

    Args:
        config: a :class:`PolicyConfig` or a policy string for :func:`parse_policy`.
        image_size: side length ``S`` of the square images.

    Shapes: ``forward(images (B, 3, S, S) uint8 or float in [0, 1], targets TargetBatch | None)``
    returns ``(B, 3, S, S)`` float32, normalised for the backbone
    (:func:`saliencyssl.ssl.backbone.to_model_input`). Call it twice for two views.
    """

    def __init__(self, config: PolicyConfig | str, image_size: int):
        super().__init__()
        import kornia.augmentation as K

        self.config = parse_policy(config) if isinstance(config, str) else config
        self.image_size = int(image_size)
        c = self.config
        self.saliency = SaliencyView(c.view, p=c.saliency)
        ops: list[nn.Module] = []
        s = self.image_size
        if c.crop > 0:
            ops.append(K.RandomResizedCrop((s, s), scale=(c.min_scale, 1.0), p=c.crop))
        if c.hflip > 0:
            ops.append(K.RandomHorizontalFlip(p=c.hflip))
        if c.vflip > 0:
            ops.append(K.RandomVerticalFlip(p=c.vflip))
        if c.rotation > 0:
            ops.append(K.RandomRotation90(times=(1, 3), p=c.rotation))
        if c.jitter > 0:
            j = c.jitter_strength
            ops.append(K.ColorJiggle(0.8 * j, 0.8 * j, 0.8 * j, 0.2 * j, p=c.jitter))
        if c.gray > 0:
            ops.append(K.RandomGrayscale(p=c.gray))
        if c.blur > 0 and s > 32:
            kernel = max(3, int(0.1 * s) // 2 * 2 + 1)
            ops.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=c.blur))
        self.augment = nn.Sequential(*ops)

    @property
    def uses_saliency(self) -> bool:
        return self.config.uses_saliency

    def forward(self, images: torch.Tensor, targets: TargetBatch | None = None) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        images = self.saliency(images, targets)
        if len(self.augment):
            images = self.augment(images)
        return to_model_input(images)

    def extra_repr(self) -> str:
        return f"policy={self.config.name!r}, image_size={self.image_size}"


def policy_summary(config: PolicyConfig, image_size: int | None = None) -> str:
    """One line naming every probability in effect (blur is off at 32 px and less), for logs."""
    values = config.as_dict()
    if image_size is not None and image_size <= 32:
        values["blur"] = 0.0
    parts = [f"{k}={v:g}" for k, v in values.items()
             if k not in ("name", "view", "min_scale", "jitter_strength") and v]
    if config.uses_saliency:
        parts.append(f"view={config.view}")
    return f"{config.name}: " + (", ".join(parts) if parts else "no augmentation")


__all__ = ["PolicyConfig", "parse_policy", "SSLAugmentation", "PRESETS", "policy_summary"]
