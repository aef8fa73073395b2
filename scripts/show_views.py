#!/usr/bin/env python
"""Draw a batch as the model sees it under a policy (the paper's Fig. 8), for a person to look at.

Rows of the picture: the images, then two independent views of each (saliency view rendered
from the whole image first, then the policy's augmentations). Images are drawn at random among
those the cache holds a target for.

Examples:
  python scripts/show_views.py runs/quickstart/data/train --cache runs/quickstart/cache --policy sal+default --out views.png
  python scripts/show_views.py ../shared/data/cifar10/test --cache runs/cache --policy sal --image-size 32 --out sal.png
  python scripts/show_views.py photos/ --cache runs/cache --policy "sal+default,view=cut" --image-size 96 --out cut.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from saliencyssl.augment import PRESETS, FrozenPack, SSLAugmentation, TargetRouter, TrainingImages, parse_policy
from saliencyssl.cache import TargetCache
from saliencyssl.saliency.options import add_labeller_options, describe_params, labeller_config_from_args
from saliencyssl.surrogate.pairs import label_command
from saliencyssl.ssl.backbone import IMAGENET_MEAN, IMAGENET_STD
from saliencyssl.visualize import image_grid, save_rgb


def to_uint8(views: torch.Tensor) -> list[np.ndarray]:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = (views.cpu() * std + mean).clamp(0, 1)
    return [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="image folder (class sub-folders optional) or CIFAR-10 python batches")
    parser.add_argument("--cache", type=Path, help="target cache filled by scripts/label.py (needed by saliency policies)")
    parser.add_argument("--policy", default="sal+default", help=f"preset ({', '.join(PRESETS)}) or free policy string")
    parser.add_argument("--image-size", type=int, default=32,
                        help="training side length, as pretrain.py --image-size (default %(default)s; drawn at 64 px or more)")
    parser.add_argument("--count", type=int, default=8, help="images to show (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which images and which random views")
    add_labeller_options(parser)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)

    if args.count < 1:
        parser.error(f"--count {args.count}: show at least 1 image")
    try:
        policy = parse_policy(args.policy)
    except ValueError as error:
        parser.error(f"--policy: {error}")
    images = TrainingImages(args.data, args.image_size)
    generator = torch.Generator().manual_seed(args.seed)
    candidates = torch.randperm(len(images), generator=generator)
    targets = None
    if policy.uses_saliency:
        if args.cache is None:
            parser.error(f"policy {args.policy!r} renders saliency views: pass --cache CACHE_DIR "
                         f"(fill it with python scripts/label.py {args.data} --cache CACHE_DIR)")
        if not TargetCache.exists(args.cache):
            parser.error(f"--cache {args.cache} is not a cache folder (no cache.db); fill it with: "
                         f"python scripts/label.py {args.data} --cache {args.cache}")
        try:
            config = labeller_config_from_args(args)
            cache = TargetCache(args.cache, config.fingerprint())
        except (OSError, ValueError) as error:  # a bad labeller option, a cache.db that cannot be opened
            print(f"error: {error}", file=sys.stderr)
            return 2
        pack = FrozenPack.build(images.hashes, cache, args.image_size)
        print(pack.report.line())
        candidates = candidates[pack.present_at(candidates)]
        if len(candidates) == 0:
            others = {fp: params for fp, params in TargetCache(args.cache, "probe").fingerprints().items()
                      if fp != config.fingerprint()}
            held = "; ".join(f"{fp} ({describe_params(params)})" for fp, params in others.items())
            print(f"error: no image of {args.data} has a target of labeller {config.fingerprint()} "
                  f"({describe_params(config.params())}) in {args.cache}; label them with: "
                  f"{label_command(args.data, args.cache, config.params())}"
                  + (f", or pass the labeller options of the targets it holds: {held}" if held else ""),
                  file=sys.stderr)
            return 2
    index = candidates[: args.count]
    x = images.stack()[index]
    if policy.uses_saliency:
        targets = TargetRouter("cache", args.image_size, pack=pack).targets(index, x)
    torch.manual_seed(args.seed)
    augment = SSLAugmentation(policy, args.image_size)
    rows = [[img.permute(1, 2, 0).numpy() for img in x], to_uint8(augment(x, targets)), to_uint8(augment(x, targets))]
    save_rgb(args.out, image_grid(rows, tile_height=max(64, args.image_size)))
    print(f"wrote {args.out} (rows: images, view 1, view 2; policy {policy.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
