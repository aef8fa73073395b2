"""A cache of the surrogate's targets with its small regions merged away, to test where DetCon-S's kNN gap comes from.

The exact labeller's RC regions come from Felzenszwalb's graph segmentation with a smallest
segment (``seg_min_size``, 200 pixels at the labelling size; CIFAR-10 is labelled at 64 px, so
about 50 pixels at 32 px, which the resized regions roughly keep). The surrogate's regions are the
components between its predicted boundaries and have no such floor: on the CIFAR-10 pretraining
images about half of those owning a cell of DetCon-S's grid are under 64 pixels, against one in
eleven of the exact ones (results/surrogate_regions_cifar10.json). This predicts every pretraining image's target
with a surrogate, merges each region under ``--min-pixels`` into the neighbour it shares the longest
border with (smallest region first, until none is left under the floor or one region remains),
and writes the targets into a new cache under the labeller's fingerprint. Pretraining from that
cache (``--aug-source cache``) is then the surrogate's all-targets arm with the labeller's floor on
region size; the mask is the surrogate's, and the saliency map too, rounded to 0..255 as the cache keeps
every map. The surrogate predicts in batches of 64, as the router hands it a pretraining batch's
images, with its own precision (bf16 autocast on a CPU that computes it natively).

This departs from Felzenszwalb's own post-processing, which merges a small component across the
lowest-weight edge of the image graph in edge order; the surrogate has no edge weights, only its
boundary channel, and the longest shared border is the plainest stand-in.

With ``--boundary-threshold`` below 0.5 the surrogate's boundary channel is cut lower before the merge, drawing
boundaries it is less sure of: at 0.3, with the 50-pixel floor, its targets have as many regions an image as the
labeller's and as large a largest region (the recut arm of the parity, results/surrogate_regions_cifar10.json).

    python experiments/merged_regions_cache.py ../shared/data/cifar10/train --cache runs/caches/cifar \\
        --surrogate runs/exp/parity/surrogate_all/surrogate.pt --out runs/caches/cifar_surrogate_merged
    python experiments/merged_regions_cache.py ../shared/data/cifar10/train --cache runs/caches/cifar \\
        --surrogate runs/exp/parity/surrogate_all/surrogate.pt --out runs/caches/cifar_surrogate_recut \\
        --min-pixels 50 --boundary-threshold 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from saliencyssl.cache import TargetCache
from saliencyssl.saliency import LabellerConfig
from saliencyssl.surrogate.model import Surrogate
from saliencyssl.surrogate.pairs import PairSet, load_pairs
from saliencyssl.target import Target, TargetBatch


#: The file beside the cache that says how it was made (read by surrogate_regions.py).
MADE_BY = "merged_regions.json"


def merge_small_regions(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """``(H, W)`` region labels with every region under ``min_pixels`` merged into the 4-neighbour region it shares
    the longest border with (ties: the larger neighbour, then the lower label), smallest first (ties: the lower
    label); labels renumbered 0..R-1 in the order of the input's labels, so a map with no region under the floor
    comes back as ``compact`` numbering of itself and DetCon-S's ties between regions (a grid cell split evenly
    goes to the lower label) fall as they would on the unmerged map. A merged region may grow past the floor and
    then take in further small neighbours of its own: single-pixel fragments can snowball into one region."""
    out = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    while True:
        sizes = np.bincount(out.ravel())
        alive = np.flatnonzero(sizes)
        if len(alive) <= 1:
            break
        small = alive[np.argmin(sizes[alive])]
        if sizes[small] >= min_pixels:
            break
        pairs = np.concatenate([np.stack([out[:, :-1].ravel(), out[:, 1:].ravel()], 1),
                                np.stack([out[:-1, :].ravel(), out[1:, :].ravel()], 1)])
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
        border = pairs[(pairs[:, 0] == small) & (pairs[:, 1] != small), 1]
        shared = np.bincount(border, minlength=len(sizes))
        best = np.flatnonzero(shared == shared.max())
        out[out == small] = best[np.argmax(sizes[best])]
    return np.unique(out, return_inverse=True)[1].reshape(out.shape)


def merged(targets: TargetBatch, min_pixels: int) -> TargetBatch:
    """A batch of targets with :func:`merge_small_regions` applied to each image's regions."""
    regions = torch.stack([torch.from_numpy(merge_small_regions(r[0].numpy(), min_pixels))[None]
                           for r in targets.regions.long().cpu()])
    return TargetBatch(targets.saliency.cpu(), targets.mask.cpu(), regions.long())


def _cut_off(text: str) -> float:
    """--boundary-threshold's type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a cut-off between 0 and 1")
    return value


def surrogate_cache_parser(doc: str, surrogate_help: str) -> argparse.ArgumentParser:
    """The options of a script that writes a cache of altered targets from a surrogate's predictions on the
    pretraining images (this one and coarsened_exact_cache.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="the pretraining images")
    parser.add_argument("--cache", type=Path, required=True, help="the cache of their exact targets")
    parser.add_argument("--surrogate", type=Path, required=True, help=surrogate_help)
    parser.add_argument("--out", type=Path, required=True, help="the new cache (must not hold this labeller yet)")
    parser.add_argument("--size", type=int, default=32, help="the pretraining image size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--boundary-threshold", type=_cut_off, default=0.5, metavar="T",
                        help="the cut-off on the surrogate's boundary channel (default %(default)s, as the router "
                             "predicts; the mask's stays 0.5): a lower one draws more of the boundaries it is unsure "
                             "of")
    return parser


def predict_pretraining(parser: argparse.ArgumentParser, args) -> tuple[LabellerConfig, PairSet, TargetBatch]:
    """The default labeller, the pretraining images' pairs under its fingerprint (the labeller whose targets
    pretraining reads, and the surrogate imitates) and the surrogate's targets for them, predicted in batches of 64 as
    the router hands it a pretraining batch, regions cut at ``--boundary-threshold``; refuses an ``--out`` that holds
    a cache already."""
    torch.set_num_threads(args.threads)
    config = LabellerConfig()
    if TargetCache.exists(args.out):
        parser.error(f"{args.out} holds a cache already; remove it or choose another --out")
    fingerprint = config.fingerprint()
    pairs = load_pairs(args.images, args.cache, args.size, fingerprint=fingerprint, progress=False)
    surrogate = Surrogate.load(args.surrogate, expect_image_size=args.size, expect_fingerprint=fingerprint)
    return config, pairs, predict_targets(surrogate, pairs.images, args.boundary_threshold)


def predict_targets(surrogate: Surrogate, images: torch.Tensor, boundary_threshold: float = 0.5,
                    batch_size: int = 64) -> TargetBatch:
    """A surrogate's targets of ``images``, batch by batch, with its boundary channel cut at ``boundary_threshold``
    (at 0.5 the router's targets, :func:`~saliencyssl.surrogate.evaluation.predict_all`'s)."""
    return TargetBatch.cat([TargetBatch.from_channels(surrogate.predict_channels(images[start:start + batch_size])
                                                      .cpu(), boundary_threshold=boundary_threshold)
                            for start in range(0, int(images.shape[0]), batch_size)])


def write_cache(args, config: LabellerConfig, items, record_file: str, script: str, argv: list[str] | None,
                **record) -> int:
    """Write ``(hash, Target)`` items into a new cache at ``args.out`` under the labeller's fingerprint, then the record
    beside it (written last: its presence says the cache is whole) of the command that made it, the boundary cut-off
    and ``record``;
    returns how many targets were written."""
    cache = TargetCache(args.out, config.fingerprint(), params=config.params())
    written = cache.put_many(items)
    command = f"python experiments/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"command": command, "boundary_threshold": args.boundary_threshold, **record}
    (args.out / record_file).write_text(json.dumps(record, indent=1) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    import surrogate_regions

    parser = surrogate_cache_parser(__doc__, "the surrogate.pt that predicts the targets")
    parser.add_argument("--min-pixels", type=int, default=50,
                        help="the smallest region kept (default %(default)s: the labeller's 200-pixel segments at "
                             "64 px, brought to 32 px)")
    args = parser.parse_args(argv)
    config, pairs, predicted = predict_pretraining(parser, args)
    result = merged(predicted, args.min_pixels)
    for name, batch in (("surrogate", predicted), (f"merged under {args.min_pixels} px", result)):
        stats = surrogate_regions.region_stats(batch, 8)
        print(f"{name:24s} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items() if k != "images"))
    saliency = (result.saliency[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    mask, regions = result.mask[:, 0].numpy(), result.regions[:, 0].numpy()
    written = write_cache(args, config, ((h, Target.from_maps(saliency[i], mask[i], regions[i]))
                                         for i, h in enumerate(pairs.hashes)),
                          MADE_BY, "merged_regions_cache.py", argv, min_pixels=args.min_pixels,
                          surrogate=str(args.surrogate))
    print(f"wrote {written} targets into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
