"""The exact labeller run on the surrogate's own pixels, scored against human masks beside its targets of the photos.

The photo surrogate sees each photo as the ``fit_square`` centre crop at ``S`` px (96 by default) and learns the
targets the labeller drew on the whole photo at its own size. Comparing it with the labeller tells how well it
imitates; it does not tell how much of the photo's information survives at ``S`` px. This script does: it runs the
same labeller (``saliency-ssl label``'s defaults) on exactly the ``S x S`` image the surrogate is given, and scores
those targets against the human masks with the figures ``saliency-ssl fidelity --masks`` uses, beside the labeller's
targets of the whole photo (from the cache, brought to ``S`` px as fidelity brings them) and the centred box.

If the surrogate scores above the labeller run on its own input, it has learned from the whole photos' targets
something the ``S`` px pixels do not give the labeller; if the whole-photo labeller is far above both, the side the
surrogate works at is a lever (``--size``).

Found (results/photo_surrogate_size.json, docs/surrogate.md): on the surrogate's 96 px input the labeller's F falls
from 0.846 / 0.868 / 0.862 (street photos / horses / salbench, its targets of the whole photos) to 0.493 / 0.585 /
0.709, below the 96 px surrogate's 0.872 / 0.755 / 0.777 on every set; on the 128 px input it gains on street
photos and horses (0.579, 0.680) and stays far below.

    python experiments/labeller_at_input.py ../shared/data/weizmann_horses/images \\
        ../shared/data/weizmann_horses/masks --cache runs/caches/photos --size 96 --json OUT/at_input_96/horses.json

The images must have been labelled into ``--cache`` with ``saliency-ssl label``'s defaults. Output JSON: ``n``,
``image_size``, and for ``exact`` (the whole photo's target), ``at_input`` (the labeller on the ``S x S`` input) and
``centre_box``: ``f`` (beta^2 = 0.3), ``iou``, ``mae``, ``precision``, ``recall`` as in ``vs_masks``. Its time is
not measured here: ``benchmarks/bench_surrogate.py`` times the labeller on these crops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from saliencyssl.datasets import open_image_set
from saliencyssl.files import replace_file
from saliencyssl.saliency import Labeller
from saliencyssl.surrogate.evaluation import load_human_masks, match_masks, vs_masks_report
from saliencyssl.surrogate.pairs import load_pairs
from saliencyssl.target import TargetBatch

#: the figures of each row kept in the JSON
KEYS = ("f", "iou", "mae", "precision", "recall")


def label_at_input(images: torch.Tensor, progress: bool = True) -> TargetBatch:
    """The default labeller's targets of ``(N, 3, S, S)`` uint8 RGB images, each labelled as an image of its own."""
    labeller = Labeller()
    return TargetBatch.from_targets([labeller(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
                                     for image in tqdm(images, desc="labelling the inputs", disable=not progress)])


def score(images: Path, masks: Path, cache: Path, size: int, progress: bool = True) -> dict:
    """The whole photo's target, the labeller on the ``size`` px input and the centred box against the human masks."""
    image_set = open_image_set(images)
    match_masks(images, image_set.names, masks)  # a wrong folder fails before any work
    pairs = load_pairs(images, cache, size, config=Labeller().config, progress=progress, image_set=image_set)
    if pairs.misses:
        raise SystemExit(f"error: {len(pairs.misses)} images of {images} have no target in {cache}; label them "
                         f"first: saliency-ssl label {images} --cache {cache}")
    human = load_human_masks(image_set, pairs.names, masks, size)
    index = torch.from_numpy(human.indices)
    at_input = label_at_input(pairs.images.index_select(0, index), progress)  # the pixels the surrogate is given
    report = vs_masks_report(human.masks, pairs.targets.index_select(index), at_input,
                             names=[pairs.names[i] for i in human.indices])
    return {"images_dir": str(images), "masks_dir": str(masks), "n": report["n"], "image_size": size,
            "n_without_mask": len(human.without),
            **{who: {key: report[source][key] for key in KEYS}
               for who, source in (("exact", "exact"), ("at_input", "surrogate"), ("centre_box", "centre_box"))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of photos, labelled into --cache")
    parser.add_argument("masks", type=Path, metavar="MASKS_DIR", help="their human masks, paired by file stem")
    parser.add_argument("--cache", type=Path, required=True, help="the target cache the photos were labelled into")
    parser.add_argument("--size", type=int, default=96, help="the surrogate's side S (default 96)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT.json", help="where to write the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.size < 8:
        parser.error(f"--size {args.size}: give a side of at least 8 px")
    out = score(args.images, args.masks, args.cache, args.size, progress=not args.quiet)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    replace_file(args.json, json.dumps(out, indent=2))
    print(f"{args.images} at {args.size} px, {out['n']} images: F whole photo {out['exact']['f']:.3f}, on the "
          f"{args.size} px input {out['at_input']['f']:.3f}, centred box {out['centre_box']['f']:.3f}; wrote "
          f"{args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
