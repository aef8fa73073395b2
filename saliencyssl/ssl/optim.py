"""Optimizer and per-step learning-rate schedule for each method, from lightly's CIFAR-10 recipe.

==============  =====  =========================  ========  ============
method          kind   peak lr                    momentum  weight decay
==============  =====  =========================  ========  ============
simclr, moco,   SGD    0.06 x batch / 128         0.9       5e-4
byol,
barlowtwins,
detcon-simclr,
detcon-byol
simsiam         SGD    0.06 (not batch-scaled)    0.9       5e-4
swav            Adam   1e-3 x batch / 128         (betas)   1e-6
==============  =====  =========================  ========  ============

The learning rate follows a half cosine from the peak to 0 over ``epochs * steps_per_epoch``
optimizer steps (lightly anneals per epoch with ``CosineAnnealingLR(max_epochs)``; stepping per
optimizer step gives the same curve, smoothed). No warm-up, as in lightly's benchmark. A method's
:meth:`~saliencyssl.ssl.method.SSLMethod.fixed_lr_parameters` (SimSiam's predictor with
``fix_predictor_lr``) form a second parameter group that stays at the peak rate.
"""

from __future__ import annotations

import math

import torch

from saliencyssl.ssl.method import SSLMethod


class ConstantFactor:
    """``LambdaLR`` factor 1 at every step (a parameter group outside the schedule); a class so the
    scheduler's ``state_dict`` can be saved and restored."""

    def __call__(self, step: int) -> float:
        return 1.0


class CosineDecay:
    """``LambdaLR`` factor: ``0.5 * (1 + cos(pi * step / total_steps))``, 0 after ``total_steps``.

    A class rather than a lambda so the scheduler's ``state_dict`` can be saved and restored.
    """

    def __init__(self, total_steps: int) -> None:
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        progress = min(max(step, 0), self.total_steps) / self.total_steps
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"build_optimizer: {name} must be an int >= 1, got {value!r}")
    return value


def build_optimizer(method: SSLMethod, *, batch_size: int, epochs: int, steps_per_epoch: int,
                    lr: float | None = None
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The method's optimizer and a per-step cosine learning-rate schedule.

    Call ``scheduler.step()`` once after every ``optimizer.step()``.

    Args:
        method: an :class:`SSLMethod` (a DDP/DataParallel wrapper is unwrapped). Every parameter
            with ``requires_grad`` is optimised (backbone, heads, prototypes); momentum encoders
            are excluded because their gradients are off.
        batch_size: the *global* batch size (per-device batch x world size), which the recipe's
            learning rate is scaled by.
        epochs: number of epochs of the run.
        steps_per_epoch: optimizer steps per epoch (``len(loader)`` with ``drop_last=True``).
        lr: peak learning rate to use instead of the recipe's (taken as is, not batch-scaled).

    Returns:
        ``(optimizer, scheduler)``; ``scheduler`` is a ``LambdaLR`` whose factor goes from 1 at
        step 0 to 0 at step ``epochs * steps_per_epoch`` (``param_groups[0]``); the method's
        fixed-rate parameters, if any, are ``param_groups[1]`` with factor 1 throughout.

    Raises:
        TypeError: ``method`` is not an :class:`SSLMethod`.
        ValueError: non-positive sizes or learning rate, or no trainable parameters.

    Examples:
        >>> from saliencyssl.ssl import build_method
        >>> method = build_method("simclr", resnet18_backbone(cifar_stem=True))
        >>> optimizer, scheduler = build_optimizer(method, batch_size=512, epochs=200, steps_per_epoch=97)
        >>> optimizer.param_groups[0]["lr"]   # 0.06 * 512 / 128 for SGD methods
        0.24
    """
    method = getattr(method, "module", method)
    if not isinstance(method, SSLMethod):
        raise TypeError(f"build_optimizer needs an SSLMethod (from build_method), got {type(method).__name__}")
    batch_size = _positive_int("batch_size", batch_size)
    epochs = _positive_int("epochs", epochs)
    steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
    recipe = method.optimizer_recipe
    if lr is None:
        lr = recipe.lr_for(batch_size)
    elif isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"build_optimizer: lr must be a positive number or None for the recipe's "
                         f"({recipe.lr_for(batch_size):g} at batch {batch_size}, from the {recipe.source}), got {lr!r}")
    fixed = {id(p) for p in method.fixed_lr_parameters()}
    params = [p for p in method.parameters() if p.requires_grad and id(p) not in fixed]
    if not params:
        raise ValueError(f"build_optimizer: {method.name} has no trainable parameters")
    groups = [{"params": params}]
    factors: list = [CosineDecay(epochs * steps_per_epoch)]
    if fixed:
        groups.append({"params": [p for p in method.parameters() if p.requires_grad and id(p) in fixed]})
        factors.append(ConstantFactor())
    if recipe.kind == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=float(lr), momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    elif recipe.kind == "adam":
        optimizer = torch.optim.Adam(groups, lr=float(lr), weight_decay=recipe.weight_decay)
    else:  # pragma: no cover - recipes are defined in this package
        raise ValueError(f"{method.name}: unknown optimizer kind {recipe.kind!r} (expected 'sgd' or 'adam')")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    return optimizer, scheduler

