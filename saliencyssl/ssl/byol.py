"""BYOL: predict a momentum encoder's projection of the other view, no negatives."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import update_momentum
from torch import Tensor, nn

from saliencyssl.ssl.method import (MAX_WIDTH, SGD_RECIPE, OptimizerRecipe, SSLMethod, _check_float, _check_head_values,
                                    _check_int, momentum_copy, scheduled_momentum)
from saliencyssl.target import TargetBatch


class BYOL(SSLMethod):
    """BYOL[0]: the online network predicts the target network's projection of the other view.

    Online branch: backbone, projection head, prediction head. Target branch: deep copies of the
    backbone and projection head with gradients off, updated before every step by
    :func:`lightly.models.utils.update_momentum` with a momentum that rises along
    :func:`lightly.utils.scheduler.cosine_schedule` from ``momentum_start`` (0.99) to
    ``momentum_end`` (1.0) over the run, as in BYOL (Sec. 3.2, tau_base = 0.99 for short runs).
    The loss is lightly's :class:`~lightly.loss.NegativeCosineSimilarity`, symmetrised over the
    two views as in the paper: ``0.5 * (ncs(p_a, z_b) + ncs(p_b, z_a))`` (lightly's CIFAR-10
    scaling; the paper's squared-L2 form is ``2 + 2 * loss`` up to scale and offset).

    Defaults follow lightly's CIFAR-10 benchmark[1]: projection 512-1024-256, prediction
    256-1024-256 (BYOL uses 4096 hidden units on ImageNet), SGD lr 0.06 x batch/128.

    - [0] BYOL, 2020, https://arxiv.org/abs/2006.07733
    - [1] lightly CIFAR-10 benchmark, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html

    Examples:
        >>> method = BYOL(resnet18_backbone(cifar_stem=True))
        >>> method.before_step(progress=step / (total_steps - 1), epoch=epoch)  # target update
        >>> loss = method.training_loss(view_a, view_b)
        >>> loss.backward()
    """

    name: ClassVar[str] = "byol"
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "projection_hidden_dim": 1024,
        "output_dim": 256,
        "prediction_hidden_dim": 1024,
        "momentum_start": 0.99,
        "momentum_end": 1.0,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        hp = self.hparams
        self.projection_head = BYOLProjectionHead(hp["feature_dim"], hp["projection_hidden_dim"], hp["output_dim"])
        self.prediction_head = BYOLPredictionHead(hp["output_dim"], hp["prediction_hidden_dim"], hp["output_dim"])
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()
        self.current_momentum = hp["momentum_start"]

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "projection_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "output_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "prediction_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        f, h, o, p = (hparams[k] for k in ("feature_dim", "projection_hidden_dim", "output_dim",
                                           "prediction_hidden_dim"))
        # the projection head twice (online and momentum), the predictor once
        _check_head_values(cls, hparams, 2 * (f * h + h * o) + 2 * o * p,
                           ("projection_hidden_dim", "output_dim", "prediction_hidden_dim"))
        for key in ("momentum_start", "momentum_end"):
            _check_float(cls, hparams, key, low=0.0, high=1.0, low_inclusive=True,
                         hint="BYOL uses 0.99 -> 1.0 (0.996 -> 1.0 for long ImageNet runs)")

    def before_step(self, progress: float, epoch: int) -> None:
        self._check_progress(progress, epoch)
        momentum = scheduled_momentum(progress, self.hparams["momentum_start"], self.hparams["momentum_end"])
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        self.current_momentum = momentum

    def _online(self, view: Tensor) -> Tensor:
        return self._fp32(lambda f: self.prediction_head(self.projection_head(f)), self._features(view))

    @torch.no_grad()
    def _target(self, view: Tensor) -> Tensor:
        return self._fp32(self.projection_head_momentum, self.backbone_momentum(view).flatten(start_dim=1))

    def _symmetric_loss(self, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
        return 0.5 * (self.criterion(p_a, z_b) + self.criterion(p_b, z_a))

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        self._check_views(view_a, view_b)
        p_a, p_b = self._online(view_a), self._online(view_b)
        z_a, z_b = self._target(view_a), self._target(view_b)
        return self._fp32_loss(self._symmetric_loss, p_a, p_b, z_a, z_b)
