"""SimSiam: a predictor and a stop-gradient, no negatives and no momentum encoder."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from saliencyssl.ssl.method import MAX_WIDTH, OptimizerRecipe, SSLMethod, _check_bool, _check_head_values, _check_int
from saliencyssl.target import TargetBatch


class SimSiam(SSLMethod):
    """SimSiam[0]: each view's prediction matches the other view's projection, under stop-grad.

    ``loss = 0.5 * (ncs(p_a, stopgrad(z_b)) + ncs(p_b, stopgrad(z_a)))`` with lightly's
    :class:`~lightly.loss.NegativeCosineSimilarity` (symmetrised as in the paper, Eq. 2-4).

    Defaults follow lightly's CIFAR-10 benchmark[1] and SimSiam's CIFAR setting (Appendix D): a
    2-layer projection MLP 512-2048-2048 with batch norm on both layers (ReLU on the hidden one),
    a prediction MLP 2048-512-2048 (lightly's :class:`~lightly.models.modules.SimSiamPredictionHead`),
    and SGD lr 0.06 *not* scaled with the batch size, as lightly's benchmark does for stability.
    ``fix_predictor_lr=True`` keeps the predictor at the peak learning rate while the rest follows the
    cosine schedule (the paper's Sec. 4.2, Table 1c, and its official code's ``--fix-pred-lr``);
    off by default, as in lightly's benchmark.

    - [0] SimSiam, 2020, https://arxiv.org/abs/2011.10566
    - [1] lightly CIFAR-10 benchmark, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html

    Examples:
        >>> method = SimSiam(resnet18_backbone(cifar_stem=True))
        >>> loss = method.training_loss(view_a, view_b)
        >>> loss.backward()
    """

    name: ClassVar[str] = "simsiam"
    optimizer_recipe: ClassVar[OptimizerRecipe] = OptimizerRecipe(kind="sgd", base_lr=0.06, scale_with_batch=False)
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "projection_hidden_dim": 2048,
        "output_dim": 2048,
        "prediction_hidden_dim": 512,
        "fix_predictor_lr": False,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        hp = self.hparams
        hidden, out = hp["projection_hidden_dim"], hp["output_dim"]
        self.projection_head = ProjectionHead([
            (hp["feature_dim"], hidden, nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)),
            (hidden, out, nn.BatchNorm1d(out), None),
        ])
        self.prediction_head = SimSiamPredictionHead(out, hp["prediction_hidden_dim"], out)
        self.criterion = NegativeCosineSimilarity()

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "projection_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "output_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "prediction_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        f, h, o, p = (hparams[k] for k in ("feature_dim", "projection_hidden_dim", "output_dim",
                                           "prediction_hidden_dim"))
        _check_head_values(cls, hparams, f * h + h * o + 2 * o * p,
                           ("projection_hidden_dim", "output_dim", "prediction_hidden_dim"))
        _check_bool(cls, hparams, "fix_predictor_lr")

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        return list(self.prediction_head.parameters()) if self.hparams["fix_predictor_lr"] else []

    def _branch(self, view: Tensor) -> tuple[Tensor, Tensor]:
        z = self._fp32(self.projection_head, self._features(view))
        return z, self._fp32(self.prediction_head, z)

    def _symmetric_loss(self, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
        return 0.5 * (self.criterion(p_a, z_b) + self.criterion(p_b, z_a))

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        self._check_views(view_a, view_b)
        z_a, p_a = self._branch(view_a)
        z_b, p_b = self._branch(view_b)
        return self._fp32_loss(self._symmetric_loss, p_a, p_b, z_a.detach(), z_b.detach())
