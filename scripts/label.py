#!/usr/bin/env python
"""Label every image below a folder with the exact labeller and store the targets in a cache.

Each image gets Cheng et al.'s RC saliency map, SaliencyCut mask and RC region segmentation,
stored under the content hash of its decoded pixels and the labeller's parameter fingerprint.
The job is resumable: a rerun (after Ctrl-C, a crash or SIGKILL) skips what the cache holds.

Examples:
  python scripts/label.py ../shared/data/salbench/images --cache runs/cache --workers 2
  python scripts/label.py photos/ --cache runs/cache --max-side 200 --export runs/maps
  python scripts/label.py cifar/train --cache runs/cache --scale 2
  python scripts/label.py photos/ --cache runs/cache --scheduler local:4      (Dask LocalCluster)
  python scripts/label.py /shared/photos --cache runs/cache --scheduler tcp://head:8786
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from saliencyssl.cache import CacheOpenError, TargetCache
from saliencyssl.cache.executors import WorkerDiedError, default_workers, make_executor
from saliencyssl.cache.labelling import DEFAULT_IMAGE_TIMEOUT, LabelLimits, label_folder
from saliencyssl.saliency import DEFAULT_MAX_PIXELS
from saliencyssl.saliency.options import add_labeller_options, labeller_config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR",
                        help="folder of images (jpg, png, bmp, tif, webp), searched recursively")
    parser.add_argument("--cache", type=Path, required=True, metavar="CACHE_DIR",
                        help="target cache folder (created if missing; shared by every run with the same parameters)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"worker processes (default: the CPUs available, here {default_workers()}; "
                             f"0 = label in this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="send the work to Dask instead of a local pool: a scheduler address "
                             "(tcp://host:8786; workers must see IMAGES_DIR at the same path) or local:N for a "
                             "LocalCluster of N processes; needs pip install 'saliency-ssl[cluster]'")
    add_labeller_options(parser, title="labeller options (part of the cache key)")
    parser.add_argument("--export", type=Path, default=None, metavar="EXPORT_DIR",
                        help="also write <stem>_hc.png, <stem>_rc.png (8-bit maps) and <stem>_cut.png (0/255) "
                             "per image, keeping sub-folders")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"largest working size (height x width, after --scale/--min-side/--max-side) the "
                             f"labeller takes; a larger image is reported as failed, since labelling time grows "
                             f"faster than its pixels (default {DEFAULT_MAX_PIXELS:,} = 2048x2048; not part of the "
                             f"cache key)")
    parser.add_argument("--image-timeout", type=float, default=DEFAULT_IMAGE_TIMEOUT, metavar="S",
                        help=f"seconds one image may take; a slower one is reported as failed and the job goes on "
                             f"(default {DEFAULT_IMAGE_TIMEOUT:g}; 0 = no limit; applies to --workers, not to Dask "
                             f"workers)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the end summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = labeller_config_from_args(args)
    except ValueError as error:  # --scale 0, --max-side 0, ...
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.images.is_dir():
        print(f"error: {args.images} is not a folder; give the folder that holds the images", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print(f"error: --workers {args.workers}: give 0 (this process) or more worker processes", file=sys.stderr)
        return 2
    if args.json is not None and args.json.is_dir():
        print(f"error: --json {args.json} is a folder; give a file name, e.g. --json {args.json / 'label.json'}",
              file=sys.stderr)
        return 2
    try:
        limits = LabelLimits(max_pixels=args.max_pixels, image_timeout=args.image_timeout or None)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        cache = TargetCache(args.cache, config.fingerprint(), params=config.params())
        executor = make_executor(args.workers if args.workers is not None else default_workers(), args.scheduler)
    except (OSError, ImportError, ValueError) as error:  # a --cache that is a file, no Dask, a bad --scheduler
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        summary = label_folder(args.images, cache, config, executor=executor, export_dir=args.export,
                               progress=not args.quiet, limits=limits)
    except (FileNotFoundError, ValueError, CacheOpenError) as error:  # no images; an --export folder inside
        print(f"error: {error}", file=sys.stderr)                      # IMAGES_DIR; damage found in cache.db
        return 2
    except WorkerDiedError as error:
        print(f"error: {error}. Every target stored so far is kept in {args.cache}: rerun the same command to go on "
              f"(with fewer --workers, or a smaller --max-pixels, if memory ran out)", file=sys.stderr)
        return 3
    finally:
        executor.close()
    print(f"labeller fingerprint {config.fingerprint()} -> cache {args.cache}")
    print("\n".join(summary.lines()))
    for warning in summary.warnings():
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"fingerprint": config.fingerprint(), "params": config.params(),
                                         **summary.as_dict()}, indent=2))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
