"""Label every image below a folder with the exact labeller and store the targets in a cache.

Each image gets Cheng et al.'s RC saliency map, SaliencyCut mask and RC region segmentation,
stored under the content hash of its decoded pixels and the labeller's parameter fingerprint.
The job is resumable: a rerun (after Ctrl-C, a crash or SIGKILL) skips what the cache holds.

Examples:
  saliency-ssl label ../shared/data/salbench/images --cache runs/cache --workers 2
  saliency-ssl label photos/ --cache runs/cache --max-side 200 --export runs/maps
  saliency-ssl label cifar/train --cache runs/cache --scale 2
  saliency-ssl label photos/ --cache runs/cache --scheduler local:4      (Dask LocalCluster)
  saliency-ssl label /shared/photos --cache runs/cache --scheduler tcp://head:8786
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from saliencyssl.app.options import add_labeller_options, check_count, cpu_limit, fail, labeller_config_from_args
from saliencyssl.cache import CacheOpenError, TargetCache
from saliencyssl.cache.executors import WorkerDiedError, default_workers, make_executor
from saliencyssl.cache.labelling import DEFAULT_IMAGE_TIMEOUT, LabelLimits, LabelSummary, label_folder
from saliencyssl.saliency import DEFAULT_MAX_PIXELS, LabellerConfig

SUMMARY = "exact targets of an image folder into a cache"

#: Exit status when a worker process died (the job is resumable).
WORKER_DIED = 3


@dataclass
class LabelConfig:
    """A labelling job.

    Attributes:
        images: the image folder (searched recursively).
        cache: the cache folder (created if missing).
        labeller: the labeller's parameters (part of the cache key).
        workers: worker processes (``None``: the CPUs available; 0: this process).
        scheduler: a Dask scheduler address or ``local:N`` instead of the pool.
        export: also write 8-bit HC/RC maps and 0/255 masks per image here.
        json: write the end summary here.
        limits: pixel budget and per-image time limit.
        progress: show progress bars.
    """

    images: Path
    cache: Path
    labeller: LabellerConfig = field(default_factory=LabellerConfig)
    workers: int | None = None
    scheduler: str | None = None
    export: Path | None = None
    json: Path | None = None
    limits: LabelLimits = field(default_factory=LabelLimits)
    progress: bool = True

    def __post_init__(self) -> None:
        self.images, self.cache = Path(self.images), Path(self.cache)
        if not self.images.is_dir():
            raise ValueError(f"{self.images} is not a folder; give the folder that holds the images")
        check_count("--workers", self.workers, 0, cpu_limit())
        if self.json is not None and Path(self.json).is_dir():
            raise ValueError(f"--json {self.json} is a folder; give a file name, e.g. --json "
                             f"{Path(self.json) / 'label.json'}")


def run(config: LabelConfig) -> LabelSummary:
    """Label the folder into the cache (see :func:`saliencyssl.cache.labelling.label_folder`).

    Raises:
        CacheOpenError: the cache folder cannot be used.
        WorkerDiedError: a worker process died (what is stored is kept; rerun to resume).
        FileNotFoundError, ValueError: no images, an export folder inside the image folder.
    """
    fingerprint = config.labeller.fingerprint()
    cache = TargetCache(config.cache, fingerprint, params=config.labeller.params())
    executor = make_executor(config.workers if config.workers is not None else default_workers(), config.scheduler)
    try:
        summary = label_folder(config.images, cache, config.labeller, executor=executor, export_dir=config.export,
                               progress=config.progress, limits=config.limits)
    finally:
        executor.close()
        cache.close()
    if config.json:
        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(json.dumps({"fingerprint": fingerprint, "params": config.labeller.params(),
                                           **summary.as_dict()}, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-ssl label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
                             f"faster than its pixels (default {DEFAULT_MAX_PIXELS:,} = 2048x1024; not part of the "
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
        config = LabelConfig(images=args.images, cache=args.cache, labeller=labeller_config_from_args(args),
                             workers=args.workers, scheduler=args.scheduler, export=args.export, json=args.json,
                             limits=LabelLimits(max_pixels=args.max_pixels, image_timeout=args.image_timeout or None),
                             progress=not args.quiet)
    except ValueError as error:  # --scale 0, --max-side 0, a --json folder, ...
        return fail(str(error))
    try:
        summary = run(config)
    except (FileNotFoundError, ValueError, CacheOpenError, ImportError) as error:
        return fail(str(error))  # no images; an export folder inside IMAGES_DIR; damage in cache.db; no Dask
    except OSError as error:  # a --cache that is a file, an unreachable scheduler
        return fail(str(error))
    except WorkerDiedError as error:
        return fail(f"{error}. Every target stored so far is kept in {config.cache}: rerun the same command to go on "
                    f"(with fewer --workers, or a smaller --max-pixels, if memory ran out)", WORKER_DIED)
    except KeyboardInterrupt:
        return fail(f"interrupted; every target stored so far is kept in {config.cache}: rerun the same command to "
                    f"go on", 130)
    print(f"labeller fingerprint {config.labeller.fingerprint()} -> cache {config.cache}")
    print("\n".join(summary.lines()))
    for warning in summary.warnings():
        print(f"WARNING: {warning}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
