"""The pretraining loop: one loop for all methods, fed by the router.

:class:`Pretrainer` wires the pieces in the order the data flows: images at one size (preloaded
as one uint8 tensor), the labeller fingerprint, the target sources (frozen pack from the cache,
surrogate checkpoint, exact labeller) behind a :class:`~saliencyssl.augment.TargetRouter`, the
policy (:class:`~saliencyssl.augment.SSLAugmentation`), the ResNet-18 and its method
(:func:`~saliencyssl.ssl.registry.build_method`), lightly's recipe optimizer, and then:

- the router is consulted when the policy reads targets (``SSLAugmentation.uses_targets``) or
  the method does (``SSLMethod.needs_targets``, DetCon); for such a method each view comes with
  its targets warped by the view's geometry (``return_targets=True``), handed to the loss, and
  ``--aug-source none`` is refused;

- per epoch: a progress bar; the loss, learning rate, seconds split into data (gathering the
  batch), augmentation (targets + views) and compute (forward, backward, step), the router's
  counters per source and, when labelled sets are given, kNN accuracy (lightly's
  ``knn_predict``), all to TensorBoard (``RUN_DIR/tb``) and ``RUN_DIR/history.json``;
- a checkpoint after each epoch (``RUN_DIR/checkpoint.pt``: weights, optimizer, schedule, grad
  scaler and every RNG state), so ``resume=True`` continues exactly where a run stopped;
- at the end ``RUN_DIR/backbone.pt`` for the evaluation tools.

Under ``torchrun`` each process takes its share of every epoch's permutation, the method
gathers what its loss needs across processes, and rank 0 alone writes files. On the CPU a
run is reproducible from its seed.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saliencyssl.augment import (FrozenPack, MissingPieceError, SSLAugmentation, TargetRouter, TrainingImages,
                                 parse_policy, parse_sources, policy_summary)
from saliencyssl.datasets import open_image_set
from saliencyssl.precision import autocast_dtype
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.saliency.options import LABELLER_OPTIONS
from saliencyssl.ssl.backbone import resnet18_backbone, save_backbone, uses_cifar_stem
from saliencyssl.ssl.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from saliencyssl.target import TargetBatch

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "saliency-ssl-pretrain-1"


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (``scripts/pretrain.py``'s options).

    ``batch_size`` is the global batch; under torchrun each of N processes takes
    ``batch_size / N``. ``limit`` keeps N images evenly spaced through the set (all classes). ``workers`` is the
    number of processes for exact labelling (``--aug-source exact`` / ``cache,exact``). ``method_options``
    replaces some of the method's hyperparameters (``--method-option KEY=VALUE``; the keys are those of
    :meth:`~saliencyssl.ssl.method.SSLMethod.default_hparams`, e.g. BYOL's ``momentum_start``).
    """

    data: str
    out: str
    method: str = "simclr"
    aug_source: str = "cache"
    policy: str = "sal+default"
    epochs: int = 100
    batch_size: int = 128
    image_size: int = 32
    cache: str | None = None
    pack: str | None = None
    surrogate: str | None = None
    device: str = "cpu"
    amp: bool = False
    workers: int = 0
    knn_train: str | None = None
    knn_test: str | None = None
    knn_every: int = 1
    resume: bool = False
    seed: int = 0
    lr: float | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    scale: float | None = None
    max_side: int | None = None
    min_side: int = 64
    cut_engine: str = "faithful"
    limit: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def labeller_config(self) -> LabellerConfig:
        return LabellerConfig(**{name: getattr(self, name) for name in LABELLER_OPTIONS})


@dataclass
class EpochRecord:
    """What one epoch did (one entry of ``history.json``)."""

    epoch: int
    loss: float
    lr: float  # mean learning rate over the epoch's steps
    seconds: dict[str, float]
    router: dict[str, Any]
    knn_accuracy: float | None = None
    steps: int = 0


@dataclass
class PretrainResult:
    backbone_path: Path | None
    history: list[EpochRecord] = field(default_factory=list)


class Pretrainer:
    """Set up and run one pretraining run (see the module docstring).

    Example:
        >>> trainer = Pretrainer(PretrainConfig(data="cifar/train", out="runs/simclr", method="simclr",
        ...                                     aug_source="cache", cache="runs/cache", epochs=10))  # doctest: +SKIP
        >>> trainer.run()  # doctest: +SKIP
    """

    def __init__(self, config: PretrainConfig, dist_info: DistInfo | None = None):
        self.config = config
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        self.out = Path(config.out)
        if not config.resume and self.checkpoint_path.is_file():
            raise ValueError(f"{self.out} already holds a run ({self.checkpoint_path.name}); pass --resume to continue "
                             f"it, or choose another --out (delete the folder to start it again)")
        self.history: list[EpochRecord] = []
        self.start_epoch = 0
        self._setup()

    # -- setup ------------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    def _setup(self) -> None:
        c = self.config
        if c.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {c.epochs}")
        from saliencyssl.ssl.registry import check_method_options, method_class

        hparams = check_method_options(c.method, dict(c.method_options or {}))
        # whether the method's loss reads each view's warped targets (DetCon's masks)
        self.method_needs_targets = method_class(c.method).needs_targets
        _seed_everything(c.seed + self.dist.rank)
        self.policy = parse_policy(c.policy)
        self.augment = SSLAugmentation(self.policy, c.image_size)
        self.sources = parse_sources(c.aug_source)
        policy_reads = self.augment.uses_targets
        if self.sources == ("none",):
            if self.method_needs_targets:
                raise MissingPieceError(
                    f"--method {c.method} pools its loss over each view's masks ({hparams.get('masks', 'regions')}: "
                    f"the targets warped with the view) but --aug-source is none; choose --aug-source cache (fill "
                    f"the cache with: python scripts/label.py {c.data} --cache CACHE_DIR), cache,surrogate or "
                    f"surrogate, or a method without masks (e.g. --method simclr)")
            if policy_reads:
                raise MissingPieceError(f"policy {c.policy!r} reads targets (saliency views, guided crops or "
                                        f"composites) but --aug-source is none; choose --aug-source cache (or "
                                        f"cache,surrogate), or a policy that reads none (e.g. default)")
        elif not policy_reads and not self.method_needs_targets:
            self._say(f"note: policy {c.policy!r} reads no targets and --method {c.method} needs none; "
                      f"--aug-source {c.aug_source} is not consulted")
            self.sources = ("none",)

        image_set = open_image_set(c.data)
        if c.limit is not None:
            image_set = image_set.spread(c.limit)
        self.image_set = image_set
        self.images = TrainingImages(image_set, c.image_size)
        n, world = len(self.images), self.dist.world_size
        if c.batch_size % world:
            raise ValueError(f"--batch-size {c.batch_size} must be divisible by the {world} processes")
        self.local_batch = c.batch_size // world
        if self.local_batch < 2:
            raise ValueError(f"--batch-size {c.batch_size} gives {self.local_batch} image per process; every method "
                             f"compares the images of a batch: use --batch-size {2 * world} or more")
        self.steps_per_epoch = (n // world) // self.local_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"--batch-size {c.batch_size} is larger than the {n} images of {c.data} "
                             f"(per process {n // world}); use a smaller batch")
        on_gpu = self.device.type == "cuda"
        self.stack = self.images.stack(self.device if on_gpu else "cpu")
        dropped = n - self.steps_per_epoch * c.batch_size
        self._say(f"data: {n} images from {c.data} at {c.image_size}px; {self.steps_per_epoch} steps of "
                  f"{c.batch_size} per epoch" + (f" over {world} processes" if world > 1 else "")
                  + (f"; {dropped} images left out of each epoch (a different {dropped} each epoch: only full "
                     f"batches are used)" if dropped > 0 else ""))

        self.labeller = Labeller(c.labeller_config())
        self.router = self._build_router()
        self.router.check_ready()
        self._say(f"policy {policy_summary(self.policy, c.image_size)}; targets from {','.join(self.router.sources)}"
                  + (f" (warped with each view for --method {c.method})" if self.method_needs_targets else ""))
        self.augment = self.augment.to(self.device)

        from saliencyssl.ssl.registry import build_method
        from saliencyssl.ssl.optim import build_optimizer

        backbone = resnet18_backbone(uses_cifar_stem(c.image_size))
        self.method = build_method(c.method, backbone, distributed=self.dist.enabled,
                                   **(c.method_options or {})).to(self.device)
        if c.method_options:
            defaults = self.method.default_hparams()
            self._say(f"{c.method} options: " + ", ".join(f"{k}={v!r} (default {defaults[k]!r})"
                                                          for k, v in sorted(c.method_options.items())))
        self.model: torch.nn.Module = self.method
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.method, device_ids=ids)
        self.optimizer, self.scheduler = build_optimizer(self.method, batch_size=c.batch_size, epochs=c.epochs,
                                                         steps_per_epoch=self.steps_per_epoch, lr=c.lr)
        self.amp_dtype = autocast_dtype(self.device) if c.amp else None
        if c.amp and self.amp_dtype is None:
            self._say("note: --amp needs CUDA or a CPU with native bfloat16 (AVX512-BF16/AMX); running in float32")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.knn = None
        if c.knn_train and c.knn_test:
            self.knn = self._knn_sets(c.knn_train, c.knn_test)
        elif bool(c.knn_train) != bool(c.knn_test):
            raise ValueError("kNN monitoring needs both --knn-train and --knn-test")

        self.writer = None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if c.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"))
        if c.resume:
            self._resume()

    def _build_router(self) -> TargetRouter:
        c = self.config
        pack = cache = surrogate = None
        fingerprint = self.labeller.fingerprint
        if "cache" in self.sources:
            if c.pack:
                from saliencyssl.augment.pack import load_pack

                pack = load_pack(c.pack, self.images.hashes, c.image_size, expect_fingerprint=fingerprint)
            elif c.cache:
                from saliencyssl.cache import TargetCache

                if "exact" not in self.sources and not TargetCache.exists(c.cache):
                    raise MissingPieceError(f"--cache {c.cache} is not a cache folder (no cache.db); fill it with: "
                                            f"python scripts/label.py {c.data} --cache {c.cache}")
                cache = TargetCache(c.cache, fingerprint, params=self.labeller.config.params())
                pack = FrozenPack.build(self.images.hashes, cache, c.image_size, progress=self.dist.is_main)
            if pack is not None:
                self._say(pack.report.line())
                pack = pack.to(self.device) if self.device.type == "cuda" else pack
        if "surrogate" in self.sources and c.surrogate:
            from saliencyssl.surrogate import Surrogate

            surrogate = Surrogate.load(c.surrogate, device=self.device, expect_fingerprint=fingerprint,
                                       expect_image_size=c.image_size)
        return TargetRouter(self.sources, c.image_size, pack=pack, surrogate=surrogate, labeller=self.labeller,
                            image_set=self.image_set, cache=cache, exact_workers=c.workers, data_hint=str(c.data),
                            cache_hint=str(c.cache) if c.cache else "CACHE_DIR")

    def _knn_sets(self, train: str, test: str) -> dict:
        sets = {}
        for name, path in (("train", train), ("test", test)):
            image_set = open_image_set(path)
            if not image_set.has_labels:
                raise ValueError(f"kNN monitoring needs labelled images (class sub-folders) in {path}")
            sets[name] = (TrainingImages(image_set, self.config.image_size).stack(), image_set.labels,
                          len(image_set.classes))
        return sets

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def _save_checkpoint(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "epoch": epoch,
            "config": {**asdict(self.config), "data": str(Path(self.config.data).resolve())},
            "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": _rng_state(), "history": [asdict(h) for h in self.history],
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)

    def _resume(self) -> None:
        path = self.checkpoint_path
        if not path.is_file():
            self._say(f"--resume: no checkpoint at {path}; starting from epoch 1")
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling errors have no common base class
            raise ValueError(f"{path} cannot be read as a pretraining checkpoint ({type(error).__name__}); it may be "
                             f"damaged or written by an older version: remove it to start again, or choose "
                             f"another --out") from error
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a saliency-ssl pretraining checkpoint; remove it or choose another --out")
        saved = state["config"]
        # Everything that shapes the run must be as it was: the restored optimiser and schedule would
        # override a new --lr, another --seed or --limit reorders the remaining batches, and
        # backbone.pt would record values the run did not use.
        keys = ["method", "image_size", "batch_size", "epochs", "lr", "seed", "limit", "data", "policy"]
        if self.sources != ("none",):  # where targets are read (none if neither the policy nor the method reads any)
            keys += ["aug_source", *LABELLER_OPTIONS]
        for key in keys:
            was, now = saved.get(key), getattr(self.config, key)
            if key == "data" and was is not None:
                was, now = str(Path(was).resolve()), str(Path(now).resolve())
            if key in saved and was != now:
                raise ValueError(f"{path} was written with --{key.replace('_', '-')} {saved.get(key)}, this run has "
                                 f"{getattr(self.config, key)}; resume with the same value or use another --out")
        from saliencyssl.ssl.registry import changed_method_options

        saved_options, options = saved.get("method_options") or {}, self.config.method_options or {}
        if changed_method_options(self.config.method, saved_options) != changed_method_options(self.config.method,
                                                                                               options):
            raise ValueError(f"{path} was written with --method-option {format_method_options(saved_options)}, this "
                             f"run has {format_method_options(options)}; resume with the same options or use another "
                             f"--out")
        try:
            self.method.load_state_dict(state["method"])
        except RuntimeError as error:
            raise ValueError(f"{path}: weights do not fit this {self.config.method} model: "
                             f"{str(error).splitlines()[0]}") from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = [EpochRecord(**h) for h in state["history"]]
        self.start_epoch = int(state["epoch"]) + 1
        if self.dist.enabled:
            # Only rank 0's generators were saved: give every process its own stream again.
            _seed_everything(self.config.seed + self.dist.rank + 7919 * self.start_epoch)
        else:
            _set_rng_state(state["rng"])
        self._say(f"resumed from {path} after epoch {self.start_epoch}")

    # -- training ----------------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously), so a clock read after it is honest."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This process's share of the epoch's permutation (same permutation on every process)."""
        n, world = len(self.images), self.dist.world_size
        g = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g)[: (n // world) * world]
        return perm[self.dist.rank::world]

    def batch_images(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 images at data-set positions ``index``, on the training device."""
        return self.stack.index_select(0, index.to(self.stack.device)).to(self.device, non_blocking=True)

    def make_views(self, index: torch.Tensor, images: torch.Tensor) -> tuple:
        """Two augmented views of a batch, drawn with the router's targets when the policy or the method reads them.

        Args:
            index: ``(B,)`` long data-set positions of the batch.
            images: ``(B, 3, S, S)`` uint8 images on the training device.

        Returns:
            ``(view_a, view_b)``, each ``(B, 3, S, S)`` float normalised; for a method that
            :attr:`~saliencyssl.ssl.method.SSLMethod.needs_targets`, ``(view_a, view_b, targets_a,
            targets_b)`` with each view's targets after that view's crop/flip/rotation
            (:class:`~saliencyssl.target.TargetBatch` of ``(B, 1, S, S)`` parts).
        """
        targets = self.router.targets(index, images) if self.router.enabled else None
        if not self.method_needs_targets:
            return self.augment(images, targets), self.augment(images, targets)
        view_a, warped_a = self.augment(images, targets, return_targets=True)
        view_b, warped_b = self.augment(images, targets, return_targets=True)
        return view_a, view_b, warped_a, warped_b

    def train_step(self, view_a: torch.Tensor, view_b: torch.Tensor, epoch: int, step: int,
                   targets_a: TargetBatch | None = None, targets_b: TargetBatch | None = None) -> float:
        """One optimisation step on a batch of two views (step ``step`` of epoch ``epoch``, both from 0).

        Forward under autocast when ``--amp`` (with each view's warped targets for a method that
        needs them, as :meth:`make_views` returns them), backward, the method's hooks, the
        optimizer and the schedule; returns the loss. A non-finite loss stops the run with what
        to change.
        """
        total_steps = self.config.epochs * self.steps_per_epoch
        self.method.before_step((epoch * self.steps_per_epoch + step) / max(total_steps - 1, 1), epoch)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.model(view_a, view_b, targets_a, targets_b)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.method.after_backward(epoch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        value = float(loss.detach())
        if not np.isfinite(value):
            raise FloatingPointError(f"loss became {value} at epoch {epoch + 1}, step {step + 1}; lower --lr "
                                     f"(now {self.optimizer.param_groups[0]['lr']:.4g}) or turn off --amp")
        return value

    def train_epoch(self, epoch: int) -> EpochRecord:
        c = self.config
        self.model.train()
        order = self._epoch_order(epoch)
        seconds = {"data": 0.0, "augmentation": 0.0, "compute": 0.0}
        loss_sum = lr_sum = 0.0
        steps = range(self.steps_per_epoch)
        bar = None
        if c.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(steps, desc=f"epoch {epoch + 1}/{c.epochs}", unit="step", leave=False)
            steps = bar
        epoch_start = time.perf_counter()
        for step in steps:
            t0 = time.perf_counter()
            index = order[step * self.local_batch:(step + 1) * self.local_batch]
            x = self.batch_images(index)
            self.synchronize()
            t1 = time.perf_counter()
            view_a, view_b, *warped = self.make_views(index, x)
            self.synchronize()
            t2 = time.perf_counter()
            lr_sum += self.optimizer.param_groups[0]["lr"]  # the rate this step uses
            value = self.train_step(view_a, view_b, epoch, step, *warped)
            loss_sum += value
            self.synchronize()
            t3 = time.perf_counter()
            seconds["data"] += t1 - t0
            seconds["augmentation"] += t2 - t1
            seconds["compute"] += t3 - t2
            if bar is not None:
                bar.set_postfix(loss=f"{value:.3f}")
        if bar is not None:
            bar.close()
        seconds["epoch"] = time.perf_counter() - epoch_start
        counters = self.router.reset_counters()
        record = EpochRecord(epoch=epoch + 1, loss=all_reduce_mean(loss_sum / self.steps_per_epoch, self.dist),
                             lr=lr_sum / self.steps_per_epoch, seconds=seconds,
                             router=counters.as_dict(), steps=self.steps_per_epoch)
        if self.knn is not None and ((epoch + 1) % max(c.knn_every, 1) == 0 or epoch + 1 == c.epochs):
            if self.dist.is_main:
                record.knn_accuracy = self.knn_accuracy()
            barrier(self.dist)
        return record

    @torch.no_grad()
    def knn_accuracy(self) -> float:
        """kNN top-1 accuracy of the current backbone on the --knn-train / --knn-test sets."""
        from saliencyssl.eval.features import extract_features
        from saliencyssl.eval.knn import knn_accuracy

        backbone = self.method.backbone
        was_training = backbone.training
        train_x, train_y, classes = self.knn["train"]
        test_x, test_y, _ = self.knn["test"]
        f_train = extract_features(backbone, train_x, device=self.device, progress=None)
        f_test = extract_features(backbone, test_x, device=self.device, progress=None)
        backbone.train(was_training)
        return knn_accuracy(f_train, train_y, f_test, test_y, classes)

    def _log(self, record: EpochRecord) -> None:
        if not self.dist.is_main:
            return
        parts = [f"epoch {record.epoch}/{self.config.epochs}", f"loss {record.loss:.4f}", f"lr {record.lr:.4g}",
                 f"{record.seconds['epoch']:.1f}s (data {record.seconds['data']:.1f}, augmentation "
                 f"{record.seconds['augmentation']:.1f}, compute {record.seconds['compute']:.1f})"]
        if record.knn_accuracy is not None:
            parts.append(f"kNN {record.knn_accuracy:.4f}")
        print(" | ".join(parts), flush=True)
        if self.router.enabled:
            from saliencyssl.augment import SourceCounters

            print(f"  router: {SourceCounters(**record.router).line()}", flush=True)
        if self.writer is not None:
            w, e = self.writer, record.epoch
            w.add_scalar("loss", record.loss, e)
            w.add_scalar("lr", record.lr, e)
            for key, value in record.seconds.items():
                w.add_scalar(f"seconds/{key}", value, e)
            for key in ("cache_hits", "surrogate_calls", "surrogate_images", "exact_calls", "exact_images"):
                w.add_scalar(f"router/{key}", record.router[key], e)
            for key, value in record.router["seconds"].items():
                w.add_scalar(f"router_seconds/{key}", value, e)
            if record.knn_accuracy is not None:
                w.add_scalar("knn_accuracy", record.knn_accuracy, e)
            w.flush()
        (self.out / "history.json").write_text(json.dumps([asdict(h) for h in self.history], indent=2))

    def run(self) -> PretrainResult:
        """Train the remaining epochs; write checkpoints, history and, at the end, ``backbone.pt``.

        Whatever happens (an error, Ctrl-C), the exact-labelling workers and the TensorBoard
        writer are closed; the last finished epoch's checkpoint stays for ``--resume``.
        """
        try:
            return self._run()
        finally:
            self.router.close()
            if self.writer is not None:
                self.writer.close()

    def _run(self) -> PretrainResult:
        c = self.config
        for epoch in range(self.start_epoch, c.epochs):
            record = self.train_epoch(epoch)
            self.history.append(record)
            self._log(record)
            self._save_checkpoint(epoch)
            barrier(self.dist)
        path = None
        if self.dist.is_main:
            path = save_backbone(self.out / "backbone.pt", self.method.backbone, {
                "cifar_stem": uses_cifar_stem(c.image_size), "image_size": c.image_size, "method": c.method,
                "policy": self.policy.name, "aug_source": ",".join(self.router.sources), "epochs": c.epochs,
                "batch_size": c.batch_size, "seed": c.seed, "lr": c.lr, "limit": c.limit,
                "data": str(Path(c.data).resolve()),
                "method_options": dict(c.method_options or {}), "method_hparams": dict(self.method.hparams),
                "labeller_fingerprint": self.labeller.fingerprint,
                "final_knn_accuracy": self.history[-1].knn_accuracy if self.history else None})
            print(f"wrote {path}", flush=True)
        return PretrainResult(path, self.history)


_PYTHON_SPELLINGS = {"None": "null", "True": "true", "False": "false"}


def parse_method_options(items: list[str] | None) -> dict[str, Any]:
    """``["momentum_start=0.9", "symmetric=false"]`` -> ``{"momentum_start": 0.9, "symmetric": False}``.

    Each value is read as JSON (numbers, ``true``/``false``, ``null``; Python's ``True``/``False``/``None``
    too), else kept as a string; the method checks names and values when it is built.

    Raises:
        ValueError: an item without ``=``, or a key given twice.
    """
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--method-option takes KEY=VALUE (e.g. momentum_start=0.9), got {item!r}")
        if key in options:
            raise ValueError(f"--method-option {key} is given twice")
        text = text.strip()
        try:
            options[key] = json.loads(_PYTHON_SPELLINGS.get(text, text))
        except ValueError:
            options[key] = text
    return options


def format_method_options(options: dict[str, Any] | None) -> str:
    """The options as ``--method-option`` would take them, or ``(none)``."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in sorted((options or {}).items())) or "(none)"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
