"""Compact, self-checking byte encoding of a :class:`~saliencyssl.target.Target`.

Layout (little-endian)::

    magic  b"SSLT"             4 bytes
    version                     1 byte   (CODEC_VERSION)
    region bytes per label      1 byte   (1 or 2)
    height, width               2 x uint32
    checksum                    8 bytes  BLAKE2b of the entry's key and the compressed body
    body                        zlib( saliency uint8 H*W | packbits(mask) | regions uint8/uint16 H*W )

A 32x32 target takes about 1 KB. :func:`decode_target` recomputes the checksum before it
unpacks anything, so a truncated or bit-flipped entry raises :class:`CorruptTargetError`
instead of returning a wrong target.

**The key is covered.** Since codec version 2 the checksum also covers the key the entry is
stored under (``"<fingerprint>/<content hash>"``), so a damaged key, which would leave the
target under another image's name, fails its check like a damaged value. Version 1 entries
(checksum over the body alone) are still read; :meth:`TargetCache.verify` rewrites them as
version 2. Bytes that travel between processes before they have a key are encoded with the
empty key and bound to their key when they are stored (:func:`bind_key`).
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np

from saliencyssl.target import Target

MAGIC = b"SSLT"
CODEC_VERSION = 2
#: Versions :func:`decode_target` reads (1: checksum over the body alone).
READABLE_VERSIONS = (1, 2)
_HEADER = struct.Struct("<4sBBII8s")
#: Largest side and area a stored target may claim (a damaged or crafted header must not make the
#: decoder allocate gigabytes): the images the toolkit decodes are at most 100 M pixels.
MAX_SIDE = 65_535
MAX_PIXELS = 100_000_000


class CorruptTargetError(ValueError):
    """Stored bytes that do not decode to a valid target (truncated, altered, foreign, or under another key)."""


def _checksum(body: bytes, key: str | None) -> bytes:
    digest = hashlib.blake2b(digest_size=8)
    if key is not None:
        raw_key = key.encode()
        digest.update(struct.pack("<I", len(raw_key)) + raw_key)
    digest.update(body)
    return digest.digest()


def storable(height: int, width: int) -> bool:
    """Whether a target of this size can be stored and read back (:data:`MAX_SIDE`, :data:`MAX_PIXELS`)."""
    return height <= MAX_SIDE and width <= MAX_SIDE and height * width <= MAX_PIXELS


def check_storable(height: int, width: int, what: str) -> None:
    """Raise ``ValueError`` ("a WxH <what>: ...") when a target of this size cannot be stored (:func:`storable`)."""
    if not storable(height, width):
        raise ValueError(f"a {width}x{height} {what}: a cached target has sides of at most {MAX_SIDE:,} px and at "
                         f"most {MAX_PIXELS:,} pixels; crop or shrink the image first")


def encode_target(target: Target, key: str = "", level: int = 1) -> bytes:
    """Serialise a target to bytes (see the module docstring for the layout).

    Args:
        target: the target.
        key: the cache key it will be stored under (``""`` for bytes that travel first and
            are bound with :func:`bind_key` when stored).
        level: zlib compression level.

    Raises:
        ValueError: a side over :data:`MAX_SIDE` or an area over :data:`MAX_PIXELS`, which :func:`decode_target`
            would refuse: stored, the entry would read as damaged and be labelled again on every run.
    """
    h, w = target.shape
    check_storable(h, w, "target cannot be stored")
    label_bytes = 1 if target.num_regions <= 256 else 2
    regions = target.regions.astype(np.uint8 if label_bytes == 1 else "<u2")
    raw = b"".join((target.saliency.tobytes(), np.packbits(target.mask, axis=None).tobytes(), regions.tobytes()))
    body = zlib.compress(raw, level)
    return _HEADER.pack(MAGIC, CODEC_VERSION, label_bytes, h, w, _checksum(body, key)) + body


def entry_version(data: bytes) -> int:
    """The codec version an entry claims (0 when it is too short to say)."""
    return data[4] if isinstance(data, (bytes, bytearray)) and len(data) >= _HEADER.size else 0


def covers_key(data: bytes) -> bool:
    """Whether an entry's checksum covers the key it is stored under (version 2 on): an entry of the first format
    could be moved to another image's key unnoticed."""
    return entry_version(data) >= 2


def _check(data, key: str | None) -> tuple[int, int, int, int, bytes]:
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < _HEADER.size:
        raise CorruptTargetError(f"entry too short ({len(data) if hasattr(data, '__len__') else type(data).__name__})")
    magic, version, label_bytes, h, w, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptTargetError(f"not a saliency-ssl target (magic {magic!r})")
    if version not in READABLE_VERSIONS:
        raise CorruptTargetError(f"target codec version {version}, this saliency-ssl reads "
                                 f"{', '.join(map(str, READABLE_VERSIONS))}")
    body = bytes(data[_HEADER.size:])
    if _checksum(body, key if version >= 2 else None) != checksum:
        raise CorruptTargetError("checksum mismatch: the entry or its key was altered or truncated"
                                 if version >= 2 and key else "checksum mismatch: the entry was altered or truncated")
    if label_bytes not in (1, 2) or h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise CorruptTargetError(f"inconsistent header ({h}x{w}, {label_bytes} bytes per label)")
    return version, label_bytes, h, w, body


def decode_target(data: bytes, key: str = "") -> Target:
    """Inverse of :func:`encode_target`.

    Args:
        data: the stored bytes.
        key: the key they were read under; a version 2 entry must have been encoded with it.

    Raises:
        CorruptTargetError: wrong magic or version, checksum mismatch (value or key), or
            inconsistent sizes.
    """
    _, label_bytes, h, w, body = _check(data, key)
    n = h * w
    mask_len = (n + 7) // 8
    expected = n + mask_len + n * label_bytes
    try:
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(body, expected + 1)  # never inflate more than a target of this size
    except zlib.error as error:
        raise CorruptTargetError(f"cannot decompress entry: {error}") from error
    if len(raw) != expected or not decompressor.eof:
        raise CorruptTargetError(f"entry size does not match a {h}x{w} target")
    saliency = np.frombuffer(raw, np.uint8, n, 0).reshape(h, w).copy()
    mask = np.unpackbits(np.frombuffer(raw, np.uint8, mask_len, n), count=n).reshape(h, w).astype(bool)
    regions = np.frombuffer(raw, np.uint8 if label_bytes == 1 else "<u2", n, n + mask_len)
    return Target(saliency, mask, regions.reshape(h, w).astype(np.uint16))


def bind_key(data: bytes, from_key: str, to_key: str) -> bytes:
    """The same entry with its checksum bound to ``to_key`` (after checking it against ``from_key``).

    Cheap: the body is not decompressed again. A version 1 entry is checked as version 1 and
    comes back as version 2.

    Raises:
        CorruptTargetError: the entry fails its check under ``from_key``.
    """
    version, label_bytes, h, w, body = _check(data, from_key)
    if version == CODEC_VERSION and from_key == to_key:
        return bytes(data)
    return _HEADER.pack(MAGIC, CODEC_VERSION, label_bytes, h, w, _checksum(body, to_key)) + body
