"""The Pix2Pix networks of the surrogate: a U-Net generator and a conditional PatchGAN.

Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (CVPR 2017),
as in their reference code (``junyanz/pytorch-CycleGAN-and-pix2pix``), with the sizes adapted
so that small images work:

- :class:`UNetGenerator` encodes with 4x4 stride-2 convolutions (LeakyReLU 0.2 before each but
  the first, batch norm after each but the first and the innermost), decodes with 4x4 stride-2
  transposed convolutions (ReLU before, batch norm after, optionally dropout 0.5 in the innermost
  decoder blocks, see below) and concatenates the encoder feature of the same scale (skip
  connections). Its depth follows the image size (:func:`unet_depth`): the side is halved while it
  stays even, at most 8 times, so 256 px goes down to 1x1 (8 levels, as in Pix2Pix), 32 px to 1x1
  (5 levels) and 96 = 3 x 32 px to 3x3 (5 levels). Its last layer has no tanh: it returns one raw output per
  target channel (:data:`~saliencyssl.target.TARGET_CHANNELS`) and :func:`to_probabilities`
  turns them into the saliency map (the raw value clamped to [0, 1]) and the mask and boundary
  probabilities (``sigmoid`` of their logits). The saliency channel is linear, not a sigmoid,
  so that its L1 loss keeps a gradient where the map is 0 (a sigmoid saturates there and the
  map stops learning: most of an RC map is exactly 0). ``in_channels`` and ``out_channels``
  default to the image's 3 and the target's 3; the project's experiments widen them (coordinate
  channels in, a "support" channel out), which were measured not to help and left the product:
  a checkpoint that records them is refused by :meth:`Architecture.from_dict`
  (:class:`RetiredArchitectureError`).
- **Full-resolution head** (``Architecture.head``, a departure from Pix2Pix). Pix2Pix's U-Net has
  no layer at the image's own resolution: its first convolution halves the side and its last
  transposed convolution doubles it, so every output pixel is drawn from half-resolution
  features. At 256 px that costs little; at 32 px a shape's outline is a pixel or two and a
  region boundary is a one-pixel line. On the quickstart's generated shapes the head lifts mask
  IoU from 0.88 to 0.90 and boundary F from 0.53 to 0.90 (600 steps of the default recipe,
  ``benchmarks/surrogate_shapes.py --head 0``), for 1.3x the multiply-adds of a 32 px image
  (7.5 M against 5.8 M) and 1.6x the CPU time of a training step. With ``head = C > 0`` the
  outermost decoder block returns ``C`` feature channels (transposed convolution, batch norm,
  ReLU), which are concatenated with the input image and pass two 3x3 convolutions at full
  resolution (``C + 3 -> C``, batch norm, ReLU; ``C -> out``), as the original U-Net keeps
  convolutions at every scale including the input's (Ronneberger et al., "U-Net: Convolutional Networks for
  Biomedical Image Segmentation", MICCAI 2015). ``head = 0`` is Pix2Pix's plain output layer
  (the layout of checkpoints that predate the head).
- **Dropout** (``Architecture.dropout_blocks``): Pix2Pix puts dropout 0.5 in the three decoder
  blocks after the innermost, which at 256 px work at 4-16 px, far below the output's
  resolution; at 32 px the same blocks include the 16x16 one that feeds the output. The default
  is none (``dropout_blocks = 0``): on the shapes Pix2Pix's three blocks changed nothing that
  counts (IoU 0.901 against 0.902, boundary F 0.91 against 0.90) and cost 4% more per step.
- :class:`PatchDiscriminator` is the conditional PatchGAN on the image concatenated with the
  generator's channels. At 256 px it has three stride-2 layers (70x70 receptive field); small images
  get fewer (:func:`patch_layers`: 1 at 32 px, 16x16 field; 2 at 64-96 px, 34x34 field).
- :func:`init_weights` draws convolution weights from N(0, 0.02) and batch-norm scales from
  N(1, 0.02), biases 0, as Pix2Pix does.

Channel widths start at ``ngf`` and double per level up to ``ngf * max_mult``. The default
(``ngf=16``, ``max_mult=8``, ``head=8``) keeps CPU inference at 32 px well under a millisecond per
image; Pix2Pix itself uses ``ngf=64``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from saliencyssl.datasets import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from saliencyssl.target import TARGET_CHANNELS

#: At most this many stride-2 levels (Pix2Pix's 256 px U-Net).
MAX_DEPTH = 8
#: At least this many levels (the image side must be a multiple of 2**MIN_DEPTH).
MIN_DEPTH = 3
#: Upper bounds of an :class:`Architecture`'s widths and depths: far above any useful value (the
#: defaults are ngf 16, ndf 16, max_mult 8, head 8, no dropout; Pix2Pix uses ngf 64), low enough
#: that a typo or a crafted checkpoint record cannot ask for terabytes of weights. The one place
#: these bounds live: the training config (:class:`~saliencyssl.surrogate.training.TrainConfig`)
#: reads them from here.
ARCH_LIMITS = {"ngf": 512, "ndf": 512, "max_mult": 64, "head": 1024, "dropout_blocks": 64}
#: Upper bound of a generator's parameter count that :meth:`Surrogate.load
#: <saliencyssl.surrogate.model.Surrogate.load>` accepts from a checkpoint record (counted on the
#: ``meta`` device from :meth:`Architecture.generator_shapes`, before anything is allocated).
#: The default generator (ngf 16) has about 1.0 M parameters at 32 to 96 px; Pix2Pix's ngf 64 about
#: 16.7 M at 32 px and 54 M at 256 px (eight levels); ngf 128 67 M at 224 px and 218 M at 256 px.
#: 100 M (400 MB of float32) is far above any useful surrogate, yet the widths within
#: :data:`ARCH_LIMITS` reach 1.6 G parameters (6.5 GB); training refuses what loading would.
MAX_GENERATOR_PARAMETERS = 100_000_000


def parameter_count(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    """The values of :meth:`Architecture.generator_shapes` (``{key: (shape, dtype)}``) in all: what
    :data:`MAX_GENERATOR_PARAMETERS` bounds, for training and loading alike."""
    return sum(math.prod(shape) for shape, _ in shapes.values())


def unet_depth(image_size: int) -> int:
    """Number of stride-2 levels of the U-Net for a square side: halve while even, at most 8.

    Examples:
        >>> [unet_depth(s) for s in (32, 64, 96, 128, 256)]
        [5, 6, 5, 7, 8]

    Raises:
        ValueError: the side is not a multiple of 8 (fewer than 3 levels would fit).
    """
    size = int(image_size)
    depth = 0
    while size % 2 == 0 and size >= 2 and depth < MAX_DEPTH:
        size //= 2
        depth += 1
    if depth < MIN_DEPTH:
        raise ValueError(f"image size {image_size} cannot be halved {MIN_DEPTH} times; use a multiple of "
                         f"{2 ** MIN_DEPTH} such as 32, 64, 96, 128 or 256")
    return depth


def patch_layers(image_size: int) -> int:
    """Stride-2 layers of the PatchGAN: 1 up to 48 px, 2 up to 96 px, 3 above (70x70 field at 256 px)."""
    if image_size <= 48:
        return 1
    if image_size <= 96:
        return 2
    return 3


def patch_receptive_field(n_layers: int) -> int:
    """Receptive field in pixels of :class:`PatchDiscriminator` with ``n_layers`` stride-2 layers."""
    field = 1
    # Layers from the output back to the input: two stride-1 4x4 convolutions, then n stride-2 ones.
    strides = [2] * n_layers + [1, 1]
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


#: What a record without these fields meant: the values before each field existed.
_BEFORE_FIELD = {"head": 0, "dropout_blocks": 3}
#: Fields of older records for options measured not to help, with the value this generator has:
#: two coordinate channels appended to the input, and a fourth output learning the support of the
#: exact map (the experiments' ``KnobArchitecture`` rebuilds both).
RETIRED_FIELDS = {"coords": False, "out_channels": len(TARGET_CHANNELS)}


class RetiredArchitectureError(ValueError):
    """An architecture record with a field this generator no longer has (:data:`RETIRED_FIELDS`).

    Attributes:
        field: the field (``"coords"`` or ``"out_channels"``).
        value: its recorded value.
    """

    def __init__(self, field: str, value):
        self.field, self.value = field, value
        what = {"coords": "coordinate channels in its input",
                "out_channels": f"{value} output channels (the fourth one the 'support' of the exact map)"}
        super().__init__(f"the generator was built with {what.get(field, f'{field}={value!r}')}, an option measured "
                         f"not to help that the surrogate no longer has")


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes the shapes of the generator's (and discriminator's) weights.

    Attributes:
        image_size: side of the square input, in pixels.
        ngf: generator channels at the first level.
        max_mult: widest level has ``ngf * max_mult`` channels.
        depth: stride-2 levels of the U-Net (:func:`unet_depth` of ``image_size``).
        dropout_blocks: innermost decoder blocks (excluding the innermost itself) with dropout 0.5
            (Pix2Pix: 3; default 0, see the module docstring).
        ndf: discriminator channels at its first layer.
        d_layers: stride-2 layers of the discriminator (:func:`patch_layers`).
        head: channels of the full-resolution head (0: none, Pix2Pix's output layer; see the
            module docstring). A record without this field (a checkpoint from before the head)
            reads as 0.
    """

    image_size: int
    ngf: int = 16
    max_mult: int = 8
    depth: int = 0
    dropout_blocks: int = 0
    ndf: int = 16
    d_layers: int = 0
    head: int = 8

    def __post_init__(self) -> None:
        """Check every field's type and range (:data:`ARCH_LIMITS`) before anything is built.

        Raises:
            ValueError: naming the field, its value and the range it needs.
        """
        for name in ("image_size", "ngf", "max_mult", "depth", "dropout_blocks", "ndf", "d_layers", "head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"architecture {name} must be a whole number, got {value!r}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"architecture image_size must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} px, got "
                             f"{self.image_size}")
        if self.ngf < 1 or self.ndf < 1 or self.max_mult < 1:
            raise ValueError(f"ngf, ndf and max_mult must be positive, got {self.ngf}, {self.ndf}, {self.max_mult}")
        if self.head < 0:
            raise ValueError(f"head must be 0 (none) or a channel count, got {self.head}")
        if self.dropout_blocks < 0:
            raise ValueError(f"dropout_blocks must be 0 (none) or more, got {self.dropout_blocks}")
        for name, high in ARCH_LIMITS.items():
            if getattr(self, name) > high:
                raise ValueError(f"architecture {name} = {getattr(self, name)} is above the limit of {high}")
        if not 0 <= self.d_layers <= MAX_DEPTH:
            raise ValueError(f"architecture d_layers must be from 1 to {MAX_DEPTH} (0: the default of the image "
                             f"size), got {self.d_layers}")
        if not self.depth:
            object.__setattr__(self, "depth", unet_depth(self.image_size))
        if not self.d_layers:
            object.__setattr__(self, "d_layers", patch_layers(self.image_size))
        if self.depth != unet_depth(self.image_size):
            raise ValueError(f"depth {self.depth} does not fit image size {self.image_size} "
                             f"(expected {unet_depth(self.image_size)})")

    def as_dict(self) -> dict:
        return {"name": "pix2pix-unet", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        """The architecture of a record (:meth:`as_dict`); fields it lacks take the values that
        predate them (no head, Pix2Pix's three dropout blocks), so older checkpoints load as trained.

        Raises:
            RetiredArchitectureError: the record has coordinate channels or a fourth output
                (:data:`RETIRED_FIELDS`); a record of the retired fields at this generator's
                values (``coords: false``, ``out_channels: 3``) reads as usual.
        """
        for name, plain in RETIRED_FIELDS.items():
            if name in data and name not in cls.__dataclass_fields__ and data[name] != plain:
                raise RetiredArchitectureError(name, data[name])
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name, before in _BEFORE_FIELD.items():
            fields.setdefault(name, before)
        return cls(**fields)

    def widths(self) -> list[int]:
        """Channels after each encoder level, outermost first."""
        return [self.ngf * min(2 ** i, self.max_mult) for i in range(self.depth)]

    def generator_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """``{state-dict key: (shape, dtype)}`` of :class:`UNetGenerator` for this architecture,
        found without allocating its weights (the generator is built on torch's ``meta`` device),
        so a checkpoint's weights can be compared with what its record claims before anything of
        that size exists."""
        with torch.device("meta"):
            generator = UNetGenerator(self)
        return {k: (tuple(v.shape), v.dtype) for k, v in generator.state_dict().items()}


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net (with an optional full-resolution head): ``(B, 3, S, S)`` image in [-1, 1] to
    ``(B, C, S, S)`` logits.

    Args:
        arch: the :class:`Architecture` (image size, widths, dropout, head).
        in_channels: input channels (the image's 3; the full-resolution head sees them all).
        out_channels: output channels (default: one per target channel).

    Example:
        >>> g = UNetGenerator(Architecture(32))
        >>> g(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, arch: Architecture, in_channels: int = 3, out_channels: int = len(TARGET_CHANNELS)):
        super().__init__()
        self.arch = arch
        self.out_channels = out_channels
        widths = arch.widths()
        depth = arch.depth
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        in_ch = image_ch = in_channels
        for i, out_ch in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            layers.append(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=(i == 0 or i == depth - 1)))
            if 0 < i < depth - 1:
                layers.append(nn.BatchNorm2d(out_ch))
            self.down.append(nn.Sequential(*layers))
            in_ch = out_ch
        # Decoder, innermost first: up[j] brings level depth-1-j back to the size of level depth-2-j.
        for j in range(depth):
            level = depth - 1 - j
            in_ch = widths[level] if j == 0 else 2 * widths[level]
            outermost = level == 0
            plain_output = outermost and not arch.head
            out_ch = (arch.head or out_channels) if outermost else widths[level - 1]
            layers = [nn.ReLU(inplace=True), nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=plain_output)]
            if not plain_output:
                layers.append(nn.BatchNorm2d(out_ch))
                if not outermost and 1 <= j <= arch.dropout_blocks:
                    layers.append(nn.Dropout(0.5))
                if outermost:
                    layers.append(nn.ReLU(inplace=True))
            self.up.append(nn.Sequential(*layers))
        # Full resolution: decoder features and the input image, two 3x3 convolutions.
        self.head = (nn.Sequential(nn.Conv2d(arch.head + image_ch, arch.head, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(arch.head), nn.ReLU(inplace=True),
                                   nn.Conv2d(arch.head, out_channels, 3, 1, 1))
                     if arch.head else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, S, S)`` float image (scaled to [-1, 1]) to ``(B, out_channels, S, S)`` float logits."""
        image = x
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](skips[-1])
        for j in range(1, len(self.up)):
            x = self.up[j](torch.cat([x, skips[-1 - j]], dim=1))
        if self.head is not None:
            x = self.head(torch.cat([x, image], dim=1))
        return x


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: image and target channels in, one real/fake logit per patch out.

    Args:
        arch: the :class:`Architecture` (``ndf``, ``d_layers``).
        in_channels: image channels plus the generator's channels (default ``3 + len(TARGET_CHANNELS)``).

    Shapes:
        input ``(B, in_channels, S, S)`` float; output ``(B, 1, P, P)`` logits with
        ``P = S / 2**d_layers - 2`` (30x30 at 256 px, 14x14 at 32 px).
    """

    def __init__(self, arch: Architecture, in_channels: int | None = None):
        super().__init__()
        ndf, n_layers = arch.ndf, arch.d_layers
        in_channels = 3 + len(TARGET_CHANNELS) if in_channels is None else in_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, inplace=True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)
        self.receptive_field = patch_receptive_field(n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Pix2Pix initialisation: conv weights N(0, gain), batch-norm weights N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def to_probabilities(raw: torch.Tensor) -> torch.Tensor:
    """Generator output ``(B, C, S, S)`` to channels in [0, 1]: saliency (channel 0) clamped, the others
    (mask, boundary) sigmoid."""
    raw = raw.float()
    return torch.cat([raw[:, 0:1].clamp(0.0, 1.0), torch.sigmoid(raw[:, 1:])], dim=1)


def image_to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(B, 3, S, S)`` in 0..255 to float ``(B, 3, S, S)`` in [-1, 1] (Pix2Pix's scaling)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (0..255), got {images.dtype}")
    return images.float().mul_(2.0 / 255.0).sub_(1.0)


def build_networks(arch: Architecture, seed: int | None = None) -> tuple[UNetGenerator, PatchDiscriminator]:
    """A freshly initialised generator and discriminator (seeded when ``seed`` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return init_weights(UNetGenerator(arch)), init_weights(PatchDiscriminator(arch))

