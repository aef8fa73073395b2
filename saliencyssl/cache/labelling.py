"""Filling a cache with exact targets for every image below a folder (the label stage, :mod:`saliencyssl.app.label`).

The job runs in passes over an executor (:mod:`saliencyssl.cache.executors`):

1. **hash**: workers decode each file and return its content hash; a file that cannot be
   decoded is recorded as failed, by path, and skipped;
2. **label**: the images whose key the cache lacks are labelled by the workers, which return
   encoded targets (and HC maps when exporting); of files with identical pixels only the first
   is labelled;
3. **duplicates**: the other files with those pixels share that entry (counted as duplicates;
   their maps exported when asked).

Only this process writes the cache, in small transactions as results arrive, so a job killed
at any moment (even SIGKILL) leaves every stored entry whole, and a rerun skips them: the job
resumes where it stopped.

**Bounded work per image.** The labeller refuses an image whose working size exceeds its pixel
budget (:class:`~saliencyssl.saliency.labeller.ImageTooLargeError`, reported as a failure of that
file), and each image has a time limit (:func:`time_limit`; worker processes and labelling in
this process, not Dask's worker threads, where the pixel budget is the bound): an image that runs
over it is reported as failed, by path, and the job goes on with the next.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from saliencyssl.cache.codec import CorruptTargetError, check_storable, decode_target, encode_target
from saliencyssl.cache.executors import prepare_worker_process
from saliencyssl.cache.store import TargetCache
from saliencyssl.files import replace_file
from saliencyssl.hashing import content_hash
from saliencyssl.imageio import IMAGE_SUFFIXES, ImageDecodeError, list_images, read_image
from saliencyssl.saliency.labeller import (DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT, ImageTooLargeError, Labeller,
                                          LabellerConfig)
from saliencyssl.target import Target

#: Default per-image time limit of a labelling job, in seconds (an image within the pixel budget
#: takes about a minute at most on one core).
DEFAULT_IMAGE_TIMEOUT = 300.0
#: The longest per-image time limit (a day; the alarm timer takes no more).
MAX_IMAGE_TIMEOUT = 86_400.0

#: Above this share of images without an object, the summary warns and suggests ``--scale``.
NO_OBJECT_WARNING_SHARE = 0.5


@dataclass
class LabelSummary:
    """What a labelling job did.

    Attributes:
        total: images found.
        labelled: images labelled by this run.
        cached: images the cache already held.
        duplicates: files with the same pixels as another file of this run, which share its entry
            (labelled once).
        failed: ``(path, reason)`` of files that could not be decoded or labelled.
        no_object: images (labelled or cached) whose SaliencyCut mask is empty.
        label_seconds: labelling seconds per image as measured inside the workers.
        wall_seconds: the whole job.
        exported: images whose maps were written to the export folder (``export_dir``).
        executor: where the work ran.
    """

    total: int = 0
    labelled: int = 0
    cached: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    no_object: int = 0
    label_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    exported: int = 0
    export_dir: str = ""
    executor: str = ""
    _summed: tuple[int, float] = field(default=(0, 0.0), repr=False, compare=False)  # running_seconds_per_image's

    @property
    def with_target(self) -> int:
        return self.labelled + self.cached + self.duplicates

    @property
    def no_object_share(self) -> float:
        return self.no_object / self.with_target if self.with_target else 0.0

    @property
    def seconds_per_image(self) -> float:
        """Mean labelling seconds per labelled image (worker time, not wall time)."""
        return float(np.mean(self.label_seconds)) if self.label_seconds else 0.0

    def running_seconds_per_image(self) -> float:
        """:attr:`seconds_per_image`, summing only the times added since the last call: the progress bar asks
        after every chunk, and the mean of the whole list each time made a job of n images cost n²/chunk."""
        total = self._summed[1] + sum(self.label_seconds[self._summed[0]:])
        self._summed = (len(self.label_seconds), total)
        return total / len(self.label_seconds) if self.label_seconds else 0.0

    @property
    def too_few_objects(self) -> bool:
        """The cut found no object in more than :data:`NO_OBJECT_WARNING_SHARE` of the images (labelled too small)."""
        return bool(self.with_target and self.no_object_share > NO_OBJECT_WARNING_SHARE)

    def warnings(self) -> list[str]:
        out = []
        if self.too_few_objects:
            out.append(f"the cut found no object in {self.no_object_share:.0%} of the images. Small images lose "
                       f"their segments to Cheng's 200-pixel minimum segment; label at a larger working size, "
                       f"e.g. a scale of 2 (4 for 32 px images)")
        return out

    def lines(self) -> list[str]:
        """Human-readable end summary."""
        lines = [
            f"images found        {self.total}",
            f"labelled now        {self.labelled}",
            f"already cached      {self.cached}",
            *([f"duplicates          {self.duplicates} (the same pixels as another file: one entry, labelled once)"]
              if self.duplicates else []),
            f"failed              {len(self.failed)}",
            f"no object found     {self.no_object} of {self.with_target} ({self.no_object_share:.1%})",
            "seconds per image   " + (f"{self.seconds_per_image:.4f} (labelling, per worker)" if self.label_seconds
                                      else "- (nothing labelled)"),
            f"wall time           {self.wall_seconds:.1f} s on {self.executor}",
        ]
        if self.labelled and self.wall_seconds > 0:
            lines.append(f"throughput          {self.labelled / self.wall_seconds:.2f} images/s")
        if self.exported:
            lines.append(f"exported            {self.exported}" + (f" to {self.export_dir}" if self.export_dir else ""))
        for path, reason in self.failed[:20]:
            lines.append(f"FAILED {path}: {reason}")
        if len(self.failed) > 20:
            lines.append(f"... and {len(self.failed) - 20} more failures")
        return lines

    def as_dict(self) -> dict:
        return {"total": self.total, "labelled": self.labelled, "cached": self.cached, "duplicates": self.duplicates,
                "failed": [list(f) for f in self.failed], "no_object": self.no_object,
                "no_object_share": self.no_object_share, "seconds_per_image": self.seconds_per_image,
                "wall_seconds": self.wall_seconds, "exported": self.exported, "export_dir": self.export_dir,
                "executor": self.executor}


class ImageTimeoutError(TimeoutError):
    """Labelling one image took longer than the job's per-image limit."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`ImageTimeoutError` inside the block once ``seconds`` have passed.

    Uses ``SIGALRM``, so it acts in the main thread of a POSIX process (a pool worker, or the job
    itself with no workers) when control returns to Python; elsewhere, or with ``seconds`` falsy,
    the block runs unlimited.
    """
    usable = bool(seconds) and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise ImageTimeoutError(f"took longer than the per-image limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def signalled(error: BaseException) -> BaseException | None:
    """The interrupt (Ctrl-C, ``SIGTERM``) or per-image time-out behind ``error``, or ``None``.

    A signal handler's exception raised while compiled code runs (numba's kernels) comes back
    wrapped: ``SystemError: ... returned a result with an exception set``, the handler's exception
    its cause. Caught as a failed image it would swallow the job's interrupt; unwrapped, it stops the
    job (or counts as the image's time-out).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (KeyboardInterrupt, ImageTimeoutError)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _failure(error: Exception) -> str:
    """What a failed image's record says about ``error``; an interrupt behind it is raised again."""
    behind = signalled(error)
    if isinstance(behind, KeyboardInterrupt):
        raise behind
    if behind is not None:
        return str(behind)
    return f"{type(error).__name__}: {error}"


# -- work done in the workers (module-level functions, so they pickle) -------------------------
@dataclass(frozen=True)
class LabelLimits:
    """Bounds on the work one image may take (never part of the fingerprint: they refuse, not change).

    Attributes:
        max_pixels: largest working size (height x width) the labeller labels.
        image_timeout: seconds one image may take (``None`` or 0: no limit).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    image_timeout: float | None = DEFAULT_IMAGE_TIMEOUT

    def __post_init__(self) -> None:
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or \
                not 64 <= self.max_pixels <= MAX_PIXELS_LIMIT:
            raise ValueError(f"the pixel budget must be a whole number from 64 to {MAX_PIXELS_LIMIT:,} (an 8,192 px "
                             f"square), got {self.max_pixels!r}")
        if self.image_timeout is not None and not 0 <= self.image_timeout <= MAX_IMAGE_TIMEOUT:
            raise ValueError(f"the per-image time limit must be 0 (none) or a number of seconds up to "
                             f"{MAX_IMAGE_TIMEOUT:g}, got {self.image_timeout}")


def hash_files(job) -> list[tuple[str, str | None, str | None]]:
    """``(path, content hash, error)`` for each file of ``job``: a list of paths, or ``(paths, limits)``
    with a :class:`LabelLimits` whose time limit covers each file's decoding."""
    prepare_worker_process()
    paths, limits = (job if isinstance(job, tuple) else (job, LabelLimits()))
    out = []
    for path in paths:
        try:
            with time_limit(limits.image_timeout):
                out.append((path, content_hash(read_image(path)), None))
        except ImageDecodeError as error:
            out.append((path, None, error.reason))
        except ImageTimeoutError as error:
            out.append((path, None, f"decoding it {error}"))
        except Exception as error:  # a worker must report, not die (but an interrupt stops it)
            out.append((path, None, _failure(error)))
    return out


def label_files(job: tuple) -> list[dict]:
    """Label ``(path, need_target, want_hc)`` items with a labeller built from a config dict.

    ``job`` is ``(config_fields, items)`` or ``(config_fields, items, limits)`` with a
    :class:`LabelLimits`. Returns one dict per item: ``path``, ``hash``, ``target`` (encoded
    bytes or ``None``), ``hc`` (uint8 map or ``None``), ``seconds``, ``error``.
    """
    prepare_worker_process()
    config_fields, items, *rest = job
    limits = rest[0] if rest else LabelLimits()
    labeller = _labeller(config_fields, limits.max_pixels)
    out = []
    for path, need_target, want_hc in items:
        record = {"path": path, "hash": None, "target": None, "hc": None, "seconds": 0.0, "error": None}
        try:
            with time_limit(limits.image_timeout):  # decoding too: a crafted file can take long to decode
                image = read_image(path)
                record["hash"] = content_hash(image)
                if need_target:
                    check_storable(*image.shape[:2], "image")  # refused before the work, not after it
                    result = labeller.label(image, with_hc=want_hc)
                    record["target"] = encode_target(result.target)
                    record["seconds"] = result.seconds["total"]
                    hc = result.hc
                elif want_hc:
                    hc = labeller.hc(image)
                else:
                    hc = None
            if want_hc and hc is not None:
                record["hc"] = np.clip(np.rint(hc * 255), 0, 255).astype(np.uint8)
        except ImageDecodeError as error:
            record["error"] = error.reason
        except (ImageTimeoutError, ImageTooLargeError) as error:
            record["error"] = str(error)
        except Exception as error:  # one image's failure, unless an interrupt or time-out is behind it
            record["error"] = _failure(error)
        out.append(record)
    return out


_LABELLERS: dict[tuple, Labeller] = {}


def _labeller(config_fields: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> Labeller:
    key = (tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config_fields.items())), max_pixels)
    if key not in _LABELLERS:
        _LABELLERS[key] = Labeller(LabellerConfig.from_params(config_fields), max_pixels=max_pixels)
    return _LABELLERS[key]


def _chunks(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


# -- the job ---------------------------------------------------------------------------------
def export_stem(relative: Path, clashing: set[Path] | frozenset = frozenset()) -> str:
    """The name the exported maps of ``relative`` start with: its stem, or its whole file name when
    another image in the same folder has the same stem (``a.png`` and ``a.bmp`` -> ``a.png``, ``a.bmp``)."""
    return relative.name if relative.with_suffix("") in clashing else relative.stem


def clashing_stems(relatives: Iterable[Path]) -> set[Path]:
    """Stems (with their folder, without suffix) shared by several of ``relatives``."""
    seen: dict[Path, int] = {}
    for relative in relatives:
        key = Path(relative).with_suffix("")
        seen[key] = seen.get(key, 0) + 1
    return {key for key, count in seen.items() if count > 1}


def export_maps(export_dir: Path, relative: Path, target, hc: np.ndarray | None,
                clashing: set[Path] | frozenset = frozenset()) -> None:
    """Write ``<stem>_rc.png``, ``<stem>_cut.png`` and (if given) ``<stem>_hc.png`` under ``export_dir``
    (``<stem>`` is :func:`export_stem`: the file name itself where stems clash)."""
    import cv2

    folder = export_dir / relative.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = export_stem(relative, clashing)
    maps = {"rc": target.saliency, "cut": np.where(target.mask, 255, 0).astype(np.uint8)}
    if hc is not None:
        maps["hc"] = hc
    for kind, image in maps.items():
        path = folder / f"{stem}_{kind}.png"
        ok, data = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"cannot encode {path} as PNG")
        replace_file(path, data.tobytes())  # raises, naming the file, where it cannot be written (a name too long)


def label_folder(images_dir: str | Path, cache: TargetCache, config: LabellerConfig, executor=None,
                 export_dir: str | Path | None = None, progress: bool = True,
                 paths: Iterable[Path] | None = None, chunk_size: int | None = None,
                 limits: LabelLimits | None = None) -> LabelSummary:
    """Label every image below ``images_dir`` into ``cache`` (see the module docstring).

    Args:
        images_dir: folder searched recursively (:func:`saliencyssl.imageio.list_images`).
        cache: the store; its fingerprint must be ``config``'s.
        config: labeller parameters.
        executor: from :func:`saliencyssl.cache.executors.make_executor`; default: in-process.
        export_dir: also write 8-bit HC/RC maps and 0/255 masks per image, keeping sub-folders.
        progress: show tqdm progress bars.
        paths: the files to label (default: all images below ``images_dir``).
        chunk_size: images per task (default: adapted to the number of images and workers).
        limits: pixel budget and per-image time limit (default :class:`LabelLimits`).

    Raises:
        ValueError: the cache was opened with another fingerprint, or ``export_dir`` is inside
            ``images_dir``.
        FileNotFoundError: the folder does not exist or holds no images.
    """
    from tqdm import tqdm

    from saliencyssl.cache.executors import InlineExecutor

    if cache.fingerprint != config.fingerprint():
        raise ValueError(f"cache fingerprint {cache.fingerprint} does not match the labeller's "
                         f"{config.fingerprint()}; open the cache with Labeller(config).fingerprint")
    root = Path(images_dir)
    export = Path(export_dir) if export_dir is not None else None
    if export is not None and export.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"the export folder {export} is inside the image folder {root}: its maps would be "
                         f"taken for images next time; export outside it (e.g. to {root.parent / (root.name + '_maps')})")
    files = list(paths) if paths is not None else list_images(root)
    if not files:
        raise FileNotFoundError(f"no images below {root} (looked for {' '.join(IMAGE_SUFFIXES)}, recursively)")
    executor = executor or InlineExecutor()
    limits = limits or LabelLimits()
    summary = LabelSummary(total=len(files), executor=executor.description, export_dir=str(export or ""))
    start = time.perf_counter()
    workers = max(1, getattr(executor, "workers", 1))
    size = chunk_size or int(np.clip(len(files) // (8 * workers), 1, 64))
    # Absolute paths: Dask workers on other machines do not share this process's working folder.
    root = Path(os.path.abspath(root))
    str_paths = [os.path.abspath(p) for p in files]

    # Pass 1: content hashes.
    hashes: dict[str, str] = {}
    hash_chunk = max(size, 16)
    bar = tqdm(total=len(files), desc="hashing", unit="img", disable=not progress, leave=False)
    for results in executor.imap_unordered(hash_files, ((chunk, limits) for chunk in _chunks(str_paths, hash_chunk))):
        for path, image_hash, error in results:
            if error is not None:
                summary.failed.append((path, error))
            else:
                hashes[path] = image_hash
        bar.update(len(results))
    bar.close()

    # Which images need a target; cached ones still count towards the no-object share. A file with
    # the same pixels as one already queued shares its entry: labelled once, handled after pass 2.
    todo: list[tuple[str, bool, bool]] = []
    queued: dict[str, str] = {}  # content hash -> the file labelled for it
    duplicates: list[str] = []
    for path in str_paths:
        if path not in hashes:
            continue
        cached = cache.get(hashes[path])
        if cached is not None:
            summary.cached += 1
            summary.no_object += int(not cached.mask.any())
            if export is not None:
                todo.append((path, False, True))
        elif hashes[path] in queued:
            duplicates.append(path)
        else:
            queued[hashes[path]] = path
            todo.append((path, True, export is not None))

    # Pass 2: label what is missing (and HC maps for exports of cached images).
    clashing = clashing_stems(_relative(Path(p), root) for p in str_paths) if export is not None else set()
    config_fields = config.options()
    bar = tqdm(total=len(todo), desc="labelling", unit="img", disable=not progress)
    jobs = ((config_fields, chunk, limits) for chunk in _chunks(todo, size))
    for results in executor.imap_unordered(label_files, jobs):
        with cache.transaction():  # one commit a chunk; the maps are written after it (no lock held meanwhile)
            stored = [(record, _store(record, cache, summary, keep=export is not None)) for record in results]
        for record, target in stored:
            _export(record, target, summary, export, root, clashing)
        bar.update(len(results))
        if summary.label_seconds:
            bar.set_postfix(s_per_img=f"{summary.running_seconds_per_image():.3f}", failed=len(summary.failed))
    bar.close()

    # Pass 3: the duplicates, from the entries pass 2 stored (their own HC maps when exporting).
    kept = []
    for path in duplicates:
        target = cache.get(hashes[path])
        if target is None:  # the file it copies failed
            summary.failed.append((path, f"same pixels as {queued[hashes[path]]}, which could not be labelled"))
            continue
        summary.duplicates += 1
        summary.no_object += int(not target.mask.any())
        kept.append((path, False, True))
    if export is not None:
        bar = tqdm(total=len(kept), desc="exporting duplicates", unit="img", disable=not progress or not kept)
        for results in executor.imap_unordered(label_files,
                                               ((config_fields, chunk, limits) for chunk in _chunks(kept, size))):
            for record in results:
                _export(record, _store(record, cache, summary, keep=True), summary, export, root, clashing)
            bar.update(len(results))
        bar.close()
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(path.name)


def _store(record: dict, cache: TargetCache, summary: LabelSummary, keep: bool) -> Target | None:
    """Store a worker's new target in the cache (counted in ``summary``); with ``keep`` (maps to export) returns the
    image's target, new or cached (``None`` when it failed), else ``None``."""
    path = record["path"]
    if record["error"] is not None:
        summary.failed.append((path, record["error"]))
        return None
    if record["target"] is None:
        return cache.get(record["hash"]) if keep else None
    try:
        target = decode_target(record["target"])  # before storing: a target the codec cannot hold fails its image
        cache.put_encoded(record["hash"], record["target"])
    except CorruptTargetError as error:
        summary.failed.append((path, f"its target cannot be stored ({error})"))
        return None
    summary.labelled += 1
    summary.label_seconds.append(record["seconds"])
    summary.no_object += int(not target.mask.any())
    return target if keep else None


def _export(record: dict, target: Target | None, summary: LabelSummary, export: Path | None, root: Path,
            clashing: set[Path] | frozenset = frozenset()) -> None:
    """Write the maps of a stored ``target`` (nothing without ``export`` or a target)."""
    if export is None or target is None:
        return
    try:
        export_maps(export, _relative(Path(record["path"]), root), target, record["hc"], clashing)
    except OSError as error:  # a map name too long for the file system, a full disk: this image's maps only
        summary.failed.append((record["path"], f"its maps cannot be exported: {error}"))
        return
    summary.exported += 1

