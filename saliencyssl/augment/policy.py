"""Augmentation policies: mask-aware views first, then the standard SSL augmentations, with Kornia.

A policy is a set of probabilities (:class:`PolicyConfig`). :class:`SSLAugmentation` applies it
to a batch on the device, in the order of the paper's Fig. 8: the saliency view is rendered
from the *whole* image first (:class:`~saliencyssl.augment.render.SaliencyView`), then the
geometric and colour augmentations act on the view, then the model's normalisation.

The standard augmentations and their default probabilities are SimCLR's, as in lightly's
``SimCLRTransform`` with its CIFAR-10 colour strength 0.5: RandomResizedCrop (scale 0.08..1,
ratio 3/4..4/3, p = 1, bilinear on the half-pixel grid as torchvision resizes), horizontal flip
0.5, ColorJitter (0.4, 0.4, 0.4, 0.1) with p = 0.8 (kornia's ``ColorJitter``, torchvision's
formulas: brightness and contrast multiply, contrast and saturation blend towards the mean grey
and the luma), RandomGrayscale 0.2, GaussianBlur 0.5 (off for images of 32 px and less); rotation
by multiples of 90 degrees and vertical flip are available and off by default, as in lightly.
Two departures from torchvision remain, both kornia's: the four colour operations come in one
random order per batch rather than per image, and images are not rounded to 8 bits between steps.

Targets follow the geometry: ``SSLAugmentation(...)(images, targets, return_targets=True)``
also returns each image's target carried through exactly the crop, flips and rotation its view
got (saliency map bilinear, mask and region labels nearest-neighbour on the image's sampling
grid; colour operations leave it alone), for recipes that use the target *after* the view's
geometry (a mask-pooled loss, as DetCon).

Mask-aware recipes besides the paper's saliency views:

- **guided crop** (``salcrop``): the RandomResizedCrop's centre is drawn inside the SaliencyCut
  mask's bounding box with ContrastiveCrop's centre-suppressed Beta(alpha, alpha) placement
  (Peng et al., CVPR 2022; :mod:`saliencyssl.augment.guided` says how, and where it departs);
  options ``alpha`` (0.1), ``crop_box`` (``mask`` or ``rc``: the RC map thresholded at
  ``box_thresh``, 0.1); an image with an empty mask gets the plain crop;
- **soft composite** (``compP``): with probability P the image's own foreground over a flat grey,
  another image of the batch or its own blurred copy (``bg=grey|swap|blur``), the matte feathered
  by a Gaussian of ``feather`` pixels with probability ``feather_p`` (0.5), after DiLo (Zhao et al.,
  AAAI 2021; :mod:`saliencyssl.augment.render`); then the standard augmentations.

Named presets (:data:`PRESETS`): the paper's grid ``default``; ``sal`` (the saliency view with
p = 1 and nothing else); ``sal+default``; ``sal0.5+default``; ``sal+jitter`` (saliency 1, colour
jitter 1); ``sal0.5+jitter``; ``sal0.8+jitter0.8``; and the mask-aware recipes
``salcrop+default`` (ContrastiveCrop's placement in the SaliencyCut box, alpha 0.1) and
``comp0.3+default`` (DiLo's compositing with p = 0.3 on a flat grey). Free policies: any
``salP`` / ``compP`` / ``salcropP`` / ``jitterQ`` / ``default`` / ``none`` joined by ``+``, then
``,key=value`` overrides of any field, e.g. ``"sal0.3+default,vflip=0.5,rotation=0.25,view=cut"``,
``"salcrop+default,alpha=1,crop_box=rc"`` or ``"comp0.5+default,bg=swap,feather=0"``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from saliencyssl.augment.guided import BOX_SOURCES, guide_crop_parameters, target_boxes
from saliencyssl.augment.render import BACKGROUNDS, VIEW_KINDS, SaliencyView
from saliencyssl.augment.normalize import to_model_input
from saliencyssl.target import TargetBatch

PRESETS = ("default", "sal", "sal+default", "sal0.5+default", "sal+jitter", "sal0.5+jitter", "sal0.8+jitter0.8",
           "salcrop+default", "comp0.3+default")

#: Policy fields whose values are words, not numbers.
_WORD_FIELDS = {"view": VIEW_KINDS, "crop_box": BOX_SOURCES, "bg": BACKGROUNDS}


@dataclass(frozen=True)
class PolicyConfig:
    """Probabilities (and a few strengths) of one augmentation policy.

    Attributes:
        name: the policy string it was parsed from.
        saliency: probability of replacing an image by its saliency view (``salP``, or ``compP`` for
            the composite view).
        view: the view kind (``segments``, ``cut``, ``saliency``, ``composite``).
        crop: probability of RandomResizedCrop (scale ``min_scale``..1).
        hflip, vflip, rotation: probabilities of horizontal flip, vertical flip, rotation by 90/180/270 degrees.
        jitter: probability of ColorJitter with strength ``jitter_strength``.
        gray: probability of RandomGrayscale.
        blur: probability of GaussianBlur (ignored for images of 32 px and less).
        guided_crop: probability that an image's RandomResizedCrop is placed in its object's box
            (``salcropP``; needs ``crop`` > 0).
        alpha: the guided crop's Beta(alpha, alpha) concentration (> 0; ContrastiveCrop's 0.1).
        crop_box: where the guiding box comes from: ``mask`` (SaliencyCut) or ``rc`` (RC map).
        box_thresh: threshold of the min-max normalised RC map for ``crop_box=rc``, in [0, 1).
        bg: the composite view's background: ``grey``, ``swap`` or ``blur``.
        feather: sigma in pixels of the Gaussian that feathers the composite matte (0 = hard edges).
        feather_p: probability that a composite's matte is feathered (DiLo's 0.5).
        bg_sigma: sigma in pixels of the ``bg=blur`` background's Gaussian (> 0).
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
    guided_crop: float = 0.0
    alpha: float = 0.1
    crop_box: str = "mask"
    box_thresh: float = 0.1
    bg: str = "grey"
    feather: float = 1.0
    feather_p: float = 0.5
    bg_sigma: float = 2.0

    def __post_init__(self) -> None:
        for f in ("saliency", "crop", "hflip", "vflip", "rotation", "jitter", "gray", "blur", "guided_crop",
                  "feather_p"):
            value = getattr(self, f)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"policy {self.name!r}: {f} must be a probability in [0, 1], got {value}")
        for f, choices in _WORD_FIELDS.items():
            if getattr(self, f) not in choices:
                raise ValueError(f"policy {self.name!r}: {f} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, f)!r}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"policy {self.name!r}: min_scale must be in (0, 1], got {self.min_scale}")
        if self.alpha <= 0:
            raise ValueError(f"policy {self.name!r}: alpha must be > 0 (the Beta(alpha, alpha) of the guided crop; "
                             f"0.1 as ContrastiveCrop, 1 = uniform), got {self.alpha}")
        if not 0.0 <= self.box_thresh < 1.0:
            raise ValueError(f"policy {self.name!r}: box_thresh must be in [0, 1), got {self.box_thresh}")
        if self.feather < 0 or self.bg_sigma <= 0:
            raise ValueError(f"policy {self.name!r}: feather must be >= 0 and bg_sigma > 0 (pixels), got "
                             f"feather={self.feather}, bg_sigma={self.bg_sigma}")
        if self.guided_crop > 0 and self.crop == 0:
            raise ValueError(f"policy {self.name!r}: salcrop places the RandomResizedCrop, which crop=0 turns off; "
                             f"drop crop=0 or add +default")

    @property
    def uses_targets(self) -> bool:
        """True when the policy reads targets: a view rendered from them (``sal``, ``comp``) or a guided crop."""
        return self.saliency > 0.0 or self.guided_crop > 0.0

    @property
    def uses_saliency(self) -> bool:
        """The same as :attr:`uses_targets` (its older name): whether targets must be served."""
        return self.uses_targets

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
    if "default" in tokens:  # first, wherever it stands: "jitter0.3+default" keeps jitter 0.3
        values.update({k: _DEFAULTS[k] for k in ("crop", "hflip", "vflip", "rotation", "jitter", "gray", "blur")})
    seen: set[str] = set()
    for token in tokens:
        match = re.fullmatch(r"(salcrop|sal|comp|jitter|default|none)([0-9]*\.?[0-9]+)?", token)
        if match is None:
            raise ValueError(f"unknown policy part {token!r} in {text!r}; use default, none, salP, compP, salcropP "
                             f"or jitterQ joined by '+', e.g. one of the presets {', '.join(PRESETS)}")
        kind, prob = match.group(1), match.group(2)
        p = float(prob) if prob is not None else 1.0
        if kind in ("default", "none") and prob is not None:
            raise ValueError(f"{kind!r} takes no probability (in {text!r})")
        if {kind, *seen} >= {"sal", "comp"}:
            raise ValueError(f"{text!r}: 'sal' and 'comp' both set the probability of the one view rendered from the "
                             f"target; use one (comp is the same as sal with view=composite)")
        seen.add(kind)
        if kind == "sal":
            values["saliency"] = p
        elif kind == "comp":
            values["saliency"] = p
            values["view"] = "composite"
        elif kind == "salcrop":
            values["guided_crop"] = p
            values["crop"] = _DEFAULTS["crop"]
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
            values[key] = value if key in _WORD_FIELDS else float(value)
        except ValueError:
            raise ValueError(f"policy {text!r}: {key}={value!r} is not a number") from None
    return PolicyConfig(name=text, **values)


class _TargetWarp:
    """Carry a batch of targets through the geometric operations of its views.

    The saliency map goes through each operation exactly as the images do (bilinear). Mask and
    region labels must not be interpolated: instead a map of source pixel indices goes through
    each operation with nearest-neighbour sampling on the images' own sampling grid, and the
    labels are gathered at the indices it ends with, so the mask and the regions of a pixel always
    come from one source pixel. Flips move the index map as they move the images; the 90-degree
    rotation uses its nearest-neighbour twin (same parameters, same rotation matrix); the crop
    takes, for output pixel ``u``, the source pixel nearest to ``x0 - 0.5 + (u + 0.5) * w / S`` (``w``
    the crop's width), the position the bilinear resize on the half-pixel grid
    (``align_corners=False``, as torchvision) samples.
    """

    def __init__(self, targets: TargetBatch, device: torch.device):
        self.targets = targets.to(device)
        b, _, h, w = self.targets.saliency.shape
        if h * w >= 2 ** 24:
            raise ValueError(f"targets of {h}x{w} pixels are too large to warp by float32 pixel indices "
                             f"(at most 2**24 pixels)")
        self.saliency = self.targets.saliency.float()
        self.index = torch.arange(h * w, device=device, dtype=torch.float32).view(1, 1, h, w).repeat(b, 1, 1, 1)

    def apply(self, op: nn.Module, params: dict, nearest: nn.Module | None = None,
              crop_size: tuple[int, int] | None = None) -> None:
        """Move the targets by kornia module ``op`` with its ``params``.

        ``crop_size``: ``op`` is the RandomResizedCrop, resizing to this ``(H, W)``; otherwise
        ``nearest`` resamples the index map (None: ``op`` itself, for flips, which do not interpolate).
        """
        self.saliency = op(self.saliency, params=params)
        if crop_size is not None:
            self.index = self._crop(self.index, params, crop_size)
        else:
            self.index = (nearest or op)(self.index, params=params)

    @staticmethod
    def _crop(index: torch.Tensor, params: dict, size: tuple[int, int]) -> torch.Tensor:
        """Nearest-neighbour resized crop of ``(B, 1, H, W)`` on the half-pixel grid of the bilinear resize."""
        b = index.shape[0]
        src = params["src"].to(index.device, torch.float64)
        x0, y0, x1, y1 = src[:, 0, 0], src[:, 0, 1], src[:, 2, 0], src[:, 2, 1]
        out_h, out_w = size
        v = (torch.arange(out_h, device=index.device, dtype=torch.float64) + 0.5) / out_h
        u = (torch.arange(out_w, device=index.device, dtype=torch.float64) + 0.5) / out_w
        # the nearest source pixel to x0 - 0.5 + (u + 0.5) * w / S is floor(x0 + (u + 0.5) * w / S)
        rows = torch.floor(y0[:, None] + v[None] * (y1 - y0 + 1)[:, None]).long().clamp(max=index.shape[-2] - 1)
        cols = torch.floor(x0[:, None] + u[None] * (x1 - x0 + 1)[:, None]).long().clamp(max=index.shape[-1] - 1)
        batch = torch.arange(b, device=index.device)[:, None, None]
        cropped = index[:, 0][batch, rows[:, :, None], cols[:, None, :]][:, None]
        applied = params["batch_prob"].to(index.device).reshape(-1) > 0.5
        if cropped.shape == index.shape and not bool(applied.all()):
            cropped = torch.where(applied.view(b, 1, 1, 1), cropped, index)
        return cropped

    def result(self) -> TargetBatch:
        b, _, h, w = self.targets.mask.shape
        out_h, out_w = self.index.shape[-2:]
        idx = self.index.round().long().clamp_(0, h * w - 1).view(b, 1, out_h * out_w)

        def gather(part: torch.Tensor) -> torch.Tensor:
            return torch.gather(part.reshape(b, 1, h * w), 2, idx).view(b, 1, out_h, out_w)

        return TargetBatch(self.saliency.clamp(0.0, 1.0), gather(self.targets.mask),
                           gather(self.targets.regions.long()))


class SSLAugmentation(nn.Module):
    """One policy on batches: target-rendered view, Kornia augmentations, normalisation.

    Args:
        config: a :class:`PolicyConfig` or a policy string for :func:`parse_policy`.
        image_size: side length ``S`` of the square images.

    Shapes: ``forward(images, targets=None, return_targets=False)`` with ``images`` ``(B, 3, S, S)``
    uint8 or float in [0, 1] and ``targets`` a :class:`TargetBatch` of ``(B, 1, S, S)`` parts (needed
    when :attr:`uses_targets` or ``return_targets``) returns the views, ``(B, 3, S, S)`` float32
    normalised for the backbone (:func:`saliencyssl.augment.normalize.to_model_input`); with
    ``return_targets=True`` it returns ``(views, warped)``, ``warped`` a :class:`TargetBatch` of
    ``(B, 1, S, S)`` parts on the images' device -- ``saliency`` float32 in [0, 1] (bilinear),
    ``mask`` bool and ``regions`` int64 (nearest neighbour) -- carrying each image's target through
    exactly the crop, flips and 90-degree rotation of its view (colour operations and the rendered
    view do not touch it). Call it twice for two views.

    Random numbers: every operation draws its parameters from torch's global generator in the
    order of the policy, as an ``nn.Sequential`` of the same kornia modules does, so a policy
    without guided crops draws the same numbers with and without ``return_targets`` (and the same as
    before targets could be returned). The guided crop draws two Beta variates per image after the
    crop's own draws (and one uniform per image first when ``guided_crop < 1``).

    Attributes:
        last_crop: the RandomResizedCrop parameters of the last call (kornia's ``src`` ``(B, 4, 2)``
            crop corners ``(x, y)``, and with a guided crop ``box`` ``(B, 4)`` ``(row0, col0, row1,
            col1)`` and ``guided`` ``(B,)``), or None when the policy has no crop; for drawing.
    """

    def __init__(self, config: PolicyConfig | str, image_size: int):
        super().__init__()
        import kornia.augmentation as K

        self.config = parse_policy(config) if isinstance(config, str) else config
        self.image_size = int(image_size)
        c = self.config
        self.saliency = SaliencyView(c.view, p=c.saliency, background=c.bg, feather=c.feather, feather_p=c.feather_p,
                                     background_sigma=c.bg_sigma)
        ops: list[nn.Module] = []
        nearest: dict[str, nn.Module] = {}  # position in ops -> the op resampling with nearest neighbours
        self._crop_index: int | None = None
        s = self.image_size
        if c.crop > 0:
            self._crop_index = len(ops)
            # p=1: kornia draws a crop's probability once a batch (p_batch); crop_parameters draws it per image
            ops.append(K.RandomResizedCrop((s, s), scale=(c.min_scale, 1.0), p=1.0, align_corners=False))
        if c.hflip > 0:
            ops.append(K.RandomHorizontalFlip(p=c.hflip))
        if c.vflip > 0:
            ops.append(K.RandomVerticalFlip(p=c.vflip))
        if c.rotation > 0:
            ops.append(K.RandomRotation90(times=(1, 3), p=c.rotation))
            nearest[str(len(ops) - 1)] = K.RandomRotation90(times=(1, 3), p=c.rotation, resample="nearest")
        self._geometric = list(range(len(ops)))  # crop, flips and rotation come before the colour operations
        if c.jitter > 0:
            j = c.jitter_strength
            ops.append(K.ColorJitter(0.8 * j, 0.8 * j, 0.8 * j, 0.2 * j, p=c.jitter))
        if c.gray > 0:
            ops.append(K.RandomGrayscale(p=c.gray))
        if c.blur > 0 and s > 32:
            kernel = max(3, int(0.1 * s) // 2 * 2 + 1)
            ops.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=c.blur))
        self.augment = nn.Sequential(*ops)
        self.nearest = nn.ModuleDict(nearest)
        self.last_crop: dict[str, torch.Tensor] | None = None

    @property
    def uses_targets(self) -> bool:
        """True when the policy needs targets (a view rendered from them, or a guided crop)."""
        return self.config.uses_targets

    @property
    def uses_saliency(self) -> bool:
        """The same as :attr:`uses_targets` (its older name)."""
        return self.config.uses_targets

    def crop_parameters(self, batch_shape: tuple[int, ...], targets: TargetBatch | None = None) -> dict:
        """Draw the RandomResizedCrop's parameters for a batch, as :meth:`forward` does.

        Args:
            batch_shape: ``(B, C, S, S)``.
            targets: needed for a guided crop (their boxes place it).

        Returns:
            kornia's parameter dict (``src`` ``(B, 4, 2)`` crop corners ``(x, y)``, ...), with
            ``box`` and ``guided`` for a guided crop (:func:`~saliencyssl.augment.guided.guide_crop_parameters`).
        """
        if self._crop_index is None:
            raise ValueError(f"policy {self.config.name!r} has no crop (crop=0)")
        c = self.config
        params = self.augment[self._crop_index].forward_parameters(tuple(batch_shape))
        if c.guided_crop > 0:
            if targets is None:
                raise ValueError(f"policy {c.name!r} guides its crops by the targets' boxes but no targets were given; "
                                 f"give a target source other than 'none', or a policy without 'salcrop'")
            boxes, has_box = target_boxes(targets, c.crop_box, c.box_thresh)
            params = guide_crop_parameters(params, boxes, has_box, alpha=c.alpha, p=c.guided_crop)
        if c.crop < 1:  # per image, as every other probability: an image not cropped keeps its whole frame
            keep = torch.rand(params["src"].shape[0]) >= c.crop
            height, width = (float(v) for v in batch_shape[-2:])
            whole = torch.tensor([[0.0, 0.0], [width - 1, 0.0], [width - 1, height - 1], [0.0, height - 1]])
            params["src"][keep.to(params["src"].device)] = whole.to(params["src"])
            if "guided" in params:
                params["guided"] = params["guided"] & ~keep.to(params["guided"].device)
        return params

    def forward(self, images: torch.Tensor, targets: TargetBatch | None = None,
                return_targets: bool = False) -> torch.Tensor | tuple[torch.Tensor, TargetBatch]:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        if targets is None:
            if self.uses_targets or return_targets:
                why = "return_targets=True" if return_targets and not self.uses_targets else \
                    f"policy {self.config.name!r} renders views from targets or guides its crops by them"
                raise ValueError(f"{why} but no targets were given; give a target source other than 'none', "
                                 f"or a policy without 'sal', 'comp' or 'salcrop'")
        else:
            if len(targets) != images.shape[0] or tuple(targets.mask.shape[-2:]) != tuple(images.shape[-2:]):
                raise ValueError(f"targets of shape {tuple(targets.mask.shape)} do not match images of shape "
                                 f"{tuple(images.shape)}; serve targets at the images' size")
        images = self.saliency(images, targets)
        warp = _TargetWarp(targets, images.device) if return_targets else None
        self.last_crop = None
        for position, op in enumerate(self.augment):
            if position == self._crop_index:
                params = self.crop_parameters(images.shape, targets)
                self.last_crop = params
            elif warp is not None and position in self._geometric:
                params = op.forward_parameters(images.shape)
            else:
                images = op(images)
                continue
            images = op(images, params=params)
            if warp is not None:
                key = str(position)
                warp.apply(op, params, nearest=self.nearest[key] if key in self.nearest else None,
                           crop_size=(self.image_size, self.image_size) if position == self._crop_index else None)
        views = to_model_input(images)
        return (views, warp.result()) if warp is not None else views

    def extra_repr(self) -> str:
        return f"policy={self.config.name!r}, image_size={self.image_size}"


def policy_summary(config: PolicyConfig, image_size: int | None = None) -> str:
    """One line naming every probability in effect (blur is off at 32 px and less), for logs."""
    values = config.as_dict()
    if image_size is not None and image_size <= 32:
        values["blur"] = 0.0
    shown = ("saliency", "crop", "hflip", "vflip", "rotation", "jitter", "gray", "blur", "guided_crop")
    parts = [f"{k}={values[k]:g}" for k in shown if values[k]]
    if config.saliency > 0:
        parts.append(f"view={config.view}")
        if config.view == "composite":
            parts.append(f"bg={config.bg}" + (f" (sigma {config.bg_sigma:g}px)" if config.bg == "blur" else ""))
            parts.append(f"feather={config.feather:g}px with p={config.feather_p:g}" if config.feather > 0
                         else "feather=0")
    if config.guided_crop > 0:
        parts.append(f"alpha={config.alpha:g}, crop_box={config.crop_box}"
                     + (f" (RC > {config.box_thresh:g})" if config.crop_box == "rc" else ""))
    return f"{config.name}: " + (", ".join(parts) if parts else "no augmentation")


__all__ = ["PolicyConfig", "parse_policy", "SSLAugmentation", "PRESETS", "policy_summary"]
