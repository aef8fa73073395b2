"""Moving targets between caches and packs: export a data set's targets, merge a pack or a cache.

- :func:`export_pack`: the targets of an image set, read from a cache, written as one pack
  (streamed: one target in memory at a time, whatever the size of the set);
- :func:`import_pack` / :func:`import_cache`: merge a pack (checked against its checksum first)
  or another cache folder (every entry checked, damaged ones skipped and counted) into a cache.

What others send is checked before anything is stored: a pack's checksum covers its arrays and
its header (rows' hashes, labeller parameters), a cache folder is audited
(:func:`saliencyssl.cache.store.audit_database`) and read through a read-only connection
(:class:`~saliencyssl.cache.store.CacheReader`: nothing is written there) without unpickling
anything, and each entry is decoded against its key.

**Recorded parameters.** A cache records, once per fingerprint, the labeller parameters behind
it (``cache stats`` shows them). An import records the parameters the caller gives (those that
made the fingerprint); the source's own are used only when the caller gives none, and only when
they are the labeller's names and values and rebuild the fingerprint
(:func:`~saliencyssl.cache.store.check_labeller_params`). Parameters already recorded in the
destination are never replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from saliencyssl.cache.codec import CorruptTargetError, covers_key, decode_target
from saliencyssl.cache.packfile import MAGIC, PackError, open_pack, verify_pack, write_pack
from saliencyssl.cache.store import CacheReader, TargetCache, check_labeller_params
from saliencyssl.files import nearest_existing
from saliencyssl.hashing import content_hash
from saliencyssl.imageio import ImageDecodeError

log = logging.getLogger(__name__)

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
    """What an import stored: ``count`` targets; the hashes of damaged source entries it skipped, and of entries in
    the first codec format (``unkeyed``: their checksum does not cover their key, so an entry moved to another
    image's key would pass) it skipped too."""

    count: int
    damaged: list[str] = field(default_factory=list)
    unkeyed: list[str] = field(default_factory=list)


def is_pack_file(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that starts with a pack's magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def format_bytes(n: float) -> str:
    """A byte count for messages, in the unit that suits it: ``"12.3 GB"``, ``"4.5 MB"``, ``"20.0 KB"``, ``"512 B"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def check_pack_destination(out: Path, images_dir: Path | None = None, overwrite: bool = False,
                           cache_dir: Path | None = None) -> None:
    """Refuse a pack path that would clobber something other than a pack, or land among the images
    it describes or inside the cache it is read from.

    Raises:
        FileExistsError: ``out`` is a folder; or it exists and ``overwrite`` is false; or it exists
            and is not a pack (``overwrite`` replaces only a file with a pack's magic bytes, never a
            cache's database, an image or another file).
        ValueError: ``out`` lies inside ``images_dir`` (the next run would take it for an image) or
            inside ``cache_dir`` (beside, or in place of, the cache's own files).
    """
    out = Path(out)
    if out.is_dir():
        raise FileExistsError(f"{out} is a folder; give a file name for the pack")
    if os.path.lexists(out):
        if not overwrite:
            raise FileExistsError(f"{out} exists already")
        if out.is_symlink() or not is_pack_file(out):
            raise FileExistsError(f"{out} exists and is not a pack file; only a pack is ever replaced")
    if cache_dir is not None and out.resolve().is_relative_to(Path(cache_dir).resolve()):
        raise ValueError(f"the pack {out} would lie inside the cache folder {cache_dir}, among (or in place of) its "
                         f"own files; write it outside, e.g. to {Path(cache_dir).resolve().name}.pack")
    if images_dir is not None and out.resolve().is_relative_to(Path(images_dir).resolve()):
        raise ValueError(f"the pack {out} would lie inside the image folder {images_dir}: the next run would read it "
                         f"as an image; write it outside, e.g. to {Path(images_dir).resolve().name}.pack")


def export_pack(cache: TargetCache, image_set, out: str | Path, params: dict | None = None,
                image_size: int | None = None, allow_missing: bool = False,
                progress: Callable[[Iterator], Iterator] | None = None) -> ExportReport:
    """Write the targets of ``image_set`` (one row per distinct image) from ``cache`` as a pack.

    Before anything is written, the free space of the pack's folder is checked against what the
    pack needs while it is written (its arrays twice: temporary parts and the pack; 4 bytes a
    pixel), estimated from the images' sizes (a target has its image's size) or, with
    ``image_size``, from that size.

    Args:
        cache: the cache to read, opened with the labeller's fingerprint.
        image_set: an :class:`~saliencyssl.datasets.ImageSet`.
        out: the pack path (see :func:`check_pack_destination` for what callers check first); not
            inside the cache's folder.
        params: the labeller parameters, recorded in the pack.
        image_size: store the targets at this square training size (``fit_square`` geometry).
        allow_missing: skip images without a target, or that cannot be decoded, instead of refusing.
        progress: wraps the iteration over the images (e.g. a tqdm bar).

    Raises:
        UndecodableImagesError, MissingTargetsError: unless ``allow_missing``.
        PackError: nothing to export.
        ValueError: ``out`` lies inside the cache's folder.
        OSError: not enough free disk space for the pack, or writing it failed (one line naming
            the pack; nothing is left behind).
    """
    from saliencyssl.datasets import target_at_size

    out = Path(out)
    if out.resolve().is_relative_to(cache.directory.resolve()):
        raise ValueError(f"the pack {out} would lie inside the cache folder {cache.directory}; write it outside")
    wrap = progress or (lambda it: it)
    hashes: list[str | None] = []
    pixels: dict[str, int] = {}
    undecodable: list[tuple[str, str]] = []
    for i in wrap(iter(range(len(image_set)))):
        try:
            image = image_set.image(i)
            image_hash = content_hash(image)
        except ImageDecodeError as error:
            hashes.append(None)
            undecodable.append((image_set.names[i], error.reason))
            continue
        hashes.append(image_hash)
        pixels[image_hash] = int(image.shape[0]) * int(image.shape[1])
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
    total = len(present) * image_size * image_size if image_size is not None else sum(pixels[h] for h in present)
    needed = total * PACK_BYTES_PER_PIXEL * 2  # temporary parts + the pack
    folder = nearest_existing(out)  # the disk the pack lands on, though its folder is not made yet
    free = shutil.disk_usage(folder).free
    if needed > free:
        at = f" at {image_size} px" if image_size is not None else ""
        raise OSError(f"the pack {out} of {len(present)} targets{at} needs about {format_bytes(needed)} while "
                      f"writing, and {folder} has {format_bytes(free)} free; free some space or write it elsewhere")
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


def _params_to_record(fingerprint: str, given: dict | None, source: dict | None, source_name: str) -> dict | None:
    """The labeller parameters an import records for ``fingerprint``: those given (they made the
    fingerprint), else the source's when they pass :func:`check_labeller_params`, else none.

    Raises:
        ValueError: the parameters given are not labeller parameters of ``fingerprint``.
    """
    if given is not None:
        check_labeller_params(given, fingerprint)
        if source is not None and source != given:
            log.warning("%s records labeller parameters that differ from those of fingerprint %s; they are ignored",
                        source_name, fingerprint)
        return given
    if source is None:
        return None
    try:
        return check_labeller_params(source, fingerprint)
    except ValueError as error:
        log.warning("%s: its labeller parameters are not recorded (%s)", source_name, error)
        return None


def import_pack(pack_path: str | Path, cache_dir: str | Path, fingerprint: str,
                params: dict | None = None) -> ImportReport:
    """Merge a pack into a cache, after checking the pack's fingerprint and checksum.

    Args:
        pack_path: the pack.
        cache_dir: the destination cache folder (created if missing).
        fingerprint: the labeller fingerprint the pack must hold.
        params: the labeller parameters of ``fingerprint``, recorded in the destination unless it
            has some already; without them, the pack's (format 3 only, checked) are recorded.

    Raises:
        PackError: another labeller's pack, a damaged header, or a checksum mismatch (nothing is stored).
        ValueError: ``params`` are not labeller parameters of ``fingerprint``.
    """
    pack = open_pack(pack_path, expect_fingerprint=fingerprint)
    if not verify_pack(pack):
        raise PackError(f"{pack_path} fails its checksum (damaged); nothing was imported")
    record = _params_to_record(fingerprint, params, pack.params, str(pack_path))
    cache = TargetCache(cache_dir, fingerprint, params=record)
    try:
        return ImportReport(cache.put_many((pack.hashes[i], pack.target(i)) for i in range(len(pack))))
    finally:
        cache.close()


def import_cache(source_dir: str | Path, cache_dir: str | Path, fingerprint: str,
                 params: dict | None = None) -> ImportReport:
    """Merge another cache folder's targets of ``fingerprint`` into a cache.

    The source is audited and read through :class:`~saliencyssl.cache.store.CacheReader`: its
    ``cache.db`` keeps its bytes and nothing is created there. Each entry is checked against its
    key and the damaged ones are skipped (their hashes reported), as are entries of the first codec
    format, whose checksum does not cover the key (``saliency-ssl cache verify`` rewrites those in a
    cache one trusts). The parameters recorded in the destination follow :func:`_params_to_record`.

    Raises:
        FileNotFoundError: the source is not a cache folder.
        LookupError: it holds no target of this fingerprint (the message lists what it holds).
        CacheOpenError: its database files are links, or its database is damaged or not a
            saliency-ssl cache.
        ValueError: ``params`` are not labeller parameters of ``fingerprint``.
    """
    with CacheReader(source_dir) as source:
        available = source.fingerprints()
        if fingerprint not in available:
            others = ", ".join(sorted(available)) or "none"
            raise LookupError(f"{source_dir} holds no targets of labeller fingerprint {fingerprint} (it holds: "
                              f"{others})")
        record = _params_to_record(fingerprint, params, available.get(fingerprint), str(source_dir))
        cache = TargetCache(cache_dir, fingerprint, params=record)
        report = ImportReport(0)
        try:
            for h in list(source.hashes(fingerprint)):
                try:
                    data = source.get_encoded(fingerprint, h)
                    if data is None:  # listed, but its value file is gone
                        raise CorruptTargetError("value missing")
                    if not covers_key(data):  # a first-format entry could be another image's
                        decode_target(data)  # a damaged one is damage, not merely unkeyed
                        report.unkeyed.append(h)
                        continue
                    cache.put_encoded(h, data, from_key=cache.key_of(h))
                except CorruptTargetError:
                    report.damaged.append(h)
                    continue
                report.count += 1
        finally:
            cache.close()
    return report
