#!/usr/bin/env python
"""Downstream evaluation of a frozen ResNet-18 backbone: linear probe, kNN and k-means.

Parses the command line, opens the image sets, extracts (or loads cached) features, runs each
protocol over label fractions x seeds and writes results.json / results.csv / results.md and
plots. The work itself lives in :mod:`saliencyssl.eval`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saliencyssl.eval.classification import PROTOCOLS  # noqa: E402

EPILOG = """\
examples:
  # a pretrained backbone on CIFAR-10 image folders, all protocols, 10 fractions x 3 seeds
  python scripts/evaluate.py --backbone runs/simclr/backbone.pt \\
      --train ../shared/data/cifar10/train --test ../shared/data/cifar10/test --out runs/simclr/eval

  # the random-initialisation baseline, three fractions, kNN and linear only
  python scripts/evaluate.py --backbone random --image-size 32 \\
      --train ../shared/data/cifar10/train --test ../shared/data/cifar10/test \\
      --fractions 0.1,0.5,1.0 --protocol linear,knn --out runs/random/eval

  # clustering of an unlabelled folder (no --train needed)
  python scripts/evaluate.py --backbone runs/simclr/backbone.pt --test my_photos \\
      --protocol kmeans --clusters 8

data layout: a folder with one sub-folder per class (DIR/<class>/*.png) is labelled; any other
image folder is unlabelled; a folder of CIFAR-10 python batches also works. Train and test must
have the same class sub-folders.

outputs (in --out): results.json, results.csv, results.md, accuracy_vs_fraction.png, tsne.png.
results.json maps linear/knn -> fraction (as written) -> {accuracy_mean, accuracy_std,
n_labelled}, kmeans -> {nmi, ari}, and meta -> run details (backbone, datasets, seeds, caches).
Features are cached (see --cache-dir), so re-running with other fractions or protocols is fast.
"""


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.eval.fractions import DEFAULT_FRACTIONS
    from saliencyssl.eval.knn import DEFAULT_K, DEFAULT_TEMPERATURE
    from saliencyssl.eval.probe import DEFAULT_C

    p = argparse.ArgumentParser(
        prog="evaluate.py", description=__doc__.splitlines()[0] + "\nFeatures come from the frozen backbone's "
        "512-d penultimate layer (cached on disk);\nthe labelled subset at each fraction is drawn class-balanced per "
        "seed; results are mean and std over seeds.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, metavar="PATH|random",
                   help="RUN_DIR/backbone.pt written by scripts/pretrain.py, a plain torchvision ResNet-18 state dict "
                        "(e.g. local ImageNet weights), or 'random' for a seeded randomly initialised ResNet-18 baseline")
    p.add_argument("--train", metavar="DIR", help="labelled training images (DIR/<class>/*); the probe and kNN draw "
                                                  "their labelled subsets from here. Needed for linear and knn")
    p.add_argument("--test", required=True, metavar="DIR",
                   help="test images: linear/knn are scored on them (must be labelled), k-means clusters them")
    p.add_argument("--fractions", default=DEFAULT_FRACTIONS, metavar="F,F,...",
                   help="label fractions in (0, 1] of the training set to use as labelled (default %(default)s); the "
                        "text as written becomes the key in results.json")
    p.add_argument("--protocol", default=",".join(PROTOCOLS), metavar="P,P,...",
                   help="any of linear (logistic regression on standardised features), knn (weighted kNN) and kmeans "
                        "(clustering, NMI/ARI, t-SNE picture); default %(default)s")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="number of seeds (0..N-1); each draws its own labelled subsets, results are mean and std "
                        "over seeds (default %(default)s)")
    p.add_argument("--out", metavar="OUT_DIR",
                   help="output folder (default: BACKBONE_DIR/eval, or runs/eval-random-seedS for --backbone random)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="input side length; default: the backbone config's image_size (32 for random, where it also "
                        "picks the stem: CIFAR stem up to 64 px)")
    p.add_argument("--backbone-seed", type=int, default=0, metavar="S",
                   help="initialisation seed of --backbone random (default %(default)s)")
    p.add_argument("--random-stem", default="auto", choices=("auto", "cifar", "imagenet"),
                   help="stem of --backbone random: auto = CIFAR stem up to 64 px, else the ImageNet stem; set it to "
                        "match the pretrained backbone you compare with (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where features are computed "
                                                                            "(default %(default)s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch during feature extraction (default: torch's choice; 1 is often faster "
                        "on a busy machine)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B",
                   help="images per forward pass during feature extraction (default %(default)s)")
    p.add_argument("--clusters", type=int, metavar="K",
                   help="k-means clusters (default: number of classes of --test; required when it is unlabelled)")
    p.add_argument("--knn-k", type=int, default=DEFAULT_K, metavar="K",
                   help="kNN neighbours (default %(default)s, lightly's benchmark; capped at the labelled count)")
    p.add_argument("--knn-temperature", type=float, default=DEFAULT_TEMPERATURE, metavar="T",
                   help="kNN similarity temperature (default %(default)s)")
    p.add_argument("--probe-c", type=float, default=DEFAULT_C, metavar="C",
                   help="inverse L2 strength of the logistic-regression probe (default %(default)s)")
    p.add_argument("--tsne-points", type=int, default=2000, metavar="N",
                   help="t-SNE picture on at most N test images (random subsample); 0 skips it (default %(default)s)")
    p.add_argument("--train-limit", type=int, metavar="N",
                   help="use N training images evenly spaced through --train (keeps the classes' proportions)")
    p.add_argument("--test-limit", type=int, metavar="N", help="use N test images evenly spaced through --test")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache (default $SALIENCYSSL_FEATURE_CACHE, else $XDG_CACHE_HOME/saliencyssl/features, "
                        "else ~/.cache/saliencyssl/features)")
    p.add_argument("--no-cache", action="store_true", help="always recompute features and store nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars (results are still printed)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = " ".join(["evaluate.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args, parser)
    except (FileNotFoundError, ValueError) as error:  # includes ImageDecodeError
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from saliencyssl.eval import fractions as frac
    from saliencyssl.eval.classification import ClassificationSettings, evaluate_classification

    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        parser.error(f"--protocol {args.protocol!r}: unknown {unknown or 'empty list'}; choose from {', '.join(PROTOCOLS)}")
    try:
        frac.parse_fractions(args.fractions)
    except ValueError as error:
        parser.error(str(error))
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: give the number of seeds, at least 1")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: give a positive number of images per forward pass")
    for flag, value in (("--knn-k", args.knn_k), ("--clusters", args.clusters), ("--train-limit", args.train_limit),
                        ("--test-limit", args.test_limit)):
        if value is not None and value < 1:
            parser.error(f"{flag} {value}: give at least 1 (leave the option out for its default)")
    if args.knn_temperature <= 0 or args.probe_c <= 0:
        parser.error("--knn-temperature and --probe-c must be positive")
    if args.tsne_points < 0:
        parser.error(f"--tsne-points {args.tsne_points}: give 0 (no t-SNE picture) or more")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch here; use --device cpu")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: give a positive number")
        torch.set_num_threads(args.threads)
    supervised = [p for p in protocols if p in ("linear", "knn")]
    if supervised and not args.train:
        parser.error(f"--protocol {','.join(supervised)} needs --train DIR (labelled training images); "
                     f"or run --protocol kmeans alone")
    if args.backbone != "random" and not Path(args.backbone).is_file():
        raise FileNotFoundError(f"--backbone {args.backbone}: no such file; pass RUN_DIR/backbone.pt written by "
                                f"scripts/pretrain.py, a ResNet-18 state dict, or 'random' for the random baseline")
    out_dir = Path(args.out) if args.out else (
        Path("runs") / f"eval-random-seed{args.backbone_seed}" if args.backbone == "random"
        else Path(args.backbone).resolve().parent / "eval")

    settings = ClassificationSettings(
        backbone=args.backbone, test=args.test, train=args.train, out=out_dir, fractions=args.fractions,
        protocols=protocols, seeds=args.seeds, image_size=args.image_size, backbone_seed=args.backbone_seed,
        random_stem=args.random_stem, device=args.device, batch_size=args.batch_size, clusters=args.clusters,
        knn_k=args.knn_k, knn_temperature=args.knn_temperature, probe_c=args.probe_c, tsne_points=args.tsne_points,
        cache_dir=args.cache_dir, no_cache=args.no_cache, train_limit=args.train_limit, test_limit=args.test_limit,
        command=args.command)
    evaluate_classification(settings, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
