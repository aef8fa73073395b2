"""Command-line options several stages share: the labeller's, and how errors become one line.

Every stage that reads targets must name the labeller options the cache was filled with, so they
are declared here once, with one set of defaults (:data:`~saliencyssl.saliency.params.LABELLER_OPTIONS`).
"""

from __future__ import annotations

import argparse
import errno
import functools
import sys

from saliencyssl.saliency.labeller import LabellerConfig
from saliencyssl.saliency.params import CUT_ENGINES, LABELLER_OPTIONS

_DEFAULTS = LabellerConfig()


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--backbone``, ``--backbone-seed`` and ``--random-stem``: the frozen encoder an evaluation stage
    reads, or a seeded random one as the baseline."""
    parser.add_argument("--backbone", required=True, metavar="PATH|random",
                        help="RUN_DIR/backbone.pt written by saliency-ssl pretrain, a plain torchvision ResNet-18 "
                             "state dict (e.g. local ImageNet weights), or 'random' for a seeded randomly initialised "
                             "ResNet-18 baseline")
    parser.add_argument("--backbone-seed", type=int, default=0, metavar="S",
                        help="initialisation seed of --backbone random (default %(default)s)")
    parser.add_argument("--random-stem", default="auto", choices=("auto", "cifar", "imagenet"),
                        help="stem of --backbone random: auto = CIFAR stem up to 64 px, else the ImageNet stem; set "
                             "it to match the pretrained backbone you compare with (default %(default)s)")


def add_labeller_options(parser: argparse.ArgumentParser, title: str | None = None,
                         optional: bool = False) -> argparse._ArgumentGroup:
    """Add ``--scale | --max-side``, ``--min-side`` and ``--cut-engine`` to a parser.

    Args:
        parser: the stage's parser.
        title: the option group's title (default: says they must match how the cache was filled).
        optional: leave every default ``None``, so :func:`labeller_config_from_args` can tell
            "not given" (the stage then picks the fingerprint another way) from the defaults.
    """
    group = parser.add_argument_group(title or "labeller options (must match how the cache was filled by "
                                               "saliency-ssl label; they select the labeller fingerprint)")
    size = group.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, default=None, metavar="F",
                      help="label at F times the image size (the paper's 100%% = 1, 200%% = 2); default: upscale "
                           "images under --min-side only")
    size.add_argument("--max-side", type=int, default=None, metavar="N",
                      help="shrink images whose longer side exceeds N pixels before labelling")
    group.add_argument("--min-side", type=int, default=None if optional else _DEFAULTS.min_side, metavar="N",
                       help=f"upscale images whose shorter side is under N pixels (default {_DEFAULTS.min_side}; "
                            f"ignored with --scale)")
    group.add_argument("--cut-engine", choices=CUT_ENGINES, default=None if optional else _DEFAULTS.cut_engine,
                       help="faithful: Cheng's own GrabCut (matches the C++ masks); opencv: cv2.grabCut in the same "
                            f"loop (agrees less). Default: {_DEFAULTS.cut_engine}")
    return group


def labeller_config_from_args(args: argparse.Namespace) -> LabellerConfig | None:
    """The :class:`LabellerConfig` of the parsed options; ``None`` when added with ``optional=True``
    and none was given."""
    given = {k: getattr(args, k) for k in LABELLER_OPTIONS}
    if all(v is None for v in given.values()):
        return None
    return LabellerConfig(**{k: v for k, v in given.items() if v is not None})


def labeller_flags(config: LabellerConfig | dict | None) -> list[str]:
    """The options that select ``config``'s fingerprint (labeller parameters or a config), as a
    command line gives them (``["--scale", "2"]``; ``[]`` for the defaults)."""
    if not config:
        return []
    values = config if isinstance(config, dict) else {k: getattr(config, k) for k in LABELLER_OPTIONS}
    parts = []
    if values.get("scale") is not None:
        parts += ["--scale", f"{values['scale']:g}"]
    if values.get("max_side") is not None:
        parts += ["--max-side", str(values["max_side"])]
    if values.get("min_side", _DEFAULTS.min_side) != _DEFAULTS.min_side and values.get("scale") is None:
        parts += ["--min-side", str(values["min_side"])]
    if values.get("cut_engine", _DEFAULTS.cut_engine) != _DEFAULTS.cut_engine:
        parts += ["--cut-engine", str(values["cut_engine"])]
    return parts


def label_command(images_dir, cache_dir, config: LabellerConfig | dict | None = None) -> str:
    """The ``saliency-ssl label`` command that fills ``cache_dir`` for ``images_dir`` with these labeller options."""
    import shlex

    parts = ["saliency-ssl", "label", str(images_dir), "--cache", str(cache_dir), *labeller_flags(config)]
    return " ".join(shlex.quote(p) for p in parts)


def fail(message: str | BaseException, code: int = 2) -> int:
    """Print ``error: message`` on stderr and return ``code`` (a stage's ``main`` returns it).

    An exception is printed with the command that fixes it (:func:`remedy`)."""
    text = f"{message}{remedy(message)}" if isinstance(message, BaseException) else message
    print(f"error: {text}", file=sys.stderr)
    return code


def remedy(error: BaseException) -> str:
    """``"; "`` and the command that fixes ``error``, from the ``fix`` a core error carries ('' for none).

    Core code names what is wrong and what must happen (``fix = "train-surrogate"``, with the image
    size or a labelling first when the error carries them); the command line is the application's.
    """
    if getattr(error, "fix", None) != "train-surrogate":
        return ""
    size = getattr(error, "image_size", None)
    command = ("saliency-ssl train-surrogate IMAGES_DIR --cache CACHE_DIR --out RUN_DIR"
               + (f" --size {size}" if size else ""))
    if getattr(error, "relabel", False):
        return (f"; label the images with the wanted labeller options (saliency-ssl label IMAGES_DIR --cache "
                f"CACHE_DIR ...), then train one: {command}")
    return f"; train one with: {command}"


#: What to do about an operating-system error on a path, by its errno.
_PATH_FIXES = {errno.ENAMETOOLONG: "a name in it is longer than the file system allows; give a shorter path",
               errno.EACCES: "permission denied; give a path this user may read (and write, for an output)",
               errno.EPERM: "operation not permitted; give a path this user may use",
               errno.ELOOP: "its links point in a loop; give the real path",
               errno.ENOTDIR: "a part of it is a file, not a folder; give a path through folders",
               errno.EEXIST: "something of another kind is already there; give another path",
               errno.EROFS: "the file system is read-only; give a path on a writable one",
               errno.ENOSPC: "the disk is full; free some space or give a path on another disk"}


#: The exit status of a stage whose worker process died (killed, or out of memory).
WORKER_DIED = 3


def one_line_errors(main):
    """A stage's ``main`` that reports, as one line naming the fix instead of a traceback, an operating-system error
    on a path (exit status 2: a name too long, no permission, a loop of links) and a worker process that died
    (:data:`WORKER_DIED`) in a stage that does not say more itself: ``grid`` and ``quickstart``, whose labelling
    jobs run the pool that ``label`` reports with its cache's name, and that ``pretrain`` and ``train-surrogate``
    report with ``--resume``.

    The stages catch the errors they foresee; this is the net under them.
    """

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except OSError as error:
            if error.filename is None:
                raise
            fix = _PATH_FIXES.get(error.errno, error.strerror or type(error).__name__)
            return fail(f"{error.filename}: {fix}")
        except RuntimeError as error:
            from saliencyssl.cache.executors import WorkerDiedError  # the pool's module, imported when one failed

            if not isinstance(error, WorkerDiedError):
                raise
            return fail(f"{error}. What the job finished is kept; rerun the same command (with fewer --workers, or a "
                        f"smaller --max-pixels, if memory ran out)", WORKER_DIED)

    return wrapped


def missing_piece_advice(error, data, cache, labeller: LabellerConfig | None, image_size: int) -> str:
    """The command (or option) that supplies what a :class:`~saliencyssl.augment.MissingPieceError` names."""
    cache_dir = str(cache) if cache else "CACHE_DIR"
    label = label_command(data, cache_dir, labeller)
    train = f"saliency-ssl train-surrogate {data} --cache {cache_dir} --size {image_size} --out RUN_DIR"
    advice = {
        "cache": f"pass --cache CACHE_DIR (fill it with: {label}) or --pack PACK",
        "misses": f"label them with: {label} (the same labeller options), or use --aug-source cache,surrogate or "
                  f"cache,exact",
        "pack_size": f"export the pack at --image-size {image_size}: saliency-ssl cache export {cache_dir} {data} "
                     f"--out PACK --image-size {image_size}",
        "surrogate": f"pass --surrogate RUN_DIR/surrogate.pt (train one with: {train})",
        "surrogate_size": f"train one at that size: {train}",
        "surrogate_fingerprint": "train the surrogate on this cache, or pass the labeller options it was trained with",
        "write_back": f"pass --cache CACHE_DIR",
    }
    return advice.get(getattr(error, "piece", ""), "see saliency-ssl pretrain --help")


#: The most CPU threads or worker processes a stage takes per core this machine has: more only contend.
PER_CORE_LIMIT = 4


def cpu_limit() -> int:
    """The most threads or worker processes a stage accepts here (:data:`PER_CORE_LIMIT` per core)."""
    import os

    return PER_CORE_LIMIT * (os.cpu_count() or 1)


def check_count(flag: str, value: int | None, low: int = 1, high: int | None = None) -> None:
    """Refuse ``value`` outside ``low..high`` (``None`` passes: the option was left out), naming the flag.

    Raises:
        ValueError: with the range.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{flag} {value}: give a whole number {span}")


def _input_folder(path):
    """The folder an input reads: ``path`` when it is a folder, its parent when it is a file (a CIFAR-10
    batch given by path is read with the ``batches.meta`` beside it, and an image file written beside
    it turns that folder into an image folder for the next run); ``None`` when nothing is there."""
    from pathlib import Path

    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    return None


def check_outside(out, inputs: dict, what: str = "--out") -> None:
    """Refuse an output path inside an input folder: the next run would read what it wrote as data.

    Args:
        out: the output file or folder.
        inputs: ``{flag: folder or file}`` of the stage's inputs (``None`` values are skipped); a file
            (a CIFAR-10 batch given by path) stands for the folder that holds it.
    """
    from pathlib import Path

    if out is None:
        return
    target = Path(out).resolve()
    for flag, given in inputs.items():
        folder = _input_folder(given)
        if folder is not None and target.is_relative_to(folder.resolve()):
            where = f"{flag} {given}" if folder == Path(given) else f"the folder of {flag} {given}"
            raise ValueError(f"{what} {out} lies inside {where}: what it writes would be read as data by the "
                             f"next run; write it outside, e.g. {what} {folder.resolve().parent / Path(out).name}")


#: What the start of each kind of output file a stage writes looks like, by file name ending: the
#: JSON a stage writes is an object; PNG and JPEG by their signatures.
OUTPUT_SIGNATURES = {".json": (b"{",), ".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",),
                     ".jpeg": (b"\xff\xd8\xff",)}
_KINDS = {".json": "JSON", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def check_output_file(out, flag: str, suffixes: tuple[str, ...], inputs: dict | None = None,
                      stem: str = "out") -> None:
    """Refuse an output file a stage would write at ``out`` unless writing it cannot destroy anything else.

    ``out`` must end in one of ``suffixes`` (``.json``, ``.png``, ``.jpg``, ``.jpeg``: what the stage
    writes), lie outside every input folder (:func:`check_outside`), and, when something is already
    there, be a regular file of that kind (its first bytes: a JSON object, a PNG or JPEG signature)
    or empty, as an earlier run of the stage left it: an image, a document or a device given by mistake is never
    overwritten. A link is judged by the file it points to.

    Args:
        out: the path given (``None``: the option was left out; nothing to check).
        flag: the option, named in the message (``--json``).
        suffixes: the endings the stage writes, lowercase with their dot.
        inputs: ``{flag: folder or file}`` of the stage's inputs (a file stands for its folder).
        stem: the file name suggested inside a folder given as ``out``.

    Raises:
        ValueError: naming the flag, the path and the fix.
    """
    import os
    import stat
    from pathlib import Path

    from saliencyssl.files import nearest_existing

    if out is None:
        return
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a folder; give a file name, e.g. {flag} {out / (stem + suffixes[0])}")
    if out.suffix.lower() not in suffixes:
        example = out.with_suffix(suffixes[0])
        for given in (inputs or {}).values():  # suggest a name outside the inputs
            folder = _input_folder(given)
            if folder is not None and example.resolve().is_relative_to(folder.resolve()):
                example = Path(folder).resolve().parent / example.name
        raise ValueError(f"{flag} {out} must end in {' or '.join(suffixes)} (what it writes); e.g. {flag} {example}")
    check_outside(out, inputs or {}, flag)
    folder = nearest_existing(out)  # it must be a folder: a file there would fail the write at the end
    if not folder.is_dir():
        raise ValueError(f"{flag} {out}: {folder} is a file, not a folder; give a path inside a folder")
    if not os.path.lexists(out):
        return
    kind = _KINDS.get(out.suffix.lower(), out.suffix)
    refuse = f"{flag} {out} exists and is not a {kind} file this stage writes"
    fix = "; remove it first or give another name"
    try:
        info = os.stat(out)
    except OSError as error:  # a dangling or looping link: writing would create or fail somewhere else
        raise ValueError(f"{refuse} ({error.strerror}){fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{refuse} (a pipe, a device or a socket){fix}")
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(4096)
    except OSError as error:
        raise ValueError(f"{refuse} (it cannot be read: {error.strerror}){fix}") from None
    if out.suffix.lower() == ".json":
        head = head.lstrip()
    if head and not head.startswith(OUTPUT_SIGNATURES.get(out.suffix.lower(), (b"",))):  # empty: nothing to lose
        raise ValueError(f"{refuse} (its content is not {kind}){fix}")
