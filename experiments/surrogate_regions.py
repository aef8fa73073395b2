"""How the surrogate's regions differ from the exact labeller's, as DetCon-S sees them.

DetCon-S pools the backbone's features over the RC regions of each view, brought down to an 8x8
grid at 32 px (saliencyssl.ssl.detcon.cell_labels: each 4x4-pixel cell takes the region covering
most of it; a region takes part in the loss when it owns a cell). The surrogate predicts a region
boundary channel and labels the 4-connected components between its boundaries
(TargetBatch.from_channels). In the downstream parity (docs/surrogate.md) its targets pretrain
backbones that are level with exact targets on the linear probe and up to a point below on kNN;
this measures, on the pretraining images themselves (no view transform), what differs:

- regions per image, and those of at least 16 and 64 pixels;
- regions owning a cell of the grid, those of them under 64 pixels, and the share of cells the
  largest owns;
- the foreground mask's area and the share of images with none;
- how many of the exact region boundaries each draws (recall) and how many of its own lie on one (precision),
  with the fidelity's 1-pixel tolerance (saliencyssl.surrogate.evaluation.boundary_scores).

    python experiments/surrogate_regions.py ../shared/data/cifar10/train --cache runs/caches/cifar \\
        --surrogate "10,000 images=runs/exp/parity/surrogate/surrogate.pt" \\
        --surrogate "40,000 images=runs/exp/parity/surrogate_all/surrogate.pt" \\
        --surrogate "40,000 images, training seed 1=runs/exp/parity/surrogate_all_seed1/surrogate.pt" \\
        --surrogate "40,000 images, boundary term x3=runs/exp/parity/surrogate_all_b30/surrogate.pt" \\
        --surrogate "40,000 images, boundary term x10=runs/exp/parity/surrogate_all_b100/surrogate.pt" \\
        --targets "surrogate, 40,000 images, regions under 50 px merged=runs/caches/cifar_surrogate_merged" \\
        --targets "surrogate, 40,000 images, boundary cut at 0.3=runs/caches/cifar_surrogate_cut" \\
        --targets "surrogate, 40,000 images, boundary cut at 0.3, regions under 50 px merged=runs/caches/cifar_surrogate_recut" \\
        --targets "exact labeller, coarsened to the 40,000-image surrogate's regions=runs/caches/cifar_exact_coarsened" \\
        --json results/raw/surrogate_regions.json
    python experiments/collect_results.py surrogate_regions --runs results/raw/surrogate_regions.json

The first four surrogates are those experiments/surrogate_parity.sh trains (STEPS=1248): the third is the second's
recipe again with another training seed, for as many optimiser steps, which says how far two trainings of one recipe
lie apart; the fourth is the second's recipe with the boundary term's weight tripled, for as many steps (on two
threads). The fifth is the fourth with the weight ten times the default (on one thread, with other jobs on the
machine):

    saliency-ssl train-surrogate runs/data/cifar40k --cache runs/caches/cifar --out runs/exp/parity/surrogate_all_b100 \\
        --max-steps 21846 --threads 1 --seed 0 --lambda-boundary 100 --quiet

and each scored by `saliency-ssl fidelity ../shared/data/cifar10/test --cache runs/caches/cifar --surrogate
RUN/surrogate.pt --json RUN/test.json`, which the notes' agreement figures read.

The caches are the ones surrogate_parity.sh makes for its merged, cut, recut and coarsened arms; the JSON is small and
committed, so the table can be collected again without them.

Found (results/surrogate_regions_cifar10.json): see docs/findings.md, "The surrogate" (the parity table is in
docs/surrogate.md, "How good it is").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from saliencyssl.ssl.detcon import cell_labels
from saliencyssl.surrogate.evaluation import boundary_scores, predict_all, region_edges
from saliencyssl.surrogate.model import Surrogate
from saliencyssl.surrogate.pairs import load_pairs
from saliencyssl.target import TargetBatch, compact_labels


def region_stats(targets: TargetBatch, grid: int, chunk: int = 1000) -> dict[str, float]:
    """Means over the images of a batch of targets (see the module's docstring); the grid is ``grid x grid``."""
    regions = compact_labels(targets.regions)  # 0..R-1 within each image
    n, _, h, w = regions.shape
    sizes = [torch.bincount(row) for row in regions.reshape(n, h * w)]  # pixels of each label 0..R-1, none empty
    owning, small, largest = [], [], []
    for start in range(0, n, chunk):  # cell_labels counts (chunk, cells, labels): bounded memory
        part = regions[start:start + chunk]
        for i, row in enumerate(cell_labels(part, (grid, grid), int(part.max()) + 1), start):
            owned = torch.bincount(row)
            owners = owned.nonzero().flatten()
            owning.append(len(owners))
            small.append(int((sizes[i][owners] < 64).sum()))
            largest.append(float(owned.max()) / row.numel())
    area = targets.mask.reshape(n, -1).float().mean(dim=1).numpy()
    return {"images": n,
            "regions": float(np.mean([len(c) for c in sizes])),
            "regions_16px": float(np.mean([int((c >= 16).sum()) for c in sizes])),
            "regions_64px": float(np.mean([int((c >= 64).sum()) for c in sizes])),
            "regions_owning_a_cell": float(np.mean(owning)),
            "small_regions_owning_a_cell": float(np.mean(small)),
            "largest_region_cells": float(np.mean(largest)),
            "mask_area": float(area.mean()),
            "no_mask": float((area == 0).mean())}


def boundary_agreement(targets: TargetBatch, exact: TargetBatch) -> dict[str, float]:
    """Means over the images of the region boundary recall and precision of ``targets`` against ``exact``, with the
    fidelity's tolerance (an image where neither has a boundary scores 1)."""
    scores = boundary_scores(region_edges(targets.regions), region_edges(exact.regions))
    return {"boundary_recall": float(np.mean(scores["boundary_recall"])),
            "boundary_precision": float(np.mean(scores["boundary_precision"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="the pretraining images (a folder or CIFAR-10 batches)")
    parser.add_argument("--cache", type=Path, required=True, help="the cache holding their exact targets")
    parser.add_argument("--surrogate", action="append", default=[], metavar="NAME=PATH",
                        help="a surrogate to compare, with the name its row takes (repeatable)")
    parser.add_argument("--targets", action="append", default=[], metavar="NAME=CACHE",
                        help="the same images' targets from another cache, e.g. one experiments/"
                             "merged_regions_cache.py or coarsened_exact_cache.py wrote, with the name its row "
                             "takes (repeatable)")
    parser.add_argument("--size", type=int, default=32, help="the pretraining image size (default %(default)s)")
    parser.add_argument("--grid", type=int, default=8,
                        help="DetCon-S's feature grid at that size (default %(default)s: 4x4-pixel cells at 32 px)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="where the figures go")
    args = parser.parse_args(argv)
    # the notes the experiments' caches keep of the command that made them
    from coarsened_exact_cache import MADE_BY as COARSENED_RECORD
    from merged_regions_cache import MADE_BY as MERGED_RECORD

    named, caches = [], []
    for item in args.surrogate:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            parser.error(f"--surrogate {item!r}: expected NAME=PATH of a surrogate.pt that exists")
        named.append((name, Path(path)))
    for item in args.targets:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_dir():
            parser.error(f"--targets {item!r}: expected NAME=CACHE of a cache folder that exists")
        caches.append((name, Path(path)))
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.images, args.cache, args.size, progress=False)
    exact = pairs.targets

    def row(targets: TargetBatch) -> dict[str, float]:
        return {**region_stats(targets, args.grid), **boundary_agreement(targets, exact)}

    rows = {"exact labeller": row(exact)}
    for name, path in named:
        surrogate = Surrogate.load(path, expect_image_size=args.size)
        rows[f"surrogate, {name}"] = row(predict_all(surrogate, pairs.images))
    for name, cache in caches:
        other = load_pairs(args.images, cache, args.size, fingerprint=pairs.fingerprint, progress=False)
        if other.hashes != pairs.hashes:
            parser.error(f"--targets {name}={cache}: it holds targets of {len(other)} of the images, "
                         f"the exact cache of {len(pairs)}; it must hold every one")
        rows[name] = row(other.targets)
    report = {"date": time.strftime("%Y-%m-%d"), "images": str(args.images), "size": args.size, "grid": args.grid,
              "surrogates": {name: str(path) for name, path in named},
              "caches": {name: str(path) for name, path in caches}, "rows": rows,
              "made_by": {name: json.loads((path / record).read_text())["command"] for name, path in caches
                          for record in (MERGED_RECORD, COARSENED_RECORD) if (path / record).is_file()},
              "command": "python experiments/surrogate_regions.py " + " ".join(
                  f'"{a}"' if " " in a else a for a in (argv if argv is not None else sys.argv[1:]))}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    for name, stats in rows.items():
        print(f"{name:32s} " + " ".join(f"{k} {v:.3f}" for k, v in stats.items() if k != "images"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
