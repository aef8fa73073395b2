"""The view renderer: a target becomes an RGB view, on the device, whatever its source.

One renderer serves targets from the cache, the surrogate and the exact labeller alike (they
all arrive as a :class:`~saliencyssl.target.TargetBatch`), so ``--aug-source cache`` and
``--aug-source surrogate`` differ only in where the target came from. Three kinds of view:

- ``segments`` (the default, the paper's): every region is painted with a colour from a
  palette; per view the palette is *permuted* (which region gets which colour) and *jittered*
  (a random hue rotation of the whole palette and a brightness factor per colour) -- the
  paper's "random colour jittering and swapping from the same colour palette". Pixels outside
  the SaliencyCut mask are dimmed by a per-view factor, so salient regions and background are
  told apart;
- ``cut``: the image's own pixels inside the SaliencyCut mask and one flat palette colour
  outside (an image whose mask is empty is left as it is);
- ``saliency``: the RC saliency map as a grey image.

Following kornia's split, random parameters are drawn by :meth:`SaliencyView.generate_parameters`
and applied by :func:`render_views`, so the same parameters can be replayed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from saliencyssl.target import TargetBatch

VIEW_KINDS = ("segments", "cut", "saliency")

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


def render_views(images: torch.Tensor, targets: TargetBatch, kind: str, params: dict[str, torch.Tensor],
                 palette: torch.Tensor) -> torch.Tensor:
    """Render views of ``kind`` (functional core of :class:`SaliencyView`).

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        targets: the batch's targets, ``(B, 1, H, W)`` parts on the images' device.
        kind: one of :data:`VIEW_KINDS`.
        params: from :meth:`SaliencyView.generate_parameters`: ``perm`` ``(B, P)`` long,
            ``hue`` ``(B,)``, ``gain`` ``(B, P)``, ``dim`` ``(B,)``, ``flat`` ``(B,)`` long.
        palette: ``(P, 3)`` float RGB in [0, 1].

    Returns:
        ``(B, 3, H, W)`` float in [0, 1].
    """
    if kind == "saliency":
        return targets.saliency.to(images.dtype).expand(-1, 3, -1, -1).clone()
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
        kind: ``segments``, ``cut`` or ``saliency`` (:data:`VIEW_KINDS`).
        p: probability that an image is replaced by its view.
        palette: ``(P, 3)`` RGB in [0, 1]; default :data:`DEFAULT_PALETTE`.
        hue_jitter: largest hue rotation of the palette, in turns.
        gain_jitter: per-colour brightness factor drawn from ``1 +- gain_jitter``.
        background_dim: range of the factor that dims pixels outside the mask.

    Shapes: ``forward(images (B, 3, H, W) float in [0, 1], targets TargetBatch)`` returns
    ``(B, 3, H, W)`` float in [0, 1], on the images' device.

    Example:
        >>> view = SaliencyView("segments", p=1.0)
        >>> out = view(images, targets)  # doctest: +SKIP
    """

    def __init__(self, kind: str = "segments", p: float = 1.0, palette: torch.Tensor | None = None,
                 hue_jitter: float = 0.5, gain_jitter: float = 0.25, background_dim: tuple[float, float] = (0.35, 0.7)):
        super().__init__()
        if kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {kind!r}; choose one of {', '.join(VIEW_KINDS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
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
        """Random parameters of one view per image (drawn on the CPU, moved to ``device``)."""
        p = self.palette.shape[0]
        g = generator
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
                             "use an --aug-source other than 'none', or a policy without 'sal'")
        if len(targets) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(targets)} targets")
        params = params or self.generate_parameters(images.shape[0], images.device)
        apply = params["apply"]
        if not bool(apply.any()):
            return images
        if bool(apply.all()):
            return render_views(images, targets, self.kind, params, self.palette)
        index = torch.nonzero(apply).flatten()
        sub = {k: v.index_select(0, index) for k, v in params.items()}
        rendered = render_views(images.index_select(0, index), targets.index_select(index), self.kind, sub,
                                self.palette)
        out = images.clone()
        out[index] = rendered
        return out

    def extra_repr(self) -> str:
        return f"kind={self.kind}, p={self.p}, palette={self.palette.shape[0]} colours"
