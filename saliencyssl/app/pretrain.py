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
  scaler, the buffers a method keeps outside its state dict (MoCo's queue) and every RNG state),
  so ``resume=True`` continues exactly where a run stopped in one process; under ``torchrun``
  only rank 0's generators are saved, and every process restarts its own from the seed and the
  epoch;
- at the end ``RUN_DIR/backbone.pt`` for the evaluation tools.

``RUN_DIR`` is a :class:`~saliencyssl.app.rundir.RunDir`: its ``run.json`` records the settings
that make the run (:func:`pretrain_settings`); a resume with other settings is refused naming
each difference, and the grid asks the same record whether a cell is done or stale.

Under ``torchrun`` each process takes its share of every epoch's permutation, the method
gathers what its loss needs across processes, and rank 0 alone writes files. On the CPU a
run is reproducible from its seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saliencyssl.app.options import (add_labeller_options, check_count, cpu_limit, fail, missing_piece_advice,
                                     one_line_errors)
from saliencyssl.app.rundir import RunDir, RunExistsError
from saliencyssl.augment import (PRESETS, SOURCE_ORDERS, FrozenPack, MissingPieceError, SSLAugmentation, TargetRouter,
                                 TrainingImages, parse_policy, parse_sources, policy_summary)
from saliencyssl.cache.packfile import PackError
from saliencyssl.datasets import check_image_size, open_image_set
from saliencyssl.files import replace_file, temporary_beside
from saliencyssl.precision import autocast_dtype
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.saliency.params import LABELLER_OPTIONS
from saliencyssl.ssl.backbone import resnet18_backbone, save_backbone, uses_cifar_stem
from saliencyssl.ssl.distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed
from saliencyssl.ssl.registry import METHODS
from saliencyssl.target import TargetBatch
from saliencyssl.text import short_repr
from saliencyssl.torchfiles import UnsafeTorchFileError, load_torch_file

log = logging.getLogger(__name__)

SUMMARY = "self-supervised pretraining of a ResNet-18 (SimCLR, BYOL, DetCon, ...) with the views of a policy"

CHECKPOINT_FORMAT = "saliency-ssl-pretrain-1"
#: The largest global batch (the recipes use 128 to 4096).
MAX_BATCH_SIZE = 65_536
#: The largest seed: every RNG the run seeds (Python's, numpy's, torch's) takes it as it is.
MAX_SEED = 2 ** 32 - 1


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (``saliency-ssl pretrain``'s options), checked when built.

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
    pack_verified: bool = False

    def __post_init__(self) -> None:
        import math

        from saliencyssl.ssl.method import MAX_EPOCHS, MAX_LR
        from saliencyssl.ssl.registry import check_method_options, method_class

        check_count("--epochs", self.epochs, 1, MAX_EPOCHS)
        check_image_size(self.image_size, "--image-size")
        check_count("--batch-size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.batch_size < 2:
            raise ValueError(f"--batch-size {self.batch_size}: every method compares the images of a batch; give 2 "
                             f"or more")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ValueError(f"--limit {self.limit!r}: give at least 1 image (or leave it out for all)")
        check_count("--workers", self.workers, 0, cpu_limit())
        check_count("--knn-every", self.knn_every, 1, MAX_EPOCHS)
        check_count("--seed", self.seed, 0, MAX_SEED)
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not math.isfinite(self.lr) or not 0 < self.lr <= MAX_LR):
            raise ValueError(f"--lr {self.lr!r}: give a finite peak learning rate above 0 and at most {MAX_LR:g} "
                             f"(the recipes use 1e-3 to 0.5), or leave it out for the method's recipe")
        if bool(self.knn_train) != bool(self.knn_test):
            raise ValueError("kNN monitoring needs both --knn-train and --knn-test")
        method_class(self.method)  # an unknown method, named with the choices
        check_method_options(self.method, dict(self.method_options or {}))
        self.policy_config = parse_policy(self.policy)
        self.sources = parse_sources(self.aug_source)
        self.labeller_config()  # a bad labeller option

    def labeller_config(self) -> LabellerConfig:
        return LabellerConfig(**{name: getattr(self, name) for name in LABELLER_OPTIONS})

    @property
    def reads_targets(self) -> bool:
        """The policy draws views from targets, or the method pools its loss over them (DetCon)."""
        from saliencyssl.ssl.registry import method_class

        return self.policy_config.uses_targets or method_class(self.method).needs_targets


def pretrain_settings(config: PretrainConfig) -> tuple[dict, dict]:
    """``(settings, free)`` of a run for its :class:`~saliencyssl.app.rundir.RunDir`.

    Settings make the run what it is (a resume with another value would train another network):
    method and its changed options, policy, data folder, image size, batch, epochs, rate, seed,
    limit and, where targets are read, where they come from and the labeller's fingerprint. Free
    values (device, precision, workers, kNN monitoring, where the cache or surrogate lies) may
    change when a run resumes.
    """
    from saliencyssl.ssl.registry import changed_method_options

    settings = {"method": config.method, "policy": config.policy, "data": str(Path(config.data).resolve()),
                "image_size": config.image_size, "batch_size": config.batch_size, "epochs": config.epochs,
                "lr": config.lr, "seed": config.seed, "limit": config.limit,
                "method_options": changed_method_options(config.method, config.method_options)}
    if config.reads_targets and config.sources != ("none",):
        settings["aug_source"] = ",".join(config.sources)
        settings["labeller_fingerprint"] = config.labeller_config().fingerprint()
    free = {"device": config.device, "amp": config.amp, "workers": config.workers, "cache": config.cache,
            "pack": config.pack, "surrogate": config.surrogate, "knn_every": config.knn_every}
    return settings, free


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

    Example (two steps of SimCLR on eight generated images of 32 px):
        >>> import tempfile
        >>> from saliencyssl.embedded import write_embedded_dataset
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = write_embedded_dataset(root / "data", per_class_train=2, per_class_test=1, size=32, photos=False)
        >>> trainer = Pretrainer(PretrainConfig(data=str(root / "data" / "train"), out=str(root / "run"),
        ...                                     method="simclr", policy="default", aug_source="none", epochs=1,
        ...                                     batch_size=4, progress=False, tensorboard=False))  # doctest: +ELLIPSIS
        data: ... images ...
        >>> result = trainer.run()  # doctest: +ELLIPSIS
        epoch 1/1 | loss ...
        >>> result.backbone_path.name
        'backbone.pt'
    """

    def __init__(self, config: PretrainConfig, dist_info: DistInfo | None = None):
        self.config = config
        self.dist = dist_info or init_distributed(config.device)
        try:
            self.device = self.dist.device
            self.out = Path(config.out)
            self.run_dir = RunDir(self.out, "pretrain")
            settings, free = pretrain_settings(config)
            # A resume with other settings (or a new run into a used folder) is refused before any work;
            # the record is written once the run's pieces are all there, before any other file.
            self.run_state = self.run_dir.check(settings, resume=config.resume)
            self.history: list[EpochRecord] = []
            self.start_epoch = 0
            self._setup()
            if self.dist.is_main:
                self.run_dir.start(settings, free, resume=config.resume)
            barrier(self.dist)
            self._open_outputs()
        except BaseException:
            if getattr(self, "router", None) is not None:
                self.router.close()
            if dist_info is None:  # the process group this run started is left, as run() leaves it
                cleanup(self.dist)
            raise

    # -- setup ------------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    def _setup(self) -> None:
        c = self.config
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
                    f"the cache with: saliency-ssl label {c.data} --cache CACHE_DIR), cache,surrogate or "
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

        if self.run_state.status != "new" and self.checkpoint_path.is_file():
            self._resume()

    def _open_outputs(self) -> None:
        """The TensorBoard writer (rank 0), once the run record is written."""
        self.writer = None
        if self.dist.is_main and self.config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))

    def _build_router(self) -> TargetRouter:
        c = self.config
        pack = cache = surrogate = None
        fingerprint = self.labeller.fingerprint
        if "cache" in self.sources:
            if c.pack:
                from saliencyssl.augment.pack import load_pack

                pack = load_pack(c.pack, self.images.hashes, c.image_size, expect_fingerprint=fingerprint,
                                 verify=not c.pack_verified)
            elif c.cache:
                from saliencyssl.cache import TargetCache

                if "exact" not in self.sources and not TargetCache.exists(c.cache):
                    raise MissingPieceError(f"--cache {c.cache} is not a cache folder (no cache.db); fill it with: "
                                            f"saliency-ssl label {c.data} --cache {c.cache}")
                cache = TargetCache(c.cache, fingerprint, params=self.labeller.config.params())
        try:
            if cache is not None:
                pack = FrozenPack.build(self.images.hashes, cache, c.image_size, progress=self.dist.is_main)
            if pack is not None:
                self._say(pack.report.line())
                pack = pack.to(self.device) if self.device.type == "cuda" else pack
            if "surrogate" in self.sources and c.surrogate:
                from saliencyssl.surrogate import Surrogate

                surrogate = Surrogate.load(c.surrogate, device=self.device, expect_fingerprint=fingerprint,
                                           expect_image_size=c.image_size)
        except BaseException:
            if cache is not None:  # the router that would close it is not built
                cache.close()
            raise
        return TargetRouter(self.sources, c.image_size, pack=pack, surrogate=surrogate, labeller=self.labeller,
                            image_set=self.image_set, cache=cache, exact_workers=c.workers)

    def _knn_sets(self, train: str, test: str) -> dict:
        """The kNN monitor's labelled sets, refused (as ``saliency-ssl evaluate`` refuses them) when their classes
        differ or the test set is not held out."""
        from saliencyssl.eval.classification import require_held_out, require_same_labels

        opened = {}
        for name, path in (("train", train), ("test", test)):
            opened[name] = open_image_set(path)
            if not opened[name].has_labels:  # before require_same_labels, whose hint is evaluate's
                raise ValueError(f"kNN monitoring needs labelled images (class sub-folders) in {path}")
        require_same_labels(opened["train"], train, opened["test"], test, ["knn"])
        require_held_out(opened["train"], train, opened["test"], test)
        return {name: (TrainingImages(image_set, self.config.image_size).stack(), image_set.labels,
                       len(image_set.classes)) for name, image_set in opened.items()}

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
            "buffers": {name: buffer.detach().cpu() for name, buffer in _unsaved_buffers(self.method).items()},
            "rng": _rng_state(), "history": [asdict(h) for h in self.history],
        }
        with temporary_beside(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def _resume(self) -> None:
        """Restore the checkpoint of a run whose settings the run record found equal to this one's."""
        path = self.checkpoint_path
        try:
            state = load_torch_file(path, "cpu")
        except UnsafeTorchFileError as error:
            raise ValueError(f"{path} cannot be read as a pretraining checkpoint: {error}; remove it to start again, "
                             f"or choose another --out") from None
        except Exception as error:  # unpickling errors have no common base class
            raise ValueError(f"{path} cannot be read as a pretraining checkpoint ({type(error).__name__}); it may be "
                             f"damaged or written by an older version: remove it to start again, or choose "
                             f"another --out") from error
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a saliency-ssl pretraining checkpoint; remove it or choose another --out")
        try:
            self.method.load_state_dict(state["method"])
        except RuntimeError as error:
            raise ValueError(f"{path}: weights do not fit this {self.config.method} model: "
                             f"{str(error).splitlines()[0]}") from error
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: its saved model is damaged ({type(error).__name__}); remove it to start again, "
                             f"or choose another --out") from None
        try:
            epoch = state["epoch"]
            if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < self.config.epochs:
                raise ValueError(f"epoch {str(epoch)[:20]} is not one of this run's {self.config.epochs}")
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:  # empty when the run was not --amp on CUDA: a scaler switched on since starts afresh
                self.scaler.load_state_dict(state["scaler"])
            buffers = _unsaved_buffers(self.method)
            for name, value in state.get("buffers", {}).items():  # absent from checkpoints of older versions
                if name not in buffers or buffers[name].shape != value.shape:
                    raise ValueError(f"its saved buffer {str(name)[:40]} does not fit this {self.config.method} model")
                buffers[name].copy_(value)
            self.history = [EpochRecord(**h) for h in state["history"]]
            _set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as error:
            raise ValueError(f"{path}: its saved training state is damaged ({type(error).__name__}: "
                             f"{str(error)[:120]}); remove it to start again, or choose another --out") from None
        self.start_epoch = epoch + 1
        if self.dist.enabled:
            # Only rank 0's generators were saved (and restored above): give every process its own stream again.
            _seed_everything(self.config.seed + self.dist.rank + 7919 * self.start_epoch)
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
        replace_file(self.out / "history.json", json.dumps([asdict(h) for h in self.history], indent=2))

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
            self.run_dir.finish(backbone=path.name, epochs=len(self.history),
                                final_loss=self.history[-1].loss if self.history else None,
                                final_knn_accuracy=self.history[-1].knn_accuracy if self.history else None)
            print(f"wrote {path}", flush=True)
        return PretrainResult(path, self.history)


_PYTHON_SPELLINGS = {"None": "null", "True": "true", "False": "false"}


def run(config: PretrainConfig, dist_info: DistInfo | None = None) -> PretrainResult:
    """Pretrain as ``config`` says (a :class:`Pretrainer`), leaving the process group (under torchrun) at the end."""
    trainer = Pretrainer(config, dist_info)
    try:
        return trainer.run()
    finally:
        cleanup(trainer.dist)


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
            raise ValueError(f"--method-option takes KEY=VALUE (e.g. momentum_start=0.9), got {short_repr(item)}")
        if key in options:
            raise ValueError(f"--method-option {short_repr(key)} is given twice")
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


def _unsaved_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers ``module`` keeps out of its state dict, which a checkpoint must hold too: lightly registers MoCo's
    queue of negatives (``memory_bank.bank``, ``bank_ptr``) with ``persistent=False``, so a resumed run would score
    its next batches against a fresh random queue."""
    saved = module.state_dict().keys()
    return {name: buffer for name, buffer in module.named_buffers() if name not in saved}


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
    if "cuda" in state and torch.cuda.is_available():  # as many GPUs as both the run and this process see
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


# -- the command line -------------------------------------------------------------------------
CLI_DOC = """Contrastive self-supervised pretraining of a ResNet-18 with saliency views.

Each step takes a batch of images, gets their targets from --aug-source (the cache, the
surrogate, or the exact labeller; see below), renders the saliency view and applies the
--policy's Kornia augmentations twice, and trains the --method. At the end RUN_DIR/backbone.pt
holds the backbone for saliency-ssl evaluate.

--aug-source:
  none              no targets (use with a policy without 'sal', e.g. default, and a method other than detcon-*)
  cache             targets from --cache (fill it first: saliency-ssl label DATA --cache CACHE)
  cache,surrogate   cached targets; misses predicted by --surrogate in one batched call
  cache,exact       cached targets; misses labelled exactly and written back to the cache
  surrogate         every target from --surrogate
  exact             every target labelled on the fly (the paper's slow baseline)
--policy: default, salcrop+default, comp0.3+default, sal, sal+default, sal0.5+default, sal+jitter, sal0.5+jitter,
  sal0.8+jitter0.8,
  or free probabilities such as "sal0.3+default,vflip=0.5,view=cut".
--method detcon-simclr / detcon-byol (DetCon, Henaff et al. 2021) pool the loss over each view's RC regions
  (method option masks=foreground: the SaliencyCut mask and its background), warped with the view's crop
  and flips: they read targets from --aug-source whatever the policy, so --aug-source none is refused.
--method-option KEY=VALUE (repeatable) replaces one of the method's defaults (lightly's CIFAR-10 recipe):
{method_defaults}

Examples:
  saliency-ssl pretrain --data runs/quickstart/data/train --method simclr --aug-source cache,surrogate \\
      --policy sal+default --cache runs/quickstart/cache --surrogate runs/quickstart/surrogate/surrogate.pt \\
      --epochs 20 --batch-size 64 --image-size 64 --out runs/simclr
  saliency-ssl pretrain --data ../shared/data/cifar10/train --method byol --aug-source cache,surrogate \\
      --policy sal+default --cache runs/cache --surrogate runs/surrogate/surrogate.pt --epochs 200 \\
      --device cuda --amp --knn-train ../shared/data/cifar10/train --knn-test ../shared/data/cifar10/test --out runs/byol
  saliency-ssl pretrain --data ../shared/data/cifar10/train --method detcon-simclr --aug-source cache \\
      --policy default --cache runs/cache --epochs 200 --device cuda --out runs/detcon-simclr
  torchrun --nproc_per_node 4 -m saliencyssl pretrain ... --device cuda       (DDP, one process per GPU)
"""


def _method_defaults() -> str:
    lines = []
    for name in sorted(METHODS):
        hparams = {k: v for k, v in METHODS[name].default_hparams().items() if k != "feature_dim"}
        lines.append(f"  {name + ':':15} " + ", ".join(f"{k}={json.dumps(v)}" for k, v in hparams.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saliency-ssl pretrain",
                                description=CLI_DOC.replace("{method_defaults}", _method_defaults()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image folder (class sub-folders optional) or CIFAR-10 python batches")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="SSL method (lightly's losses and heads)")
    p.add_argument("--aug-source", default="cache", choices=SOURCE_ORDERS, metavar="SOURCES",
                   help=f"where targets come from: {' | '.join(SOURCE_ORDERS)} (see above; default %(default)s)")
    p.add_argument("--policy", default="sal+default", help=f"augmentation policy: {', '.join(PRESETS)} or free (default %(default)s)")
    p.add_argument("--cache", help="target cache folder (from saliency-ssl label)")
    p.add_argument("--pack", help="portable pack file (saliency-ssl cache export) instead of --cache; its checksum is verified first")
    p.add_argument("--surrogate", help="surrogate checkpoint (RUN_DIR/surrogate.pt from saliency-ssl train-surrogate)")
    p.add_argument("--epochs", type=int, required=True, help="passes over the data (the cosine schedule spans them)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size, split over torchrun processes (default %(default)s)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, tb/, backbone.pt")
    p.add_argument("--image-size", type=int, default=32, help="training side length; <= 64 uses the CIFAR stem (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where to train (default %(default)s); under torchrun each process takes its local GPU")
    p.add_argument("--amp", action="store_true",
                   help="reduced precision: fp16 autocast with a grad scaler on CUDA (fine on old GPUs); bf16 "
                        "autocast on a CPU with native bf16 (AVX512-BF16/AMX: about 2x faster steps), float32 on "
                        "other CPUs")
    p.add_argument("--workers", type=int, default=0, help="processes for exact labelling with --aug-source exact or cache,exact (default %(default)s: in this process)")
    p.add_argument("--knn-train", help="labelled folder: kNN bank for monitoring")
    p.add_argument("--knn-test", help="labelled folder: kNN queries for monitoring")
    p.add_argument("--knn-every", type=int, default=1, help="epochs between kNN evaluations (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds weights, batch order and augmentations; a CPU run is reproducible from it (default %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the method's recipe)")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="replace one of the method's hyperparameters, e.g. momentum_start=0.9 for BYOL (repeatable; "
                        "the names and defaults are listed above); recorded in backbone.pt")
    p.add_argument("--limit", type=int, default=None, help="use N images evenly spaced through the set (keeps every class)")
    add_labeller_options(p)
    p.add_argument("--pack-verified", action="store_true",
                   help="skip the --pack checksum (only for a pack verified just before, e.g. by saliency-ssl cache "
                        "verify)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = PretrainConfig(
            data=args.data, out=args.out, method=args.method, aug_source=args.aug_source, policy=args.policy,
            epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size, cache=args.cache,
            pack=args.pack, surrogate=args.surrogate, device=args.device, amp=args.amp, workers=args.workers,
            knn_train=args.knn_train, knn_test=args.knn_test, knn_every=args.knn_every, resume=args.resume,
            seed=args.seed, lr=args.lr, method_options=parse_method_options(args.method_option), scale=args.scale,
            max_side=args.max_side, min_side=args.min_side, cut_engine=args.cut_engine, limit=args.limit,
            progress=not args.quiet, pack_verified=args.pack_verified)
        trainer = Pretrainer(config)
    except RunExistsError as error:
        return fail(f"{error}: pass --resume to continue it, choose another --out, or delete the folder to start "
                    f"again" if "already holds" in str(error) else str(error))
    except MissingPieceError as error:
        return fail(f"{error}; {missing_piece_advice(error, config.data, config.cache, config.labeller_config(), config.image_size)}")
    except (OSError, ValueError, PackError) as error:  # OSError: a cache.db that cannot be opened
        return fail(error)
    from saliencyssl.cache.executors import WorkerDiedError
    from saliencyssl.cache.labelling import ImageTimeoutError
    from saliencyssl.saliency import ImageTooLargeError

    try:
        trainer.run()
    except (ImageTooLargeError, ImageTimeoutError, WorkerDiedError, MissingPieceError, FloatingPointError,
            OSError) as error:
        return fail(f"{error}; the last finished epoch is kept in {config.out}: fix it, then rerun with --resume")
    except KeyboardInterrupt:
        return fail(f"interrupted; the last finished epoch is kept in {config.out}: rerun with --resume", 130)
    finally:
        cleanup(trainer.dist)
    return 0



if __name__ == "__main__":
    sys.exit(main())
