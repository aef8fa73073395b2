#!/usr/bin/env python
"""Foreground segmentation with few masks on a pretrained ResNet-18 encoder (FPN decoder or Mask R-CNN).

Parses the command line, pairs images with masks, fixes a test split by content hash, trains a
segmenter (or a Mask R-CNN) for each label fraction x seed on the rest, scores foreground IoU and
F-measure (and COCO mask AP) on the test split and writes results.json / results.csv / results.md
and a plot. The work itself lives in :mod:`saliencyssl.eval.segmentation` and
:mod:`saliencyssl.eval.detection`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
examples:
  # fine-tune a pretrained backbone on salient-object masks, 10 fractions x 3 seeds
  python scripts/eval_segmentation.py --backbone runs/simclr/backbone.pt \\
      --images data/salbench/images --masks data/salbench/masks --out runs/simclr/seg

  # the random-initialisation baseline at 64 px with the CIFAR stem, decoder only, quick
  python scripts/eval_segmentation.py --backbone random --image-size 64 --random-stem cifar \\
      --images data/salbench/images --masks data/salbench/masks \\
      --fractions 0.2,0.5,1.0 --epochs 10 --freeze-encoder --out runs/random/seg

  # instance segmentation: Mask R-CNN on the backbone, COCO mask AP beside IoU and F
  python scripts/eval_segmentation.py --backbone runs/simclr/backbone.pt --model maskrcnn --image-size 64 \\
      --images data/salbench/images --masks data/salbench/masks --fractions 0.2,0.5,1.0 --epochs 40 \\
      --out runs/simclr/seg_maskrcnn

data: --masks holds one PNG per image (foreground non-zero), with the image's relative path
and stem and the suffix .png (images/0001.jpg -> masks/0001.png). An image without a mask is an
error that names it. Images and masks are resized so the shorter side is --image-size, then
centre-cropped to a square; scores are computed at that size.

protocol: the test split (--test-split of the images, picked by content hash, so the same for every
seed, fraction and backbone) is never trained on. For each fraction and seed a random subset of the
remaining images (round(fraction x n), at least 1) is labelled and a fresh segmenter is trained
for --epochs passes' worth of steps over the *whole* training split (epochs x ceil(n_train /
batch)), so every fraction gets the same number of steps. Scores: mean over test images of the
foreground IoU and the F-measure (beta^2 = 0.3) at threshold 0.5; then mean and std over seeds.

models: --model fpn (default) is a feature pyramid over layers 1-4 with one foreground logit per
pixel (Adam). --model maskrcnn is torchvision's Mask R-CNN on its own pyramid over the same layers
(SGD, warm-up): each connected component of a mask (at least 0.2% of the image) is an instance; it
reports COCO AP of the instance masks (0.50:0.95, 0.50, 0.75) and boxes (pycocotools), and IoU / F
of the union of its detections scoring >= 0.5. A step costs 1.7 times the FPN's with the CIFAR stem and 3-5 times
with the ImageNet stem, and it needs more steps (40 epochs rather than 10-20): on 25 photos at
64 px, 160 steps take about 4 minutes of one CPU core per fraction and seed.

outputs (in --out): results.json (fraction as written -> {iou_mean, iou_std, f_mean, f_std,
n_labelled}, with --model maskrcnn also mask_ap, mask_ap50, mask_ap75, box_ap (_mean, _std); plus
meta), results.csv, results.md, scores_vs_fraction.png.
"""


def build_parser() -> argparse.ArgumentParser:
    from saliencyssl.eval.fractions import DEFAULT_FRACTIONS
    from saliencyssl.eval.segmentation import MODELS, TrainConfig

    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="eval_segmentation.py", description=__doc__.splitlines()[0] + "\nTrains a segmenter per label "
        "fraction and seed and scores foreground IoU and F-measure on a fixed test split.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, metavar="PATH|random",
                   help="RUN_DIR/backbone.pt written by scripts/pretrain.py, a plain torchvision ResNet-18 state dict, "
                        "or 'random' for a seeded randomly initialised ResNet-18 baseline")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--masks", required=True, metavar="DIR",
                   help="folder of binary mask PNGs with the images' relative paths and stems")
    p.add_argument("--fractions", default=DEFAULT_FRACTIONS, metavar="F,F,...",
                   help="label fractions in (0, 1] of the training split that get masks (default %(default)s); the "
                        "text as written becomes the key in results.json")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="number of seeds (0..N-1); each draws its own labelled subset, decoder initialisation, batch "
                        "order and flips (default %(default)s)")
    p.add_argument("--epochs", type=int, default=20, metavar="N",
                   help="training length in passes over the whole training split, the same number of steps for "
                        "every fraction (default %(default)s)")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="side length images and masks are brought to; default: the backbone config's image_size "
                        "(32 for random). Give the same S to every backbone you compare")
    p.add_argument("--test-split", type=float, default=0.3, metavar="T",
                   help="share of the images held out for testing, chosen by content hash (default %(default)s)")
    p.add_argument("--out", metavar="OUT_DIR",
                   help="output folder (default: BACKBONE_DIR/seg, or runs/seg-random-seedS for --backbone random)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the pyramid and head(s) only, keeping the encoder fixed (default: fine-tune it too)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="B",
                   help="images per training step (default %(default)s)")
    p.add_argument("--model", default="fpn", choices=tuple(MODELS),
                   help="fpn: FPN segmenter (foreground IoU, F); maskrcnn: torchvision Mask R-CNN (also COCO mask "
                        "and box AP) (default %(default)s)")
    p.add_argument("--lr", type=float, metavar="LR",
                   help=f"learning rate of the decoder / heads (default: {MODELS['fpn'][1]} with Adam for fpn, "
                        f"{MODELS['maskrcnn'][1]} with SGD for maskrcnn)")
    p.add_argument("--encoder-lr", type=float, metavar="LR",
                   help=f"learning rate of the encoder when fine-tuned (default: {MODELS['fpn'][2]} for fpn, "
                        f"{MODELS['maskrcnn'][2]} for maskrcnn)")
    p.add_argument("--fpn-channels", type=int, default=64, metavar="C",
                   help="channels of the feature pyramid (default %(default)s)")
    p.add_argument("--backbone-seed", type=int, default=0, metavar="S",
                   help="initialisation seed of --backbone random (default %(default)s)")
    p.add_argument("--random-stem", default="auto", choices=("auto", "cifar", "imagenet"),
                   help="stem of --backbone random: auto = CIFAR stem up to 64 px, else the ImageNet stem "
                        "(default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default %(default)s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = " ".join(["eval_segmentation.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args, parser)
    except (FileNotFoundError, ValueError, FloatingPointError) as error:  # includes ImageDecodeError
        print(f"eval_segmentation.py: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    from saliencyssl.eval import fractions as frac
    from saliencyssl.eval.segmentation import SegmentationSettings, evaluate_segmentation

    try:
        frac.parse_fractions(args.fractions)
    except ValueError as error:
        parser.error(str(error))
    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--fpn-channels", args.fpn_channels)):
        if value < 1:
            parser.error(f"{flag} {value}: give a positive number")
    for flag, value in (("--lr", args.lr), ("--encoder-lr", args.encoder_lr)):
        if value is not None and not value > 0:
            parser.error(f"{flag} {value}: give a positive learning rate")
    if not 0.0 < args.test_split < 1.0:
        parser.error(f"--test-split {args.test_split}: give the share of images held out for testing, in (0, 1)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch here; use --device cpu")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: give a positive number")
        torch.set_num_threads(args.threads)
    if args.backbone != "random" and not Path(args.backbone).is_file():
        raise FileNotFoundError(f"--backbone {args.backbone}: no such file; pass RUN_DIR/backbone.pt written by "
                                f"scripts/pretrain.py, a ResNet-18 state dict, or 'random' for the random baseline")
    out_dir = Path(args.out) if args.out else (
        Path("runs") / f"seg-random-seed{args.backbone_seed}" if args.backbone == "random"
        else Path(args.backbone).resolve().parent / "seg")

    settings = SegmentationSettings(
        backbone=args.backbone, images=args.images, masks=args.masks, out=out_dir, fractions=args.fractions,
        seeds=args.seeds, epochs=args.epochs, image_size=args.image_size, test_split=args.test_split,
        freeze_encoder=args.freeze_encoder, batch_size=args.batch_size, lr=args.lr, encoder_lr=args.encoder_lr,
        fpn_channels=args.fpn_channels, model=args.model, backbone_seed=args.backbone_seed,
        random_stem=args.random_stem, device=args.device, command=args.command)
    evaluate_segmentation(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
