"""Train the Pix2Pix surrogate that predicts exact SaliencyCut targets (RC map, cut mask, region boundary).

Reads the images below IMAGES_DIR, pairs each with its exact target from the cache that
``saliency-ssl label`` filled (by content hash; the labeller fingerprint is taken from the cache),
holds out a share of the images by content hash, trains, and writes RUN_DIR/surrogate.pt. The
work itself lives in :mod:`saliencyssl.surrogate` (pairs, variants, training, model).

With ``--variants K`` (default 0: none) every *training* photo also gives K
variants, random crops, rescales and mirrors of it at the training size, written to
``RUN_DIR/variants/`` and labelled into the same cache by the cache's labeller in worker
processes (:mod:`saliencyssl.surrogate.variants`); the held-out photos give none.

The run folder is a :class:`~saliencyssl.app.rundir.RunDir`: its ``run.json`` records the settings
that make the run what it is (:func:`surrogate_settings`); a folder that holds a run is refused
unless ``--resume`` is given, and a resume with other settings is refused naming each difference.
Budgets (``--epochs``, ``--max-minutes``, ``--max-steps``), ``--select``, ``--amp``, the device and
the threads may change when a run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from saliencyssl.app.options import (add_labeller_options, check_count, cpu_limit, fail, label_command,
                                     labeller_config_from_args, one_line_errors)
from saliencyssl.app.rundir import RunDir, RunExistsError, RunMismatchError, RunRecordError
from saliencyssl.cache.executors import WorkerDiedError
from saliencyssl.files import replace_file
from saliencyssl.saliency import LabellerConfig
from saliencyssl.surrogate.losses import GAN_MODES, LossWeights
from saliencyssl.surrogate.model import SurrogateCheckpointError
from saliencyssl.surrogate.pairs import NoPairsError, describe_misses, load_pairs
from saliencyssl.surrogate.training import TrainConfig, TrainConfigError, TrainResult, resolve_device, usable_devices
from saliencyssl.surrogate.variants import MAX_VARIANTS, VariantSpec

SUMMARY = "the Pix2Pix surrogate of the exact labeller, trained on cached targets"

#: The stage's name, as run folders record it.
STAGE = "train-surrogate"

#: Fewer held-out images than this make choosing the best epoch on them a coin toss (a note says so).
SMALL_HELD_OUT = 50

#: The flag that sets each :class:`TrainConfig` field (for its errors).
FLAGS = {"image_size": "--size", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
         "decay_start": "--decay-start", "max_minutes": "--max-minutes", "max_steps": "--max-steps",
         "held_out": "--held-out", "gan_mode": "--gan-mode", "ngf": "--ngf", "ndf": "--ndf", "head": "--head",
         "dropout_blocks": "--dropout-blocks", "select": "--select", "eval_steps": "--eval-steps",
         "weights.gan": "--lambda-gan", "weights.l1": "--lambda-l1", "weights.mask": "--lambda-mask",
         "weights.boundary": "--lambda-boundary", "weights.boundary_pos_weight": "--boundary-pos-weight"}


def config_error(error: TrainConfigError) -> str:
    """A :class:`TrainConfigError` as the flag that set the value: ``--batch-size 0: give 1 or more``."""
    flag = FLAGS.get(error.field)
    return f"{flag} {error.value}: {error.need}" if flag else str(error)


@dataclass
class TrainSurrogateConfig:
    """A surrogate training run (``saliency-ssl train-surrogate``'s options), checked when built.

    Attributes:
        images: image folder (class sub-folders allowed) or CIFAR-10 python batches.
        cache: the target cache the images were labelled into.
        out: the run folder.
        train: the trainer's options (:class:`~saliencyssl.surrogate.training.TrainConfig`).
        labeller: explicit labeller options selecting the cache's fingerprint (``None``: the
            fingerprint of the current labeller version covering the most images).
        limit: use N images, chosen by content hash, before the held-out split.
        variants: variants per training photo (0: none).
        workers: processes that label the variants (``None``: one per CPU; 0: this process).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (``None``: torch's choice).
        resume: continue the run the folder holds.
        progress: show progress bars.
        tensorboard: write TensorBoard events.
        command: the command line, recorded in the checkpoints.
    """

    images: Path
    cache: Path
    out: Path
    train: TrainConfig = field(default_factory=TrainConfig)
    labeller: LabellerConfig | None = None
    limit: int | None = None
    variants: int = 0
    workers: int | None = None
    device: str = "cpu"
    threads: int | None = None
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images, self.cache, self.out = Path(self.images), Path(self.cache), Path(self.out)
        try:
            resolve_device(self.device)
        except ValueError:
            choices = usable_devices()
            options = ("cpu (torch sees no CUDA device here)" if choices == ["cpu"]
                       else "one of " + ", ".join(choices))
            raise ValueError(f"--device {self.device}: torch cannot train on it here; choose {options}") from None
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: give at least 1 image (or leave it out for all)")
        check_count("--variants", self.variants, 0, MAX_VARIANTS)
        check_count("--workers", self.workers, 0, cpu_limit())
        check_count("--threads", self.threads, 1, cpu_limit())
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give the run folder to write (created if missing)")


def surrogate_settings(config: TrainSurrogateConfig, fingerprint: str,
                       variants: VariantSpec | None = None) -> tuple[dict, dict]:
    """``(settings, free)`` of a run for its :class:`~saliencyssl.app.rundir.RunDir`.

    Settings change the training trajectory, so a resume must keep them: the data (folder
    resolved, limit, held-out share, image size, labeller fingerprint, the variants' spec when
    there are variants), the optimiser (batch size, rate, beta1, decay start), the augmentation
    (mirrors, turns), the seed, the loss (weights, GAN mode) and the architecture. Free values may
    change: the budgets (epochs, minutes, steps), which generator is kept, precision, device,
    threads, labelling workers, evaluation interval, where the cache lies. A run without variants
    records no ``variants`` key, so its record reads as those of runs made before variants existed.
    """
    t, w = config.train, config.train.weights
    arch = t.architecture()
    settings = {"data": str(config.images.resolve()), "limit": config.limit, "held_out": t.held_out,
                "image_size": t.image_size, "labeller_fingerprint": fingerprint, "batch_size": t.batch_size,
                "lr": t.lr, "beta1": t.beta1, "decay_start": t.decay_start, "flip": t.flip, "rotate": t.rotate,
                "seed": t.seed, "gan_mode": t.gan_mode, "lambda_gan": w.gan, "lambda_l1": w.l1, "lambda_mask": w.mask,
                "lambda_boundary": w.boundary, "boundary_pos_weight": w.boundary_pos_weight, "ngf": arch.ngf,
                "max_mult": arch.max_mult, "ndf": arch.ndf, "head": arch.head, "dropout_blocks": arch.dropout_blocks}
    if variants is not None and variants.count > 0:
        settings["variants"] = variants.settings()
    free = {"epochs": t.epochs, "max_minutes": t.max_minutes, "max_steps": t.max_steps, "select": t.select,
            "amp": t.amp, "device": config.device, "threads": config.threads, "eval_steps": t.eval_steps,
            "cache": str(config.cache), "workers": config.workers}
    return settings, free


def run(config: TrainSurrogateConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Read the pairs, train (or resume), write ``surrogate.pt`` and ``heldout_fidelity.json``.

    Raises:
        RunExistsError: the folder holds a run (or other files) and ``resume`` is off.
        RunMismatchError: ``resume`` and the folder's run was made with other settings.
        NoPairsError: no image has a target in the cache (it carries what labelling needs).
        SurrogateCheckpointError: the folder's ``last.pt`` does not fit this run.
        FileNotFoundError, ValueError, OSError: no images, a damaged cache, an empty training split.
    """
    import torch

    from saliencyssl.datasets import open_image_set
    from saliencyssl.surrogate.training import SurrogateTrainer
    from saliencyssl.surrogate.variants import make_variants

    t = config.train
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = RunDir(config.out, STAGE)
    if not config.resume:
        run_dir.check({}, resume=False)  # a run (or other files) there: refused before the pairs are read
    start = time.perf_counter()
    image_set = open_image_set(config.images)
    pairs = load_pairs(config.images, config.cache, t.image_size, config=config.labeller, limit=config.limit,
                       progress=config.progress, image_set=image_set)
    for line in describe_misses(pairs):
        print(line, file=sys.stderr)
    if pairs.misses:
        print(f"label them with: {label_command(config.images, config.cache, pairs.labeller_params)}",
              file=sys.stderr)
    spec = VariantSpec(count=config.variants) if config.variants > 0 else None
    settings, free = surrogate_settings(config, pairs.fingerprint, spec)
    state = run_dir.check(settings, resume=config.resume)  # a resume with other settings: refused here
    train, held = pairs.split(t.held_out)
    n_present = int(train.targets.mask.flatten(1).any(1).sum())
    log(f"labeller {pairs.fingerprint}: {len(pairs)} pairs at {t.image_size}px in {time.perf_counter() - start:.1f}s "
        f"-> {len(train)} training ({n_present / max(1, len(train)):.0%} with a mask), {len(held)} held out")
    started = False
    n_variants = 0
    if spec is not None and len(train):
        # The variants are written into the run folder: record the run first, so that a run stopped while
        # labelling them is a run (resumed with --resume) and not a folder of unknown files.
        run_dir.start(settings, free, resume=config.resume)
        started = True
        variant_pairs, _ = make_variants(image_set, train, config.cache, run_dir / "variants", spec,
                                         workers=config.workers, progress=config.progress, log=log)
        n_variants = len(variant_pairs)
        train = train.concat(variant_pairs)
        log(f"training on {len(train)} pairs: {len(train) - n_variants} photos and {n_variants} variants of them")
    if 0 < len(held) < SMALL_HELD_OUT and t.select == "best":
        print(f"note: the best epoch is chosen on {len(held)} held-out images, a noisy choice; with few images "
              f"a larger --held-out (e.g. 0.2) or --select last is steadier", file=sys.stderr)
    run_info = {"images_dir": str(config.images), "cache_dir": str(config.cache), "limit": config.limit,
                "argv": list(config.command), "variants": spec.count if spec is not None else 0,
                "n_variant_pairs": n_variants}
    trainer = SurrogateTrainer(t, train, held, config.out, device=config.device, progress=config.progress, log=log,
                               tensorboard=config.tensorboard, run_info=run_info)
    if state.status != "new":
        if (run_dir / "last.pt").is_file():
            trainer.resume()
        else:
            log(f"note: the run in {config.out} stopped before its first checkpoint; starting it afresh")
    if not started:
        run_dir.start(settings, free, resume=config.resume)
    log(f"training on {trainer.device}: {trainer.steps_per_epoch} steps per epoch of {t.batch_size}, "
        f"U-Net depth {trainer.arch.depth}, ngf {trainer.arch.ngf}; TensorBoard: tensorboard --logdir {config.out}")
    result = trainer.fit()
    extra = result.selected_step - result.selected_epoch * trainer.steps_per_epoch  # a budget's partial epoch
    selected = f"epoch {result.selected_epoch}" + (f" + {extra} steps" if extra > 0 else "")
    log(f"wrote {result.surrogate_path} after {result.epochs_done} epochs, {result.steps} steps, "
        f"{result.seconds / 60:.1f} min (stopped by {result.stopped_by}); it holds the generator of {selected} "
        f"({t.select})")
    if result.held_out is not None:
        from saliencyssl.surrogate.evaluation import format_report

        log(f"held-out fidelity of epoch {result.selected_epoch}:")
        log("\n".join(format_report(result.held_out)))
        replace_file(run_dir / "heldout_fidelity.json", json.dumps(result.held_out, indent=2))
    run_dir.finish(surrogate=result.surrogate_path.name, epochs=result.epochs_done, steps=result.steps,
                   minutes=round(result.seconds / 60, 3), stopped_by=result.stopped_by,
                   selected_epoch=result.selected_epoch, selected_step=result.selected_step)
    return result


DESCRIPTION = """\
Train the Pix2Pix surrogate that predicts exact SaliencyCut targets (RC map, cut mask, region boundary).

Reads the images below IMAGES_DIR, pairs each with its exact target from the cache that
saliency-ssl label filled (by content hash; the labeller fingerprint is taken from the cache),
holds out a share of the images by content hash, trains, and writes RUN_DIR/surrogate.pt."""

EPILOG = """\
examples:
  # label CIFAR-10 once, then train on 5,000 of its images for 30 CPU minutes
  saliency-ssl label ../shared/data/cifar10/train --cache runs/cache --workers 2
  saliency-ssl train-surrogate ../shared/data/cifar10/train --cache runs/cache --out runs/sur32 \\
      --limit 5000 --max-minutes 30

  # equal budgets in optimiser steps, e.g. for runs on sets of different sizes or machines
  saliency-ssl train-surrogate ../shared/data/cifar10/train --cache runs/cache --out runs/sur32_10k \\
      --limit 10000 --max-steps 20000

  # a GPU run on every image, fp16 autocast, larger batches
  saliency-ssl train-surrogate ../shared/data/cifar10/train --cache runs/cache --out runs/sur32_gpu \\
      --device cuda --amp --batch-size 256 --ngf 32 --held-out 0.1 --max-minutes 5

  # photos at 96 px (label at a capped size first), then continue it after an interruption
  saliency-ssl label ../shared/data/bsds500_test/images --cache runs/cache_photos --max-side 200
  saliency-ssl train-surrogate ../shared/data/bsds500_test/images --cache runs/cache_photos \\
      --out runs/sur96 --size 96 --max-minutes 10
  saliency-ssl train-surrogate ../shared/data/bsds500_test/images --cache runs/cache_photos \\
      --out runs/sur96 --size 96 --max-minutes 20 --resume

labeller: the cache may hold targets of several labellers (fingerprints); the one covering the most
images is used. --scale/--max-side/--min-side/--cut-engine (as given to saliency-ssl label) pick one
explicitly. Images without a target are listed with the saliency-ssl label command that fills them.

variants: for photos larger than the training size, --variants K multiplies the exact pairs: each
training photo gives K crops, rescales and mirrors of itself at --size, labelled as images of their
own (in --workers processes, once: they are content-hashed into the cache) and written to
RUN_DIR/variants/ with variants.json (source photo, box, mirror of each). The held-out photos give
none, so the epoch is still chosen on photos the network never saw in any form. At a 15-minute
budget on 1,295 photos, 8 variants lowered the saliency MAE but not the F-measure against human
masks (docs/findings.md); the default is none.

outputs (in --out): surrogate.pt (load with saliencyssl.surrogate.Surrogate.load), best.pt (the best
held-out evaluation so far), last.pt (for --resume), run.json (the run's settings), history.json,
heldout_fidelity.json (the selected generator's held-out figures), tensorboard/ (tensorboard --logdir
RUN_DIR). --max-minutes and --max-steps are budgets of the whole run, resumptions included; the
learning rate decays over the nearest of them and --epochs.

resume: --resume continues the run in --out from its last.pt; it may change --epochs, --max-minutes,
--max-steps, --select, --eval-steps, --amp, --device, --threads and --workers, and refuses any other option
that differs from the run's record (run.json), naming each.
"""


def _pos_weight(text: str) -> float | None:
    """``--boundary-pos-weight``: ``balanced`` (None) or a non-negative number."""
    if text.strip().lower() == "balanced":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'balanced', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (or 'balanced'), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.surrogate.networks import Architecture

    d, w = TrainConfig(), LossWeights()
    p = argparse.ArgumentParser(prog="saliency-ssl train-surrogate", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, metavar="IMAGES_DIR",
                   help="image folder (class sub-folders allowed) or CIFAR-10 python batches")
    p.add_argument("--cache", type=Path, required=True, metavar="CACHE_DIR",
                   help="target cache filled by saliency-ssl label for these images")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (created)")
    p.add_argument("--size", type=int, default=d.image_size, metavar="S",
                   help="side the images and targets are brought to (shorter side resized, centre crop); a "
                        "multiple of 8: 32, 64, 96, 128, 256 ... (default %(default)s)")
    budget = p.add_argument_group("budget (may change on --resume; the learning rate decays over the nearest)")
    budget.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="passes over the training split (default: 100, or as many as a budget allows)")
    budget.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="stop cleanly after M minutes of wall time (resumptions included) and still write "
                             "surrogate.pt")
    budget.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop cleanly after N optimiser steps (resumptions included) and still write "
                             "surrogate.pt: equal step budgets for runs on different sets or machines")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B", help="default %(default)s")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N where torch sees a GPU (default %(default)s)")
    p.add_argument("--amp", action="store_true", help="fp16 autocast and gradient scaling (CUDA only)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR (from its last.pt)")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds weights, order, mirrors, turns, dropout (default 0)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use N images, chosen by content hash (a spread over classes), before the held-out split")
    variants = p.add_argument_group("variants (more exact pairs from the same photos)")
    variants.add_argument("--variants", type=int, default=0, metavar="K",
                          help=f"before training, make K variants of every training photo (random crops of 0.3-1 of "
                               f"its area with an aspect ratio near its own, brought to --size, half of them "
                               f"mirrored; the same ones every time), label each as an image of its own with the "
                               f"cache's labeller into the cache (a rerun labels nothing) and train on the photos "
                               f"and the variants; held-out photos give none. They are written to RUN_DIR/variants/. "
                               f"Meant for photos larger than --size; default 0 (none)")
    variants.add_argument("--workers", type=int, default=None, metavar="N",
                          help="processes that label the variants (default: one per CPU, as saliency-ssl label; "
                               "0: this process)")
    p.add_argument("--held-out", type=float, default=d.held_out, metavar="F",
                   help="share of the images held out by content hash for fidelity at each evaluation (default "
                        "%(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--decay-start", type=float, default=d.decay_start, metavar="F",
                   help="share of the run after which the rate decays linearly to 0 (default %(default)s)")
    p.add_argument("--no-flip", action="store_true", help="do not mirror training pairs left-right")
    p.add_argument("--no-rotate", action="store_true",
                   help="do not turn training pairs by random quarter turns (with the mirrors, the default shows "
                        "every pair in its eight poses of the square)")
    p.add_argument("--gan-mode", choices=GAN_MODES, default=d.gan_mode, help="default %(default)s")
    p.add_argument("--lambda-gan", type=float, default=w.gan,
                   help="weight of Pix2Pix's adversarial term (default %(default)s: off; 1 is Pix2Pix's: on the "
                        "generated shapes it cost 1.5x per step and drew worse boundaries)")
    p.add_argument("--lambda-l1", type=float, default=w.l1, help="L1 weight on the saliency map (default %(default)s)")
    p.add_argument("--lambda-mask", type=float, default=w.mask, help="mask BCE + Dice weight (default %(default)s)")
    p.add_argument("--lambda-boundary", type=float, default=w.boundary,
                   help="boundary weighted BCE + Dice weight (default %(default)s)")
    p.add_argument("--boundary-pos-weight", type=_pos_weight, default=w.boundary_pos_weight, metavar="W",
                   help="BCE weight of boundary pixels against the others: a number, or 'balanced' (default): "
                        "non-boundary over boundary pixels of each batch")
    p.add_argument("--select", choices=("best", "last"), default=d.select,
                   help="surrogate.pt holds the generator with the best held-out fidelity (best: presence accuracy "
                        "+ mask IoU where present + mask IoU - saliency MAE on images with a map relative to "
                        "predicting nothing; early stopping) or the last one (default %(default)s)")
    p.add_argument("--eval-steps", type=int, default=d.eval_steps, metavar="N",
                   help="evaluate on the held-out images (and write best.pt, last.pt, history) at the end of every "
                        "epoch, or of every k-th epoch when epochs are shorter than N steps, k = ceil(N / steps "
                        "per epoch) (default %(default)s)")
    p.add_argument("--ngf", type=int, default=Architecture.ngf,
                   help="generator width at the first level (default %(default)s; Pix2Pix uses 64)")
    p.add_argument("--ndf", type=int, default=Architecture.ndf, help="discriminator width (default %(default)s)")
    p.add_argument("--head", type=int, default=d.head, metavar="C",
                   help="channels of the generator's full-resolution head: two 3x3 convolutions on the last "
                        "decoder features and the image (default %(default)s; 0: Pix2Pix's output layer)")
    p.add_argument("--dropout-blocks", type=int, default=d.dropout_blocks, metavar="N",
                   help="decoder blocks after the innermost with dropout 0.5 (default %(default)s; Pix2Pix: 3)")
    add_labeller_options(p, title="labeller (pick the cache's fingerprint explicitly, as given to saliency-ssl label)",
                         optional=True)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace, command: list[str] | None = None) -> TrainSurrogateConfig:
    """The :class:`TrainSurrogateConfig` of parsed options.

    Raises:
        TrainConfigError: a trainer option out of range.
        ValueError: another option out of range.
    """
    train = TrainConfig(image_size=args.size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        decay_start=args.decay_start, max_minutes=args.max_minutes, max_steps=args.max_steps,
                        held_out=args.held_out, flip=not args.no_flip, rotate=not args.no_rotate, amp=args.amp,
                        seed=args.seed, gan_mode=args.gan_mode,
                        weights=LossWeights(gan=args.lambda_gan, l1=args.lambda_l1, mask=args.lambda_mask,
                                            boundary=args.lambda_boundary,
                                            boundary_pos_weight=args.boundary_pos_weight),
                        ngf=args.ngf, ndf=args.ndf, head=args.head, dropout_blocks=args.dropout_blocks,
                        select=args.select, eval_steps=args.eval_steps)
    return TrainSurrogateConfig(images=args.images, cache=args.cache, out=args.out, train=train,
                                labeller=labeller_config_from_args(args), limit=args.limit,
                                variants=args.variants, workers=args.workers, device=args.device,
                                threads=args.threads, resume=args.resume, progress=not args.quiet,
                                command=list(command or []))


def no_pairs_advice(error: NoPairsError) -> str:
    """The ``saliency-ssl label`` command that gives the images of a :class:`NoPairsError` their targets."""
    command = label_command(error.images_dir, error.cache_dir, error.params)
    return {"no_cache": f"fill it with: {command}",
            "old_versions": f"label the images again with: {command}"}.get(error.reason, f"label them with: {command}")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = list(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_args(args, command)
    except TrainConfigError as error:
        return fail(config_error(error))
    except ValueError as error:  # --device, --limit, --threads, labeller options
        return fail(error)
    try:
        run(config)
    except RunExistsError as error:
        return fail(f"{error}: pass --resume to continue it, choose another --out, or delete the folder to start "
                    f"again" if "already holds" in str(error) else str(error))
    except (RunMismatchError, RunRecordError, SurrogateCheckpointError) as error:
        return fail(error)
    except NoPairsError as error:
        return fail(f"{error}; {no_pairs_advice(error)}")
    except WorkerDiedError as error:  # a process labelling the variants
        return fail(f"{error} while labelling the variants; every variant labelled so far is kept in {config.cache}: "
                    f"rerun the command with --resume to go on (with fewer --workers if memory ran out)")
    except (OSError, ValueError, MemoryError) as error:  # no images, a damaged cache.db, an empty split, too big
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
