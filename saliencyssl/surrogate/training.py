"""Training the surrogate: a U-Net regression on preloaded pairs, with Pix2Pix's adversarial term on request.

:class:`SurrogateTrainer` holds everything a run needs and owns its folder::

    RUN_DIR/last.pt          after every evaluation (and when stopped): generator, discriminator,
                             optimisers, scalers, counters, RNG states; what --resume continues from
    RUN_DIR/best.pt          the generator of the evaluation with the best held-out fidelity so far
    RUN_DIR/surrogate.pt     at the end: that best generator (or the last, with select="last") and its
                             metadata (Surrogate.load reads it)
    RUN_DIR/history.json     losses and held-out fidelity per evaluation
    RUN_DIR/tensorboard/     losses per step; held-out fidelity (and the predict-nothing baseline) and an
                             image | exact | surrogate grid per evaluation

Evaluations come at the end of an epoch, every epoch when an epoch has at least ``eval_steps``
steps, otherwise every ``ceil(eval_steps / steps per epoch)`` epochs (and at the last): on the
quickstart's 155 images an epoch is 3 steps, and scoring, checkpointing and drawing after each of
them made its 300-step command take 24 s instead of 20 s (``--eval-steps 1`` against the default).

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
``epochs`` passes, or the time budget when one is set, whichever is nearer its end, so a run cut by
``max_minutes`` still ends with a decayed rate.

Model selection: the exact labels are brittle (the labeller itself agrees with its own output on a
one-pixel shift of the image only about 0.89 of the time on whether there is an object), so a
generator memorises them and its held-out fidelity peaks and then falls while the training loss
keeps falling. At every evaluation the held-out split is scored with :func:`selection_score`
(presence accuracy, mask IoU where there is a mask and overall, saliency error against the
predict-nothing baseline) and the best epoch is kept; that is the one ``surrogate.pt`` holds
(early stopping on the held-out split, never on test images). With ``ema`` set, what is scored,
selected and saved is an exponential moving average of the generator's weights (torch's
:class:`~torch.optim.swa_utils.AveragedModel`), which smooths over the step-to-step noise the
brittle labels put into the weights.

Data: every image and target is a tensor on the training device from the start (uint8 images,
uint8/bool/int32 targets); a step only indexes, mirrors and turns (image and target together, the
boundary recomputed from the moved regions) and converts. The augmentation is the square's
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
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from saliencyssl.surrogate.losses import GANLoss, LossWeights, TargetLoss
from saliencyssl.surrogate.model import (Surrogate, SurrogateCheckpointError, checkpoint_dict, read_checkpoint,
                                         save_checkpoint)
from saliencyssl.surrogate.networks import (Architecture, UNetGenerator, build_networks, image_to_input,
                                            to_probabilities)
from saliencyssl.surrogate.pairs import PairSet, TargetTensors, hash_prefixes, rotate_quarters
from saliencyssl.target import TARGET_CHANNELS

#: Keep the data on the training device when it takes less than this many bytes.
DEVICE_DATA_LIMIT = 6 * 2 ** 30


def usable_devices() -> list[str]:
    """The ``--device`` values torch can train on here: ``cpu``, and ``cuda``, ``cuda:0`` ... when CUDA is visible."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` of a ``--device`` value, refused with the choices when torch cannot use it here.

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
        raise ValueError(f"--device {name}: torch cannot train on it here; choose {options}")
    return device


@dataclass
class TrainConfig:
    """Options of a surrogate training run (``scripts/train_surrogate.py`` sets them).

    Attributes:
        image_size: side of the square images and targets.
        epochs: passes over the training split (``None``: 100, or unbounded with ``max_minutes``).
        batch_size: pairs per step.
        lr, beta1: Adam's rate and first momentum coefficient (Pix2Pix: 2e-4, 0.5).
        decay_start: share of the run after which the rate decays linearly to zero.
        max_minutes: wall-clock budget of the whole run (all resumptions together); ``None`` = none.
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
        ema: decay of an exponential moving average of the generator's weights and batch-norm
            statistics, updated after every step (``0``: none). When set, the average is what is
            evaluated, selected and saved; its decay warms up as ``min(ema, (1 + n) / (10 + n))``
            after ``n`` updates, so early epochs are not dominated by the initial weights.
    """

    image_size: int = 32
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.5
    decay_start: float = 0.5
    max_minutes: float | None = None
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
    coords: bool = Architecture.coords
    head: int = Architecture.head
    dropout_blocks: int = Architecture.dropout_blocks
    grid_images: int = 8
    select: str = "best"
    eval_steps: int = 50
    ema: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        negative = [name for name, value in self.weights.as_dict().items() if value is not None and value < 0]
        if negative:
            fields = ", ".join(f"LossWeights.{name}" for name in negative)
            raise ValueError(f"loss weights must not be negative, got {fields} < 0 (train_surrogate.py sets "
                             "them with --lambda-gan, -l1, -mask, -boundary, -presence and -support, and "
                             "--boundary-pos-weight)")
        if self.head < 0 or self.dropout_blocks < 0:
            raise ValueError(f"--head and --dropout-blocks must be 0 or more, got {self.head} and "
                             f"{self.dropout_blocks}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.eval_steps < 1:
            raise ValueError(f"eval_steps must be at least 1, got {self.eval_steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"--max-minutes must be positive, got {self.max_minutes}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(f"decay_start must be in [0, 1], got {self.decay_start}")
        if not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"--held-out must be in [0, 1), got {self.held_out}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1) (0 = off; 0.999 averages over about 1,000 steps), "
                             f"got {self.ema}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {self.select!r} (--select)")

    @property
    def total_epochs(self) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        return 10 ** 6 if self.max_minutes is not None else 100

    def architecture(self) -> Architecture:
        """The networks' shape; a support loss adds the generator's fourth output."""
        return Architecture(self.image_size, ngf=self.ngf, max_mult=self.max_mult, ndf=self.ndf, coords=self.coords,
                            head=self.head, dropout_blocks=self.dropout_blocks,
                            out_channels=len(TARGET_CHANNELS) + int(self.weights.support > 0))

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
        stopped_by: ``"epochs"`` or ``"time budget"``.
        held_out: the held-out fidelity report of the generator in ``surrogate.pt`` (``None``
            without a held-out split).
        selected_epoch: the complete epochs behind the generator ``surrogate.pt`` holds.
        selected_step: its optimiser step (past the end of ``selected_epoch`` when a time budget
            cut the next epoch short and that partial generator scored best).
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
        >>> trainer = SurrogateTrainer(TrainConfig(epochs=5), train, held, "runs/sur")  # doctest: +SKIP
        >>> result = trainer.fit()  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, train: PairSet, held_out: PairSet | None, run_dir: str | Path,
                 device: str | torch.device = "cpu", progress: bool = True, log: Callable[[str], None] = print,
                 tensorboard: bool = True, run_info: dict | None = None):
        if len(train) == 0:
            raise ValueError("the training split is empty; give more images (or a smaller --held-out)")
        if train.image_size != config.image_size:
            raise ValueError(f"pairs are at {train.image_size} px but the config says {config.image_size} px")
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
        self.amp = bool(config.amp) and self.device.type == "cuda"
        if config.amp and not self.amp:
            log("note: --amp needs CUDA; training in float32 on the CPU")
        self.train_pairs, self.held_pairs = train, (held_out if held_out is not None and len(held_out) else None)
        self.run_dir = Path(run_dir)
        self.progress, self.log, self.use_tensorboard = progress, log, tensorboard
        self.run_info = dict(run_info or {})

        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2 ** 32)
        self.arch = config.architecture()
        g, d = build_networks(self.arch, seed=config.seed)
        self.generator, self.discriminator = g.to(self.device), d.to(self.device)
        betas = (config.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.gan_loss = GANLoss(config.gan_mode)
        self.target_loss = TargetLoss(config.weights)
        self.ema = (AveragedModel(self.generator, multi_avg_fn=_ema_update(config.ema, lambda: self.step),
                                  use_buffers=True) if config.ema > 0 else None)

        data_device = self.device if train.nbytes() < DEVICE_DATA_LIMIT else torch.device("cpu")
        self.images = train.images.to(data_device)
        self.targets = train.targets.to(data_device)
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.epochs_per_evaluation = max(1, math.ceil(config.eval_steps / self.steps_per_epoch))

        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0  # batches of the current epoch done (non-zero only after a budget cut)
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.last_report: dict | None = None
        self.best: dict | None = None  # {"score", "epoch", "step", "report"} of best.pt
        self._best_state: dict | None = None
        self._writer = None

    # -- schedule ------------------------------------------------------------------------------
    def run_progress(self, elapsed: float) -> float:
        """Share of the run done, in [0, 1]: by steps, or by time when a budget is set (the larger)."""
        by_steps = self.step / max(1, self.config.total_epochs * self.steps_per_epoch)
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
        ``flips`` (``(B,)`` bool) and then turned by ``turns`` (``(B,)`` int, quarter turns) say (``C`` is
        the generator's output count: the support channel is appended when it learns one)."""
        images = self.images[index]
        targets: TargetTensors = self.targets.index(index)
        if flips is not None:
            which = flips.to(images.device)
            images = torch.where(which.view(-1, 1, 1, 1), images.flip(-1), images)
            targets = targets.flip(which)
        if turns is not None:
            images = rotate_quarters(images, turns)
            targets = targets.rotate(turns)
        return (images.to(self.device, non_blocking=True),
                targets.to(self.device).channels(support=self.arch.has_support))

    def train_step(self, images: torch.Tensor, exact: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator and one generator update.

        Args:
            images: ``(B, 3, S, S)`` uint8 on the device.
            exact: ``(B, C, S, S)`` float exact channels in [0, 1] on the device (:meth:`batch`).

        Returns:
            Losses as detached scalar tensors on the device (no host synchronisation):
            ``d`` (discriminator), ``g_gan``, ``l1``, ``mask``, ``boundary`` (``presence``, ``support``),
            ``g`` (the generator's total).
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
        if self.ema is not None:
            self.ema.update_parameters(g)
        d.requires_grad_(True)
        out.update(parts)
        out["g"] = loss_g.detach()
        self.step += 1
        return out

    # -- evaluation ------------------------------------------------------------------------------
    @property
    def eval_generator(self) -> UNetGenerator:
        """The generator that is evaluated, selected and saved: the moving average when ``ema`` is set."""
        return self.ema.module if self.ema is not None else self.generator

    def surrogate(self) -> Surrogate:
        """The evaluated generator as a :class:`~saliencyssl.surrogate.model.Surrogate` (shares weights)."""
        return Surrogate(self.eval_generator, self.train_pairs.fingerprint, self.train_pairs.labeller_params,
                         meta=self._meta(), device=self.device)

    def evaluate(self) -> dict | None:
        """Fidelity on the held-out split (:func:`saliencyssl.surrogate.fidelity.evaluate_surrogate`)."""
        if self.held_pairs is None:
            return None
        from saliencyssl.surrogate.fidelity import evaluate_surrogate

        held = self.held_pairs
        result = evaluate_surrogate(self.surrogate(), held.images, held.targets.batch(),
                                    batch_size=max(256, self.config.batch_size))
        self.generator.train()
        self._last_result = result
        return result.report

    def _grid(self) -> np.ndarray | None:
        result = getattr(self, "_last_result", None)
        if result is None or self.held_pairs is None:
            return None
        from saliencyssl.surrogate.fidelity import comparison_rows
        from saliencyssl.visualize import image_grid

        k = min(self.config.grid_images, len(self.held_pairs))
        rows = comparison_rows(self.held_pairs.images, self.held_pairs.targets.batch(), result.prediction,
                               range(k), result.scores, tile=64)
        from saliencyssl.surrogate.fidelity import GRID_HEADER

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
        """Write ``RUN_DIR/last.pt`` (everything ``--resume`` needs)."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        blob = checkpoint_dict(
            self.generator, self.train_pairs.fingerprint, self.train_pairs.labeller_params, self._meta(),
            discriminator={k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
            optim_g=self.opt_g.state_dict(), optim_d=self.opt_d.state_dict(),
            scaler_g=self.scaler_g.state_dict(), scaler_d=self.scaler_d.state_dict(),
            **({"ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}} if self.ema is not None
               else {}),
            trainer={"epoch": self.epoch, "step": self.step, "elapsed": self.elapsed, "history": self.history,
                     "best": _plain(self.best), "batch_in_epoch": self.batch_in_epoch},
            rng=rng)
        return save_checkpoint(self.run_dir / "last.pt", blob)

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from ``RUN_DIR/last.pt`` (or ``path``): weights, optimisers, counters, RNG.

        Raises:
            FileNotFoundError: no checkpoint to resume from.
            SurrogateCheckpointError: it belongs to another image size, labeller, architecture or
                training set.
        """
        path = Path(path) if path is not None else self.run_dir / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} not found; start the run without --resume")
        blob = read_checkpoint(path, map_location="cpu")
        meta = blob.get("meta") or {}
        problems = []
        if int(blob["image_size"]) != self.config.image_size:
            problems.append(f"image size {blob['image_size']} (now {self.config.image_size}, --size)")
        if blob["fingerprint"] != self.train_pairs.fingerprint:
            problems.append(f"labeller fingerprint {blob['fingerprint']} (now {self.train_pairs.fingerprint})")
        if Architecture.from_dict(dict(blob["arch"])) != self.arch:
            problems.append(f"architecture {blob['arch']} (now {self.arch.as_dict()})")
        if meta.get("train_hashes_digest") != self.train_pairs.digest():
            problems.append(f"training set of {meta.get('n_train')} images (now {len(self.train_pairs)}, another "
                            f"set: same IMAGES_DIR, --limit and --held-out needed)")
        if "trainer" not in blob or "optim_g" not in blob:
            problems.append("no optimiser state (a final surrogate.pt, not a last.pt)")
        if ("ema" in blob) != (self.ema is not None):
            problems.append("a weight average (--ema)" if "ema" in blob else "no weight average (now --ema "
                            f"{self.config.ema:g})")
        problems += _changed_options(meta.get("config") or {}, self.config)
        if problems:
            raise SurrogateCheckpointError(f"cannot resume from {path}: it was trained with " + "; ".join(problems)
                                           + ". Use the original options, or start a new run in another --out")
        self.generator.load_state_dict(blob["generator"])
        self.discriminator.load_state_dict(blob["discriminator"])
        self.opt_g.load_state_dict(blob["optim_g"])
        self.opt_d.load_state_dict(blob["optim_d"])
        self.scaler_g.load_state_dict(blob["scaler_g"])
        self.scaler_d.load_state_dict(blob["scaler_d"])
        if self.ema is not None:
            self.ema.load_state_dict(blob["ema"])
        state = blob["trainer"]
        self.epoch, self.step, self.elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))  # older checkpoints: the epoch from its start
        self.history = list(state.get("history") or [])
        self.last_report = meta.get("heldout_fidelity")
        self.best = state.get("best")
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
        self.log(f"resumed from {path}: epoch {self.epoch}, step {self.step}, {self.elapsed / 60:.1f} min trained")

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
            generator = UNetGenerator(self.arch)
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
        (self.run_dir / "history.json").write_text(json.dumps(self.history, indent=1))
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
        """Train until ``epochs`` or the time budget, then write ``surrogate.pt``.

        Every evaluation (see the module docstring) brings the held-out fidelity, TensorBoard records
        and ``last.pt``; a run stopped by the budget writes them too, then ``surrogate.pt``.
        """
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        budget = 60.0 * cfg.max_minutes if cfg.max_minutes else math.inf
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
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch)
            order = torch.randperm(len(self.train_pairs), generator=gen)
            flips = (torch.rand(len(order), generator=gen) < 0.5) if cfg.flip else None
            turns = torch.randint(0, 4, (len(order),), generator=gen) if cfg.rotate else None
            label = f"epoch {self.epoch + 1}" + (f"/{total_epochs}" if cfg.epochs or not cfg.max_minutes else "")
            # A run resumed after a budget cut mid-epoch goes on from the batch it stopped at (the
            # epoch's order, mirrors and turns are the same: they depend on the seed and the epoch only).
            first = min(max(self.batch_in_epoch, 0), self.steps_per_epoch)
            bar = tqdm(range(first, self.steps_per_epoch), desc=label, unit="step", initial=first,
                       total=self.steps_per_epoch, disable=not self.progress, leave=False)
            cut = False
            for b in bar:
                now = time.perf_counter() - started
                if now >= budget:
                    cut = True
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
                stopped_by = "time budget"
                self.log(f"time budget of {cfg.max_minutes:g} min reached in epoch {self.epoch + 1} "
                         f"(step {self.step}); writing the final checkpoint")
                break
            self.epoch += 1
            self.batch_in_epoch = 0
            if self.epoch % self.epochs_per_evaluation and self.epoch < total_epochs:
                continue
            self.last_report = self.evaluate()
            self.consider(self.last_report)
            self.elapsed = time.perf_counter() - started
            self._log_epoch({k: float(v) / max(1, count) for k, v in sums.items()}, self.last_report)
            sums, count = {}, 0
            self.save_last()
        if stopped_by == "time budget" or self.last_report is None:
            self.last_report = self.evaluate()
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


#: Options that shape a run's trajectory, with the flag that sets each: a resumed run must keep
#: them (``--epochs``, ``--max-minutes``, ``--select``, ``--amp`` and the device may change).
_RESUME_MUST_KEEP = {"batch_size": "--batch-size", "lr": "--lr", "beta1": "beta1", "decay_start": "--decay-start",
                     "flip": "--no-flip", "rotate": "--no-rotate", "seed": "--seed", "gan_mode": "--gan-mode",
                     "weights": "--lambda-*"}


def _flipping(on: bool) -> str:
    return "mirrored pairs" if on else "--no-flip"


def _turning(on: bool) -> str:
    return "turned pairs" if on else "--no-rotate"


def _changed_options(recorded: dict, config: TrainConfig) -> list[str]:
    """The trajectory options of ``config`` that differ from a checkpoint's recorded config."""
    now = config.as_dict()
    if isinstance(recorded.get("weights"), dict):
        recorded = {**recorded, "weights": LossWeights(**recorded["weights"]).as_dict()}
    recorded = {"rotate": False, **recorded}  # runs from before the quarter turns did not turn
    changed = []
    for key, flag in _RESUME_MUST_KEEP.items():
        if key not in recorded or recorded[key] == now[key]:
            continue
        if key == "flip":
            changed.append(f"{_flipping(recorded[key])} (now {_flipping(now[key])})")
        elif key == "rotate":
            changed.append(f"{_turning(recorded[key])} (now {_turning(now[key])})")
        else:
            changed.append(f"{flag} {recorded[key]} (now {now[key]})")
    return changed


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


def _ema_update(decay: float, updates_done: Callable[[], int]):
    """``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: an EMA whose decay warms up.

    The decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``; integer buffers (batch
    norm's step counter) follow the model. ``updates_done`` gives ``n`` from the trainer's step
    counter (one update per step), equal to the average's own ``n_averaged`` but a Python int, so
    reading it costs no device synchronisation on CUDA.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):
            torch._foreach_copy_(averaged, current)
            return
        n = float(updates_done())
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, weight)
    return update


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _plain(report: dict | None) -> dict | None:
    """A report with plain Python values only (loadable with ``weights_only=True``)."""
    if report is None:
        return None
    return json.loads(json.dumps(report))


__all__ = ["TrainConfig", "TrainResult", "SurrogateTrainer", "selection_score", "DEVICE_DATA_LIMIT", "resolve_device",
           "usable_devices"]
