"""Moving targets between caches and packs: export a data set's targets, merge a pack or a cache.

- :func:`export_pack`: the targets of an image set, read from a cache, written as one pack
  (streamed: one target in memory at a time, whatever the size of the set);
- :func:`import_pack` / :func:`import_cache`: merge a pack (checked against its checksum first)
  or another cache folder (every entry checked, damaged ones skipped and counted) into a cache.

What others send is checked before anything is stored: a pack's checksum covers its arrays and
its rows' hashes, a cache folder is audited (:func:`saliencyssl.cache.store.audit_database`) and
read without unpickling anything, and each entry is decoded against its key.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from saliencyssl.cache.codec import CorruptTargetError
from saliencyssl.cache.packfile import PackError, open_pack, verify_pack, write_pack
from saliencyssl.cache.store import TargetCache, cache_fingerprints
from saliencyssl.hashing import content_hash
from saliencyssl.imageio import ImageDecodeError

#: Bytes per pixel of a pack (saliency uint8, mask uint8, regions int16).
PACK_BYTES_PER_PIXEL = 4


class MissingTargetsError(LookupError):
    """Images of a set without a target in the cache.

    Attributes:
        missing: names of those images (all of them).
        total: images in the set.
        fingerprint: the labeller fingerprint that was looked up.
    """

    def __init__(self, missing: list[str], total: int, fingerprint: str):
        self.missing, self.total, self.fingerprint = missing, total, fingerprint
        super().__init__(f"{len(missing)} of {total} images have no target of labeller fingerprint {fingerprint}, "
                         f"e.g. {missing[0]}")


class UndecodableImagesError(ValueError):
    """Files of an image set that cannot be decoded; ``failed`` holds ``(name, reason)`` pairs."""

    def __init__(self, failed: list[tuple[str, str]]):
        self.failed = failed
        super().__init__(f"{len(failed)} files cannot be decoded, e.g. {failed[0][0]} ({failed[0][1]})")


@dataclass
class ExportReport:
    """What :func:`export_pack` wrote: ``rows`` targets (distinct images), and what it skipped."""

    path: Path
    rows: int
    bytes: int
    missing: list[str] = field(default_factory=list)
    undecodable: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ImportReport:
    """What an import stored: ``count`` targets, and the hashes of damaged source entries it skipped."""

    count: int
    damaged: list[str] = field(default_factory=list)


def check_pack_destination(out: Path, images_dir: Path | None = None, overwrite: bool = False) -> None:
    """Refuse a pack path that would clobber a pack or land among the images it describes.

    Raises:
        FileExistsError: ``out`` exists (and ``overwrite`` is false), or is a folder.
        ValueError: ``out`` lies inside ``images_dir`` (the next run would take it for an image).
    """
    out = Path(out)
    if out.is_dir():
        raise FileExistsError(f"{out} is a folder; give a file name for the pack")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists already")
    if images_dir is not None and out.resolve().is_relative_to(Path(images_dir).resolve()):
        raise ValueError(f"the pack {out} would lie inside the image folder {images_dir}")


def export_pack(cache: TargetCache, image_set, out: str | Path, params: dict | None = None,
                image_size: int | None = None, allow_missing: bool = False,
                progress: Callable[[Iterator], Iterator] | None = None) -> ExportReport:
    """Write the targets of ``image_set`` (one row per distinct image) from ``cache`` as a pack.

    Args:
        cache: the cache to read, opened with the labeller's fingerprint.
        image_set: an :class:`~saliencyssl.datasets.ImageSet`.
        out: the pack path (see :func:`check_pack_destination` for what callers check first).
        params: the labeller parameters, recorded in the pack.
        image_size: store the targets at this square training size (``fit_square`` geometry).
        allow_missing: skip images without a target, or that cannot be decoded, instead of refusing.
        progress: wraps the iteration over the images (e.g. a tqdm bar).

    Raises:
        UndecodableImagesError, MissingTargetsError: unless ``allow_missing``.
        PackError: nothing to export.
        OSError: not enough free disk space for the pack.
    """
    from saliencyssl.datasets import target_at_size

    out = Path(out)
    wrap = progress or (lambda it: it)
    hashes: list[str | None] = []
    undecodable: list[tuple[str, str]] = []
    for i in wrap(iter(range(len(image_set)))):
        try:
            hashes.append(content_hash(image_set.image(i)))
        except ImageDecodeError as error:
            hashes.append(None)
            undecodable.append((image_set.names[i], error.reason))
    if undecodable and not allow_missing:
        raise UndecodableImagesError(undecodable)
    distinct = list(dict.fromkeys(h for h in hashes if h is not None))
    names = {h: n for n, h in zip(image_set.names, hashes) if h is not None}
    missing = [names[h] for h in distinct if h not in cache]
    if missing and not allow_missing:
        raise MissingTargetsError(missing, len(image_set), cache.fingerprint)
    present = [h for h in distinct if h in cache]
    if not present:
        raise PackError("nothing to export: the cache holds none of these images' targets")
    if image_size is not None:
        needed = len(present) * image_size * image_size * PACK_BYTES_PER_PIXEL * 2  # temporary parts + the pack
        free = shutil.disk_usage(out.parent if out.parent.exists() else Path.cwd()).free
        if needed > free:
            raise OSError(f"the pack of {len(present)} targets at {image_size} px needs about {needed / 1e9:.1f} GB "
                          f"while writing, and {out.parent} has {free / 1e9:.1f} GB free")
    lost: list[str] = []

    def rows():
        for h in present:
            target = cache.get(h)
            if target is None:  # damaged since the check: the cache removed it
                lost.append(names[h])
                continue
            yield h, target_at_size(target, image_size) if image_size else target

    path = write_pack(out, rows(), cache.fingerprint, params)
    return ExportReport(path, len(present) - len(lost), path.stat().st_size, missing + lost, undecodable)


def import_pack(pack_path: str | Path, cache_dir: str | Path, fingerprint: str,
                params: dict | None = None) -> ImportReport:
    """Merge a pack into a cache, after checking the pack's fingerprint and checksum.

    Raises:
        PackError: another labeller's pack, a damaged header, or a checksum mismatch (nothing is stored).
    """
    pack = open_pack(pack_path, expect_fingerprint=fingerprint)
    if not verify_pack(pack):
        raise PackError(f"{pack_path} fails its checksum (damaged); nothing was imported")
    cache = TargetCache(cache_dir, fingerprint, params=pack.params or params)
    try:
        return ImportReport(cache.put_many((pack.hashes[i], pack.target(i)) for i in range(len(pack))))
    finally:
        cache.close()


def import_cache(source_dir: str | Path, cache_dir: str | Path, fingerprint: str,
                 params: dict | None = None) -> ImportReport:
    """Merge another cache folder's targets of ``fingerprint`` into a cache.

    The source is audited and opened read-only in spirit (nothing is created there); each entry
    is checked against its key and the damaged ones are skipped (their hashes reported).

    Raises:
        FileNotFoundError: the source is not a cache folder.
        LookupError: it holds no target of this fingerprint (the message lists what it holds).
        CacheOpenError: its database is damaged or not a saliency-ssl cache.
    """
    available = cache_fingerprints(source_dir)
    if fingerprint not in available:
        others = ", ".join(sorted(available)) or "none"
        raise LookupError(f"{source_dir} holds no targets of labeller fingerprint {fingerprint} (it holds: {others})")
    source = TargetCache(source_dir, fingerprint, create=False)
    cache = TargetCache(cache_dir, fingerprint, params=available.get(fingerprint) or params)
    report = ImportReport(0)
    try:
        for h in list(source.hashes()):
            try:
                data = source.get_encoded(h)
                if data is None:
                    continue
                cache.put_encoded(h, data, from_key=source.key_of(h))
            except CorruptTargetError:
                report.damaged.append(h)
                continue
            report.count += 1
    finally:
        source.close()
        cache.close()
    return report
