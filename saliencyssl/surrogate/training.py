"""Training the surrogate: a U-Net regression on preloaded pairs, with Pix2Pix's adversarial term on request.

:class:`SurrogateTrainer` holds everything a run needs and owns its folder::

    RUN_DIR/last.pt          after every evaluation (and when stopped): generator, discriminator,
                             optimisers, scalers, counters, RNG states; what :meth:`~SurrogateTrainer.resume`
                             continues from
    RUN_DIR/best.pt          the generator of the evaluation with the best held-out fidelity so far
    RUN_DIR/surrogate.pt     at the end: that best generator (or the last, with select="last") and its
                             metadata (Surrogate.load reads it)
    RUN_DIR/history.json     losses and held-out fidelity per evaluation
    RUN_DIR/tensorboard/     losses per step; held-out fidelity (and the predict-nothing baseline) and an
                             image | exact | surrogate grid per evaluation

Evaluations come at the end of an epoch, every epoch when an epoch has at least ``eval_steps``
steps, otherwise every ``ceil(eval_steps / steps per epoch)`` epochs (and at the last): on the
quickstart's 155 images an epoch is 3 steps, and scoring, checkpointing and drawing after each of
them made its 300-step command take 24 s instead of 20 s (``eval_steps=1`` against the default).

One step: the generator learns to match the exact channels
(:class:`~saliencyssl.surrogate.losses.TargetLoss`). With an adversarial weight above 0
(``LossWeights.gan``, off by default: on the generated shapes it made the region boundaries worse
at 1.5x the cost of a step, see :mod:`~saliencyssl.surrogate.losses`) the step is Pix2Pix's
(Isola et al. 2017): first the discriminator learns to tell ``(image, exact channels)`` from
``(image, predicted channels)`` (:class:`~saliencyssl.surrogate.losses.GANLoss`, halved), then the
generator learns to fool it while matching the exact channels. Adam with beta1 = 0.5 as in
Pix2Pix, at rate 1e-3: Pix2Pix's 2e-4 is for batch 1; at batch 64 1e-3 was better on CIFAR-10, and
on the shapes 2e-4 reached mask IoU 0.81 in 600 steps where 1e-3 reached 0.90. The rate stays
constant for the first ``decay_start`` of the run and then falls linearly to zero. "The run" is
``epochs`` passes, the step budget (``max_steps``) or the time budget (``max_minutes``), whichever
is nearer its end, so a run cut by a budget still ends with a decayed rate; a step budget gives
runs on different machines, or on sets of different sizes, the same number of updates and the same
schedule.

Model selection: the exact labels are brittle (the labeller itself agrees with its own output on a
one-pixel shift of the image only about 0.89 of the time on whether there is an object), so a
generator memorises them and its held-out fidelity peaks and then falls while the training loss
keeps falling. At every evaluation the held-out split is scored with :func:`selection_score`
(presence accuracy, mask IoU where there is a mask and overall, saliency error against the
predict-nothing baseline) and the best epoch is kept; that is the one ``surrogate.pt`` holds
(early stopping on the held-out split, never on test images).

Data: every image and target is a tensor on the training device from the start (uint8 images, and
the targets as one :class:`~saliencyssl.target.TargetBatch` in its compact form); a step only
indexes, mirrors and turns (image and target together, the boundary recomputed from the moved
regions) and converts. The augmentation is the square's
symmetry group: a left-right mirror (``flip``) and 0-3 quarter turns (``rotate``), eight poses of
every pair. The exact labeller has no preferred direction on a square image (RC's spatial weights
and Cheng's border test are symmetric under these moves), so a moved pair is still an exact pair:
on 150 CIFAR-10 test images the labeller's mask of a mirrored or quarter-turned image was the moved
mask for 98% of the images (99.99% of the pixels, and always the same presence). The
surrogate learns small sets by heart: on the quickstart's 160 shapes, mirrored only, it reached
training mask IoU 0.97 and boundary F 0.99 but test IoU 0.89 and boundary F 0.47; with the turns,
0.93 / 0.94 on the training images and 0.90 / 0.90 on the test images (600 steps,
``benchmarks/surrogate_shapes.py --no-rotate``). On 2,000 CIFAR-10 images in 4 CPU minutes the
turns lifted IoU where there is a mask from 0.31 to 0.37 and boundary F from 0.52 to 0.60 on
1,000 test images. Seeds fix the initial
weights, the batch order, the mirrors, the turns and dropout, so a run on the CPU is repeatable.

Extension points for experiments (the project's ``experiments/surrogate_knobs.py`` adds back the
options that left the product this way): :meth:`SurrogateTrainer.build_networks`,
:meth:`~SurrogateTrainer.build_target_loss`, :meth:`~SurrogateTrainer.exact_channels`,
:meth:`~SurrogateTrainer.after_step`, :attr:`~SurrogateTrainer.eval_generator`,
:meth:`~SurrogateTrainer.extra_state` and :meth:`~SurrogateTrainer.load_extra_state`.

Which run a folder holds, and whether a request may resume it, is the application's business
(:class:`~saliencyssl.app.rundir.RunDir`); the trainer writes and reads its own state.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from saliencyssl.datasets import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from saliencyssl.files import replace_file
from saliencyssl.surrogate.losses import GAN_MODES, GANLoss, LossWeights, TargetLoss
from saliencyssl.surrogate.model import (Surrogate, SurrogateCheckpointError, checkpoint_dict, read_checkpoint,
                                         save_checkpoint)
from saliencyssl.surrogate.networks import (ARCH_LIMITS, MAX_GENERATOR_PARAMETERS, MIN_DEPTH, Architecture,
                                            PatchDiscriminator, UNetGenerator, build_networks, image_to_input,
                                            parameter_count, to_probabilities, unet_depth)
from saliencyssl.surrogate.pairs import PairSet, hash_prefixes
from saliencyssl.target import TargetBatch, rotate_quarters

#: Keep the data on the training device when it takes less than this many bytes.
DEVICE_DATA_LIMIT = 6 * 2 ** 30


def usable_devices() -> list[str]:
    """The device names torch can train on here: ``cpu``, and ``cuda``, ``cuda:0`` ... when CUDA is visible."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` of a device name, refused with the choices when torch cannot use it here.

    Raises:
        ValueError: ``name`` is no device string torch knows (``tpu``), a device this trainer does not
            run on (``mps``, ``meta``), or a CUDA device that is not visible (``cuda`` without a GPU,
            ``cuda:3`` with one GPU). The message names the value and the usable choices.
    """
    choices = usable_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    usable = device is not None and (
        device.type == "cpu"
        or (device.type == "cuda" and torch.cuda.is_available()
            and (device.index is None or device.index < torch.cuda.device_count())))
    if not usable:
        options = ("cpu (torch sees no CUDA device here)" if choices == ["cpu"]
                   else "one of " + ", ".join(choices))
        raise ValueError(f"device {name}: torch cannot train on it here; choose {options}")
    return device


class TrainConfigError(ValueError):
    """A :class:`TrainConfig` value out of range.

    Attributes:
        field: the field (``"batch_size"``; a loss weight as ``"weights.mask"``).
        value: the value given.
        need: what the field needs, in words.
    """

    def __init__(self, field: str, value, need: str):
        self.field, self.value, self.need = field, value, need
        super().__init__(f"TrainConfig.{field} = {value!r}: {need}")


#: Upper bounds of the sizes a training config may ask for: the network's are the architecture's own
#: (:data:`~saliencyssl.surrogate.networks.ARCH_LIMITS`), plus the batch (default 64) and the grid of images shown.
WIDTH_LIMITS = {**ARCH_LIMITS, "batch_size": 65536, "grid_images": 256}


@dataclass
class TrainConfig:
    """Options of a surrogate training run (``saliency-ssl train-surrogate`` sets them).

    Attributes:
        image_size: side of the square images and targets (a multiple of 8).
        epochs: passes over the training split (``None``: 100, or unbounded with a budget).
        batch_size: pairs per step.
        lr, beta1: Adam's rate and first momentum coefficient (Pix2Pix: 2e-4, 0.5).
        decay_start: share of the run after which the rate decays linearly to zero.
        max_minutes: wall-clock budget of the whole run (all resumptions together); ``None`` = none.
        max_steps: budget in optimiser steps (all resumptions together); ``None`` = none.
        held_out: share of the images held out by content hash for fidelity.
        flip: mirror training pairs left-right at random (image and target together).
        rotate: turn training pairs by 0-3 quarter turns at random (image and target together).
        amp: fp16 autocast and gradient scaling (CUDA only).
        seed: seeds weights, batch order, mirrors, turns and dropout.
        gan_mode: ``"lsgan"`` or ``"vanilla"``.
        weights: the loss weights (:class:`LossWeights`).
        ngf, max_mult, ndf: network widths (:class:`Architecture`).
        head: channels of the generator's full-resolution head (0: Pix2Pix's output layer).
        dropout_blocks: decoder blocks with dropout 0.5 (Pix2Pix: 3).
        grid_images: held-out images shown in the TensorBoard grid.
        select: ``"best"`` (the evaluation with the best held-out :func:`selection_score`) or
            ``"last"``: which generator ``surrogate.pt`` holds.
        eval_steps: evaluate (held-out fidelity, ``best.pt``, ``last.pt``, history) at the end of
            every ``ceil(eval_steps / steps per epoch)``-th epoch (every epoch when an epoch is that long).

    Raises:
        TrainConfigError: a value out of range (it names the field).
    """

    image_size: int = 32
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.5
    decay_start: float = 0.5
    max_minutes: float | None = None
    max_steps: int | None = None
    held_out: float = 0.05
    flip: bool = True
    rotate: bool = True
    amp: bool = False
    seed: int = 0
    gan_mode: str = "lsgan"
    weights: LossWeights = field(default_factory=LossWeights)
    ngf: int = Architecture.ngf
    max_mult: int = Architecture.max_mult
    ndf: int = Architecture.ndf
    head: int = Architecture.head
    dropout_blocks: int = Architecture.dropout_blocks
    grid_images: int = 8
    select: str = "best"
    eval_steps: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        for name, value in self.weights.as_dict().items():
            if value is not None and not value >= 0:
                raise TrainConfigError(f"weights.{name}", value, "a loss weight must be 0 or more")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or \
                not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise TrainConfigError("image_size", self.image_size,
                                   f"a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
        try:
            unet_depth(self.image_size)
        except ValueError:
            raise TrainConfigError("image_size", self.image_size, f"the side must be halved {MIN_DEPTH} times by the "
                                   f"U-Net: a multiple of {2 ** MIN_DEPTH} such as 32, 64, 96, 128 or 256") from None
        for name in ("ngf", "ndf", "max_mult", "batch_size", "eval_steps"):
            if getattr(self, name) < 1:
                raise TrainConfigError(name, getattr(self, name), "give 1 or more")
        for name in ("head", "dropout_blocks", "grid_images"):
            if getattr(self, name) < 0:
                raise TrainConfigError(name, getattr(self, name), "give 0 (none) or more")
        for name, high in WIDTH_LIMITS.items():  # a typo of one digit must not ask for terabytes of weights
            if getattr(self, name) > high:
                raise TrainConfigError(name, getattr(self, name), f"give at most {high}")
        for name in ("epochs", "max_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TrainConfigError(name, getattr(self, name), "give 1 or more, or leave it unset")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise TrainConfigError("max_minutes", self.max_minutes, "a time budget must be positive, or unset")
        if not self.lr > 0:
            raise TrainConfigError("lr", self.lr, "the learning rate must be positive")
        if not 0.0 <= self.beta1 < 1.0:
            raise TrainConfigError("beta1", self.beta1, "Adam's beta1 lies in [0, 1)")
        if not 0.0 <= self.decay_start <= 1.0:
            raise TrainConfigError("decay_start", self.decay_start, "a share of the run, in [0, 1]")
        if not 0.0 <= self.held_out < 1.0:
            raise TrainConfigError("held_out", self.held_out, "a share of the images, in [0, 1)")
        if self.select not in ("best", "last"):
            raise TrainConfigError("select", self.select, "'best' or 'last'")
        if self.gan_mode not in GAN_MODES:
            raise TrainConfigError("gan_mode", self.gan_mode, f"one of {', '.join(GAN_MODES)}")
        count = parameter_count(self.architecture().generator_shapes())
        if count > MAX_GENERATOR_PARAMETERS:  # trained, it could not be loaded: refused before any step
            raise TrainConfigError("ngf", self.ngf, f"with max_mult {self.max_mult} at {self.image_size} px the "
                                                    f"generator has {count:,} parameters, more than the "
                                                    f"{MAX_GENERATOR_PARAMETERS:,} a surrogate checkpoint may hold; "
                                                    f"give a smaller --ngf or --max-mult")

    @property
    def budgeted(self) -> bool:
        """A time or step budget is set."""
        return self.max_minutes is not None or self.max_steps is not None

    @property
    def total_epochs(self) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        return 10 ** 6 if self.budgeted else 100

    def architecture(self) -> Architecture:
        """The networks' shape."""
        return Architecture(self.image_size, ngf=self.ngf, max_mult=self.max_mult, ndf=self.ndf, head=self.head,
                            dropout_blocks=self.dropout_blocks)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["weights"] = self.weights.as_dict()
        return out


@dataclass
class TrainResult:
    """How a run ended.

    Attributes:
        surrogate_path: ``RUN_DIR/surrogate.pt``.
        epochs_done: complete epochs.
        steps: optimiser steps.
        seconds: wall time of the run (all resumptions).
        stopped_by: ``"epochs"``, ``"time budget"`` or ``"step budget"``.
        held_out: the held-out fidelity report of the generator in ``surrogate.pt`` (``None``
            without a held-out split).
        selected_epoch: the complete epochs behind the generator ``surrogate.pt`` holds.
        selected_step: its optimiser step (past the end of ``selected_epoch`` when a budget cut
            the next epoch short and that partial generator scored best).
    """

    surrogate_path: Path
    epochs_done: int
    steps: int
    seconds: float
    stopped_by: str
    held_out: dict | None
    selected_epoch: int = 0
    selected_step: int = 0


class SurrogateTrainer:
    """Trains a surrogate on a :class:`~saliencyssl.surrogate.pairs.PairSet`.

    Args:
        config: :class:`TrainConfig`.
        train: the training pairs.
        held_out: pairs for fidelity after each epoch (may be ``None`` or empty).
        run_dir: the run's folder.
        device: ``"cpu"``, ``"cuda"`` ...
        progress: show tqdm progress bars.
        log: where messages go (default ``print``).
        tensorboard: write TensorBoard events.
        run_info: extra facts recorded in the checkpoints' metadata (paths, command line).

    Example:
        >>> import tempfile
        >>> from saliencyssl.surrogate.pairs import shape_pairs
        >>> train, held = shape_pairs(2, 1, 32)  # 8 + 4 generated shapes and their exact targets
        >>> config = TrainConfig(epochs=1, batch_size=4, ngf=4, ndf=4)
        >>> trainer = SurrogateTrainer(config, train, held, tempfile.mkdtemp(), progress=False, tensorboard=False,
        ...                            log=lambda line: None)
        >>> result = trainer.fit()
        >>> result.steps, result.stopped_by, result.surrogate_path.name
        (2, 'epochs', 'surrogate.pt')
    """

    def __init__(self, config: TrainConfig, train: PairSet, held_out: PairSet | None, run_dir: str | Path,
                 device: str | torch.device = "cpu", progress: bool = True, log: Callable[[str], None] = print,
                 tensorboard: bool = True, run_info: dict | None = None):
        if len(train) == 0:
            raise ValueError("the training split is empty; give more images, or hold out a smaller share")
        if train.image_size != config.image_size:
            raise ValueError(f"pairs are at {train.image_size} px but the config says {config.image_size} px")
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device cuda was asked for but torch sees no CUDA device; train on the cpu")
        self.amp = bool(config.amp) and self.device.type == "cuda"
        if config.amp and not self.amp:
            log("note: mixed precision needs CUDA; training in float32 on the CPU")
        self.train_pairs, self.held_pairs = train, (held_out if held_out is not None and len(held_out) else None)
        self.run_dir = Path(run_dir)
        self.progress, self.log, self.use_tensorboard = progress, log, tensorboard
        self.run_info = dict(run_info or {})

        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2 ** 32)
        self.arch = config.architecture()
        self.step = 0
        g, d = self.build_networks(self.arch, config.seed)
        self.generator, self.discriminator = g.to(self.device), d.to(self.device)
        betas = (config.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.gan_loss = GANLoss(config.gan_mode)
        self.target_loss = self.build_target_loss()

        data_device = self.device if train.nbytes() < DEVICE_DATA_LIMIT else torch.device("cpu")
        self.images = train.images.to(data_device)
        self.targets = train.targets.to(data_device)
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.epochs_per_evaluation = max(1, math.ceil(config.eval_steps / self.steps_per_epoch))

        self.epoch = 0
        self.batch_in_epoch = 0  # batches of the current epoch done (non-zero only after a budget cut)
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.last_report: dict | None = None
        self.best: dict | None = None  # {"score", "epoch", "step", "report"} of best.pt
        self._best_state: dict | None = None
        self._report_step: int | None = None  # the step last_report was taken at
        self._writer = None

    # -- extension points ------------------------------------------------------------------------
    def build_networks(self, arch: Architecture, seed: int) -> tuple[UNetGenerator, PatchDiscriminator]:
        """A freshly initialised generator and discriminator (:func:`~saliencyssl.surrogate.networks.build_networks`
        seeded)."""
        return build_networks(arch, seed=seed)

    def build_target_loss(self) -> TargetLoss:
        """The reconstruction loss (:class:`~saliencyssl.surrogate.losses.TargetLoss` of the config's weights)."""
        return TargetLoss(self.config.weights)

    def exact_channels(self, targets: TargetBatch) -> torch.Tensor:
        """What the generator learns for ``targets`` on the device: ``(B, C, S, S)`` float32 in [0, 1]
        (the three :data:`~saliencyssl.target.TARGET_CHANNELS`)."""
        return targets.channels()

    def after_step(self) -> None:
        """Called after every optimiser step (:attr:`step` already counts it); nothing here."""

    @property
    def eval_generator(self) -> UNetGenerator:
        """The generator that is evaluated, selected and saved (here the trained one)."""
        return self.generator

    def extra_state(self) -> dict:
        """Further entries of ``last.pt`` (tensors and plain values); none here."""
        return {}

    def load_extra_state(self, blob: dict) -> list[str]:
        """Restore :meth:`extra_state` from a ``last.pt``; returns what makes it unusable (nothing here)."""
        return []

    # -- schedule ------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run: ``epochs`` passes or ``max_steps``, whichever is fewer
        (about 10^6 epochs' worth when only a time budget is set)."""
        steps = self.config.total_epochs * self.steps_per_epoch
        return min(steps, self.config.max_steps) if self.config.max_steps else steps

    def run_progress(self, elapsed: float) -> float:
        """Share of the run done, in [0, 1]: by steps, or by time when a time budget is set (the larger)."""
        by_steps = self.step / max(1, self.total_steps)
        by_time = elapsed / (60.0 * self.config.max_minutes) if self.config.max_minutes else 0.0
        return min(1.0, max(by_steps, by_time))

    def lr_at(self, progress: float) -> float:
        """Constant ``lr`` until ``decay_start``, then linear to zero at the end of the run."""
        start = self.config.decay_start
        if progress <= start or start >= 1.0:
            return self.config.lr
        return self.config.lr * max(0.0, 1.0 - (progress - start) / (1.0 - start))

    def _set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    # -- one step ------------------------------------------------------------------------------
    def batch(self, index: torch.Tensor, flips: torch.Tensor | None,
              turns: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 (B,3,S,S), exact channels float (B,C,S,S))`` on the device, mirrored where
        ``flips`` (``(B,)`` bool) and then turned by ``turns`` (``(B,)`` int, quarter turns) say
        (:meth:`exact_channels`)."""
        images = self.images[index]
        targets = self.targets.index_select(index)
        if flips is not None:
            which = flips.to(images.device)
            images = torch.where(which.view(-1, 1, 1, 1), images.flip(-1), images)
            targets = targets.flip(which)
        if turns is not None:
            images = rotate_quarters(images, turns)
            targets = targets.rotate(turns)
        return images.to(self.device, non_blocking=True), self.exact_channels(targets.to(self.device))

    def train_step(self, images: torch.Tensor, exact: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator and one generator update.

        Args:
            images: ``(B, 3, S, S)`` uint8 on the device.
            exact: ``(B, C, S, S)`` float exact channels in [0, 1] on the device (:meth:`batch`).

        Returns:
            Losses as detached scalar tensors on the device (no host synchronisation):
            ``d`` (discriminator) and ``g_gan`` with an adversarial term, the target loss's parts
            (``l1``, ``mask``, ``boundary``), ``g`` (the generator's total).
        """
        g, d = self.generator, self.discriminator
        g.train()
        d.train()
        x = image_to_input(images)
        use_gan = self.config.weights.gan > 0
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)
        with autocast:
            logits = g(x)
        fake = to_probabilities(logits)
        out: dict[str, torch.Tensor] = {}
        real_in = torch.cat([x, exact * 2 - 1], 1)
        if use_gan:
            d.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            with autocast:
                d_real = d(real_in)
                d_fake = d(torch.cat([x, fake.detach() * 2 - 1], 1))
            loss_d = 0.5 * (self.gan_loss(d_real, True) + self.gan_loss(d_fake, False))
            self.scaler_d.scale(loss_d).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            d.requires_grad_(False)
            out["d"] = loss_d.detach()
        self.opt_g.zero_grad(set_to_none=True)
        recon, parts = self.target_loss(logits, exact)
        loss_g = recon
        if use_gan:
            with autocast:
                g_gan = self.gan_loss(d(torch.cat([x, fake * 2 - 1], 1)), True)
            loss_g = loss_g + self.config.weights.gan * g_gan
            out["g_gan"] = g_gan.detach()
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        d.requires_grad_(True)
        out.update(parts)
        out["g"] = loss_g.detach()
        self.step += 1
        self.after_step()
        return out

    # -- evaluation ------------------------------------------------------------------------------
    def surrogate(self) -> Surrogate:
        """The evaluated generator as a :class:`~saliencyssl.surrogate.model.Surrogate` (shares weights)."""
        return Surrogate(self.eval_generator, self.train_pairs.fingerprint, self.train_pairs.labeller_params,
                         meta=self._meta(), device=self.device)

    def evaluate(self) -> dict | None:
        """Fidelity on the held-out split (:func:`saliencyssl.surrogate.evaluation.evaluate_surrogate`)."""
        if self.held_pairs is None:
            return None
        from saliencyssl.surrogate.evaluation import evaluate_surrogate

        held = self.held_pairs
        result = evaluate_surrogate(self.surrogate(), held.images, held.targets,
                                    batch_size=max(256, self.config.batch_size))
        self.generator.train()
        self._last_result = result
        return result.report

    def _grid(self) -> np.ndarray | None:
        result = getattr(self, "_last_result", None)
        if result is None or self.held_pairs is None:
            return None
        from saliencyssl.surrogate.evaluation import comparison_rows
        from saliencyssl.visualize import image_grid

        k = min(self.config.grid_images, len(self.held_pairs))
        rows = comparison_rows(self.held_pairs.images, self.held_pairs.targets, result.prediction,
                               range(k), result.scores, tile=64)
        from saliencyssl.surrogate.evaluation import GRID_HEADER

        return image_grid(rows, tile_height=64, header=GRID_HEADER)

    # -- checkpoints -----------------------------------------------------------------------------
    def _meta(self) -> dict:
        train = self.train_pairs
        return {
            "epoch": self.epoch, "step": self.step, "seconds": round(self.elapsed, 2),
            "n_train": len(train), "train_hashes_digest": train.digest(), "train_hash_prefixes": hash_prefixes(
                train.hashes), "n_held_out": len(self.held_pairs) if self.held_pairs is not None else 0,
            "held_out_hashes_digest": self.held_pairs.digest() if self.held_pairs is not None else None,
            "config": self.config.as_dict(), "heldout_fidelity": _plain(self.last_report),
            "torch": str(torch.__version__), "device": str(self.device), **self.run_info}

    def save_last(self) -> Path:
        """Write ``RUN_DIR/last.pt`` (everything :meth:`resume` needs)."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        blob = checkpoint_dict(
            self.generator, self.train_pairs.fingerprint, self.train_pairs.labeller_params, self._meta(),
            discriminator={k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
            optim_g=self.opt_g.state_dict(), optim_d=self.opt_d.state_dict(),
            scaler_g=self.scaler_g.state_dict(), scaler_d=self.scaler_d.state_dict(), **self.extra_state(),
            trainer={"epoch": self.epoch, "step": self.step, "elapsed": self.elapsed, "history": self.history,
                     "best": _plain(self.best), "batch_in_epoch": self.batch_in_epoch},
            rng=rng)
        return save_checkpoint(self.run_dir / "last.pt", blob)

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from ``RUN_DIR/last.pt`` (or ``path``): weights, optimisers, counters, RNG.

        The options that shape the run (rate, seed, mirrors, loss weights ...) are the caller's to
        keep (the application compares them through its run record); this checks that the state
        fits the networks and the data: image size, labeller fingerprint, architecture, training set.

        Raises:
            FileNotFoundError: no checkpoint to resume from.
            SurrogateCheckpointError: it belongs to another image size, labeller, architecture or
                training set, or holds no optimiser state.
        """
        path = Path(path) if path is not None else self.run_dir / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint {path} to resume from; start the run afresh")
        blob = read_checkpoint(path, map_location="cpu")
        try:
            self._restore(path, blob)
        except SurrogateCheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError, OverflowError) as error:
            raise SurrogateCheckpointError(f"cannot resume from {path}: its saved training state is damaged "
                                           f"({type(error).__name__}: {str(error)[:120]}); start a new run in another "
                                           f"folder", retrain=False) from None
        self.log(f"resumed from {path}: epoch {self.epoch}, step {self.step}, {self.elapsed / 60:.1f} min trained")

    def _restore(self, path: Path, blob: dict) -> None:
        """Load ``blob`` (a read ``last.pt``) into this trainer, checking it fits (see :meth:`resume`)."""
        meta = blob.get("meta") or {}
        if not isinstance(meta, dict):
            raise TypeError(f"its meta record is a {type(meta).__name__}")
        problems = []
        if int(blob["image_size"]) != self.config.image_size:
            problems.append(f"image size {blob['image_size']} (now {self.config.image_size})")
        if blob["fingerprint"] != self.train_pairs.fingerprint:
            problems.append(f"labeller fingerprint {blob['fingerprint']} (now {self.train_pairs.fingerprint})")
        try:
            same_arch = type(self.arch).from_dict(dict(blob["arch"])) == self.arch
        except (TypeError, ValueError):
            same_arch = False
        if not same_arch:
            problems.append(f"architecture {blob['arch']} (now {self.arch.as_dict()})")
        if meta.get("train_hashes_digest") != self.train_pairs.digest():
            problems.append(f"a training set of {meta.get('n_train')} images (now {len(self.train_pairs)}: another "
                            f"set; the same images, limit and held-out share are needed)")
        if "trainer" not in blob or "optim_g" not in blob:
            problems.append("no optimiser state (a final surrogate.pt, not a last.pt)")
        if not problems:
            problems += self.load_extra_state(blob)
        if problems:
            raise SurrogateCheckpointError(f"cannot resume from {path}: it was trained with " + "; ".join(problems)
                                           + ". Use the original options, or start a new run in another folder",
                                           retrain=False)
        self.generator.load_state_dict(blob["generator"])
        self.discriminator.load_state_dict(blob["discriminator"])
        self.opt_g.load_state_dict(blob["optim_g"])
        self.opt_d.load_state_dict(blob["optim_d"])
        for scaler, saved in ((self.scaler_g, blob["scaler_g"]), (self.scaler_d, blob["scaler_d"])):
            if saved:  # empty when the run was not --amp on CUDA: a scaler switched on since starts afresh
                scaler.load_state_dict(saved)
        state = blob["trainer"]
        self.epoch, self.step, self.elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))  # older checkpoints: the epoch from its start
        if min(self.epoch, self.step, self.batch_in_epoch) < 0 or not 0 <= self.elapsed < 1e9:
            raise ValueError(f"its counters (epoch {self.epoch}, step {self.step}, {self.elapsed:g} s) are impossible")
        self.history = list(state.get("history") or [])
        self.last_report = meta.get("heldout_fidelity")
        self._report_step = self.step
        self.best = state.get("best")
        if self.best is not None and not (isinstance(self.best, dict) and isinstance(self.best.get("score"), float)):
            raise TypeError(f"its best-epoch record is {str(self.best)[:40]}")
        if not all(isinstance(entry, dict) for entry in self.history):
            raise TypeError("its history is not a list of records")
        best_path = self.run_dir / "best.pt"
        if self.best is not None and best_path.is_file():
            self._best_state = read_checkpoint(best_path)["generator"]
        elif self.best is not None:
            self.best = None
        rng = blob.get("rng") or {}
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def consider(self, report: dict | None) -> bool:
        """Keep the current generator as ``best.pt`` when its held-out score beats the best so far."""
        if report is None:
            return False
        score = selection_score(report)
        if self.best is not None and score <= self.best["score"]:
            return False
        self.best = {"score": score, "epoch": self.epoch, "step": self.step, "report": _plain(report)}
        self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.eval_generator.state_dict().items()}
        save_checkpoint(self.run_dir / "best.pt", checkpoint_dict(
            self.eval_generator, self.train_pairs.fingerprint, self.train_pairs.labeller_params,
            {**self._meta(), "heldout_fidelity": _plain(report), "selection_score": score}))
        return True

    def save_final(self, stopped_by: str) -> tuple[Path, int, int, dict | None]:
        """Write ``RUN_DIR/surrogate.pt``: the best (or last) generator and its metadata (its
        ``step`` says where it was taken, ``selected_epoch`` how many epochs were complete).

        Returns:
            ``(path, selected epoch, its step, its held-out report)``.
        """
        meta = {**self._meta(), "stopped_by": stopped_by, "final_epoch": self.epoch,
                "final_heldout_fidelity": _plain(self.last_report), "select": self.config.select}
        generator, epoch, step, report = self.eval_generator, self.epoch, self.step, self.last_report
        if self.config.select == "best" and self.best is not None and self._best_state is not None:
            generator = copy.deepcopy(self.eval_generator).cpu()
            generator.load_state_dict(self._best_state)
            epoch, step, report = int(self.best["epoch"]), int(self.best["step"]), self.best["report"]
            meta.update({"epoch": epoch, "step": step, "heldout_fidelity": report,
                         "selection_score": self.best["score"]})
        meta["selected_epoch"] = epoch
        path = save_checkpoint(self.run_dir / "surrogate.pt", checkpoint_dict(
            generator, self.train_pairs.fingerprint, self.train_pairs.labeller_params, meta))
        return path, epoch, step, report

    # -- the loop --------------------------------------------------------------------------------
    def _tb(self):
        if self._writer is None and self.use_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def _log_epoch(self, losses: dict[str, float], report: dict | None) -> None:
        entry = {"epoch": self.epoch, "step": self.step, "minutes": round(self.elapsed / 60, 3),
                 "lr": self.opt_g.param_groups[0]["lr"], "losses": losses}
        if report is not None:
            entry["held_out"] = {k: report[k] for k in ("presence_accuracy", "mask_iou", "mask_iou_present",
                                                        "mask_f", "saliency_mae", "saliency_mae_present",
                                                        "boundary_f")}
        self.history.append(entry)
        replace_file(self.run_dir / "history.json", json.dumps(self.history, indent=1))
        writer = self._tb()
        if writer is not None and report is not None:
            base = report["baseline"]
            for key, value in report.items():
                if isinstance(value, float):
                    writer.add_scalar(f"heldout/{key}", value, self.epoch)
                    if isinstance(base.get(key), float):
                        writer.add_scalar(f"heldout_baseline/{key}", base[key], self.epoch)
            grid = self._grid()
            if grid is not None:
                writer.add_image("heldout/image|exact|surrogate", grid, self.epoch, dataformats="HWC")
            writer.flush()
        if report is not None:
            self.log(f"epoch {self.epoch}: held-out presence acc {report['presence_accuracy']:.3f} "
                     f"(nothing {report['baseline']['presence_accuracy']:.3f}), IoU present "
                     f"{_f(report['mask_iou_present'])}, MAE {report['saliency_mae']:.4f} "
                     f"(nothing {report['baseline']['saliency_mae']:.4f}), boundary F {report['boundary_f']:.3f} "
                     f"(nothing {report['baseline']['boundary_f']:.3f})")

    def fit(self) -> TrainResult:
        """Train until ``epochs``, the step budget or the time budget, then write ``surrogate.pt``.

        Every evaluation (see the module docstring) brings the held-out fidelity, TensorBoard records
        and ``last.pt``; a run stopped by a budget writes them too, then ``surrogate.pt``.
        """
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        budget = 60.0 * cfg.max_minutes if cfg.max_minutes else math.inf
        step_budget = cfg.max_steps or math.inf
        started = time.perf_counter() - self.elapsed
        stopped_by = "epochs"
        writer = self._tb()
        total_epochs = cfg.total_epochs
        sums: dict[str, torch.Tensor] = {}  # losses since the last evaluation
        count = 0
        while self.epoch < total_epochs:
            if time.perf_counter() - started >= budget:
                stopped_by = "time budget"
                break
            if self.step >= step_budget:
                stopped_by = "step budget"
                break
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch)
            order = torch.randperm(len(self.train_pairs), generator=gen)
            flips = (torch.rand(len(order), generator=gen) < 0.5) if cfg.flip else None
            turns = torch.randint(0, 4, (len(order),), generator=gen) if cfg.rotate else None
            label = f"epoch {self.epoch + 1}" + (f"/{total_epochs}" if cfg.epochs or not cfg.budgeted else "")
            # A run resumed after a budget cut mid-epoch goes on from the batch it stopped at (the
            # epoch's order, mirrors and turns are the same: they depend on the seed and the epoch only).
            first = min(max(self.batch_in_epoch, 0), self.steps_per_epoch)
            bar = tqdm(range(first, self.steps_per_epoch), desc=label, unit="step", initial=first,
                       total=self.steps_per_epoch, disable=not self.progress, leave=False)
            cut = None
            for b in bar:
                now = time.perf_counter() - started
                if now >= budget:
                    cut = "time budget"
                    break
                if self.step >= step_budget:
                    cut = "step budget"
                    break
                lr = self.lr_at(self.run_progress(now))
                self._set_lr(lr)
                index = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                part = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
                images, exact = self.batch(index.to(self.images.device), flips[part] if flips is not None else None,
                                           turns[part] if turns is not None else None)
                losses = self.train_step(images, exact)
                self.batch_in_epoch = b + 1
                for k, v in losses.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                if self.step % 10 == 0:  # the only host synchronisation inside the epoch
                    values = {k: float(v) for k, v in losses.items()}
                    if writer is not None:
                        for k, v in values.items():
                            writer.add_scalar(f"loss/{k}", v, self.step)
                        writer.add_scalar("lr", lr, self.step)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("d", "l1", "mask", "boundary")})
            bar.close()
            self.elapsed = time.perf_counter() - started
            if cut:
                stopped_by = cut
                limit = f"{cfg.max_minutes:g} min" if cut == "time budget" else f"{cfg.max_steps} steps"
                self.log(f"{cut} of {limit} reached in epoch {self.epoch + 1} (step {self.step}); writing the "
                         f"final checkpoint")
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            if self.epoch % self.epochs_per_evaluation and self.epoch < total_epochs:
                continue
            self.last_report, self._report_step = self.evaluate(), self.step
            self.consider(self.last_report)
            self.elapsed = time.perf_counter() - started
            self._log_epoch({k: float(v) / max(1, count) for k, v in sums.items()}, self.last_report)
            sums, count = {}, 0
            self.save_last()
        if self.last_report is None or self._report_step != self.step:  # steps since the last evaluation
            self.last_report, self._report_step = self.evaluate(), self.step
            self.consider(self.last_report)
        self.elapsed = time.perf_counter() - started
        self.save_last()
        path, selected, selected_step, report = self.save_final(stopped_by)
        if writer is not None:
            writer.flush()
            writer.close()
            self._writer = None
        return TrainResult(surrogate_path=path, epochs_done=self.epoch, steps=self.step, seconds=self.elapsed,
                           stopped_by=stopped_by, held_out=report, selected_epoch=selected,
                           selected_step=selected_step)


def selection_score(report: dict) -> float:
    """Held-out score that picks the epoch ``surrogate.pt`` keeps (higher is better).

    ``presence_accuracy + mask_iou_present + mask_iou - saliency_mae_present / baseline's``: the
    mask-or-no-mask decision, the mask where there is one, the mask everywhere (an agreed empty
    mask counts 1) and the saliency map relative to predicting nothing, so that no figure is
    bought with another (early in a run the map is still all zero; late in a run the masks
    grow timid).
    """
    def value(key, source=report):
        v = source.get(key)
        return float(v) if v is not None else 0.0

    base = report.get("baseline") or {}
    mae_ratio = value("saliency_mae_present") / value("saliency_mae_present", base) \
        if value("saliency_mae_present", base) > 0 else 0.0
    return value("presence_accuracy") + value("mask_iou_present") + value("mask_iou") - mae_ratio


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _plain(report: dict | None) -> dict | None:
    """A report with plain Python values only (loadable with ``weights_only=True``)."""
    if report is None:
        return None
    return json.loads(json.dumps(report))


__all__ = ["TrainConfig", "TrainConfigError", "TrainResult", "SurrogateTrainer", "selection_score", "DEVICE_DATA_LIMIT",
           "resolve_device", "usable_devices"]
