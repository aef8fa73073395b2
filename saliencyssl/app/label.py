"""Label every image below a folder with the exact labeller and store the targets in a cache.

Each image gets Cheng et al.'s RC saliency map, SaliencyCut mask and RC region segmentation,
stored under the content hash of its decoded pixels and the labeller's parameter fingerprint.
The job is resumable: a rerun (after Ctrl-C, a crash or SIGKILL) skips what the cache holds.

IMAGES_DIR is an image folder, or CIFAR-10 python batches (a folder with batches.meta, or one
batch file), read as every other stage reads them: their images get the targets that
pretraining, cache export and fidelity look up.

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
import os
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from saliencyssl.app.options import (WORKER_DIED, add_labeller_options, check_count, check_outside, check_output_file,
                                     cpu_limit, fail, labeller_config_from_args, one_line_errors)
from saliencyssl.cache import CacheOpenError, TargetCache
from saliencyssl.cache.executors import WorkerDiedError, default_workers, make_executor
from saliencyssl.cache.labelling import DEFAULT_IMAGE_TIMEOUT, LabelLimits, LabelSummary, label_folder
from saliencyssl.datasets import is_cifar, open_image_set
from saliencyssl.files import replace_file
from saliencyssl.saliency import DEFAULT_MAX_PIXELS, LabellerConfig

SUMMARY = "exact targets of an image folder into a cache"

logger = logging.getLogger(__name__)

class Terminated(KeyboardInterrupt):
    """The job received ``SIGTERM``: raised in the main thread like Ctrl-C, so that every clean-up runs
    (the pool is shut down, the cache closed, the temporary folder of CIFAR images removed)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """For the block's duration, turn ``SIGTERM`` into :class:`Terminated` raised in the main thread.

    Python's default for ``SIGTERM`` is to die at once, running no ``finally`` and no ``with`` exit, so a
    ``kill`` (or a batch system's stop) would leave the temporary folder behind. Only the first signal
    raises; later ones are ignored while the clean-up runs (``SIGKILL`` still ends the job). Nothing is
    installed outside the main thread (Python allows handlers only there) or when ``SIGTERM`` is
    ignored; the previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    raised = False

    def handler(signum, frame):
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class LabelConfig:
    """A labelling job.

    Attributes:
        images: the image folder (searched recursively), or CIFAR-10 python batches (a folder or one batch file).
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
        if not self.images.is_dir() and not is_cifar(self.images):
            raise ValueError(f"{self.images} is not a folder; give the folder that holds the images (or CIFAR-10 "
                             f"python batches)")
        check_count("--workers", self.workers, 0, cpu_limit())
        check_output_file(self.json, "--json", (".json",), {"IMAGES_DIR": self.images})
        self.json = Path(self.json) if self.json is not None else None
        if is_cifar(self.images):
            check_outside(self.export, {"IMAGES_DIR": self.images if self.images.is_dir() else self.images.parent},
                          "--export")
            if self.scheduler and not self.scheduler.startswith("local:"):
                raise ValueError(f"--scheduler {self.scheduler}: the images of CIFAR-10 batches are labelled from a "
                                 f"temporary folder on this machine, which Dask workers elsewhere cannot read; use "
                                 f"--workers N or --scheduler local:N")


def run(config: LabelConfig) -> LabelSummary:
    """Label the folder into the cache (see :func:`saliencyssl.cache.labelling.label_folder`).

    Raises:
        CacheOpenError: the cache folder cannot be used.
        WorkerDiedError: a worker process died (what is stored is kept; rerun to resume).
        FileNotFoundError, ValueError: no images, an export folder inside the image folder, a CIFAR
            batch refused (:class:`~saliencyssl.imageio.ImageDecodeError`, before the cache is created).
        OSError: too little room in the temporary folder for the images of CIFAR batches.
        KeyboardInterrupt: Ctrl-C, or :class:`Terminated` on ``SIGTERM`` (after the clean-up).
    """
    fingerprint = config.labeller.fingerprint()
    summary = label_images(config.images, config.cache, config.labeller, workers=config.workers,
                           scheduler=config.scheduler, export=config.export, limits=config.limits,
                           progress=config.progress)
    if config.json:
        config.json.parent.mkdir(parents=True, exist_ok=True)
        replace_file(config.json, json.dumps({"fingerprint": fingerprint, "params": config.labeller.params(),
                                              **summary.as_dict()}, indent=2))
    return summary


def label_images(images: Path, cache: Path, labeller: LabellerConfig, *, image_set=None, workers: int | None = None,
                 scheduler: str | None = None, export: Path | None = None, limits: LabelLimits | None = None,
                 progress: bool = True) -> LabelSummary:
    """Label an image folder or CIFAR-10 batches into the cache folder ``cache``: every stage's labelling job.

    ``SIGTERM`` is raised as :class:`Terminated` for the job's duration; CIFAR images are labelled from PNG
    copies in a temporary folder (:func:`cifar_image_files`); the cache, the workers and the copies are
    closed, stopped and removed however the job ends.

    Args:
        images: the image folder, or CIFAR-10 python batches (a folder or one batch file).
        cache: the cache folder (created if missing).
        labeller: the labeller's parameters.
        image_set: ``images`` opened, or part of it (:meth:`~saliencyssl.datasets.ImageSet.subset`): only
            these images are labelled (default: all).
        workers: worker processes (``None``: the CPUs available; 0: this process).
        scheduler: a Dask scheduler address or ``local:N`` instead of the pool.
        export, limits, progress: as for :func:`~saliencyssl.cache.labelling.label_folder`.

    Returns:
        The job's summary; a failed image is named as the user knows it (``<batch file>:<index>`` for CIFAR).
    """
    images = Path(images)
    with ExitStack() as stack:
        stack.enter_context(terminate_as_interrupt())
        folder, names, paths = images, {}, image_set.paths if image_set is not None else None
        if is_cifar(images):  # read (and refused, when damaged or hostile) before the cache is created
            folder, names = stack.enter_context(cifar_image_files(images, progress, image_set))
        target_cache = stack.enter_context(TargetCache(cache, labeller.fingerprint(), params=labeller.params()))
        executor = stack.enter_context(make_executor(workers if workers is not None else default_workers(),
                                                     scheduler))
        summary = label_folder(folder, target_cache, labeller, executor=executor, paths=paths, export_dir=export,
                               progress=progress, limits=limits)
    summary.failed = [(names.get(path, path), reason) for path, reason in summary.failed]
    return summary


#: Disk a CIFAR image takes as a PNG in the temporary folder (3 KB of pixels in a 4 KB block, and its entry).
CIFAR_PNG_BYTES = 8192

#: Name of the temporary folders of CIFAR images: ``<prefix><pid of the job>-<random>``.
CIFAR_TEMP_PREFIX = "saliency-ssl-cifar-"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a pid this system cannot have): not ours to judge
    return True


def remove_stale_cifar_folders(temp_dir: str | Path | None = None) -> list[Path]:
    """Remove the temporary folders of CIFAR images that earlier jobs left when killed with ``SIGKILL``.

    A folder is removed only when its name is ``<CIFAR_TEMP_PREFIX><pid>-<random>``, it is a real folder
    (not a link) owned by this user, and no process ``pid`` exists any more. Folders of running jobs,
    of other users, and of the older unnumbered form are left alone. A folder that cannot be removed is
    skipped.

    Args:
        temp_dir: where to look (default: :func:`tempfile.gettempdir`, where the job writes them).

    Returns:
        The folders removed.
    """
    import shutil
    import stat
    import tempfile

    root = Path(temp_dir if temp_dir is not None else tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.glob(CIFAR_TEMP_PREFIX + "*"))
    except OSError:
        return removed
    for entry in entries:
        pid_text, sep, _ = entry.name[len(CIFAR_TEMP_PREFIX):].partition("-")
        if not sep or not pid_text.isdigit() or int(pid_text) <= 0:
            continue
        try:
            info = os.lstat(entry)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or _process_exists(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not os.path.lexists(entry):
            removed.append(entry)
    return removed


@contextmanager
def cifar_image_files(path: Path, progress: bool = False, image_set=None) -> Iterator[tuple[Path, dict[str, str]]]:
    """The images of CIFAR-10 python batches as lossless PNG files in a temporary folder, for the
    labelling workers (which read files by path).

    The batches are opened as every stage opens them (:func:`saliencyssl.datasets.open_image_set`:
    the restricted unpickler, labels checked), and each ``(32, 32, 3)`` uint8 image is written as
    ``<batch>/<index>.png``: PNG is lossless, so a worker decodes the very pixels the other stages
    hash, and the targets are stored under the content hashes pretraining and ``cache export`` look up.
    The folder is removed on exit, whatever happens (``SIGTERM`` included, under :func:`run`); its name
    records this process's id, so that a later job removes it when this one was killed with ``SIGKILL``
    (:func:`remove_stale_cifar_folders`, called first).

    Args:
        path: a CIFAR-10 folder or batch file.
        progress: a progress bar for large sets.
        image_set: its batches already opened, or part of them (:meth:`ImageSet.spread`): only
            these images are written (default: every image of ``path``).

    Yields:
        ``(folder, names)``: the temporary folder, and each PNG's absolute path mapped to the image's
        name, ``<batch file>:<index>``, for messages.

    Raises:
        OSError: the temporary folder's disk has too little room (set ``TMPDIR`` elsewhere).
        ImageDecodeError: a batch file is refused (see :func:`open_image_set`).
    """
    import shutil
    import tempfile

    import cv2
    from tqdm import tqdm

    image_set = open_image_set(path) if image_set is None else image_set
    for stale in remove_stale_cifar_folders():
        logger.info("removed %s, left by a labelling job that no longer runs", stale)
    with tempfile.TemporaryDirectory(prefix=f"{CIFAR_TEMP_PREFIX}{os.getpid()}-") as tmp:
        folder = Path(tmp)
        need, free = len(image_set) * CIFAR_PNG_BYTES, shutil.disk_usage(folder).free
        if need > free:
            raise OSError(f"writing the {len(image_set):,} CIFAR-10 images of {path} for the labelling workers needs "
                          f"{need / 1e9:.1f} GB in {folder.parent} and {free / 1e9:.1f} GB are free; set TMPDIR to a "
                          f"folder with room")
        names: dict[str, str] = {}
        bar = tqdm(range(len(image_set)), desc="writing CIFAR-10 images", unit="img", leave=False,
                   disable=not progress or len(image_set) < 2000)
        for i in bar:
            batch, index = image_set.names[i].rsplit(":", 1)
            file = folder / batch / f"{int(index):05d}.png"
            file.parent.mkdir(exist_ok=True)
            if not cv2.imwrite(str(file), cv2.cvtColor(image_set.image(i), cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {file} (disk full?)")
            names[os.path.abspath(file)] = f"{path if path.is_file() else path / batch}:{index}"
        yield folder, names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-ssl label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, metavar="IMAGES_DIR",
                        help="folder of images (jpg, png, bmp, tif, webp), searched recursively, or CIFAR-10 "
                             "python batches (a folder with batches.meta, or one batch file)")
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
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                        help="write the end summary as JSON (outside IMAGES_DIR; an existing file is replaced only "
                             "when it is JSON)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = LabelConfig(images=args.images, cache=args.cache, labeller=labeller_config_from_args(args),
                             workers=args.workers, scheduler=args.scheduler, export=args.export, json=args.json,
                             limits=LabelLimits(max_pixels=args.max_pixels, image_timeout=args.image_timeout or None),
                             progress=not args.quiet)
    except ValueError as error:  # --scale 0, --max-side 0, a --json folder, ...
        return fail(error)
    try:
        summary = run(config)
    except (FileNotFoundError, ValueError, CacheOpenError, ImportError) as error:
        return fail(error)  # no images; an export folder inside IMAGES_DIR; damage in cache.db; no Dask
    except OSError as error:  # a --cache that is a file, an unreachable scheduler
        return fail(error)
    except WorkerDiedError as error:
        return fail(f"{error}. Every target stored so far is kept in {config.cache}: rerun the same command to go on "
                    f"(with fewer --workers, or a smaller --max-pixels, if memory ran out)", WORKER_DIED)
    except KeyboardInterrupt as error:
        how, code = ((str(error), 128 + error.signum) if isinstance(error, Terminated) else ("interrupted", 130))
        return fail(f"{how}; every target stored so far is kept in {config.cache}: rerun the same command to "
                    f"go on", code)
    print(f"labeller fingerprint {config.labeller.fingerprint()} -> cache {config.cache}")
    print("\n".join(summary.lines()))
    for warning in summary.warnings():
        print(f"WARNING: {warning}", file=sys.stderr)
    if summary.too_few_objects:
        print("  (saliency-ssl label ... --scale 2, or --scale 4 for 32 px images; another scale is another cache "
              "key)", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
