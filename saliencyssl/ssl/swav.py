"""SwAV: swapped prediction of online cluster assignments."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from torch import Tensor, nn
from torch.nn import functional as F

from saliencyssl.ssl.method import (MAX_EPOCHS, MAX_WIDTH, OptimizerRecipe, SSLMethod, _check_float, _check_head_values,
                                    _check_int)
from saliencyssl.target import TargetBatch

#: The most Sinkhorn-Knopp iterations per step (SwAV uses 3; each is a pass over the batch x prototypes scores).
MAX_SINKHORN_ITERATIONS = 1000


class SwAV(SSLMethod):
    """SwAV[0]: predict one view's cluster code from the other view.

    Each view is projected, L2-normalised and scored against ``n_prototypes`` learnable
    prototypes (lightly's :class:`~lightly.models.modules.SwaVPrototypes`). Codes are the
    equipartitioned soft assignments that the Sinkhorn-Knopp algorithm finds for each view's
    scores (no gradient); each view's scores must predict the other view's codes
    (lightly's :class:`~lightly.loss.SwaVLoss`, symmetric over the two views as in the paper).

    Prototypes are renormalised to the unit sphere in :meth:`before_step` (every step, as in
    the paper) and frozen for the first ``freeze_prototypes_epochs`` epochs: their gradients are
    dropped (set to ``None``) in :meth:`after_backward`, so neither SGD nor Adam touches them
    (weight decay included), and ``requires_grad`` never changes, which keeps DDP's gradient
    bucketing intact. With ``distributed=True`` the Sinkhorn normalisation runs over the global
    batch (``SwaVLoss(sinkhorn_gather_distributed=True)``).

    Defaults follow lightly's CIFAR-10 benchmark[1]: two 32 px crops (no multi-crop, no
    queue), projection head 512-512-128, 512 prototypes, temperature 0.1, Sinkhorn epsilon 0.05
    with 3 iterations, prototypes frozen for the first epoch, Adam lr 1e-3 x batch/128 with
    weight decay 1e-6.

    - [0] SwAV, 2020, https://arxiv.org/abs/2006.09882
    - [1] lightly CIFAR-10 benchmark, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html

    Examples:
        >>> method = SwAV(resnet18_backbone(cifar_stem=True), n_prototypes=512)
        >>> optimizer = torch.optim.SGD(method.parameters(), lr=0.06)
        >>> method.before_step(progress=step / (total_steps - 1), epoch=epoch)  # normalise prototypes
        >>> loss = method.training_loss(view_a, view_b)
        >>> loss.backward()
        >>> method.after_backward(epoch)  # drops prototype gradients while they are frozen
        >>> optimizer.step()
    """

    name: ClassVar[str] = "swav"
    optimizer_recipe: ClassVar[OptimizerRecipe] = OptimizerRecipe(
        kind="adam", base_lr=1e-3, weight_decay=1e-6, momentum=0.0)
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "projection_hidden_dim": 512,
        "output_dim": 128,
        "n_prototypes": 512,
        "temperature": 0.1,
        "sinkhorn_iterations": 3,
        "sinkhorn_epsilon": 0.05,
        "freeze_prototypes_epochs": 1,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        hp = self.hparams
        self.projection_head = SwaVProjectionHead(hp["feature_dim"], hp["projection_hidden_dim"], hp["output_dim"])
        # Freezing is handled here (after_backward), not by lightly's n_steps_frozen_prototypes,
        # which toggles requires_grad inside forward.
        self.prototypes = SwaVPrototypes(hp["output_dim"], hp["n_prototypes"], n_steps_frozen_prototypes=0)
        self.prototypes.normalize()
        self.criterion = SwaVLoss(temperature=hp["temperature"], sinkhorn_iterations=hp["sinkhorn_iterations"],
                                  sinkhorn_epsilon=hp["sinkhorn_epsilon"],
                                  sinkhorn_gather_distributed=self.distributed)

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "projection_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "output_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "n_prototypes", minimum=2, maximum=MAX_WIDTH)
        _check_float(cls, hparams, "temperature", low=1e-3, high=10.0, hint="SwAV uses 0.1")
        _check_int(cls, hparams, "sinkhorn_iterations", minimum=1, maximum=MAX_SINKHORN_ITERATIONS)
        _check_float(cls, hparams, "sinkhorn_epsilon", low=0.02, high=10.0,
                     hint="SwAV uses 0.05 (0.03 on ImageNet with a queue); below 0.02 exp(score/epsilon) "
                          "overflows float32")
        _check_int(cls, hparams, "freeze_prototypes_epochs", minimum=0, maximum=MAX_EPOCHS)
        f, h, o, k = (hparams[k] for k in ("feature_dim", "projection_hidden_dim", "output_dim", "n_prototypes"))
        _check_head_values(cls, hparams, f * h + h * o + o * k, ("projection_hidden_dim", "output_dim", "n_prototypes"))

    def prototypes_frozen(self, epoch: int) -> bool:
        """Whether the prototypes are held fixed during ``epoch``."""
        return epoch < self.hparams["freeze_prototypes_epochs"]

    def before_step(self, progress: float, epoch: int) -> None:
        self._check_progress(progress, epoch)
        self.prototypes.normalize()

    def after_backward(self, epoch: int) -> None:
        if self.prototypes_frozen(epoch):
            for parameter in self.prototypes.parameters():
                parameter.grad = None

    def _scores(self, view: Tensor) -> Tensor:
        return self._fp32(self._project_and_score, self._features(view))

    def _project_and_score(self, features: Tensor) -> Tensor:
        return self.prototypes(F.normalize(self.projection_head(features), dim=1, p=2))

    def _swapped_loss(self, scores_a: Tensor, scores_b: Tensor) -> Tensor:
        return self.criterion([scores_a, scores_b], [])

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        self._check_views(view_a, view_b)
        return self._fp32_loss(self._swapped_loss, self._scores(view_a), self._scores(view_b))
