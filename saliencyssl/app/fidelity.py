"""Fidelity of a trained surrogate: its targets against the exact ones, image by image, and both against human masks.

Loads RUN_DIR/surrogate.pt, pairs the images below IMAGES_DIR with their exact targets from the
cache (under the labeller fingerprint the surrogate learned, at its image size), predicts, and
compares (:mod:`saliencyssl.surrogate.evaluation`): mask IoU, Dice, F-measure (beta^2 = 0.3),
precision, recall and the mask-or-no-mask decision; RC saliency MAE; region boundary F-score
(1-pixel tolerance). Every figure is printed beside the predict-nothing baseline's. With
``--masks GT_DIR``, the surrogate's mask and map and the exact labeller's are also scored against
human ground-truth masks, side by side (JSON key ``vs_masks``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from saliencyssl.app.options import check_output_file, fail, label_command, one_line_errors
from saliencyssl.files import replace_file
from saliencyssl.surrogate.model import SurrogateCheckpointError
from saliencyssl.surrogate.pairs import NoPairsError

SUMMARY = "surrogate vs exact targets, and both vs human masks"

DESCRIPTION = """\
Fidelity of a trained surrogate: its targets against the exact ones, image by image.

Loads RUN_DIR/surrogate.pt, pairs the images below IMAGES_DIR with their exact targets from the
cache (under the labeller fingerprint the surrogate learned, at its image size), predicts, and
compares: mask IoU, Dice, F-measure (beta^2 = 0.3), precision, recall and the mask-or-no-mask
decision; RC saliency MAE; region boundary F-score (1-pixel tolerance). Every figure is printed
beside the predict-nothing baseline's. With --masks GT_DIR, the surrogate's mask and map and the
exact labeller's are also scored against human ground-truth masks, side by side (JSON key vs_masks)."""

EPILOG = """\
examples:
  # CIFAR-10 test images the surrogate never saw (label them first)
  saliency-ssl label ../shared/data/cifar10/test --cache runs/cache --workers 2
  saliency-ssl fidelity ../shared/data/cifar10/test --cache runs/cache \\
      --surrogate runs/sur32/surrogate.pt --json runs/sur32/fidelity_test.json --grid runs/sur32/fidelity_test.png

  # a quick look at 500 images on the GPU
  saliency-ssl fidelity photos/ --cache runs/cache_photos --surrogate runs/sur96/surrogate.pt \\
      --limit 500 --device cuda

  # photos with human masks: surrogate and exact labeller against them (label the photos first)
  saliency-ssl label ../shared/data/salbench/images --cache runs/cache_photos
  saliency-ssl fidelity ../shared/data/salbench/images --cache runs/cache_photos \\
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


@dataclass
class FidelityConfig:
    """One fidelity evaluation (``saliency-ssl fidelity``'s options), checked when built.

    Attributes:
        images: image folder or CIFAR-10 python batches, labelled into ``cache``.
        cache: the target cache holding the images' exact targets.
        surrogate: ``RUN_DIR/surrogate.pt`` (or ``last.pt``).
        masks: folder of human ground-truth masks named like the images (``None``: none).
        json: write the figures here (``.json``, outside the image and mask folders; an existing file
            is replaced only when it is JSON).
        grid: write a picture of the best and worst images here (``.png`` or ``.jpg``, the same rules).
        grid_rows: best and worst rows each.
        limit: at most this many images, chosen by content hash.
        device: where the surrogate runs (``cpu``, ``cuda``, ``cuda:N``).
        batch_size: images per prediction.
        progress: show progress bars.
    """

    images: Path
    cache: Path
    surrogate: Path
    masks: Path | None = None
    json: Path | None = None
    grid: Path | None = None
    grid_rows: int = 8
    limit: int | None = None
    device: str = "cpu"
    batch_size: int = 256
    progress: bool = True

    def __post_init__(self) -> None:
        from saliencyssl.surrogate.training import resolve_device, usable_devices

        self.images, self.cache, self.surrogate = Path(self.images), Path(self.cache), Path(self.surrogate)
        if self.grid_rows < 1:
            raise ValueError(f"--grid-rows {self.grid_rows}: show at least 1 best and 1 worst row")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: predict at least 1 image at a time")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: give at least 1 image (or leave it out for all)")
        inputs = {"IMAGES_DIR": self.images, "--masks": self.masks}
        check_output_file(self.json, "--json", (".json",), inputs)
        check_output_file(self.grid, "--grid", (".png", ".jpg", ".jpeg"), inputs)
        try:
            resolve_device(self.device)
        except ValueError:
            choices = usable_devices()
            options = ("cpu (torch sees no CUDA device here)" if choices == ["cpu"]
                       else "one of " + ", ".join(choices))
            raise ValueError(f"--device {self.device}: torch cannot run on it here; choose {options}") from None


def run(config: FidelityConfig) -> dict:
    """Score the surrogate on the images; print the report, write the JSON and the picture if asked.

    Returns:
        The figures (:func:`~saliencyssl.surrogate.evaluation.fidelity_report`) with the run's
        details and, with ``masks``, ``vs_masks``: what the JSON holds.

    Raises:
        FileNotFoundError, SurrogateCheckpointError: no surrogate, or not a usable one.
        NoPairsError: no image has a target of the surrogate's labeller in the cache.
        OSError, ValueError: no images, a damaged cache, masks that do not pair with the images.
    """
    import torch

    from saliencyssl.datasets import open_image_set
    from saliencyssl.saliency import LabellerConfig
    from saliencyssl.surrogate.evaluation import (evaluate_surrogate, fidelity_grid, format_report, format_vs_masks,
                                                load_human_masks, match_masks, vs_masks_report)
    from saliencyssl.surrogate.model import Surrogate
    from saliencyssl.surrogate.pairs import contains_hashes, describe_misses, load_pairs
    from saliencyssl.visualize import save_rgb

    surrogate = Surrogate.load(config.surrogate, device=config.device)
    labeller = None
    if surrogate.labeller_params:
        try:
            labeller = LabellerConfig.from_params(surrogate.labeller_params)
        except (TypeError, ValueError):
            labeller = None
    start = time.perf_counter()
    image_set = human = None
    if config.masks is not None:  # pair the masks first: a wrong folder fails before any work
        image_set = open_image_set(config.images)
        match_masks(config.images, image_set.names, config.masks)
    pairs = load_pairs(config.images, config.cache, surrogate.image_size, fingerprint=surrogate.fingerprint,
                       config=labeller, limit=config.limit, progress=config.progress, image_set=image_set)
    if image_set is not None:
        human = load_human_masks(image_set, pairs.names, config.masks, surrogate.image_size)
    for line in describe_misses(pairs):
        print(line, file=sys.stderr)
    if pairs.misses:
        print(f"label them with: {label_command(config.images, config.cache, pairs.labeller_params)}",
              file=sys.stderr)
    seen = 0
    prefixes = surrogate.meta.get("train_hash_prefixes")
    if isinstance(prefixes, torch.Tensor):
        seen = int(contains_hashes(prefixes, pairs.hashes).sum())
        if seen:
            print(f"WARNING: {seen} of the {len(pairs)} images were in the surrogate's training set; these figures "
                  f"are not on unseen images", file=sys.stderr)
    if human is not None and human.without:
        print(f"{len(human.without)} of the {len(pairs)} images have no mask in {config.masks} and are left out of "
              f"the comparison with human masks: {', '.join(human.without[:5])}"
              f"{' ...' if len(human.without) > 5 else ''}", file=sys.stderr)
    exact = pairs.targets
    result = evaluate_surrogate(surrogate, pairs.images, exact, batch_size=config.batch_size,
                                progress=config.progress)
    vs_masks = None
    if human is not None:
        index = torch.from_numpy(human.indices)
        vs_masks = vs_masks_report(human.masks, exact.index_select(index), result.prediction.index_select(index),
                                   names=[pairs.names[i] for i in human.indices])
        vs_masks.update(masks_dir=str(config.masks), n_without_mask=len(human.without))
    seconds = time.perf_counter() - start
    report = result.report
    print(f"surrogate {config.surrogate} ({surrogate.image_size}px, labeller {surrogate.fingerprint}) on "
          f"{len(pairs)} images of {config.images}:")
    print("\n".join(format_report(report)))
    if vs_masks is not None:
        print("\n".join(format_vs_masks(vs_masks)))
    out = {**report, "surrogate": str(config.surrogate), "images_dir": str(config.images), "cache": str(config.cache),
           "image_size": surrogate.image_size, "fingerprint": surrogate.fingerprint, "limit": config.limit,
           "misses": len(pairs.misses), "n_seen_in_training": seen, "seconds": round(seconds, 2),
           "device": str(surrogate.device), "torch": str(torch.__version__), "machine": platform.machine()}
    if vs_masks is not None:
        out["vs_masks"] = vs_masks
    if config.json:
        config.json = Path(config.json)
        config.json.parent.mkdir(parents=True, exist_ok=True)
        replace_file(config.json, json.dumps(out, indent=2))
        print(f"wrote {config.json}")
    if config.grid:
        grid = fidelity_grid(pairs.images, exact, result.prediction, result.scores, k=config.grid_rows)
        save_rgb(config.grid, grid)
        print(f"wrote {config.grid} (top: best {min(config.grid_rows, len(pairs))}, bottom: worst)")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saliency-ssl fidelity", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="image folder or CIFAR-10 python batches")
    p.add_argument("--cache", type=Path, required=True, metavar="CACHE_DIR",
                   help="target cache holding these images' exact targets (saliency-ssl label)")
    p.add_argument("--surrogate", type=Path, required=True, metavar="PATH",
                   help="RUN_DIR/surrogate.pt (or last.pt) from saliency-ssl train-surrogate")
    p.add_argument("--masks", type=Path, default=None, metavar="GT_DIR",
                   help="folder of human ground-truth masks named like the images: also score the surrogate and "
                        "the exact labeller against them at the surrogate's size on the centre crop (see below)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                   help="write the figures as JSON (outside IMAGES_DIR and GT_DIR; an existing file is replaced "
                        "only when it is JSON)")
    p.add_argument("--grid", type=Path, default=None, metavar="OUT.png",
                   help="write a picture of the best and worst images (image | exact | surrogate)")
    p.add_argument("--grid-rows", type=int, default=8, metavar="K", help="best and worst rows each (default 8)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N images, chosen by content hash")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N where torch sees a GPU (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per prediction (default 256)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = FidelityConfig(images=args.images, cache=args.cache, surrogate=args.surrogate, masks=args.masks,
                                json=args.json, grid=args.grid, grid_rows=args.grid_rows, limit=args.limit,
                                device=args.device, batch_size=args.batch_size, progress=not args.quiet)
        run(config)
    except NoPairsError as error:
        command = label_command(error.images_dir, error.cache_dir, error.params)
        return fail(f"{error}; label them with the surrogate's labeller: {command}")
    except (FileNotFoundError, SurrogateCheckpointError) as error:
        return fail(error)
    except (OSError, ValueError) as error:  # a cache.db that cannot be opened, masks that do not pair
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
