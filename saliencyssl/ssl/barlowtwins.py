"""Barlow Twins: make the cross-correlation of the two views' embeddings the identity."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from saliencyssl.ssl.method import (MAX_WIDTH, SGD_RECIPE, OptimizerRecipe, SSLMethod, _check_float, _check_head_values,
                                    _check_int)
from saliencyssl.target import TargetBatch


class BarlowTwins(SSLMethod):
    """Barlow Twins[0]: invariance on the diagonal, redundancy reduction off it.

    The embeddings of the two views are standardised over the batch and their ``D x D``
    cross-correlation ``C`` is pushed towards the identity:
    ``sum_i (1 - C_ii)^2 + lambda_param * sum_{i != j} C_ij^2`` (lightly's
    :class:`~lightly.loss.BarlowTwinsLoss`; symmetric in the two views up to transposing ``C``).
    With ``distributed=True`` the cross-correlation matrices of all processes are averaged
    (autograd-aware all-reduce) so ``C`` is over the global batch; the standardisation stays
    per process, as in lightly.

    Defaults follow lightly's CIFAR-10 benchmark[1]: a 2-layer projection head 512-2048-2048
    (batch norm + ReLU on the hidden layer; the paper's ImageNet head is 3 x 8192),
    ``lambda_param = 5e-3`` (the paper's value), SGD lr 0.06 x batch/128 - with one deviation:
    the loss is multiplied by ``loss_scale``, by default ``1 / output_dim`` (the per-dimension
    mean instead of the sum). The summed loss is ~2000 at initialisation and its backbone
    gradient ~750x SimCLR's; under plain SGD (the paper uses LARS, which ignores the loss
    scale) the first steps inflate the batch-normalised weights ~60x and under float16 autocast
    the backbone overflows to NaN within a few steps (measured on an H200, batch 256 of synthetic smooth images: summed
    loss NaN by step 18 in fp16, stuck at ~1650 in fp32 with weight norm 112 -> 7400; scaled
    loss 1605 -> 277 in 60 steps in both precisions, weight norm steady). Pass
    ``loss_scale=1.0`` for lightly's exact loss.

    - [0] Barlow Twins, 2021, https://arxiv.org/abs/2103.03230
    - [1] lightly CIFAR-10 benchmark, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html

    Examples:
        >>> method = BarlowTwins(resnet18_backbone(cifar_stem=True), lambda_param=5e-3)
        >>> loss = method.training_loss(view_a, view_b)
        >>> loss.backward()
    """

    name: ClassVar[str] = "barlowtwins"
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "projection_hidden_dim": 2048,
        "output_dim": 2048,
        "lambda_param": 5e-3,
        "loss_scale": None,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        hp = self.hparams
        hidden = hp["projection_hidden_dim"]
        self.projection_head = ProjectionHead([
            (hp["feature_dim"], hidden, nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)),
            (hidden, hp["output_dim"], None, None),
        ])
        self.criterion = BarlowTwinsLoss(lambda_param=hp["lambda_param"], gather_distributed=self.distributed)
        #: The factor applied to lightly's summed loss (``hparams["loss_scale"]`` or ``1 / output_dim``).
        self.loss_scale = 1.0 / hp["output_dim"] if hp["loss_scale"] is None else hp["loss_scale"]

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "projection_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "output_dim", minimum=2, maximum=MAX_WIDTH)
        f, h, o = (hparams[k] for k in ("feature_dim", "projection_hidden_dim", "output_dim"))
        # the head, and the output_dim x output_dim cross-correlation matrix of every step
        _check_head_values(cls, hparams, f * h + h * o + o * o, ("projection_hidden_dim", "output_dim"))
        _check_float(cls, hparams, "lambda_param", low=0.0, high=1.0, low_inclusive=True,
                     hint="Barlow Twins uses 5e-3 (about 1/output_dim)")
        if hparams["loss_scale"] is not None:
            _check_float(cls, hparams, "loss_scale", low=0.0, high=1.0,
                         hint="None (default) means 1/output_dim; 1.0 is lightly's summed loss")

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        self._check_views(view_a, view_b)
        z_a = self._fp32(self.projection_head, self._features(view_a))
        z_b = self._fp32(self.projection_head, self._features(view_b))
        return self.loss_scale * self._fp32_loss(self.criterion, z_a, z_b)
