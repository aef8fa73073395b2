"""Compact, self-checking byte encoding of a :class:`~saliencyssl.target.Target`.

Layout (little-endian)::

    magic  b"SSLT"             4 bytes
    version                     1 byte   (CODEC_VERSION)
    region bytes per label      1 byte   (1 or 2)
    height, width               2 x uint32
    checksum                    8 bytes  BLAKE2b of the compressed body
    body                        zlib( saliency uint8 H*W | packbits(mask) | regions uint8/uint16 H*W )

A 32x32 target takes about 1 KB. :func:`decode_target` recomputes the checksum before it
unpacks anything, so a truncated or bit-flipped entry raises :class:`CorruptTargetError`
instead of returning a wrong target.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np

from saliencyssl.target import Target

MAGIC = b"SSLT"
CODEC_VERSION = 1
_HEADER = struct.Struct("<4sBBII8s")


class CorruptTargetError(ValueError):
    """Stored bytes that do not decode to a valid target (truncated, altered or foreign)."""


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).digest()


def encode_target(target: Target, level: int = 1) -> bytes:
    """Serialise a target to bytes (see the module docstring for the layout)."""
    h, w = target.shape
    label_bytes = 1 if target.num_regions <= 256 else 2
    regions = target.regions.astype(np.uint8 if label_bytes == 1 else "<u2")
    raw = b"".join((target.saliency.tobytes(), np.packbits(target.mask, axis=None).tobytes(), regions.tobytes()))
    body = zlib.compress(raw, level)
    return _HEADER.pack(MAGIC, CODEC_VERSION, label_bytes, h, w, _checksum(body)) + body


def decode_target(data: bytes) -> Target:
    """Inverse of :func:`encode_target`.

    Raises:
        CorruptTargetError: wrong magic or version, checksum mismatch, or inconsistent sizes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < _HEADER.size:
        raise CorruptTargetError(f"entry too short ({len(data) if hasattr(data, '__len__') else type(data).__name__})")
    magic, version, label_bytes, h, w, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptTargetError(f"not a saliency-ssl target (magic {magic!r})")
    if version != CODEC_VERSION:
        raise CorruptTargetError(f"target codec version {version}, this saliency-ssl reads {CODEC_VERSION}")
    body = bytes(data[_HEADER.size:])
    if _checksum(body) != checksum:
        raise CorruptTargetError("checksum mismatch: the entry was altered or truncated")
    try:
        raw = zlib.decompress(body)
    except zlib.error as error:
        raise CorruptTargetError(f"cannot decompress entry: {error}") from error
    n = h * w
    mask_len = (n + 7) // 8
    if label_bytes not in (1, 2) or len(raw) != n + mask_len + n * label_bytes:
        raise CorruptTargetError(f"entry size {len(raw)} does not match a {h}x{w} target")
    saliency = np.frombuffer(raw, np.uint8, n, 0).reshape(h, w).copy()
    mask = np.unpackbits(np.frombuffer(raw, np.uint8, mask_len, n), count=n).reshape(h, w).astype(bool)
    regions = np.frombuffer(raw, np.uint8 if label_bytes == 1 else "<u2", n, n + mask_len)
    return Target(saliency, mask, regions.reshape(h, w).astype(np.uint16))
