#!/usr/bin/env python
"""Contrastive self-supervised pretraining of a ResNet-18 with saliency views.

Each step takes a batch of images, gets their targets from --aug-source (the cache, the
surrogate, or the exact labeller; see below), renders the saliency view and applies the
--policy's Kornia augmentations twice, and trains the --method. At the end RUN_DIR/backbone.pt
holds the backbone for scripts/evaluate.py.

--aug-source:
  none              no targets (use with a policy without 'sal', e.g. default, and a method other than detcon-*)
  cache             targets from --cache (fill it first: python scripts/label.py DATA --cache CACHE)
  cache,surrogate   cached targets; misses predicted by --surrogate in one batched call
  cache,exact       cached targets; misses labelled exactly and written back to the cache
  surrogate         every target from --surrogate
  exact             every target labelled on the fly (the paper's slow baseline)
--policy: default, sal, sal+default, sal0.5+default, sal+jitter, sal0.5+jitter, sal0.8+jitter0.8,
  or free probabilities such as "sal0.3+default,vflip=0.5,view=cut".
--method detcon-simclr / detcon-byol (DetCon, Henaff et al. 2021) pool the loss over each view's RC regions
  (method option masks=foreground: the SaliencyCut mask and its background), warped with the view's crop
  and flips: they read targets from --aug-source whatever the policy, so --aug-source none is refused.
--method-option KEY=VALUE (repeatable) replaces one of the method's defaults (lightly's CIFAR-10 recipe):
{method_defaults}

Examples:
  python scripts/pretrain.py --data runs/quickstart/data/train --method simclr --aug-source cache,surrogate \\
      --policy sal+default --cache runs/quickstart/cache --surrogate runs/quickstart/surrogate/surrogate.pt \\
      --epochs 20 --batch-size 64 --image-size 64 --out runs/simclr
  python scripts/pretrain.py --data ../shared/data/cifar10/train --method byol --aug-source cache,surrogate \\
      --policy sal+default --cache runs/cache --surrogate runs/surrogate/surrogate.pt --epochs 200 \\
      --device cuda --amp --knn-train ../shared/data/cifar10/train --knn-test ../shared/data/cifar10/test --out runs/byol
  python scripts/pretrain.py --data ../shared/data/cifar10/train --method detcon-simclr --aug-source cache \
      --policy default --cache runs/cache --epochs 200 --device cuda --out runs/detcon-simclr
  torchrun --nproc_per_node 4 scripts/pretrain.py ... --device cuda        (DDP, one process per GPU)
"""

from __future__ import annotations

import argparse
import json
import sys

from saliencyssl.augment import PRESETS, SOURCE_ORDERS, MissingPieceError
from saliencyssl.saliency.options import add_labeller_options
from saliencyssl.ssl.registry import METHODS
from saliencyssl.ssl.pretrain import PretrainConfig, Pretrainer, parse_method_options


def _method_defaults() -> str:
    lines = []
    for name in sorted(METHODS):
        hparams = {k: v for k, v in METHODS[name].default_hparams().items() if k != "feature_dim"}
        lines.append(f"  {name + ':':15} " + ", ".join(f"{k}={json.dumps(v)}" for k, v in hparams.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").replace("{method_defaults}", _method_defaults()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image folder (class sub-folders optional) or CIFAR-10 python batches")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="SSL method (lightly's losses and heads)")
    p.add_argument("--aug-source", default="cache", choices=SOURCE_ORDERS, metavar="SOURCES",
                   help=f"where targets come from: {' | '.join(SOURCE_ORDERS)} (see above; default %(default)s)")
    p.add_argument("--policy", default="sal+default", help=f"augmentation policy: {', '.join(PRESETS)} or free (default %(default)s)")
    p.add_argument("--cache", help="target cache folder (from scripts/label.py)")
    p.add_argument("--pack", help="portable pack file (scripts/cache.py export) instead of --cache")
    p.add_argument("--surrogate", help="surrogate checkpoint (RUN_DIR/surrogate.pt from scripts/train_surrogate.py)")
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = PretrainConfig(
        data=args.data, out=args.out, method=args.method, aug_source=args.aug_source, policy=args.policy,
        epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size, cache=args.cache, pack=args.pack,
        surrogate=args.surrogate, device=args.device, amp=args.amp, workers=args.workers, knn_train=args.knn_train,
        knn_test=args.knn_test, knn_every=args.knn_every, resume=args.resume, seed=args.seed, lr=args.lr,
        scale=args.scale, max_side=args.max_side, min_side=args.min_side, cut_engine=args.cut_engine,
        limit=args.limit, progress=not args.quiet)
    try:
        config.method_options = parse_method_options(args.method_option)
        trainer = Pretrainer(config)
    except (MissingPieceError, OSError, ValueError) as error:  # OSError: a cache.db that cannot be opened
        print(f"error: {error}", file=sys.stderr)
        return 2
    from saliencyssl.ssl.distributed import cleanup

    try:
        trainer.run()
    finally:
        cleanup(trainer.dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
