#!/usr/bin/env python
"""Fidelity of a trained surrogate: its targets against the exact ones, image by image.

Loads RUN_DIR/surrogate.pt, pairs the images below IMAGES_DIR with their exact targets from the
cache (under the labeller fingerprint the surrogate learned, at its image size), predicts, and
compares: mask IoU, Dice, F-measure (beta^2 = 0.3), precision, recall and the mask-or-no-mask
decision; RC saliency MAE; region boundary F-score (1-pixel tolerance). Every figure is printed
beside the predict-nothing baseline's. With --masks GT_DIR, the surrogate's mask and map and the
exact labeller's are also scored against human ground-truth masks, side by side (JSON key
vs_masks). The work lives in saliencyssl.surrogate.fidelity.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

EPILOG = """\
examples:
  # CIFAR-10 test images the surrogate never saw (label them first)
  python scripts/label.py ../shared/data/cifar10/test --cache runs/cache --workers 2
  python scripts/eval_fidelity.py ../shared/data/cifar10/test --cache runs/cache \\
      --surrogate runs/sur32/surrogate.pt --json runs/sur32/fidelity_test.json --grid runs/sur32/fidelity_test.png

  # a quick look at 500 images on the GPU
  python scripts/eval_fidelity.py photos/ --cache runs/cache_photos --surrogate runs/sur96/surrogate.pt \\
      --limit 500 --device cuda

  # photos with human masks: surrogate and exact labeller against them (label the photos first)
  python scripts/label.py ../shared/data/salbench/images --cache runs/cache_photos
  python scripts/eval_fidelity.py ../shared/data/salbench/images --cache runs/cache_photos \\
      --surrogate runs/sur96/surrogate.pt --masks ../shared/data/salbench/masks --json runs/sur96/salbench.json

figures (per image, then the mean and the mean of the worst decile):
  presence_accuracy     share of images where surrogate and exact agree on mask empty / not empty
  mask_iou              IoU of the masks; two empty masks count as 1
  mask_iou_present      mask IoU over the images whose exact mask is not empty
  mask_f, mask_dice, mask_precision, mask_recall
  saliency_mae          mean absolute difference of the RC maps in [0, 1]
  saliency_mae_present  the same over images whose exact map is not all zero
  boundary_f            F-score of the region boundaries, 1 pixel of tolerance
  baseline              the same keys for predicting nothing (zero map, empty mask, one region)

Exact masks are often empty, so plain means flatter any predictor that says "nothing"; judge a
surrogate by the *_present figures and presence_accuracy, each against the baseline's.
The JSON also says how many evaluated images were in the surrogate's training set (n_seen_in_training).

against human masks (--masks GT_DIR; JSON key vs_masks):
  masks pair with images by file stem: GT_DIR/<same relative folder>/<stem>.png (or .jpg, .jpeg, .bmp),
  else the one <stem>.<ending> anywhere below GT_DIR; 0/255 or 0/1, a mask the size of its image.
  Images without a mask are left out and counted (n_without_mask); masks without an image are ignored.
  surrogate, exact      the surrogate's and the exact labeller's (cached) mask and map
  nothing, centre_box   predicting nothing; the centred square of half the side (mask and 0/1 map)
  f                     mask F-measure, F = 1.3 P R / (0.3 P + R), mean over images
  iou                   mask IoU, mean over images
  mae                   mean |map - mask|, the map min-max normalised per image as Cheng's evaluation
                        reads it, the mask as 0/1, mean over images (mae_raw: the map as predicted)
  f_of_means            F of the mean precision and mean recall (the figure Cheng et al. publish)
  surrogate_minus_exact the surrogate's f, iou, mae minus the exact labeller's
  Resolution: all at the surrogate's image size S, on the centre crop fit_square keeps (shorter side
  to S, centred S x S): the surrogate's output as predicted, the exact target resized as for training
  (target_at_size), the human mask nearest-neighbour. Both are scored on the same pixels at the same
  resolution; upsampling the surrogate into the crop at full size would still cover only the crop and
  would measure the upsampling against the labeller's full-size edges. Figures therefore leave out the
  strips outside the crop and are not full-image benchmark numbers; read the surrogate against the
  exact row.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval_fidelity.py", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="image folder or CIFAR-10 python batches")
    p.add_argument("--cache", type=Path, required=True, metavar="CACHE_DIR",
                   help="target cache holding these images' exact targets (scripts/label.py)")
    p.add_argument("--surrogate", type=Path, required=True, metavar="PATH",
                   help="RUN_DIR/surrogate.pt (or last.pt) from scripts/train_surrogate.py")
    p.add_argument("--masks", type=Path, default=None, metavar="GT_DIR",
                   help="folder of human ground-truth masks named like the images: also score the surrogate and "
                        "the exact labeller against them at the surrogate's size on the centre crop (see below)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures as JSON")
    p.add_argument("--grid", type=Path, default=None, metavar="OUT.png",
                   help="write a picture of the best and worst images (image | exact | surrogate)")
    p.add_argument("--grid-rows", type=int, default=8, metavar="K", help="best and worst rows each (default 8)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N images, chosen by content hash")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per prediction (default 256)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.grid_rows < 1:
        parser.error(f"--grid-rows {args.grid_rows}: show at least 1 best and 1 worst row")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: predict at least 1 image at a time")
    import torch

    from saliencyssl.datasets import open_image_set
    from saliencyssl.surrogate.fidelity import (evaluate_surrogate, fidelity_grid, format_report, format_vs_masks,
                                           load_human_masks, match_masks, vs_masks_report)
    from saliencyssl.saliency import LabellerConfig
    from saliencyssl.surrogate.model import Surrogate, SurrogateCheckpointError
    from saliencyssl.surrogate.pairs import MissingTargetsError, contains_hashes, describe_misses, load_pairs
    from saliencyssl.visualize import save_rgb

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch here; use --device cpu")
    try:
        surrogate = Surrogate.load(args.surrogate, device=args.device)
    except (FileNotFoundError, SurrogateCheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = None
    params = surrogate.labeller_params
    if params:
        try:
            config = LabellerConfig.from_params(params)
        except (TypeError, ValueError):
            config = None
    start = time.perf_counter()
    image_set = human = None
    try:
        if args.masks is not None:  # pair the masks first: a wrong folder fails before any work
            image_set = open_image_set(args.images)
            match_masks(args.images, image_set.names, args.masks)
        pairs = load_pairs(args.images, args.cache, surrogate.image_size, fingerprint=surrogate.fingerprint,
                           config=config, limit=args.limit, progress=not args.quiet, image_set=image_set)
        if image_set is not None:
            human = load_human_masks(image_set, pairs.names, args.masks, surrogate.image_size)
    except (MissingTargetsError, OSError, ValueError) as error:  # OSError: a cache.db that cannot be opened
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in describe_misses(pairs):
        print(line, file=sys.stderr)
    seen = 0
    prefixes = surrogate.meta.get("train_hash_prefixes")
    if isinstance(prefixes, torch.Tensor):
        seen = int(contains_hashes(prefixes, pairs.hashes).sum())
        if seen:
            print(f"WARNING: {seen} of the {len(pairs)} images were in the surrogate's training set; these figures "
                  f"are not on unseen images", file=sys.stderr)
    if human is not None and human.without:
        print(f"{len(human.without)} of the {len(pairs)} images have no mask in {args.masks} and are left out of "
              f"the comparison with human masks: {', '.join(human.without[:5])}"
              f"{' ...' if len(human.without) > 5 else ''}", file=sys.stderr)
    exact = pairs.targets.batch()
    result = evaluate_surrogate(surrogate, pairs.images, exact, batch_size=args.batch_size,
                                progress=not args.quiet)
    vs_masks = None
    if human is not None:
        index = torch.from_numpy(human.indices)
        vs_masks = vs_masks_report(human.masks, exact.index_select(index), result.prediction.index_select(index),
                                   names=[pairs.names[i] for i in human.indices])
        vs_masks.update(masks_dir=str(args.masks), n_without_mask=len(human.without))
    seconds = time.perf_counter() - start
    report = result.report
    print(f"surrogate {args.surrogate} ({surrogate.image_size}px, labeller {surrogate.fingerprint}) on "
          f"{len(pairs)} images of {args.images}:")
    print("\n".join(format_report(report)))
    if vs_masks is not None:
        print("\n".join(format_vs_masks(vs_masks)))
    if args.json:
        out = {**report, "surrogate": str(args.surrogate), "images_dir": str(args.images), "cache": str(args.cache),
               "image_size": surrogate.image_size, "fingerprint": surrogate.fingerprint, "limit": args.limit,
               "misses": len(pairs.misses), "n_seen_in_training": seen, "seconds": round(seconds, 2),
               "device": str(surrogate.device), "torch": str(torch.__version__), "machine": platform.machine()}
        if vs_masks is not None:
            out["vs_masks"] = vs_masks
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    if args.grid:
        grid = fidelity_grid(pairs.images, pairs.targets.batch(), result.prediction, result.scores, k=args.grid_rows)
        save_rgb(args.grid, grid)
        print(f"wrote {args.grid} (top: best {min(args.grid_rows, len(pairs))}, bottom: worst)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
