#!/usr/bin/env python
"""The main job on the embedded default data, end to end, in a few minutes on a 2-core CPU.

Writes the embedded data (scikit-image's bundled photos and generated shape images; nothing
is downloaded) to OUT/data, labels every image with the exact labeller into OUT/cache, and draws
a picture grid (image | HC | RC | SaliencyCut mask | regions) to OUT/labeller_grid.png.

Example:
  python scripts/quickstart.py                 # writes runs/quickstart/
  python scripts/quickstart.py --out /tmp/qs --workers 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from saliencyssl.cache import TargetCache
from saliencyssl.cache.executors import make_executor
from saliencyssl.cache.labelling import default_workers, label_folder
from saliencyssl.datasets import open_image_set
from saliencyssl.embedded import write_embedded_dataset
from saliencyssl.saliency import Labeller, LabellerConfig
from saliencyssl.visualize import LABEL_GRID_HEADER, image_grid, labeller_grid_row, save_rgb


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="labelling processes (default: CPUs available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (default %(default)s)")
    return parser


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    started = time.perf_counter()

    stage("embedded data: scikit-image photos and generated shape images")
    data = write_embedded_dataset(out / "data", seed=args.seed)
    for key in ("photos", "train", "test"):
        print(f"  {key:7s} {len(open_image_set(data[key], keep_decoded=False))} images in {data[key]}")

    stage("exact labelling (HC, RC, SaliencyCut, regions) into the cache")
    config = LabellerConfig()
    cache = TargetCache(out / "cache", config.fingerprint(), params=config.params())
    executor = make_executor(args.workers if args.workers is not None else default_workers())
    try:
        for key in ("photos", "train", "test"):
            summary = label_folder(data[key], cache, config, executor=executor)
            print(f"  {key}: " + "; ".join(line.strip() for line in summary.lines()[1:6]))
    finally:
        executor.close()

    stage("labeller grid")
    labeller = Labeller(config)
    rows = []
    photos = open_image_set(data["photos"], keep_decoded=False)
    train = open_image_set(data["train"])
    samples = [photos.image(i) for i in range(len(photos))] + [train.image(i) for i in range(0, len(train), 61)]
    for image in samples:
        labelling = labeller.label(image, with_hc=True)
        rows.append(labeller_grid_row(image, labelling.hc, labelling.target))
    grid = save_rgb(out / "labeller_grid.png", image_grid(rows, tile_height=128, header=LABEL_GRID_HEADER))
    print(f"  wrote {grid}")
    print(f"\ndone in {time.perf_counter() - started:.0f} s; results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
