"""The view renderer: a target becomes an RGB view, on the device, whatever its source.

One renderer serves targets from the cache, the surrogate and the exact labeller alike (they
all arrive as a :class:`~saliencyssl.target.TargetBatch`), so ``--aug-source cache`` and
``--aug-source surrogate`` differ only in where the target came from. Four kinds of view:

- ``segments`` (the default, the paper's): every region is painted with a colour from a
  palette; per view the palette is *permuted* (which region gets which colour) and *jittered*
  (a random hue rotation of the whole palette and a brightness factor per colour) -- the
  paper's "random colour jittering and swapping from the same colour palette". Pixels outside
  the SaliencyCut mask are dimmed by a per-view factor, so salient regions and background are
  told apart;
- ``cut``: the image's own pixels inside the SaliencyCut mask and one flat palette colour
  outside (an image whose mask is empty is left as it is);
- ``saliency``: the RC saliency map as a grey image;
- ``composite``: soft foreground compositing after DiLo (Zhao et al., "Distilling Localization for
  Self-Supervised Representation Learning", AAAI 2021, github nanxuanzhao/DiLo,
  ``saliency_dataset.py``): the image's own pixels inside the SaliencyCut mask over a background
  (:data:`BACKGROUNDS`): ``grey``, a flat grey level drawn uniformly from 0..254 / 255 as DiLo
  does; ``swap``, another image of the batch (close to the random-image backgrounds of Ryali et
  al. 2021, "Characterizing and Improving the Robustness of Self-Supervised Learning through
  Background Augmentations"); ``blur``, the image itself blurred by a Gaussian of ``bg_sigma``
  pixels (neither paper's; a background that keeps the scene's colours). With probability
  ``feather_p`` (DiLo: 0.5) the mask is feathered by a Gaussian of ``feather`` pixels before it is
  used as the alpha matte. An image whose mask is empty is left as it is. Where this departs from
  DiLo: the matte is the binary SaliencyCut mask (feathered), not a saliency detector's soft map;
  the grey background is drawn at the training size instead of a 224-px canvas cropped to the
  image (the same flat colour either way); DiLo's blur (PIL's GaussianBlur, radius 5 = its
  standard deviation) acts on ImageNet originals of several hundred pixels a side, so the feather
  here is an option in pixels of the training image (default 1 px).

Following kornia's split, random parameters are drawn by :meth:`SaliencyView.generate_parameters`
and applied by :func:`render_views`, so the same parameters can be replayed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from saliencyssl.target import TargetBatch

VIEW_KINDS = ("segments", "cut", "saliency", "composite")

#: Backgrounds of the ``composite`` view: a flat grey, another image of the batch, the image blurred.
BACKGROUNDS = ("grey", "swap", "blur")

#: 24 well-separated RGB colours in [0, 1] (tab20 and four more), the default palette.
DEFAULT_PALETTE = torch.tensor([
    [0.122, 0.467, 0.706], [0.682, 0.780, 0.910], [1.000, 0.498, 0.055], [1.000, 0.733, 0.471],
    [0.173, 0.627, 0.173], [0.596, 0.875, 0.541], [0.839, 0.153, 0.157], [1.000, 0.596, 0.588],
    [0.580, 0.404, 0.741], [0.773, 0.690, 0.835], [0.549, 0.337, 0.294], [0.769, 0.612, 0.580],
    [0.890, 0.467, 0.761], [0.969, 0.714, 0.824], [0.498, 0.498, 0.498], [0.780, 0.780, 0.780],
    [0.737, 0.741, 0.133], [0.859, 0.859, 0.553], [0.090, 0.745, 0.812], [0.620, 0.855, 0.898],
    [0.950, 0.900, 0.100], [0.100, 0.100, 0.450], [0.400, 0.050, 0.250], [0.050, 0.350, 0.300],
])


def _rotate_hue(colours: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of ``(B, P, 3)`` RGB colours by ``(B,)`` turns (kornia's HSV conversion)."""
    import kornia.color

    hsv = kornia.color.rgb_to_hsv(colours.permute(0, 2, 1).unsqueeze(-1))  # (B, 3, P, 1), hue in [0, 2pi)
    hue = torch.remainder(hsv[:, :1] + shift.view(-1, 1, 1, 1) * 2 * torch.pi, 2 * torch.pi)
    rgb = kornia.color.hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))
    return rgb.squeeze(-1).permute(0, 2, 1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``(B, C, H, W)`` float images by an isotropic Gaussian of ``sigma`` pixels (kornia).

    The kernel spans 3 sigma on each side, cut to the image (at most the largest odd size not
    above ``min(H, W)``, so the reflected border stays valid); ``sigma <= 0`` returns the input.
    """
    import kornia.filters

    if sigma <= 0:
        return images
    side = min(images.shape[-2:])
    kernel = min(2 * math.ceil(3.0 * sigma) + 1, side if side % 2 else side - 1)
    if kernel < 3:
        return images
    return kornia.filters.gaussian_blur2d(images, (kernel, kernel), (float(sigma), float(sigma)),
                                          border_type="reflect")


def composite_backgrounds(images: torch.Tensor, params: dict[str, torch.Tensor], background: str,
                          background_sigma: float = 2.0) -> torch.Tensor:
    """The backgrounds of ``composite`` views.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1], the whole batch (``swap`` takes partners from it).
        params: ``grey`` ``(B,)`` float in [0, 1] and ``partner`` ``(B,)`` long indices into the
            batch, another image than each one's own (from :meth:`SaliencyView.generate_parameters`).
        background: one of :data:`BACKGROUNDS`. ``swap`` on a batch of one image falls back to ``grey``.
        background_sigma: the Gaussian's sigma in pixels for ``blur``.

    Returns:
        ``(B, 3, H, W)`` float in [0, 1] on the images' device.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown composite background {background!r}; choose one of {', '.join(BACKGROUNDS)}")
    b = images.shape[0]
    if background == "blur":
        return gaussian_blur(images, background_sigma)
    if background == "swap" and b > 1:
        return images.index_select(0, params["partner"].to(images.device))
    grey = params["grey"].to(images.device, images.dtype).view(b, 1, 1, 1)
    return grey.expand_as(images).clone()


def render_composite(images: torch.Tensor, mask: torch.Tensor, background: torch.Tensor,
                     feather: torch.Tensor | None = None, feather_sigma: float = 0.0) -> torch.Tensor:
    """Paste each image's foreground over its background (the ``composite`` view).

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        mask: ``(B, 1, H, W)`` bool foreground (SaliencyCut mask).
        background: ``(B, 3, H, W)`` float in [0, 1] (:func:`composite_backgrounds`).
        feather: ``(B,)`` bool, the images whose matte is feathered; None = none.
        feather_sigma: the feathering Gaussian's sigma in pixels (0 = hard edges).

    Returns:
        ``(B, 3, H, W)`` float in [0, 1]: ``alpha * image + (1 - alpha) * background`` with
        ``alpha`` the mask as 0/1, or its blurred version where ``feather``; with a hard matte the
        pixels inside the mask are the image's exactly and those outside the background's. An
        image with an empty mask is returned unchanged.
    """
    b = images.shape[0]
    alpha = mask.to(images.dtype)
    if feather is not None and feather_sigma > 0 and bool(feather.any()):
        soft = gaussian_blur(alpha, feather_sigma)
        alpha = torch.where(feather.to(images.device).view(b, 1, 1, 1), soft, alpha)
    out = alpha * images + (1 - alpha) * background
    has_object = mask.flatten(1).any(1).view(b, 1, 1, 1)
    return torch.where(has_object, out, images)


def render_views(images: torch.Tensor, targets: TargetBatch, kind: str, params: dict[str, torch.Tensor],
                 palette: torch.Tensor, *, background: str = "grey", feather: float = 0.0,
                 background_sigma: float = 2.0) -> torch.Tensor:
    """Render views of ``kind`` (functional core of :class:`SaliencyView`).

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        targets: the batch's targets, ``(B, 1, H, W)`` parts on the images' device.
        kind: one of :data:`VIEW_KINDS`.
        params: from :meth:`SaliencyView.generate_parameters`: ``perm`` ``(B, P)`` long,
            ``hue`` ``(B,)``, ``gain`` ``(B, P)``, ``dim`` ``(B,)``, ``flat`` ``(B,)`` long; for
            ``composite``: ``grey`` ``(B,)``, ``partner`` ``(B,)`` long, ``feather`` ``(B,)`` bool,
            and optionally ``background`` ``(B, 3, H, W)`` (the backgrounds, drawn from the whole
            batch when this call renders only part of it).
        palette: ``(P, 3)`` float RGB in [0, 1].
        background, feather, background_sigma: the ``composite`` view's background kind
            (:data:`BACKGROUNDS`), feathering sigma and background blur sigma, in pixels.

    Returns:
        ``(B, 3, H, W)`` float in [0, 1].
    """
    if kind == "saliency":
        return targets.saliency.to(images.dtype).expand(-1, 3, -1, -1).clone()
    if kind == "composite":
        bg = params.get("background")
        if bg is None:
            bg = composite_backgrounds(images, params, background, background_sigma)
        return render_composite(images, targets.mask.to(images.device), bg.to(images.dtype), params["feather"],
                                feather)
    b, _, h, w = images.shape
    colours = palette.to(images.device, images.dtype).unsqueeze(0).expand(b, -1, -1)
    colours = _rotate_hue(colours, params["hue"]) * params["gain"].unsqueeze(-1)
    colours = colours.clamp_(0, 1)  # (B, P, 3): this view's palette
    mask = targets.mask.to(images.device)
    if kind == "cut":
        flat = colours[torch.arange(b, device=images.device), params["flat"]]  # (B, 3)
        has_object = mask.flatten(1).any(1).view(b, 1, 1, 1)
        keep = mask | ~has_object
        return torch.where(keep, images, flat.view(b, 3, 1, 1).expand_as(images))
    if kind != "segments":
        raise ValueError(f"unknown view kind {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
    p = palette.shape[0]
    # This view's colour of each palette slot: lut[b, s] = colours[b, perm[b, s]], channels first.
    lut = torch.gather(colours, 1, params["perm"].unsqueeze(-1).expand(-1, -1, 3)).transpose(1, 2)  # (B, 3, P)
    slot = torch.remainder(targets.regions.to(images.device), p).view(b, 1, h * w)
    painted = torch.gather(lut, 2, slot.expand(b, 3, h * w)).view(b, 3, h, w)
    dim = params["dim"].to(images.dtype).view(b, 1, 1, 1)
    return painted.mul_(torch.where(mask, torch.ones_like(dim), dim))


class SaliencyView(nn.Module):
    """Replace images by views rendered from their targets, each with probability ``p``.

    Args:
        kind: ``segments``, ``cut``, ``saliency`` or ``composite`` (:data:`VIEW_KINDS`).
        p: probability that an image is replaced by its view.
        palette: ``(P, 3)`` RGB in [0, 1]; default :data:`DEFAULT_PALETTE`.
        hue_jitter: largest hue rotation of the palette, in turns.
        gain_jitter: per-colour brightness factor drawn from ``1 +- gain_jitter``.
        background_dim: range of the factor that dims pixels outside the mask.
        background: the ``composite`` view's background, one of :data:`BACKGROUNDS`.
        feather: sigma in pixels of the Gaussian that feathers the ``composite`` matte (0 = never).
        feather_p: probability that an image's matte is feathered (DiLo: 0.5).
        background_sigma: sigma in pixels of the ``blur`` background.

    Shapes: ``forward(images (B, 3, H, W) float in [0, 1], targets TargetBatch)`` returns
    ``(B, 3, H, W)`` float in [0, 1], on the images' device.

    Example:
        >>> view = SaliencyView("segments", p=1.0)
        >>> out = view(images.float() / 255, targets)  # images: (4, 3, 32, 32) uint8; targets: a TargetBatch
        >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
        (torch.Size([4, 3, 32, 32]), True)
    """

    def __init__(self, kind: str = "segments", p: float = 1.0, palette: torch.Tensor | None = None,
                 hue_jitter: float = 0.5, gain_jitter: float = 0.25, background_dim: tuple[float, float] = (0.35, 0.7),
                 background: str = "grey", feather: float = 1.0, feather_p: float = 0.5,
                 background_sigma: float = 2.0):
        super().__init__()
        if kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if background not in BACKGROUNDS:
            raise ValueError(f"unknown composite background {background!r}; choose one of {', '.join(BACKGROUNDS)}")
        if feather < 0 or background_sigma <= 0:
            raise ValueError(f"feather must be >= 0 and background_sigma > 0 (pixels), got {feather} and "
                             f"{background_sigma}")
        if not 0.0 <= feather_p <= 1.0:
            raise ValueError(f"feather_p must be in [0, 1], got {feather_p}")
        self.background, self.feather, self.feather_p = background, float(feather), float(feather_p)
        self.background_sigma = float(background_sigma)
        if not 0.0 <= gain_jitter < 1.0:
            raise ValueError(f"gain_jitter must be in [0, 1), got {gain_jitter}")
        lo, hi = background_dim
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"background_dim must satisfy 0 <= low <= high <= 1, got {background_dim}")
        self.kind, self.p = kind, float(p)
        self.hue_jitter, self.gain_jitter, self.background_dim = hue_jitter, gain_jitter, (lo, hi)
        self.register_buffer("palette", (palette if palette is not None else DEFAULT_PALETTE).clone().float(),
                             persistent=False)

    def generate_parameters(self, batch_size: int, device: torch.device | str = "cpu",
                            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random parameters of one view per image (drawn on the CPU, moved to ``device``).

        ``composite`` draws ``apply``, ``grey`` (DiLo's flat level, 0..254 / 255), ``partner`` (another
        image of the batch, for ``swap``) and ``feather``; the other kinds draw the palette's
        parameters, as before the composite view existed.
        """
        p = self.palette.shape[0]
        g = generator
        if self.kind == "composite":
            params = {
                "apply": torch.rand(batch_size, generator=g) < self.p,
                "grey": torch.randint(0, 255, (batch_size,), generator=g).float() / 255.0,
                "partner": (torch.arange(batch_size) + torch.randint(1, max(batch_size, 2), (batch_size,), generator=g))
                % max(batch_size, 1),
                "feather": torch.rand(batch_size, generator=g) < self.feather_p,
            }
            return {k: v.to(device) for k, v in params.items()}
        params = {
            "apply": torch.rand(batch_size, generator=g) < self.p,
            "perm": torch.argsort(torch.rand(batch_size, p, generator=g), dim=1),
            "hue": (torch.rand(batch_size, generator=g) * 2 - 1) * self.hue_jitter,
            "gain": 1 + (torch.rand(batch_size, p, generator=g) * 2 - 1) * self.gain_jitter,
            "dim": self.background_dim[0] + torch.rand(batch_size, generator=g) * (self.background_dim[1] - self.background_dim[0]),
            "flat": torch.randint(0, p, (batch_size,), generator=g),
        }
        return {k: v.to(device) for k, v in params.items()}

    def forward(self, images: torch.Tensor, targets: TargetBatch | None,
                params: dict[str, Any] | None = None) -> torch.Tensor:
        if self.p == 0.0:
            return images
        if targets is None:
            raise ValueError("this policy renders saliency views but no targets were given; "
                             "give a target source other than 'none', or a policy without 'sal' or 'comp'")
        if len(targets) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(targets)} targets")
        params = params or self.generate_parameters(images.shape[0], images.device)
        apply = params["apply"]
        if not bool(apply.any()):
            return images
        options = dict(background=self.background, feather=self.feather, background_sigma=self.background_sigma)
        if self.kind == "composite" and self.background == "swap" and "background" not in params:
            # Partners come from the whole batch, also when only part of it is rendered.
            params = dict(params, background=composite_backgrounds(images, params, "swap"))
        if bool(apply.all()):
            return render_views(images, targets, self.kind, params, self.palette, **options)
        index = torch.nonzero(apply).flatten()
        sub = {k: v.index_select(0, index) for k, v in params.items()}
        rendered = render_views(images.index_select(0, index), targets.index_select(index), self.kind, sub,
                                self.palette, **options)
        out = images.clone()
        out[index] = rendered
        return out

    def extra_repr(self) -> str:
        if self.kind == "composite":
            return (f"kind=composite, p={self.p}, background={self.background}, feather={self.feather:g}px "
                    f"(p={self.feather_p:g})")
        return f"kind={self.kind}, p={self.p}, palette={self.palette.shape[0]} colours"
