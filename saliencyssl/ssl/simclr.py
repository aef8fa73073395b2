"""SimCLR: contrastive learning with in-batch negatives."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn

from saliencyssl.ssl.method import (MAX_LAYERS, MAX_WIDTH, SGD_RECIPE, OptimizerRecipe, SSLMethod, _check_bool,
                                    _check_float, _check_head_values, _check_int)
from saliencyssl.target import TargetBatch


class SimCLR(SSLMethod):
    """SimCLR[0]: pull two views of an image together, push the other 2B-2 views away.

    Each view goes through the backbone and an MLP projection head; the normalised temperature
    scaled cross-entropy (NT-Xent) loss of lightly's :class:`~lightly.loss.NTXentLoss` treats the
    other view of the same image as the positive and every other view in the batch as negatives.
    The loss is symmetric in the two views by construction.

    Defaults follow lightly's CIFAR-10 benchmark[1]: a 2-layer projection head 512-512-128 with
    batch norm (SimCLR v1's 2-layer MLP, with SimCLR v2's batch norm), temperature 0.5, SGD
    lr 0.06 x batch/128.

    - [0] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    - [1] lightly CIFAR-10 benchmark, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html

    Attributes:
        temperature: divides the cosine similarities (lower = sharper); 0.5 as in lightly's
            benchmark (SimCLR used 0.1-0.5 depending on batch size).
        projection_hidden_dim / output_dim / projection_layers / projection_batch_norm:
            the projection head.

    With ``distributed=True`` the negatives come from the whole global batch
    (``NTXentLoss(gather_distributed=True)``), as in SimCLR's large-batch training.

    Examples:
        >>> backbone = resnet18_backbone(cifar_stem=True)
        >>> method = SimCLR(backbone, temperature=0.5)
        >>>
        >>> # two random augmentations of the same images, already normalised
        >>> view_a, view_b = transform(images), transform(images)
        >>>
        >>> loss = method.training_loss(view_a, view_b)
        >>> loss.backward()
    """

    name: ClassVar[str] = "simclr"
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "projection_hidden_dim": 512,
        "output_dim": 128,
        "projection_layers": 2,
        "projection_batch_norm": True,
        "temperature": 0.5,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        hp = self.hparams
        self.projection_head = SimCLRProjectionHead(
            input_dim=hp["feature_dim"], hidden_dim=hp["projection_hidden_dim"], output_dim=hp["output_dim"],
            num_layers=hp["projection_layers"], batch_norm=hp["projection_batch_norm"])
        self.criterion = NTXentLoss(temperature=hp["temperature"], gather_distributed=self.distributed)

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "projection_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "output_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "projection_layers", minimum=2, maximum=MAX_LAYERS)
        f, h, o, layers = hparams["feature_dim"], hparams["projection_hidden_dim"], hparams["output_dim"], \
            hparams["projection_layers"]
        _check_head_values(cls, hparams, f * h + (layers - 2) * h * h + h * o,
                           ("projection_hidden_dim", "output_dim", "projection_layers"))
        _check_bool(cls, hparams, "projection_batch_norm")
        _check_float(cls, hparams, "temperature", low=1e-3, high=10.0,
                     hint="SimCLR uses 0.1-0.5; lightly's CIFAR-10 benchmark uses 0.5")

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        self._check_views(view_a, view_b)
        z_a = self._fp32(self.projection_head, self._features(view_a))
        z_b = self._fp32(self.projection_head, self._features(view_b))
        return self._fp32_loss(self.criterion, z_a, z_b)
