"""Inspect, check, export and merge target caches; portable packs for multi-node training.

Subcommands:
  stats  CACHE_DIR                     what the cache holds, per labeller fingerprint
  verify CACHE_DIR|PACK                decode every entry against its key (damaged ones are reported and
                                       removed; foreign keys removed unread) or check a pack's checksum;
                                       non-zero exit if anything is damaged
  export CACHE_DIR IMAGES_DIR --out PACK [--image-size S]
                                       the targets of a data set as one read-only, memory-mappable file
                                       (with --image-size, stored at the training size, so
                                       saliency-ssl pretrain --pack maps it without copying)
  import SOURCE --cache CACHE_DIR      merge a pack or another cache directory into a cache; a source of
                                       another labeller fingerprint than the options given is refused

Labeller options (--scale, --max-side, --min-side, --cut-engine) select the fingerprint, as in
saliency-ssl label. How safe it is to take caches and packs from others: docs/security.md.

Examples:
  saliency-ssl cache stats runs/cache
  saliency-ssl cache export runs/cache ../shared/data/cifar10/train --out runs/cifar_train.pack --image-size 32
  saliency-ssl cache import runs/cifar_train.pack --cache /scratch/cache
  torchrun --nnodes 2 --nproc_per_node 4 ... saliency-ssl pretrain --pack runs/cifar_train.pack --aug-source cache ...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from saliencyssl.cache import TargetCache
from saliencyssl.cache.packfile import PACK_FORMAT, PackError, open_pack, verify_pack
from saliencyssl.cache.store import CacheReader, cache_fingerprints
from saliencyssl.cache.transfer import (MissingTargetsError, UndecodableImagesError, check_pack_destination,
                                        export_pack, import_cache, import_pack, is_pack_file)
from saliencyssl.datasets import check_image_size
from saliencyssl.imageio import ImageDecodeError
from saliencyssl.app.options import add_labeller_options, fail, labeller_config_from_args, one_line_errors
from saliencyssl.saliency import LabellerConfig
from saliencyssl.saliency.params import LABELLER_OPTIONS

SUMMARY = "stats, verify, export and import of caches and packs"


def _check_labeller(labeller) -> None:
    if not isinstance(labeller, LabellerConfig):
        raise TypeError(f"labeller must be a LabellerConfig, got {type(labeller).__name__}")


@dataclass(frozen=True)
class StatsConfig:
    """``saliency-ssl cache stats``: what the cache folder ``cache`` holds, per labeller fingerprint."""

    cache: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache", Path(self.cache))


@dataclass(frozen=True)
class VerifyConfig:
    """``saliency-ssl cache verify``: decode every entry of the cache folder ``path`` (or check the pack
    file ``path``'s checksum); ``labeller`` is the fingerprint that must have targets there."""

    path: Path
    labeller: LabellerConfig = field(default_factory=LabellerConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        _check_labeller(self.labeller)


@dataclass(frozen=True)
class ExportConfig:
    """``saliency-ssl cache export``: the targets of the images in ``images`` as one pack file ``out``.

    ``image_size`` stores them at that square training size (``None``: at the images' own size);
    ``allow_missing`` exports what the cache holds when images miss; ``overwrite`` replaces a pack at ``out``.
    """

    cache: Path
    images: Path
    out: Path
    image_size: int | None = None
    allow_missing: bool = False
    overwrite: bool = False
    labeller: LabellerConfig = field(default_factory=LabellerConfig)

    def __post_init__(self) -> None:
        for name in ("cache", "images", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.image_size is not None:
            check_image_size(self.image_size, "--image-size")
        _check_labeller(self.labeller)


@dataclass(frozen=True)
class ImportConfig:
    """``saliency-ssl cache import``: merge the pack file or cache folder ``source`` into the cache folder
    ``cache``, under ``labeller``'s fingerprint (a source of another fingerprint is refused)."""

    source: Path
    cache: Path
    labeller: LabellerConfig = field(default_factory=LabellerConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "cache", Path(self.cache))
        _check_labeller(self.labeller)


CacheConfig = StatsConfig | VerifyConfig | ExportConfig | ImportConfig


def is_pack(path: Path) -> bool:
    return is_pack_file(path)


def _not_a_cache(path: Path, hint: str = "IMAGES") -> int:
    print(f"error: {path} is not a cache folder (no cache.db); fill one with: saliency-ssl label {hint} "
          f"--cache {path}", file=sys.stderr)
    return 2


def _stats(args: StatsConfig) -> int:
    """What a cache holds, read without writing to its folder (:class:`CacheReader`)."""
    if not TargetCache.exists(args.cache):
        return _not_a_cache(args.cache)
    with CacheReader(args.cache) as cache:
        fingerprints = cache.fingerprints()
        if not fingerprints:
            print(f"{args.cache}: empty cache")
            return 0
        sizes = cache.sizes()
        print(f"{args.cache}: {cache.disk_bytes() / 1e6:.1f} MB on disk")
    for fp, params in sorted(fingerprints.items()):
        entries, size = sizes.get(fp, (0, 0))
        desc = ", ".join(f"{k}={v}" for k, v in (params or {}).items() if k in ("version", *LABELLER_OPTIONS))
        print(f"  fingerprint {fp}: {entries} targets, {size / 1e6:.2f} MB"
              f" ({size / max(entries, 1):.0f} B each)  [{desc or 'parameters not recorded'}]")
    return 0


def _verify(args: VerifyConfig) -> int:
    if is_pack(args.path):
        pack = open_pack(args.path)  # refuses an empty pack, and formats whose checksum cannot be trusted
        ok = verify_pack(pack)
        older = (f" (format {pack.format}: its checksum does not cover its labeller parameters, which are "
                 f"ignored; export it again for format {PACK_FORMAT})") if ok and pack.format < PACK_FORMAT else ""
        print(f"{args.path}: pack of {len(pack)} targets, fingerprint {pack.fingerprint}: "
              f"{'checksum OK' if ok else 'CHECKSUM MISMATCH (damaged; export it again)'}{older}")
        return 0 if ok else 1
    if not TargetCache.exists(args.path):
        print(f"error: {args.path} is neither a cache folder (no cache.db) nor a pack", file=sys.stderr)
        return 2
    fingerprints = sorted(cache_fingerprints(args.path))
    config = args.labeller
    bad = 0
    # The fingerprint of the labeller options given is checked even when the cache holds none of
    # its targets (say so), and its pass also finds and removes foreign keys.
    for fp in dict.fromkeys([config.fingerprint(), *fingerprints]):
        with TargetCache(args.path, fp, create=False) as cache:
            report = cache.verify(remove=True)
        if report.foreign:
            bad += len(report.foreign)
            print(f"{len(report.foreign)} foreign entries (keys saliency-ssl never writes, e.g. {report.foreign[0]:.60}"
                  f"): removed unread")
        if fp not in fingerprints:
            print(f"fingerprint {fp} (the labeller options given): no targets in {args.path}"
                  + (f"; it holds {', '.join(fingerprints)}" if fingerprints else ""))
            bad += 1 if not fingerprints else 0
            continue
        bad += len(report.damaged)
        print(f"fingerprint {fp}: {report.checked} entries checked, {len(report.damaged)} damaged"
              + (" (removed; rerun saliency-ssl label to recompute them)" if report.damaged else "")
              + (f", {report.upgraded} rewritten with a checksum over their key" if report.upgraded else ""))
        for h in report.damaged[:20]:
            print(f"  damaged: {h}")
    return 1 if bad else 0


def _export(args: ExportConfig) -> int:
    from tqdm import tqdm

    from saliencyssl.datasets import open_image_set

    config = args.labeller
    if not TargetCache.exists(args.cache):
        return _not_a_cache(args.cache, str(args.images))
    try:
        check_pack_destination(args.out, args.images if args.images.is_dir() else None, overwrite=args.overwrite,
                               cache_dir=args.cache)
    except FileExistsError as error:
        offer = not args.out.is_dir() and not args.overwrite
        print(f"error: {error}; choose another --out" + (" or pass --overwrite" if offer else ""), file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    image_set = open_image_set(args.images, keep_decoded=False)
    bar = (lambda it: tqdm(it, total=len(image_set), desc="hashing", unit="img")) if len(image_set) >= 2000 else None
    try:
        with TargetCache(args.cache, config.fingerprint(), create=False) as cache:
            report = export_pack(cache, image_set, args.out, config.params(), args.image_size, args.allow_missing,
                                 bar)
    except UndecodableImagesError as error:
        name, reason = error.failed[0]
        print(f"error: {args.images / name}: cannot decode image ({reason}); --allow-missing exports the other "
              f"images' targets", file=sys.stderr)
        return 2
    except MissingTargetsError as error:
        print(f"{len(error.missing)} of {error.total} images have no target in {args.cache} (fingerprint "
              f"{error.fingerprint}), e.g. {error.missing[0]}; label them first: saliency-ssl label {args.images} "
              f"--cache {args.cache}, or pass --allow-missing", file=sys.stderr)
        return 1
    if report.undecodable:
        print(f"{len(report.undecodable)} files cannot be decoded and are skipped, e.g. {report.undecodable[0][0]}",
              file=sys.stderr)
    if report.missing:
        print(f"{len(report.missing)} images have no target in {args.cache} and are skipped, e.g. {report.missing[0]}",
              file=sys.stderr)
    print(f"wrote {report.path}: {report.rows} targets, {report.bytes / 1e6:.2f} MB, fingerprint "
          f"{config.fingerprint()}" + (f", stored at {args.image_size}px" if args.image_size else ""))
    return 0


def _import(args: ImportConfig) -> int:
    config = args.labeller
    fingerprint = config.fingerprint()
    if is_pack(args.source):
        try:
            report = import_pack(args.source, args.cache, fingerprint, config.params())
        except PackError as error:
            print(f"error: {error}" + ("; export it again: saliency-ssl cache export CACHE_DIR IMAGES_DIR "
                                       f"--out {args.source}" if "checksum" in str(error) else ""), file=sys.stderr)
            return 1
    elif args.source.is_dir():
        if not TargetCache.exists(args.source):
            print(f"error: {args.source} is not a cache folder (no cache.db) nor a pack file", file=sys.stderr)
            return 2
        try:
            report = import_cache(args.source, args.cache, fingerprint, config.params())
        except LookupError as error:
            print(f"error: {error}; pass the labeller options the source was labelled with", file=sys.stderr)
            return 1
        if report.damaged:
            print(f"warning: skipped {len(report.damaged)} damaged entries of {args.source} (e.g. "
                  f"{report.damaged[0]}); `saliency-ssl cache verify {args.source}` removes them, then rerun "
                  f"saliency-ssl label", file=sys.stderr)
        if report.unkeyed:
            print(f"warning: skipped {len(report.unkeyed)} entries of {args.source} in the first target format "
                  f"(e.g. {report.unkeyed[0]}), whose checksum does not cover the image they belong to; if you "
                  f"trust that cache, `saliency-ssl cache verify {args.source}` rewrites them with one, then import "
                  f"again", file=sys.stderr)
        if report.damaged or report.unkeyed:
            print(f"imported {report.count} targets of fingerprint {fingerprint} into {args.cache}")
            return 1
    else:
        print(f"error: {args.source} is neither a pack file nor a cache folder", file=sys.stderr)
        return 2
    print(f"imported {report.count} targets of fingerprint {fingerprint} into {args.cache}")
    return 0


def run(config: CacheConfig) -> int:
    """Carry out one cache command; returns its exit status (0 done, 1 something damaged or missing, 2 refused).

    What it finds is printed; errors a command can foresee (not a cache, a pack that exists, images
    without targets) are printed as one line naming the fix.
    """
    commands = {StatsConfig: _stats, VerifyConfig: _verify, ExportConfig: _export, ImportConfig: _import}
    if type(config) not in commands:
        raise TypeError(f"not a cache command's config: {type(config).__name__}")
    return commands[type(config)](config)


def config_from_args(args: argparse.Namespace) -> CacheConfig:
    """The config of the parsed command line (labeller options default where not given)."""
    if args.command == "stats":
        return StatsConfig(args.cache)
    labeller = labeller_config_from_args(args) or LabellerConfig()
    if args.command == "verify":
        return VerifyConfig(args.path, labeller)
    if args.command == "export":
        return ExportConfig(args.cache, args.images, args.out, args.image_size, args.allow_missing, args.overwrite,
                            labeller)
    return ImportConfig(args.source, args.cache, labeller)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-ssl cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="what a cache holds", description="What a cache holds: its size on disk, and "
                       "per labeller fingerprint the number of targets and the labeller options behind them.")
    p.add_argument("cache", type=Path, metavar="CACHE_DIR", help="a folder filled by saliency-ssl label")
    p = sub.add_parser("verify", help="check every entry of a cache, or a pack's checksum",
                       description="Decode every entry of a cache against its key (damaged ones are reported and "
                       "removed; rerun saliency-ssl label to recompute them), remove keys saliency-ssl never writes "
                       "(unread), or check a pack file's checksum. Exit status 1 if anything is damaged or the cache "
                       "holds no target at all; a cache whose targets are all of other labeller options than those "
                       "given passes, and the output says so.")
    p.add_argument("path", type=Path, metavar="CACHE_DIR|PACK", help="a cache folder, or a pack file")
    add_labeller_options(p)
    p = sub.add_parser("export", help="a data set's targets as one memory-mappable pack file",
                       description="Write the targets of IMAGES_DIR's images from CACHE_DIR into one pack file, "
                       "the file to copy to a training machine (saliency-ssl pretrain --pack). Images the cache "
                       "lacks, or that cannot be decoded, stop the export, named, unless --allow-missing.")
    p.add_argument("cache", type=Path, metavar="CACHE_DIR", help="the cache holding the targets")
    p.add_argument("images", type=Path, metavar="IMAGES_DIR",
                   help="the data set whose targets are exported (an image folder or CIFAR-10 python batches)")
    p.add_argument("--out", type=Path, required=True,
                   help="the pack file to write (not inside IMAGES_DIR nor inside the cache folder)")
    p.add_argument("--image-size", type=int, default=None,
                   help="store targets at this square training size (8 to 1024)")
    p.add_argument("--allow-missing", action="store_true",
                   help="export what the cache holds even if images miss (or cannot be decoded)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing pack at --out (only a pack file: never another kind of file)")
    add_labeller_options(p)
    p = sub.add_parser("import", help="merge a pack or a cache directory into a cache",
                       description="Merge the targets of a pack file or of another cache folder (read, never "
                       "written) into --cache. A pack's checksum is verified first (a damaged pack is refused "
                       "whole); a cache folder's entries are each checked against their key, and damaged ones and "
                       "first-format entries whose checksum does not cover their key are skipped and reported "
                       "(exit 1).")
    p.add_argument("source", type=Path, metavar="PACK|CACHE_DIR", help="a pack file, or another cache folder")
    p.add_argument("--cache", type=Path, required=True, help="the cache folder to merge into (created if missing)")
    add_labeller_options(p)
    return parser


@one_line_errors
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(config_from_args(args))
    except (PackError, ImageDecodeError, ValueError, OSError, MemoryError) as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main())
