#!/usr/bin/env python
"""Train the Pix2Pix surrogate that predicts exact SaliencyCut targets (RC map, cut mask, region boundary).

Reads the images below IMAGES_DIR, pairs each with its exact target from the cache that
scripts/label.py filled (by content hash; the labeller fingerprint is taken from the cache),
holds out a share of the images by content hash, trains, and writes RUN_DIR/surrogate.pt.
The work itself lives in saliencyssl.surrogate (pairs, training, model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EPILOG = """\
examples:
  # label CIFAR-10 once, then train on 5,000 of its images for 30 CPU minutes
  python scripts/label.py ../shared/data/cifar10/train --cache runs/cache --workers 2
  python scripts/train_surrogate.py ../shared/data/cifar10/train --cache runs/cache --out runs/sur32 \\
      --limit 5000 --max-minutes 30

  # a GPU run on every image, fp16 autocast, larger batches (the best GPU recipe measured, docs/surrogate.md;
  # its best held-out epoch comes after about 1,000 steps, so a few minutes are enough)
  python scripts/train_surrogate.py ../shared/data/cifar10/train --cache runs/cache --out runs/sur32_gpu \\
      --device cuda --amp --batch-size 256 --ngf 32 --lr 1e-3 --held-out 0.1 --max-minutes 5

  # photos at 96 px (label at a capped size first), then continue it after an interruption
  python scripts/label.py ../shared/data/bsds500_test/images --cache runs/cache_photos --max-side 200
  python scripts/train_surrogate.py ../shared/data/bsds500_test/images --cache runs/cache_photos \\
      --out runs/sur96 --size 96 --max-minutes 10
  python scripts/train_surrogate.py ../shared/data/bsds500_test/images --cache runs/cache_photos \\
      --out runs/sur96 --size 96 --max-minutes 20 --resume

labeller: the cache may hold targets of several labellers (fingerprints); the one covering the most
images is used. --scale/--max-side/--min-side/--cut-engine (as in scripts/label.py) pick one
explicitly. Images without a target are listed with the label.py command that fills them.

outputs (in --out): surrogate.pt (load with saliencyssl.surrogate.Surrogate.load), best.pt (the best
held-out epoch so far), last.pt (for --resume), history.json, heldout_fidelity.json (the selected
epoch's held-out figures), tensorboard/ (tensorboard --logdir RUN_DIR). --max-minutes is the
wall-clock budget of the whole run, resumptions included; the learning rate decays over it.
"""


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.saliency.options import add_labeller_options
    from saliencyssl.surrogate.losses import GAN_MODES, LossWeights
    from saliencyssl.surrogate.networks import Architecture
    from saliencyssl.surrogate.training import TrainConfig

    d, w = TrainConfig(), LossWeights()
    p = argparse.ArgumentParser(prog="train_surrogate.py", description=__doc__.split("\n\n")[0] + "\n\n"
                                + __doc__.split("\n\n")[1], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, metavar="IMAGES_DIR",
                   help="image folder (class sub-folders allowed) or CIFAR-10 python batches")
    p.add_argument("--cache", type=Path, required=True, metavar="CACHE_DIR",
                   help="target cache filled by scripts/label.py for these images")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (created)")
    p.add_argument("--size", type=int, default=d.image_size, metavar="S",
                   help="side the images and targets are brought to (shorter side resized, centre crop); a "
                        "multiple of 8: 32, 64, 96, 128, 256 ... (default %(default)s)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="passes over the training split (default: 100, or as many as --max-minutes allows)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop cleanly after M minutes of wall time (resumptions included) and still write "
                        "surrogate.pt; the learning rate decays over the budget")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B", help="default %(default)s")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N where torch sees a GPU (default %(default)s)")
    p.add_argument("--amp", action="store_true", help="fp16 autocast and gradient scaling (CUDA only)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt after an interruption")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds weights, order, mirrors, turns, dropout (default 0)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use N images, chosen by content hash (a spread over classes), before the held-out split")
    p.add_argument("--held-out", type=float, default=d.held_out, metavar="F",
                   help="share of the images held out by content hash for fidelity each epoch (default %(default)s)")
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
    p.add_argument("--lambda-presence", type=float, default=w.presence,
                   help="weight of the image-level mask-or-no-mask term (BCE of the largest mask logit; "
                        "default %(default)s)")
    p.add_argument("--lambda-support", type=float, default=w.support,
                   help="weight of the support term: a fourth generator output learns where the exact RC map is "
                        "nonzero (the segments that escape the border test, which decide whether there is a mask); "
                        "it is dropped at prediction (default %(default)s: off; see docs/surrogate.md)")
    p.add_argument("--select", choices=("best", "last"), default=d.select,
                   help="surrogate.pt holds the epoch with the best held-out fidelity (best: presence accuracy + "
                        "mask IoU where present + mask IoU - saliency MAE on images with a map relative to predicting "
                        "nothing; early stopping) or the last one (default %(default)s)")
    p.add_argument("--eval-steps", type=int, default=d.eval_steps, metavar="N",
                   help="evaluate on the held-out images (and write best.pt, last.pt, history) at the end of every "
                        "epoch, or of every k-th epoch when epochs are shorter than N steps, k = ceil(N / steps "
                        "per epoch) (default %(default)s)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="evaluate, select and save an exponential moving average of the generator's weights with "
                        "this decay per step, e.g. 0.999 (default %(default)s: off; see docs/surrogate.md)")
    p.add_argument("--ngf", type=int, default=Architecture.ngf,
                   help="generator width at the first level (default %(default)s; Pix2Pix uses 64)")
    p.add_argument("--ndf", type=int, default=Architecture.ndf, help="discriminator width (default %(default)s)")
    p.add_argument("--head", type=int, default=d.head, metavar="C",
                   help="channels of the generator's full-resolution head: two 3x3 convolutions on the last "
                        "decoder features and the image (default %(default)s; 0: Pix2Pix's output layer)")
    p.add_argument("--dropout-blocks", type=int, default=d.dropout_blocks, metavar="N",
                   help="decoder blocks after the innermost with dropout 0.5 (default %(default)s; Pix2Pix: 3)")
    add_labeller_options(p, title="labeller (pick the cache's fingerprint explicitly, as in scripts/label.py)",
                         optional=True)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


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


#: Fewer held-out images than this make choosing the best epoch on them a coin toss (a note says so).
SMALL_HELD_OUT = 50


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    from saliencyssl.saliency.options import labeller_config_from_args
    from saliencyssl.surrogate.losses import LossWeights
    from saliencyssl.surrogate.model import SurrogateCheckpointError
    from saliencyssl.surrogate.networks import unet_depth
    from saliencyssl.surrogate.pairs import MissingTargetsError, describe_misses, load_pairs
    from saliencyssl.surrogate.training import SurrogateTrainer, TrainConfig, resolve_device

    try:
        resolve_device(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        unet_depth(args.size)
        config = TrainConfig(image_size=args.size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             decay_start=args.decay_start, max_minutes=args.max_minutes, held_out=args.held_out,
                             flip=not args.no_flip, rotate=not args.no_rotate, amp=args.amp, seed=args.seed,
                             gan_mode=args.gan_mode,
                             weights=LossWeights(gan=args.lambda_gan, l1=args.lambda_l1, mask=args.lambda_mask,
                                                 boundary=args.lambda_boundary,
                                                 boundary_pos_weight=args.boundary_pos_weight,
                                                 presence=args.lambda_presence, support=args.lambda_support),
                             ngf=args.ngf, ndf=args.ndf, head=args.head, dropout_blocks=args.dropout_blocks,
                             select=args.select, ema=args.ema, eval_steps=args.eval_steps)
        config.architecture()  # --ngf 0, --ndf 0: refused here, before the pairs are loaded
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (args.out / "last.pt").exists() and not args.resume:
        print(f"error: {args.out} already holds a run (last.pt); pass --resume to continue it, or choose another "
              f"--out", file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        pairs = load_pairs(args.images, args.cache, args.size, config=labeller_config_from_args(args), limit=args.limit,
                           progress=not args.quiet)
    except (MissingTargetsError, OSError, ValueError) as error:  # OSError: a cache.db that cannot be opened
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in describe_misses(pairs):
        print(line, file=sys.stderr)
    train, held = pairs.split(args.held_out)
    n_present = int(train.targets.mask.flatten(1).any(1).sum())
    print(f"labeller {pairs.fingerprint}: {len(pairs)} pairs at {args.size}px in {time.perf_counter() - start:.1f}s "
          f"-> {len(train)} training ({n_present / max(1, len(train)):.0%} with a mask), {len(held)} held out")
    if 0 < len(held) < SMALL_HELD_OUT and args.select == "best":
        print(f"note: the best epoch is chosen on {len(held)} held-out images, a noisy choice; with few images "
              f"a larger --held-out (e.g. 0.2) or --select last is steadier", file=sys.stderr)

    run_info = {"images_dir": str(args.images), "cache_dir": str(args.cache), "limit": args.limit,
                "argv": list(sys.argv[1:] if argv is None else argv)}
    trainer = SurrogateTrainer(config, train, held, args.out, device=args.device, progress=not args.quiet,
                               run_info=run_info)
    if args.resume:
        try:
            trainer.resume()
        except (FileNotFoundError, SurrogateCheckpointError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(f"training on {trainer.device}: {trainer.steps_per_epoch} steps per epoch of {args.batch_size}, "
          f"U-Net depth {trainer.arch.depth}, ngf {trainer.arch.ngf}; TensorBoard: tensorboard --logdir {args.out}")
    result = trainer.fit()
    extra = result.selected_step - result.selected_epoch * trainer.steps_per_epoch  # a budget's partial epoch
    selected = f"epoch {result.selected_epoch}" + (f" + {extra} steps" if extra > 0 else "")
    print(f"wrote {result.surrogate_path} after {result.epochs_done} epochs, {result.steps} steps, "
          f"{result.seconds / 60:.1f} min (stopped by {result.stopped_by}); it holds the generator of {selected} "
          f"({args.select})")
    if result.held_out is not None:
        from saliencyssl.surrogate.fidelity import format_report

        print(f"held-out fidelity of epoch {result.selected_epoch}:")
        print("\n".join(format_report(result.held_out)))
        (args.out / "heldout_fidelity.json").write_text(json.dumps(result.held_out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
