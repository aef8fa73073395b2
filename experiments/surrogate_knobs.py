"""Experiment: the surrogate's knobs that were measured and did not help, kept runnable.

Each subclasses the product's trainer, loss or network (saliencyssl.surrogate) and adds back one
option that ``saliency-ssl train-surrogate`` does not offer. Figures: CIFAR-10 at 32 px, scored against the
exact targets of the 10,000 test images as presence accuracy / IoU where there is a mask.

- **Presence loss** (``--lambda-presence W``): BCE of each image's largest mask logit against "the
  exact mask is not empty", the decision ``Surrogate.predict`` makes. It made held-out presence
  worse (0.681 against 0.691 on the test images, 6-minute CPU runs): it is learned by memorising.
- **Support channel** (``--lambda-support W``): a fourth generator output learns where the exact RC
  map is nonzero (the segments that escape Cheng's border test; an image gets a mask exactly when
  this support is not empty). With W = 20 on 5,000 images, presence +0.004 to +0.018 and IoU
  present +0.007 to +0.046 over three seeds, but the saliency map got worse than predicting nothing
  (MAE 0.1070-0.1115 against 0.1068); with 8,973 images +0.003 / +0.005 and boundary F 0.192
  against 0.240; W = 50 gave nothing.
- **Weight average** (``--ema DECAY``): evaluate, select and save an exponential moving average of
  the generator's weights. With 0.999 and 0.99 (4,999 images, 30 CPU minutes): presence +0.005,
  IoU present +0.002 to +0.005, MAE 0.101 against 0.104: less than the run-to-run spread.
- **Coordinate channels** (``--coords``): x and y in [-1, 1] appended to the generator's input, so
  position (RC's border suppression and centre weighting) is given, not inferred. One run of the
  GPU design sweep (NVIDIA H200, 5,000 images, 2,700 steps, scored on 2,000 test images): 0.664 /
  0.304 against 0.659 / 0.276 without, within the ±0.03 that separates otherwise similar runs.

Expected labels (soft targets averaged over shifted and mirrored relabellings) are
``experiments/surrogate_expected_labels.py``; a cheaper presence test is
``experiments/presence_gate.py``.

    python experiments/surrogate_knobs.py ../shared/data/cifar10/train --cache runs/cache --out runs/sur_support \\
        --limit 6000 --held-out 0.1667 --max-minutes 30 --threads 1 --lambda-support 20

A surrogate trained with the support channel or coordinate channels has an architecture the
product's ``Surrogate.load`` refuses; :func:`load_knob_surrogate` loads it (its ``predict`` drops
the support channel). A weight average alone leaves the product's architecture: its
``surrogate.pt`` and ``last.pt`` load anywhere.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from saliencyssl.surrogate.losses import LossWeights, TargetLoss, soft_dice_loss
from saliencyssl.surrogate.model import Surrogate, read_checkpoint
from saliencyssl.surrogate.networks import Architecture, PatchDiscriminator, UNetGenerator, init_weights
from saliencyssl.surrogate.training import SurrogateTrainer, TrainConfig, TrainConfigError
from saliencyssl.target import TARGET_CHANNELS, TargetBatch


# ---------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class KnobWeights(LossWeights):
    """:class:`LossWeights` with the presence and support terms.

    Attributes:
        presence: weight of the image-level presence term (BCE of the largest mask logit of an
            image against "the exact mask is not empty").
        support: weight of the support term (BCE + soft Dice of the generator's fourth output
            against "the exact RC map is nonzero"; 0: no fourth output).
    """

    presence: float = 0.0
    support: float = 0.0


class KnobLoss(TargetLoss):
    """:class:`TargetLoss` plus the presence and support terms (when weighted).

    Example:
        >>> total, parts = KnobLoss(KnobWeights(presence=1.0))(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
        >>> sorted(parts)
        ['boundary', 'l1', 'mask', 'presence']
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``logits`` and ``target``: ``(B, 3, H, W)``, or ``(B, 4, H, W)`` with the support channel.

        Raises:
            ValueError: a support weight without a fourth channel in the output and the target.
        """
        total, parts = super().forward(logits, target)
        w = self.weights
        logits = logits.float()
        if getattr(w, "presence", 0.0) > 0:
            top = logits[:, 1].flatten(1).amax(1)
            present = (target[:, 1].flatten(1).amax(1) > 0.5).float()
            presence = F.binary_cross_entropy_with_logits(top, present)
            total = total + w.presence * presence
            parts["presence"] = presence.detach()
        if getattr(w, "support", 0.0) > 0:
            if logits.shape[1] < 4 or target.shape[1] < 4:
                raise ValueError(f"the support term needs a fourth channel in the output and the target, got "
                                 f"{logits.shape[1]} and {target.shape[1]}")
            support = (F.binary_cross_entropy_with_logits(logits[:, 3:4], target[:, 3:4])
                       + soft_dice_loss(logits[:, 3:4], target[:, 3:4]))
            total = total + w.support * support
            parts["support"] = support.detach()
        return total, parts


def support_channels(targets: TargetBatch) -> torch.Tensor:
    """``(B, 4, H, W)`` float32: the target channels and the support, 1 where the exact map is nonzero."""
    return torch.cat([targets.channels(), (targets.saliency > 0).float()], dim=1)


# ---------------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class KnobArchitecture(Architecture):
    """:class:`Architecture` with coordinate channels and a fourth output.

    Attributes:
        out_channels: ``len(TARGET_CHANNELS)``, or one more for the support channel.
        coords: append two coordinate channels (x, y in [-1, 1]) to the generator's input.
    """

    out_channels: int = len(TARGET_CHANNELS)
    coords: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out_channels not in (len(TARGET_CHANNELS), len(TARGET_CHANNELS) + 1):
            raise ValueError(f"out_channels must be {len(TARGET_CHANNELS)} (the target channels) or "
                             f"{len(TARGET_CHANNELS) + 1} (and the support channel), got {self.out_channels}")

    @property
    def has_support(self) -> bool:
        return self.out_channels > len(TARGET_CHANNELS)


class KnobGenerator(UNetGenerator):
    """The U-Net of a :class:`KnobArchitecture`: coordinate channels appended to the input when
    ``coords`` (the full-resolution head sees them too), ``out_channels`` outputs."""

    def __init__(self, arch: KnobArchitecture):
        super().__init__(arch, in_channels=3 + (2 if arch.coords else 0), out_channels=arch.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch.coords:
            b, _, h, w = x.shape
            ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], 1)
        return super().forward(x)


def load_knob_surrogate(path: str | Path, device: str | torch.device = "cpu") -> Surrogate:
    """A :class:`Surrogate` from a checkpoint of :class:`KnobTrainer` (support or coordinate channels),
    which ``Surrogate.load`` refuses; a ``last.pt`` with a weight average loads as the average."""
    blob = read_checkpoint(path)
    generator = KnobGenerator(KnobArchitecture.from_dict(dict(blob["arch"])))
    weights = ({k[len("module."):]: v for k, v in blob["ema"].items() if k.startswith("module.")}
               if "ema" in blob else blob["generator"])
    generator.load_state_dict(weights)
    return Surrogate(generator, blob["fingerprint"], blob.get("labeller_params"), dict(blob.get("meta") or {}),
                     device=device)


# ---------------------------------------------------------------------------------- training
@dataclass
class KnobConfig(TrainConfig):
    """:class:`TrainConfig` with the knobs.

    Attributes:
        weights: :class:`KnobWeights` (presence and support terms).
        coords: coordinate channels in the generator's input.
        ema: decay of an exponential moving average of the generator's weights and batch-norm
            statistics, updated after every step (0: none); when set, the average is what is
            evaluated, selected and saved, its decay warming up as ``min(ema, (1 + n) / (10 + n))``
            after ``n`` updates.
    """

    weights: KnobWeights = field(default_factory=KnobWeights)
    coords: bool = False
    ema: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = KnobWeights(**self.weights)
        elif type(self.weights) is LossWeights:
            self.weights = KnobWeights(**self.weights.as_dict())
        super().__post_init__()
        if not 0.0 <= self.ema < 1.0:
            raise TrainConfigError("ema", self.ema, "a decay in [0, 1) (0 = off; 0.999 averages over about 1,000 "
                                                   "steps)")

    def architecture(self) -> KnobArchitecture:
        base = asdict(super().architecture())
        return KnobArchitecture(**base, coords=self.coords,
                                out_channels=len(TARGET_CHANNELS) + int(self.weights.support > 0))


def _ema_update(decay: float, updates_done: Callable[[], int]):
    """``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: an EMA whose decay warms up.

    The decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``; integer buffers (batch
    norm's step counter) follow the model. ``updates_done`` gives ``n`` from the trainer's step
    counter, a Python int, so reading it costs no device synchronisation on CUDA.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):
            torch._foreach_copy_(averaged, current)
            return
        n = float(updates_done())
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, weight)
    return update


class KnobTrainer(SurrogateTrainer):
    """:class:`SurrogateTrainer` for a :class:`KnobConfig`: the knob networks, loss, support target
    and weight average, through the trainer's extension points."""

    config: KnobConfig

    def __init__(self, config: KnobConfig, *args, **kwargs):
        if not isinstance(config, KnobConfig):
            raise TypeError(f"KnobTrainer takes a KnobConfig, got {type(config).__name__}")
        super().__init__(config, *args, **kwargs)
        self.ema = (AveragedModel(self.generator, multi_avg_fn=_ema_update(config.ema, lambda: self.step),
                                  use_buffers=True) if config.ema > 0 else None)

    def build_networks(self, arch: KnobArchitecture, seed: int) -> tuple[KnobGenerator, PatchDiscriminator]:
        torch.manual_seed(seed)
        return (init_weights(KnobGenerator(arch)),
                init_weights(PatchDiscriminator(arch, in_channels=3 + arch.out_channels)))

    def build_target_loss(self) -> KnobLoss:
        return KnobLoss(self.config.weights)

    def exact_channels(self, targets: TargetBatch) -> torch.Tensor:
        return support_channels(targets) if self.arch.has_support else targets.channels()

    def after_step(self) -> None:
        if getattr(self, "ema", None) is not None:
            self.ema.update_parameters(self.generator)

    @property
    def eval_generator(self) -> UNetGenerator:
        return self.ema.module if getattr(self, "ema", None) is not None else self.generator

    def extra_state(self) -> dict:
        if self.ema is None:
            return {}
        return {"ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}}

    def load_extra_state(self, blob: dict) -> list[str]:
        if ("ema" in blob) != (self.ema is not None):
            return ["a weight average (--ema)" if "ema" in blob else f"no weight average (now --ema "
                                                                       f"{self.config.ema:g})"]
        if self.ema is not None:
            self.ema.load_state_dict(blob["ema"])
        return []


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """``saliency-ssl train-surrogate``'s options and the knobs."""
    from saliencyssl.app.train_surrogate import build_parser as product_parser

    p = product_parser()
    p.prog = "experiments/surrogate_knobs.py"
    p.description = __doc__.split("\n\n")[0]
    knobs = p.add_argument_group("knobs measured not to help (see the module docstring)")
    knobs.add_argument("--lambda-presence", type=float, default=0.0, metavar="W",
                       help="weight of the image-level presence term (default 0: off)")
    knobs.add_argument("--lambda-support", type=float, default=0.0, metavar="W",
                       help="weight of the support term; the generator gets a fourth output (default 0: off)")
    knobs.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                       help="evaluate, select and save a moving average of the weights, e.g. 0.999 (default 0: off)")
    knobs.add_argument("--coords", action="store_true", help="append x, y coordinate channels to the input")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train with the knobs into ``--out`` (``--resume`` continues its ``last.pt``); 0 when done, 2 on an error."""
    from saliencyssl.app.train_surrogate import config_error, config_from_args, no_pairs_advice
    from saliencyssl.surrogate.evaluation import format_report
    from saliencyssl.surrogate.model import SurrogateCheckpointError
    from saliencyssl.surrogate.pairs import NoPairsError, load_pairs

    args = build_parser().parse_args(argv)
    try:
        product = config_from_args(args, list(sys.argv[1:] if argv is None else argv))
        base = {k: getattr(product.train, k) for k in TrainConfig.__dataclass_fields__ if k != "weights"}
        config = KnobConfig(**base, coords=args.coords, ema=args.ema,
                            weights=KnobWeights(**product.train.weights.as_dict(), presence=args.lambda_presence,
                                                support=args.lambda_support))
    except TrainConfigError as error:
        print(f"error: {config_error(error)}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (product.out / "last.pt").exists() and not product.resume:
        print(f"error: {product.out} already holds a run (last.pt); pass --resume to continue it, or choose another "
              f"--out", file=sys.stderr)
        return 2
    if product.threads:
        torch.set_num_threads(product.threads)
    try:
        pairs = load_pairs(product.images, product.cache, config.image_size, config=product.labeller,
                           limit=product.limit, progress=product.progress)
    except NoPairsError as error:
        print(f"error: {error}; {no_pairs_advice(error)}", file=sys.stderr)
        return 2
    train, held = pairs.split(config.held_out)
    trainer = KnobTrainer(config, train, held, product.out, device=product.device, progress=product.progress,
                          run_info={"images_dir": str(product.images), "cache_dir": str(product.cache),
                                    "limit": product.limit, "argv": product.command})
    if product.resume:
        try:
            trainer.resume()
        except (FileNotFoundError, SurrogateCheckpointError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    result = trainer.fit()
    print(f"wrote {result.surrogate_path} after {result.epochs_done} epochs, {result.steps} steps (stopped by "
          f"{result.stopped_by}); it holds the generator of epoch {result.selected_epoch} ({config.select})")
    if result.held_out is not None:
        print("\n".join(format_report(result.held_out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
