"""Draw a batch as the model sees it under a policy (the paper's Fig. 8), for a person to look at.

Rows of the picture: the images, then two independent views of each (a view rendered from the
target -- saliency view or composite -- from the whole image first, then the policy's
augmentations). On the images, each view's RandomResizedCrop is outlined (view 1 cyan, view 2
magenta) and, for a guided crop (``salcrop``), the box its centres are drawn in (yellow). Images
are drawn at random among those the cache holds a target for (any image when the policy needs
no targets).

Examples:
  saliency-ssl views runs/quickstart/data/train --cache runs/quickstart/cache --policy sal+default --out views.png
  saliency-ssl views ../shared/data/cifar10/test --cache runs/cache --policy sal --image-size 32 --out sal.png
  saliency-ssl views photos/ --cache runs/cache --policy "sal+default,view=cut" --image-size 96 --out cut.png
  saliency-ssl views photos/ --cache runs/cache --policy salcrop+default --image-size 96 --out salcrop.png
  saliency-ssl views photos/ --cache runs/cache --policy "comp1+default,bg=swap" --image-size 96 --out comp.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saliencyssl.app.options import (add_labeller_options, check_count, check_output_file, fail, label_command,
                                     labeller_config_from_args, one_line_errors)
from saliencyssl.augment import (PRESETS, FrozenPack, SSLAugmentation, TargetRouter, TrainingImages, parse_policy,
                                 policy_summary)
from saliencyssl.cache import TargetCache
from saliencyssl.cache.store import cache_fingerprints
from saliencyssl.datasets import check_image_size, check_memory
from saliencyssl.saliency import LabellerConfig
from saliencyssl.saliency.params import describe_params
from saliencyssl.augment.normalize import from_model_input
from saliencyssl.visualize import image_grid, save_rgb

SUMMARY = "a picture of the views a policy makes, with crops and guiding boxes drawn"


#: The most images one picture shows (each is drawn three times, at up to 1,024 px).
MAX_COUNT = 64
#: RGB outline colours: each view's crop, and the box a guided crop's centre is drawn in.
CROP_COLOURS = ((0, 220, 255), (255, 0, 255))
BOX_COLOUR = (255, 230, 0)


def to_uint8(views: torch.Tensor) -> list[np.ndarray]:
    images = from_model_input(views.cpu())
    return [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images]


def outline(image: np.ndarray, tile: int, crops: list[dict | None]) -> np.ndarray:
    """The image enlarged to ``tile`` pixels (nearest), with the crops of the views drawn on it.

    Args:
        image: ``(S, S, 3)`` uint8.
        tile: side of the drawn tile in pixels.
        crops: per view, ``{"src": (4, 2) crop corners (x, y), inclusive; "box": (4,) (row0, col0,
            row1, col1) or None}`` from :attr:`SSLAugmentation.last_crop`, or None (no crop).
    """
    import cv2

    s = image.shape[0]
    scale = tile / s
    out = np.ascontiguousarray(cv2.resize(image, (tile, tile), interpolation=cv2.INTER_NEAREST))

    def rect(x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int]) -> None:
        cv2.rectangle(out, (int(round(x0 * scale)), int(round(y0 * scale))),
                      (int(round((x1 + 1) * scale)) - 1, int(round((y1 + 1) * scale)) - 1), colour, 1)

    for crop in crops:
        if crop is not None and crop.get("box") is not None:
            r0, c0, r1, c1 = (float(v) for v in crop["box"])
            rect(c0, r0, c1, r1, BOX_COLOUR)
            break
    for crop, colour in zip(crops, CROP_COLOURS):
        if crop is not None:
            (x0, y0), (x1, y1) = crop["src"][0].tolist(), crop["src"][2].tolist()
            rect(x0, y0, x1, y1, colour)
    return out


def crop_of(params: dict | None, i: int) -> dict | None:
    """Image ``i``'s crop and guiding box from :attr:`SSLAugmentation.last_crop` (None: no crop)."""
    if params is None or float(params["batch_prob"][i]) < 0.5:  # no crop, or this batch skipped it (crop < 1)
        return None
    guided = "guided" in params and bool(params["guided"][i])
    return {"src": params["src"][i].cpu(), "box": params["box"][i].cpu() if guided else None}


class NoTargetsError(LookupError):
    """No image of the set has a target of the labeller in the cache; ``held`` lists the fingerprints it holds."""

    def __init__(self, message: str, held: dict):
        super().__init__(message)
        self.held = held


@dataclass
class ViewsConfig:
    """What to draw: ``count`` images of ``data`` and two views of each under ``policy``, into ``out``.

    Attributes:
        data: image folder or CIFAR-10 batches.
        out: the PNG (or JPEG) to write, outside ``data``; an existing file is replaced only when it
            is a PNG or JPEG.
        cache: target cache (needed when the policy reads targets).
        policy: a preset or free policy string.
        image_size: the training side length (drawn at 64 px or more).
        count: images to show.
        seed: which images and which random views.
        labeller: the labeller whose targets the cache holds.
    """

    data: Path
    out: Path
    cache: Path | None = None
    policy: str = "sal+default"
    image_size: int = 32
    count: int = 8
    seed: int = 0
    labeller: LabellerConfig = field(default_factory=LabellerConfig)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        check_output_file(self.out, "--out", (".png", ".jpg", ".jpeg"), {"DATA": self.data}, stem="views")
        check_count("--count", self.count, 1, MAX_COUNT)
        check_image_size(self.image_size, "--image-size")
        try:
            self.parsed_policy = parse_policy(self.policy)
        except ValueError as error:
            raise ValueError(f"--policy: {error}") from None
        if self.parsed_policy.uses_targets:
            if self.cache is None:
                raise ValueError(f"policy {self.policy!r} reads targets (saliency view, composite or guided crop): "
                                 f"pass --cache CACHE_DIR (fill it with {label_command(self.data, 'CACHE_DIR')})")
            if not TargetCache.exists(self.cache):
                raise ValueError(f"--cache {self.cache} is not a cache folder (no cache.db); fill it with: "
                                 f"{label_command(self.data, self.cache, self.labeller)}")


def run(config: ViewsConfig) -> Path:
    """Draw the picture; returns its path.

    Raises:
        NoTargetsError: the policy reads targets and none of the images has one in the cache.
    """
    policy = config.parsed_policy
    images = TrainingImages(config.data, config.image_size)
    generator = torch.Generator().manual_seed(config.seed)
    candidates = torch.randperm(len(images), generator=generator)
    targets = pack = None
    if policy.uses_targets:
        fingerprint = config.labeller.fingerprint()
        with TargetCache(config.cache, fingerprint, create=False) as cache:
            pack = FrozenPack.build(images.hashes, cache, config.image_size)
        print(pack.report.line())
        candidates = candidates[pack.present_at(candidates)]
        if len(candidates) == 0:
            others = {fp: params for fp, params in cache_fingerprints(config.cache).items() if fp != fingerprint}
            raise NoTargetsError(f"no image of {config.data} has a target of labeller {fingerprint} "
                                 f"({describe_params(config.labeller.params())}) in {config.cache}", others)
    index = candidates[: config.count]
    check_memory(12 * 3 * len(index) * config.image_size ** 2 * 4, f"{len(index)} views at {config.image_size}px")
    x = images.images.subset(index.tolist()).stack(config.image_size)  # only the images drawn are decoded
    if policy.uses_targets:
        targets = TargetRouter("cache", config.image_size, pack=pack).targets(index, x)
    torch.manual_seed(config.seed)
    augment = SSLAugmentation(policy, config.image_size)
    tile = max(64, config.image_size)
    views, crops = [], []
    for _ in range(2):
        views.append(to_uint8(augment(x, targets)))
        crops.append(augment.last_crop)
    originals = [outline(img.permute(1, 2, 0).numpy(), tile, [crop_of(c, i) for c in crops])
                 for i, img in enumerate(x)]
    save_rgb(config.out, image_grid([originals, *views], tile_height=tile))
    legend = "crops of view 1 cyan, view 2 magenta" + (", guiding boxes yellow" if policy.guided_crop > 0 else "")
    print(f"wrote {config.out} (rows: images with the {legend}; view 1; view 2; "
          f"policy {policy_summary(policy, config.image_size)})")
    return config.out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-ssl views", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="image folder (class sub-folders optional) or CIFAR-10 python batches")
    parser.add_argument("--cache", type=Path, help="target cache filled by saliency-ssl label (needed by policies "
                                                  "that read targets)")
    parser.add_argument("--policy", default="sal+default", help=f"preset ({', '.join(PRESETS)}) or free policy string")
    parser.add_argument("--image-size", type=int, default=32,
                        help="training side length, as saliency-ssl pretrain --image-size (default %(default)s; drawn "
                             "at 64 px or more)")
    parser.add_argument("--count", type=int, default=8, help="images to show (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which images and which random views")
    add_labeller_options(parser)
    parser.add_argument("--out", type=Path, required=True,
                        help="PNG (or JPEG) to write, outside DATA; an existing file is replaced only when it is a "
                             "PNG or JPEG")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = ViewsConfig(data=args.data, out=args.out, cache=args.cache, policy=args.policy,
                             image_size=args.image_size, count=args.count, seed=args.seed,
                             labeller=labeller_config_from_args(args))
        run(config)
    except NoTargetsError as error:
        held = "; ".join(f"{fp} ({describe_params(params)})" for fp, params in error.held.items())
        return fail(f"{error}; label them with: {label_command(args.data, args.cache, config.labeller)}"
                    + (f", or pass the labeller options of the targets it holds: {held}" if held else ""))
    except (OSError, ValueError) as error:  # bad options, a cache.db that cannot be opened, undecodable images
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
