"""The interface every self-supervised method implements, and the helpers they share.

A training loop elsewhere drives all methods the same way::

    method = build_method("byol", resnet18_backbone(cifar_stem=True))
    optimizer, scheduler = build_optimizer(method, batch_size=256, epochs=200, steps_per_epoch=195)
    step, total = 0, 200 * 195
    for epoch in range(200):
        for view_a, view_b in loader:                  # (B, 3, H, W) float, already normalised
            method.before_step(step / max(total - 1, 1), epoch)   # momentum schedules, prototypes
            loss = method.training_loss(view_a, view_b)           # or method(view_a, view_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward(epoch)                          # e.g. SwAV's frozen prototypes
            optimizer.step()
            scheduler.step()
            step += 1
    save_backbone("backbone.pt", method.backbone, {...})

A method whose :attr:`~SSLMethod.needs_targets` is true (DetCon's mask-pooled losses,
:mod:`saliencyssl.ssl.detcon`) also takes each view's targets warped with that view's geometry,
``method.training_loss(view_a, view_b, targets_a, targets_b)``, which
:class:`~saliencyssl.augment.SSLAugmentation` returns with ``return_targets=True``; every other
method accepts and ignores them, so one call serves all.

Under DistributedDataParallel wrap the method itself and call it (``ddp(view_a, view_b)``, or
``ddp(view_a, view_b, targets_a, targets_b)``: its ``forward`` is :meth:`SSLMethod.training_loss`,
so DDP's gradient hooks fire), and call
:meth:`~SSLMethod.before_step` / :meth:`~SSLMethod.after_backward` on ``ddp.module``. Build the
method with ``distributed=True`` so that losses which need the whole global batch gather it.

Projection/prediction heads, prototypes and losses always run in float32 with autocast disabled
(the backbone features are cast up first): SwAV's Sinkhorn exponentiates scores divided by 0.05,
which float16 cannot hold, and the heads are cheap next to the backbone, which runs under whatever
autocast the loop chooses. Float16 with a GradScaler works for all six methods (checked on an H200
under DDP; Barlow Twins needed its loss divided by ``output_dim``, see
:class:`~saliencyssl.ssl.barlowtwins.BarlowTwins`); nothing needs bfloat16.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor, nn

from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import cosine_schedule

from saliencyssl.ssl.backbone import FEATURE_DIM
from saliencyssl.target import TargetBatch
from saliencyssl.text import short_repr

#: ``progress`` in :meth:`SSLMethod.before_step` is turned into this many discrete steps for
#: :func:`lightly.utils.scheduler.cosine_schedule`, which works on integer step counts.
_SCHEDULE_RESOLUTION = 1_000_000

# Bounds of what a run or a method option may ask for: far above any published recipe, low enough
# that a typo (a digit too many) is refused in one line before anything is allocated.
#: The most epochs a training run takes (pretraining, segmentation fine-tuning, SwAV's frozen-prototype epochs).
MAX_EPOCHS = 100_000
#: The largest peak learning rate a run accepts (the recipes use 1e-3 to 0.5).
MAX_LR = 100.0
#: The widest a head may be: its hidden and output dimensions, and SwAV's prototypes (recipes: 128 to 8192).
MAX_WIDTH = 65_536
#: The most layers of a projection head (SimCLR v2 uses 3).
MAX_LAYERS = 16
#: The longest queue of past keys (MoCo's memory bank; MoCo v2 uses 65,536).
MAX_QUEUE = 1_048_576
#: The most float32 values a method's heads (with their momentum copies), queue and per-step
#: ``output_dim x output_dim`` matrices may hold together: 2**28, 1 GiB (gradients and optimizer
#: state come on top). Barlow Twins' ImageNet head (8192 wide) needs 138 M; the defaults at most 7 M.
MAX_HEAD_VALUES = 2 ** 28


@dataclass(frozen=True)
class OptimizerRecipe:
    """How :func:`saliencyssl.ssl.optim.build_optimizer` trains one method.

    Attributes:
        kind: ``"sgd"`` or ``"adam"``.
        base_lr: learning rate at ``reference_batch_size``.
        reference_batch_size: batch size ``base_lr`` is quoted for.
        scale_with_batch: scale ``base_lr`` linearly by ``batch_size / reference_batch_size``.
        momentum: SGD momentum (ignored for Adam).
        weight_decay: L2 weight decay applied to every trainable parameter.
        source: where the recipe comes from (named in :func:`~saliencyssl.ssl.optim.build_optimizer`'s errors).
    """

    kind: str
    base_lr: float
    reference_batch_size: int = 128
    scale_with_batch: bool = True
    momentum: float = 0.9
    weight_decay: float = 5e-4
    source: str = "lightly CIFAR-10 benchmark"

    def lr_for(self, batch_size: int) -> float:
        """The peak learning rate for a (global) batch size."""
        if not self.scale_with_batch:
            return self.base_lr
        return self.base_lr * batch_size / self.reference_batch_size


#: lightly's CIFAR-10 benchmark: SGD, lr 0.06 x batch/128, momentum 0.9, weight decay 5e-4.
SGD_RECIPE = OptimizerRecipe(kind="sgd", base_lr=0.06)


class SSLMethod(nn.Module):
    """Base class of the two-view self-supervised methods.

    Subclasses set :attr:`name`, :attr:`optimizer_recipe` and ``_DEFAULTS`` (their
    hyperparameters with default values), build their heads and losses in ``__init__`` after
    calling ``super().__init__`` (which validates and stores :attr:`hparams`), and implement
    :meth:`training_loss`. Only :attr:`backbone` is meant to be saved and evaluated; heads,
    momentum encoders, prototypes and memory banks are training machinery.

    Args:
        backbone: maps ``(B, 3, H, W)`` float images to ``(B, feature_dim)`` features (the
            ResNet-18 of :func:`saliencyssl.ssl.backbone.resnet18_backbone`, 512-d).
        distributed: gather what the loss needs from every process (``torch.distributed``
            must be initialised when the loss is computed; with one process, or none, the
            gathers are no-ops, so ``distributed=True`` is safe on a single device).
        **hparams: overrides of :meth:`default_hparams`.

    Raises:
        TypeError: ``backbone`` is not an ``nn.Module``.
        ValueError: an unknown or invalid hyperparameter (the message names the valid ones).
    """

    name: ClassVar[str] = ""
    optimizer_recipe: ClassVar[OptimizerRecipe] = SGD_RECIPE
    #: True when the loss needs each view's targets (``targets_a``/``targets_b`` of
    #: :meth:`training_loss`): pretraining then asks ``--aug-source`` for them even when the
    #: policy draws no saliency view, and refuses ``--aug-source none``.
    needs_targets: ClassVar[bool] = False
    #: The method's hyperparameters and their defaults; ``feature_dim`` is shared by all.
    _DEFAULTS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, backbone: nn.Module, *, distributed: bool = False, **hparams: Any) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"{type(self).__name__} needs the backbone as an nn.Module (for example "
                            f"saliencyssl.ssl.backbone.resnet18_backbone(cifar_stem=True)), "
                            f"got {type(backbone).__name__}")
        self.backbone = backbone
        self.distributed = bool(distributed)
        self.hparams: dict[str, Any] = self._resolve_hparams(hparams)

    # ------------------------------------------------------------------ interface
    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The method's hyperparameters with their default values (a fresh copy)."""
        return {"feature_dim": FEATURE_DIM, **dict(cls._DEFAULTS)}

    def training_loss(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                      targets_b: TargetBatch | None = None) -> Tensor:
        """The scalar loss for two augmented views of the same images.

        Args:
            view_a: ``(B, 3, H, W)`` float, already normalised.
            view_b: the other view of the same ``B`` images, same shape.
            targets_a: the targets of ``view_a`` after its geometry (crop, flips, rotation): a
                :class:`~saliencyssl.target.TargetBatch` of ``(B, 1, H, W)`` parts. Required when
                :attr:`needs_targets`, ignored otherwise.
            targets_b: the same for ``view_b``.

        Returns:
            A 0-d float32 tensor.
        """
        raise NotImplementedError

    def forward(self, view_a: Tensor, view_b: Tensor, targets_a: TargetBatch | None = None,
                targets_b: TargetBatch | None = None) -> Tensor:  # noqa: D401 - nn.Module API
        """Same as :meth:`training_loss`, so that a DDP-wrapped method syncs gradients."""
        return self.training_loss(view_a, view_b, targets_a, targets_b)

    def before_step(self, progress: float, epoch: int) -> None:
        """Hook called before each training step's forward pass.

        Args:
            progress: fraction of the whole run done, in ``[0, 1]`` (``step / (total - 1)``).
            epoch: the current epoch, counted from 0.
        """
        self._check_progress(progress, epoch)

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the peak learning rate throughout, outside the cosine schedule
        (SimSiam's ``fix_predictor_lr``); none by default."""
        return []

    def after_backward(self, epoch: int) -> None:
        """Hook called after ``loss.backward()`` and before ``optimizer.step()``."""

    # ------------------------------------------------------------------ helpers for subclasses
    @classmethod
    def _resolve_hparams(cls, overrides: Mapping[str, Any]) -> dict[str, Any]:
        defaults = cls.default_hparams()
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"{cls.name or cls.__name__}: unknown hyperparameter(s) {short_repr(unknown)}; "
                             f"valid ones are {sorted(defaults)} (defaults: {defaults})")
        hparams = {**defaults, **overrides}
        _check_int(cls, hparams, "feature_dim", minimum=1, maximum=MAX_WIDTH)
        cls._validate_hparams(hparams)
        return hparams

    @classmethod
    def _validate_hparams(cls, hparams: dict[str, Any]) -> None:
        """Raise ``ValueError`` on invalid values; subclasses extend this."""

    def _check_progress(self, progress: float, epoch: int) -> None:
        if (not isinstance(progress, numbers.Real) or isinstance(progress, bool) or not math.isfinite(progress)
                or not -1e-6 <= progress <= 1 + 1e-6):
            raise ValueError(f"{self.name}.before_step: progress must be the fraction of the run done, in [0, 1] "
                             f"(step / (total_steps - 1)), got {progress!r}")
        if not isinstance(epoch, numbers.Integral) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"{self.name}: epoch must be an int >= 0 counted from 0, got {epoch!r}")

    def _check_views(self, view_a: Tensor, view_b: Tensor) -> None:
        for label, view in (("view_a", view_a), ("view_b", view_b)):
            if not isinstance(view, Tensor) or view.ndim != 4 or view.shape[1] != 3 or not view.is_floating_point():
                got = (f"{tuple(view.shape)} {view.dtype}" if isinstance(view, Tensor) else type(view).__name__)
                raise ValueError(f"{self.name}: {label} must be a (B, 3, H, W) float tensor already normalised "
                                 f"(see saliencyssl.ssl.backbone.to_model_input), got {got}")
        if view_a.shape[0] != view_b.shape[0]:
            raise ValueError(f"{self.name}: the two views must hold the same images, got batch sizes "
                             f"{view_a.shape[0]} and {view_b.shape[0]}")
        if view_a.shape[0] < 2:
            raise ValueError(f"{self.name}: needs at least 2 images per batch (the projection heads use "
                             f"batch norm and the losses compare images), got {view_a.shape[0]}; "
                             f"use a larger batch or drop_last=True in the DataLoader")

    def _features(self, view: Tensor) -> Tensor:
        """Backbone features, flattened to ``(B, feature_dim)``."""
        features = self.backbone(view).flatten(start_dim=1)
        if features.shape[1] != self.hparams["feature_dim"]:
            raise ValueError(f"{self.name}: the backbone returns {features.shape[1]}-d features but "
                             f"feature_dim={self.hparams['feature_dim']}; pass feature_dim="
                             f"{features.shape[1]} to build_method")
        return features

    @staticmethod
    def _fp32(module: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``module(x)`` in float32 with autocast disabled (projection/prediction heads).

        Heads are tiny next to the backbone; keeping them (and their unnormalised outputs, such
        as Barlow Twins' last linear layer) in float32 is a cheap precaution against float16
        overflow.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            return module(x.float())

    def _dist_initialised(self) -> bool:
        return (self.distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1)

    @staticmethod
    def _fp32_loss(criterion: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
        """Evaluate ``criterion`` on float32 copies of ``tensors`` with autocast disabled."""
        device_type = tensors[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            loss = criterion(*(t.float() for t in tensors))
        return loss.reshape(())

    @staticmethod
    def _schedule_step(progress: float) -> tuple[int, int]:
        """``(step, max_steps)`` for lightly's ``cosine_schedule`` at a run fraction."""
        progress = min(max(float(progress), 0.0), 1.0)
        return int(round(progress * _SCHEDULE_RESOLUTION)), _SCHEDULE_RESOLUTION + 1

    def extra_repr(self) -> str:
        return f"name={self.name!r}, distributed={self.distributed}, hparams={self.hparams}"


# ---------------------------------------------------------------------- momentum encoders
def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with ``requires_grad`` off, for an EMA (momentum) encoder."""
    clone = copy.deepcopy(module)
    deactivate_requires_grad(clone)
    return clone


def scheduled_momentum(progress: float, start: float, end: float) -> float:
    """lightly's ``cosine_schedule`` from ``start`` (progress 0) to ``end`` (progress 1)."""
    step, max_steps = SSLMethod._schedule_step(progress)
    return cosine_schedule(step, max_steps, start, end)


# ---------------------------------------------------------------------- validation helpers
def _check_int(cls: type, hparams: dict[str, Any], key: str, *, minimum: int, maximum: int | None = None) -> None:
    """Refuse ``hparams[key]`` unless it is an int from ``minimum`` to ``maximum`` (no upper bound when ``None``)."""
    value = hparams[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or \
            (maximum is not None and value > maximum):
        span = f">= {minimum}" + ("" if maximum is None else f" and <= {maximum:,}")
        raise ValueError(f"{cls.name or cls.__name__}: {key} must be an int {span}, got {short_repr(value)} "
                         f"(default {cls.default_hparams()[key]!r})")


def _check_head_values(cls: type, hparams: dict[str, Any], values: int, keys: tuple[str, ...]) -> None:
    """Refuse options whose heads, queue and per-step matrices would hold more than
    :data:`MAX_HEAD_VALUES` float32 values (``values``, counted by the method), naming ``keys``."""
    if values > MAX_HEAD_VALUES:
        given = ", ".join(f"{k}={hparams[k]}" for k in keys)
        raise ValueError(f"{cls.name or cls.__name__}: {given} ask for {values:,} float32 values in the heads "
                         f"({values * 4 / 2 ** 30:.1f} GiB before gradients and optimizer state); at most "
                         f"{MAX_HEAD_VALUES:,} (1 GiB) are allowed: lower them")


def _check_float(cls: type, hparams: dict[str, Any], key: str, *, low: float, high: float = math.inf,
                 low_inclusive: bool = False, high_inclusive: bool = True, hint: str = "") -> None:
    value = hparams[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        value = float(value)
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(f"{cls.name or cls.__name__}: {key} must be a number in {lo}{low}, {high}{hi}, got "
                         f"{short_repr(hparams[key])} (default {cls.default_hparams()[key]!r}){'; ' + hint if hint else ''}")
    hparams[key] = float(value)


def _check_bool(cls: type, hparams: dict[str, Any], key: str) -> None:
    if not isinstance(hparams[key], bool):
        raise ValueError(f"{cls.name or cls.__name__}: {key} must be True or False, got {short_repr(hparams[key])}")
