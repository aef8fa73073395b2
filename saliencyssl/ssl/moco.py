"""MoCo v2: contrastive learning against a momentum encoder and a queue of past keys."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum
from torch import Tensor, nn

from saliencyssl.ssl.method import (MAX_QUEUE, MAX_WIDTH, SGD_RECIPE, OptimizerRecipe, SSLMethod, _check_bool,
                                    _check_float, _check_head_values, _check_int, momentum_copy, scheduled_momentum)
from saliencyssl.target import TargetBatch


class MoCo(SSLMethod):
    """MoCo v2[0, 1]: queries from the online encoder, keys from a momentum encoder.

    The query of one view must pick out the key of the other view of the same image among
    ``memory_bank_size`` negatives: keys of earlier batches held in a first-in first-out queue
    (lightly's :class:`~lightly.loss.NTXentLoss` with ``memory_bank_size=(N, dim)``). The key
    encoder (backbone + projection head) is a deep copy of the online one with gradients off,
    updated before every step by :func:`lightly.models.utils.update_momentum` with momentum
    following :func:`lightly.utils.scheduler.cosine_schedule` from ``momentum_start`` to
    ``momentum_end`` (both 0.99 by default, i.e. lightly's constant CIFAR-10 momentum).

    Defaults follow lightly's CIFAR-10 benchmark[2]: MoCo v2's 2-layer MLP head (here 512-512-128,
    no batch norm), temperature 0.1, a 4096-key queue, momentum 0.99, and the symmetrised loss of
    the MoCo authors' CIFAR-10 demo (both views serve as query and key; the MoCo v2 paper itself
    uses one direction: set ``symmetric=False``). Both directions are scored against the queue as
    it was before the step and then both key sets are enqueued, so a batch's own keys are never
    its negatives. Keys are computed on a shuffled batch ("shuffling BN", MoCo v1 Sec. 3.3); with
    ``distributed=True`` the shuffle crosses processes and the queue is filled with the keys of
    the whole global batch, as in MoCo.

    - [0] MoCo v1, 2020, https://arxiv.org/abs/1911.05722
    - [1] MoCo v2, 2020, https://arxiv.org/abs/2003.04297
    - [2] lightly CIFAR-10 benchmark, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html

    Examples:
        >>> method = MoCo(resnet18_backbone(cifar_stem=True), memory_bank_size=4096)
        >>> method.before_step(progress=step / (total_steps - 1), epoch=epoch)  # momentum update
        >>> loss = method.training_loss(view_a, view_b)
        >>> loss.backward()
    """

    name: ClassVar[str] = "moco"
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "projection_hidden_dim": 512,
        "output_dim": 128,
        "temperature": 0.1,
        "memory_bank_size": 4096,
        "momentum_start": 0.99,
        "momentum_end": 0.99,
        "symmetric": True,
    }

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__(backbone, distributed=distributed, **hparams)
        hp = self.hparams
        self.projection_head = MoCoProjectionHead(hp["feature_dim"], hp["projection_hidden_dim"], hp["output_dim"])
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(temperature=hp["temperature"],
                                    memory_bank_size=(hp["memory_bank_size"], hp["output_dim"]),
                                    gather_distributed=self.distributed)
        self.current_momentum = hp["momentum_start"]

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        _check_int(cls, hparams, "projection_hidden_dim", minimum=1, maximum=MAX_WIDTH)
        _check_int(cls, hparams, "output_dim", minimum=1, maximum=MAX_WIDTH)
        _check_float(cls, hparams, "temperature", low=1e-3, high=10.0,
                     hint="MoCo v2 uses 0.2 on ImageNet, lightly's CIFAR-10 benchmark 0.1")
        _check_int(cls, hparams, "memory_bank_size", minimum=1, maximum=MAX_QUEUE)
        f, h, o, bank = (hparams[k] for k in ("feature_dim", "projection_hidden_dim", "output_dim", "memory_bank_size"))
        # the projection head twice (online and momentum) and the queue of memory_bank_size x output_dim keys
        _check_head_values(cls, hparams, 2 * (f * h + h * o) + bank * o,
                           ("projection_hidden_dim", "output_dim", "memory_bank_size"))
        for key in ("momentum_start", "momentum_end"):
            _check_float(cls, hparams, key, low=0.0, high=1.0, low_inclusive=True,
                         hint="the momentum encoder keeps this fraction of its weights each step (0.99-0.999)")
        _check_bool(cls, hparams, "symmetric")

    @property
    def memory_bank(self) -> nn.Module:
        """lightly's queue of past keys: ``.bank`` is ``(memory_bank_size, output_dim)``, ``.bank_ptr``."""
        return self.criterion.memory_bank

    def before_step(self, progress: float, epoch: int) -> None:
        self._check_progress(progress, epoch)
        momentum = scheduled_momentum(progress, self.hparams["momentum_start"], self.hparams["momentum_end"])
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)
        self.current_momentum = momentum

    def _query(self, view: Tensor) -> Tensor:
        return self._fp32(self.projection_head, self._features(view))

    @torch.no_grad()
    def _key(self, view: Tensor) -> Tensor:
        distributed = self._dist_initialised()
        shuffled, shuffle = batch_shuffle(view, distributed=distributed)
        keys = self._fp32(self.projection_head_momentum, self.backbone_momentum(shuffled).flatten(start_dim=1))
        return batch_unshuffle(keys, shuffle, distributed=distributed)

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        self._check_views(view_a, view_b)
        if self.hparams["symmetric"]:
            queries = torch.cat([self._query(view_a), self._query(view_b)])
            keys = torch.cat([self._key(view_b), self._key(view_a)])
        else:
            queries, keys = self._query(view_a), self._key(view_b)
        # One call: every query is scored against the queue as it was before this step, then
        # all keys are enqueued (only when the queries carry gradients, i.e. in training).
        return self._fp32_loss(self.criterion, queries, keys)
