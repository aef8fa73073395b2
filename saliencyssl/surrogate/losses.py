"""Losses of the surrogate: the conditional GAN term and the per-channel reconstruction terms.

Pix2Pix trains its generator on ``GAN + lambda * L1`` (lambda = 100). The surrogate predicts
three channels of different kinds (:data:`~saliencyssl.target.TARGET_CHANNELS`), so each gets
a loss that suits it, on the generator's raw outputs ``z`` (the saliency channel is linear, the
mask and boundary channels are logits, ``p = sigmoid(z)``). The adversarial term is off by
default (``LossWeights.gan = 0``): the targets are exact and deterministic, the per-channel terms
below already say what a right answer is, and on the quickstart's generated shapes the GAN left
the mask as it was (IoU 0.905 against 0.902) and made the region boundaries worse (boundary F 0.78
against 0.90) at 1.5x the CPU time of a step (600 steps, ``benchmarks/surrogate_shapes.py
--lambda-gan 1``).

===========  ===========================================  ================================
channel      kind                                         loss
===========  ===========================================  ================================
saliency     continuous map in [0, 1]                     ``lambda_l1 * |z - y|`` (mean)
mask         binary, often empty (no object found)        ``lambda_mask * (BCE + soft Dice)``
boundary     binary, sparse (region borders)              ``lambda_boundary * (balanced BCE + soft Dice)``
===========  ===========================================  ================================

Two further terms were measured and did not help, and live on in the project's experiments
(``experiments/surrogate_knobs.py``): an image-level presence term on the largest mask logit,
and a fourth output learning where the exact map is nonzero (the "support").

The soft Dice is computed per image with a smoothing of 1 pixel, so an image whose exact mask is
empty is pushed towards an empty prediction too (its Dice loss is ``1 - 1 / (sum(p) + 1)``).

The boundary BCE weights boundary pixels by ``boundary_pos_weight`` because they are few (9% of
the pixels of the generated shapes at 32 px, 14% on CIFAR-10). By default (``None``) the weight
is class-balanced per batch, the batch's non-boundary pixels over its boundary pixels, as in HED's
class-balanced cross-entropy for edge maps (Xie and Tu, "Holistically-Nested Edge Detection",
ICCV 2015; we weight only the positives, which is the same loss up to a factor). With a
fixed weight 2, the boundary's best constant answer on the shapes is a probability of 0.16, far
below the 0.5 at which :meth:`~saliencyssl.target.TargetBatch.from_channels` cuts, so only pixels
the network is sure of cross it; on the quickstart's shapes weight 2 gave boundary F 0.37 against
0.90 balanced (600 steps, ``benchmarks/surrogate_shapes.py --boundary-pos-weight 2``), and 0.00 in
the Pix2Pix recipe, whose boundaries were also blurred by its half-resolution output.

:class:`GANLoss` is Pix2Pix's: least squares (``"lsgan"``, targets 1 and 0 on the patch
logits) or the vanilla cross-entropy (``"vanilla"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from saliencyssl.metrics import soft_dice_loss

GAN_MODES = ("lsgan", "vanilla")


class GANLoss(nn.Module):
    """Pix2Pix's adversarial loss on PatchGAN logits.

    Args:
        mode: ``"lsgan"`` (mean squared error to 1 / 0) or ``"vanilla"`` (binary cross-entropy
            with logits).

    Example:
        >>> loss = GANLoss("lsgan")
        >>> float(loss(torch.ones(2, 1, 4, 4), True))
        0.0
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"GAN mode must be one of {', '.join(GAN_MODES)}, got {mode!r}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """Mean loss of ``(B, 1, P, P)`` patch logits against all-real (``True``) or all-fake labels."""
        logits = logits.float()
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)


#: Bounds of the class-balanced boundary weight (a batch without boundary pixels has no positive term to weight).
BALANCED_WEIGHT_RANGE = (1.0, 100.0)


def balanced_pos_weight(target: torch.Tensor) -> torch.Tensor:
    """HED's class balance for a sparse binary target: non-positive over positive pixels.

    Args:
        target: ``(B, 1, H, W)`` float in {0, 1} (the exact boundary channel of a batch).

    Returns:
        A float32 scalar tensor on ``target``'s device, clamped to :data:`BALANCED_WEIGHT_RANGE`
        (no gradient).
    """
    y = target.detach().float()
    positives = y.sum()
    weight = (y.numel() - positives) / positives.clamp_min(1.0)
    return weight.clamp(*BALANCED_WEIGHT_RANGE)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (see the module docstring).

    Attributes:
        gan: weight of the adversarial term (0 trains a plain regression U-Net).
        l1: ``lambda`` of the L1 term on the saliency map (Pix2Pix: 100).
        mask: weight of the mask's BCE + soft Dice.
        boundary: weight of the boundary's weighted BCE + soft Dice.
        boundary_pos_weight: BCE weight of boundary pixels against the others; ``None``
            (default): class-balanced per batch (:func:`balanced_pos_weight`).
    """

    gan: float = 0.0
    l1: float = 100.0
    mask: float = 20.0
    boundary: float = 10.0
    boundary_pos_weight: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class TargetLoss(nn.Module):
    """Reconstruction loss of predicted channels against the exact ones.

    Args:
        weights: :class:`LossWeights` (``gan`` is not used here).

    Example:
        >>> loss = TargetLoss()
        >>> total, parts = loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
        >>> sorted(parts)
        ['boundary', 'l1', 'mask']
    """

    def __init__(self, weights: LossWeights | None = None):
        super().__init__()
        self.weights = weights or LossWeights()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total weighted loss and its unweighted parts.

        Args:
            logits: ``(B, C, H, W)`` generator output whose first three channels are the raw
                saliency, mask and boundary logits (:data:`~saliencyssl.target.TARGET_CHANNELS`).
            target: ``(B, C, H, W)`` exact channels in [0, 1], the same first three.

        Returns:
            ``(total, {"l1", "mask", "boundary"})``: a float32 scalar with its gradient, and the
            unweighted parts as detached scalars.
        """
        w = self.weights
        logits = logits.float()
        # L1 on the raw (unclamped) saliency output: its gradient never vanishes, and since the
        # target lies in [0, 1], |z - y| >= |clamp(z, 0, 1) - y| with the same minimiser.
        l1 = (logits[:, 0:1] - target[:, 0:1]).abs().mean()
        mask = (F.binary_cross_entropy_with_logits(logits[:, 1:2], target[:, 1:2])
                + soft_dice_loss(logits[:, 1:2], target[:, 1:2]))
        pos_weight = (balanced_pos_weight(target[:, 2:3]) if w.boundary_pos_weight is None
                      else torch.tensor(float(w.boundary_pos_weight), device=logits.device))
        boundary = (F.binary_cross_entropy_with_logits(logits[:, 2:3], target[:, 2:3], pos_weight=pos_weight)
                    + soft_dice_loss(logits[:, 2:3], target[:, 2:3]))
        total = w.l1 * l1 + w.mask * mask + w.boundary * boundary
        parts = {"l1": l1.detach(), "mask": mask.detach(), "boundary": boundary.detach()}
        return total, parts
